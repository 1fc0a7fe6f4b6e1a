"""Pooling: Pooling (MAX, AVE, global) with Caffe's exact output sizes and AVE divisor, over
2 spatial axes as BVLC Caffe, or 3 as the 3-D forks (3D-Caffe's Pooling and PoolingND, C3D's
Pooling3D); and Faster R-CNN's ROIPooling.

Caffe's rounding rule is `caffe_pool_size`: ceil (or floor), then, when any pad of the layer is
non-zero, a last window that would start in the padding is dropped on every axis
(PoolingLayer::Reshape tests `pad_h_ || pad_w_` once for both). PyTorch's pooling agrees with
Caffe whenever both give the same output size and torch accepts the padding (pad <= kernel /
2); the AVE divisor then agrees too, because torch also clips the window at size + pad. Where
they do not agree, and for a mask top (Caffe's is a float blob), the generated code calls the
`caffe_pool` helpers (templates/helpers), which pad explicitly and divide by Caffe's own window
count; they compute the output size at run time with the same rule, and
tests/test_pooling_property.py checks the two against each other over a grid of geometries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from protocaffe.ir.graph import Attrs, Shape
from protocaffe.layers.base import (
    Emission,
    EmitContext,
    Layer,
    LayerSource,
    Role,
    call,
    f32,
    fail,
    opt,
)
from protocaffe.layers.convolution import nd_shapes
from protocaffe.layers.registry import register

MAX, AVE, STOCHASTIC = 0, 1, 2
CEIL = 0


@dataclass(frozen=True)
class PoolAttrs(Attrs):
    """kernel, stride and pad as the layer gives them: one value for every spatial axis, or one
    per axis (resolved against the input by `geometry`); kernel is () for global pooling."""

    method: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pad: tuple[int, ...]
    global_pooling: bool
    ceil: bool
    # A second top holds the argmax of each window as a flat index h * W + w into its channel
    # plane (SegNet); Caffe takes the first maximum in row-major order, as torch does.
    mask: bool = False
    # Caffe drops a last window that starts in the padding (when any pad is non-zero); C3D's
    # Pooling3D keeps it.
    clip_last: bool = True
    # --dialect darknet-pool: one more output row and column (ChenYingpeng/darknet2caffe).
    extra: int = 0


def caffe_pool_size(
    size: int, k: int, s: int, p: int, ceil: bool, clip: bool = False, extra: int = 0
) -> int:
    """Caffe's pooled size of one axis: ceil (or floor), `extra` more (the darknet dialect),
    then, when `clip` (any pad of the layer is non-zero), drop a last window that would start
    in the padding (PoolingLayer::Reshape)."""
    span = size + 2 * p - k
    out = (math.ceil(span / s) if ceil else span // s) + 1 + extra
    if clip and (out - 1) * s >= size + p:
        out -= 1
    return out


def geometry(
    attrs: PoolAttrs, shape: Shape
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(kernel, stride, pad), one value per spatial axis of `shape` (N, C, spatial...)."""
    n = len(shape) - 2
    if attrs.global_pooling:
        return shape[2:], (1,) * n, (0,) * n

    def each(values: tuple[int, ...]) -> tuple[int, ...]:
        return values * n if len(values) == 1 else values

    return each(attrs.kernel), each(attrs.stride), each(attrs.pad)


def _ceil_from(layer: LayerSource) -> bool:
    p = layer.param.pooling_param
    if p.HasField("round_mode"):  # the oracle build's rule: round_mode overrides ceil_mode
        return bool(p.round_mode == CEIL)
    return bool(p.ceil_mode)


def _pooling_fields(layer: LayerSource) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """kernel, stride and pad of `pooling_param` with the CHECKs of BVLC's
    PoolingLayer::LayerSetUp (pooling_layer.cpp 17-36 and 64-76)."""
    p = layer.param.pooling_param
    has = {name: p.HasField(name) for name in ("kernel_size", "kernel_h", "kernel_w")}
    if p.global_pooling:
        if any(has.values()):
            raise fail(
                layer, "Caffe aborts here: With Global_pooling: true Filter size cannot specified"
            )
        kernel: tuple[int, ...] = ()
    else:
        both = has["kernel_h"] and has["kernel_w"]
        if has["kernel_size"] and both:
            raise fail(
                layer,
                "Caffe aborts here: Filter size is kernel_size OR kernel_h and kernel_w; not both",
            )
        if not has["kernel_size"] and not both:
            raise fail(
                layer,
                "Caffe aborts here: For non-square filters both kernel_h and kernel_w are required",
            )
        kernel = (int(p.kernel_size),) if has["kernel_size"] else (int(p.kernel_h), int(p.kernel_w))
        if min(kernel) <= 0:
            raise fail(layer, "Caffe aborts here: Filter dimensions cannot be zero")
    spelled: list[tuple[int, ...]] = []
    for name, default, message in (
        ("pad", 0, "pad is pad OR pad_h and pad_w are required"),
        ("stride", 1, "Stride is stride OR stride_h and stride_w are required"),
    ):
        single = p.HasField(name)
        h, w = opt(p, f"{name}_h"), opt(p, f"{name}_w")
        if h is None and w is None:
            spelled.append((int(getattr(p, name)),) if single else (default,))
        elif single or h is None or w is None:
            raise fail(layer, f"Caffe aborts here: {message}")
        else:
            spelled.append((h, w))
    pad, stride = spelled
    if p.global_pooling and (set(pad) != {0} or set(stride) != {1}):
        raise fail(
            layer, "Caffe aborts here: With Global_pooling: true; only pad = 0 and stride = 1"
        )
    if min(stride) <= 0:
        raise fail(layer, f"stride must be positive, got {stride} (Caffe divides by it)")
    return kernel, stride, pad


@register
class Pooling(Layer[PoolAttrs]):
    """BVLC's Pooling over (N, C, H, W). Over (N, C, D, H, W) it is the 3-D pooling of the
    3D-Caffe fork (yulequan's, as in DlutMedimgGroup/MouseCTSegmentation,
    3D-Caffe/src/caffe/layers/pooling_layer.cpp), the same rules per axis: BVLC Caffe aborts on
    such an input ("Input must have 4 axes"), so the fork's meaning changes no BVLC net."""

    types = ("Pooling",)
    tops = (1, 2)  # a second top is the argmax mask (SegNet); it needs the Upsample family
    role = Role.POOLING

    def parse(self, layer: LayerSource) -> PoolAttrs:
        p = layer.param.pooling_param
        if p.pool == STOCHASTIC:
            raise fail(
                layer,
                "STOCHASTIC pooling is not supported (Caffe's CPU forward is not "
                "implemented at TEST time)",
            )
        if len(layer.tops) > 1 and p.pool != MAX:
            raise fail(layer, "Caffe aborts here: only MAX pooling has a mask top")
        kernel, stride, pad = _pooling_fields(layer)
        if "darknet-pool" not in layer.dialects:
            return _checked_attrs(
                layer, p.pool, kernel, stride, pad, bool(p.global_pooling), _ceil_from(layer)
            )
        # ChenYingpeng/darknet2caffe's PoolingLayer::Reshape: `(kernel_h - stride_h) % 2 == 1`
        # adds a row and a column (C++'s % keeps a negative difference from firing); the fork
        # always rounds up (it removed round_mode).
        attrs = _checked_attrs(layer, p.pool, kernel, stride, pad, bool(p.global_pooling), True)
        rise = kernel[0] - stride[0] if kernel else 0
        if not (rise > 0 and rise % 2 == 1):
            return attrs
        if attrs.global_pooling or attrs.mask:
            raise fail(layer, "--dialect darknet-pool with global pooling or a mask top")
        return replace(attrs, extra=1)

    def infer(
        self, attrs: PoolAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape = in_shapes[0]
        if len(shape) not in (4, 5):
            raise fail(
                layer,
                f"Caffe aborts here: Input must have 4 axes, corresponding to (num, channels, "
                f"height, width) (5 with the 3D-Caffe fork), got {shape}",
            )
        if len(shape) == 5 and len(attrs.kernel) == 2:
            raise fail(layer, "kernel_h & kernel_w can only be used for 2D pooling (3D-Caffe)")
        return _infer(attrs, shape, layer)

    def emit(self, attrs: PoolAttrs, ctx: EmitContext) -> Emission:
        emission = _emit(attrs, ctx)
        if len(ctx.in_shapes[0]) == 5:
            note = "3-D pooling of the 3D-Caffe fork"
            return Emission(
                forward=emission.forward,
                init=emission.init,
                note=f"{note}; {emission.note}" if emission.note else note,
                helpers=emission.helpers,
                imports=emission.imports,
            )
        return emission

    def records_argmax(self, attrs: PoolAttrs) -> bool:
        return attrs.mask

    def computes_in_place(self, attrs: PoolAttrs, in_shapes: Sequence[Shape]) -> bool:
        return False


def _checked_attrs(
    layer: LayerSource,
    method: int,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    pad: tuple[int, ...],
    global_pooling: bool,
    ceil: bool,
    clip_last: bool = True,
) -> PoolAttrs:
    """The CHECKs every Caffe pooling makes on pad (pad < kernel on each axis)."""
    if kernel and max(pad) > 0:
        per_axis = max(len(kernel), len(pad))
        ks = kernel * per_axis if len(kernel) == 1 else kernel
        ps = pad * per_axis if len(pad) == 1 else pad
        if len(ks) == len(ps) and any(p >= k for k, p in zip(ks, ps, strict=True)):
            raise fail(layer, f"Caffe aborts here: pad {pad} must be smaller than kernel {kernel}")
    mask = len(layer.tops) == 2
    return PoolAttrs(method, kernel, stride, pad, global_pooling, ceil, mask, clip_last)


def _infer(attrs: PoolAttrs, shape: Shape, layer: LayerSource) -> list[Shape]:
    n = len(shape) - 2
    for name, values in (
        ("kernel_size", attrs.kernel),
        ("stride", attrs.stride),
        ("pad", attrs.pad),
    ):
        if values and len(values) not in (1, n):
            raise fail(
                layer,
                f"Caffe aborts here: {name} must be specified once, or once per spatial "
                f"dimension ({name} specified {len(values)} times; {n} spatial dims)",
            )
    kernel, stride, pad = geometry(attrs, shape)
    clip = attrs.clip_last and max(pad) > 0
    out = tuple(
        caffe_pool_size(dim, k, s, p, attrs.ceil, clip, attrs.extra)
        for dim, k, s, p in zip(shape[2:], kernel, stride, pad, strict=True)
    )
    # Caffe accepts a kernel larger than the input as long as one window remains.
    if min(out) <= 0:
        padded = "x".join(str(d + 2 * p) for d, p in zip(shape[2:], pad, strict=True))
        raise fail(layer, f"kernel {kernel} is larger than the padded input {padded}")
    return [shape[:2] + out] * (2 if attrs.mask else 1)


def _torch_agrees(
    attrs: PoolAttrs, kernel: Sequence[int], stride: Sequence[int], pad: Sequence[int]
) -> bool:
    """torch agrees with Caffe for every input size when it accepts the padding and, in ceil
    mode, drops the same last windows: torch drops a window that starts in the right padding
    on every axis, Caffe only when the layer has a pad (and C3D never), which only matters
    where such a window can occur (stride > kernel - pad)."""
    geometry = list(zip(kernel, stride, pad, strict=True))
    if attrs.extra or any(2 * p > k for k, _, p in geometry):
        return False
    if not attrs.ceil or (attrs.clip_last and max(pad) > 0):
        return True
    return all(s <= k - p for k, s, p in geometry)


def _emit(attrs: PoolAttrs, ctx: EmitContext) -> Emission:
    is_max = attrs.method == MAX
    x = ctx.x
    shape = ctx.in_shapes[0]
    n = len(shape) - 2
    dims = tuple(range(2, 2 + n))
    if attrs.global_pooling and not attrs.mask:
        fn = "torch.amax" if is_max else "torch.mean"
        return Emission(forward=f"{fn}({x}, dim={dims}, keepdim=True)", note="global")
    kernel, stride, pad = geometry(attrs, shape)
    if attrs.mask:
        forward = call(
            "caffe_max_pool_mask",
            x,
            f"{x}.shape[2:]" if attrs.global_pooling else _list(kernel),
            _list(stride),
            _list(pad),
            ceil=attrs.ceil,
        )
        return Emission(
            forward=forward,
            note="and Caffe's argmax mask (flat h * W + w, as floats)",
            helpers=("caffe_pool",),
        )
    # torch also refuses an input smaller than the kernel, which Caffe pools (one window);
    # torch's 3-D pooling compares the unpadded input (pool3d_shape_check).
    grace = 0 if n == 3 else 1
    fits = all(d + 2 * p * grace >= k for d, k, p in zip(shape[2:], kernel, pad, strict=True))
    if fits and _torch_agrees(attrs, kernel, stride, pad):
        init = call(
            f"nn.MaxPool{n}d" if is_max else f"nn.AvgPool{n}d",
            kernel_size=_one(kernel),
            stride=_one(stride),
            padding=_one(pad) if max(pad) > 0 else None,
            ceil_mode=True if attrs.ceil else None,
        )
        rounds_up = attrs.ceil and any(
            caffe_pool_size(d, k, s, p, True) != caffe_pool_size(d, k, s, p, False)
            for d, k, s, p in zip(shape[2:], kernel, stride, pad, strict=True)
        )
        note = "Caffe rounds up" if rounds_up else ""
        return Emission(forward=f"self.{ctx.attr}({x})", init=init, note=note)
    forward = call(
        "caffe_pool",
        x,
        _list(kernel),
        _list(stride),
        _list(pad),
        ceil=attrs.ceil,
        average=not is_max,
        clip_last=None if attrs.clip_last else False,
        extra=attrs.extra or None,
    )
    note = "Caffe's window rule differs from torch's here"
    if attrs.extra:
        note = "darknet's size rule (--dialect darknet-pool)"
    return Emission(forward=forward, note=note, helpers=("caffe_pool",))


def _one(values: Sequence[int]) -> int | tuple[int, ...]:
    """One int when every axis agrees (`kernel_size=3`), else the tuple."""
    return values[0] if len(set(values)) == 1 else tuple(values)


def _list(values: Sequence[int]) -> str:
    """A list literal of ints (the helpers take lists: TorchScript has no variable tuples)."""
    return "[" + ", ".join(str(int(v)) for v in values) + "]"


@register
class PoolingND(Layer[PoolAttrs]):
    """3D-Caffe's PoolingND: Caffe's pooling over 2 or 3 spatial axes, with one kernel, stride
    and pad for every axis or one per axis (ceil rounding, Caffe's last-window rule).

    Source: yulequan's 3D-Caffe (as in DlutMedimgGroup/MouseCTSegmentation),
    3D-Caffe/src/caffe/layers/pooling_nd_layer.cpp (LayerSetUp, Reshape, Forward_cpu).
    """

    types = ("PoolingND",)
    role = Role.POOLING

    def parse(self, layer: LayerSource) -> PoolAttrs:
        p = layer.param.pooling_nd_param
        if p.pool == STOCHASTIC:
            raise fail(layer, "STOCHASTIC pooling is not supported (not implemented on CPU)")
        if p.axis != 1:
            raise fail(layer, f"pooling over channel axis {p.axis} is not supported (only 1)")
        kernel = tuple(int(k) for k in p.kernel_size)
        if p.HasField("kernel_h") or p.HasField("kernel_w"):
            if kernel:
                raise fail(
                    layer,
                    "Caffe aborts here: Either kernel_size or kernel_h/w should "
                    "be specified; not both",
                )
            kernel = (int(p.kernel_h), int(p.kernel_w))
        if p.global_pooling:
            if kernel:
                raise fail(
                    layer,
                    "Caffe aborts here: With Global_pooling: true Filter size cannot " "specified",
                )
        elif not kernel or min(kernel) <= 0:
            raise fail(layer, "Caffe aborts here: Filter dimensions must be nonzero")
        pad = tuple(int(v) for v in p.pad) or (0,)
        stride = tuple(int(v) for v in p.stride) or (1,)
        if p.HasField("pad_h") or p.HasField("pad_w"):
            pad = (int(p.pad_h), int(p.pad_w))
        if p.HasField("stride_h") or p.HasField("stride_w"):
            stride = (int(p.stride_h), int(p.stride_w))
        if min(stride) <= 0:
            raise fail(layer, "Caffe aborts here: Stride dimensions must be nonzero")
        if p.global_pooling and (set(pad) != {0} or set(stride) != {1}):
            raise fail(layer, "Caffe aborts here: With Global_pooling: true; pad = 0, stride = 1")
        return _checked_attrs(layer, p.pool, kernel, stride, pad, bool(p.global_pooling), True)

    def infer(
        self, attrs: PoolAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape = in_shapes[0]
        if len(shape) not in (4, 5):
            raise fail(layer, f"expects 2 or 3 spatial axes (N, C, ...), got {shape}")
        return _infer(attrs, shape, layer)

    def emit(self, attrs: PoolAttrs, ctx: EmitContext) -> Emission:
        return _emit(attrs, ctx)

    def computes_in_place(self, attrs: PoolAttrs, in_shapes: Sequence[Shape]) -> bool:
        return False


@register
class Pooling3D(Layer[PoolAttrs]):
    """C3D's 3-D pooling over (N, C, L, H, W): kernel_depth x kernel_size x kernel_size windows,
    temporal_stride x stride x stride apart, ceil rounding without Caffe's last-window rule;
    MAX takes no pad, AVE pads H and W only and divides by the window clipped at size + pad.

    V2 `Pooling3D` reads pooling3d_param (C3D v1.1); V1 `POOLING3D` reads pooling_param's
    kernel_depth and temporal_stride (C3D v1.0).

    Source: facebook/C3D, C3D-v1.1/src/caffe/layers/pool3d_layer.cpp (LayerSetUp,
    Forward_cpu) and C3D-v1.0/src/caffe/layers/pool3d_layer.cpp.
    """

    types = ("Pooling3D",)
    role = Role.POOLING

    def parse(self, layer: LayerSource) -> PoolAttrs:
        if layer.param.HasField("pooling3d_param"):
            q = layer.param.pooling3d_param
            method, size, stride, pad = int(q.pool), int(q.kernel_size), int(q.stride), int(q.pad)
            depth, temporal = int(q.kernel_depth), int(q.temporal_stride)
        else:
            p = layer.param.pooling_param
            method, size, stride, pad = int(p.pool), int(p.kernel_size), int(p.stride), int(p.pad)
            depth, temporal = int(p.kernel_depth), int(p.temporal_stride)
        if method == STOCHASTIC:
            raise fail(layer, "STOCHASTIC pooling is not supported (not implemented on CPU)")
        if pad != 0 and method != AVE:
            raise fail(layer, "Caffe aborts here: Padding implemented only for average pooling")
        if size <= 0 or depth <= 0:
            raise fail(layer, f"kernel_size {size} and kernel_depth {depth} must be positive")
        if stride <= 0 or temporal <= 0:
            raise fail(layer, "stride and temporal_stride must be positive (C3D divides by them)")
        return PoolAttrs(
            method,
            (depth, size, size),
            (temporal, stride, stride),
            (0, pad, pad),
            False,
            True,
            clip_last=False,
        )

    def infer(
        self, attrs: PoolAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape = in_shapes[0]
        if len(shape) != 5:
            raise fail(layer, f"expects a 5-D input (N, C, L, H, W), got {shape}")
        return _infer(attrs, shape, layer)

    def emit(self, attrs: PoolAttrs, ctx: EmitContext) -> Emission:
        return _emit(attrs, ctx)

    def computes_in_place(self, attrs: PoolAttrs, in_shapes: Sequence[Shape]) -> bool:
        return False


@register
class NdPooling(Layer[PoolAttrs]):
    """video-caffe's NdPooling: MAX or AVE pooling over every axis after the channels, with
    per-axis `kernel_shape`, `stride_shape` and `pad_shape` messages. Only a cuDNN
    implementation exists (Forward_cpu is NOT_IMPLEMENTED): CUDNN_POOLING_MAX, or
    CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING (the whole kernel is the divisor), over the top
    size compute_output_shape gives: ceil, then on each axis WITH a pad, a last window that
    starts in the padding dropped (BVLC applies that rule to every axis once any pad is set).

    Refused where this cannot be matched with certainty: axes whose rule differs from BVLC's
    (mixed pads with a window starting past the input), a window with no input position in it,
    an AVE window that overhangs the
    padded input (cuDNN's divisor there is the whole kernel, Caffe's CPU one is clipped; no
    cuDNN to check against), a pad as large as the kernel.

    Source: chuckcho/video-caffe @ fc232b3e, src/caffe/layers/cudnn_ndpooling_layer.cpp
    (LayerSetUp, Reshape, compute_output_shape), include/caffe/util/cudnn.hpp
    (createNdPoolingDesc).
    """

    types = ("NdPooling",)
    role = Role.POOLING

    def parse(self, layer: LayerSource) -> PoolAttrs:
        p = layer.param.pooling_param
        if p.pool not in (MAX, AVE):
            raise fail(layer, "Caffe aborts here: Unknown pooling method (cuDNN: MAX or AVE)")
        kernel, stride, pad = nd_shapes(layer, p, None)
        if any(q >= k for k, q in zip(kernel, pad, strict=True)):
            raise fail(layer, f"pad_shape {pad} must be smaller than kernel_shape {kernel}")
        if p.global_pooling:
            if set(pad) != {0} or set(stride) != {1}:
                raise fail(layer, "global_pooling with a pad_shape or stride_shape: not supported")
            return PoolAttrs(int(p.pool), (), (1,), (0,), True, True)
        return PoolAttrs(int(p.pool), kernel, stride, pad, False, True)

    def infer(
        self, attrs: PoolAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape = in_shapes[0]
        if not 3 <= len(shape) <= 5:
            raise fail(layer, f"expects 1 to 3 spatial axes (N, C, ...), got {shape}")
        if not attrs.global_pooling:
            nd_shapes(layer, layer.param.pooling_param, len(shape))
        tops = _infer(attrs, shape, layer)
        kernel, stride, pad = geometry(attrs, shape)
        for dim, k, s, p, bvlc in zip(shape[2:], kernel, stride, pad, tops[0][2:], strict=True):
            own = caffe_pool_size(dim, k, s, p, True, clip=p > 0)
            if own != bvlc:
                raise fail(
                    layer,
                    f"pad_shape {pad}: the fork drops a last window only on axes with a pad "
                    f"(here {own} outputs where BVLC's rule gives {bvlc}); not supported",
                )
            if (own - 1) * s - p >= dim:
                raise fail(
                    layer,
                    f"the last window starts past the input ({dim}, kernel {k}, stride {s}, pad "
                    f"{p}): what cuDNN gives for an empty window is not known; not converted",
                )
            if attrs.method == AVE and (own - 1) * s + k > dim + 2 * p:
                raise fail(
                    layer,
                    f"an AVE window overhangs the padded input ({dim} + 2 * {p}, kernel {k}, "
                    f"stride {s}): cuDNN divides it by the whole kernel, unlike Caffe's CPU "
                    "pooling, and no cuDNN is at hand to confirm it; not converted",
                )
        return tops

    def emit(self, attrs: PoolAttrs, ctx: EmitContext) -> Emission:
        return _emit(attrs, ctx)

    def computes_in_place(self, attrs: PoolAttrs, in_shapes: Sequence[Shape]) -> bool:
        return False


@dataclass(frozen=True)
class ROIPoolingAttrs(Attrs):
    pooled: tuple[int, int]
    spatial_scale: float


@register
class ROIPooling(Layer[ROIPoolingAttrs]):
    """Max pooling of each region of interest into pooled_h x pooled_w bins. The second bottom
    holds R rows [batch index, x1, y1, x2, y2] in image coordinates; the output is
    (R, C, pooled_h, pooled_w), R known only at run time.

    Source: rbgirshick/caffe-fast-rcnn, src/caffe/layers/roi_pooling_layer.cpp (Forward_cpu).
    """

    types = ("ROIPooling",)
    bottoms = (2, 2)

    def computes_in_place(self, attrs: ROIPoolingAttrs, in_shapes: Sequence[Shape]) -> bool:
        return False

    def parse(self, layer: LayerSource) -> ROIPoolingAttrs:
        p = layer.param.roi_pooling_param
        pooled = (int(p.pooled_h), int(p.pooled_w))
        if min(pooled) <= 0:
            raise fail(layer, f"pooled_h and pooled_w must be positive, got {pooled}")
        return ROIPoolingAttrs(pooled, f32(p.spatial_scale))

    def infer(
        self, attrs: ROIPoolingAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        features, rois = in_shapes
        if len(features) != 4:
            raise fail(layer, f"expects 4-D features, got {features}")
        if len(rois) < 2 or rois[1] != 5:
            raise fail(layer, f"the regions {rois} must be (R, 5)")
        return [(rois[0], features[1]) + attrs.pooled]

    def emit(self, attrs: ROIPoolingAttrs, ctx: EmitContext) -> Emission:
        forward = call(
            "roi_pool",
            ctx.inputs[0],
            ctx.inputs[1],
            pooled=attrs.pooled,
            spatial_scale=attrs.spatial_scale,
        )
        return Emission(forward=forward, helpers=("roi_pool",))
