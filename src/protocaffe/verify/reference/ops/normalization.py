"""Normalising layers: Softmax, LRN, BatchNorm, MVN, the forks' BN, and SSD's Normalize.

Sources:
- BVLC caffe 9b89154, src/caffe/layers/softmax_layer.cpp (Forward_cpu: subtract the max over
  the axis, exp, divide by the sum), lrn_layer.cpp (CrossChannelForward_cpu: a running sum of
  alpha / size * x^2 over a zero-padded channel window, from k; WithinChannelForward: Power x^2
  -> AVE Pooling (size, pad (size - 1) / 2, stride 1) -> Power (1 + alpha * s) ^ -beta ->
  product), batch_norm_layer.cpp (LayerSetUp: blobs (C,), (C,), (1,); TEST uses the stored
  statistics divided by the factor blob (0 when it is 0) unless use_global_stats is false;
  Forward_cpu), mvn_layer.cpp (Reshape: the top is 4-D (num, channels, height, width);
  Forward_cpu: eps added to the standard deviation).
- alexgkendall/caffe-segnet (segnet-cleaned) and TimoSaemann/caffe-enet, bn_layer.cpp: blobs
  scale and shift (1, C, 1, 1); INFERENCE is x * scale + shift, LEARN normalises with the
  batch's mean and E(x^2) - E(x)^2 and var_eps_ = 1e-9.
- hszhao/PSPNet, src/caffe/layers/bn_layer.cpp: blobs slope, bias, mean, variance (1, C, 1, 1)
  (brocolli-caffe, the oracle's build, stores them as (1, C)); TEST: (x - mean) *
  (var + eps) ^ -0.5 * slope + bias.
- brocolli-caffe 9.0.2 (the oracle's build), src/caffe/layers/batch_norm_kyle_layer.cpp
  (LayerSetUp: BatchNorm's three blobs, then alpha and beta (C,) when use_alpha_beta;
  Forward_cpu: BatchNorm's forward, then top * alpha + beta per channel).
- weiliu89/caffe (ssd), src/caffe/layers/normalize_layer.cpp (LayerSetUp: the scale blob is
  0-D when channel_shared, else (C,); Forward_cpu: x / sqrt(sum x^2 + eps) per sample
  (across_spatial) or per position, then the scale).
"""

from __future__ import annotations

import numpy as np

from protocaffe.verify.reference.ops.pooling import pool2d
from protocaffe.verify.reference.params import as_f32, canonical_axis, f32, legacy_shape
from protocaffe.verify.reference.registry import Array, RefLayer, register


@register("Softmax")
def softmax(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    x = as_f32(bottoms[0])
    axis = canonical_axis(layer, int(layer.param.softmax_param.axis), x.shape)
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return [e / e.sum(axis=axis, keepdims=True, dtype=np.float32)]


ACROSS_CHANNELS, WITHIN_CHANNEL = 0, 1


def lrn_values(x: Array, size: int, alpha: float, beta: float, k: float, within: bool) -> Array:
    """LRN of a 4-D x, in Caffe's float32 steps."""
    x = as_f32(x)
    n, channels, height, width = x.shape
    a, b = f32(alpha), f32(beta)
    pre_pad = (size - 1) // 2
    if within:
        squares = x * x
        pooled, _ = pool2d(squares, (size, size), (1, 1), (pre_pad, pre_pad), average=True)
        scale = pooled * a + f32(1)
        return np.asarray(x * np.power(scale, -b), dtype=np.float32)
    padded = np.zeros((n, channels + size - 1, height, width), np.float32)
    padded[:, pre_pad : pre_pad + channels] = x * x
    alpha_over_size = a / f32(size)
    scale = np.empty_like(x)
    running = np.full((n, height, width), f32(k), np.float32)
    for c in range(size):
        running = running + alpha_over_size * padded[:, c]
    scale[:, 0] = running
    for c in range(1, channels):
        running = running + alpha_over_size * padded[:, c + size - 1]
        running = running - alpha_over_size * padded[:, c - 1]
        scale[:, c] = running
    return np.asarray(x * np.power(scale, -b), dtype=np.float32)


@register("LRN")
def lrn(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.lrn_param
    x = bottoms[0]
    size = int(p.local_size)
    layer.check(size % 2 == 1, "LRN only supports odd values for local_size")
    layer.check(
        x.ndim == 4, "Input must have 4 axes, corresponding to (num, channels, height, width)"
    )
    layer.check(p.norm_region in (ACROSS_CHANNELS, WITHIN_CHANNEL), "Unknown normalization region.")
    within = p.norm_region == WITHIN_CHANNEL
    return [lrn_values(x, size, float(p.alpha), float(p.beta), float(p.k), within)]


@register("BatchNorm")
def batch_norm(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.batch_norm_param
    x = as_f32(bottoms[0])
    channels = 1 if x.ndim == 1 else x.shape[1]
    mean_blob, var_blob, factor = layer.weights((channels,), (channels,), (1,))
    # BVLC master also aborts when a `param` gives these blobs a non-zero lr_mult; older
    # Caffe and the oracle's build do not, and it does not change the forward: not checked.
    eps = f32(p.eps)
    use_global = bool(p.use_global_stats) if p.HasField("use_global_stats") else True
    shape = (1, channels) + (1,) * max(0, x.ndim - 2)
    rows = x.reshape(x.shape[0], channels, -1)
    if use_global:
        scale_factor = f32(0) if factor[0] == 0 else f32(1) / factor[0]
        mean = scale_factor * mean_blob
        var = scale_factor * var_blob
        centered = x - mean.reshape(shape)
    else:
        mean = rows.mean(axis=(0, 2), dtype=np.float64).astype(np.float32)
        centered = x - mean.reshape(shape)
        c_rows = centered.reshape(rows.shape).astype(np.float64)
        var = (c_rows * c_rows).mean(axis=(0, 2)).astype(np.float32)
    std = np.sqrt(var + eps)
    with np.errstate(divide="ignore", invalid="ignore"):  # eps 0 and no variance: 0/0 as Caffe
        return [centered / std.reshape(shape)]


@register("MVN")
def mvn(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.mvn_param
    n, c, h, w = legacy_shape(layer, bottoms[0].shape)
    top = mvn_values(bottoms[0], bool(p.across_channels), bool(p.normalize_variance), float(p.eps))
    return [top.reshape(n, c, h, w)]


def mvn_values(x: Array, across_channels: bool, normalize_variance: bool, eps: float) -> Array:
    """Per sample (and per channel unless across_channels): x - mean, then divided by
    sqrt(mean((x - mean)^2)) + eps (eps outside the root, as mvn_layer.cpp adds it)."""
    rows_n = x.shape[0] if across_channels else x.shape[0] * (x.shape[1] if x.ndim > 1 else 1)
    rows = as_f32(x).reshape(rows_n, -1)
    mean = rows.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    centered = rows - mean
    if normalize_variance:
        c64 = centered.astype(np.float64)
        var = (c64 * c64).mean(axis=1, keepdims=True).astype(np.float32)
        centered = centered / (np.sqrt(var) + f32(eps))
    return np.asarray(centered.reshape(x.shape), dtype=np.float32)


LEARN, INFERENCE = 0, 1
SEGNET_EPS = 1e-9  # caffe-segnet bn_layer.cpp: var_eps_ = 1e-9, not a parameter


def bn_segnet(x: Array, scale_: Array, shift: Array, learn: bool) -> Array:
    """caffe-segnet / caffe-enet BN Forward_cpu (scale and shift of shape (1, C, 1, 1))."""
    x = as_f32(x)
    c = x.shape[1]
    scale_, shift = as_f32(scale_).reshape(1, c, 1, 1), as_f32(shift).reshape(1, c, 1, 1)
    if not learn:
        return x * scale_ + shift
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(0, 2, 3), keepdims=True).astype(np.float32)
    ex2 = (x64 * x64).mean(axis=(0, 2, 3), keepdims=True).astype(np.float32)
    var = ex2 - mean * mean
    std = np.power(var + f32(SEGNET_EPS), f32(0.5))
    return np.asarray((x - mean) / std * scale_ + shift, dtype=np.float32)


def bn_pspnet(x: Array, slope: Array, bias_: Array, mean: Array, var: Array, eps: float) -> Array:
    """PSPNet BN Forward_cpu in TEST: (x - mean) * (var + eps)^-0.5 * slope + bias."""
    x = as_f32(x)
    c = x.shape[1]
    inv_std = np.power(as_f32(var).reshape(1, c, 1, 1) + f32(eps), f32(-0.5))
    centered = x - as_f32(mean).reshape(1, c, 1, 1)
    top: Array = centered * inv_std * as_f32(slope).reshape(1, c, 1, 1)
    return top + as_f32(bias_).reshape(1, c, 1, 1)


@register("BN", tops=(1, 3))
def bn(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """Two forks' `BN`, told apart by the caffemodel: two blobs (scale, shift) is SegNet's,
    four (slope, bias, mean, variance) PSPNet's. A fork's own caffe.proto decides in Caffe;
    the blob count is what the layer needs in either."""
    x = as_f32(bottoms[0])
    n, c, h, w = legacy_shape(layer, x.shape)
    p = layer.param.bn_param
    if layer.blob_count == 4:
        layer.check(len(layer.tops) == 1, "PSPNet's BN has one top")
        first = layer.source[0] if layer.source else None
        flat = first is not None and first.ndim == 2  # brocolli-caffe's (1, C) layout
        slope, shift_, mean, var = layer.weights(*[(1, c) if flat else (1, c, 1, 1)] * 4)
        return [bn_pspnet(x, slope, shift_, mean, var, float(p.eps)).reshape(x.shape)]
    scale_, shift = layer.weights((1, c, 1, 1), (1, c, 1, 1))
    x4 = x.reshape(n, c, h, w)
    learn = p.bn_mode == LEARN
    top = bn_segnet(x4, scale_, shift, learn)
    outs = [top]
    if len(layer.tops) > 1:  # the batch mean and variance (LEARN computes them)
        x64 = x4.astype(np.float64)
        mean = x64.mean(axis=(0, 2, 3)).astype(np.float32)
        ex2 = (x64 * x64).mean(axis=(0, 2, 3)).astype(np.float32)
        outs += [mean.reshape(1, c, 1, 1), (ex2 - mean * mean).reshape(1, c, 1, 1)]
    return outs[: len(layer.tops)]


def normalize_values(
    x: Array, scale_: Array, across_spatial: bool, channel_shared: bool, eps: float
) -> Array:
    x = as_f32(x)
    n, c = x.shape[:2]
    rows = x.reshape(n, c, -1)
    squares = (rows.astype(np.float64)) ** 2
    e = f32(eps)
    if across_spatial:
        norm = np.power(squares.sum(axis=(1, 2)).astype(np.float32) + e, f32(0.5))
        top = rows * (f32(1) / norm).reshape(n, 1, 1)
    else:
        norm = np.power(squares.sum(axis=1).astype(np.float32) + e, f32(0.5))
        top = rows / norm.reshape(n, 1, -1)
    factor = as_f32(scale_).reshape(1, 1, 1) if channel_shared else as_f32(scale_).reshape(1, c, 1)
    return np.asarray((top * factor).reshape(x.shape), dtype=np.float32)


@register("Normalize")
def normalize(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.norm_param
    x = bottoms[0]
    layer.check(x.ndim >= 2, "Number of axes of bottom blob must be >=2.")
    n, c, h, w = legacy_shape(layer, x.shape)
    (blob,) = layer.weights(() if p.channel_shared else (c,))
    top = normalize_values(
        x.reshape(n, c, h, w), blob, p.across_spatial, p.channel_shared, float(p.eps)
    )
    return [top.reshape(x.shape)]


@register("BatchNormKyle")
def batch_norm_kyle(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.batch_norm_param
    x = as_f32(bottoms[0])
    layer.check(x.ndim >= 2, f"Reshape reads the channel axis of {x.shape}")
    channels = x.shape[1]
    shapes: list[tuple[int, ...]] = [(channels,), (channels,), (1,)]
    if p.use_alpha_beta:
        shapes += [(channels,), (channels,)]
    blobs = layer.weights(*shapes)
    use_global = bool(p.use_global_stats) if p.HasField("use_global_stats") else True
    shape = (1, channels) + (1,) * (x.ndim - 2)
    if use_global:
        factor = blobs[2][0]
        scale_factor = f32(0) if factor == 0 else f32(1) / factor
        mean, var = scale_factor * blobs[0], scale_factor * blobs[1]
        centered = x - mean.reshape(shape)
    else:  # gemv sums per (sample, channel) row, then over the batch
        rows = x.reshape(x.shape[0], channels, -1).astype(np.float64)
        mean = rows.mean(axis=(0, 2)).astype(np.float32)
        centered = x - mean.reshape(shape)
        c_rows = centered.reshape(rows.shape).astype(np.float64)
        var = (c_rows * c_rows).mean(axis=(0, 2)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):  # eps 0 and no variance: 0/0 as Caffe
        top = centered / np.sqrt(var + f32(p.eps)).reshape(shape)
    if p.use_alpha_beta:
        top = top * blobs[3].reshape(shape) + blobs[4].reshape(shape)
    return [top]
