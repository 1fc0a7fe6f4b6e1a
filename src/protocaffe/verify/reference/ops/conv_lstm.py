"""t2mhanh/caffe_convLSTM_WTA's ConvLSTM and ConvLSTMReLU, computed as the net the fork unrolls
them into, layer by layer and in float32.

Source: t2mhanh/caffe_convLSTM_WTA @ 4f31996d:
- src/caffe/layers/conv_lstm_layer.cpp and conv_lstm_relu_layer.cpp (identical but for the
  unit's type): LayerSetUp (1 or 2 lstm_conv_param with equal num_output; last_layer_index_
  moved back by the two recurrent outputs, so that without expose_hidden the DummyForward
  layers that write h_t=T and c_t=T never run and h_0, c_0 stay zero on every forward);
  RecurrentInputBlobNames (h_t=0, c_t=0: bottoms 2 and 3 with expose_hidden),
  RecurrentOutputBlobNames (h_t=T, c_t=T: tops 1 and 2), RecurrentInputShapes ((1, N, C_out,
  H, W) from the input's shape), OutputBlobNames ("h", then lstm_debug_param.expose);
  FillUnrolledNet: the x->transform Convolution (axis 2, 4 C_out outputs, bias_term false,
  from the lstm_conv_param whose type is not "hidden"; none with ignore_x), the Input of
  c_t=0, h_t=0, DummyForward on c_t=0 and h_t=0, then per step t a Scale of h_{t-1} by cont_t
  (axis 0), the hidden->transform Convolution (axis 2, 4 C_out outputs, from the
  lstm_conv_param whose type is not "input"), with the Hadamard terms three Scale layers of
  c_{t-1} (axis_hadamard, num_axes_hadamard; params hadamard.input, .forget, .output) and a
  DummyData of zeros concatenated on axis 2, an Eltwise SUM of hidden, x, Hadamard (in that
  order; no Eltwise when ignore_x and disable_hadamard), the unit; then the Concat of h and
  DummyForward on h_t=T and c_t=T.
- include/caffe/layers/conv_lstm_helper.hpp: CopyConv (copies num_output, kernel_size, pad,
  stride, dilation, filler, bias_term, axis, group: not kernel_h/w, pad_h/w, stride_h/w).
- src/caffe/layers/conv_lstm_unit_layer.cpp and conv_lstm_relu_unit_layer.cpp: Reshape
  (5-axis c_prev and gates, 2-axis cont, axis 0 of 1, gates 4 C wide) and Forward_cpu: i =
  sigmoid(X_i), f = 0 where cont == 0 else cont * sigmoid(X_f), o = sigmoid(X_o), g =
  tanh(X_g) (2 sigmoid(2x) - 1) or max(X_g, 0), c = f c_prev + i g, h = o tanh(c) or o max(c, 0).
- src/caffe/layers/dummy_forward.cpp: a copy, with one unused (1,) blob.
- src/caffe/layers/recurrent_layer.cpp: LayerSetUp (this->blobs_ are the unrolled net's
  owned params in layer order), Reshape, Forward_cpu.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from protocaffe.proto.caffe_types import LSTMConvolutionParameter
from protocaffe.verify.reference.ops.conv import conv_output_size, im2col_conv
from protocaffe.verify.reference.ops.recurrent import _sigmoid, _tanh
from protocaffe.verify.reference.params import as_f32
from protocaffe.verify.reference.registry import Array, RefLayer, Shape, register


def _pair(layer: RefLayer, values: list[int], name: str, default: int) -> tuple[int, int]:
    """BaseConvolutionLayer::LayerSetUp for a repeated field and 2 spatial axes."""
    layer.check(
        len(values) in (0, 1, 2),
        f"{name} must be specified once, or once per spatial dimension ({len(values)} given)",
    )
    if not values:
        return default, default
    return (values[0], values[-1])


@dataclass(frozen=True)
class _Conv:
    """The Convolution CopyConv makes from one lstm_conv_param: geometry and blob shapes."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    dilation: tuple[int, int]
    group: int
    shapes: list[Shape]

    def run(self, x: Array, weight: Array, bias: Array | None) -> Array:
        """Convolution with axis 2 on a 5-axis blob: (A, B, C, H, W) as A * B images."""
        a, b = x.shape[:2]
        top = im2col_conv(
            x.reshape(a * b, *x.shape[2:]),
            weight,
            bias,
            self.stride,
            self.pad,
            self.dilation,
            self.group,
        )
        return top.reshape(a, b, *top.shape[1:])


def _conv(
    layer: RefLayer, p: LSTMConvolutionParameter, channels_in: int, outputs: int, bias: bool
) -> _Conv:
    kernel_size = [int(v) for v in p.kernel_size]
    layer.check(bool(kernel_size), "kernel_size must be specified (CopyConv copies no kernel_h)")
    kernel = _pair(layer, kernel_size, "kernel_size", 0)
    stride = _pair(layer, [int(v) for v in p.stride], "stride", 1)
    pad = _pair(layer, [int(v) for v in p.pad], "pad", 0)
    dilation = _pair(layer, [int(v) for v in p.dilation], "dilation", 1)
    group = int(p.group)
    layer.check(min(kernel) > 0 and min(stride) > 0, "Filter and stride must be nonzero.")
    layer.check(
        group > 0 and channels_in % group == 0 and outputs % group == 0,
        "group must divide the input and output channels",
    )
    shapes: list[Shape] = [(outputs, channels_in // group, *kernel)]
    if bias:
        shapes.append((outputs,))
    return _Conv(kernel, stride, pad, dilation, group, shapes)


def _unit(c_prev: Array, gates: Array, cont: Array, relu: bool) -> tuple[Array, Array]:
    """ConvLSTMUnit / ConvLSTMReLUUnit Forward_cpu on (1, N, C, H, W), (1, N, 4C, H, W),
    (1, N)."""
    channels = c_prev.shape[2]
    x_i, x_f, x_o, x_g = (gates[:, :, k * channels : (k + 1) * channels] for k in range(4))
    cont5 = cont.reshape(1, -1, 1, 1, 1)
    i = _sigmoid(x_i)
    f = np.where(cont5 == 0, np.float32(0), cont5 * _sigmoid(x_f)).astype(np.float32)
    o = _sigmoid(x_o)
    g = np.maximum(x_g, np.float32(0)) if relu else _tanh(x_g)
    c = (f * c_prev + i * g).astype(np.float32)
    act = np.maximum(c, np.float32(0)) if relu else _tanh(c)
    return c, (o * act).astype(np.float32)


def conv_lstm(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param
    convs = list(p.lstm_conv_param)
    layer.check(1 <= len(convs) <= 2, f"1 or 2 lstm_conv_param, got {len(convs)}")
    if len(convs) == 2:
        layer.check(convs[0].num_output == convs[1].num_output, "num_output differs")
    channels = int(convs[0].num_output)
    layer.check(channels > 0, "num_output must be positive")
    debug = p.lstm_debug_param
    if len(debug.expose):
        raise layer.fail("lstm_debug_param.expose is not transcribed")
    expose = bool(p.recurrent_param.expose_hidden)
    if len(bottoms) > 2 + 2 * expose:
        raise layer.fail("x_static is not transcribed")
    layer.check(len(bottoms) == 2 + 2 * expose, "bottoms: x, cont (, h_0, c_0)")
    layer.check(len(layer.tops) == 1 + 2 * expose, "OutputBlobNames gives a name per top")
    x, cont = as_f32(bottoms[0]), as_f32(bottoms[1])
    layer.check(x.ndim == 5, f"x must be (T, N, C, H, W) (in_shape_[2..4]), got {x.shape}")
    layer.check(cont.ndim == 2, "bottom[1] must have exactly 2 axes -- (#timesteps, #streams)")
    steps, batch, c_in, height, width = x.shape
    layer.check(cont.shape == (steps, batch), f"cont {cont.shape} must be {(steps, batch)}")
    state_shape = (1, batch, channels, height, width)
    ignore_x, hadamard = bool(debug.ignore_x), not debug.disable_hadamard
    # lstm_conv_param(1) when param 0 is typed for the other convolution (read only if built).
    x_index = 1 if convs[0].type == "hidden" else 0
    h_index = 1 if convs[0].type == "input" else 0
    layer.check(
        max(h_index, 0 if ignore_x else x_index) < len(convs),
        "lstm_conv_param(1) out of range",
    )
    h_param = convs[h_index]
    relu = layer.type == "ConvLSTMReLU"

    # The unrolled net's owned params, in layer order (Net::AppendParam).
    shapes: list[Shape] = []
    x_conv = None
    if not ignore_x:
        x_conv = _conv(layer, convs[x_index], c_in, 4 * channels, bias=False)
        shapes += x_conv.shapes
    shapes += [(1,), (1,)]  # DummyForward c_t=0, h_t=0
    h_conv = _conv(layer, h_param, channels, 4 * channels, bias=bool(h_param.bias_term))
    shapes += h_conv.shapes
    axis, num_axes = int(debug.axis_hadamard), int(debug.num_axes_hadamard)
    if hadamard:
        layer.check(axis < 5 and axis + num_axes <= 5, "axis_hadamard out of range for c")
        shapes += [state_shape[axis : axis + num_axes]] * 3
    shapes += [(1,), (1,)]  # DummyForward h_t=T, c_t=T
    blobs = layer.weights(*shapes)
    at = 0
    w_x = None
    if not ignore_x:
        w_x, at = blobs[0], 1
    at += 2
    w_h = blobs[at]
    b_h = blobs[at + 1] if h_param.bias_term else None
    at += 2 if h_param.bias_term else 1
    scales = blobs[at : at + 3] if hadamard else []

    if expose:
        for name, state in zip(("h_0", "c_0"), bottoms[2:], strict=True):
            layer.check(state.shape == state_shape, f"{name} shape must be {state_shape}")
        h, c = as_f32(bottoms[2]), as_f32(bottoms[3])
    else:
        h = np.zeros(state_shape, np.float32)
        c = np.zeros(state_shape, np.float32)
    x_transform = None
    if x_conv is not None and w_x is not None:
        x_transform = x_conv.run(x, w_x, None)
    hidden_out = conv_output_size(
        (height, width), h_conv.kernel, h_conv.stride, h_conv.pad, h_conv.dilation,
        transposed=False,
    )  # fmt: skip
    layer.check(
        tuple(hidden_out) == (height, width),
        f"the hidden convolution gives {tuple(hidden_out)}, the unit reads {(height, width)}",
    )
    view = [1] * 5
    view[axis : axis + num_axes] = state_shape[axis : axis + num_axes]
    outputs = []
    for t in range(steps):
        cont_t = cont[t : t + 1]
        h_conted = h * cont_t.reshape(1, batch, 1, 1, 1)  # Scale, axis 0
        terms = [h_conv.run(h_conted, w_h, b_h)]
        if x_transform is not None:
            terms.append(x_transform[t : t + 1])
        if hadamard:
            peephole = [c * s.reshape(view) for s in scales]
            terms.append(np.concatenate([*peephole, np.zeros_like(c)], axis=2))
        for term in terms[1:]:
            layer.check(term.shape == terms[0].shape, "Eltwise bottoms must have one shape")
        gate = np.zeros(terms[0].shape, np.float32)  # Eltwise SUM, bottoms in order
        for term in terms:
            gate += term
        c, h = _unit(c, gate, cont_t, relu)
        outputs.append(h)
    tops = [np.concatenate(outputs, axis=0)]
    if expose:
        tops += [h, c]
    return tops


register("ConvLSTM", bottoms=(2, 5), tops=(1, None))(conv_lstm)
register("ConvLSTMReLU", bottoms=(2, 5), tops=(1, None))(conv_lstm)
