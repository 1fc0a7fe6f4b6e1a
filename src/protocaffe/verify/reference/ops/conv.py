"""Convolution, Deconvolution and ConvolutionDepthwise, as Caffe computes them: im2col (or
col2im) and a float32 matrix product per sample and group.

Sources:
- BVLC caffe 9b89154, src/caffe/layers/base_conv_layer.cpp (LayerSetUp: kernel/stride/pad/
  dilation spellings, blob shapes; Reshape), conv_layer.cpp (compute_output_shape,
  Forward_cpu), deconv_layer.cpp (compute_output_shape, Forward_cpu = backward_cpu_gemm +
  col2im), src/caffe/util/im2col.cpp (im2col_cpu / col2im_cpu: positions outside the input
  read as zero).
- farmingyard/caffe-mobilenet, conv_dw_layer.cpp (ConvolutionDepthwiseLayer: LayerSetUp,
  Reshape, Forward_cpu): one filter per input channel, `num_output` ignored.
"""

from __future__ import annotations

import itertools

import numpy as np

from protocaffe.verify.reference.params import (
    as_f32,
    canonical_axis,
    count,
    nd_shape_fields,
    spatial_params,
    trunc_div,
)
from protocaffe.verify.reference.registry import Array, RefLayer, register

# The im2col buffer is filled for a band of output rows at a time, at most this many floats.
_COL_BUDGET = 1 << 23


def _geometry(
    layer: RefLayer, x_shape: tuple[int, ...]
) -> tuple[int, tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(channel axis, kernel, stride, pad, dilation) per base_conv_layer.cpp LayerSetUp."""
    p = layer.param.convolution_param
    axis = canonical_axis(layer, int(p.axis), x_shape)
    spatial = len(x_shape) - axis - 1
    if spatial == 0:
        raise layer.fail("the numpy reference needs at least one spatial axis after the channels")
    kernel = spatial_params(layer, p, "kernel", 0, spatial)
    stride = spatial_params(layer, p, "stride", 1, spatial)
    pad = spatial_params(layer, p, "pad", 0, spatial)
    dilation = spatial_params(layer, p, "dilation", 1, spatial)
    layer.check(all(k > 0 for k in kernel), "Filter dimensions must be nonzero.")
    layer.check(all(s > 0 for s in stride), "Stride dimensions must be nonzero.")
    return axis, kernel, stride, pad, dilation


def conv_output_size(
    spatial: tuple[int, ...],
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    pad: tuple[int, ...],
    dilation: tuple[int, ...],
    transposed: bool,
) -> tuple[int, ...]:
    """ConvolutionLayer / DeconvolutionLayer::compute_output_shape (C++ integer division)."""
    extent = [d * (k - 1) + 1 for d, k in zip(dilation, kernel, strict=True)]
    if transposed:
        return tuple(
            s * (n - 1) + e - 2 * p for n, s, e, p in zip(spatial, stride, extent, pad, strict=True)
        )
    return tuple(
        trunc_div(n + 2 * p - e, s) + 1
        for n, p, e, s in zip(spatial, pad, extent, stride, strict=True)
    )


def im2col_conv(
    x: Array,
    weight: Array,
    bias: Array | None,
    stride: tuple[int, ...],
    pad: tuple[int, ...],
    dilation: tuple[int, ...],
    group: int,
) -> Array:
    """Caffe's forward convolution of x (num, C, *spatial) with weight (O, C / group, *kernel).

    Output size per axis: (in + 2 * pad - (dilation * (kernel - 1) + 1)) / stride + 1 with C++
    integer division, so a window may overhang the input; im2col reads zeros there."""
    num, channels = x.shape[:2]
    spatial = x.shape[2:]
    kernel = weight.shape[2:]
    out_channels = weight.shape[0]
    extent = [d * (k - 1) + 1 for d, k in zip(dilation, kernel, strict=True)]
    out = list(conv_output_size(spatial, kernel, stride, pad, dilation, transposed=False))
    if min(out, default=1) <= 0:
        raise ValueError(f"output size {tuple(out)} is not positive")
    # Zero padding, plus whatever the last windows overhang past it.
    widths = [(0, 0), (0, 0)] + [
        (p, max(p, (o - 1) * s + e - n - p))
        for n, p, e, s, o in zip(spatial, pad, extent, stride, out, strict=True)
    ]
    padded = np.pad(as_f32(x), widths)
    kernel_size = count(kernel)
    cg, og = channels // group, out_channels // group
    w_mat = as_f32(weight).reshape(group, og, cg * kernel_size)
    top = np.empty((num, out_channels, *out), dtype=np.float32)
    per_row = channels * kernel_size * count(tuple(out[1:]))
    rows = max(1, min(out[0], _COL_BUDGET // max(per_row, 1))) if out else 1
    offsets = list(itertools.product(*(range(k) for k in kernel)))
    for n in range(num):
        for r0 in range(0, out[0] if out else 1, rows):
            r1 = min(r0 + rows, out[0]) if out else 1
            band = [r1 - r0, *out[1:]]
            col = np.empty((channels, kernel_size, *band), dtype=np.float32)
            for k, offset in enumerate(offsets):
                index: list[slice] = []
                for axis, (o, d, s, size) in enumerate(
                    zip(offset, dilation, stride, band, strict=True)
                ):
                    start = o * d + (r0 * s if axis == 0 else 0)
                    index.append(slice(start, start + s * (size - 1) + 1, s))
                key: tuple[int | slice, ...] = (n, slice(None), *index)
                col[:, k] = padded[key]
            col = col.reshape(group, cg * kernel_size, -1)
            for g in range(group):
                block = w_mat[g] @ col[g]
                top[(n, slice(g * og, (g + 1) * og), slice(r0, r1))] = block.reshape(og, *band)
    if bias is not None:
        top += as_f32(bias).reshape((1, -1) + (1,) * len(out))
    return top


def col2im_deconv(
    x: Array,
    weight: Array,
    bias: Array | None,
    stride: tuple[int, ...],
    pad: tuple[int, ...],
    dilation: tuple[int, ...],
    group: int,
) -> Array:
    """Caffe's Deconvolution of x (num, C_in, *spatial) with weight (C_in, C_out / group,
    *kernel): the columns W^T x of each sample are scattered back (col2im) and the pad cropped.
    Output size per axis: stride * (in - 1) + dilation * (kernel - 1) + 1 - 2 * pad."""
    num, in_channels = x.shape[:2]
    spatial = x.shape[2:]
    kernel = weight.shape[2:]
    og = weight.shape[1]
    ig = in_channels // group
    out = list(conv_output_size(spatial, kernel, stride, pad, dilation, transposed=True))
    if min(out, default=1) <= 0:
        raise ValueError(f"output size {tuple(out)} is not positive")
    full = [o + 2 * p for o, p in zip(out, pad, strict=True)]
    kernel_size = count(kernel)
    w_mat = as_f32(weight).reshape(group, ig, og * kernel_size)
    offsets = list(itertools.product(*(range(k) for k in kernel)))
    top = np.empty((num, og * group, *out), dtype=np.float32)
    crop = tuple(slice(p, p + o) for p, o in zip(pad, out, strict=True))
    for n in range(num):
        sample = as_f32(x[n]).reshape(group, ig, -1)
        acc = np.zeros((og * group, *full), dtype=np.float32)
        for g in range(group):
            col = (w_mat[g].T @ sample[g]).reshape(og, kernel_size, *spatial)
            for k, offset in enumerate(offsets):
                index = tuple(
                    slice(o * d, o * d + s * (size - 1) + 1, s)
                    for o, d, s, size in zip(offset, dilation, stride, spatial, strict=True)
                )
                target = (slice(g * og, (g + 1) * og), *index)
                acc[target] += col[:, k]
        whole = (slice(None), *crop)
        top[n] = acc[whole]
    if bias is not None:
        top += as_f32(bias).reshape((1, -1) + (1,) * len(out))
    return top


def _conv_layer(layer: RefLayer, bottoms: list[Array], transposed: bool) -> list[Array]:
    """Convolution / Deconvolution: every bottom i gives top i with the same weights."""
    p = layer.param.convolution_param
    layer.check(len(bottoms) == len(layer.tops), "the layer needs one top per bottom")
    shape = bottoms[0].shape
    axis, kernel, stride, pad, dilation = _geometry(layer, shape)
    for other in bottoms[1:]:
        layer.check(other.shape == shape, f"shape mismatch - bottom[0]: {shape} vs. {other.shape}")
    channels = shape[axis]
    num_output = int(p.num_output)
    group = int(p.group)
    layer.check(num_output > 0, "num_output must be positive")
    layer.check(group > 0 and channels % group == 0, f"channels {channels} % group {group} != 0")
    layer.check(num_output % group == 0, "Number of output should be multiples of group.")
    conv_out, conv_in = (channels, num_output) if transposed else (num_output, channels)
    out = conv_output_size(shape[axis + 1 :], kernel, stride, pad, dilation, transposed)
    # A zero-sized top makes Caffe abort on its first data access (Blob: "Check failed: data_").
    layer.check(min(out) > 0, f"the top would be empty: output size {out}")
    shapes = [(conv_out, conv_in // group, *kernel)]
    if p.bias_term:
        shapes.append((num_output,))
    blobs = layer.weights(*shapes)
    bias = blobs[1] if p.bias_term else None
    batch = shape[:axis]
    tops = []
    for x in bottoms:
        flat = x.reshape((count(batch), channels) + x.shape[axis + 1 :])
        try:
            if transposed:
                y = col2im_deconv(flat, blobs[0], bias, stride, pad, dilation, group)
            else:
                y = im2col_conv(flat, blobs[0], bias, stride, pad, dilation, group)
        except ValueError as exc:
            raise layer.fail(f"Caffe aborts here: {exc}") from None
        tops.append(y.reshape(batch + y.shape[1:]))
    return tops


@register("Convolution", bottoms=(1, None), tops=(1, None))
def convolution(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """BVLC conv_layer.cpp Forward_cpu (forward_cpu_gemm per sample, then forward_cpu_bias)."""
    return _conv_layer(layer, bottoms, transposed=False)


@register("Deconvolution", bottoms=(1, None), tops=(1, None))
def deconvolution(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """BVLC deconv_layer.cpp Forward_cpu (backward_cpu_gemm = W^T x then col2im, plus bias)."""
    return _conv_layer(layer, bottoms, transposed=True)


def _dw_pair(layer: RefLayer, name: str, default: int) -> tuple[int, int]:
    """conv_dw_layer.cpp LayerSetUp: `NAME_h` with `NAME_w`, else the repeated field's first
    one or two values. The fork indexes the repeated field even when it is empty (undefined
    behaviour in C++); the reference takes Caffe's default there."""
    p = layer.param.convolution_param
    if name != "dilation" and p.HasField(f"{name}_h") and p.HasField(f"{name}_w"):
        return int(getattr(p, f"{name}_h")), int(getattr(p, f"{name}_w"))
    values = [int(v) for v in getattr(p, "kernel_size" if name == "kernel" else name)]
    if not values:
        return default, default
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


@register("ConvolutionDepthwise")
def convolution_depthwise(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """farmingyard/caffe-mobilenet conv_dw_layer.cpp: weight (C, 1, kh, kw), bias (C,); the
    output has the input's channels (num_output is not read) and a floor-divided size."""
    x = bottoms[0]
    layer.check(x.ndim == 4, f"expects a 4-D input, got {x.shape}")
    p = layer.param.convolution_param
    kernel = _dw_pair(layer, "kernel", 0)
    stride = _dw_pair(layer, "stride", 1)
    pad = _dw_pair(layer, "pad", 0)
    dilation = _dw_pair(layer, "dilation", 1)
    layer.check(min(kernel) > 0 and min(stride) > 0, "kernel and stride must be positive")
    channels = x.shape[1]
    out = conv_output_size(x.shape[2:], kernel, stride, pad, dilation, transposed=False)
    layer.check(min(out) > 0, f"the top would be empty: output size {out}")
    shapes: list[tuple[int, ...]] = [(channels, 1, *kernel)]
    if p.bias_term:
        shapes.append((channels,))
    blobs = layer.weights(*shapes)
    bias = blobs[1] if p.bias_term else None
    return [im2col_conv(x, blobs[0], bias, stride, pad, dilation, channels)]


@register("DepthwiseConvolution", bottoms=(1, None), tops=(1, None))
def depthwise_convolution(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """yonghenglh6/DepthwiseConvolution @ 2b9cf52a, caffe/src/caffe/layers/
    depthwise_conv_layer.cpp: Forward_cpu is BaseConvolutionLayer's forward_cpu_gemm (a
    Convolution with the prototxt's group and dilation). Under `--dialect depthwise-gpu`,
    depthwise_conv_layer.cu ConvForward instead (`depthwise_gpu_values`)."""
    if "depthwise-gpu" not in layer.dialects:
        return _conv_layer(layer, bottoms, transposed=False)
    p = layer.param.convolution_param
    tops = []
    for x in bottoms:
        layer.check(x.ndim == 4, f"expects a 4-D input, got {x.shape}")
        _, kernel, stride, pad, dilation = _geometry(layer, x.shape)
        channels, num_output, group = x.shape[1], int(p.num_output), int(p.group)
        layer.check(
            num_output == channels,
            f"the GPU kernel writes num_output {num_output} channels from {channels} filters",
        )
        shapes: list[tuple[int, ...]] = [(num_output, channels // group, *kernel)]
        if p.bias_term:
            shapes.append((num_output,))
        blobs = layer.weights(*shapes)
        out = conv_output_size(x.shape[2:], kernel, stride, pad, dilation, transposed=False)
        layer.check(min(out) > 0, f"the top would be empty: output size {out}")
        bias = blobs[1] if p.bias_term else None
        tops.append(depthwise_gpu_values(x, blobs[0], bias, kernel, stride, pad, out))
    return tops


def depthwise_gpu_values(
    x: Array,
    weight: Array,
    bias: Array | None,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    pad: tuple[int, ...],
    out: tuple[int, ...],
) -> Array:
    """ConvForward of depthwise_conv_layer.cu, one output position at a time for every (n, c):
    the window clipped to the map, filter c at `weight + c * kh * kw` of the flat blob, and the
    kernel's weight row offset `kernel_h - hend` when hend < kernel_h (dilation ignored)."""
    n, channels, height, width = x.shape
    kh, kw = kernel
    filters = as_f32(weight).reshape(-1)[: channels * kh * kw].reshape(channels, kh, kw)
    top = np.zeros((n, channels, out[0], out[1]), np.float32)
    for ph in range(out[0]):
        for pw in range(out[1]):
            hstart, wstart = ph * stride[0] - pad[0], pw * stride[1] - pad[1]
            hend = min(hstart + kh, height + pad[0])
            wend = min(wstart + kw, width + pad[1])
            hstart, wstart = max(hstart, 0), max(wstart, 0)
            hend, wend = min(hend, height), min(wend, width)
            khstart = kh - hend if hend < kh else 0
            kwstart = kw - wend if wend < kw else 0
            acc = np.zeros((n, channels), np.float32)
            for h in range(hstart, hend):
                for w in range(wstart, wend):
                    tap = filters[:, khstart + h - hstart, kwstart + w - wstart]
                    acc = acc + x[:, :, h, w] * tap[None, :]
            if bias is not None:
                acc = acc + bias[None, :]
            top[:, :, ph, pw] = acc
    return top


def _c3d_params(layer: RefLayer) -> tuple[int, int, int, int, int, int, int, int, bool]:
    """(num_output, kernel_size, kernel_depth, stride, temporal_stride, pad, temporal_pad,
    filter_group, bias_term) as C3D's LayerSetUp reads them: convolution3d_param in v1.1,
    convolution_param (C3D v1.0's ConvolutionParameter: one optional value per field) in v1.0."""
    if layer.param.HasField("convolution3d_param"):
        q = layer.param.convolution3d_param
        return (
            int(q.num_output),
            int(q.kernel_size),
            int(q.kernel_depth),
            int(q.stride),
            int(q.temporal_stride),
            int(q.pad),
            int(q.temporal_pad),
            int(q.filter_group),
            bool(q.bias_term),
        )
    p = layer.param.convolution_param

    def one(values: list[int], default: int) -> int:
        layer.check(len(values) <= 1, "C3D v1.0's convolution_param holds one value per field")
        return int(values[0]) if values else default

    return (
        int(p.num_output),
        one(list(p.kernel_size), 0),
        int(p.kernel_depth),
        one(list(p.stride), 1),
        int(p.temporal_stride),
        one(list(p.pad), 0),
        int(p.temporal_pad),
        int(p.filter_group),
        bool(p.bias_term),
    )


@register("Convolution3D")
def convolution3d(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """facebook/C3D @ 71336a22, C3D-v1.1/src/caffe/layers/convolution3d_layer.cpp
    (Convolution3DLayer::LayerSetUp, Forward_cpu) and C3D-v1.0's (SetUp, Forward_cpu), with
    src/caffe/util/vol2col.cpp (vol2col_cpu).

    LayerSetUp: output (L + 2 tp - kd) / ts + 1, (H + 2 p - k) / s + 1, (W + 2 p - k) / s + 1
    (C++ int division); weight (num_output, C, kd, k, k), bias (1, 1, 1, 1, num_output);
    CHECK num_output > 0 and num_output % filter_group == 0; `group` is never read.
    Forward_cpu per sample: vol2col (column row c = ((c_im * kd + l) * k + h) * k + w, zero
    outside the input), then for each filter group g a gemm of weight rows
    [g * M, (g + 1) * M) (M = num_output / filter_group, K = C kd k k: every input channel)
    with the columns into top rows [g * M, (g + 1) * M), then bias * ones.

    The groups' gemms are the row blocks of one gemm (num_output x K) x (K x N), and vol2col is
    im2col_cpu over three axes with dilation 1 (the same row order c_im, kd, k, k and the same
    zero reads), so this is `im2col_conv` (BVLC's forward convolution above) with group 1,
    dilation 1, stride (ts, s, s) and pad (tp, p, p); the bias is added after the product as
    the bias gemm does. That function transcribes the same arithmetic, not the emitters'.
    """
    x = bottoms[0]
    layer.check(x.ndim == 5, f"C3D reads shape(0..4) of a 5-D blob, got {x.shape}")
    num_output, k, kd, s, ts, p, tp, filter_group, bias_term = _c3d_params(layer)
    layer.check(num_output > 0, "Check failed: num_output_ > 0")
    layer.check(filter_group > 0 and num_output % filter_group == 0, "num_output_ % filter_group_")
    layer.check(k > 0 and kd > 0 and s > 0 and ts > 0, "a zero kernel or stride")
    channels = x.shape[1]
    shapes: list[tuple[int, ...]] = [(num_output, channels, kd, k, k)]
    if bias_term:
        shapes.append((1, 1, 1, 1, num_output))
    blobs = layer.weights(*shapes)
    bias = blobs[1].reshape(-1) if bias_term else None
    try:
        top = im2col_conv(x, blobs[0], bias, (ts, s, s), (tp, p, p), (1, 1, 1), 1)
    except ValueError as exc:
        raise layer.fail(f"Caffe aborts here: {exc}") from None
    return [top]


@register("Deconvolution3D")
def deconvolution3d(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """facebook/C3D @ 71336a22, C3D-v1.0/src/caffe/layers/deconvolution3d_layer.cpp
    (Deconvolution3DLayer::SetUp, Forward_cpu) and C3D-v1.1's (LayerSetUp, Forward_cpu), with
    src/caffe/util/vol2col.cpp (col2vol_cpu).

    SetUp: output (L - 1) ts - 2 tp + kd, (H - 1) s - 2 p + k, (W - 1) s - 2 p + k; weight
    (C, num_output, kd, k, k), bias (1, 1, 1, 1, num_output); bias_term is read from
    convolution_param in both versions (v1.1 reads every other field from
    convolution3d_param). Forward_cpu per sample: col = W^T x (K = num_output kd k k rows, N =
    L H W columns), col2vol (zero the output, then add column row c = ((o * kd + l) * k + h) *
    k + w at output (l ts - tp + l, h s - p + h, w s - p + w) where inside), plus bias.

    col2vol with the output size above is col2im_cpu over three axes with dilation 1 (same row
    order, the scatter-add of every column inside the output), so this is `col2im_deconv`
    (BVLC's Deconvolution above) with group 1: the same arithmetic, not the emitters'.
    """
    x = bottoms[0]
    layer.check(x.ndim == 5, f"C3D reads shape(0..4) of a 5-D blob, got {x.shape}")
    num_output, k, kd, s, ts, p, tp, _, _ = _c3d_params(layer)
    bias_term = bool(layer.param.convolution_param.bias_term)
    layer.check(num_output > 0, "Check failed: num_output_ > 0")
    layer.check(k > 0 and kd > 0 and s > 0 and ts > 0, "a zero kernel or stride")
    channels = x.shape[1]
    shapes: list[tuple[int, ...]] = [(channels, num_output, kd, k, k)]
    if bias_term:
        shapes.append((1, 1, 1, 1, num_output))
    blobs = layer.weights(*shapes)
    bias = blobs[1].reshape(-1) if bias_term else None
    try:
        top = col2im_deconv(x, blobs[0], bias, (ts, s, s), (tp, p, p), (1, 1, 1), 1)
    except ValueError as exc:
        raise layer.fail(f"Caffe aborts here: {exc}") from None
    return [top]


@register("NdConvolution", bottoms=(1, None), tops=(1, None))
def nd_convolution(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """chuckcho/video-caffe @ fc232b3e, src/caffe/layers/cudnn_ndconv_layer.cpp
    (CudnnNdConvolutionLayer::LayerSetUp, Reshape, compute_output_shape) and
    cudnn_ndconv_layer.cu (Forward_gpu: cudnnConvolutionForward per bottom and group, then
    cudnnAddTensor of the bias); Forward_cpu is NOT_IMPLEMENTED.

    LayerSetUp: CHECK has kernel_shape; pad_shape / stride_shape with as many dims when given
    (defaults 0 and 1); weight (num_output, C / group, *kernel), bias (num_output,);
    CHECK C % group == 0, num_output % group == 0. compute_output_shape: `(in + 2 p - k) / s
    + 1` per axis, kept only when above 1 (a size-1 axis would leave the top's rank unlike the
    bottom's cuDNN descriptor: refused here, as is a kernel beyond the padded input, which
    cuDNN rejects). cuDNN's convolution is a cross-correlation over zero padding, per group:
    the arithmetic of BVLC's im2col convolution, so this is `im2col_conv` above with dilation 1.
    """
    p = layer.param.convolution_param
    x0 = bottoms[0]
    layer.check(len(bottoms) == len(layer.tops), "one top per bottom")
    channels = x0.shape[1]
    kernel, stride, pad = nd_shape_fields(layer, p, x0.ndim - 2)
    num_output, group = int(p.num_output), int(p.group)
    layer.check(num_output > 0, "num_output_ > 0")
    layer.check(group > 0 and channels % group == 0, "channels_ % group_ == 0")
    layer.check(num_output % group == 0, "Number of output should be multiples of group.")
    for size, k, s, q in zip(x0.shape[2:], kernel, stride, pad, strict=True):
        layer.check(size + 2 * q >= k, "the kernel is larger than the padded input")
        layer.check((size + 2 * q - k) // s + 1 > 1, "an output axis of size 1 is dropped")
    shapes: list[tuple[int, ...]] = [(num_output, channels // group, *kernel)]
    if p.bias_term:
        shapes.append((num_output,))
    blobs = layer.weights(*shapes)
    bias = blobs[1] if p.bias_term else None
    tops = []
    for x in bottoms:
        layer.check(x.shape == x0.shape, "Inputs must have same shape.")
        tops.append(
            im2col_conv(x, blobs[0], bias, tuple(stride), tuple(pad), (1,) * len(kernel), group)
        )
    return tops
