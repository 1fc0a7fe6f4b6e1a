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
- 3-D pooling. yulequan's 3D-Caffe (as in DlutMedimgGroup/MouseCTSegmentation @ 80ef4503),
  3D-Caffe/src/caffe/layers/pooling_layer.cpp and pooling_nd_layer.cpp: LayerSetUp (kernel,
  pad, stride once or once per spatial axis; pad < kernel), Reshape (float ceil, then when any
  pad is non-zero the BVLC last-window rule on every axis), Forward_cpu's 3-axis loops (MAX:
  strict > from -FLT_MAX, mask (h * W + w) * D + d; AVE: the window clipped at size + pad gives
  the divisor, then the sum over the part inside the input). BVLC's Pooling refuses a 5-D
  input; a 5-D `Pooling` here follows the fork.
- facebook/C3D @ 71336a22, C3D-v1.1/src/caffe/layers/pool3d_layer.cpp (and C3D-v1.0's):
  LayerSetUp (ceil sizes, no last-window rule, no temporal pad; a pad needs AVE) and
  Forward_cpu (MAX windows clipped to the input; AVE divisor (hend - hstart)(wend - wstart)
  (lend - lstart) before clipping, with hend = min(hstart + k, H + pad)).
"""

from __future__ import annotations

import math

import numpy as np

from protocaffe.verify.reference.params import (
    FLT_MAX,
    as_f32,
    f32,
    legacy_shape,
    nd_shape_fields,
)
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


def _pooling_5d(layer: RefLayer, x: Array) -> list[Array]:
    """3D-Caffe's Pooling over a 5-D blob (its pooling_param repeats kernel_size, pad and
    stride; protocaffe's schema has BVLC's single values, one for all three axes)."""
    p = layer.param.pooling_param
    has = p.HasField
    layer.check(
        not any(has(f) for f in ("kernel_h", "kernel_w", "pad_h", "pad_w", "stride_h", "stride_w")),
        "kernel_h & kernel_w can only be used for 2D pooling.",
    )
    if p.global_pooling:
        layer.check(
            not has("kernel_size"), "With Global_pooling: true Filter size cannot specified."
        )
        kernel = tuple(x.shape[2:])
        layer.check(p.pad == 0 and p.stride == 1, "With Global_pooling: true; pad = 0, stride = 1")
    else:
        layer.check(has("kernel_size") and p.kernel_size > 0, "Filter dimensions must be nonzero.")
        kernel = (int(p.kernel_size),) * 3
    return _pool3d_caffe(layer, x, int(p.pool), kernel, (int(p.stride),) * 3, (int(p.pad),) * 3)


@register("Pooling", tops=(1, 2))
def pooling(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    x = bottoms[0]
    if x.ndim == 5:
        return _pooling_5d(layer, x)
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


def pool3d(
    x: Array,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    pad: tuple[int, ...],
    average: bool,
    clip_last: bool = True,
) -> tuple[Array, Array]:
    """The 3-axis loops of 3D-Caffe's PoolingLayer::Forward_cpu (clip_last: its Reshape's
    last-window rule; C3D's Pooling3D has none) over x (N, C, D, H, W): (top, mask)."""
    n, c = x.shape[:2]
    sizes = x.shape[2:]
    padded = any(p != 0 for p in pad)
    out = []
    for size, k, s, p in zip(sizes, kernel, stride, pad, strict=True):
        o = math.ceil(f32(size + 2 * p - k) / f32(s)) + 1
        if clip_last and padded and (o - 1) * s >= size + p:
            o -= 1
        out.append(o)
    if min(out) <= 0:
        raise ValueError(f"the output size {tuple(out)} is not positive")
    xs = as_f32(x)
    top = np.zeros((n, c, *out), np.float32)
    mask = np.full((n, c, *out), -1.0, np.float32)
    for index in np.ndindex(*out):
        starts = [i * s - p for i, s, p in zip(index, stride, pad, strict=True)]
        ends = [
            min(b + k, size + p) for b, k, size, p in zip(starts, kernel, sizes, pad, strict=True)
        ]
        pool_size = math.prod(e - b for b, e in zip(starts, ends, strict=True))
        lo = [max(b, 0) for b in starts]
        hi = [min(e, size) for e, size in zip(ends, sizes, strict=True)]
        if not average:
            # The MAX loop clips the end at the size itself (no pad term).
            hi = [min(b + k, size) for b, k, size in zip(starts, kernel, sizes, strict=True)]
        window = xs[:, :, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        if average:
            with np.errstate(invalid="ignore", divide="ignore"):
                total = window.sum(axis=(2, 3, 4), dtype=np.float32)
                top[(slice(None), slice(None)) + index] = total / np.float32(pool_size)
            continue
        best = np.full((n, c), -FLT_MAX, np.float32)
        where = np.full((n, c), -1.0, np.float32)
        for d in range(lo[0], hi[0]):
            for h in range(lo[1], hi[1]):
                for w in range(lo[2], hi[2]):
                    value = xs[:, :, d, h, w]
                    better = value > best
                    best = np.where(better, value, best)
                    flat = np.float32((d * sizes[1] + h) * sizes[2] + w)
                    where = np.where(better, flat, where)
        at = (slice(None), slice(None)) + index
        top[at] = best
        mask[at] = where
    return top, mask


def _per_axis(
    layer: RefLayer, name: str, values: list[int], n: int, default: int
) -> tuple[int, ...]:
    layer.check(
        len(values) in (0, 1, n),
        f"{name} must be specified once, or once per spatial dimension ({name} specified "
        f"{len(values)} times; {n} spatial dims)",
    )
    if not values:
        return (default,) * n
    return tuple(values) * n if len(values) == 1 else tuple(values)


def _pool3d_caffe(
    layer: RefLayer,
    x: Array,
    method: int,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    pad: tuple[int, ...],
) -> list[Array]:
    layer.check(all(p < k for k, p in zip(kernel, pad, strict=True)), f"pad {pad} < kernel")
    layer.check(min(stride) > 0, "Stride dimensions must be nonzero.")
    if method == STOCHASTIC:
        raise layer.fail("Caffe aborts here: STOCHASTIC pooling has no CPU forward")
    layer.check(len(layer.tops) == 1 or method == MAX, "only MAX pooling has a second (mask) top")
    try:
        top, mask = pool3d(x, kernel, stride, pad, method == AVE)
    except ValueError as exc:
        raise layer.fail(f"Caffe aborts here: {exc}") from None
    return [top, mask][: len(layer.tops)]


@register("PoolingND", tops=(1, 2))
def pooling_nd(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """3D-Caffe's PoolingND (pooling_nd_layer.cpp), 3 spatial axes."""
    x = bottoms[0]
    p = layer.param.pooling_nd_param
    layer.check(p.axis == 1, "only channel axis 1 is transcribed")
    layer.check(x.ndim == 5, f"3 spatial axes are transcribed, got {x.shape}")
    n = 3
    if p.global_pooling:
        layer.check(
            len(p.kernel_size) == 0, "With Global_pooling: true Filter size cannot specified."
        )
        kernel = tuple(x.shape[2:])
    else:
        kernel = _per_axis(layer, "kernel_size", list(p.kernel_size), n, 0)
        layer.check(
            len(p.kernel_size) > 0 and min(kernel) > 0, "Filter dimensions must be nonzero."
        )
    pad = _per_axis(layer, "pad", list(p.pad), n, 0)
    stride = _per_axis(layer, "stride", list(p.stride), n, 1)
    return _pool3d_caffe(layer, x, int(p.pool), kernel, stride, pad)


@register("Pooling3D")
def pooling3d(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """C3D's Pooling3D (pool3d_layer.cpp): pooling3d_param (v1.1), or pooling_param's
    kernel_depth and temporal_stride (v1.0's V1 POOLING3D)."""
    x = bottoms[0]
    layer.check(x.ndim == 5, f"Pooling3D reads shape(1..4) of a 5-D blob, got {x.shape}")
    q = (
        layer.param.pooling3d_param
        if layer.param.HasField("pooling3d_param")
        else (layer.param.pooling_param)
    )
    method, size, stride, pad = int(q.pool), int(q.kernel_size), int(q.stride), int(q.pad)
    depth, temporal = int(q.kernel_depth), int(q.temporal_stride)
    if pad != 0:
        layer.check(method == AVE, "Padding implemented only for average pooling.")
    if method == STOCHASTIC:
        raise layer.fail("Caffe aborts here: STOCHASTIC pooling: NOT_IMPLEMENTED")
    layer.check(size > 0 and depth > 0 and stride > 0 and temporal > 0, "a zero kernel or stride")
    try:
        top, _ = pool3d(
            x, (depth, size, size), (temporal, stride, stride), (0, pad, pad), method == AVE, False
        )
    except ValueError as exc:
        raise layer.fail(f"Caffe aborts here: {exc}") from None
    return [top]


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


@register("NdPooling")
def nd_pooling(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """chuckcho/video-caffe @ fc232b3e, src/caffe/layers/cudnn_ndpooling_layer.cpp
    (CudnnNdPoolingLayer::LayerSetUp, Reshape, compute_output_shape) and
    include/caffe/util/cudnn.hpp (createNdPoolingDesc): the forward is cuDNN's
    (Forward_cpu is NOT_IMPLEMENTED).

    compute_output_shape per axis: `ceil(float(in + 2 p - k) / s) + 1`, then, where THAT axis's
    pad > 0, one less if `(dim - 1) * s >= in + p`; axes with dim < 1 are left out of the top
    (refused here: no output). cuDNN pools window i over [i s - p, i s - p + k): MAX over the
    positions inside the input (CUDNN_POOLING_MAX ignores padding); AVE
    (CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING) sums those positions and divides by the whole
    kernel. That divisor is transcribed only where the window lies inside the padded input, and
    only windows holding an input position (elsewhere cuDNN's documentation does not settle
    the value): other geometries are refused."""
    x = as_f32(bottoms[0])
    p = layer.param.pooling_param
    spatial = x.ndim - 2
    layer.check(int(p.pool) in (MAX, AVE), "Unknown pooling method.")
    kernel, stride, pad = nd_shape_fields(layer, p, spatial)
    if p.global_pooling:
        kernel = list(x.shape[2:])
    layer.check(all(s > 0 for s in stride), "stride_shape dims must be positive")
    out = []
    for size, k, s, q in zip(x.shape[2:], kernel, stride, pad, strict=True):
        dim = math.ceil(f32(size + 2 * q - k) / f32(s)) + 1
        if q > 0 and (dim - 1) * s >= size + q:
            dim -= 1
        layer.check(dim >= 1, f"no output on an axis of size {size} (kernel {k})")
        layer.check((dim - 1) * s - q < size, "a last window holds no input position")
        if int(p.pool) == AVE:
            layer.check(
                (dim - 1) * s + k <= size + 2 * q,
                "an AVE window overhangs the padded input (cuDNN's divisor not transcribed)",
            )
        out.append(dim)
    top = np.zeros((*x.shape[:2], *out), np.float32)
    divisor = np.float32(math.prod(kernel))
    for index in np.ndindex(*out):
        lo = [max(i * s - q, 0) for i, s, q in zip(index, stride, pad, strict=True)]
        hi = [
            min(i * s - q + k, size)
            for i, s, q, k, size in zip(index, stride, pad, kernel, x.shape[2:], strict=True)
        ]
        key = (slice(None), slice(None), *(slice(a, b) for a, b in zip(lo, hi, strict=True)))
        window = x[key].reshape(*x.shape[:2], -1)
        at = (slice(None), slice(None), *index)
        if int(p.pool) == MAX:
            top[at] = window.max(axis=2)
        else:
            top[at] = window.sum(axis=2, dtype=np.float32) / divisor
    return [top]
