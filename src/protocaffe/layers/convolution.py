"""Convolution: Convolution and Deconvolution over any 1 to 3 spatial axes (with group,
dilation, per-axis kernel, stride and pad, a channel axis other than 1, several bottoms), and
the depthwise convolution of the mobile-net forks.

Caffe's geometry is BaseConvolutionLayer's (BVLC src/caffe/layers/base_conv_layer.cpp,
LayerSetUp and Reshape; conv_layer.cpp and deconv_layer.cpp, compute_output_shape): the number
of spatial axes is the input's rank minus `axis + 1`, and kernel_size, stride, pad and dilation
each hold one value for every spatial axis or one per axis (`kernel_h`/`kernel_w`,
`stride_h`/..., `pad_h`/... only for two, and never with the repeated field). A convolution's
output size truncates toward zero (C++ integer division), so a kernel larger than the padded
input still gives one output where the numerator is above -stride; taps outside the input read
zero. A dilation of 0 makes every tap of that axis read the same place: the kernel's taps along
it are summed into a kernel of 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from protocaffe.ir.graph import Attrs, Shape
from protocaffe.layers.base import (
    FUNCTIONAL,
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
    opt,
    spatial,
)
from protocaffe.layers.registry import register

if TYPE_CHECKING:  # numpy only where weights are converted (see Layer.state)
    import numpy as np

# torch has Conv1d, Conv2d and Conv3d (and their transposes).
MAX_SPATIAL_AXES = 3


@dataclass(frozen=True)
class ConvAttrs(Attrs):
    """kernel, stride, pad and dilation as the layer gives them: one value for every spatial
    axis, or one per spatial axis (resolved against the input by `Geometry.of`)."""

    num_output: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pad: tuple[int, ...]
    dilation: tuple[int, ...]
    group: int
    bias: bool
    transposed: bool
    axis: int = 1


@dataclass(frozen=True)
class Geometry:
    """One value per spatial axis, for an input of a given rank."""

    axis: int  # the channel axis
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pad: tuple[int, ...]
    dilation: tuple[int, ...]

    @staticmethod
    def of(attrs: ConvAttrs, shape: Shape) -> Geometry:
        axis = attrs.axis % len(shape)
        n = len(shape) - axis - 1

        def each(values: tuple[int, ...]) -> tuple[int, ...]:
            return values * n if len(values) == 1 else values

        return Geometry(
            axis, each(attrs.kernel), each(attrs.stride), each(attrs.pad), each(attrs.dilation)
        )

    @property
    def extent(self) -> tuple[int, ...]:
        """The span of each kernel: dilation * (kernel - 1) + 1."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation, strict=True))

    @property
    def summed(self) -> tuple[bool, ...]:
        """The axes whose dilation is 0: their taps all read one place (kernel extent 1)."""
        return tuple(d == 0 for d in self.dilation)


def _pair_rule(
    layer: LayerSource, name: str, values: Sequence[int], default: int | None
) -> tuple[int, ...]:
    """`name` (repeated) or `name_h`/`name_w`, as BaseConvolutionLayer::LayerSetUp reads them."""
    p = layer.param.convolution_param
    h, w = opt(p, f"{name}_h"), opt(p, f"{name}_w")
    if h is None and w is None:
        if not values:
            # No kernel at all: Caffe accepts it only over 0 spatial axes (a blob that ends at
            # the channel axis); `infer` checks the count against the input.
            return () if default is None else (default,)
        return tuple(int(v) for v in values)
    if values:
        raise fail(
            layer,
            f"Caffe aborts here: Either {name} or {name}_h/w should be specified; not both",
        )
    if default is None or name == "stride":
        # kernel_h/kernel_w and stride_h/stride_w have no default in BVLC's and the SSD fork's
        # caffe.proto: the one not given is 0.
        missing = f"{name}_w" if w is None else f"{name}_h" if h is None else ""
        if missing:
            what = "Filter" if name == "kernel" else "Stride"
            raise fail(
                layer,
                f"Caffe aborts here: {what} dimensions must be nonzero ({missing} is not given, "
                "and BVLC Caffe gives it no default; only the brocolli build defaults it to 1)",
            )
    return (h if h is not None else (default or 0), w if w is not None else (default or 0))


def parse_conv(layer: LayerSource, transposed: bool) -> ConvAttrs:
    p = layer.param.convolution_param
    if not p.HasField("num_output"):
        raise fail(layer, "convolution_param.num_output is required")
    if p.num_output <= 0:
        raise fail(layer, "Caffe aborts here: convolution_param.num_output must be positive")
    kernel = _pair_rule(layer, "kernel", list(p.kernel_size), None)
    stride = _pair_rule(layer, "stride", list(p.stride), 1)
    pad = _pair_rule(layer, "pad", list(p.pad), 0)
    dilation = tuple(int(d) for d in p.dilation) or (1,)
    if kernel and min(kernel) <= 0:
        raise fail(layer, "Caffe aborts here: Filter dimensions must be nonzero")
    if min(stride) <= 0:
        raise fail(layer, "Caffe aborts here: Stride dimensions must be nonzero")
    if p.group <= 0:
        raise fail(layer, f"group must be positive, got {p.group} (Caffe divides by it)")
    if p.num_output % p.group:
        raise fail(
            layer,
            f"Caffe aborts here: Number of output should be multiples of group ({p.num_output} "
            f"and {p.group})",
        )
    return ConvAttrs(
        num_output=int(p.num_output),
        kernel=kernel,
        stride=stride,
        pad=pad,
        dilation=dilation,
        group=int(p.group),
        bias=bool(p.bias_term),
        transposed=transposed,
        axis=int(p.axis),
    )


def conv_out_size(size: int, k: int, s: int, p: int, d: int) -> int:
    """Caffe's convolution output size: C++ int division, which truncates toward zero."""
    span = size + 2 * p - (d * (k - 1) + 1)
    return int(span / s) + 1 if span < 0 else span // s + 1


def deconv_out_size(size: int, k: int, s: int, p: int, d: int) -> int:
    return s * (size - 1) + (d * (k - 1) + 1) - 2 * p


def _one(values: tuple[int, ...]) -> int | tuple[int, ...]:
    """One int when every axis agrees (`kernel_size=3`), else the tuple."""
    return values[0] if len(set(values)) == 1 else values


@register
class Convolution(Layer[ConvAttrs]):
    """Convolution and Deconvolution (BVLC conv_layer.cpp, deconv_layer.cpp): one set of weights
    for every bottom, each bottom giving its own top."""

    types = ("Convolution", "Deconvolution")
    bottoms = (1, None)
    tops = (1, None)
    role = Role.CONVOLUTION

    def parse(self, layer: LayerSource) -> ConvAttrs:
        attrs = parse_conv(layer, transposed=layer.type == "Deconvolution")
        if len(layer.tops) != len(layer.bottoms):
            raise fail(
                layer,
                f"Caffe aborts here: {len(layer.bottoms)} bottoms need as many tops, got "
                f"{len(layer.tops)}",
            )
        return attrs

    def infer(
        self, attrs: ConvAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape = in_shapes[0]
        axis = canonical_axis(attrs.axis, len(shape), layer)
        # n == 0 (the channel axis is the last): Caffe convolves with a kernel of no axes, a
        # product over the channels at each position.
        n = len(shape) - axis - 1
        p = layer.param.convolution_param
        if n != 2 and any(
            opt(p, f"{name}_{side}") is not None
            for name in ("kernel", "stride", "pad")
            for side in "hw"
        ):
            raise fail(
                layer,
                f"Caffe aborts here: kernel_h & kernel_w (and stride_h/w, pad_h/w) can only be "
                f"used for 2D convolution; the input {shape} has {n} spatial axes",
            )
        for name, values in (
            ("kernel_size", attrs.kernel),
            ("stride", attrs.stride),
            ("pad", attrs.pad),
            ("dilation", attrs.dilation),
        ):
            if len(values) not in (1, n):
                raise fail(
                    layer,
                    f"Caffe aborts here: {name} must be specified once, or once per spatial "
                    f"dimension ({name} specified {len(values)} times; {n} spatial dims)",
                )
        if n > MAX_SPATIAL_AXES:
            raise fail(
                layer,
                f"convolution over {n} spatial axes (input {shape}) is not supported: torch "
                f"convolves over at most {MAX_SPATIAL_AXES}",
            )
        for i, other in enumerate(in_shapes[1:], start=1):
            if other != shape:
                raise fail(
                    layer,
                    f"Caffe aborts here: All inputs must have the same shape (bottom {i} is "
                    f"{other}, bottom 0 {shape})",
                )
        channels = shape[axis]
        if channels % attrs.group:
            raise fail(
                layer, f"Caffe aborts here: input channels {channels} % group {attrs.group} != 0"
            )
        g = Geometry.of(attrs, shape)
        size = deconv_out_size if attrs.transposed else conv_out_size
        spatial = shape[axis + 1 :]
        out = tuple(
            size(dim, k, s, pad, d)
            for dim, k, s, pad, d in zip(
                spatial, g.kernel, g.stride, g.pad, g.dilation, strict=True
            )
        )
        if out and min(out) <= 0:
            raise fail(
                layer,
                f"the output would be {out}: kernel {g.kernel} (dilation {g.dilation}, stride "
                f"{g.stride}, pad {g.pad}) leaves no output for the input {spatial}",
            )
        return [shape[:axis] + (attrs.num_output,) + out] * len(in_shapes)

    def blobs(self, attrs: ConvAttrs, in_shapes: Sequence[Shape]) -> list[BlobSpec]:
        g = Geometry.of(attrs, in_shapes[0])
        c = in_shapes[0][g.axis]
        taps = math.prod(g.kernel)
        if attrs.transposed:
            weight = (c, attrs.num_output // attrs.group, *g.kernel)
            fan_in = c // attrs.group * taps // max(1, math.prod(g.stride))
        else:
            weight = (attrs.num_output, c // attrs.group, *g.kernel)
            fan_in = c // attrs.group * taps
        specs = [BlobSpec(weight, Init.FAN_IN, max(1, fan_in))]
        if attrs.bias:
            specs.append(BlobSpec((attrs.num_output,), Init.SMALL))
        return specs

    def param_names(self, attrs: ConvAttrs, in_shapes: Sequence[Shape]) -> tuple[str, ...]:
        return ("weight", "bias") if attrs.bias else ("weight",)

    def state(
        self, attrs: ConvAttrs, in_shapes: Sequence[Shape], blobs: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        g = Geometry.of(attrs, in_shapes[0])
        weight = blobs[0]
        summed = tuple(2 + i for i, s in enumerate(g.summed) if s)
        if summed:  # dilation 0: every tap of the axis reads the same input value
            weight = weight.sum(axis=summed, keepdims=True, dtype=weight.dtype)
        if not g.kernel:  # no spatial axis: torch's Conv1d over one position
            weight = weight.reshape(*weight.shape, 1)
        return dict(zip(self.param_names(attrs, in_shapes), [weight, *blobs[1:]], strict=True))

    def emit(self, attrs: ConvAttrs, ctx: EmitContext) -> Emission:
        shape = ctx.in_shapes[0]
        g = Geometry.of(attrs, shape)
        n = len(g.kernel)
        c = shape[g.axis]
        if n == 0:
            return _emit_no_spatial_axes(attrs, ctx, g)
        kernel = tuple(1 if s else k for k, s in zip(g.kernel, g.summed, strict=True))
        dilation = tuple(1 if s else d for d, s in zip(g.dilation, g.summed, strict=True))
        cls = f"nn.ConvTranspose{n}d" if attrs.transposed else f"nn.Conv{n}d"
        init = call(
            cls,
            repr(c),
            repr(attrs.num_output),
            kernel_size=_one(kernel),
            stride=_one(g.stride) if set(g.stride) != {1} else None,
            padding=_one(g.pad) if set(g.pad) != {0} else None,
            dilation=_one(dilation) if set(dilation) != {1} else None,
            groups=attrs.group if attrs.group != 1 else None,
            bias=False if not attrs.bias else None,
        )
        notes = []
        if any(g.summed):
            notes.append("dilation 0: its taps read one place, so they are summed")
        extra = _truncated_padding(attrs, g, shape)
        imports: tuple[str, ...] = ()
        if any(extra):
            notes.append("Caffe truncates the output size toward zero: zeros padded after")
            imports = (FUNCTIONAL,)
        calls = []
        for x in ctx.inputs:
            padded = x
            if any(extra):
                pads = ", ".join(f"0, {e}" for e in reversed(extra))
                padded = f"F.pad({x}, ({pads}))"
            calls.append(_over_channel_axis(f"self.{ctx.attr}", padded, x, g.axis))
        if len(calls) > 1:
            notes.append("one set of weights for each bottom")
        forward = calls[0] if len(calls) == 1 else "(" + ", ".join(calls) + ")"
        return Emission(forward=forward, init=init, note="; ".join(notes), imports=imports)

    def fresh_output(self, attrs: ConvAttrs, in_shapes: Sequence[Shape]) -> bool:
        return True

    def absorbs_affine(self, attrs: ConvAttrs, in_shapes: Sequence[Shape]) -> ConvAttrs | None:
        # A Deconvolution's output channel mixes weight column c of every input row: it does
        # not fold this way; nor does a convolution whose channels are not axis 1.
        rank = len(in_shapes[0])
        if attrs.transposed or attrs.axis % rank != 1 or len(in_shapes) > 1 or rank < 3:
            return None
        return replace(attrs, bias=True)

    def computes_in_place(self, attrs: ConvAttrs, in_shapes: Sequence[Shape]) -> bool:
        return False  # the top is reshaped (and written) before im2col reads the bottom

    def multiply_adds(
        self, attrs: ConvAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> int:
        g = Geometry.of(attrs, in_shapes[0])
        taps = math.prod(g.kernel)
        if attrs.transposed:
            # Every input element is multiplied into num_output / group * taps outputs.
            in_elements = sum(math.prod(s) for s in in_shapes)
            return in_elements * attrs.num_output // attrs.group * taps
        out_elements = sum(math.prod(s) for s in out_shapes)
        return out_elements * in_shapes[0][g.axis] // attrs.group * taps


def _emit_no_spatial_axes(attrs: ConvAttrs, ctx: EmitContext, g: Geometry) -> Emission:
    """Over a blob that ends at the channel axis: torch's 1-D convolution with a kernel of 1 at
    one position (Caffe's weight (num_output, channels / group) gains that axis on loading)."""
    cls = "nn.ConvTranspose1d" if attrs.transposed else "nn.Conv1d"
    init = call(
        cls,
        repr(ctx.in_shapes[0][g.axis]),
        repr(attrs.num_output),
        kernel_size=1,
        groups=attrs.group if attrs.group != 1 else None,
        bias=False if not attrs.bias else None,
    )
    calls = [
        _over_channel_axis(f"self.{ctx.attr}", f"{x}.unsqueeze(-1)", x, g.axis) + ".squeeze(-1)"
        for x in ctx.inputs
    ]
    forward = calls[0] if len(calls) == 1 else "(" + ", ".join(calls) + ")"
    return Emission(forward=forward, init=init, note="no spatial axis: one position")


def _truncated_padding(attrs: ConvAttrs, g: Geometry, shape: Shape) -> tuple[int, ...]:
    """Zeros to add after each spatial axis so that torch's floor division gives Caffe's
    truncated output size (nonzero only where the kernel exceeds the padded input)."""
    if attrs.transposed:
        return (0,) * len(g.kernel)
    extra = []
    spatial = shape[g.axis + 1 :]
    for dim, k, s, p, d in zip(spatial, g.kernel, g.stride, g.pad, g.dilation, strict=True):
        out = conv_out_size(dim, k, s, p, d)
        extent = 1 if d == 0 else d * (k - 1) + 1
        extra.append(max(0, (out - 1) * s + extent - (dim + 2 * p)))
    return tuple(extra)


def _over_channel_axis(module: str, x: str, original: str, axis: int) -> str:
    """`module(x)` with the axes before the channel axis as the batch (Caffe's `num_`);
    `original` is the input before padding, whose leading axes the output keeps."""
    if axis == 1:
        return f"{module}({x})"
    if axis == 0:
        return f"{module}({x}.unsqueeze(0)).squeeze(0)"
    return f"{module}({x}.flatten(0, {axis - 1})).unflatten(0, {original}.shape[:{axis}])"


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

    def fresh_output(self, attrs: ConvAttrs, in_shapes: Sequence[Shape]) -> bool:
        return True  # an nn.Conv2d call

    def computes_in_place(self, attrs: ConvAttrs, in_shapes: Sequence[Shape]) -> bool:
        return False

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
        if gpu and set(conv.dilation) != {1}:
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
            kernel = Geometry.of(attrs.conv, shape).kernel
            if shape[2] < kernel[0] or shape[3] < kernel[1]:
                raise fail(
                    layer,
                    f"the {shape[2]}x{shape[3]} map is smaller than the kernel "
                    f"{kernel}: the fork's GPU kernel picks the wrong weights there",
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
            channels, (kh, kw) = in_shapes[0][1], Geometry.of(attrs.conv, in_shapes[0]).kernel
            flat = state["weight"].reshape(-1)[: channels * kh * kw]
            state["weight"] = flat.reshape(channels, 1, kh, kw)
        return state

    def emit(self, attrs: DepthwiseConvolutionAttrs, ctx: EmitContext) -> Emission:
        emission = self._conv.emit(self._as_conv(attrs, ctx.in_shapes), ctx)
        if attrs.gpu:
            return replace(emission, note="the fork's GPU kernel (--dialect depthwise-gpu)")
        return emission

    def fresh_output(self, attrs: DepthwiseConvolutionAttrs, in_shapes: Sequence[Shape]) -> bool:
        return True  # an nn.Conv2d call

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


@register
class Convolution3D(Layer[ConvAttrs]):
    """C3D's 3-D convolution and deconvolution over (N, C, L, H, W): a kernel_depth x
    kernel_size x kernel_size kernel, temporal_stride x stride x stride apart, temporal_pad x pad
    x pad zeros around; no dilation, no group (`group` is read by no line of the layer;
    `filter_group` only splits the output filters into gemms over all channels, which is still a
    full convolution). Output sizes: `(L + 2 tp - kd) / ts + 1` (C++ int division) for the
    convolution, `(L - 1) ts - 2 tp + kd` for the deconvolution. Weights (O, C, kd, k, k) and
    (C, O, kd, k, k); the bias blob is (1, 1, 1, 1, O).

    V2 `Convolution3D` / `Deconvolution3D` read convolution3d_param (C3D v1.1); V1
    `CONVOLUTION3D` / `DECONVOLUTION3D` read convolution_param with kernel_depth,
    temporal_stride, temporal_pad and filter_group (C3D v1.0). v1.1's Deconvolution3D reads
    bias_term from convolution_param (default true), not from convolution3d_param: a
    `convolution3d_param { bias_term: false }` deconvolution still has a bias blob.

    Source: facebook/C3D @ 71336a22, C3D-v1.1/src/caffe/layers/convolution3d_layer.cpp and
    deconvolution3d_layer.cpp (LayerSetUp, Forward_cpu), C3D-v1.1/src/caffe/util/vol2col.cpp
    (vol2col_cpu, col2vol_cpu); C3D-v1.0's files of the same names (SetUp, Forward_cpu).
    """

    types = ("Convolution3D", "Deconvolution3D")
    role = Role.CONVOLUTION
    _conv = Convolution()

    def parse(self, layer: LayerSource) -> ConvAttrs:
        transposed = layer.type == "Deconvolution3D"
        if layer.param.HasField("convolution3d_param"):
            q = layer.param.convolution3d_param
            num_output, size, depth = int(q.num_output), int(q.kernel_size), int(q.kernel_depth)
            stride, temporal = int(q.stride), int(q.temporal_stride)
            pad, temporal_pad = int(q.pad), int(q.temporal_pad)
            filter_group, bias = int(q.filter_group), bool(q.bias_term)
        else:
            p = layer.param.convolution_param
            for name in ("kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h", "pad_w"):
                if p.HasField(name):
                    raise fail(layer, f"{name}: C3D's convolution_param has no such field")
            if p.dilation:
                raise fail(layer, "dilation: C3D's convolution_param has no such field")
            for name in ("kernel_size", "stride", "pad"):
                if len(getattr(p, name)) > 1:
                    raise fail(layer, f"{name}: C3D's convolution_param holds one value at most")
            num_output = int(p.num_output)
            size = int(p.kernel_size[0]) if p.kernel_size else 0
            depth = int(p.kernel_depth)
            stride = int(p.stride[0]) if p.stride else 1
            pad = int(p.pad[0]) if p.pad else 0
            temporal, temporal_pad = int(p.temporal_stride), int(p.temporal_pad)
            filter_group, bias = int(p.filter_group), bool(p.bias_term)
        if transposed:
            # Both versions' Deconvolution3DLayer read bias_term from convolution_param.
            bias = bool(layer.param.convolution_param.bias_term)
        if num_output <= 0:
            raise fail(layer, "Caffe aborts here: num_output must be positive (CHECK_GT)")
        if size <= 0 or depth <= 0:
            raise fail(layer, f"kernel_size {size} and kernel_depth {depth} must be positive")
        if stride <= 0 or temporal <= 0:
            raise fail(layer, "stride and temporal_stride must be positive (C3D divides by them)")
        if not transposed and (filter_group <= 0 or num_output % filter_group):
            raise fail(
                layer,
                f"Caffe aborts here: num_output {num_output} % filter_group {filter_group} != 0",
            )
        return ConvAttrs(
            num_output=num_output,
            kernel=(depth, size, size),
            stride=(temporal, stride, stride),
            pad=(temporal_pad, pad, pad),
            dilation=(1,),
            group=1,
            bias=bias,
            transposed=transposed,
        )

    def infer(
        self, attrs: ConvAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        if len(in_shapes[0]) != 5:
            raise fail(layer, f"expects a 5-D input (N, C, L, H, W), got {in_shapes[0]}")
        return self._conv.infer(attrs, in_shapes, layer)

    def blobs(self, attrs: ConvAttrs, in_shapes: Sequence[Shape]) -> list[BlobSpec]:
        specs = self._conv.blobs(attrs, in_shapes)
        if attrs.bias:
            specs[1] = replace(specs[1], shape=(1, 1, 1, 1, attrs.num_output))
        return specs

    def param_names(self, attrs: ConvAttrs, in_shapes: Sequence[Shape]) -> tuple[str, ...]:
        return self._conv.param_names(attrs, in_shapes)

    def state(
        self, attrs: ConvAttrs, in_shapes: Sequence[Shape], blobs: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        flat = [blobs[0], *(b.reshape(-1) for b in blobs[1:])]
        return self._conv.state(attrs, in_shapes, flat)

    def emit(self, attrs: ConvAttrs, ctx: EmitContext) -> Emission:
        return self._conv.emit(attrs, ctx)

    def computes_in_place(self, attrs: ConvAttrs, in_shapes: Sequence[Shape]) -> bool:
        return False

    def fresh_output(self, attrs: ConvAttrs, in_shapes: Sequence[Shape]) -> bool:
        return self._conv.fresh_output(attrs, in_shapes)

    def multiply_adds(
        self, attrs: ConvAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> int:
        return self._conv.multiply_adds(attrs, in_shapes, out_shapes)


def nd_shapes(
    layer: LayerSource, p: Any, rank: int | None
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """kernel_shape, stride_shape and pad_shape of video-caffe's NdConvolution / NdPooling
    (`{ dim: ... }` messages) with the CHECKs of their LayerSetUp: a kernel is required, the
    other two have as many dims as it when given (defaults 1 and 0)."""
    if not p.HasField("kernel_shape"):
        raise fail(layer, "Caffe aborts here: Kernel shape is required (kernel_shape { dim: ... })")
    kernel = tuple(int(d) for d in p.kernel_shape.dim)
    if min(kernel, default=0) <= 0:
        raise fail(layer, "Caffe aborts here: Filter dimensions cannot be zero")
    values = {}
    for name, default in (("stride", 1), ("pad", 0)):
        given = tuple(int(d) for d in getattr(p, f"{name}_shape").dim)
        if p.HasField(f"{name}_shape") and len(given) != len(kernel):
            raise fail(
                layer,
                f"Caffe aborts here: Kernel and {name.capitalize()} shape don't match "
                f"({len(kernel)} and {len(given)} dims)",
            )
        values[name] = given if p.HasField(f"{name}_shape") else (default,) * len(kernel)
    if min(values["stride"]) <= 0:
        raise fail(layer, "stride_shape dims must be positive (the fork divides by them)")
    if rank is not None and len(kernel) != rank - 2:
        raise fail(
            layer,
            f"kernel_shape has {len(kernel)} dims, the input has {rank - 2} spatial axes "
            "(cuDNN's descriptors need one per axis)",
        )
    return kernel, values["stride"], values["pad"]


@register
class NdConvolution(Layer[ConvAttrs]):
    """video-caffe's NdConvolution: a Convolution over every axis after the channels (axis 1),
    with per-axis `kernel_shape`, `stride_shape` and `pad_shape` messages, group, no dilation.
    Only a cuDNN implementation exists (Forward_cpu is NOT_IMPLEMENTED, engine CAFFE aborts):
    cuDNN's cross-correlation, the same arithmetic as Caffe's im2col convolution. Weight
    (num_output, C / group, *kernel), bias (num_output,).

    compute_output_shape keeps only output axes whose size `(in + 2 p - k) / s + 1` is above 1,
    leaving the top's rank unlike the bottom's cuDNN descriptor: such a layer, and a kernel
    beyond the padded input, are refused.

    Source: chuckcho/video-caffe @ fc232b3e, src/caffe/layers/cudnn_ndconv_layer.cpp
    (LayerSetUp, Reshape, compute_output_shape) and cudnn_ndconv_layer.cu (Forward_gpu).
    """

    types = ("NdConvolution",)
    bottoms = (1, None)
    tops = (1, None)
    role = Role.CONVOLUTION
    _conv = Convolution()

    def parse(self, layer: LayerSource) -> ConvAttrs:
        p = layer.param.convolution_param
        kernel, stride, pad = nd_shapes(layer, p, None)
        if p.num_output <= 0:
            raise fail(layer, "Caffe aborts here: num_output must be positive (CHECK_GT)")
        if p.group <= 0 or p.num_output % p.group:
            raise fail(
                layer,
                f"Caffe aborts here: Number of output should be multiples of group "
                f"({p.num_output} and {p.group})",
            )
        if len(layer.tops) != len(layer.bottoms):
            raise fail(layer, "one top per bottom (Forward_gpu loops over both)")
        return ConvAttrs(
            num_output=int(p.num_output),
            kernel=kernel,
            stride=stride,
            pad=pad,
            dilation=(1,),
            group=int(p.group),
            bias=bool(p.bias_term),
            transposed=False,
        )

    def infer(
        self, attrs: ConvAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape = in_shapes[0]
        nd_shapes(layer, layer.param.convolution_param, len(shape))
        for dim, k, s, p in zip(shape[2:], attrs.kernel, attrs.stride, attrs.pad, strict=True):
            if dim + 2 * p < k:
                raise fail(layer, f"kernel {attrs.kernel} is larger than the padded input {shape}")
            if (dim + 2 * p - k) // s + 1 == 1:
                raise fail(
                    layer,
                    f"an output axis of size 1 (input {shape}, kernel {attrs.kernel}): the fork "
                    "drops it from the top's shape (compute_output_shape keeps dim > 1), "
                    "which cuDNN's descriptors do not match; not converted",
                )
        return self._conv.infer(attrs, in_shapes, layer)

    def blobs(self, attrs: ConvAttrs, in_shapes: Sequence[Shape]) -> list[BlobSpec]:
        return self._conv.blobs(attrs, in_shapes)

    def param_names(self, attrs: ConvAttrs, in_shapes: Sequence[Shape]) -> tuple[str, ...]:
        return self._conv.param_names(attrs, in_shapes)

    def state(
        self, attrs: ConvAttrs, in_shapes: Sequence[Shape], blobs: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        return self._conv.state(attrs, in_shapes, blobs)

    def emit(self, attrs: ConvAttrs, ctx: EmitContext) -> Emission:
        return self._conv.emit(attrs, ctx)

    def absorbs_affine(self, attrs: ConvAttrs, in_shapes: Sequence[Shape]) -> ConvAttrs | None:
        return self._conv.absorbs_affine(attrs, in_shapes)

    def computes_in_place(self, attrs: ConvAttrs, in_shapes: Sequence[Shape]) -> bool:
        return False

    def fresh_output(self, attrs: ConvAttrs, in_shapes: Sequence[Shape]) -> bool:
        return self._conv.fresh_output(attrs, in_shapes)

    def multiply_adds(
        self, attrs: ConvAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> int:
        return self._conv.multiply_adds(attrs, in_shapes, out_shapes)
