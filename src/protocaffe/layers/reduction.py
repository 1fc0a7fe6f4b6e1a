"""Reductions: ArgMax and Reduction, the layers that shrink axes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from protocaffe.ir.graph import Attrs, Shape
from protocaffe.layers.base import (
    Emission,
    EmitContext,
    Layer,
    LayerSource,
    canonical_axis,
    f32,
    fail,
)
from protocaffe.layers.registry import register


@dataclass(frozen=True)
class ArgMaxAttrs(Attrs):
    top_k: int
    out_max_val: bool
    axis: int | None


@register
class ArgMax(Layer[ArgMaxAttrs]):
    """Indices (as floats, like Caffe) or values of the top_k largest entries."""

    types = ("ArgMax",)

    def parse(self, layer: LayerSource) -> ArgMaxAttrs:
        p = layer.param.argmax_param
        if p.top_k < 1:
            raise fail(layer, f"top_k must be at least 1, got {p.top_k}")
        axis = int(p.axis) if p.HasField("axis") else None
        return ArgMaxAttrs(int(p.top_k), bool(p.out_max_val), axis)

    def infer(
        self, attrs: ArgMaxAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape = in_shapes[0]
        if attrs.axis is not None:
            axis = canonical_axis(attrs.axis, len(shape), layer)
            if attrs.top_k > shape[axis]:
                raise fail(layer, f"top_k {attrs.top_k} exceeds axis {axis} of size {shape[axis]}")
            return [shape[:axis] + (attrs.top_k,) + shape[axis + 1 :]]
        count = 1
        for d in shape[1:]:
            count *= d
        if attrs.top_k > count:
            raise fail(layer, f"top_k {attrs.top_k} exceeds the {count} values per sample")
        rank = max(3, len(shape))
        out = [1] * rank
        out[0] = shape[0]
        out[1] = 2 if attrs.out_max_val else 1
        out[2] = attrs.top_k
        return [tuple(out)]

    def emit(self, attrs: ArgMaxAttrs, ctx: EmitContext) -> Emission:
        x = ctx.x
        if attrs.axis is not None:
            axis = attrs.axis % len(ctx.in_shapes[0])
            field = "values" if attrs.out_max_val else "indices"
            expr = f"torch.topk({x}, {attrs.top_k}, dim={axis}).{field}"
            if not attrs.out_max_val:
                expr = f"{expr}.to({x}.dtype)"
            return Emission(forward=expr)
        out = ctx.out_shapes[0]
        flat = f"torch.topk(torch.flatten({x}, 1), {attrs.top_k}, dim=1)"
        trailing = ", ".join(str(d) for d in out[2:])
        if attrs.out_max_val:
            return Emission(
                forward=f"torch.stack([{flat}.indices.to({x}.dtype), {flat}.values], 1)"
                f".reshape(-1, 2, {trailing})",
                note="indices, then values",
            )
        return Emission(forward=f"{flat}.indices.to({x}.dtype).reshape(-1, 1, {trailing})")


SUM, ASUM, SUMSQ, MEAN = 1, 2, 3, 4


@dataclass(frozen=True)
class ReductionAttrs(Attrs):
    operation: int
    axis: int
    coeff: float


@register
class Reduction(Layer[ReductionAttrs]):
    """Reduces every axis from `axis` on: SUM, ASUM, SUMSQ or MEAN, times coeff."""

    types = ("Reduction",)

    def parse(self, layer: LayerSource) -> ReductionAttrs:
        p = layer.param.reduction_param
        return ReductionAttrs(int(p.operation), int(p.axis), f32(p.coeff))

    def infer(
        self, attrs: ReductionAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape = in_shapes[0]
        axis = canonical_axis(attrs.axis, len(shape), layer)
        return [shape[:axis]]

    def emit(self, attrs: ReductionAttrs, ctx: EmitContext) -> Emission:
        axis = attrs.axis % len(ctx.in_shapes[0])
        flat = f"torch.flatten({ctx.x}, {axis})"
        expr = {
            SUM: f"{flat}.sum(dim=-1)",
            ASUM: f"{flat}.abs().sum(dim=-1)",
            SUMSQ: f"{flat}.pow(2).sum(dim=-1)",
            MEAN: f"{flat}.mean(dim=-1)",
        }[attrs.operation]
        if attrs.coeff != 1:
            expr = f"{expr} * {attrs.coeff!r}"
        return Emission(forward=expr)
