"""Recurrent layers: BVLC's LSTM, RNN and LSTMUnit, the forks' `Lstm`, and crnn.caffe's
ContinuationIndicator.

LSTM and RNN are computed as the net Caffe unrolls them into, layer by layer and in float32:
InnerProduct over all steps of x, then per step a Scale of h_{t-1} by cont_t, an
InnerProduct by the recurrent weight, an Eltwise SUM (bottoms in Caffe's order) and the
LSTMUnit (or TanH, InnerProduct, TanH for RNN). Each forward starts from zero state (or from
the exposed h_0/c_0): a fresh Caffe net's first forward (see recurrent_layer.cpp Forward_cpu,
which otherwise copies the previous call's h_T/c_T into h_0/c_0).

Sources:
- BVLC caffe 9b89154, src/caffe/layers/recurrent_layer.cpp (LayerSetUp, Reshape: bottom
  checks, x_static present iff more bottoms than 2 + exposed states; Forward_cpu),
  lstm_layer.cpp and rnn_layer.cpp (FillUnrolledNet: the layers and their parameter order
  W_xc, b_c, W_xc_static, W_hc / W_xh, b_h, W_xh_static, W_hh, W_ho, b_o;
  RecurrentInputBlobNames h_0, c_0), lstm_unit_layer.cpp (Reshape, Forward_cpu: sigmoid
  1 / (1 + e^-x), tanh as 2 sigmoid(2x) - 1, f = 0 where cont == 0 else cont * sigmoid),
  recurrent_layer.hpp (MinBottomBlobs, MaxBottomBlobs, ExactNumTopBlobs).
- tianzhi0549/CTPN caffe/src/caffe/layers/lstm_layer.cu and junhyukoh/caffe-lstm
  src/caffe/layers/lstm_layer.cu (Forward_gpu: ClipAdd adds clip_t * W_h h_{t-1},
  ActivationForward, LSTMForward c = clip_t * f * c_{t-1} + i * g; clip_t = clip[t *
  count(1) + n], or t > 0 without a clip bottom) and their lstm_layer.cpp (LayerSetUp,
  Reshape: junhyukoh's (T * N, ...) rows with N = batch_size, CTPN's (T, N, ...)). The GPU
  kernels are followed (the forks' Forward_cpu adds sample 0's recurrent term to every sample);
  the layout is junhyukoh's for a 2-D input or a set batch_size, CTPN's otherwise.
- yalecyu/crnn.caffe and jolibrain/caffe (deepdetect: one bottom, the batch size from its
  `axis`) src/caffe/layers/continuation_indicator_layer.cpp (LayerSetUp, Reshape, Forward_cpu).
"""

from __future__ import annotations

import numpy as np

from protocaffe.verify.reference.params import as_f32, count
from protocaffe.verify.reference.registry import Array, RefLayer, register


def _sigmoid(x: Array) -> Array:
    """1. / (1. + exp(-x)) with double literals, returned as the float Dtype."""
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def _tanh(x: Array) -> Array:
    """lstm_unit_layer.cpp's tanh: 2. * sigmoid(2. * x) - 1. (in double), as float."""
    x64 = x.astype(np.float64)
    return (2.0 * (1.0 / (1.0 + np.exp(-2.0 * x64))) - 1.0).astype(np.float32)


def lstm_unit(c_prev: Array, gates: Array, cont: Array) -> tuple[Array, Array]:
    """LSTMUnitLayer::Forward_cpu on (N, H) c_prev, (N, 4H) gates, (N,) cont: (c, h)."""
    hidden = c_prev.shape[-1]
    i = _sigmoid(gates[:, :hidden])
    forget = np.where(
        cont[:, None] == 0, np.float32(0), cont[:, None] * _sigmoid(gates[:, hidden : 2 * hidden])
    ).astype(np.float32)
    o = _sigmoid(gates[:, 2 * hidden : 3 * hidden])
    g = _tanh(gates[:, 3 * hidden :])
    c = forget * c_prev + i * g
    return c, o * _tanh(c)


def _inner_product(x: Array, weight: Array, bias: Array | None = None) -> Array:
    """InnerProduct of rows: x (M, K) @ weight (N, K)^T (+ bias), float32."""
    top: Array = as_f32(x) @ weight.T
    return top + bias if bias is not None else top


def _check_recurrent(layer: RefLayer, bottoms: list[Array], states: int) -> tuple[bool, int]:
    """RecurrentLayer's checks: (static input given, number of exposed states)."""
    p = layer.param.recurrent_param
    exposed = states if p.expose_hidden else 0
    layer.check(
        2 + exposed <= len(bottoms) <= 3 + exposed,
        f"{layer.type} takes {2 + exposed} or {3 + exposed} bottoms, got {len(bottoms)}",
    )
    layer.check(
        len(layer.tops) == 1 + exposed,
        f"{layer.type} has exactly {1 + exposed} tops, got {len(layer.tops)}",
    )
    layer.check(int(p.num_output) > 0, "num_output must be positive")
    x, cont = bottoms[0], bottoms[1]
    layer.check(x.ndim >= 2, "bottom[0] must have at least 2 axes -- (#timesteps, #streams, ...)")
    layer.check(cont.ndim == 2, "bottom[1] must have exactly 2 axes -- (#timesteps, #streams)")
    layer.check(cont.shape == x.shape[:2], f"cont {cont.shape} must be (T, N) = {x.shape[:2]}")
    static = len(bottoms) > 2 + exposed
    if static:
        layer.check(bottoms[2].ndim >= 1, "x_static needs an axis")
        layer.check(bottoms[2].shape[0] == x.shape[1], "x_static must have N items")
        # The unrolled net's InnerProduct over axis 1.
        layer.check(bottoms[2].ndim >= 2, f"axis 1 out of range for x_static {bottoms[2].shape}")
    # The unrolled net's InnerProduct over axis 2 (CanonicalAxisIndex).
    layer.check(x.ndim >= 3, f"axis 2 out of range for x {x.shape}")
    hidden = int(p.num_output)
    for j, state in enumerate(bottoms[2 + static :]):
        layer.check(
            state.shape == (1, x.shape[1], hidden),
            f"bottom[{2 + static + j}] shape must match hidden state input shape: "
            f"(1, {x.shape[1]}, {hidden})",
        )
    return static, exposed


@register("LSTM", bottoms=(2, 5), tops=(1, 3))
def lstm(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    static, exposed = _check_recurrent(layer, bottoms, 2)
    x, cont = as_f32(bottoms[0]), as_f32(bottoms[1])
    steps, batch = cont.shape
    hidden = int(layer.param.recurrent_param.num_output)
    inputs = count(x.shape, 2)
    shapes = [(4 * hidden, inputs), (4 * hidden,)]
    if static:
        shapes.append((4 * hidden, count(bottoms[2].shape, 1)))
    blobs = layer.weights(*shapes, (4 * hidden, hidden))
    w_xc, b_c, w_hc = blobs[0], blobs[1], blobs[-1]
    w_xc_x = _inner_product(x.reshape(steps * batch, inputs), w_xc, b_c).reshape(steps, batch, -1)
    w_xc_x_static = (
        _inner_product(as_f32(bottoms[2]).reshape(batch, -1), blobs[2]) if static else None
    )
    if exposed:
        h, c = (as_f32(b)[0] for b in bottoms[2 + static :])
    else:
        h = np.zeros((batch, hidden), np.float32)
        c = np.zeros((batch, hidden), np.float32)
    outputs = []
    for t in range(steps):
        h_conted = h * cont[t][:, None]  # Scale, axis 0
        gate = np.zeros((batch, 4 * hidden), np.float32)  # Eltwise SUM, bottoms in order
        gate += _inner_product(h_conted, w_hc)
        gate += w_xc_x[t]
        if w_xc_x_static is not None:
            gate += w_xc_x_static
        c, h = lstm_unit(c, gate, cont[t])
        outputs.append(h)
    tops = [np.stack(outputs)]
    if exposed:
        tops += [h[None], c[None]]
    return tops


@register("RNN", bottoms=(2, 4), tops=(1, 2))
def rnn(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    static, exposed = _check_recurrent(layer, bottoms, 1)
    x, cont = as_f32(bottoms[0]), as_f32(bottoms[1])
    steps, batch = cont.shape
    hidden = int(layer.param.recurrent_param.num_output)
    inputs = count(x.shape, 2)
    shapes = [(hidden, inputs), (hidden,)]
    if static:
        shapes.append((hidden, count(bottoms[2].shape, 1)))
    blobs = layer.weights(*shapes, (hidden, hidden), (hidden, hidden), (hidden,))
    w_xh, b_h = blobs[0], blobs[1]
    w_hh, w_ho, b_o = blobs[-3:]
    w_xh_x = _inner_product(x.reshape(steps * batch, inputs), w_xh, b_h).reshape(steps, batch, -1)
    w_xh_x_static = (
        _inner_product(as_f32(bottoms[2]).reshape(batch, -1), blobs[2]) if static else None
    )
    h = as_f32(bottoms[-1])[0] if exposed else np.zeros((batch, hidden), np.float32)
    outputs = []
    for t in range(steps):
        h_conted = h * cont[t][:, None]
        neuron_input = np.zeros((batch, hidden), np.float32)
        neuron_input += _inner_product(h_conted, w_hh)
        neuron_input += w_xh_x[t]
        if w_xh_x_static is not None:
            neuron_input += w_xh_x_static
        h = np.tanh(neuron_input.astype(np.float64)).astype(np.float32)  # TanH layer
        w_ho_h = _inner_product(h, w_ho, b_o)
        outputs.append(np.tanh(w_ho_h.astype(np.float64)).astype(np.float32))
    tops = [np.stack(outputs)]
    if exposed:
        tops.append(h[None])
    return tops


@register("LSTMUnit", bottoms=(3, 3), tops=(2, 2))
def lstm_unit_layer(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    c_prev, gates, cont = (as_f32(b) for b in bottoms)
    for i, b in enumerate((c_prev, gates, cont)):
        layer.check(b.ndim == (2 if i == 2 else 3), f"bottom[{i}] {b.shape}: wrong number of axes")
        layer.check(b.shape[0] == 1, f"bottom[{i}] {b.shape}: axis 0 must be 1")
        layer.check(b.shape[1] == c_prev.shape[1], f"bottom[{i}] {b.shape}: N differs")
    layer.check(gates.shape[2] == 4 * c_prev.shape[2], "gates must be 4 * H wide")
    c, h = lstm_unit(c_prev[0], gates[0], cont[0])
    return [c[None], h[None]]


def _fork_sigmoid(x: Array) -> Array:
    """lstm_layer.cu: Dtype(1) / (Dtype(1) + exp(-x)), in float."""
    value: Array = np.float32(1) / (np.float32(1) + np.exp(-as_f32(x)))
    return value.astype(np.float32)


@register("Lstm", bottoms=(1, 2))
def fork_lstm(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.lstm_param
    x = as_f32(bottoms[0])
    hidden = int(p.num_output)
    layer.check(hidden > 0, "num_output must be positive")
    rows = p.HasField("batch_size") or x.ndim == 2
    if rows:  # junhyukoh: (T * N, ...) rows
        batch = int(p.batch_size)
        layer.check(x.shape[0] % batch == 0, "Input size should be multiple of batch size")
        steps, inputs = x.shape[0] // batch, count(x.shape, 1)
    else:  # CTPN, caffe_ocr: (T, N, ...)
        steps, batch, inputs = x.shape[0], x.shape[1], count(x.shape, 2)
    w_x, w_h, bias = layer.weights((4 * hidden, inputs), (4 * hidden, hidden), (4 * hidden,))
    clip = None
    if len(bottoms) == 2:
        clip = as_f32(bottoms[1]).reshape(-1)
        layer.check(bottoms[1].shape[0] == clip.size, "clip must have one value per item (num)")
        per_step = count(bottoms[1].shape, 1)
        layer.check(
            (steps - 1) * per_step + batch <= clip.size,
            f"clip[t * {per_step} + n] reads past the {clip.size} clip values",
        )
    pre_gate = (x.reshape(steps * batch, inputs) @ w_x.T + bias).reshape(steps, batch, 4 * hidden)
    h = np.zeros((batch, hidden), np.float32)
    c = np.zeros((batch, hidden), np.float32)
    outputs = []
    for t in range(steps):
        if clip is not None:
            start = t * count(bottoms[1].shape, 1)
            clip_t = clip[start : start + batch]
        else:
            clip_t = np.full(batch, np.float32(t > 0))
        gate = pre_gate[t] + clip_t[:, None] * (h @ w_h.T)  # ClipAdd
        i = _fork_sigmoid(gate[:, :hidden])
        f = _fork_sigmoid(gate[:, hidden : 2 * hidden])
        o = _fork_sigmoid(gate[:, 2 * hidden : 3 * hidden])
        g = np.float32(2) * _fork_sigmoid(np.float32(2) * gate[:, 3 * hidden :]) - np.float32(1)
        c = clip_t[:, None] * f * c + i * g  # LSTMForward
        tanh_c = np.float32(2) * _fork_sigmoid(np.float32(2) * c) - np.float32(1)
        h = (o * tanh_c).astype(np.float32)
        outputs.append(h)
    top = np.stack(outputs)
    return [top.reshape(steps * batch, hidden) if rows else top]


@register("ContinuationIndicator", bottoms=(0, 1))
def continuation_indicator(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """crnn.caffe: (time_step, batch_size); deepdetect's: the batch size is bottom[0]'s shape
    at `axis` (Blob::shape(int) takes a negative axis too)."""
    p = layer.param.continuation_indicator_param
    if bottoms:
        shape = bottoms[0].shape
        axis = int(p.axis)
        layer.check(-len(shape) <= axis < len(shape), f"axis {axis} out of range for {shape}")
        batch = shape[axis]
    else:
        batch = int(p.batch_size)
    layer.check(batch > 0, "The batch size should be greater than 0.")
    layer.check(int(p.time_step) > 0, "The time step should be greater than 0.")
    top = np.ones((int(p.time_step), batch), np.float32)
    top[0] = 0
    return [top]
