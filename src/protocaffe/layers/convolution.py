"""Convolution: Convolution and Deconvolution (2-D, with group, dilation, per-axis kernel,
stride and pad), and the depthwise convolution of the mobile-net forks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from protocaffe.ir.graph import Attrs, Shape
from protocaffe.layers.base import (
    BlobSpec,
    Emission,
    EmitContext,
    Init,
    Layer,
    LayerSource,
    Role,
    call,
    fail,
    opt,
    pair,
    spatial,
)
from protocaffe.layers.registry import register

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


def parse_conv(layer: LayerSource, transposed: bool) -> ConvAttrs:
    p = layer.param.convolution_param
    if not p.HasField("num_output"):
        raise fail(layer, "convolution_param.num_output is required")
    if p.axis != 1:
        raise fail(layer, f"convolution over axis {p.axis} is not supported (only axis 1)")
    for name in ("kernel_size", "stride", "pad", "dilation"):
        values: Sequence[int] = getattr(p, name)
        if len(values) > 2:
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
class Convolution(Layer[ConvAttrs]):
    types = ("Convolution", "Deconvolution")
    role = Role.CONVOLUTION

    def parse(self, layer: LayerSource) -> ConvAttrs:
        return parse_conv(layer, transposed=layer.type == "Deconvolution")

    def infer(
        self, attrs: ConvAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
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

    def blobs(self, attrs: ConvAttrs, in_shapes: Sequence[Shape]) -> list[BlobSpec]:
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

    def param_names(self, attrs: ConvAttrs, in_shapes: Sequence[Shape]) -> tuple[str, ...]:
        return ("weight", "bias") if attrs.bias else ("weight",)

    def state(
        self, attrs: ConvAttrs, in_shapes: Sequence[Shape], blobs: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        return dict(zip(self.param_names(attrs, in_shapes), blobs, strict=True))

    def emit(self, attrs: ConvAttrs, ctx: EmitContext) -> Emission:
        c = ctx.in_shapes[0][1]
        cls = "nn.ConvTranspose2d" if attrs.transposed else "nn.Conv2d"
        init = call(
            cls,
            repr(c),
            repr(attrs.num_output),
            kernel_size=pair(attrs.kernel),
            stride=pair(attrs.stride) if attrs.stride != (1, 1) else None,
            padding=pair(attrs.pad) if attrs.pad != (0, 0) else None,
            dilation=pair(attrs.dilation) if attrs.dilation != (1, 1) else None,
            groups=attrs.group if attrs.group != 1 else None,
            bias=False if not attrs.bias else None,
        )
        return Emission(forward=f"self.{ctx.attr}({ctx.x})", init=init)

    def absorbs_affine(self, attrs: ConvAttrs, in_shapes: Sequence[Shape]) -> ConvAttrs | None:
        # A Deconvolution's output channel mixes weight column c of every input row: it does
        # not fold this way.
        return None if attrs.transposed else replace(attrs, bias=True)

    def multiply_adds(
        self, attrs: ConvAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> int:
        kh, kw = attrs.kernel
        if attrs.transposed:
            # Every input element is multiplied into num_output / group * kh * kw outputs.
            in_elements = math.prod(in_shapes[0])
            return in_elements * attrs.num_output // attrs.group * kh * kw
        out_elements = sum(math.prod(s) for s in out_shapes)
        return out_elements * in_shapes[0][1] // attrs.group * kh * kw


@register
class ConvolutionDepthwise(Layer[ConvAttrs]):
    """Depthwise convolution: output channel c convolves input channel c alone.

    Source: conv_dw_layer.cpp (sp2823's ConvolutionDepthwiseLayer, BVLC/caffe pull request
    5665; farmingyard/caffe-mobilenet @ f7d7d130), the layer of farmingyard/ShuffleNet's and the
    MobileNet forks' nets.

    Its weight blob is (C, 1, kh, kw), which is `nn.Conv2d(C, C, groups=C)`'s layout, so it is a
    Convolution whose group and number of outputs are the input channels (fixed once the input
    is known). LayerSetUp and Reshape never read `num_output` or `group`: a prototxt whose
    num_output differs from the input channels (MnasNet's) builds in Caffe, and here.
    """

    types = ("ConvolutionDepthwise",)
    role = Role.CONVOLUTION
    _conv = Convolution()

    def parse(self, layer: LayerSource) -> ConvAttrs:
        p = layer.param.convolution_param
        for name in ("kernel_size", "stride", "pad", "dilation"):
            if len(getattr(p, name)) > 2:
                raise fail(layer, f"{name} has more than 2 values: the layer is 2-D")
        kernel = spatial(list(p.kernel_size), None, opt(p, "kernel_h"), opt(p, "kernel_w"), 0)
        stride = spatial(list(p.stride), None, opt(p, "stride_h"), opt(p, "stride_w"), 1)
        pad = spatial(list(p.pad), None, opt(p, "pad_h"), opt(p, "pad_w"), 0)
        dilation = spatial(list(p.dilation), None, None, None, 1)
        if min(kernel) <= 0:
            raise fail(layer, f"kernel size must be positive, got {kernel}")
        if min(stride) <= 0 or min(dilation) <= 0:
            raise fail(layer, "stride and dilation must be positive")
        # num_output and group are set from the input channels (_depthwise).
        return ConvAttrs(0, kernel, stride, pad, dilation, 1, bool(p.bias_term), False)

    def infer(
        self, attrs: ConvAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        if len(in_shapes[0]) != 4:
            raise fail(layer, f"expects a 4-D input, got {in_shapes[0]}")
        return self._conv.infer(_depthwise(attrs, in_shapes), in_shapes, layer)

    def blobs(self, attrs: ConvAttrs, in_shapes: Sequence[Shape]) -> list[BlobSpec]:
        return self._conv.blobs(_depthwise(attrs, in_shapes), in_shapes)

    def param_names(self, attrs: ConvAttrs, in_shapes: Sequence[Shape]) -> tuple[str, ...]:
        return self._conv.param_names(_depthwise(attrs, in_shapes), in_shapes)

    def state(
        self, attrs: ConvAttrs, in_shapes: Sequence[Shape], blobs: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        return self._conv.state(_depthwise(attrs, in_shapes), in_shapes, blobs)

    def emit(self, attrs: ConvAttrs, ctx: EmitContext) -> Emission:
        return self._conv.emit(_depthwise(attrs, ctx.in_shapes), ctx)

    def multiply_adds(
        self, attrs: ConvAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> int:
        return self._conv.multiply_adds(_depthwise(attrs, in_shapes), in_shapes, out_shapes)


def _depthwise(attrs: ConvAttrs, in_shapes: Sequence[Shape]) -> ConvAttrs:
    channels = in_shapes[0][1]
    return replace(attrs, group=channels, num_output=channels)


@dataclass(frozen=True)
class DepthwiseConvolutionAttrs(Attrs):
    conv: ConvAttrs
    gpu: bool  # --dialect depthwise-gpu: the fork's GPU kernel, not its CPU path


@register
class DepthwiseConvolution(Layer[DepthwiseConvolutionAttrs]):
    """yonghenglh6's DepthwiseConvolution (MobileNet-YOLO, MobileNetV3, VGG-depthwise-SSD).

    Its CPU path (Forward_cpu) is BaseConvolutionLayer's: exactly a Convolution with the
    prototxt's group, dilation and num_output, which is what protocaffe emits. Its GPU kernel
    (ConvForward in depthwise_conv_layer.cu) computes one filter per input channel from the
    first C * kh * kw weights, ignoring group, dilation and num_output; the two agree when
    group = num_output = C, as in nearly every net. `--dialect depthwise-gpu` follows the GPU
    kernel (models were trained on GPUs), where it is a depthwise convolution: dilation 1,
    num_output = C, and maps at least as large as the kernel (on smaller ones the kernel's
    weight offset `kernel - hend` is wrong).

    Source: yonghenglh6/DepthwiseConvolution @ 2b9cf52a, caffe/src/caffe/layers/
    depthwise_conv_layer.cpp (Forward_cpu, compute_output_shape) and depthwise_conv_layer.cu
    (ConvForward).
    """

    types = ("DepthwiseConvolution",)
    role = Role.CONVOLUTION
    _conv = Convolution()

    def parse(self, layer: LayerSource) -> DepthwiseConvolutionAttrs:
        conv = parse_conv(layer, transposed=False)
        gpu = "depthwise-gpu" in layer.dialects
        if gpu and conv.dilation != (1, 1):
            raise fail(
                layer,
                f"dilation {conv.dilation} under --dialect depthwise-gpu: the fork's GPU kernel "
                "ignores dilation but sizes its output with it",
            )
        return DepthwiseConvolutionAttrs(conv, gpu)

    def _as_conv(self, attrs: DepthwiseConvolutionAttrs, in_shapes: Sequence[Shape]) -> ConvAttrs:
        if not attrs.gpu:
            return attrs.conv
        return _depthwise(attrs.conv, in_shapes)

    def infer(
        self, attrs: DepthwiseConvolutionAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape = in_shapes[0]
        if attrs.gpu:
            if len(shape) != 4 or attrs.conv.num_output != shape[1]:
                raise fail(
                    layer,
                    f"num_output {attrs.conv.num_output} must equal the input channels of "
                    f"{shape} under --dialect depthwise-gpu (one filter per channel)",
                )
            if shape[2] < attrs.conv.kernel[0] or shape[3] < attrs.conv.kernel[1]:
                raise fail(
                    layer,
                    f"the {shape[2]}x{shape[3]} map is smaller than the kernel "
                    f"{attrs.conv.kernel}: the fork's GPU kernel picks the wrong weights there",
                )
        return self._conv.infer(attrs.conv, in_shapes, layer)

    def blobs(self, attrs: DepthwiseConvolutionAttrs, in_shapes: Sequence[Shape]) -> list[BlobSpec]:
        # The caffemodel holds BaseConvolutionLayer's blobs either way.
        return self._conv.blobs(attrs.conv, in_shapes)

    def param_names(
        self, attrs: DepthwiseConvolutionAttrs, in_shapes: Sequence[Shape]
    ) -> tuple[str, ...]:
        return self._conv.param_names(attrs.conv, in_shapes)

    def state(
        self,
        attrs: DepthwiseConvolutionAttrs,
        in_shapes: Sequence[Shape],
        blobs: Sequence[np.ndarray],
    ) -> dict[str, np.ndarray]:
        state = self._conv.state(attrs.conv, in_shapes, blobs)
        if attrs.gpu:
            # ConvForward reads filter c at weight + c * kh * kw of the flat blob.
            channels, (kh, kw) = in_shapes[0][1], attrs.conv.kernel
            flat = state["weight"].reshape(-1)[: channels * kh * kw]
            state["weight"] = flat.reshape(channels, 1, kh, kw)
        return state

    def emit(self, attrs: DepthwiseConvolutionAttrs, ctx: EmitContext) -> Emission:
        emission = self._conv.emit(self._as_conv(attrs, ctx.in_shapes), ctx)
        if attrs.gpu:
            return replace(emission, note="the fork's GPU kernel (--dialect depthwise-gpu)")
        return emission

    def absorbs_affine(
        self, attrs: DepthwiseConvolutionAttrs, in_shapes: Sequence[Shape]
    ) -> DepthwiseConvolutionAttrs | None:
        return replace(attrs, conv=replace(attrs.conv, bias=True))

    def multiply_adds(
        self,
        attrs: DepthwiseConvolutionAttrs,
        in_shapes: Sequence[Shape],
        out_shapes: Sequence[Shape],
    ) -> int:
        return self._conv.multiply_adds(self._as_conv(attrs, in_shapes), in_shapes, out_shapes)
