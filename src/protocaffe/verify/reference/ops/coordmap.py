"""The geometric crop of the FCN-era forks: RCF's AutoCrop, s9xie/hed's two-bottom Crop (under
`--dialect hed-crop`) and DeconvNet's V1 CROP, which set up their offsets from the net.

Sources: s9xie/hed @ 912632b9, src/caffe/layers/crop_layer.cpp (CropLayer::LayerSetUp,
Forward_cpu), include/caffe/util/coords.hpp (DiagonalAffineMap, FilterMap) and the coord_map()
overrides of include/caffe/{vision,common,neuron}_layers.hpp; yun-liu/rcf @ ce460ff6,
src/caffe/layers/auto_crop_layer.cpp (the same LayerSetUp) and include/caffe/layers/conv_layer.hpp,
deconv_layer.hpp (coord_map() with the dilated kernel's extent). Maps are pairs (scale, offset)
per axis in float, as DiagonalAffineMap<Dtype> holds them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from protocaffe.verify.reference.params import as_f32
from protocaffe.verify.reference.registry import Array, RefLayer, register

_F = np.float32
Map = list[tuple[np.float32, np.float32]]

# Layer types whose coord_map() is DiagonalAffineMap::identity(2) in the forks (NeuronLayer's
# subclasses, and Concat, Eltwise, LRN, MVN, Softmax, Split, Slice).
_IDENTITY_TYPES = {
    "AbsVal", "BNLL", "Concat", "Dropout", "ELU", "Eltwise", "Exp", "LRN", "Log", "MVN",
    "PReLU", "Power", "ReLU", "Sigmoid", "Slice", "Softmax", "Split", "TanH", "Threshold",
}  # fmt: skip


def _compose(left: Map, right: Map) -> Map:
    """DiagonalAffineMap::compose (compose_coefs): (l1 * r1, l1 * r2 + l2)."""
    return [
        (_F(l1 * r1), _F(_F(l1 * r2) + l2)) for (l1, l2), (r1, r2) in zip(left, right, strict=True)
    ]


def _inverse(m: Map) -> Map:
    """inv_coefs: (1 / c1, -c2 / c1)."""
    return [(_F(_F(1) / c1), _F(-c2 / c1)) for c1, c2 in m]


def _filter_map(kernel: tuple[int, int], stride: tuple[int, int], pad: tuple[int, int]) -> Map:
    """FilterMap: (stride, (kernel - 1) / 2 - pad) per axis."""
    return [
        (_F(s), _F(_F(_F(k - 1) / _F(2)) - _F(p)))
        for k, s, p in zip(kernel, stride, pad, strict=True)
    ]


def _hw(msg: Any, single: str, h: str, w: str, default: int, repeated: bool) -> tuple[int, int]:
    if msg.HasField(h) and msg.HasField(w):
        return int(getattr(msg, h)), int(getattr(msg, w))
    value = getattr(msg, single)
    if repeated:
        values = [int(v) for v in value]
        return (values[0], values[-1]) if values else (default, default)
    return (int(value), int(value)) if msg.HasField(single) else (default, default)


def _layer_map(layer: Any, offsets: dict[int, tuple[int, int]], index: int) -> Map | None:
    """Layer::coord_map() of the forks; None where it is NOT_IMPLEMENTED (Caffe aborts)."""
    kind = layer.type
    if kind in _IDENTITY_TYPES:
        return [(_F(1), _F(0)), (_F(1), _F(0))]
    if kind in ("Convolution", "Deconvolution"):
        c = layer.param.convolution_param
        kernel = _hw(c, "kernel_size", "kernel_h", "kernel_w", 0, repeated=True)
        stride = _hw(c, "stride", "stride_h", "stride_w", 1, repeated=True)
        pad = _hw(c, "pad", "pad_h", "pad_w", 0, repeated=True)
        # rcf's conv_layer.hpp / deconv_layer.hpp coord_map(): FilterMap of the kernel extent
        # dilation * (kernel - 1) + 1 (hed's fork has no dilation: extent = kernel there).
        dilation = [int(d) for d in c.dilation] or [1]
        extent = (
            dilation[0] * (kernel[0] - 1) + 1,
            dilation[-1] * (kernel[1] - 1) + 1,
        )
        m = _filter_map(extent, stride, pad)
        return m if kind == "Deconvolution" else _inverse(m)
    if kind == "Pooling" and not layer.param.pooling_param.global_pooling:
        q = layer.param.pooling_param
        kernel = _hw(q, "kernel_size", "kernel_h", "kernel_w", 0, repeated=False)
        stride = _hw(q, "stride", "stride_h", "stride_w", 1, repeated=False)
        pad = _hw(q, "pad", "pad_h", "pad_w", 0, repeated=False)
        return _inverse(_filter_map(kernel, stride, pad))
    if kind in ("Crop", "AutoCrop"):
        h, w = offsets.get(index, (0, 0))
        return [(_F(1), _F(-h)), (_F(1), _F(-w))]
    return None


def geometric_offsets(net: Any, index: int, geometric: set[int] | None = None) -> tuple[int, int]:
    """CropLayer::LayerSetUp (HED) / AutoCropLayer::LayerSetUp (RCF) for net layer `index`.

    `geometric` names the crops (by index) that set up their own offsets this way; an earlier
    one's offsets enter the maps of later ones through its coord_map()."""
    layers = net.layers
    geometric = geometric if geometric is not None else {index}
    offsets: dict[int, tuple[int, int]] = {}
    for earlier in sorted(i for i in geometric if i < index):
        offsets[earlier] = geometric_offsets(net, earlier, geometric)
    down_map: dict[str, int] = {}
    for i in range(index + 1):  # top_vecs up to the layer being set up
        for top in layers[i].tops:
            if top not in down_map:
                down_map[top] = i
    bottoms = layers[index].bottoms
    path = {bottoms[0]}
    blob = bottoms[0]
    while blob in down_map:
        producer = layers[down_map[blob]]
        if not producer.bottoms:
            break
        blob = producer.bottoms[0]
        if blob in path:  # an in-place layer on a net input: the C++ loop never ends
            raise ValueError(f"the walk back from the bottoms never ends (at {blob!r})")
        path.add(blob)
    inter = bottoms[1]
    seen = {inter}
    while inter not in path:
        if inter not in down_map or not layers[down_map[inter]].bottoms:
            raise ValueError("Cannot align apparently disconnected blobs.")
        inter = layers[down_map[inter]].bottoms[0]
        if inter in seen:
            raise ValueError(f"the walk back from the bottoms never ends (at {inter!r})")
        seen.add(inter)
    maps: list[Map] = []
    for i in range(2):
        m: Map = [(_F(1), _F(0)), (_F(1), _F(0))]
        blob = bottoms[i]
        while blob != inter:
            j = down_map[blob]
            step = _layer_map(layers[j], offsets, j)
            if step is None:
                raise ValueError(
                    f"layer {layers[j].name!r} ({layers[j].type}) has no coord_map "
                    "(NOT_IMPLEMENTED)"
                )
            m = _compose(m, step)
            blob = layers[j].bottoms[0]
        maps.append(m)
    crop = _compose(maps[1], _inverse(maps[0]))
    result = []
    for scale, offset in crop:
        if abs(float(scale) - 1.0) > 4 * np.finfo(np.float32).eps:
            raise ValueError(f"CHECK_DOUBLE_EQ(scale, 1) fails: {scale}")
        if offset > 0:
            raise ValueError("Negative crop width.")
        if abs(float(offset) - round(float(offset))) > 1e-6:
            raise ValueError(f"CHECK_DOUBLE_EQ(offset, round(offset)) fails: {offset}")
        result.append(int(-round(float(offset))))
    return result[0], result[1]


def _geometric_crops(net: Any, dialects: frozenset[str]) -> set[int]:
    hed = "hed-crop" in dialects
    return {
        i
        for i, layer in enumerate(net.layers)
        if layer.type == "AutoCrop"
        or (
            hed
            and layer.type == "Crop"
            and len(layer.bottoms) == 2
            and not layer.param.crop_param.offset
            and layer.param.crop_param.axis == 2
        )
    }


def geometric_crop(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """Forward_cpu: top = bottom[0][:, :, h : h + H1, w : w + W1], (H1, W1) bottom[1]'s size."""
    layer.check(layer.net is not None, "the geometric crop reads the net; none was given")
    x, ref = bottoms
    layer.check(x.ndim == 4 and ref.ndim == 4, "expects 4-D bottoms")
    try:
        h, w = geometric_offsets(
            layer.net, layer.index, _geometric_crops(layer.net, layer.dialects)
        )
    except ValueError as exc:
        raise layer.fail(f"Caffe aborts here: {exc}") from None
    height, width = ref.shape[2], ref.shape[3]
    layer.check(
        h + height <= x.shape[2] and w + width <= x.shape[3],
        f"the crop at ({h}, {w}) of size {height}x{width} leaves the {x.shape} bottom",
    )
    return [np.array(as_f32(x)[:, :, h : h + height, w : w + width], order="C")]


@register("AutoCrop", bottoms=(2, 2))
def auto_crop(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    return geometric_crop(layer, bottoms)
