"""Reordering: layers of the forks that move values without computing new ones (Transpose and
Reverse of the OCR forks, Flip, darknet's Reorg)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from protocaffe.ir.graph import Attrs, Shape
from protocaffe.layers.base import (
    Emission,
    EmitContext,
    Layer,
    LayerSource,
    fail,
    tuple_expr,
)
from protocaffe.layers.registry import register


@dataclass(frozen=True)
class TransposeAttrs(Attrs):
    dims: tuple[int, ...]


@register
class Transpose(Layer[TransposeAttrs]):
    """Axis i of the output is axis dim[i] of the input (numpy's `transpose(dim)`).

    Source: senlinuc/caffe_ocr, src/caffe/layers/transpose_layer.cpp (TransposeLayer::Reshape,
    `permute`; transpose_cpu); tianzhi0549/CTPN's layer is the same.
    """

    types = ("Transpose",)

    def parse(self, layer: LayerSource) -> TransposeAttrs:
        dims = tuple(int(d) for d in layer.param.transpose_param.dim)
        if sorted(dims) != list(range(len(dims))):
            raise fail(layer, f"transpose_param.dim {list(dims)} is not a permutation of 0..N-1")
        if layer.tops and layer.bottoms and layer.tops[0] == layer.bottoms[0]:
            raise fail(layer, "Transpose does not allow in-place computation (Caffe aborts)")
        return TransposeAttrs(dims)

    def infer(
        self, attrs: TransposeAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape = in_shapes[0]
        if len(shape) != len(attrs.dims):
            raise fail(
                layer,
                f"transpose_param has {len(attrs.dims)} dims for a {len(shape)}-D input {shape}",
            )
        return [tuple(shape[d] for d in attrs.dims)]

    def emit(self, attrs: TransposeAttrs, ctx: EmitContext) -> Emission:
        if attrs.dims == tuple(range(len(attrs.dims))):
            return Emission(forward=ctx.x)
        return Emission(forward=f"{ctx.x}.permute{tuple_expr(attrs.dims)}")

    def passes_through(
        self, attrs: TransposeAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> bool:
        return attrs.dims == tuple(range(len(attrs.dims)))


@dataclass(frozen=True)
class ReverseAttrs(Attrs):
    axis: int


@register
class Reverse(Layer[ReverseAttrs]):
    """The input in reverse order along `axis` (time, for the OCR forks' backward LSTMs).

    Source: senlinuc/caffe_ocr, src/caffe/layers/reverse_layer.cpp (ReverseLayer::Forward_cpu);
    tianzhi0549/CTPN's reverse_layer.cpp does the same.
    """

    types = ("Reverse",)

    def parse(self, layer: LayerSource) -> ReverseAttrs:
        axis = int(layer.param.reverse_param.axis)
        if axis < 0:
            raise fail(layer, f"reverse_param.axis must be >= 0, got {axis}")
        if layer.tops and layer.bottoms and layer.tops[0] == layer.bottoms[0]:
            raise fail(layer, "Reverse does not allow in-place computation (Caffe aborts)")
        return ReverseAttrs(axis)

    def infer(
        self, attrs: ReverseAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        if attrs.axis >= len(in_shapes[0]):
            raise fail(layer, f"axis {attrs.axis} is out of range for {in_shapes[0]}")
        return [in_shapes[0]]

    def emit(self, attrs: ReverseAttrs, ctx: EmitContext) -> Emission:
        return Emission(forward=f"torch.flip({ctx.x}, dims=[{attrs.axis}])")


@dataclass(frozen=True)
class FlipAttrs(Attrs):
    width: bool
    height: bool


@register
class Flip(Layer[FlipAttrs]):
    """A 4-D input mirrored left-right (`flip_width`, default) and/or upside down.

    Source: happynear/caffe-windows, src/caffe/layers/flip_layer.cpp (FlipLayer::Forward_cpu);
    flip_param (field 212 there): flip_width (default true), flip_height (default false).
    """

    types = ("Flip",)

    def parse(self, layer: LayerSource) -> FlipAttrs:
        p = layer.param.flip_param
        if layer.tops and layer.bottoms and layer.tops[0] == layer.bottoms[0]:
            # Forward_cpu reads the bottom while it writes the top: in place it would read
            # values it has already overwritten.
            raise fail(layer, "Flip in place reads what it has overwritten; give it a new top")
        return FlipAttrs(bool(p.flip_width), bool(p.flip_height))

    def infer(
        self, attrs: FlipAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        if len(in_shapes[0]) != 4:
            raise fail(layer, f"expects a 4-D input, got {in_shapes[0]}")
        return [in_shapes[0]]

    def emit(self, attrs: FlipAttrs, ctx: EmitContext) -> Emission:
        dims = ([2] if attrs.height else []) + ([3] if attrs.width else [])
        if not dims:
            return Emission(forward=ctx.x)
        return Emission(forward=f"torch.flip({ctx.x}, dims={dims!r})")

    def passes_through(
        self, attrs: FlipAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> bool:
        return not attrs.width and not attrs.height


@dataclass(frozen=True)
class ReorgAttrs(Attrs):
    stride: int
    reverse: bool


@register
class Reorg(Layer[ReorgAttrs]):
    """darknet's reorg (YOLOv2's passthrough layer): (N, C, H, W) -> (N, C*s*s, H/s, W/s).

    It is not a plain space-to-depth: darknet's `reorg_cpu`, called with forward = reverse
    (false), reads the input as if it were (N, C/s^2, H*s, W*s) and writes output element
    ((n*C + c)*H + h)*W + w from input (n, c % (C/s^2), h*s + k / s, w*s + k % s) with
    k = c / (C/s^2); the buffer is then shaped (N, C*s^2, H/s, W/s). With `reverse` the
    permutation is inverted and the shape is (N, C/s^2, H*s, W*s).

    Source: gklz1982/caffe-yolov2, include/caffe/layers/reorg_layer.hpp (reorg_cpu, the
    8-argument overload) and src/caffe/layers/reorg_layer.cpp (LayerSetUp, Forward_cpu);
    eric612/MobileNet-YOLO's copy is the same.
    """

    types = ("Reorg",)

    def parse(self, layer: LayerSource) -> ReorgAttrs:
        p = layer.param.reorg_param
        if not p.HasField("stride"):
            raise fail(layer, "Reorg needs reorg_param.stride (Caffe aborts without it)")
        if p.stride < 1:
            raise fail(layer, f"reorg_param.stride must be positive, got {p.stride}")
        if layer.tops and layer.bottoms and layer.tops[0] == layer.bottoms[0]:
            raise fail(layer, "Reorg does not allow in-place computation (Caffe aborts)")
        return ReorgAttrs(int(p.stride), bool(p.reverse))

    def infer(
        self, attrs: ReorgAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape = in_shapes[0]
        if len(shape) != 4:
            raise fail(layer, f"expects a 4-D input, got {shape}")
        n, c, h, w = shape
        s = attrs.stride
        if attrs.reverse:
            if c % (s * s):
                raise fail(layer, f"channels {c} are not divisible by stride² {s * s}")
            return [(n, c // (s * s), h * s, w * s)]
        # Caffe writes N*C*H*W values into a top of N*C*s^2*(H/s)*(W/s): they must agree, and
        # the reinterpretation needs C divisible by s^2.
        if h % s or w % s or c % (s * s):
            raise fail(
                layer,
                f"the input {shape} must have H and W divisible by {s} and C by {s * s} "
                "(darknet's reorg indexes out of the output otherwise)",
            )
        return [(n, c * s * s, h // s, w // s)]

    def emit(self, attrs: ReorgAttrs, ctx: EmitContext) -> Emission:
        x, s = ctx.x, attrs.stride
        _, c, h, w = ctx.in_shapes[0]
        if attrs.reverse:
            # top (N, C/s^2, H, s, W, s) <- bottom (N, s, s, C/s^2, H, W)
            forward = (
                f"{x}.reshape(-1, {s}, {s}, {c // (s * s)}, {h}, {w})"
                f".permute(0, 3, 4, 1, 5, 2).reshape(-1, {c // (s * s)}, {h * s}, {w * s})"
            )
        else:
            # the bottom read as (N, C/s^2, H, s, W, s) -> (N, s, s, C/s^2, H, W), then reshaped
            forward = (
                f"{x}.reshape(-1, {c // (s * s)}, {h}, {s}, {w}, {s})"
                f".permute(0, 3, 5, 1, 2, 4).reshape(-1, {c * s * s}, {h // s}, {w // s})"
            )
        return Emission(forward=forward, note="darknet's reorg index order")
