"""Resampling: Interp (bilinear, DeepLab/PSPNet), Upsample (max-unpooling with a mask,
SegNet/ENet, and nearest `scale`, the YOLO forks), and the oracle build's Resize,
BilinearInterpolate and MaxUnPool."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from protocaffe.ir.graph import Attrs, Shape
from protocaffe.layers.base import (
    FUNCTIONAL,
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
    With one bottom (caffe-yolov3 and others) it repeats each value `scale` times per axis;
    an unset `scale` is 1 there, as in the YOLO forks' caffe.proto and the oracle build, and 2
    under `--dialect segnet-upsample` (SegNet's default, which applies to its masked form).

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
        elif p.HasField("scale") or len(layer.bottoms) > 1:
            scale = (int(p.scale), int(p.scale))  # unset with a mask: SegNet's default, 2
        else:
            # One bottom, no scale: the YOLO forks' (and the oracle build's) default of 1;
            # SegNet's caffe.proto, which this schema follows, says 2 (--dialect
            # segnet-upsample).
            default = 2 if "segnet-upsample" in layer.dialects else 1
            scale = (default, default)
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


def _f32_scaled(scale: float, size: int) -> int:
    """int(scale * size) in float32 arithmetic, as Caffe computes a scaled output size."""
    single = struct.unpack("<f", struct.pack("<f", scale))[0]
    return int(struct.unpack("<f", struct.pack("<f", single * size))[0])


@dataclass(frozen=True)
class ResizeAttrs(Attrs):
    size: tuple[int, int] | None  # height and width, or None: scales of the input size
    scale: tuple[float, float]


@register
class Resize(Layer[ResizeAttrs]):
    """Bilinear resize as the oracle build's util_img.cpp does it: source position
    y * (H_in / H_out) (no half-pixel shift, no corner alignment); the neighbour below (right)
    is added only inside the image and the weights are not renormalised, so the last rows and
    columns of an upscaled image fade towards zero. Not torch's interpolate: a helper.

    Source: brocolli-caffe 9.0.2 (the oracle's build), src/caffe/layers/resize_layer.cpp,
    src/caffe/util/util_img.cpp (BiLinearResizeMat_cpu)."""

    types = ("Resize",)

    def parse(self, layer: LayerSource) -> ResizeAttrs:
        p = layer.param.resize_param
        if p.is_pyramid_test:
            for name in ("out_height_scale", "out_width_scale"):
                if not p.HasField(name):
                    raise fail(layer, f"Caffe aborts here: {name} is required with is_pyramid_test")
            return ResizeAttrs(None, (float(p.out_height_scale), float(p.out_width_scale)))
        for name in ("height", "width"):
            if not p.HasField(name):
                raise fail(layer, f"Caffe aborts here: output {name} is required")
        return ResizeAttrs((int(p.height), int(p.width)), (1.0, 1.0))

    def infer(
        self, attrs: ResizeAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape = in_shapes[0]
        if len(shape) != 4:
            raise fail(layer, f"expects a 4-D input (N, C, H, W), got {shape}")
        n, c, h, w = shape
        if attrs.size is not None:
            return [(n, c) + attrs.size]
        return [(n, c, _f32_scaled(attrs.scale[0], h), _f32_scaled(attrs.scale[1], w))]

    def emit(self, attrs: ResizeAttrs, ctx: EmitContext) -> Emission:
        size = ctx.out_shapes[0][2:]
        note = "fixed size" if attrs.size is not None else "the input size scaled, fixed here"
        return Emission(
            forward=call("caffe_resize", ctx.x, tuple_expr(size)),
            note=note,
            helpers=("caffe_resize",),
        )


@dataclass(frozen=True)
class BilinearInterpolateAttrs(Attrs):
    size: tuple[int, int] | None  # dst_h/dst_w when given (None entries keep the input's)
    given: tuple[bool, bool]
    scale_factor: float | None
    align_corners: bool


@register
class BilinearInterpolate(Layer[BilinearInterpolateAttrs]):
    """Bilinear resize to dst_h x dst_w (or int(size * scale_factor)), corner-aligned by
    default; the same sampling as torch's interpolate(bilinear) for either align_corners.

    Source: brocolli-caffe 9.0.2 (the oracle's build),
    src/caffe/layers/bilinear_interpolate_layer.cpp (LayerSetUp, Forward_cpu)."""

    types = ("BilinearInterpolate",)

    def parse(self, layer: LayerSource) -> BilinearInterpolateAttrs:
        p = layer.param.bilinear_interpolate_param
        has_size = p.HasField("dst_h") or p.HasField("dst_w")
        has_scale = p.HasField("scale_factor")
        if has_size == has_scale:
            raise fail(
                layer,
                "give dst_h/dst_w or scale_factor, not "
                + ("both" if has_size else "neither")
                + ": Caffe leaves the output size unset then",
            )
        given = (p.HasField("dst_h"), p.HasField("dst_w"))
        size = (int(p.dst_h), int(p.dst_w)) if has_size else None
        return BilinearInterpolateAttrs(
            size, given, float(p.scale_factor) if has_scale else None, bool(p.align_corners)
        )

    def infer(
        self, attrs: BilinearInterpolateAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape = in_shapes[0]
        if len(shape) != 4:
            raise fail(layer, f"expects a 4-D input (N, C, H, W), got {shape}")
        n, c, h, w = shape
        if attrs.size is not None:
            out = (
                attrs.size[0] if attrs.given[0] else h,
                attrs.size[1] if attrs.given[1] else w,
            )
        else:
            assert attrs.scale_factor is not None
            out = (_f32_scaled(attrs.scale_factor, h), _f32_scaled(attrs.scale_factor, w))
        if attrs.align_corners and 1 in out:
            raise fail(
                layer,
                f"an output size {out} of 1 with align_corners: Caffe divides 0 by 0 there "
                "and outputs NaN",
            )
        return [(n, c) + out]

    def emit(self, attrs: BilinearInterpolateAttrs, ctx: EmitContext) -> Emission:
        size = ctx.out_shapes[0][2:]
        forward = call(
            "F.interpolate",
            ctx.x,
            size=size,
            mode="bilinear",
            align_corners=attrs.align_corners,
        )
        return Emission(forward=forward, note="fixed size", imports=(FUNCTIONAL,))


@dataclass(frozen=True)
class MaxUnPoolAttrs(Attrs):
    size: tuple[int, int]


@register
class MaxUnPool(Layer[MaxUnPoolAttrs]):
    """Max-unpooling: zeros of dst_h x dst_w, each input value at the flat index h * W + w of
    its channel plane that the mask (bottom 1, a Pooling layer's second top) holds.

    Source: brocolli-caffe 9.0.2 (the oracle's build), src/caffe/layers/maxunpool_layer.cpp."""

    types = ("MaxUnPool",)
    bottoms = (2, 2)

    def parse(self, layer: LayerSource) -> MaxUnPoolAttrs:
        p = layer.param.max_unpool_param
        if not (p.HasField("dst_h") and p.HasField("dst_w")):
            raise fail(layer, "Caffe aborts here: dst_h and dst_w are required.")
        size = (int(p.dst_h), int(p.dst_w))
        return MaxUnPoolAttrs(size)

    def infer(
        self, attrs: MaxUnPoolAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        x, mask = in_shapes
        if len(x) != 4:
            raise fail(layer, f"Caffe aborts here: Input must have 4 axes, got {x}")
        if mask != x:
            raise fail(layer, f"the mask {mask} must have the input's shape {x}")
        return [x[:2] + attrs.size]

    def emit(self, attrs: MaxUnPoolAttrs, ctx: EmitContext) -> Emission:
        x, mask = ctx.inputs
        return Emission(
            forward=f"caffe_unpool({x}, {mask}, {tuple_expr(attrs.size)})",
            note="Caffe aborts on a mask index outside the output",
            helpers=("caffe_unpool",),
        )


@dataclass(frozen=True)
class UnpoolingAttrs(Attrs):
    size: tuple[int, int] | None  # unpool_size or unpool_h/unpool_w; None: from the input
    kernel: tuple[int, int]
    stride: tuple[int, int]


@register
class Unpooling(Layer[UnpoolingAttrs]):
    """DeconvNet's max-unpooling (V1 `UNPOOLING`): zeros of the unpooled size, each input value
    at the flat index h * W + w of its channel plane that the mask (bottom 1, a Pooling layer's
    second top) holds; a later value at the same index overwrites an earlier one. The size is
    unpool_size (or unpool_h and unpool_w), else max((H - 1) * stride + kernel, H * stride + 1)
    per axis (pad must be 0 in the fork).

    Only the masked MAX form is supported: AVE, TILE and MAX without a mask are refused.

    Source: HyeonwooNoh/caffe, src/caffe/layers/unpooling_layer.cpp (LayerSetUp, Reshape,
    Forward_cpu)."""

    types = ("Unpooling",)
    bottoms = (1, 3)  # a third input is added by a pass: the tensor whose size to restore

    def computes_in_place(self, attrs: UnpoolingAttrs, in_shapes: Sequence[Shape]) -> bool:
        return False

    def parse(self, layer: LayerSource) -> UnpoolingAttrs:
        p = layer.param.unpooling_param
        has = p.HasField
        if has("kernel_size") == (has("kernel_h") and has("kernel_w")):
            raise fail(
                layer, "Caffe aborts here: Filter size is kernel_size OR kernel_h and kernel_w"
            )
        if not ((not has("pad") and has("pad_h") and has("pad_w")) or not has("pad_h")):
            raise fail(layer, "Caffe aborts here: pad is pad OR pad_h and pad_w are required.")
        if (has("stride_h") or has("stride_w")) and (
            has("stride") or not (has("stride_h") and has("stride_w"))
        ):
            raise fail(
                layer, "Caffe aborts here: Stride is stride OR stride_h and stride_w are required."
            )
        sized = has("unpool_h") and has("unpool_w")
        if (has("unpool_h") or has("unpool_w")) and (has("unpool_size") or not sized):
            raise fail(
                layer,
                "Caffe aborts here: Unpool is unpool_size OR unpool_h and unpool_w are required.",
            )
        if has("kernel_size"):
            kernel = (int(p.kernel_size), int(p.kernel_size))
        else:
            kernel = (int(p.kernel_h), int(p.kernel_w))
        if min(kernel) <= 0:
            raise fail(layer, "Caffe aborts here: Filter dimensions cannot be zero.")
        pad = (int(p.pad_h), int(p.pad_w)) if has("pad_h") else (int(p.pad), int(p.pad))
        if pad != (0, 0):
            raise fail(layer, "Caffe aborts here: currently, only zero padding is allowed.")
        if has("stride_h"):
            stride = (int(p.stride_h), int(p.stride_w))
        else:
            stride = (int(p.stride), int(p.stride))
        size: tuple[int, int] | None = None
        if has("unpool_size"):
            size = (int(p.unpool_size), int(p.unpool_size))
        elif sized:
            size = (int(p.unpool_h), int(p.unpool_w))
        if int(p.unpool) != 0:
            raise fail(layer, "only MAX unpooling is supported (AVE and TILE are not)")
        if len(layer.bottoms) != 2:
            raise fail(layer, "MAX unpooling without a mask bottom is not supported")
        return UnpoolingAttrs(size, kernel, stride)

    def infer(
        self, attrs: UnpoolingAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        x, mask = in_shapes[:2]
        if len(x) != 4:
            raise fail(layer, f"expects a 4-D input, got {x}")
        if mask != x:
            raise fail(layer, f"the mask {mask} must have the input's shape {x}")
        if attrs.size is not None:
            return [x[:2] + attrs.size]
        h, w = (
            max((size - 1) * s + k, size * s + 1)
            for size, s, k in zip(x[2:], attrs.stride, attrs.kernel, strict=True)
        )
        return [x[:2] + (h, w)]

    def emit(self, attrs: UnpoolingAttrs, ctx: EmitContext) -> Emission:
        x, mask = ctx.inputs[:2]
        size = tuple_expr(ctx.out_shapes[0][2:])
        note = "DeconvNet's max-unpool"
        if len(ctx.inputs) == 3:
            size = f"({ctx.inputs[2]}.shape[2], {ctx.inputs[2]}.shape[3])"
            note += " to the pooled tensor's size"
        return Emission(
            forward=f"caffe_unpool({x}, {mask}, {size})",
            note=note,
            helpers=("caffe_unpool",),
        )

    def unpools(self, attrs: UnpoolingAttrs, in_shapes: Sequence[Shape]) -> bool:
        return True
