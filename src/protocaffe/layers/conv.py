"""Convolution and Deconvolution (2-D, with group, dilation, per-axis kernel/stride/pad)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from protocaffe.frontend.prototxt import LayerDef
from protocaffe.ir.graph import Attrs, Shape
from protocaffe.layers.base import (
    BlobSpec,
    Emission,
    EmitContext,
    Init,
    Layer,
    call,
    fail,
    opt,
    register,
    spatial,
)

if TYPE_CHECKING:  # numpy only where weights are converted (see Layer.state)
    import numpy as np


@dataclass(frozen=True)
class ConvAttrs(Attrs):
    num_output: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    dilation: tuple[int, int]
    group: int
    bias: bool
    transposed: bool


def parse_conv(layer: LayerDef, transposed: bool) -> ConvAttrs:
    p = layer.param.convolution_param
    if not p.HasField("num_output"):
        raise fail(layer, "convolution_param.num_output is required")
    if p.axis != 1:
        raise fail(layer, f"convolution over axis {p.axis} is not supported (only axis 1)")
    for name in ("kernel_size", "stride", "pad", "dilation"):
        if len(getattr(p, name)) > 2:
            raise fail(layer, f"{name} has more than 2 values: only 2-D convolution is supported")
    kernel = spatial(list(p.kernel_size), None, opt(p, "kernel_h"), opt(p, "kernel_w"), 0)
    stride = spatial(list(p.stride), None, opt(p, "stride_h"), opt(p, "stride_w"), 1)
    pad = spatial(list(p.pad), None, opt(p, "pad_h"), opt(p, "pad_w"), 0)
    dilation = spatial(list(p.dilation), None, None, None, 1)
    if min(kernel) <= 0:
        raise fail(layer, f"kernel size must be positive, got {kernel}")
    if min(stride) <= 0 or min(dilation) <= 0:
        raise fail(layer, "stride and dilation must be positive")
    if p.group <= 0:
        raise fail(layer, f"group must be positive, got {p.group}")
    if p.num_output % p.group:
        raise fail(layer, f"num_output {p.num_output} is not divisible by group {p.group}")
    return ConvAttrs(
        num_output=p.num_output,
        kernel=kernel,
        stride=stride,
        pad=pad,
        dilation=dilation,
        group=p.group,
        bias=p.bias_term,
        transposed=transposed,
    )


def conv_out_size(size: int, k: int, s: int, p: int, d: int) -> int:
    """Caffe's convolution output size (floor), as in BaseConvolutionLayer."""
    return (size + 2 * p - (d * (k - 1) + 1)) // s + 1


def deconv_out_size(size: int, k: int, s: int, p: int, d: int) -> int:
    return s * (size - 1) + (d * (k - 1) + 1) - 2 * p


@register
class Convolution(Layer):
    types = ("Convolution", "Deconvolution")

    def parse(self, layer: LayerDef) -> ConvAttrs:
        return parse_conv(layer, transposed=layer.type == "Deconvolution")

    def infer(self, attrs: Attrs, in_shapes: Sequence[Shape], layer: LayerDef) -> list[Shape]:
        assert isinstance(attrs, ConvAttrs)
        shape = in_shapes[0]
        if len(shape) != 4:
            raise fail(layer, f"expects a 4-D input, got {shape}")
        n, c, h, w = shape
        if c % attrs.group:
            raise fail(layer, f"input channels {c} are not divisible by group {attrs.group}")
        size = deconv_out_size if attrs.transposed else conv_out_size
        out = [
            size(dim, k, s, p, d)
            for dim, k, s, p, d in zip(
                (h, w), attrs.kernel, attrs.stride, attrs.pad, attrs.dilation, strict=True
            )
        ]
        if min(out) <= 0:
            raise fail(
                layer,
                f"kernel {attrs.kernel} (dilation {attrs.dilation}) is larger than the padded "
                f"input {h + 2 * attrs.pad[0]}x{w + 2 * attrs.pad[1]}",
            )
        return [(n, attrs.num_output, out[0], out[1])]

    def blobs(self, attrs: Attrs, in_shapes: Sequence[Shape]) -> list[BlobSpec]:
        assert isinstance(attrs, ConvAttrs)
        c = in_shapes[0][1]
        kh, kw = attrs.kernel
        if attrs.transposed:
            weight = (c, attrs.num_output // attrs.group, kh, kw)
            fan_in = c // attrs.group * kh * kw // max(1, attrs.stride[0] * attrs.stride[1])
        else:
            weight = (attrs.num_output, c // attrs.group, kh, kw)
            fan_in = c // attrs.group * kh * kw
        specs = [BlobSpec(weight, Init.FAN_IN, max(1, fan_in))]
        if attrs.bias:
            specs.append(BlobSpec((attrs.num_output,), Init.SMALL))
        return specs

    def param_names(self, attrs: Attrs, in_shapes: Sequence[Shape]) -> tuple[str, ...]:
        assert isinstance(attrs, ConvAttrs)
        return ("weight", "bias") if attrs.bias else ("weight",)

    def state(
        self, attrs: Attrs, in_shapes: Sequence[Shape], blobs: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        return dict(zip(self.param_names(attrs, in_shapes), blobs, strict=True))

    def emit(self, attrs: Attrs, ctx: EmitContext) -> Emission:
        assert isinstance(attrs, ConvAttrs)
        c = ctx.in_shapes[0][1]
        cls = "nn.ConvTranspose2d" if attrs.transposed else "nn.Conv2d"
        init = call(
            cls,
            repr(c),
            repr(attrs.num_output),
            kernel_size=_pair(attrs.kernel),
            stride=_pair(attrs.stride) if attrs.stride != (1, 1) else None,
            padding=_pair(attrs.pad) if attrs.pad != (0, 0) else None,
            dilation=_pair(attrs.dilation) if attrs.dilation != (1, 1) else None,
            groups=attrs.group if attrs.group != 1 else None,
            bias=False if not attrs.bias else None,
        )
        return Emission(forward=f"self.{ctx.attr}({ctx.x})", init=init)


def _pair(values: tuple[int, int]) -> int | tuple[int, int]:
    return values[0] if values[0] == values[1] else values
