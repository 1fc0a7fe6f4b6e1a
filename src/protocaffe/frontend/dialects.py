"""Fork dialects: where Caffe forks give one prototxt two meanings, which one to follow.

Without `--dialect`, protocaffe reads a net as BVLC Caffe (and real Caffe, OpenCV) would, and
notes each layer that matches a known fork pattern; `--dialect NAME` reads it as the fork does:

- `hed-crop`: a two-bottom Crop without offsets takes its offsets from the layers' geometry,
  as the old Crop of s9xie/hed (FCN era) does; RCF's `AutoCrop` and DeconvNet's V1 `CROP` always
  do (they have no BVLC meaning), dialect or not.
- `darknet-pool`: a Pooling whose kernel minus stride is odd and positive gets one more output
  row and column, as ChenYingpeng/darknet2caffe's pooling layer (used by caffe-yolov3) does.
- `segnet-upsample`: an Upsample without `scale` doubles, as SegNet's and ENet's caffe.proto
  default it; BVLC-side (the YOLO forks, the oracle build, OpenCV) the default is 1.
- `depthwise-gpu`: yonghenglh6's DepthwiseConvolution computes what its GPU kernel computes (one
  filter per channel, group and dilation ignored) instead of its CPU path (a Convolution).
- `denseblock-gpu`: senlinuc/caffe_ocr's DenseBlock computes what its GPU forward (cuDNN)
  computes: the stored BN statistics as they are, where its CPU path divides them by the
  moving-average factor blob, which GPU training never updates (0: zero statistics on the CPU).
- `faceboxes-priorbox`: PriorBox as sfzhang15/FaceBoxes computes it: min_size 32 and 64 give
  4 x 4 and 2 x 2 shifted copies, min_size boxes span min_size - 1, three min_size values mean
  21 priors.
- `textboxes-priorbox`: PriorBox as MhLiao/TextBoxes computes it: each prior twice, the second
  half a step lower; one float min_size; clip defaults to true.

Coordinate maps (`hed-crop`) are resolved here, on the NetDef: the offsets become explicit
`crop_param` values, so the layer library sees an ordinary Crop. The other dialects are flags on
each `LayerDef` (`dialects`) that the layer reads. This module reads the NetDef only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Final

from protocaffe.errors import ProtocaffeError, Reporter

if TYPE_CHECKING:  # the command line imports DIALECTS at start-up: keep this module light
    from protocaffe.frontend.prototxt import LayerDef, NetDef

HED_CROP, DARKNET_POOL, SEGNET_UPSAMPLE, DEPTHWISE_GPU, DENSEBLOCK_GPU = (
    "hed-crop",
    "darknet-pool",
    "segnet-upsample",
    "depthwise-gpu",
    "denseblock-gpu",
)
FACEBOXES_PRIORBOX, TEXTBOXES_PRIORBOX = "faceboxes-priorbox", "textboxes-priorbox"

# Dialect name -> what it changes (for --help and the README).
DIALECTS: Final[dict[str, str]] = {
    HED_CROP: "two-bottom Crop without offsets: offsets from the layer geometry (s9xie/hed)",
    DARKNET_POOL: "Pooling with kernel - stride odd: one more output row and column "
    "(ChenYingpeng/darknet2caffe)",
    SEGNET_UPSAMPLE: "Upsample without scale: scale 2 (SegNet/ENet) instead of 1",
    DEPTHWISE_GPU: "DepthwiseConvolution: the fork's GPU kernel (one filter per channel) "
    "instead of its CPU path (yonghenglh6/DepthwiseConvolution)",
    DENSEBLOCK_GPU: "DenseBlock: the fork's GPU forward (stored BN statistics as they are) "
    "instead of its CPU path (divided by the moving-average factor; senlinuc/caffe_ocr)",
    FACEBOXES_PRIORBOX: "PriorBox: FaceBoxes' dense anchors (min_size 32: 16 shifted copies, "
    "64: 4) spanning min_size - 1 (sfzhang15/FaceBoxes)",
    TEXTBOXES_PRIORBOX: "PriorBox: each prior twice, the second half a step lower; clip "
    "defaults to true (MhLiao/TextBoxes)",
}

# Layers whose coordinate map is the identity in the HED/RCF forks (coord_map() overrides in
# their include/caffe/*.hpp: NeuronLayer and these); any other layer aborts (NOT_IMPLEMENTED).
_IDENTITY_MAPS = frozenset(
    {
        "AbsVal",
        "BNLL",
        "Concat",
        "Dropout",
        "ELU",
        "Eltwise",
        "Exp",
        "LRN",
        "Log",
        "MVN",
        "PReLU",
        "Power",
        "ReLU",
        "Sigmoid",
        "Slice",
        "Softmax",
        "Split",
        "TanH",
        "Threshold",
    }
)
# Types that crop to their second bottom with offsets from the geometry.
GEOMETRIC_CROPS = frozenset({"AutoCrop"})

Axis = tuple[Fraction, Fraction]  # x -> scale * x + offset
CoordMap = tuple[Axis, Axis]  # (height, width)
_IDENTITY: CoordMap = ((Fraction(1), Fraction(0)), (Fraction(1), Fraction(0)))


def check_dialects(names: Collection[str]) -> frozenset[str]:
    """The dialects named, or a ValueError naming the unknown one."""
    for name in names:
        if name not in DIALECTS:
            known = ", ".join(sorted(DIALECTS))
            raise ValueError(f"unknown dialect {name!r} (known: {known})")
    return frozenset(names)


def apply_dialects(net: NetDef, dialects: Collection[str], reporter: Reporter) -> NetDef:
    """`net` as read in `dialects`: geometric crops resolved, each layer flagged with the
    dialects; a note for each layer that a dialect not chosen would read differently."""
    chosen = check_dialects(dialects)
    # The HED fork's offsets of every crop it would compute (a later crop's map uses them).
    hed: dict[int, tuple[int, int]] = {}
    layers: list[LayerDef] = []
    for index, layer in enumerate(net.layers):
        if layer.type in GEOMETRIC_CROPS:
            hed[index] = _crop_offsets(net, index, hed)  # the fork's own type: always
            layer = dataclasses.replace(layer, param=_with_offsets(layer, hed[index]))
        elif _bare_crop(layer):
            if HED_CROP in chosen:
                hed[index] = _crop_offsets(net, index, hed)
                layer = dataclasses.replace(layer, param=_with_offsets(layer, hed[index]))
            else:
                _note_hed_crop(net, index, hed, reporter)
        _note_other_patterns(layer, chosen, reporter)
        layers.append(dataclasses.replace(layer, dialects=chosen) if chosen else layer)
    return dataclasses.replace(net, layers=tuple(layers))


def _bare_crop(layer: LayerDef) -> bool:
    """A Crop that BVLC reads with offset 0 and the HED fork with offsets from the geometry."""
    return (
        layer.type == "Crop"
        and len(layer.bottoms) == 2
        and not layer.param.crop_param.offset
        and layer.param.crop_param.axis == 2
    )


def _note_hed_crop(
    net: NetDef, index: int, hed: dict[int, tuple[int, int]], reporter: Reporter
) -> None:
    layer = net.layers[index]
    try:
        hed[index] = _crop_offsets(net, index, hed)
    except ProtocaffeError:
        return  # the fork could not build this net either: nothing to suggest
    h, w = hed[index]
    if (h, w) == (0, 0):
        return
    shown = f"{h}" if h == w else f"{h}, {w}"
    reporter.note(
        layer.loc,
        f"Crop '{layer.name}' has no offset: BVLC uses 0, the HED fork computes {shown} from "
        f"the geometry; --dialect {HED_CROP} follows it",
        layer.name,
        layer.type,
    )


def _note_other_patterns(layer: LayerDef, chosen: frozenset[str], reporter: Reporter) -> None:
    def note(dialect: str, message: str) -> None:
        if dialect not in chosen:
            reporter.note(
                layer.loc, f"{message}; --dialect {dialect} follows it", layer.name, layer.type
            )

    p = layer.param
    if layer.type == "Pooling" and darknet_extra(p.pooling_param) and _is_darknet_size(p):
        note(
            DARKNET_POOL,
            "darknet's maxpool size=2 stride=1: BVLC's output is one row and column smaller "
            "than darknet's (ChenYingpeng's fork adds one when kernel - stride is odd)",
        )
    if layer.type == "Upsample" and len(layer.bottoms) == 1 and not _upsample_scaled(p):
        note(SEGNET_UPSAMPLE, "Upsample without scale: 1 (copy) here, 2 in SegNet's caffe.proto")
    if layer.type == "PriorBox":
        prior = p.prior_box_param
        sizes = [int(v) for v in prior.min_size]
        if len(sizes) > 1 and (32 in sizes or 64 in sizes):
            note(
                FACEBOXES_PRIORBOX,
                f"PriorBox with min_size {', '.join(map(str, sizes))}: the FaceBoxes fork "
                "densifies the 32 and 64 anchors (21 priors a cell, not "
                f"{len(sizes)})",
            )
        ratios = list(prior.aspect_ratio)
        if not prior.flip and ratios and max(ratios) >= 5 and len(sizes) == 1:
            note(
                TEXTBOXES_PRIORBOX,
                "PriorBox with long unflipped aspect ratios (text boxes): the TextBoxes fork "
                "puts each prior twice, the second half a step lower",
            )
    if layer.type == "DepthwiseConvolution":
        conv = p.convolution_param
        if conv.group != conv.num_output:
            note(
                DEPTHWISE_GPU,
                f"DepthwiseConvolution with group {conv.group} for {conv.num_output} outputs: "
                "the fork's CPU path (followed here) is that grouped convolution, its GPU "
                "kernel a depthwise one",
            )


def darknet_extra(pool: Any) -> bool:
    """ChenYingpeng/darknet2caffe PoolingLayer::Reshape: `(kernel_h - stride_h) % 2 == 1` in C++
    (a negative difference never is)."""
    kernel_h = pool.kernel_h if pool.HasField("kernel_h") else pool.kernel_size
    stride_h = pool.stride_h if pool.HasField("stride_h") else pool.stride
    return bool(kernel_h - stride_h > 0 and (kernel_h - stride_h) % 2 == 1)


def _is_darknet_size(p: Any) -> bool:
    pool = p.pooling_param
    return bool(pool.pool == 0 and pool.kernel_size == 2 and pool.stride == 1)


def _upsample_scaled(p: Any) -> bool:
    up = p.upsample_param
    return bool(up.HasField("scale") or up.HasField("scale_h") or up.HasField("scale_w"))


def _with_offsets(layer: LayerDef, offsets: tuple[int, int]) -> Any:
    param: Any = type(layer.param)()
    param.CopyFrom(layer.param)
    param.crop_param.axis = 2
    del param.crop_param.offset[:]
    param.crop_param.offset.extend(offsets)
    return param


# ---- The coordinate maps of s9xie/hed's CropLayer::LayerSetUp (= RCF's AutoCrop) ---------------


def _crop_offsets(net: NetDef, index: int, resolved: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """The (h, w) offsets that HED's CropLayer::LayerSetUp computes for layer `index`.

    `down_map` is the first layer that writes each blob (in-place layers do not change it); the
    path of bottom[0] follows each producer's first bottom back to an input or a data layer;
    bottom[1] is followed the same way to the first blob on that path. Each side's map is the
    composition of its layers' `coord_map()`s, and the crop is `map1 o map0^-1`, which must
    scale by 1 and shift by a non-positive integer."""
    layer = net.layers[index]
    producer: dict[str, int] = {}
    for i, other in enumerate(net.layers[:index]):
        for top in other.tops:
            producer.setdefault(top, i)

    def abort(message: str, at: LayerDef = layer) -> ProtocaffeError:
        return ProtocaffeError.at(
            at.loc, f"the HED fork's crop aborts here: {message}", at.name, at.type
        )

    def back(blob: str, visited: set[str]) -> str:
        """The first bottom of the first layer that writes `blob`, which must not be one the
        walk has passed: an in-place layer on a net input is that blob's first writer and reads
        it too, so the fork's walk back never returns (as from a bottom read before it is
        written, which the lowering refuses anyway)."""
        writer = net.layers[producer[blob]]
        if writer.bottoms[0] in visited:
            raise abort(
                f"the walk back from the bottoms loops at {writer.bottoms[0]!r} through "
                f'layer "{writer.name}" (the fork never returns)'
            )
        return writer.bottoms[0]

    path = {layer.bottoms[0]}
    blob = layer.bottoms[0]
    while blob in producer and net.layers[producer[blob]].bottoms:
        blob = back(blob, path)
        path.add(blob)
    inter = layer.bottoms[1]
    seen = {inter}
    while inter not in path:
        if inter not in producer or not net.layers[producer[inter]].bottoms:
            raise abort("cannot align apparently disconnected blobs")
        inter = back(inter, seen)
        seen.add(inter)
    maps: list[CoordMap] = []
    for start in layer.bottoms[:2]:
        composed = _IDENTITY
        blob = start
        while blob != inter:
            i = producer[blob]
            composed = _compose(composed, _coord_map(net.layers[i], resolved.get(i), abort))
            blob = net.layers[i].bottoms[0]
        maps.append(composed)
    crop = _compose(maps[1], _invert(maps[0]))
    result: list[int] = []
    for scale, offset in crop:
        if scale != 1:
            raise abort(f"the two bottoms have different scales ({scale})")
        if offset > 0:
            raise abort("negative crop width")
        if offset.denominator != 1:
            raise abort(f"the crop offset {-offset} is not an integer")
        result.append(int(-offset))
    return (result[0], result[1])


def _coord_map(layer: LayerDef, offsets: tuple[int, int] | None, abort: Any) -> CoordMap:
    """`Layer::coord_map()` of the HED fork: input coordinates -> output coordinates."""
    p = layer.param
    if layer.type in _IDENTITY_MAPS:
        return _IDENTITY
    if layer.type in ("Convolution", "Deconvolution"):
        conv = p.convolution_param
        kernel = _pair(conv.kernel_size, conv, "kernel_h", "kernel_w", 0)
        stride = _pair(conv.stride, conv, "stride_h", "stride_w", 1)
        pad = _pair(conv.pad, conv, "pad_h", "pad_w", 0)
        given = list(conv.dilation)
        dilation = (given[0], given[-1]) if given else (1, 1)
        # RCF's conv_layer.hpp / deconv_layer.hpp coord_map(): the dilated kernel's extent
        # (HED's fork predates dilation, so the same).
        extent = (
            dilation[0] * (kernel[0] - 1) + 1,
            dilation[1] * (kernel[1] - 1) + 1,
        )
        filter_map = _filter_map(extent, stride, pad)
        return filter_map if layer.type == "Deconvolution" else _invert(filter_map)
    if layer.type == "Pooling":
        pool = p.pooling_param
        if pool.global_pooling:
            raise abort("a global Pooling has no coordinate map here", layer)
        kernel = _pair([pool.kernel_size], pool, "kernel_h", "kernel_w", 0)
        stride = _pair([pool.stride], pool, "stride_h", "stride_w", 1)
        pad = _pair([pool.pad], pool, "pad_h", "pad_w", 0)
        return _invert(_filter_map(kernel, stride, pad))
    if layer.type == "Crop" or layer.type in GEOMETRIC_CROPS:
        if offsets is None:
            given = list(p.crop_param.offset)
            offsets = (given[0], given[-1]) if given else (0, 0)
        return ((Fraction(1), Fraction(-offsets[0])), (Fraction(1), Fraction(-offsets[1])))
    raise abort(f'layer "{layer.name}" ({layer.type}) on the path has no coordinate map', layer)


def _pair(values: Sequence[int], msg: Any, h: str, w: str, default: int) -> tuple[int, int]:
    if msg.HasField(h) and msg.HasField(w):
        return (int(getattr(msg, h)), int(getattr(msg, w)))
    if len(values) == 0:
        return (default, default)
    return (int(values[0]), int(values[-1]))


def _filter_map(kernel: tuple[int, int], stride: tuple[int, int], pad: tuple[int, int]) -> CoordMap:
    """coords.hpp FilterMap: output y -> input stride * y + (kernel - 1) / 2 - pad."""
    h, w = (
        (Fraction(s), Fraction(k - 1, 2) - p) for k, s, p in zip(kernel, stride, pad, strict=True)
    )
    return (h, w)


def _compose(left: CoordMap, right: CoordMap) -> CoordMap:
    """DiagonalAffineMap::compose: left o right."""
    h, w = ((a1 * b1, a1 * b2 + a2) for (a1, a2), (b1, b2) in zip(left, right, strict=True))
    return (h, w)


def _invert(m: CoordMap) -> CoordMap:
    h, w = ((1 / a, -b / a) for a, b in m)
    return (h, w)
