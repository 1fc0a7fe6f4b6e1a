"""Layers that move values without arithmetic: Concat, Slice, Split, Silence, Flatten, Reshape,
Crop, Tile, SSD's Permute and ShuffleNet's ShuffleChannel.

Memory: the layers registered with `shares_memory=True` return a view of their bottom where
Caffe's top shares the bottom's data (`Blob::ShareData`); see SHARES_MEMORY in the package.

Sources: BVLC caffe 9b89154, src/caffe/layers/concat_layer.cpp (LayerSetUp, Reshape: one
bottom shares), slice_layer.cpp (Reshape: one top shares), split_layer.cpp (Forward_cpu:
every top shares), silence_layer.cpp, flatten_layer.cpp (Reshape, Forward_cpu: shares; no
in-place), reshape_layer.cpp (LayerSetUp, Reshape: shares; no in-place), crop_layer.cpp
(Reshape, crop_copy), tile_layer.cpp. weiliu89/caffe (ssd) permute_layer.cpp (LayerSetUp,
Forward_cpu: shares when the order is the identity). farmingyard/ShuffleNet
shuffle_channel_layer.cpp (Reshape: a 4-D top; Resize_cpu: block (i, j) of a group x (C / group)
grid goes to (j, i)).
"""

from __future__ import annotations

import itertools

import numpy as np

from protocaffe.verify.reference.params import as_f32, canonical_axis, count, legacy_shape
from protocaffe.verify.reference.registry import Array, RefLayer, register


def _deprecated_axis(layer: RefLayer, p: object, old: str, shape: tuple[int, ...]) -> int:
    """`axis`, or the deprecated unsigned `concat_dim` / `slice_dim` (not both)."""
    has = p.HasField  # type: ignore[attr-defined]
    layer.check(
        not (has("axis") and has(old)), f"Either axis or {old} should be specified; not both."
    )
    if has(old):
        axis = int(getattr(p, old))
        layer.check(axis < len(shape), f"{old} {axis} out of range for the blob {shape}")
        return axis
    return canonical_axis(layer, int(p.axis), shape)  # type: ignore[attr-defined]


@register("Concat", bottoms=(1, None), shares_memory=True)
def concat(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    axis = _deprecated_axis(layer, layer.param.concat_param, "concat_dim", bottoms[0].shape)
    first = bottoms[0].shape
    for i, b in enumerate(bottoms[1:], start=1):
        layer.check(b.ndim == len(first), "All inputs must have the same #axes.")
        layer.check(
            all(b.shape[j] == first[j] for j in range(len(first)) if j != axis),
            f"All inputs must have the same shape, except at concat_axis: bottom[0] {first}, "
            f"bottom[{i}] {b.shape}",
        )
    if len(bottoms) == 1:
        return [bottoms[0]]  # ShareData
    return [np.concatenate([as_f32(b) for b in bottoms], axis=axis)]


@register("Slice", tops=(1, None), shares_memory=True)
def slice_(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.slice_param
    x = bottoms[0]
    axis = _deprecated_axis(layer, p, "slice_dim", x.shape)
    size = x.shape[axis]
    n = len(layer.tops)
    points = [int(v) for v in p.slice_point]
    if points:
        layer.check(len(points) == n - 1, f"{len(points)} slice points for {n} tops")
        layer.check(n <= size, f"{n} tops but only {size} values on the slice axis")
        prev, sizes = 0, []
        for point in points:
            layer.check(point > prev, f"slice points must increase: {points}")
            sizes.append(point - prev)
            prev = point
        sizes.append(size - prev)
        layer.check(sizes[-1] >= 0, f"slice point {prev} is past the axis' {size} values")
    else:
        layer.check(
            size % n == 0,
            f"Number of top blobs ({n}) should evenly divide input slice axis ({size})",
        )
        sizes = [size // n] * n
    if n == 1:
        return [x]  # ShareData
    bounds = np.cumsum([0, *sizes])
    index: list[slice] = [slice(None)] * x.ndim
    tops = []
    for a, b in itertools.pairwise(bounds):
        index[axis] = slice(int(a), int(b))
        tops.append(np.array(x[tuple(index)], dtype=np.float32, order="C"))
    return tops


@register("Split", tops=(1, None), shares_memory=True, in_place=False)
def split(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    return [bottoms[0]] * len(layer.tops)  # every top shares the bottom's data


@register("Silence", bottoms=(1, None), tops=(0, 0))
def silence(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    return []


@register("Flatten", shares_memory=True, in_place=False)
def flatten(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.flatten_param
    x = bottoms[0]
    start = canonical_axis(layer, int(p.axis), x.shape)
    end = canonical_axis(layer, int(p.end_axis), x.shape)
    shape = x.shape[:start] + (count(x.shape, start, end + 1),) + x.shape[end + 1 :]
    return [x.reshape(shape)]


@register("Reshape", shares_memory=True, in_place=False)
def reshape(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.reshape_param
    x = bottoms[0]
    dims = [int(d) for d in p.shape.dim]
    copy_axes = [i for i, d in enumerate(dims) if d == 0]
    inferred = [i for i, d in enumerate(dims) if d == -1]
    layer.check(
        len(inferred) <= 1,
        "new shape contains multiple -1 dims; at most a single (1) value of -1 may be specified",
    )
    constant = count(tuple(d for d in dims if d not in (0, -1)))
    ndim = x.ndim
    axis = int(p.axis)
    start = axis if axis >= 0 else ndim + axis + 1
    layer.check(0 <= start <= ndim, f"axis {axis} out of range for {ndim}-D input blob")
    num_axes = int(p.num_axes)
    layer.check(num_axes >= -1, "num_axes must be >= 0, or -1 for all")
    end = ndim if num_axes == -1 else start + num_axes
    layer.check(end <= ndim, "end_axis = axis + num_axes is out of range")
    shape = list(x.shape[:start]) + dims + list(x.shape[end:])
    for i in copy_axes:
        layer.check(
            ndim > start + i,
            "new shape contains a 0, but there was no corresponding bottom axis to copy",
        )
        shape[start + i] = x.shape[start + i]
    if inferred:
        explicit = constant * count(x.shape, 0, start) * count(x.shape, end)
        for i in copy_axes:
            explicit *= shape[start + i]
        layer.check(
            explicit != 0 and x.size % explicit == 0,
            f"bottom count ({x.size}) must be divisible by the product of the specified "
            f"dimensions ({explicit})",
        )
        shape[start + inferred[0]] = x.size // explicit
    layer.check(all(d >= 0 for d in shape), f"negative dimension in {tuple(shape)}")
    layer.check(count(tuple(shape)) == x.size, "output count must match input count")
    return [x.reshape(shape)]


@register("Crop", bottoms=(2, 2))
def crop(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.crop_param
    x, ref = bottoms
    layer.check(x.ndim == ref.ndim, f"bottoms {x.shape} and {ref.shape} differ in rank")
    start = canonical_axis(layer, int(p.axis), x.shape)
    offsets = [int(v) for v in p.offset]
    cropped = x.ndim - start
    if len(offsets) > 1:
        layer.check(
            len(offsets) == cropped,
            f"number of offset values specified must be equal to the number of dimensions "
            f"following axis ({len(offsets)} vs {cropped})",
        )
    index = []
    for i in range(x.ndim):
        if i < start:
            index.append(slice(None))
            continue
        offset = 0 if not offsets else offsets[0] if len(offsets) == 1 else offsets[i - start]
        layer.check(
            x.shape[i] - offset >= ref.shape[i],
            f"invalid crop parameters in dimension: {i}",
        )
        index.append(slice(offset, offset + ref.shape[i]))
    return [np.array(x[tuple(index)], dtype=np.float32, order="C")]


@register("Tile")
def tile(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.tile_param
    x = bottoms[0]
    axis = canonical_axis(layer, int(p.axis), x.shape)
    tiles = int(p.tiles)
    layer.check(p.HasField("tiles"), "tiles must be specified.")
    layer.check(tiles > 0, "Number of tiles must be positive.")
    return [tile_values(x, axis, tiles)]


def tile_values(x: Array, axis: int, tiles: int) -> Array:
    """For each outer index, the block of count(axis) values repeated `tiles` times."""
    outer = count(x.shape, 0, axis)
    blocks = as_f32(x).reshape(outer, -1)
    shape = list(x.shape)
    shape[axis] *= tiles
    return np.tile(blocks, (1, tiles)).reshape(shape)


@register("Permute", shares_memory=True)
def permute(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    x = bottoms[0]
    orders: list[int] = []
    for order in layer.param.permute_param.order:
        layer.check(order < x.ndim, "order should be less than the input dimension.")
        layer.check(order not in orders, "there are duplicate orders")
        orders.append(int(order))
    orders += [i for i in range(x.ndim) if i not in orders]
    if orders == list(range(x.ndim)):
        return [x]  # ShareData
    return [np.ascontiguousarray(x.transpose(orders))]


@register("ShuffleChannel")
def shuffle_channel(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    x = bottoms[0]
    group = int(layer.param.shuffle_channel_param.group)
    layer.check(group > 0, "group must be greater than 0")
    n, c, h, w = legacy_shape(layer, x.shape)
    layer.check(c % group == 0, "Wrong group size.")
    return [shuffle_values(x.reshape(n, c, h, w), group)]


def shuffle_values(x: Array, group: int) -> Array:
    """Channel i * (C / group) + j goes to j * group + i."""
    n, c = x.shape[:2]
    grid = as_f32(x).reshape(n, group, c // group, -1)
    return np.ascontiguousarray(grid.transpose(0, 2, 1, 3)).reshape(x.shape)
