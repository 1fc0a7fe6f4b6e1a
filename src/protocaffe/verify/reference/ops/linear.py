"""Linear layers: InnerProduct, Scale, Bias, Eltwise and SENet's Axpy.

Sources:
- BVLC caffe 9b89154, src/caffe/layers/inner_product_layer.cpp (LayerSetUp: axis, K, weight
  (N, K) or (K, N) with `transpose`; Reshape; Forward_cpu: one float32 gemm plus the bias),
  scale_layer.cpp and bias_layer.cpp (LayerSetUp: the blob is bottom[0].shape[axis : axis +
  num_axes], num_axes -1 for the rest; a second bottom replaces the learned blob; Reshape: a
  0-D operand is applied from axis 0), eltwise_layer.cpp (LayerSetUp: one coeff per bottom or
  none, none for PROD; Forward_cpu: PROD in bottom order, SUM as axpy from zero, MAX with a
  strict > from the first bottom).
- hujie-frank/SENet, src/caffe/layers/axpy_layer.cpp (Reshape, Forward_cpu): top = a * x + y
  with a of shape (N, C[, 1, 1]).
"""

from __future__ import annotations

import numpy as np

from protocaffe.verify.reference.params import as_f32, canonical_axis, count, f32
from protocaffe.verify.reference.registry import Array, RefLayer, Shape, register


@register("InnerProduct")
def inner_product(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.inner_product_param
    x = as_f32(bottoms[0])
    axis = canonical_axis(layer, int(p.axis), x.shape)
    k = count(x.shape, axis)
    n = int(p.num_output)
    shapes: list[Shape] = [(k, n) if p.transpose else (n, k)]
    if p.bias_term:
        shapes.append((n,))
    blobs = layer.weights(*shapes)
    rows = x.reshape(count(x.shape, 0, axis), k)
    top = rows @ (blobs[0] if p.transpose else blobs[0].T)
    if p.bias_term:
        top = top + blobs[1]
    return [top.reshape(x.shape[:axis] + (n,))]


def _operand_shape(layer: RefLayer, shape: Shape, axis_param: int, num_axes: int) -> Shape:
    """The learned blob's shape (ScaleLayer / BiasLayer LayerSetUp)."""
    axis = canonical_axis(layer, axis_param, shape)
    layer.check(num_axes >= -1, "num_axes must be non-negative, or -1 to extend to the end")
    if num_axes >= 0:
        layer.check(
            len(shape) >= axis + num_axes,
            f"the blob's shape extends past bottom[0]'s shape when applied starting with "
            f"bottom[0] axis = {axis}",
        )
        return tuple(shape[axis : axis + num_axes])
    return tuple(shape[axis:])


def broadcast_operand(layer: RefLayer, x: Array, operand: Array, axis_param: int) -> Array:
    """The operand shaped to broadcast over x from `axis` (Reshape: axis 0 for a 0-D one)."""
    axis = 0 if operand.ndim == 0 else canonical_axis(layer, axis_param, x.shape)
    layer.check(
        x.ndim >= axis + operand.ndim,
        f"the operand's shape {operand.shape} extends past bottom[0]'s shape {x.shape} when "
        f"applied starting with bottom[0] axis = {axis}",
    )
    layer.check(
        tuple(x.shape[axis : axis + operand.ndim]) == operand.shape,
        f"dimension mismatch between bottom[0] {x.shape} from axis {axis} and the operand "
        f"{operand.shape}",
    )
    return operand.reshape((1,) * axis + operand.shape + (1,) * (x.ndim - axis - operand.ndim))


@register("Scale", bottoms=(1, 2))
def scale(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """x * scale (+ bias): two float32 steps, as ScaleLayer then its internal BiasLayer."""
    p = layer.param.scale_param
    x = as_f32(bottoms[0])
    shapes: list[Shape] = []
    if len(bottoms) == 1:
        operand = _operand_shape(layer, x.shape, int(p.axis), int(p.num_axes))
        shapes.append(operand)
    if p.bias_term:
        bias_axes = bottoms[1].ndim if len(bottoms) == 2 else int(p.num_axes)
        shapes.append(_operand_shape(layer, x.shape, int(p.axis), bias_axes))
    blobs = layer.weights(*shapes)
    factor = as_f32(bottoms[1]) if len(bottoms) == 2 else blobs[0]
    top = x * broadcast_operand(layer, x, factor, int(p.axis))
    if p.bias_term:
        top = top + broadcast_operand(layer, x, blobs[-1], int(p.axis))
    return [top]


@register("Bias", bottoms=(1, 2))
def bias(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.bias_param
    x = as_f32(bottoms[0])
    if len(bottoms) == 2:
        layer.weights()
        operand = as_f32(bottoms[1])
    else:
        (operand,) = layer.weights(_operand_shape(layer, x.shape, int(p.axis), int(p.num_axes)))
    return [x + broadcast_operand(layer, x, operand, int(p.axis))]


PROD, SUM, MAX = 0, 1, 2


@register("Eltwise", bottoms=(2, None))
def eltwise(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.eltwise_param
    layer.check(
        len(p.coeff) in (0, len(bottoms)), "Eltwise Layer takes one coefficient per bottom blob."
    )
    layer.check(
        not (p.operation == PROD and len(p.coeff)),
        "Eltwise layer only takes coefficients for summation.",
    )
    for i, other in enumerate(bottoms[1:], start=1):
        layer.check(
            other.shape == bottoms[0].shape,
            f"bottom[0]: {bottoms[0].shape}, bottom[{i}]: {other.shape}",
        )
    xs = [as_f32(b) for b in bottoms]
    if p.operation == PROD:
        top = xs[0] * xs[1]
        for x in xs[2:]:
            top = top * x
    elif p.operation == SUM:
        coeffs = [f32(c) for c in p.coeff] or [f32(1)] * len(xs)
        top = np.zeros_like(xs[0])
        for c, x in zip(coeffs, xs, strict=True):
            top = top + (x if c == f32(1) else c * x)
    else:  # MAX: coefficients, if any, are read and ignored
        top = np.where(xs[0] > xs[1], xs[0], xs[1])
        for x in xs[2:]:
            top = np.where(x > top, x, top)
    return [top]


@register("Axpy", bottoms=(3, 3))
def axpy(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """top = a[n, c] * x[n, c, ...] + y."""
    a, x, y = (as_f32(b) for b in bottoms)
    layer.check(a.shape[:2] == x.shape[:2], f"a {a.shape} and x {x.shape} differ in N or C")
    if a.ndim == 4:
        layer.check(a.shape[2:] == (1, 1), f"a must be (N, C, 1, 1), got {a.shape}")
    layer.check(x.shape == y.shape, f"x {x.shape} and y {y.shape} differ")
    return [axpy_values(a, x, y)]


def axpy_values(a: Array, x: Array, y: Array) -> Array:
    scale_ = a.reshape(a.shape[:2] + (1,) * (x.ndim - 2))
    return (scale_ * x + y).astype(np.float32)


@register("Embed")
def embed(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """BVLC embed_layer.cpp (LayerSetUp: weight (input_dim K, num_output N), bias (N);
    Forward_cpu: row static_cast<int>(x) of the weight, then the bias by a gemm). An index
    outside [0, K) is only a DCHECK: the release build reads outside the weights."""
    p = layer.param.embed_param
    n, k = int(p.num_output), int(p.input_dim)
    layer.check(n > 0, "EmbedLayer num_output must be positive.")
    layer.check(k > 0, "EmbedLayer input_dim must be positive.")
    shapes: list[Shape] = [(k, n)] + ([(n,)] if p.bias_term else [])
    blobs = layer.weights(*shapes)
    x = as_f32(bottoms[0])
    index = x.astype(np.int64)  # toward zero, as static_cast<int>
    if index.size and (index.min() < 0 or index.max() >= k):
        raise layer.fail(
            f"an index outside [0, {k}): Caffe's release build reads outside the weights there"
        )
    top = blobs[0][index]
    if p.bias_term:
        top = top + blobs[1]
    return [top.astype(np.float32)]
