"""Linear maps: InnerProduct, Scale, Bias, Eltwise and SENet's Axpy, the layers that are
(multi-)linear in their inputs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from protocaffe.ir.graph import Attrs, NoAttrs, Shape
from protocaffe.layers.base import (
    BlobSpec,
    Emission,
    EmitContext,
    Init,
    Layer,
    LayerSource,
    Role,
    call,
    canonical_axis,
    fail,
    tuple_expr,
)
from protocaffe.layers.registry import register

if TYPE_CHECKING:  # numpy only where weights are converted (see Layer.state)
    import numpy as np


@dataclass(frozen=True)
class InnerProductAttrs(Attrs):
    num_output: int
    bias: bool
    axis: int
    transpose: bool


@register
class InnerProduct(Layer[InnerProductAttrs]):
    types = ("InnerProduct",)
    role = Role.DENSE

    def computes_in_place(self, attrs: InnerProductAttrs, in_shapes: Sequence[Shape]) -> bool:
        return False  # the top is reshaped (and written) before the product reads the bottom

    def parse(self, layer: LayerSource) -> InnerProductAttrs:
        p = layer.param.inner_product_param
        if not p.HasField("num_output"):
            raise fail(layer, "inner_product_param.num_output is required")
        return InnerProductAttrs(
            int(p.num_output), bool(p.bias_term), int(p.axis), bool(p.transpose)
        )

    def _fan_in(self, attrs: InnerProductAttrs, shape: Shape) -> tuple[int, int]:
        axis = attrs.axis % len(shape)
        return axis, math.prod(shape[axis:])

    def infer(
        self, attrs: InnerProductAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape = in_shapes[0]
        axis = canonical_axis(attrs.axis, len(shape), layer)
        return [shape[:axis] + (attrs.num_output,)]

    def blobs(self, attrs: InnerProductAttrs, in_shapes: Sequence[Shape]) -> list[BlobSpec]:
        _, k = self._fan_in(attrs, in_shapes[0])
        n = attrs.num_output
        specs = [BlobSpec((k, n) if attrs.transpose else (n, k), Init.FAN_IN, k)]
        if attrs.bias:
            specs.append(BlobSpec((n,), Init.SMALL))
        return specs

    def param_names(self, attrs: InnerProductAttrs, in_shapes: Sequence[Shape]) -> tuple[str, ...]:
        return ("weight", "bias") if attrs.bias else ("weight",)

    def state(
        self, attrs: InnerProductAttrs, in_shapes: Sequence[Shape], blobs: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        import numpy as np

        weight = np.ascontiguousarray(blobs[0].T) if attrs.transpose else blobs[0]
        return dict(zip(self.param_names(attrs, in_shapes), [weight, *blobs[1:]], strict=True))

    def emit(self, attrs: InnerProductAttrs, ctx: EmitContext) -> Emission:
        shape = ctx.in_shapes[0]
        axis, k = self._fan_in(attrs, shape)
        init = call(
            "nn.Linear", repr(k), repr(attrs.num_output), bias=False if not attrs.bias else None
        )
        x = ctx.x if axis == len(shape) - 1 else f"torch.flatten({ctx.x}, {axis})"
        note = "weight stored transposed in Caffe" if attrs.transpose else ""
        return Emission(forward=f"self.{ctx.attr}({x})", init=init, note=note)

    def fresh_output(self, attrs: InnerProductAttrs, in_shapes: Sequence[Shape]) -> bool:
        return True

    def absorbs_affine(
        self, attrs: InnerProductAttrs, in_shapes: Sequence[Shape]
    ) -> InnerProductAttrs | None:
        # Over axis 1 only: then output channel c is weight row c applied to the input.
        if attrs.axis % len(in_shapes[0]) != 1:
            return None
        return replace(attrs, bias=True)

    def multiply_adds(
        self, attrs: InnerProductAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> int:
        shape = in_shapes[0]
        axis = attrs.axis % len(shape)
        return sum(math.prod(s) for s in out_shapes) * math.prod(shape[axis:])


@dataclass(frozen=True)
class BroadcastAttrs(Attrs):
    """Scale/Bias: the operand spans `num_axes` axes of the input from `axis` on."""

    axis: int
    num_axes: int
    bias: bool  # Scale only: bias_term


def _operand_shape(attrs: BroadcastAttrs, in_shapes: Sequence[Shape]) -> Shape:
    """The shape of the learned (or second-bottom) operand, checked as Caffe checks it.
    Raises ValueError when the shapes do not fit."""
    shape = in_shapes[0]
    if len(in_shapes) == 2:
        operand = in_shapes[1]
        axis = attrs.axis if attrs.axis >= 0 else attrs.axis + len(shape)
        if len(operand) == 0:
            return operand
        if not 0 <= axis <= len(shape) - len(operand) or (
            shape[axis : axis + len(operand)] != operand
        ):
            raise ValueError(
                f"bottom 1 shape {operand} does not match bottom 0 shape {shape} from axis "
                f"{attrs.axis}",
            )
        return operand
    if not -len(shape) <= attrs.axis < len(shape):
        # LayerSetUp's CanonicalAxisIndex, whatever num_axes is (a 0-D input has no axis).
        raise ValueError(
            f"Caffe aborts here: axis {attrs.axis} out of range for {len(shape)}-D Blob"
        )
    axis = attrs.axis % len(shape)
    if attrs.num_axes == -1:
        return shape[axis:]
    if attrs.num_axes < -1 or axis + attrs.num_axes > len(shape):
        raise ValueError(f"num_axes {attrs.num_axes} from axis {axis} exceeds the input rank")
    return shape[axis : axis + attrs.num_axes]


def _trailing(attrs: BroadcastAttrs, in_shapes: Sequence[Shape], operand: Shape) -> int:
    """How many trailing singleton axes the operand needs to broadcast against the input."""
    rank = len(in_shapes[0])
    if not operand:
        return 0
    axis = attrs.axis % rank if rank else 0
    return rank - axis - len(operand)


def _broadcast(operand: str, trailing: int) -> str:
    if trailing == 0:
        return operand
    return f"{operand}[{', '.join(['...'] + ['None'] * trailing)}]"


class _Broadcast(Layer[BroadcastAttrs]):
    bottoms = (1, 2)

    def fresh_output(self, attrs: BroadcastAttrs, in_shapes: Sequence[Shape]) -> bool:
        return True

    def infer(
        self, attrs: BroadcastAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        try:
            _operand_shape(attrs, in_shapes)
        except ValueError as exc:
            raise fail(layer, str(exc)) from None
        return [in_shapes[0]]


@register
class Scale(_Broadcast):
    """x * scale (+ bias), the scale learned or given as a second bottom."""

    types = ("Scale",)
    role = Role.NORMALIZATION

    def parse(self, layer: LayerSource) -> BroadcastAttrs:
        p = layer.param.scale_param
        return BroadcastAttrs(int(p.axis), int(p.num_axes), bool(p.bias_term))

    def blobs(self, attrs: BroadcastAttrs, in_shapes: Sequence[Shape]) -> list[BlobSpec]:
        operand = _operand_shape(attrs, in_shapes)
        specs = [] if len(in_shapes) == 2 else [BlobSpec(operand, Init.ONE)]
        if attrs.bias:
            specs.append(BlobSpec(operand, Init.SMALL))
        return specs

    def param_names(self, attrs: BroadcastAttrs, in_shapes: Sequence[Shape]) -> tuple[str, ...]:
        names = () if len(in_shapes) == 2 else ("weight",)
        return names + (("bias",) if attrs.bias else ())

    def state(
        self, attrs: BroadcastAttrs, in_shapes: Sequence[Shape], blobs: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        return dict(zip(self.param_names(attrs, in_shapes), blobs, strict=True))

    def emit(self, attrs: BroadcastAttrs, ctx: EmitContext) -> Emission:
        operand = _operand_shape(attrs, ctx.in_shapes)
        trailing = _trailing(attrs, ctx.in_shapes, operand)
        if len(ctx.inputs) == 2:
            expr = f"{ctx.x} * {_broadcast(ctx.inputs[1], trailing)}"
            if attrs.bias:
                return Emission(
                    forward=f"self.{ctx.attr}({expr})",
                    init=call("Bias", tuple_expr(operand), trailing=trailing),
                    helpers=("Bias",),
                )
            return Emission(forward=expr)
        init = call(
            "Scale", tuple_expr(operand), trailing=trailing, bias=True if attrs.bias else None
        )
        return Emission(forward=f"self.{ctx.attr}({ctx.x})", init=init, helpers=("Scale",))

    def channel_affine(self, attrs: BroadcastAttrs, in_shapes: Sequence[Shape]) -> bool:
        shape = in_shapes[0]
        axis = attrs.axis % len(shape)
        return axis == 1 and _operand_shape(attrs, [shape]) == (shape[1],)

    def affine_coefficients(
        self, attrs: BroadcastAttrs, state: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        weight = state["weight"].astype(np.float64).reshape(-1)
        bias = state.get("bias")
        shift = np.zeros_like(weight) if bias is None else bias.astype(np.float64).reshape(-1)
        return weight, shift

    def multiply_adds(
        self, attrs: BroadcastAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> int:
        return sum(math.prod(s) for s in out_shapes)


@register
class Bias(_Broadcast):
    """x + bias, the bias learned or given as a second bottom."""

    types = ("Bias",)

    def parse(self, layer: LayerSource) -> BroadcastAttrs:
        p = layer.param.bias_param
        return BroadcastAttrs(int(p.axis), int(p.num_axes), False)

    def blobs(self, attrs: BroadcastAttrs, in_shapes: Sequence[Shape]) -> list[BlobSpec]:
        if len(in_shapes) == 2:
            return []
        return [BlobSpec(_operand_shape(attrs, in_shapes), Init.SMALL)]

    def param_names(self, attrs: BroadcastAttrs, in_shapes: Sequence[Shape]) -> tuple[str, ...]:
        return () if len(in_shapes) == 2 else ("bias",)

    def state(
        self, attrs: BroadcastAttrs, in_shapes: Sequence[Shape], blobs: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        return dict(zip(self.param_names(attrs, in_shapes), blobs, strict=True))

    def emit(self, attrs: BroadcastAttrs, ctx: EmitContext) -> Emission:
        operand = _operand_shape(attrs, ctx.in_shapes)
        trailing = _trailing(attrs, ctx.in_shapes, operand)
        if len(ctx.inputs) == 2:
            return Emission(forward=f"{ctx.x} + {_broadcast(ctx.inputs[1], trailing)}")
        init = call("Bias", tuple_expr(operand), trailing=trailing)
        return Emission(forward=f"self.{ctx.attr}({ctx.x})", init=init, helpers=("Bias",))


@dataclass(frozen=True)
class EltwiseAttrs(Attrs):
    operation: int
    coeffs: tuple[float, ...]


PROD, SUM, MAX = 0, 1, 2


@register
class Eltwise(Layer[EltwiseAttrs]):
    types = ("Eltwise",)
    role = Role.COMBINE
    bottoms = (2, None)

    def parse(self, layer: LayerSource) -> EltwiseAttrs:
        # eltwise_layer.cpp LayerSetUp: one coefficient per bottom, none with PROD; MAX
        # accepts coefficients and ignores them.
        p = layer.param.eltwise_param
        coeffs = tuple(float(c) for c in p.coeff)
        if coeffs and len(coeffs) != len(layer.bottoms):
            raise fail(
                layer,
                f"Caffe aborts here: Eltwise Layer takes one coefficient per bottom blob "
                f"({len(coeffs)} coeff for {len(layer.bottoms)} bottoms)",
            )
        if coeffs and p.operation == PROD:
            raise fail(
                layer, "Caffe aborts here: Eltwise layer only takes coefficients for summation"
            )
        return EltwiseAttrs(int(p.operation), coeffs if p.operation == SUM else ())

    def computes_in_place(self, attrs: EltwiseAttrs, in_shapes: Sequence[Shape]) -> bool:
        # SUM zeroes its top and MAX fills it with -FLT_MAX before reading the bottoms
        # (eltwise_layer.cpp Forward_cpu): in place, bottom 0 is lost. PROD multiplies
        # bottom 0 by bottom 1 into the top value by value.
        return attrs.operation == PROD

    def infer(
        self, attrs: EltwiseAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        for i, shape in enumerate(in_shapes[1:], start=1):
            if shape != in_shapes[0]:
                raise fail(
                    layer,
                    f"bottom {i} '{layer.bottoms[i]}' has shape {shape}, bottom 0 has "
                    f"{in_shapes[0]}: Eltwise needs equal shapes",
                )
        return [in_shapes[0]]

    def emit(self, attrs: EltwiseAttrs, ctx: EmitContext) -> Emission:
        if attrs.operation == PROD:
            return Emission(forward=" * ".join(ctx.inputs))
        if attrs.operation == MAX:
            expr = ctx.inputs[0]
            for other in ctx.inputs[1:]:
                expr = f"torch.maximum({expr}, {other})"
            return Emission(forward=expr)
        coeffs = attrs.coeffs or (1.0,) * len(ctx.inputs)
        terms = []
        for i, (name, coeff) in enumerate(zip(ctx.inputs, coeffs, strict=True)):
            if coeff == 1:
                terms.append(("+", name))
            elif coeff == -1 and i > 0:
                terms.append(("-", name))
            else:
                terms.append(("+", f"{name} * {coeff!r}"))
        expr = terms[0][1]
        for sign, term in terms[1:]:
            expr += f" {sign} {term}"
        return Emission(forward=expr, note=f"coeff {list(coeffs)}" if attrs.coeffs else "")

    def fresh_output(self, attrs: EltwiseAttrs, in_shapes: Sequence[Shape]) -> bool:
        return True

    def sum_coefficients(self, attrs: EltwiseAttrs, inputs: int) -> tuple[float, ...] | None:
        if attrs.operation != SUM:
            return None
        return attrs.coeffs or (1.0,) * inputs


@register
class Axpy(Layer[NoAttrs]):
    """SENet's Axpy: a * x + y, with a of shape (N, C, 1, 1) scaling x and y of x's shape.

    Source: hujie-frank/SENet, src/caffe/layers/axpy_layer.cpp (Forward_cpu).
    """

    types = ("Axpy",)
    bottoms = (3, 3)

    def computes_in_place(self, attrs: NoAttrs, in_shapes: Sequence[Shape]) -> bool:
        return False

    def parse(self, layer: LayerSource) -> NoAttrs:
        return NoAttrs()

    def infer(self, attrs: NoAttrs, in_shapes: Sequence[Shape], layer: LayerSource) -> list[Shape]:
        scale, x, y = in_shapes
        if x != y:
            raise fail(layer, f"x {x} and y {y} must have the same shape")
        if len(x) < 2 or scale[:2] != x[:2] or any(d != 1 for d in scale[2:]):
            raise fail(layer, f"the scale {scale} must be (N, C, 1, 1) for x of shape {x}")
        return [x]

    def emit(self, attrs: NoAttrs, ctx: EmitContext) -> Emission:
        a, x, y = ctx.inputs
        rank_a, rank_x = len(ctx.in_shapes[0]), len(ctx.in_shapes[1])
        scale = a if rank_a == rank_x else f"{a}.reshape({a}.shape[:2] + (1,) * {rank_x - 2})"
        return Emission(forward=f"{scale} * {x} + {y}")


@dataclass(frozen=True)
class EmbedAttrs(Attrs):
    num_output: int
    input_dim: int
    bias: bool


@register
class Embed(Layer[EmbedAttrs]):
    """A lookup table: each value i of the input (truncated to an int) becomes row i of the
    (input_dim, num_output) weight (+ bias); top shape = input shape + (num_output,).

    Source: BVLC/caffe, src/caffe/layers/embed_layer.cpp (LayerSetUp, Reshape, Forward_cpu)."""

    types = ("Embed",)
    role = Role.DENSE

    def parse(self, layer: LayerSource) -> EmbedAttrs:
        p = layer.param.embed_param
        if p.num_output <= 0:
            raise fail(layer, "Caffe aborts here: EmbedLayer num_output must be positive.")
        if p.input_dim <= 0:
            raise fail(layer, "Caffe aborts here: EmbedLayer input_dim must be positive.")
        return EmbedAttrs(int(p.num_output), int(p.input_dim), bool(p.bias_term))

    def infer(
        self, attrs: EmbedAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        return [in_shapes[0] + (attrs.num_output,)]

    def blobs(self, attrs: EmbedAttrs, in_shapes: Sequence[Shape]) -> list[BlobSpec]:
        # Transposed relative to InnerProduct: one row per index (nn.Embedding's layout).
        specs = [BlobSpec((attrs.input_dim, attrs.num_output), Init.FAN_IN, 1)]
        if attrs.bias:
            specs.append(BlobSpec((attrs.num_output,), Init.SMALL))
        return specs

    def param_names(self, attrs: EmbedAttrs, in_shapes: Sequence[Shape]) -> tuple[str, ...]:
        return ("weight", "bias") if attrs.bias else ("weight",)

    def state(
        self, attrs: EmbedAttrs, in_shapes: Sequence[Shape], blobs: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        return dict(zip(self.param_names(attrs, in_shapes), blobs, strict=True))

    def emit(self, attrs: EmbedAttrs, ctx: EmitContext) -> Emission:
        init = call("Embed", repr(attrs.input_dim), repr(attrs.num_output), bias=attrs.bias or None)
        return Emission(
            forward=f"self.{ctx.attr}({ctx.x})",
            init=init,
            note=f"indices must lie in [0, {attrs.input_dim})",
            helpers=("Embed",),
        )
