"""ArgMax and Reduction.

Sources: BVLC caffe 9b89154, src/caffe/layers/argmax_layer.cpp (LayerSetUp checks; Reshape:
the top shape; Forward_cpu: per row a partial_sort of (value, index) pairs with std::greater,
so equal values put the larger index first) and reduction_layer.cpp (Reshape: every axis from
`axis` on is reduced, MEAN divides coeff by the reduced count; Forward_cpu).
"""

from __future__ import annotations

import numpy as np

from protocaffe.verify.reference.params import as_f32, canonical_axis, count, f32
from protocaffe.verify.reference.registry import Array, RefLayer, register


def argmax_values(x: Array, top_k: int, out_max_val: bool, axis: int | None) -> Array:
    """ArgMax of x with Caffe's top shape and tie order (axis None: per sample, flattened)."""
    shape = x.shape
    if axis is not None:
        axis %= x.ndim
        outer, dim, inner = count(shape, 0, axis), shape[axis], count(shape, axis + 1)
        top_shape = list(shape)
        top_shape[axis] = top_k
    else:
        outer, dim, inner = shape[0], count(shape, 1), 1
        top_shape = [1] * max(3, x.ndim)
        top_shape[0] = shape[0]
        top_shape[2] = top_k
        if out_max_val:
            top_shape[1] = 2
    rows = as_f32(x).reshape(outer, dim, inner)
    # Larger values first; among equal ones the larger index first: reverse the axis and sort
    # stably by the negated value.
    reversed_rows = rows[:, ::-1, :]
    order = np.argsort(-reversed_rows, axis=1, kind="stable")[:, :top_k, :]
    values = np.take_along_axis(reversed_rows, order, axis=1)
    indices = (dim - 1 - order).astype(np.float32)
    if axis is None and out_max_val:
        top = np.concatenate([indices.reshape(outer, top_k), values.reshape(outer, top_k)], axis=1)
    elif out_max_val:
        top = values
    else:
        top = indices
    return np.ascontiguousarray(top, dtype=np.float32).reshape(top_shape)


@register("ArgMax")
def argmax(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.argmax_param
    x = bottoms[0]
    top_k = int(p.top_k)
    layer.check(top_k >= 1, "top k must not be less than 1.")
    axis: int | None = None
    if p.HasField("axis"):
        axis = canonical_axis(layer, int(p.axis), x.shape)
        layer.check(
            top_k <= x.shape[axis],
            "top_k must be less than or equal to the dimension of the axis.",
        )
    else:
        layer.check(
            top_k <= count(x.shape, 1),
            "top_k must be less than or equal to the dimension of the flattened bottom blob "
            "per instance.",
        )
    return [argmax_values(x, top_k, bool(p.out_max_val), axis)]


SUM, ASUM, SUMSQ, MEAN = 1, 2, 3, 4


def reduction_values(x: Array, operation: int | str, axis: int, coeff: float) -> Array:
    """ReductionLayer::Forward_cpu (operation: 1-4 or SUM, ASUM, SUMSQ, MEAN)."""
    if isinstance(operation, str):
        operation = {"SUM": SUM, "ASUM": ASUM, "SUMSQ": SUMSQ, "MEAN": MEAN}[operation]
    axis %= x.ndim
    rows = as_f32(x).reshape(count(x.shape, 0, axis), -1)
    dim = rows.shape[1]
    r64 = rows.astype(np.float64)
    if operation in (SUM, MEAN):
        values = r64.sum(axis=1)
    elif operation == ASUM:
        values = np.abs(r64).sum(axis=1)
    else:
        values = (r64 * r64).sum(axis=1)
    scale = f32(coeff)
    if operation == MEAN:
        scale = f32(scale / f32(dim))
    top = values.astype(np.float32)
    if scale != f32(1):
        top = top * scale
    return np.asarray(top.reshape(x.shape[:axis]), dtype=np.float32)


@register("Reduction")
def reduction(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.reduction_param
    x = bottoms[0]
    axis = canonical_axis(layer, int(p.axis), x.shape)
    layer.check(int(p.operation) in (SUM, ASUM, SUMSQ, MEAN), "Unknown reduction op")
    return [reduction_values(x, int(p.operation), axis, float(p.coeff))]
