"""Resampling: Interp (bilinear, DeepLab/PSPNet) and Upsample (max-unpooling with a mask,
SegNet/ENet, and nearest `scale`, the YOLO forks)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from protocaffe.ir.graph import Attrs, Shape
from protocaffe.layers.base import (
    Emission,
    EmitContext,
    Layer,
    LayerSource,
    call,
    fail,
    tuple_expr,
)
from protocaffe.layers.registry import register


@dataclass(frozen=True)
class InterpAttrs(Attrs):
    zoom_factor: int | None
    shrink_factor: int | None
    height: int | None
    width: int | None
    pad_beg: int
    pad_end: int


def _fixed_size(attrs: InterpAttrs) -> bool:
    """Caffe's order: one factor alone wins, then height and width, then both factors."""
    one_factor = (attrs.zoom_factor is None) != (attrs.shrink_factor is None)
    return not one_factor and attrs.height is not None and attrs.width is not None


def interp_size(size: int, attrs: InterpAttrs, fixed: int | None) -> int:
    """Caffe's Interp output size for one axis (InterpLayer::Reshape)."""
    eff = size + attrs.pad_beg + attrs.pad_end
    if attrs.shrink_factor is not None and attrs.zoom_factor is None:
        return (eff - 1) // attrs.shrink_factor + 1
    if attrs.zoom_factor is not None and attrs.shrink_factor is None:
        return eff + (eff - 1) * (attrs.zoom_factor - 1)
    if fixed is not None:
        return fixed
    assert attrs.shrink_factor is not None and attrs.zoom_factor is not None
    shrunk = (eff - 1) // attrs.shrink_factor + 1
    return shrunk + (shrunk - 1) * (attrs.zoom_factor - 1)


@register
class Interp(Layer[InterpAttrs]):
    """Bilinear resize with Caffe's corner-aligned rule, after cropping `-pad_beg`/`-pad_end`.

    Source: DeepLab v2 (deeplab-public-ver2) and hszhao/PSPNet, src/caffe/layers/interp_layer.cpp
    (Reshape) and src/caffe/util/interp.cpp (caffe_cpu_interp2).
    """

    types = ("Interp",)

    def computes_in_place(self, attrs: InterpAttrs, in_shapes: Sequence[Shape]) -> bool:
        return False

    def parse(self, layer: LayerSource) -> InterpAttrs:
        p = layer.param.interp_param

        def given(name: str) -> int | None:
            return int(getattr(p, name)) if p.HasField(name) else None

        attrs = InterpAttrs(
            given("zoom_factor"),
            given("shrink_factor"),
            given("height"),
            given("width"),
            int(p.pad_beg),
            int(p.pad_end),
        )
        if attrs.pad_beg > 0 or attrs.pad_end > 0:
            raise fail(layer, "Interp supports only non-positive pad_beg/pad_end (cropping)")
        for name in ("zoom_factor", "shrink_factor"):
            value = getattr(attrs, name)
            if value is not None and value < 1:
                raise fail(layer, f"{name} must be at least 1, got {value}")
        factors = attrs.zoom_factor is not None or attrs.shrink_factor is not None
        if not factors and (attrs.height is None or attrs.width is None):
            raise fail(layer, "Interp needs zoom_factor, shrink_factor, or height and width")
        if len(layer.bottoms) > 1:
            raise fail(layer, "Interp with a second bottom (size reference) is not supported")
        return attrs

    def infer(
        self, attrs: InterpAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape = in_shapes[0]
        if len(shape) != 4:
            raise fail(layer, f"expects a 4-D input, got {shape}")
        eff = [d + attrs.pad_beg + attrs.pad_end for d in shape[2:]]
        out = [
            interp_size(shape[2], attrs, attrs.height),
            interp_size(shape[3], attrs, attrs.width),
        ]
        if min(eff) <= 0 or min(out) <= 0:
            raise fail(layer, f"the cropped input {eff} or the output {out} is empty")
        return [shape[:2] + (out[0], out[1])]

    def emit(self, attrs: InterpAttrs, ctx: EmitContext) -> Emission:
        factors = not _fixed_size(attrs)
        forward = call(
            "caffe_interp",
            ctx.x,
            zoom_factor=attrs.zoom_factor if factors else None,
            shrink_factor=attrs.shrink_factor if factors else None,
            size=None if factors else (attrs.height, attrs.width),
            pad_beg=attrs.pad_beg or None,
            pad_end=attrs.pad_end or None,
        )
        note = "follows the input size" if factors else "fixed size"
        return Emission(forward=forward, note=note, helpers=("caffe_interp",))


@dataclass(frozen=True)
class UpsampleAttrs(Attrs):
    """`size` is upsample_h/upsample_w when given; otherwise the output is input * scale - pad."""

    scale: tuple[int, int]
    pad_out: tuple[int, int]
    size: tuple[int, int] | None


@register
class Upsample(Layer[UpsampleAttrs]):
    """Two forks' `Upsample`. With two bottoms (SegNet/ENet) it is max-unpooling: each value goes
    to the flat index (h * W + w) that the Pooling layer's mask top recorded, zeros elsewhere.
    With one bottom (caffe-yolov3 and others) it repeats each value `scale` times per axis.

    Sources: alexgkendall/caffe-segnet (and TimoSaemann/caffe-enet),
    src/caffe/layers/upsample_layer.cpp; ChenYingpeng/caffe-yolov3, upsample_layer.cpp.
    """

    types = ("Upsample",)
    bottoms = (1, 3)  # a third input is added by a pass: the tensor whose size to restore

    def computes_in_place(self, attrs: UpsampleAttrs, in_shapes: Sequence[Shape]) -> bool:
        return False

    def parse(self, layer: LayerSource) -> UpsampleAttrs:
        p = layer.param.upsample_param
        size: tuple[int, int] | None = None
        if p.HasField("upsample_h") and p.HasField("upsample_w"):
            size = (int(p.upsample_h), int(p.upsample_w))
            if min(size) < 1:
                raise fail(layer, f"upsample_h/upsample_w must be positive, got {size}")
        if p.HasField("scale_h") or p.HasField("scale_w"):
            scale = (int(p.scale_h or p.scale), int(p.scale_w or p.scale))
        else:
            scale = (int(p.scale), int(p.scale))
        if size is None and min(scale) < 1:
            raise fail(layer, f"scale must be positive, got {scale}")
        pad_out = (int(p.pad_out_h), int(p.pad_out_w))
        if len(layer.bottoms) > 2:
            raise fail(layer, f"has {len(layer.bottoms)} bottoms, expects 1 or 2")
        return UpsampleAttrs(scale, pad_out, size)

    def infer(
        self, attrs: UpsampleAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape = in_shapes[0]
        if len(shape) != 4:
            raise fail(layer, f"expects a 4-D input, got {shape}")
        if len(in_shapes) > 1 and in_shapes[1] != shape:
            raise fail(layer, f"the mask {in_shapes[1]} must have the input's shape {shape}")
        if len(in_shapes) == 1:
            return [shape[:2] + (shape[2] * attrs.scale[0], shape[3] * attrs.scale[1])]
        if attrs.size is not None:
            return [shape[:2] + attrs.size]
        h = shape[2] * attrs.scale[0] - attrs.pad_out[0]
        w = shape[3] * attrs.scale[1] - attrs.pad_out[1]
        return [shape[:2] + (h, w)]

    def emit(self, attrs: UpsampleAttrs, ctx: EmitContext) -> Emission:
        x = ctx.x
        if len(ctx.inputs) == 1:
            sh, sw = attrs.scale
            forward = f"{x}.repeat_interleave({sh}, dim=2).repeat_interleave({sw}, dim=3)"
            return Emission(forward=forward, note="nearest")
        mask = ctx.inputs[1]
        if len(ctx.inputs) == 3:
            # A tuple, not `shape[2:]`: TorchScript types a shape slice as List[int].
            size = f"({ctx.inputs[2]}.shape[2], {ctx.inputs[2]}.shape[3])"
            note = "max-unpool to the pooled tensor's size"
        elif attrs.size is not None:
            size = tuple_expr(attrs.size)
            note = "max-unpool to a fixed size"
        else:
            sh, sw = attrs.scale
            ph, pw = attrs.pad_out
            size = f"({x}.shape[2] * {sh} - {ph}, {x}.shape[3] * {sw} - {pw})"
            note = "max-unpool"
        return Emission(
            forward=f"caffe_unpool({x}, {mask}, {size})", note=note, helpers=("caffe_unpool",)
        )

    def unpools(self, attrs: UpsampleAttrs, in_shapes: Sequence[Shape]) -> bool:
        return len(in_shapes) == 2
