"""Pooling: Pooling (MAX, AVE, global) with Caffe's exact output sizes and AVE divisor, and
Faster R-CNN's ROIPooling.

Caffe's rounding rule is `caffe_pool_size`. PyTorch's pooling agrees with Caffe whenever both
give the same output size and torch accepts the padding (pad <= kernel / 2); the AVE divisor
then agrees too, because torch also clips the window at H + pad. Where they do not agree, the
generated code calls the `caffe_pool2d` helper (templates/helpers), which pads explicitly and
divides by Caffe's own window count; it computes the output size at run time with the same rule,
and tests/test_pooling_property.py checks the two against each other over a grid of geometries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from protocaffe.ir.graph import Attrs, Shape
from protocaffe.layers.base import (
    FUNCTIONAL,
    Emission,
    EmitContext,
    Layer,
    LayerSource,
    Role,
    call,
    f32,
    fail,
    opt,
    pair,
    spatial,
    tuple_expr,
)
from protocaffe.layers.registry import register

MAX, AVE, STOCHASTIC = 0, 1, 2
CEIL = 0


@dataclass(frozen=True)
class PoolAttrs(Attrs):
    method: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    global_pooling: bool
    ceil: bool
    # A second top holds the argmax of each window as a flat index h * W + w into its channel
    # plane (SegNet); Caffe takes the first maximum in row-major order, as torch does.
    mask: bool = False
    # --dialect darknet-pool: one more output row and column (ChenYingpeng/darknet2caffe).
    extra: int = 0


def caffe_pool_size(size: int, k: int, s: int, p: int, ceil: bool, extra: int = 0) -> int:
    """Caffe's pooled size: ceil (or floor), `extra` more (the darknet dialect), then, only when
    pad > 0, drop a last window that would start in the padding (PoolingLayer::Reshape)."""
    span = size + 2 * p - k
    out = (math.ceil(span / s) if ceil else span // s) + 1 + extra
    if p > 0 and (out - 1) * s >= size + p:
        out -= 1
    return out


def _ceil_from(layer: LayerSource) -> bool:
    p = layer.param.pooling_param
    if p.HasField("ceil_mode"):
        return bool(p.ceil_mode)
    return bool(p.round_mode == CEIL)


@register
class Pooling(Layer[PoolAttrs]):
    types = ("Pooling",)
    tops = (1, 2)  # a second top is the argmax mask (SegNet); it needs the Upsample family
    role = Role.POOLING

    def parse(self, layer: LayerSource) -> PoolAttrs:
        p = layer.param.pooling_param
        if p.pool == STOCHASTIC:
            raise fail(layer, "STOCHASTIC pooling is not supported (it is random at TEST time)")
        if len(layer.tops) > 1 and p.pool != MAX:
            raise fail(layer, "only MAX pooling has a mask top")
        if p.HasField("ceil_mode") and p.HasField("round_mode"):
            raise fail(layer, "both ceil_mode and round_mode are set; use one")
        global_pooling = bool(p.global_pooling)
        kernel = spatial([], opt(p, "kernel_size"), opt(p, "kernel_h"), opt(p, "kernel_w"), 0)
        stride = spatial([], opt(p, "stride"), opt(p, "stride_h"), opt(p, "stride_w"), 1)
        pad = spatial([], opt(p, "pad"), opt(p, "pad_h"), opt(p, "pad_w"), 0)
        if not global_pooling and min(kernel) <= 0:
            raise fail(layer, "pooling needs kernel_size (or kernel_h and kernel_w)")
        if min(stride) <= 0:
            raise fail(layer, f"stride must be positive, got {stride}")
        if not global_pooling and (pad[0] >= kernel[0] or pad[1] >= kernel[1]):
            raise fail(layer, f"pad {pad} must be smaller than the kernel {kernel}")
        mask = len(layer.tops) == 2
        if mask and global_pooling:
            raise fail(layer, "a mask top with global pooling is not supported")
        # ChenYingpeng/darknet2caffe's PoolingLayer::Reshape: `(kernel_h - stride_h) % 2 == 1`
        # adds a row and a column (C++'s % keeps a negative difference from firing).
        rise = kernel[0] - stride[0]
        darknet = "darknet-pool" in layer.dialects and rise > 0 and rise % 2 == 1
        if darknet and (global_pooling or mask):
            raise fail(layer, "--dialect darknet-pool with global pooling or a mask top")
        extra = 1 if darknet else 0
        # The fork always rounds up (it removed round_mode).
        ceil = True if "darknet-pool" in layer.dialects else _ceil_from(layer)
        return PoolAttrs(p.pool, kernel, stride, pad, global_pooling, ceil, mask, extra)

    def infer(
        self, attrs: PoolAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape = in_shapes[0]
        if len(shape) != 4:
            raise fail(layer, f"expects a 4-D input, got {shape}")
        n, c, h, w = shape
        if attrs.global_pooling:
            return [(n, c, 1, 1)]
        out = [
            caffe_pool_size(dim, k, s, p, attrs.ceil, attrs.extra)
            for dim, k, s, p in zip((h, w), attrs.kernel, attrs.stride, attrs.pad, strict=True)
        ]
        # Caffe accepts a kernel larger than the input as long as one window remains.
        if min(out) <= 0:
            raise fail(
                layer,
                f"kernel {attrs.kernel} is larger than the padded input "
                f"{h + 2 * attrs.pad[0]}x{w + 2 * attrs.pad[1]}",
            )
        if attrs.mask and not _torch_agrees(attrs):
            raise fail(
                layer,
                "a mask top needs a geometry where torch's pooling windows equal Caffe's "
                "(pad <= kernel / 2, and kernel >= stride when pad is 0)",
            )
        return [(n, c, out[0], out[1])] * (2 if attrs.mask else 1)

    def emit(self, attrs: PoolAttrs, ctx: EmitContext) -> Emission:
        is_max = attrs.method == MAX
        x = ctx.x
        if attrs.global_pooling:
            fn = "torch.amax" if is_max else "torch.mean"
            return Emission(forward=f"{fn}({x}, dim=(2, 3), keepdim=True)", note="global")
        geometry = list(zip(attrs.kernel, attrs.stride, attrs.pad, strict=True))
        if attrs.mask:
            forward = call(
                "F.max_pool2d",
                x,
                repr(pair(attrs.kernel)),
                repr(pair(attrs.stride)),
                padding=pair(attrs.pad) if attrs.pad != (0, 0) else None,
                ceil_mode=True if attrs.ceil else None,
                return_indices=True,
            )
            return Emission(
                forward=forward,
                note="and the argmax mask (flat h * W + w)",
                imports=(FUNCTIONAL,),
            )
        if _torch_agrees(attrs):
            pad = pair(attrs.pad)
            init = call(
                "nn.MaxPool2d" if is_max else "nn.AvgPool2d",
                kernel_size=pair(attrs.kernel),
                stride=pair(attrs.stride),
                padding=pad if pad != 0 else None,
                ceil_mode=True if attrs.ceil else None,
            )
            h, w = ctx.in_shapes[0][2:]
            rounds_up = attrs.ceil and any(
                caffe_pool_size(d, k, s, p, True) != caffe_pool_size(d, k, s, p, False)
                for d, (k, s, p) in zip((h, w), geometry, strict=True)
            )
            note = "Caffe rounds up" if rounds_up else ""
            return Emission(forward=f"self.{ctx.attr}({x})", init=init, note=note)
        forward = call(
            "caffe_pool2d",
            x,
            tuple_expr(attrs.kernel),
            tuple_expr(attrs.stride),
            tuple_expr(attrs.pad),
            ceil=attrs.ceil,
            average=not is_max,
            extra=attrs.extra or None,
        )
        note = "Caffe's window rule differs from torch's here"
        if attrs.extra:
            note = "darknet's size rule (--dialect darknet-pool)"
        return Emission(forward=forward, note=note, helpers=("caffe_pool2d",))

    def records_argmax(self, attrs: PoolAttrs) -> bool:
        return attrs.mask


def _torch_agrees(attrs: PoolAttrs) -> bool:
    """torch agrees with Caffe for every input size when it accepts the padding and, in ceil
    mode, when pad > 0 or kernel >= stride (then both drop the same last window)."""
    geometry = zip(attrs.kernel, attrs.stride, attrs.pad, strict=True)
    if attrs.extra:
        return False
    return all(2 * p <= k and (not attrs.ceil or p > 0 or k >= s) for k, s, p in geometry)


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
