"""Element-wise activations and arithmetic on one input: output shape = input shape."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from protocaffe.frontend.prototxt import LayerDef
from protocaffe.ir.graph import Attrs, NoAttrs
from protocaffe.layers.base import (
    ChannelWeightAttrs,
    ChannelWeightLayer,
    Emission,
    EmitContext,
    Init,
    Layer,
    f32,
    fail,
    register,
)

if TYPE_CHECKING:  # numpy only where weights are converted (see Layer.state)
    pass


@dataclass(frozen=True)
class ScalarAttrs(Attrs):
    """The scalar parameters of one activation (names as in Caffe)."""

    values: tuple[tuple[str, float], ...]

    def __getitem__(self, key: str) -> float:
        return dict(self.values)[key]


def _scalars(**values: float) -> ScalarAttrs:
    return ScalarAttrs(tuple(values.items()))


def affine(x: str, scale: float, shift: float) -> str:
    """`x * scale + shift`, leaving out the parts that do nothing."""
    expr = x if scale == 1 else f"{x} * {scale!r}"
    if shift != 0:
        expr = f"{expr} + {shift!r}" if scale != 1 else f"{x} + {shift!r}"
    return expr


@register
class ReLU(Layer):
    types = ("ReLU",)

    def parse(self, layer: LayerDef) -> ScalarAttrs:
        return _scalars(negative_slope=f32(layer.param.relu_param.negative_slope))

    def emit(self, attrs: Attrs, ctx: EmitContext) -> Emission:
        assert isinstance(attrs, ScalarAttrs)
        slope = attrs["negative_slope"]
        if slope == 0:
            return Emission(forward=f"torch.relu({ctx.x})")
        return Emission(forward=f"F.leaky_relu({ctx.x}, {slope!r})")


class _Fixed(Layer):
    """An activation with no parameters: one torch function.

    `function` is a class attribute: as a dataclass field, the instance that `register` creates
    got the base class's default "" and every subclass emitted the identity."""

    function: ClassVar[str] = ""

    def emit(self, attrs: Attrs, ctx: EmitContext) -> Emission:
        return Emission(forward=f"{self.function}({ctx.x})")


@register
class Sigmoid(_Fixed):
    types = ("Sigmoid",)
    function: ClassVar[str] = "torch.sigmoid"


@register
class TanH(_Fixed):
    types = ("TanH",)
    function: ClassVar[str] = "torch.tanh"


@register
class AbsVal(_Fixed):
    types = ("AbsVal",)
    function: ClassVar[str] = "torch.abs"


@register
class BNLL(_Fixed):
    """log(1 + exp(x)); torch's softplus switches to x above 20, off by under 3e-9."""

    types = ("BNLL",)
    function: ClassVar[str] = "F.softplus"


@register
class ELU(Layer):
    types = ("ELU",)

    def parse(self, layer: LayerDef) -> ScalarAttrs:
        return _scalars(alpha=f32(layer.param.elu_param.alpha))

    def emit(self, attrs: Attrs, ctx: EmitContext) -> Emission:
        assert isinstance(attrs, ScalarAttrs)
        return Emission(forward=f"F.elu({ctx.x}, {attrs['alpha']!r})")


@register
class Power(Layer):
    """(shift + scale * x) ^ power."""

    types = ("Power",)

    def parse(self, layer: LayerDef) -> ScalarAttrs:
        p = layer.param.power_param
        return _scalars(power=f32(p.power), scale=f32(p.scale), shift=f32(p.shift))

    def emit(self, attrs: Attrs, ctx: EmitContext) -> Emission:
        assert isinstance(attrs, ScalarAttrs)
        inner = affine(ctx.x, attrs["scale"], attrs["shift"])
        if attrs["power"] == 1:
            return Emission(forward=inner if inner != ctx.x else f"{ctx.x}.clone()")
        return Emission(forward=f"torch.pow({inner}, {attrs['power']!r})")


@register
class Exp(Layer):
    """base ^ (shift + scale * x), computed as Caffe does: outer * exp(inner * x)."""

    types = ("Exp",)

    def parse(self, layer: LayerDef) -> ScalarAttrs:
        p = layer.param.exp_param
        base = f32(p.base)
        if base != -1 and base <= 0:
            raise fail(layer, f"base must be -1 (e) or positive, got {base}")
        log_base = 1.0 if base == -1 else math.log(base)
        shift = f32(p.shift)
        outer = 1.0 if shift == 0 else (math.e if base == -1 else base) ** shift
        return _scalars(inner=log_base * f32(p.scale), outer=outer)

    def emit(self, attrs: Attrs, ctx: EmitContext) -> Emission:
        assert isinstance(attrs, ScalarAttrs)
        expr = f"torch.exp({affine(ctx.x, attrs['inner'], 0.0)})"
        if attrs["outer"] != 1:
            expr = f"{attrs['outer']!r} * {expr}"
        return Emission(forward=expr)


@register
class Log(Layer):
    """log_base(shift + scale * x)."""

    types = ("Log",)

    def parse(self, layer: LayerDef) -> ScalarAttrs:
        p = layer.param.log_param
        base = f32(p.base)
        if base != -1 and (base <= 0 or base == 1):
            raise fail(layer, f"base must be -1 (e) or positive and not 1, got {base}")
        base_scale = 1.0 if base == -1 else 1.0 / math.log(base)
        return _scalars(scale=f32(p.scale), shift=f32(p.shift), base_scale=base_scale)

    def emit(self, attrs: Attrs, ctx: EmitContext) -> Emission:
        assert isinstance(attrs, ScalarAttrs)
        expr = f"torch.log({affine(ctx.x, attrs['scale'], attrs['shift'])})"
        if attrs["base_scale"] != 1:
            expr = f"{expr} * {attrs['base_scale']!r}"
        return Emission(forward=expr)


@register
class Threshold(Layer):
    types = ("Threshold",)

    def parse(self, layer: LayerDef) -> ScalarAttrs:
        return _scalars(threshold=f32(layer.param.threshold_param.threshold))

    def emit(self, attrs: Attrs, ctx: EmitContext) -> Emission:
        assert isinstance(attrs, ScalarAttrs)
        return Emission(forward=f"({ctx.x} > {attrs['threshold']!r}).to({ctx.x}.dtype)")


@register
class PReLU(ChannelWeightLayer):
    types = ("PReLU",)
    weight_init = Init.SLOPE

    def parse(self, layer: LayerDef) -> ChannelWeightAttrs:
        return ChannelWeightAttrs(bool(layer.param.prelu_param.channel_shared))

    def emit(self, attrs: Attrs, ctx: EmitContext) -> Emission:
        channels = self.channels(attrs, ctx.in_shapes)
        init = "nn.PReLU()" if channels == 1 else f"nn.PReLU({channels!r})"
        return Emission(forward=f"self.{ctx.attr}({ctx.x})", init=init)


@register
class Dropout(Layer):
    """The identity at test time (Caffe scales during training instead)."""

    types = ("Dropout",)
    identity = True

    def parse(self, layer: LayerDef) -> NoAttrs:
        return NoAttrs()
