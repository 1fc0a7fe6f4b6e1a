"""Reductions: ArgMax and Reduction, the layers that shrink axes."""

from __future__ import annotations

import math
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
    """Indices (as floats, like Caffe) or values of the top_k largest entries.

    Caffe ranks (value, index) pairs with std::greater (argmax_layer.cpp Forward_cpu), so among
    equal values the larger index comes first: an ascending stable sort, reversed.
    """

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
        if not shape:
            # LayerSetUp's bottom[0]->count(1) on a 0-D blob.
            raise fail(
                layer,
                "Caffe aborts here: ArgMax without axis needs an axis 0 (count(1) "
                "of a 0-D blob checks start_axis <= end_axis)",
            )
        count = math.prod(shape[1:])
        if attrs.top_k > count:
            raise fail(layer, f"top_k {attrs.top_k} exceeds the {count} values per sample")
        rank = max(3, len(shape))
        out = [1] * rank
        out[0] = shape[0]
        out[1] = 2 if attrs.out_max_val else 1
        out[2] = attrs.top_k
        return [tuple(out)]

    def computes_in_place(self, attrs: ArgMaxAttrs, in_shapes: Sequence[Shape]) -> bool:
        return False

    def emit(self, attrs: ArgMaxAttrs, ctx: EmitContext) -> Emission:
        x, k = ctx.x, attrs.top_k
        note = "ties: the larger index first, as Caffe"
        if attrs.axis is not None:
            d = attrs.axis % len(ctx.in_shapes[0])
            field = "values" if attrs.out_max_val else "indices"
            expr = f"torch.sort({x}, dim={d}, stable=True).{field}.flip({d}).narrow({d}, 0, {k})"
            if not attrs.out_max_val:
                expr = f"{expr}.to({x}.dtype)"
            return Emission(forward=expr, note=note)
        trailing = ", ".join(str(d) for d in ctx.out_shapes[0][2:])
        ranked = f"torch.sort({x}.reshape({x}.shape[0], -1), dim=1, stable=True)"
        indices = f"{ranked}.indices.flip(1)[:, :{k}].to({x}.dtype)"
        if attrs.out_max_val:
            values = f"{ranked}.values.flip(1)[:, :{k}]"
            return Emission(
                forward=f"torch.stack([{indices}, {values}], 1).reshape(-1, 2, {trailing})",
                note=f"indices, then values; {note}",
            )
        return Emission(forward=f"{indices}.reshape(-1, 1, {trailing})", note=note)


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

    def computes_in_place(self, attrs: ReductionAttrs, in_shapes: Sequence[Shape]) -> bool:
        return False

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
