"""Element-wise functions of one input (activations and arithmetic): output shape = input
shape."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from protocaffe.ir.graph import Attrs, NoAttrs, Shape
from protocaffe.layers.base import (
    FUNCTIONAL,
    ChannelWeightAttrs,
    ChannelWeightLayer,
    Emission,
    EmitContext,
    Init,
    Layer,
    LayerSource,
    f32,
    fail,
)
from protocaffe.layers.registry import register


def affine(x: str, scale: float, shift: float) -> str:
    """`x * scale + shift`, leaving out the parts that do nothing."""
    expr = x if scale == 1 else f"{x} * {scale!r}"
    if shift != 0:
        expr = f"{expr} + {shift!r}" if scale != 1 else f"{x} + {shift!r}"
    return expr


@dataclass(frozen=True)
class ReLUAttrs(Attrs):
    negative_slope: float


@register
class ReLU(Layer[ReLUAttrs]):
    types = ("ReLU",)

    def parse(self, layer: LayerSource) -> ReLUAttrs:
        return ReLUAttrs(f32(layer.param.relu_param.negative_slope))

    def emit(self, attrs: ReLUAttrs, ctx: EmitContext) -> Emission:
        slope = attrs.negative_slope
        if ctx.overwritable:  # nothing else reads the input: no new tensor
            if slope == 0:
                return Emission(forward=f"torch.relu_({ctx.x})", note="in place")
            return Emission(
                forward=f"F.leaky_relu({ctx.x}, {slope!r}, inplace=True)",
                note="in place",
                imports=(FUNCTIONAL,),
            )
        if slope == 0:
            return Emission(forward=f"torch.relu({ctx.x})")
        return Emission(forward=f"F.leaky_relu({ctx.x}, {slope!r})", imports=(FUNCTIONAL,))


@dataclass(frozen=True)
class ReLU6Attrs(Attrs):
    negative_slope: float
    threshold: float


@register
class ReLU6(Layer[ReLU6Attrs]):
    """min(max(x, 0) + negative_slope * min(x, 0), threshold), threshold 6 by default.

    Source: the mobile-net forks' relu6_layer.cpp (relu6_param's negative_slope and threshold,
    as in this project's caffe.proto); several forks carry it, none is BVLC's.
    """

    types = ("ReLU6",)

    def parse(self, layer: LayerSource) -> ReLU6Attrs:
        p = layer.param.relu6_param
        return ReLU6Attrs(f32(p.negative_slope), f32(p.threshold))

    def emit(self, attrs: ReLU6Attrs, ctx: EmitContext) -> Emission:
        if attrs.negative_slope == 0 and attrs.threshold == 6:
            return Emission(forward=f"F.relu6({ctx.x})", imports=(FUNCTIONAL,))
        if attrs.negative_slope == 0:
            return Emission(forward=f"torch.clamp(torch.relu({ctx.x}), max={attrs.threshold!r})")
        activated = f"F.leaky_relu({ctx.x}, {attrs.negative_slope!r})"
        return Emission(
            forward=f"torch.clamp({activated}, max={attrs.threshold!r})", imports=(FUNCTIONAL,)
        )


class _Fixed(Layer[NoAttrs]):
    """An activation with no parameters: one torch function.

    `function` is a class attribute: as a dataclass field, the instance that `register` creates
    got the base class's default "" and every subclass emitted the identity."""

    function: ClassVar[str] = ""
    imports: ClassVar[tuple[str, ...]] = ()

    def emit(self, attrs: NoAttrs, ctx: EmitContext) -> Emission:
        return Emission(forward=f"{self.function}({ctx.x})", imports=self.imports)


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
    refuses_in_place = True  # absval_layer.cpp LayerSetUp


@register
class BNLL(_Fixed):
    """log(1 + exp(x)); torch's softplus switches to x above 20, off by under 3e-9."""

    types = ("BNLL",)
    function: ClassVar[str] = "F.softplus"
    imports: ClassVar[tuple[str, ...]] = (FUNCTIONAL,)


@dataclass(frozen=True)
class ELUAttrs(Attrs):
    alpha: float


@register
class ELU(Layer[ELUAttrs]):
    types = ("ELU",)

    def parse(self, layer: LayerSource) -> ELUAttrs:
        return ELUAttrs(f32(layer.param.elu_param.alpha))

    def emit(self, attrs: ELUAttrs, ctx: EmitContext) -> Emission:
        return Emission(forward=f"F.elu({ctx.x}, {attrs.alpha!r})", imports=(FUNCTIONAL,))


@dataclass(frozen=True)
class PowerAttrs(Attrs):
    power: float
    scale: float
    shift: float


@register
class Power(Layer[PowerAttrs]):
    """(shift + scale * x) ^ power."""

    types = ("Power",)

    def parse(self, layer: LayerSource) -> PowerAttrs:
        p = layer.param.power_param
        return PowerAttrs(power=f32(p.power), scale=f32(p.scale), shift=f32(p.shift))

    def emit(self, attrs: PowerAttrs, ctx: EmitContext) -> Emission:
        inner = affine(ctx.x, attrs.scale, attrs.shift)
        if attrs.power == 1:
            return Emission(forward=inner if inner != ctx.x else f"{ctx.x}.clone()")
        return Emission(forward=f"torch.pow({inner}, {attrs.power!r})")

    def passes_through(
        self, attrs: PowerAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> bool:
        return (attrs.power, attrs.scale, attrs.shift) == (1, 1, 0)


@dataclass(frozen=True)
class ExpAttrs(Attrs):
    """base ^ (shift + scale * x) as Caffe computes it: outer * exp(inner * x)."""

    inner: float
    outer: float


@register
class Exp(Layer[ExpAttrs]):
    """base ^ (shift + scale * x), computed as Caffe does: outer * exp(inner * x)."""

    types = ("Exp",)

    def parse(self, layer: LayerSource) -> ExpAttrs:
        p = layer.param.exp_param
        base = f32(p.base)
        if base != -1 and base <= 0:
            raise fail(layer, f"base must be -1 (e) or positive, got {base}")
        log_base = 1.0 if base == -1 else math.log(base)
        shift = f32(p.shift)
        outer = 1.0 if shift == 0 else (math.e if base == -1 else base) ** shift
        return ExpAttrs(inner=log_base * f32(p.scale), outer=outer)

    def emit(self, attrs: ExpAttrs, ctx: EmitContext) -> Emission:
        expr = f"torch.exp({affine(ctx.x, attrs.inner, 0.0)})"
        if attrs.outer != 1:
            expr = f"{attrs.outer!r} * {expr}"
        return Emission(forward=expr)


@dataclass(frozen=True)
class LogAttrs(Attrs):
    """log_base(shift + scale * x) = log(shift + scale * x) * base_scale."""

    scale: float
    shift: float
    base_scale: float


@register
class Log(Layer[LogAttrs]):
    """log_base(shift + scale * x)."""

    types = ("Log",)

    def parse(self, layer: LayerSource) -> LogAttrs:
        p = layer.param.log_param
        base = f32(p.base)
        if base != -1 and (base <= 0 or base == 1):
            raise fail(layer, f"base must be -1 (e) or positive and not 1, got {base}")
        base_scale = 1.0 if base == -1 else 1.0 / math.log(base)
        return LogAttrs(scale=f32(p.scale), shift=f32(p.shift), base_scale=base_scale)

    def emit(self, attrs: LogAttrs, ctx: EmitContext) -> Emission:
        expr = f"torch.log({affine(ctx.x, attrs.scale, attrs.shift)})"
        if attrs.base_scale != 1:
            expr = f"{expr} * {attrs.base_scale!r}"
        return Emission(forward=expr)


@dataclass(frozen=True)
class ThresholdAttrs(Attrs):
    threshold: float


@register
class Threshold(Layer[ThresholdAttrs]):
    types = ("Threshold",)

    def parse(self, layer: LayerSource) -> ThresholdAttrs:
        return ThresholdAttrs(f32(layer.param.threshold_param.threshold))

    def emit(self, attrs: ThresholdAttrs, ctx: EmitContext) -> Emission:
        return Emission(forward=f"({ctx.x} > {attrs.threshold!r}).to({ctx.x}.dtype)")


@register
class PReLU(ChannelWeightLayer[ChannelWeightAttrs]):
    types = ("PReLU",)
    weight_init = Init.SLOPE

    def parse(self, layer: LayerSource) -> ChannelWeightAttrs:
        return ChannelWeightAttrs(bool(layer.param.prelu_param.channel_shared))

    def emit(self, attrs: ChannelWeightAttrs, ctx: EmitContext) -> Emission:
        channels = self.channels(attrs, ctx.in_shapes)
        init = "nn.PReLU()" if channels == 1 else f"nn.PReLU({channels!r})"
        return Emission(forward=f"self.{ctx.attr}({ctx.x})", init=init)


@dataclass(frozen=True)
class DropoutAttrs(Attrs):
    ratio: float


@register
class Dropout(Layer[DropoutAttrs]):
    """Caffe's Dropout (src/caffe/layers/dropout_layer.cpp): in TRAIN, each value is kept with
    probability 1 - ratio and scaled by 1 / (1 - ratio), gradients through the same mask and
    scale; in TEST a copy. That is nn.Dropout(p=ratio) in train() and eval(). `--optimize`
    removes it (eval() is all it keeps)."""

    types = ("Dropout",)

    def parse(self, layer: LayerSource) -> DropoutAttrs:
        return DropoutAttrs(f32(layer.param.dropout_param.dropout_ratio))

    def emit(self, attrs: DropoutAttrs, ctx: EmitContext) -> Emission:
        if not 0.0 <= attrs.ratio < 1.0:
            # Caffe checks the ratio in debug builds only; a release build copies in TEST and
            # aborts (or divides by zero at 1) in TRAIN.
            return Emission(
                forward=ctx.x,
                note=f"dropout_ratio {attrs.ratio!r} is outside [0, 1): the identity here",
            )
        return Emission(forward=f"self.{ctx.attr}({ctx.x})", init=f"nn.Dropout(p={attrs.ratio!r})")

    def passes_through(
        self, attrs: DropoutAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> bool:
        return True


@register
class Mish(_Fixed):
    """x * tanh(softplus(x)), softplus switching to x above 20 and to exp(x) below -20.

    Source: ChenYingpeng/darknet2caffe @ f6d9ea33, caffe_layers/mish_layer/mish_layer.cpp
    (MishLayer::Forward_cpu, softplus_activate with MISH_THRESHOLD 20). torch's mish uses the
    same threshold; below -20 it computes log1p(exp(x)), which is exp(x) in float32.
    """

    types = ("Mish",)
    function: ClassVar[str] = "F.mish"
    imports: ClassVar[tuple[str, ...]] = (FUNCTIONAL,)


@dataclass(frozen=True)
class ClipAttrs(Attrs):
    low: float
    high: float


@register
class Clip(Layer[ClipAttrs]):
    """max(min, min(x, max)).

    Source: BVLC/caffe (master), src/caffe/layers/clip_layer.cpp (Forward_cpu)."""

    types = ("Clip",)

    def parse(self, layer: LayerSource) -> ClipAttrs:
        p = layer.param.clip_param
        if not (p.HasField("min") and p.HasField("max")):
            raise fail(layer, "clip_param needs min and max (both required by caffe.proto)")
        return ClipAttrs(f32(p.min), f32(p.max))

    def emit(self, attrs: ClipAttrs, ctx: EmitContext) -> Emission:
        if attrs.low <= attrs.high:
            return Emission(forward=f"torch.clamp({ctx.x}, {attrs.low!r}, {attrs.high!r})")
        # Caffe applies max last, so min wins; torch.clamp(x, lo, hi) with lo > hi gives hi.
        return Emission(
            forward=f"torch.clamp({ctx.x}, max={attrs.high!r}).clamp(min={attrs.low!r})",
            note="min > max: every value becomes min",
        )


@dataclass(frozen=True)
class SwishAttrs(Attrs):
    beta: float


@register
class Swish(Layer[SwishAttrs]):
    """x * sigmoid(beta * x).

    Source: BVLC/caffe (master), src/caffe/layers/swish_layer.cpp (Forward_cpu)."""

    types = ("Swish",)

    def parse(self, layer: LayerSource) -> SwishAttrs:
        return SwishAttrs(f32(layer.param.swish_param.beta))

    def emit(self, attrs: SwishAttrs, ctx: EmitContext) -> Emission:
        if attrs.beta == 1:
            return Emission(forward=f"F.silu({ctx.x})", imports=(FUNCTIONAL,))
        return Emission(forward=f"{ctx.x} * torch.sigmoid({ctx.x} * {attrs.beta!r})")


@dataclass(frozen=True)
class HardSigmoidAttrs(Attrs):
    alpha: float
    beta: float


@register
class HardSigmoid(Layer[HardSigmoidAttrs]):
    """max(0, min(1, alpha * x + beta)), alpha 0.2 and beta 0.5 by default.

    Source: brocolli-caffe 9.0.2 (the oracle's build), src/caffe/layers/hardsigmoid_layer.cpp."""

    types = ("HardSigmoid",)

    def parse(self, layer: LayerSource) -> HardSigmoidAttrs:
        p = layer.param.hardsigmoid_param
        return HardSigmoidAttrs(f32(p.alpha), f32(p.beta))

    def emit(self, attrs: HardSigmoidAttrs, ctx: EmitContext) -> Emission:
        return Emission(forward=f"torch.clamp({affine(ctx.x, attrs.alpha, attrs.beta)}, 0.0, 1.0)")


@register
class HardSwish(_Fixed):
    """x * max(0, min(1, x / 6 + 0.5)).

    Source: brocolli-caffe 9.0.2 (the oracle's build), src/caffe/layers/hardswish_layer.cpp."""

    types = ("HardSwish",)
    function: ClassVar[str] = "F.hardswish"
    imports: ClassVar[tuple[str, ...]] = (FUNCTIONAL,)
