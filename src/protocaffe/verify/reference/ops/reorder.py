"""Fork layers that move values: Transpose, Reverse (OCR forks), Flip, Reorg (YOLOv2).

Sources (transcribed loop by loop, index arithmetic as in the C++):
- senlinuc/caffe_ocr @ 81642f61, src/caffe/layers/transpose_layer.cpp (Reshape, permute,
  transpose_cpu) and reverse_layer.cpp (ReverseLayer constructor and Forward_cpu).
- happynear/caffe-windows @ 967eedf2, src/caffe/layers/flip_layer.cpp (Forward_cpu).
- gklz1982/caffe-yolov2 @ ebb27029, include/caffe/layers/reorg_layer.hpp (reorg_cpu, the
  8-argument overload) and src/caffe/layers/reorg_layer.cpp (LayerSetUp, Forward_cpu).
"""

from __future__ import annotations

import numpy as np

from protocaffe.verify.reference.params import as_f32, count
from protocaffe.verify.reference.registry import Array, RefLayer, register


@register("Transpose", in_place=False)
def transpose(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """transpose_cpu: element `index` goes to sum_i from_inds[dim[i]] * top_counts[i]."""
    x = as_f32(bottoms[0])
    dims = [int(d) for d in layer.param.transpose_param.dim]
    layer.check(x.ndim == len(dims), "the dimensions of the top blob and bottom blob must be equal")
    layer.check(sorted(dims) == list(range(x.ndim)), f"dim {dims} is not a permutation")
    shape = [x.shape[d] for d in dims]
    bottom_counts = [count(x.shape, i + 1) for i in range(x.ndim)]
    top_counts = [count(tuple(shape), i + 1) for i in range(x.ndim)]
    flat = x.reshape(-1)
    top = np.empty(flat.size, np.float32)
    index = np.arange(flat.size)
    to_index = np.zeros(flat.size, np.int64)
    rest = index.copy()
    from_inds = []
    for i in range(x.ndim):
        from_inds.append(rest // bottom_counts[i])
        rest = rest % bottom_counts[i]
    for i in range(x.ndim):
        to_index += from_inds[dims[i]] * top_counts[i]
    top[to_index] = flat
    return [top.reshape(shape)]


@register("Reverse", in_place=False)
def reverse(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """Forward_cpu: `copy_amount` contiguous values at a time, written back to front within
    each of the `num_fix` outer blocks."""
    x = as_f32(bottoms[0])
    axis = int(layer.param.reverse_param.axis)
    layer.check(axis >= 0, "axis must be >= 0")
    layer.check(axis < x.ndim, "Axis must be less than the number of axis for reversing")
    copy_amount = 1 if axis + 1 == x.ndim else count(x.shape, axis + 1)
    num_fix = x.size // count(x.shape, axis) if axis > 0 else 1
    steps = x.shape[axis]
    src = x.reshape(-1)
    top = np.empty_like(src)
    offset = 0
    for fix in range(num_fix):
        target = (fix + 1) * copy_amount * steps - copy_amount
        for _ in range(steps):
            top[target : target + copy_amount] = src[offset : offset + copy_amount]
            offset += copy_amount
            target -= copy_amount
    return [top.reshape(x.shape)]


@register("Flip")
def flip(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """top[n, c, h, w] = bottom[n, c, flip_h ? H-1-h : h, flip_w ? W-1-w : w]."""
    x = as_f32(bottoms[0])
    layer.check(x.ndim == 4, f"expects (num, channels, height, width), got {x.shape}")
    p = layer.param.flip_param
    rows = np.arange(x.shape[2])
    cols = np.arange(x.shape[3])
    if p.flip_height:
        rows = x.shape[2] - 1 - rows
    if p.flip_width:
        cols = x.shape[3] - 1 - cols
    return [np.ascontiguousarray(x[:, :, rows][:, :, :, cols])]


def reorg_values(x: Array, stride: int, reverse: bool) -> Array:
    """ReorgLayer::Forward_cpu = reorg_cpu(bottom, W, H, C, N, stride, forward=reverse, top),
    indices over the bottom's (N, C, H, W)."""
    n_, c_, h_, w_ = x.shape
    out_c = c_ // (stride * stride)
    t_w, t_h = w_ * stride, h_ * stride
    n, c, h, w = np.meshgrid(
        np.arange(n_), np.arange(c_), np.arange(h_), np.arange(w_), indexing="ij"
    )
    bottom_index = w + w_ * (h + h_ * (c + c_ * n))
    c2 = c % out_c
    offset = c // out_c
    w2 = w * stride + offset % stride
    h2 = h * stride + offset // stride
    top_index = w2 + t_w * (h2 + t_h * (c2 + out_c * n))
    src = x.reshape(-1)
    top = np.empty(src.size, np.float32)
    if reverse:  # forward = true: top[top_index] = bottom[bottom_index]
        top[top_index.reshape(-1)] = src[bottom_index.reshape(-1)]
    else:  # top[bottom_index] = bottom[top_index]
        top[bottom_index.reshape(-1)] = src[top_index.reshape(-1)]
    return top


@register("Reorg", in_place=False)
def reorg(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    x = as_f32(bottoms[0])
    p = layer.param.reorg_param
    layer.check(p.HasField("stride"), "Reorg Layer needs stride param.")
    layer.check(x.ndim == 4, f"expects (num, channels, height, width), got {x.shape}")
    stride, reverse_ = int(p.stride), bool(p.reverse)
    n, c, h, w = x.shape
    if reverse_:
        shape = (n, c // (stride * stride), h * stride, w * stride)
    else:
        shape = (n, c * stride * stride, h // stride, w // stride)
    # The C++ writes N*C*H*W values into the top; a smaller top is a buffer overrun.
    layer.check(
        count(shape) == x.size and c % (stride * stride) == 0,
        f"the top {shape} cannot hold the {x.size} values reorg_cpu writes",
    )
    return [reorg_values(x, stride, reverse_).reshape(shape)]
