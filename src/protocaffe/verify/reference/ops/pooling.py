"""Pooling (MAX with an optional argmax top, AVE, global) and Fast R-CNN's ROIPooling.

Sources:
- BVLC caffe 9b89154, src/caffe/layers/pooling_layer.cpp: LayerSetUp (the accepted spellings
  and their CHECKs), Reshape (output size: float ceil or floor, then, when either pad is
  non-zero, drop a last window that starts in the padding, on both axes), Forward_cpu (MAX:
  first strict maximum in row-major window order from -FLT_MAX, mask h * W + w; AVE: the sum
  over the window clipped to the input, divided by the window size clipped at H + pad).
- The `ceil_mode` dialect (weiliu89/caffe ssd branch and the forks built on it, such as the
  oracle's brocolli-caffe: `optional bool ceil_mode = 13 [default = true]`): true is CEIL.
  Where both are given, `round_mode` wins, as in the oracle build.
- rbgirshick/caffe-fast-rcnn (faster-rcnn branch), src/caffe/layers/roi_pooling_layer.cpp
  Forward_cpu.
"""

from __future__ import annotations

import math

import numpy as np

from protocaffe.verify.reference.params import FLT_MAX, as_f32, f32, legacy_shape
from protocaffe.verify.reference.registry import Array, RefLayer, register

MAX, AVE, STOCHASTIC = 0, 1, 2
CEIL = 0


def pooled_size(
    size: int, kernel: int, stride: int, pad: int, ceil: bool, padded: bool, extra: int = 0
) -> int:
    """PoolingLayer::Reshape for one axis; `padded` is (pad_h || pad_w), not this axis' pad."""
    rounding = math.ceil if ceil else math.floor
    out = int(rounding(f32(size + 2 * pad - kernel) / f32(stride))) + 1 + extra
    if padded and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pool2d(
    x: Array,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pad: tuple[int, int],
    average: bool,
    ceil: bool = True,
    extra: int = 0,
) -> tuple[Array, Array]:
    """Caffe's 2-D pooling of x (N, C, H, W): (top, mask). The mask (MAX only; zeros for AVE)
    holds the flat index h * W + w of each window's maximum, -1 for a window with no input.
    `extra` rows and columns are added before the padding check (ChenYingpeng/darknet2caffe
    caffe_layers/pooling_layer/pooling_layer.cpp, PoolingLayer::Reshape)."""
    n, c, height, width = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    padded = bool(ph or pw)
    oh = pooled_size(height, kh, sh, ph, ceil, padded, extra)
    ow = pooled_size(width, kw, sw, pw, ceil, padded, extra)
    if oh <= 0 or ow <= 0:
        raise ValueError(f"the output size {oh}x{ow} is not positive")
    # Windows start at i * stride - pad; pad the input so that every window is in range.
    below = max(0, (oh - 1) * sh - ph + kh - height)
    right = max(0, (ow - 1) * sw - pw + kw - width)
    fill = 0.0 if average else np.nan  # NaN never compares greater: it is outside the window
    padded_x = np.pad(as_f32(x), ((0, 0), (0, 0), (ph, below), (pw, right)), constant_values=fill)
    mask = np.zeros((n, c, oh, ow), np.float32)
    if average:
        top = np.zeros((n, c, oh, ow), np.float32)
    else:
        top = np.full((n, c, oh, ow), -FLT_MAX, np.float32)
        mask[...] = -1
    starts_h = np.arange(oh) * sh - ph
    starts_w = np.arange(ow) * sw - pw
    for a in range(kh):
        for b in range(kw):
            window = padded_x[:, :, a : a + sh * (oh - 1) + 1 : sh, b : b + sw * (ow - 1) + 1 : sw]
            if average:
                top += window
            else:
                better = window > top
                top = np.where(better, window, top)
                index = ((starts_h + a)[:, None] * width + (starts_w + b)[None, :]).astype(
                    np.float32
                )
                mask = np.where(better, index, mask)
    if average:
        size_h = np.minimum(starts_h + kh, height + ph) - starts_h
        size_w = np.minimum(starts_w + kw, width + pw) - starts_w
        pool_size = (size_h[:, None] * size_w[None, :]).astype(np.float32)
        # A window that starts at or past H + pad has a size <= 0: Caffe's 0 / 0 is NaN and
        # 0 / negative is -0; the same division here gives the same.
        with np.errstate(invalid="ignore", divide="ignore"):
            top = top / pool_size
    return top.astype(np.float32), mask


def _pool_params(
    layer: RefLayer, height: int, width: int
) -> tuple[int, tuple[int, int], tuple[int, int], tuple[int, int], bool]:
    """(method, kernel, stride, pad, ceil) after PoolingLayer::LayerSetUp's checks."""
    p = layer.param.pooling_param
    has = p.HasField
    if p.global_pooling:
        layer.check(
            not (has("kernel_size") or has("kernel_h") or has("kernel_w")),
            "With Global_pooling: true Filter size cannot specified",
        )
    else:
        layer.check(
            (not has("kernel_size")) != (not (has("kernel_h") and has("kernel_w"))),
            "Filter size is kernel_size OR kernel_h and kernel_w; not both",
        )
        layer.check(
            has("kernel_size") or (has("kernel_h") and has("kernel_w")),
            "For non-square filters both kernel_h and kernel_w are required.",
        )
    layer.check(
        (not has("pad") and has("pad_h") and has("pad_w"))
        or (not has("pad_h") and not has("pad_w")),
        "pad is pad OR pad_h and pad_w are required.",
    )
    layer.check(
        (not has("stride") and has("stride_h") and has("stride_w"))
        or (not has("stride_h") and not has("stride_w")),
        "Stride is stride OR stride_h and stride_w are required.",
    )
    if p.global_pooling:
        kernel = (height, width)
    elif has("kernel_size"):
        kernel = (int(p.kernel_size), int(p.kernel_size))
    else:
        kernel = (int(p.kernel_h), int(p.kernel_w))
    layer.check(min(kernel) > 0, "Filter dimensions cannot be zero.")
    pad = (int(p.pad_h), int(p.pad_w)) if has("pad_h") else (int(p.pad), int(p.pad))
    stride = (
        (int(p.stride_h), int(p.stride_w)) if has("stride_h") else (int(p.stride), int(p.stride))
    )
    if p.global_pooling:
        layer.check(
            pad == (0, 0) and stride == (1, 1),
            "With Global_pooling: true; only pad = 0 and stride = 1",
        )
    layer.check(min(stride) > 0, "stride must be positive")  # Caffe would divide by zero
    method = int(p.pool)
    if pad != (0, 0):
        layer.check(method in (MAX, AVE), "Padding implemented only for average and max pooling.")
        layer.check(
            pad[0] < kernel[0] and pad[1] < kernel[1], f"pad {pad} must be < kernel {kernel}"
        )
    ceil = p.round_mode == CEIL if has("round_mode") else bool(p.ceil_mode)
    return method, kernel, stride, pad, ceil


@register("Pooling", tops=(1, 2))
def pooling(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    x = bottoms[0]
    layer.check(
        x.ndim == 4, "Input must have 4 axes, corresponding to (num, channels, height, width)"
    )
    method, kernel, stride, pad, ceil = _pool_params(layer, x.shape[2], x.shape[3])
    if method == STOCHASTIC:
        raise layer.fail(
            "Caffe aborts here: STOCHASTIC pooling has no CPU forward (NOT_IMPLEMENTED)"
        )
    layer.check(len(layer.tops) == 1 or method == MAX, "only MAX pooling has a second (mask) top")
    extra = 0
    if "darknet-pool" in layer.dialects:
        # ChenYingpeng/darknet2caffe: `if ((kernel_h_ - stride_h_) % 2 == 1)` both sizes grow
        # (C++'s % of a negative difference is never 1); the fork always rounds up.
        rise = kernel[0] - stride[0]
        extra = 1 if rise > 0 and rise % 2 == 1 else 0
        ceil = True
    try:
        top, mask = pool2d(x, kernel, stride, pad, method == AVE, ceil, extra)
    except ValueError as exc:
        raise layer.fail(f"Caffe aborts here: {exc}") from None
    return [top, mask][: len(layer.tops)]


def _round_half_away(value: np.float32) -> int:
    """C's round() of a float."""
    return int(math.copysign(math.floor(abs(float(value)) + 0.5), float(value)))


def roi_pool(features: Array, rois: Array, pooled_h: int, pooled_w: int, scale: float) -> Array:
    """caffe-fast-rcnn roi_pooling_layer.cpp Forward_cpu: each ROI row (batch, x1, y1, x2, y2)
    is scaled and rounded, split into pooled_h x pooled_w bins (floor/ceil of float products),
    and each bin is max-pooled from -FLT_MAX (an empty bin is 0)."""
    _, channels, height, width = features.shape
    rows = rois.reshape(rois.shape[0], -1)
    out = np.zeros((rows.shape[0], channels, pooled_h, pooled_w), np.float32)
    scale32 = f32(scale)
    for r, roi in enumerate(rows.astype(np.float32)):
        batch = int(roi[0])
        if not 0 <= batch < features.shape[0]:
            raise ValueError(f"ROI {r} names image {batch} of {features.shape[0]}")
        sw, sh, ew, eh = (_round_half_away(f32(v * scale32)) for v in roi[1:5])
        roi_h, roi_w = max(eh - sh + 1, 1), max(ew - sw + 1, 1)
        bin_h = f32(roi_h) / f32(pooled_h)
        bin_w = f32(roi_w) / f32(pooled_w)
        for i in range(pooled_h):
            hs = min(max(math.floor(f32(i) * bin_h) + sh, 0), height)
            he = min(max(math.ceil(f32(i + 1) * bin_h) + sh, 0), height)
            for j in range(pooled_w):
                ws = min(max(math.floor(f32(j) * bin_w) + sw, 0), width)
                we = min(max(math.ceil(f32(j + 1) * bin_w) + sw, 0), width)
                if he <= hs or we <= ws:
                    continue
                window = features[batch, :, hs:he, ws:we]
                best = np.where(np.isnan(window), -np.inf, window).max(axis=(1, 2))
                out[r, :, i, j] = np.maximum(best, -FLT_MAX)
    return out


@register("ROIPooling", bottoms=(2, 2))
def roi_pooling(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """caffe-fast-rcnn ROIPoolingLayer (LayerSetUp: pooled_h, pooled_w > 0)."""
    p = layer.param.roi_pooling_param
    layer.check(p.pooled_h > 0, "pooled_h must be > 0")
    layer.check(p.pooled_w > 0, "pooled_w must be > 0")
    features, rois = bottoms
    legacy_shape(layer, features.shape)
    layer.check(features.ndim == 4, f"expects 4-D features, got {features.shape}")
    try:
        return [roi_pool(features, rois, int(p.pooled_h), int(p.pooled_w), float(p.spatial_scale))]
    except ValueError as exc:
        raise layer.fail(f"Caffe aborts here: {exc}") from None


@register("SPP")
def spp(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """BVLC spp_layer.cpp: level l is a PoolingLayer with kernel = stride = ceil(size / 2^l)
    (in double) and pad (kernel * 2^l - size + 1) / 2 per axis (GetPoolingParam), the pooling
    param's round mode left at its default (CEIL); the levels are flattened and concatenated,
    level 0 first; with pyramid_height 1 the one pooling's top is the layer's (LayerSetUp)."""
    p = layer.param.spp_param
    x = bottoms[0]
    layer.check(
        x.ndim == 4, "Input must have 4 axes, corresponding to (num, channels, height, width)"
    )
    height = int(p.pyramid_height)
    layer.check(height > 0, "a pyramid of height 0 concatenates no bottoms")
    method = int(p.pool)
    if method == STOCHASTIC:
        raise layer.fail(
            "Caffe aborts here: STOCHASTIC pooling has no CPU forward (NOT_IMPLEMENTED)"
        )
    levels = []
    for level in range(height):
        bins = 2**level
        geometry = []
        for size in x.shape[2:]:
            kernel = math.ceil(size / bins)
            geometry.append((kernel, (kernel * bins - size + 1) // 2))
        (kh, ph), (kw, pw) = geometry
        layer.check(ph < kh and pw < kw, f"pad {(ph, pw)} must be < kernel {(kh, kw)}")
        top, _ = pool2d(x, (kh, kw), (kh, kw), (ph, pw), method == AVE, ceil=True)
        if height == 1:
            return [top]
        levels.append(top.reshape(top.shape[0], -1))
    return [np.concatenate(levels, axis=1)]
