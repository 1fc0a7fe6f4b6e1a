"""Layers that move values without arithmetic, beyond those in structure.py: BVLC's
BatchReindex, Filter and Im2col, the oracle build's Unsqueeze, Pad and PixelShuffle; and BVLC's
Parameter (its blob as its top, include/caffe/layers/parameter_layer.hpp).

Sources:
- BVLC caffe 9b89154, src/caffe/layers/batch_reindex_layer.cpp (Reshape: a 1-axis index
  blob; check_batch_reindex: 0 <= idx < N on the float values; Forward_cpu: static_cast<int>),
  filter_layer.cpp (LayerSetUp: one top per bottom but the selector; Reshape: a selector of
  singleton axes but the first, non-zero items kept in order; Forward_cpu),
  im2col_layer.cpp (LayerSetUp: the kernel/stride/pad/dilation spellings and CHECKs; Reshape:
  (in + 2 pad - extent) / stride + 1 in C++ integer division) and src/caffe/util/im2col.cpp
  (im2col_cpu: channel c * kh * kw + i * kw + j, zero outside the image).
- brocolli-caffe 9.0.2 (the oracle's build), src/caffe/layers/unsqueeze.cpp (LayerSetUp),
  pad_layer.cpp (LayerSetUp: no in-place; Reshape; Forward_cpu: the crop when all four pads
  are negative, else the body, then CONSTANT / REPLICATE / REFLECT filling, columns of the body
  rows first, then whole rows), pixelshuffle_layer.cpp (Reshape: CHECK C % r == 0, C / r^2
  channels out; Forward_cpu).
"""

from __future__ import annotations

import numpy as np

from protocaffe.verify.reference.params import as_f32, trunc_div
from protocaffe.verify.reference.registry import Array, RefLayer, register


@register("Unsqueeze")
def unsqueeze(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.unsqueeze_param
    layer.check(p.HasField("dim"), "dim must be set.")
    x = as_f32(bottoms[0])
    index = int(p.dim)
    if index < 0:
        index += x.ndim + 1
    layer.check(0 <= index <= x.ndim, f"dim:( {index}) overtake the dims of bottom.")
    return [x.reshape(x.shape[:index] + (1,) + x.shape[index:]).copy()]


@register("Pad", in_place=False)
def pad(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.pad_param
    x = as_f32(bottoms[0])
    layer.check(
        x.ndim == 4, f"the reference pads 4-D blobs (Forward_cpu indexes N, C, H, W), got {x.shape}"
    )
    up, down, left, right = int(p.pad_u), int(p.pad_d), int(p.pad_l), int(p.pad_r)
    n, c, height, width = x.shape
    top_h, top_w = height + up + down, width + left + right
    layer.check(top_h >= 0 and top_w >= 0, "top_shape must >= 0!")
    if up < 0 and down < 0 and left < 0 and right < 0:
        return [x[:, :, -up : -up + top_h, -left : -left + top_w].copy()]
    if min(up, down, left, right) < 0:
        raise layer.fail(
            "pads of mixed signs: Caffe's Forward_cpu writes outside the top blob (undefined)"
        )
    top = np.zeros((n, c, top_h, top_w), np.float32)
    top[:, :, up : up + height, left : left + width] = x
    kind = int(p.pad_type)
    if kind == 0:  # CONSTANT
        value = np.float32(p.pad_value)
        top[:, :, up : top_h - down, :left] = value
        top[:, :, up : top_h - down, top_w - right :] = value
        top[:, :, :up, :] = value
        top[:, :, top_h - down :, :] = value
    elif kind == 1:  # REPLICATE
        body = slice(up, top_h - down)
        left_value = top[:, :, body, left : left + 1].copy()
        right_value = top[:, :, body, top_w - 1 - right : top_w - right].copy()
        top[:, :, body, :left] = left_value
        top[:, :, body, top_w - right :] = right_value
        for h in range(up):
            top[:, :, h, :] = top[:, :, up, :]
        for h in range(down):
            top[:, :, top_h - down + h, :] = top[:, :, top_h - 1 - down, :]
    else:  # REFLECT
        if max(up, down) >= height or max(left, right) >= width:
            raise layer.fail(
                "REFLECT pads as large as the input: Caffe reads outside the image (undefined)"
            )
        body = slice(up, top_h - down)
        for dst, src in zip(range(left - 1, -1, -1), range(left + 1, 2 * left + 1), strict=True):
            top[:, :, body, dst] = top[:, :, body, src]
        for k in range(right):
            dst = top_w - right + k
            top[:, :, body, dst] = top[:, :, body, dst - 2 - 2 * k]
        for dst, src in zip(range(up - 1, -1, -1), range(up + 1, 2 * up + 1), strict=True):
            top[:, :, dst, :] = top[:, :, src, :]
        for k in range(down):
            dst = top_h - down + k
            top[:, :, dst, :] = top[:, :, dst - 2 - 2 * k, :]
    return [top]


@register("PixelShuffle")
def pixel_shuffle(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.pixelshuffle_param
    layer.check(p.HasField("upscale_factor"), "upscale_factor is required")
    r = int(p.upscale_factor)
    x = as_f32(bottoms[0])
    layer.check(r > 0, "upscale_factor must be positive (Caffe divides by it)")
    layer.check(x.ndim == 4, f"Forward_cpu indexes 4-D blobs, got {x.shape}")
    n, channels, height, width = x.shape
    layer.check(
        channels % r == 0,
        f"Check failed: bottom[0]->shape(1) % upscale_factor_ == 0 ({channels} % {r})",
    )
    out_channels = channels // (r * r)
    top = np.empty((n, out_channels, height * r, width * r), np.float32)
    for q_p in range(out_channels):
        for sh in range(r):
            for sw in range(r):
                q = q_p * r * r + sh * r + sw
                top[:, q_p, sh::r, sw::r] = x[:, q]
    return [top]


@register("BatchReindex", bottoms=(2, 2))
def batch_reindex(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    x, index = as_f32(bottoms[0]), as_f32(bottoms[1])
    layer.check(index.ndim == 1, f"the index blob {index.shape} must have 1 axis")
    layer.check(bool((index >= 0).all()), "Index specified for reindex layer was negative.")
    layer.check(
        bool((index < x.shape[0]).all()),
        "Index specified for reindex layer was greater than batch size.",
    )
    return [x[index.astype(np.int64)]]  # static_cast<int>: toward zero


@register("Filter", bottoms=(2, None), tops=(1, None))
def filter_(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    layer.check(len(layer.tops) == len(bottoms) - 1, "one top per bottom but the selector")
    selector = as_f32(bottoms[-1])
    layer.check(
        all(d == 1 for d in selector.shape[1:]),
        "Selector blob dimensions must be singletons (1), except the first",
    )
    for b in bottoms[:-1]:
        layer.check(
            b.shape[0] == selector.shape[0],
            "Each bottom should have the same 0th dimension as the selector blob",
        )
    kept = [i for i in range(selector.shape[0]) if selector.reshape(-1)[i] != 0]
    return [as_f32(b)[kept] for b in bottoms[:-1]]


def _im2col_field(layer: RefLayer, name: str, default: int) -> tuple[int, int]:
    p = layer.param.convolution_param
    field = "kernel_size" if name == "kernel" else name
    repeated = [int(v) for v in getattr(p, field)]
    if name != "dilation" and (p.HasField(f"{name}_h") or p.HasField(f"{name}_w")):
        layer.check(not repeated, f"Either {field} or {name}_h/w should be specified; not both.")
        return int(getattr(p, f"{name}_h")), int(getattr(p, f"{name}_w"))
    allowed = (1, 2) if name == "kernel" else (0, 1, 2)
    layer.check(
        len(repeated) in allowed,
        f"{field} must be specified once, or once per spatial dimension",
    )
    if not repeated:
        return default, default
    return repeated[0], repeated[1 if len(repeated) == 2 else 0]


@register("Im2col")
def im2col(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    x = as_f32(bottoms[0])
    p = layer.param.convolution_param
    layer.check(
        int(p.axis) in (1, -3) and x.ndim == 4, "the reference runs 2-D Im2col on (N, C, H, W)"
    )
    kernel = _im2col_field(layer, "kernel", 0)
    stride = _im2col_field(layer, "stride", 1)
    pad_ = _im2col_field(layer, "pad", 0)
    dilation = _im2col_field(layer, "dilation", 1)
    layer.check(min(kernel) > 0, "Filter dimensions must be nonzero.")
    layer.check(min(stride) > 0, "Stride dimensions must be nonzero.")
    n, channels, height, width = x.shape
    out = [
        trunc_div(size + 2 * pd - (d * (k - 1) + 1), s) + 1
        for size, pd, d, k, s in zip((height, width), pad_, dilation, kernel, stride, strict=True)
    ]
    layer.check(min(out) >= 0, f"negative output size {out}")
    kh, kw = kernel
    top = np.zeros((n, channels * kh * kw, out[0], out[1]), np.float32)
    for i in range(kh):
        rows = -pad_[0] + i * dilation[0] + np.arange(out[0]) * stride[0]
        row_ok = (rows >= 0) & (rows < height)
        for j in range(kw):
            cols = -pad_[1] + j * dilation[1] + np.arange(out[1]) * stride[1]
            col_ok = (cols >= 0) & (cols < width)
            taps = x[:, :, np.clip(rows, 0, height - 1)][:, :, :, np.clip(cols, 0, width - 1)]
            inside = (row_ok[:, None] & col_ok[None, :]).astype(np.float32)
            top[:, i * kw + j :: kh * kw] = taps * inside
    return [top]


@register("Parameter", bottoms=(0, 0))
def parameter(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """Its one blob, of parameter_param.shape (parameter_layer.hpp)."""
    shape = tuple(int(d) for d in layer.param.parameter_param.shape.dim)
    (blob,) = layer.weights(shape)
    return [blob.copy()]
