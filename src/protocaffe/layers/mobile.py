"""Layers from mobile-net forks: ConvolutionDepthwise and ShuffleChannel (farmingyard/ShuffleNet),
ReLU6, and Axpy (hujie-frank/SENet)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from protocaffe.frontend.prototxt import LayerDef
from protocaffe.ir.graph import Attrs, NoAttrs, Shape
from protocaffe.layers.base import BlobSpec, Emission, EmitContext, Layer, f32, fail, register
from protocaffe.layers.conv import ConvAttrs, Convolution, parse_conv

if TYPE_CHECKING:  # numpy only where weights are converted (see Layer.state)
    import numpy as np


@register
class ConvolutionDepthwise(Layer):
    """farmingyard's depthwise convolution: output channel c convolves input channel c alone.

    Its weight blob is (C, 1, kh, kw), which is `nn.Conv2d(C, C, groups=C)`'s layout, so it is a
    Convolution whose group is the number of input channels (fixed once the input is known).
    """

    types = ("ConvolutionDepthwise",)
    _conv = Convolution()

    def parse(self, layer: LayerDef) -> ConvAttrs:
        return parse_conv(layer, transposed=False)

    def infer(self, attrs: Attrs, in_shapes: Sequence[Shape], layer: LayerDef) -> list[Shape]:
        assert isinstance(attrs, ConvAttrs)
        channels = in_shapes[0][1] if len(in_shapes[0]) == 4 else 0
        if attrs.num_output != channels:
            raise fail(
                layer,
                f"num_output {attrs.num_output} must equal the input channels {channels} "
                "(one filter per channel)",
            )
        return self._conv.infer(_depthwise(attrs, in_shapes), in_shapes, layer)

    def blobs(self, attrs: Attrs, in_shapes: Sequence[Shape]) -> list[BlobSpec]:
        return self._conv.blobs(_depthwise(attrs, in_shapes), in_shapes)

    def param_names(self, attrs: Attrs, in_shapes: Sequence[Shape]) -> tuple[str, ...]:
        return self._conv.param_names(_depthwise(attrs, in_shapes), in_shapes)

    def state(
        self, attrs: Attrs, in_shapes: Sequence[Shape], blobs: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        return self._conv.state(_depthwise(attrs, in_shapes), in_shapes, blobs)

    def emit(self, attrs: Attrs, ctx: EmitContext) -> Emission:
        return self._conv.emit(_depthwise(attrs, ctx.in_shapes), ctx)


def _depthwise(attrs: Attrs, in_shapes: Sequence[Shape]) -> ConvAttrs:
    assert isinstance(attrs, ConvAttrs)
    return replace(attrs, group=in_shapes[0][1])


@dataclass(frozen=True)
class GroupAttrs(Attrs):
    group: int


@register
class ShuffleChannel(Layer):
    """Channel shuffle: view channels as (group, C / group), transpose, flatten back."""

    types = ("ShuffleChannel",)

    def parse(self, layer: LayerDef) -> GroupAttrs:
        group = int(layer.param.shuffle_channel_param.group)
        if group <= 0:
            raise fail(layer, f"group must be positive, got {group}")
        return GroupAttrs(group)

    def infer(self, attrs: Attrs, in_shapes: Sequence[Shape], layer: LayerDef) -> list[Shape]:
        assert isinstance(attrs, GroupAttrs)
        shape = in_shapes[0]
        if len(shape) < 2 or shape[1] % attrs.group:
            raise fail(layer, f"channels of {shape} are not divisible by group {attrs.group}")
        return [shape]

    def emit(self, attrs: Attrs, ctx: EmitContext) -> Emission:
        assert isinstance(attrs, GroupAttrs)
        x = ctx.x
        if attrs.group == 1:
            return Emission(forward=x)
        split = f"{x}.unflatten(1, ({attrs.group}, -1))"
        return Emission(forward=f"{split}.transpose(1, 2).flatten(1, 2)")


@dataclass(frozen=True)
class ReLU6Attrs(Attrs):
    negative_slope: float
    threshold: float


@register
class ReLU6(Layer):
    """min(max(x, 0) + negative_slope * min(x, 0), threshold), threshold 6 by default."""

    types = ("ReLU6",)

    def parse(self, layer: LayerDef) -> ReLU6Attrs:
        p = layer.param.relu6_param
        return ReLU6Attrs(f32(p.negative_slope), f32(p.threshold))

    def emit(self, attrs: Attrs, ctx: EmitContext) -> Emission:
        assert isinstance(attrs, ReLU6Attrs)
        if attrs.negative_slope == 0 and attrs.threshold == 6:
            return Emission(forward=f"F.relu6({ctx.x})")
        if attrs.negative_slope == 0:
            activated = f"torch.relu({ctx.x})"
        else:
            activated = f"F.leaky_relu({ctx.x}, {attrs.negative_slope!r})"
        return Emission(forward=f"torch.clamp({activated}, max={attrs.threshold!r})")


@register
class Axpy(Layer):
    """SENet's Axpy: a * x + y, with a of shape (N, C, 1, 1) scaling x and y of x's shape."""

    types = ("Axpy",)
    bottoms = (3, 3)

    def parse(self, layer: LayerDef) -> NoAttrs:
        return NoAttrs()

    def infer(self, attrs: Attrs, in_shapes: Sequence[Shape], layer: LayerDef) -> list[Shape]:
        scale, x, y = in_shapes
        if x != y:
            raise fail(layer, f"x {x} and y {y} must have the same shape")
        if len(x) < 2 or scale[:2] != x[:2] or any(d != 1 for d in scale[2:]):
            raise fail(layer, f"the scale {scale} must be (N, C, 1, 1) for x of shape {x}")
        return [x]

    def emit(self, attrs: Attrs, ctx: EmitContext) -> Emission:
        a, x, y = ctx.inputs
        rank_a, rank_x = len(ctx.in_shapes[0]), len(ctx.in_shapes[1])
        scale = a if rank_a == rank_x else f"{a}.reshape({a}.shape[:2] + (1,) * {rank_x - 2})"
        return Emission(forward=f"{scale} * {x} + {y}")
