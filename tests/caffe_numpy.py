"""Independent numpy implementations of Caffe layers, written from BVLC Caffe's C++ source.

Used where OpenCV 4.x lacks a layer or a parameter, or computes something other than Caffe.
Each function follows the loops of the Caffe file named in its docstring, not protocaffe's code.
"""

from __future__ import annotations

import math

import numpy as np

FLT_MAX = float(np.finfo(np.float32).max)


def pooling(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pad: tuple[int, int],
    average: bool,
    ceil: bool = True,
) -> np.ndarray:
    """src/caffe/layers/pooling_layer.cpp: Reshape (output size) and Forward_cpu (MAX, AVE)."""
    n, c, height, width = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    rnd = math.ceil if ceil else math.floor
    out_h = int(rnd(np.float32(height + 2 * ph - kh) / np.float32(sh))) + 1
    out_w = int(rnd(np.float32(width + 2 * pw - kw) / np.float32(sw))) + 1
    if ph or pw:
        if (out_h - 1) * sh >= height + ph:
            out_h -= 1
        if (out_w - 1) * sw >= width + pw:
            out_w -= 1
    top = np.full((n, c, out_h, out_w), 0.0 if average else -FLT_MAX, dtype=np.float64)
    for i in range(out_h):
        for j in range(out_w):
            hstart, wstart = i * sh - ph, j * sw - pw
            if average:
                hend, wend = min(hstart + kh, height + ph), min(wstart + kw, width + pw)
                pool_size = (hend - hstart) * (wend - wstart)
                hstart, wstart = max(hstart, 0), max(wstart, 0)
                hend, wend = min(hend, height), min(wend, width)
                window = x[:, :, hstart:hend, wstart:wend]
                # A window that starts at H + pad (pad = 0, kernel < stride) has pool_size 0:
                # Caffe divides 0 by 0 there and writes NaN.
                with np.errstate(invalid="ignore", divide="ignore"):
                    total = window.sum(axis=(2, 3), dtype=np.float64)
                    top[:, :, i, j] = total / pool_size
            else:
                hend, wend = min(hstart + kh, height), min(wstart + kw, width)
                hstart, wstart = max(hstart, 0), max(wstart, 0)
                window = x[:, :, hstart:hend, wstart:wend]
                if window.size:
                    top[:, :, i, j] = np.maximum(window.max(axis=(2, 3)), -FLT_MAX)
    return top.astype(np.float32)


def deconvolution(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    stride: tuple[int, int],
    pad: tuple[int, int],
    dilation: tuple[int, int],
    group: int,
) -> np.ndarray:
    """src/caffe/layers/deconv_layer.cpp + base_conv_layer.cpp: the backward of convolution
    (col2im), i.e. every input pixel scatters weight * value into the output.
    Weight layout (C_in, C_out / group, kh, kw)."""
    n, c_in, height, width = x.shape
    _, per_group, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    out_h = sh * (height - 1) + dh * (kh - 1) + 1 - 2 * ph
    out_w = sw * (width - 1) + dw * (kw - 1) + 1 - 2 * pw
    c_out = per_group * group
    full = np.zeros((n, c_out, out_h + 2 * ph + sh * kh, out_w + 2 * pw + sw * kw), np.float64)
    in_per_group = c_in // group
    for ci in range(c_in):
        g = ci // in_per_group
        for a in range(kh):
            for b in range(kw):
                contribution = np.einsum("nhw,o->nohw", x[:, ci], weight[ci, :, a, b])
                rows = slice(a * dh, a * dh + sh * (height - 1) + 1, sh)
                cols = slice(b * dw, b * dw + sw * (width - 1) + 1, sw)
                full[:, g * per_group : (g + 1) * per_group, rows, cols] += contribution
    out = full[:, :, ph : ph + out_h, pw : pw + out_w]
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out.astype(np.float32)


def bnll(x: np.ndarray) -> np.ndarray:
    """src/caffe/layers/bnll_layer.cpp: x > 0 ? x + log(1 + exp(-x)) : log(1 + exp(x))."""
    x = x.astype(np.float64)
    positive = x + np.log1p(np.exp(-np.abs(x)))
    negative = np.log1p(np.exp(np.minimum(x, 0)))
    return np.where(x > 0, positive, negative).astype(np.float32)


def lrn(x: np.ndarray, size: int, alpha: float, beta: float, k: float, within: bool) -> np.ndarray:
    """src/caffe/layers/lrn_layer.cpp. ACROSS_CHANNELS: scale = k + alpha / size * (sum of x^2
    over `size` channels, zero-padded by (size - 1) / 2); WITHIN_CHANNEL: Power(x, 2) -> AVE
    Pooling (kernel size, pad (size - 1) / 2, stride 1) -> Power(shift 1, scale alpha), so k is
    not used. top = x * scale^-beta."""
    x64 = x.astype(np.float64)
    half = (size - 1) // 2
    if within:
        squares = pooling(x * x, (size, size), (1, 1), (half, half), average=True)
        scale = 1.0 + np.float32(alpha) * squares.astype(np.float64)
    else:
        channels = x.shape[1]
        padded = np.pad(x64 * x64, ((0, 0), (half, half), (0, 0), (0, 0)))
        window = sum(padded[:, c : c + channels] for c in range(size))
        scale = k + np.float32(alpha) / size * window
    return (x64 * scale ** -np.float64(np.float32(beta))).astype(np.float32)


def mvn(x: np.ndarray, across_channels: bool, normalize_variance: bool, eps: float) -> np.ndarray:
    """src/caffe/layers/mvn_layer.cpp: per sample (and per channel unless across_channels):
    x - mean, then divided by sqrt(mean((x - mean)^2)) + eps."""
    n = x.shape[0] if across_channels else x.shape[0] * x.shape[1]
    rows = x.reshape(n, -1).astype(np.float64)
    centered = rows - rows.mean(axis=1, keepdims=True)
    if normalize_variance:
        std = np.sqrt((centered**2).mean(axis=1, keepdims=True))
        centered = centered / (std + np.float32(eps))
    return centered.reshape(x.shape).astype(np.float32)


def argmax(x: np.ndarray, top_k: int, out_max_val: bool, axis: int | None) -> np.ndarray:
    """src/caffe/layers/argmax_layer.cpp. Each row of `dim` values is partially sorted by
    (value, index), largest first (so ties put the larger index first). With an axis the top
    holds indices, or values when out_max_val; without one the top is (N, 1 or 2, top_k, 1...)
    and out_max_val stores the indices, then the values."""
    shape = list(x.shape)
    if axis is not None:
        axis %= x.ndim
        dim = shape[axis]
        axis_dist = int(np.prod(shape[axis + 1 :], dtype=np.int64))
        top_shape = shape[:]
        top_shape[axis] = top_k
    else:
        dim = int(np.prod(shape[1:], dtype=np.int64))
        axis_dist = 1
        top_shape = [1] * max(3, x.ndim)
        top_shape[0] = shape[0]
        top_shape[2] = top_k
        if out_max_val:
            top_shape[1] = 2
    flat = x.reshape(-1)
    top = np.zeros(int(np.prod(top_shape)), np.float32)
    for i in range(x.size // dim):
        pairs = [
            (flat[(i // axis_dist * dim + j) * axis_dist + i % axis_dist], j) for j in range(dim)
        ]
        pairs.sort(reverse=True)
        for j in range(top_k):
            if axis is None and out_max_val:
                top[2 * i * top_k + j] = pairs[j][1]
                top[2 * i * top_k + top_k + j] = pairs[j][0]
            elif axis is None:
                top[i * top_k + j] = pairs[j][1]
            else:
                index = (i // axis_dist * top_k + j) * axis_dist + i % axis_dist
                top[index] = pairs[j][0] if out_max_val else pairs[j][1]
    return top.reshape(top_shape)


def reduction(x: np.ndarray, operation: str, axis: int, coeff: float) -> np.ndarray:
    """src/caffe/layers/reduction_layer.cpp: every axis from `axis` on is reduced; MEAN is SUM
    with coeff / dim."""
    axis %= x.ndim
    rows = x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1).astype(np.float64)
    dim = rows.shape[1]
    values = {
        "SUM": rows.sum(axis=1),
        "MEAN": rows.sum(axis=1),
        "ASUM": np.abs(rows).sum(axis=1),
        "SUMSQ": (rows * rows).sum(axis=1),
    }[operation]
    scale = np.float32(coeff) / (dim if operation == "MEAN" else 1)
    return (values * scale).reshape(x.shape[:axis]).astype(np.float32)


def tile(x: np.ndarray, axis: int, tiles: int) -> np.ndarray:
    """src/caffe/layers/tile_layer.cpp: for each outer index, copy the block of count(axis)
    values `tiles` times."""
    axis %= x.ndim
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    blocks = x.reshape(outer, -1)
    out_shape = list(x.shape)
    out_shape[axis] *= tiles
    return np.concatenate([blocks] * tiles, axis=1).reshape(out_shape)
