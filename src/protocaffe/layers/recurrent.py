"""Recurrent layers: BVLC's LSTM, RNN and LSTMUnit, the `Lstm` forks, and crnn.caffe's
ContinuationIndicator.

Caffe runs LSTM and RNN by unrolling them into a net of InnerProduct, Scale (by `cont`),
Eltwise and LSTMUnit/TanH layers, one group per time step (RecurrentLayer::LayerSetUp,
LSTMLayer/RNNLayer::FillUnrolledNet). The generated module runs the same equations in a loop
over the T steps (templates/helpers/CaffeLSTM.py, CaffeRNN.py), with Caffe's weight blobs as
its parameters. `cont` (T, N) is 0 where a sequence starts: it zeroes the carried hidden state
and the forget gate, and any other value scales both, as the unrolled net does.

State across calls: without `expose_hidden`, Caffe copies the last call's h_T (and c_T) into
h_0 (c_0) before each forward, so a forward with cont[0] = 1 continues the previous call's
sequence. The generated module is stateless: every call starts from zero (or from the h_0,
c_0 inputs with expose_hidden), which equals Caffe on a net's first forward and on any
forward whose cont[0] is 0. Users who feed a long sequence in chunks pass the state on
themselves (expose_hidden), as docs/recurrent.md shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

from protocaffe.ir.graph import Attrs, NoAttrs, Shape
from protocaffe.layers.base import (
    BlobSpec,
    Emission,
    EmitContext,
    Init,
    Layer,
    LayerSource,
    Role,
    call,
    canonical_axis,
    fail,
)
from protocaffe.layers.registry import register
from protocaffe.proto.caffe_types import LSTMConvolutionParameter

if TYPE_CHECKING:  # numpy only where weights are converted (see Layer.state)
    import numpy as np

STATELESS_NOTE = "starts from zero state each call"
LSTM_HELPERS = ("caffe_lstm_unit", "CaffeLSTM")


@dataclass(frozen=True)
class RecurrentAttrs(Attrs):
    num_output: int
    expose_hidden: bool
    static_input: bool


class _Recurrent(Layer[RecurrentAttrs]):
    """What BVLC's LSTM and RNN share (recurrent_layer.cpp): bottoms x (T, N, ...), cont
    (T, N), an optional x_static (N, ...), then with expose_hidden the initial states; tops
    the output (T, N, num_output), then with expose_hidden the final states."""

    role = Role.DENSE
    states: ClassVar[tuple[str, ...]] = ()  # RecurrentInputBlobNames, in bottom order
    helper: ClassVar[str] = ""

    def parse(self, layer: LayerSource) -> RecurrentAttrs:
        p = layer.param.recurrent_param
        num_output = int(p.num_output)
        if num_output <= 0:
            raise fail(layer, "Caffe aborts here: recurrent_param.num_output must be positive")
        expose = bool(p.expose_hidden)
        exposed = len(self.states) if expose else 0
        bottoms, tops = len(layer.bottoms), len(layer.tops)
        if not 2 + exposed <= bottoms <= 3 + exposed:
            raise fail(
                layer,
                f"Caffe aborts here: {bottoms} bottoms; {layer.type} takes x, cont, an optional "
                "x_static"
                + (f" and {', '.join(self.states)}" if expose else "")
                + f" ({2 + exposed} or {3 + exposed} bottoms)",
            )
        if tops != 1 + exposed:
            raise fail(
                layer,
                f"Caffe aborts here: {tops} tops; {layer.type} with expose_hidden "
                f"{str(expose).lower()} has {1 + exposed}",
            )
        return RecurrentAttrs(num_output, expose, bottoms > 2 + exposed)

    def _sizes(self, attrs: RecurrentAttrs, in_shapes: Sequence[Shape]) -> tuple[int, int, int]:
        """(input size, static input size (0 without), hidden size)."""
        static = math.prod(in_shapes[2][1:]) if attrs.static_input else 0
        return math.prod(in_shapes[0][2:]), static, attrs.num_output

    def infer(
        self, attrs: RecurrentAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        x, cont = in_shapes[0], in_shapes[1]
        if len(x) < 3:
            raise fail(
                layer,
                f"Caffe aborts here: x {x} needs 3 or more axes (T, N, features...): the "
                "unrolled net's InnerProduct reads axis 2",
            )
        steps, batch, hidden = x[0], x[1], attrs.num_output
        if cont != (steps, batch):
            raise fail(layer, f"Caffe aborts here: cont {cont} must be (T, N) = {(steps, batch)}")
        rest = list(in_shapes[2:])
        if attrs.static_input:
            static = rest.pop(0)
            if len(static) < 2 or static[0] != batch:
                raise fail(
                    layer,
                    f"Caffe aborts here: x_static {static} must be (N, features...) with "
                    f"N = {batch}",
                )
        state: Shape = (1, batch, hidden)
        for name, shape in zip(self.states, rest, strict=False):
            if shape != state:
                raise fail(layer, f"Caffe aborts here: {name} {shape} must be {state}")
        output: Shape = (steps, batch, hidden)
        return [output] + [state] * (len(self.states) if attrs.expose_hidden else 0)

    def emit(self, attrs: RecurrentAttrs, ctx: EmitContext) -> Emission:
        inputs, static, hidden = self._sizes(attrs, ctx.in_shapes)
        init = call(self.helper, repr(inputs), repr(hidden), static_size=static or None)
        args = list(ctx.inputs[:2])
        if attrs.static_input:
            args.append(f"x_static={ctx.inputs[2]}")
        if attrs.expose_hidden:
            given = ctx.inputs[3 if attrs.static_input else 2 :]
            args += [f"{name}={value}" for name, value in zip(self.states, given, strict=True)]
        forward = f"self.{ctx.attr}({', '.join(args)})"
        if not attrs.expose_hidden:
            return Emission(
                forward=f"{forward}[0]", init=init, note=STATELESS_NOTE, helpers=self.helpers()
            )
        return Emission(forward=forward, init=init, helpers=self.helpers())

    def helpers(self) -> tuple[str, ...]:
        return (self.helper,)


@register
class LSTM(_Recurrent):
    """BVLC's LSTM: gates i, f, o, g from W_hc (cont * h) + W_xc x + b_c (+ W_xc_static
    x_static), then Caffe's LSTMUnit.

    Source: BVLC/caffe, src/caffe/layers/recurrent_layer.cpp, lstm_layer.cpp (FillUnrolledNet),
    lstm_unit_layer.cpp (Forward_cpu)."""

    types = ("LSTM",)
    bottoms = (2, 5)
    tops = (1, 3)
    states = ("h_0", "c_0")
    helper = "CaffeLSTM"

    def helpers(self) -> tuple[str, ...]:
        return LSTM_HELPERS

    def blobs(self, attrs: RecurrentAttrs, in_shapes: Sequence[Shape]) -> list[BlobSpec]:
        inputs, static, hidden = self._sizes(attrs, in_shapes)
        specs = [
            BlobSpec((4 * hidden, inputs), Init.FAN_IN, inputs),
            BlobSpec((4 * hidden,), Init.SMALL),
        ]
        if attrs.static_input:
            specs.append(BlobSpec((4 * hidden, static), Init.FAN_IN, static))
        return specs + [BlobSpec((4 * hidden, hidden), Init.FAN_IN, hidden)]

    def param_names(self, attrs: RecurrentAttrs, in_shapes: Sequence[Shape]) -> tuple[str, ...]:
        static = ("weight_xc_static",) if attrs.static_input else ()
        return ("weight_xc", "bias_c", *static, "weight_hc")

    def state(
        self, attrs: RecurrentAttrs, in_shapes: Sequence[Shape], blobs: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        return dict(zip(self.param_names(attrs, in_shapes), blobs, strict=True))

    def multiply_adds(
        self, attrs: RecurrentAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> int:
        inputs, static, hidden = self._sizes(attrs, in_shapes)
        steps, batch = in_shapes[0][:2]
        per_step = 4 * hidden * (inputs + hidden) + 3 * hidden  # the gates, then the unit
        return steps * batch * per_step + batch * 4 * hidden * static


@register
class RNN(_Recurrent):
    """BVLC's RNN: h_t = tanh(W_hh (cont_t * h_{t-1}) + W_xh x_t + b_h (+ W_xh_static
    x_static)), o_t = tanh(W_ho h_t + b_o).

    Source: BVLC/caffe, src/caffe/layers/recurrent_layer.cpp, rnn_layer.cpp
    (FillUnrolledNet)."""

    types = ("RNN",)
    bottoms = (2, 4)
    tops = (1, 2)
    states = ("h_0",)
    helper = "CaffeRNN"

    def blobs(self, attrs: RecurrentAttrs, in_shapes: Sequence[Shape]) -> list[BlobSpec]:
        inputs, static, hidden = self._sizes(attrs, in_shapes)
        specs = [BlobSpec((hidden, inputs), Init.FAN_IN, inputs), BlobSpec((hidden,), Init.SMALL)]
        if attrs.static_input:
            specs.append(BlobSpec((hidden, static), Init.FAN_IN, static))
        return specs + [
            BlobSpec((hidden, hidden), Init.FAN_IN, hidden),
            BlobSpec((hidden, hidden), Init.FAN_IN, hidden),
            BlobSpec((hidden,), Init.SMALL),
        ]

    def param_names(self, attrs: RecurrentAttrs, in_shapes: Sequence[Shape]) -> tuple[str, ...]:
        static = ("weight_xh_static",) if attrs.static_input else ()
        return ("weight_xh", "bias_h", *static, "weight_hh", "weight_ho", "bias_o")

    def state(
        self, attrs: RecurrentAttrs, in_shapes: Sequence[Shape], blobs: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        return dict(zip(self.param_names(attrs, in_shapes), blobs, strict=True))

    def multiply_adds(
        self, attrs: RecurrentAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> int:
        inputs, static, hidden = self._sizes(attrs, in_shapes)
        steps, batch = in_shapes[0][:2]
        return steps * batch * hidden * (inputs + 2 * hidden) + batch * hidden * static


@register
class LSTMUnit(Layer[NoAttrs]):
    """One LSTM step: bottoms c_prev (1, N, H), gates (1, N, 4H) in the order i, f, o, g, cont
    (1, N); tops c and h (1, N, H).

    Source: BVLC/caffe, src/caffe/layers/lstm_unit_layer.cpp (Reshape, Forward_cpu)."""

    types = ("LSTMUnit",)
    bottoms = (3, 3)
    tops = (2, 2)

    def infer(self, attrs: NoAttrs, in_shapes: Sequence[Shape], layer: LayerSource) -> list[Shape]:
        c_prev, gates, cont = in_shapes
        if len(c_prev) != 3 or len(gates) != 3 or len(cont) != 2:
            raise fail(
                layer,
                f"Caffe aborts here: c_prev {c_prev} and gates {gates} must have 3 axes, cont "
                f"{cont} 2",
            )
        batch, hidden = c_prev[1], c_prev[2]
        if (
            c_prev[0] != 1
            or gates[:2] != (1, batch)
            or cont != (1, batch)
            or gates[2] != 4 * hidden
        ):
            raise fail(
                layer,
                f"Caffe aborts here: expects c_prev (1, N, H), gates (1, N, 4H), cont (1, N); "
                f"got {c_prev}, {gates}, {cont}",
            )
        return [c_prev, c_prev]

    def emit(self, attrs: NoAttrs, ctx: EmitContext) -> Emission:
        c_prev, gates, cont = ctx.inputs
        return Emission(
            forward=f"caffe_lstm_unit({c_prev}, {gates}, {cont})", helpers=("caffe_lstm_unit",)
        )

    def multiply_adds(
        self, attrs: NoAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> int:
        return 3 * math.prod(out_shapes[0])


@dataclass(frozen=True)
class LstmAttrs(Attrs):
    num_output: int
    batch_size: int | None  # lstm_param.batch_size when the file sets it (junhyukoh's rows)
    clip: bool  # a second bottom gives the continuation indicators


@dataclass(frozen=True)
class _LstmLayout:
    """How a fork `Lstm` reads its input: T steps of N streams of `inputs` features, from
    (T * N, ...) rows (junhyukoh) or a (T, N, ...) blob (CTPN, caffe_ocr)."""

    steps: int
    batch: int
    inputs: int
    rows: bool


@register
class Lstm(Layer[LstmAttrs]):
    """The `Lstm` of the junhyukoh/caffe-lstm family: BVLC's LSTM equations (gates i, f, o, g)
    without x_static or exposed states; blobs W_x (4H, I), W_h (4H, H), b (4H). A second bottom
    `clip` plays cont's part; without it every step continues (the state starts at zero).

    Two layouts: junhyukoh's reads (T * N, ...) rows with N = lstm_param.batch_size and writes
    (T * N, H); CTPN's and caffe_ocr's read (T, N, ...) and write (T, N, H). A 2-D input or a
    set batch_size selects junhyukoh's.

    The GPU kernels (lstm_layer.cu: ClipAdd, LSTMForward) are followed: models were trained
    with them. The forks' Forward_cpu adds sample 0's recurrent term to every sample of a batch
    (`h_to_gate` is never advanced), and reads clip as a bool; both agree with the GPU for a
    batch of one and a 0/1 clip.

    Sources: junhyukoh/caffe-lstm, src/caffe/layers/lstm_layer.{cpp,cu}; tianzhi0549/CTPN,
    caffe/src/caffe/layers/lstm_layer.{cpp,cu}; senlinuc/caffe_ocr,
    src/caffe/layers/lstm_layer_Junhyuk.cpp."""

    types = ("Lstm",)
    bottoms = (1, 2)
    role = Role.DENSE

    def parse(self, layer: LayerSource) -> LstmAttrs:
        p = layer.param.lstm_param
        if int(p.num_output) <= 0:
            raise fail(layer, "lstm_param.num_output must be positive")
        batch = int(p.batch_size) if p.HasField("batch_size") else None
        if batch is not None and batch <= 0:
            raise fail(layer, f"lstm_param.batch_size must be positive, got {batch}")
        return LstmAttrs(int(p.num_output), batch, len(layer.bottoms) == 2)

    @staticmethod
    def _layout(attrs: LstmAttrs, x: Shape) -> _LstmLayout:
        if attrs.batch_size is not None or len(x) == 2:
            batch = attrs.batch_size or 1
            return _LstmLayout(x[0] // batch, batch, math.prod(x[1:]), True)
        return _LstmLayout(x[0], x[1], math.prod(x[2:]), False)

    def infer(
        self, attrs: LstmAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        x = in_shapes[0]
        if len(x) < 2:
            raise fail(layer, f"expects an input of 2 or more axes, got {x}")
        layout = self._layout(attrs, x)
        if layout.rows and x[0] % layout.batch:
            raise fail(
                layer,
                f"Caffe aborts here: {x[0]} input rows are not a multiple of batch_size "
                f"{layout.batch}",
            )
        if attrs.clip:
            clip = in_shapes[1]
            if clip[0] != math.prod(clip):
                raise fail(
                    layer, f"Caffe aborts here: clip {clip} must hold one value per row (num)"
                )
            if layout.batch != 1 or clip[0] != layout.steps:
                raise fail(
                    layer,
                    f"the fork reads clip[t + n] for step t of stream n, which means a clip "
                    f"per step only for one stream: needs N = 1 and {layout.steps} clip values, "
                    f"got N = {layout.batch} and clip {clip}",
                )
        if layout.rows:
            return [(layout.steps * layout.batch, attrs.num_output)]
        return [(layout.steps, layout.batch, attrs.num_output)]

    def blobs(self, attrs: LstmAttrs, in_shapes: Sequence[Shape]) -> list[BlobSpec]:
        inputs, hidden = self._layout(attrs, in_shapes[0]).inputs, attrs.num_output
        return [
            BlobSpec((4 * hidden, inputs), Init.FAN_IN, inputs),
            BlobSpec((4 * hidden, hidden), Init.FAN_IN, hidden),
            BlobSpec((4 * hidden,), Init.SMALL),
        ]

    def param_names(self, attrs: LstmAttrs, in_shapes: Sequence[Shape]) -> tuple[str, ...]:
        return ("weight_xc", "weight_hc", "bias_c")

    def state(
        self, attrs: LstmAttrs, in_shapes: Sequence[Shape], blobs: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        return dict(zip(self.param_names(attrs, in_shapes), blobs, strict=True))

    def emit(self, attrs: LstmAttrs, ctx: EmitContext) -> Emission:
        layout = self._layout(attrs, ctx.in_shapes[0])
        hidden = attrs.num_output
        init = call("CaffeLSTM", repr(layout.inputs), repr(hidden))
        x = ctx.x
        if layout.rows:
            x = f"{x}.reshape(-1, {layout.batch}, {layout.inputs})"
        cont = f"{ctx.inputs[1]}.reshape(-1, 1)" if attrs.clip else "None"
        forward = f"self.{ctx.attr}({x}, {cont})[0]"
        if layout.rows:
            forward += f".reshape(-1, {hidden})"
        note = "clip as cont; " + STATELESS_NOTE if attrs.clip else "every step continues"
        return Emission(forward=forward, init=init, note=note, helpers=LSTM_HELPERS)

    def multiply_adds(
        self, attrs: LstmAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> int:
        layout, hidden = self._layout(attrs, in_shapes[0]), attrs.num_output
        per_step = 4 * hidden * (layout.inputs + hidden) + 3 * hidden
        return layout.steps * layout.batch * per_step


@dataclass(frozen=True)
class IndicatorAttrs(Attrs):
    time_step: int
    batch_size: int  # without a bottom
    axis: int  # with a bottom: the axis whose size is the batch size


@register
class ContinuationIndicator(Layer[IndicatorAttrs]):
    """A (time_step, N) blob: 0 at step 0, 1 after (the `cont` of an LSTM that reads one whole
    sequence per forward). N is continuation_indicator_param.batch_size (crnn.caffe, no
    bottom), or the size of a bottom's `axis` (deepdetect's fork, one bottom).

    Sources: yalecyu/crnn.caffe, src/caffe/layers/continuation_indicator_layer.cpp;
    jolibrain/caffe (deepdetect), src/caffe/layers/continuation_indicator_layer.cpp."""

    types = ("ContinuationIndicator",)
    bottoms = (0, 1)

    def parse(self, layer: LayerSource) -> IndicatorAttrs:
        p = layer.param.continuation_indicator_param
        attrs = IndicatorAttrs(int(p.time_step), int(p.batch_size), int(p.axis))
        if not layer.bottoms and attrs.batch_size <= 0:
            raise fail(layer, "Caffe aborts here: The batch size should be greater than 0.")
        if attrs.time_step <= 0:
            raise fail(layer, "Caffe aborts here: The time step should be greater than 0.")
        return attrs

    def infer(
        self, attrs: IndicatorAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        if not in_shapes:
            return [(attrs.time_step, attrs.batch_size)]
        shape = in_shapes[0]
        return [(attrs.time_step, shape[canonical_axis(attrs.axis, len(shape), layer)])]

    def emit(self, attrs: IndicatorAttrs, ctx: EmitContext) -> Emission:
        helpers = ("ContinuationIndicator",)
        if ctx.inputs:
            axis = attrs.axis % len(ctx.in_shapes[0])
            forward = call("continuation_indicator", ctx.x, repr(attrs.time_step), repr(axis))
            return Emission(forward=forward, note="batch from the input", helpers=helpers)
        init = call("ContinuationIndicator", repr(attrs.time_step), repr(attrs.batch_size))
        return Emission(forward=f"self.{ctx.attr}()", init=init, helpers=helpers)


@dataclass(frozen=True)
class ConvGeometry:
    """One gate convolution of a ConvLSTM: the fields CopyConv copies (conv_lstm_helper.hpp)."""

    kernel: tuple[int, int]
    pad: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    group: int
    bias: bool

    def output(self, size: tuple[int, int]) -> tuple[int, int]:
        """ConvolutionLayer::compute_output_shape for (H, W)."""
        h, w = (
            (n + 2 * p - (d * (k - 1) + 1)) // s + 1
            for n, p, d, k, s in zip(
                size, self.pad, self.dilation, self.kernel, self.stride, strict=True
            )
        )
        return h, w


@dataclass(frozen=True)
class ConvLSTMAttrs(Attrs):
    channels: int  # lstm_conv_param.num_output: the hidden and cell channels
    x_conv: ConvGeometry  # the input convolution (bias_term forced false by the fork)
    h_conv: ConvGeometry  # the hidden-state convolution
    expose_hidden: bool
    ignore_x: bool
    hadamard: bool  # not lstm_debug_param.disable_hadamard
    hadamard_axis: int
    hadamard_axes: int
    relu: bool  # ConvLSTMReLU


def _spatial(layer: LayerSource, values: Sequence[int], name: str, default: int) -> tuple[int, int]:
    """A repeated conv field for 2 spatial axes: none (the default), one for both, or one each
    (BaseConvolutionLayer::LayerSetUp)."""
    if not values:
        return default, default
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    raise fail(
        layer,
        f"Caffe aborts here: {name} must be specified once, or once per spatial dimension "
        f"({name}_size specified {len(values)} times; 2 spatial dims)",
    )


@register
class ConvLSTM(Layer[ConvLSTMAttrs]):
    """t2mhanh/caffe_convLSTM_WTA's ConvLSTM and ConvLSTMReLU: an LSTM whose gates are
    convolutions of x_t and of cont_t * h_{t-1} (axis 2 of (T, N, C, H, W) blobs), plus
    peephole (Hadamard) scales of c_{t-1}, then ConvLSTMUnit (tanh) or ConvLSTMReLUUnit
    (max(., 0) for g and for c). Bottoms x, cont, then with expose_hidden h_0 and c_0
    (1, N, C, H, W); tops h (T, N, C, H, W), then with expose_hidden h_T and c_T.

    Blobs in the unrolled net's parameter order: the x convolution (left out with ignore_x),
    DummyForward's unused (1,) blobs for c_0 and h_0, the hidden convolution's weight and
    bias, the input, forget and output Hadamard scales (left out with disable_hadamard), and
    DummyForward's (1,) blobs for h_T and c_T. The (1,) blobs never reach a top.

    The fork never carries state between forwards: without expose_hidden its LayerSetUp stops
    the unrolled net before the DummyForward layers that write h_T and c_T, so h_0 and c_0
    stay zero. Not supported (refused): x_static and lstm_debug_param.expose.

    Sources: t2mhanh/caffe_convLSTM_WTA, src/caffe/layers/conv_lstm_layer.cpp and
    conv_lstm_relu_layer.cpp (LayerSetUp, RecurrentInputShapes, FillUnrolledNet),
    conv_lstm_unit_layer.cpp and conv_lstm_relu_unit_layer.cpp (Forward_cpu),
    include/caffe/layers/conv_lstm_helper.hpp (CopyConv, CreateHadamard), recurrent_layer.cpp
    (LayerSetUp, Reshape, Forward_cpu), dummy_forward.cpp."""

    types = ("ConvLSTM", "ConvLSTMReLU")
    bottoms = (2, 5)  # x_static (a fifth) is refused in parse with its own message
    tops = (1, 3)
    role = Role.CONVOLUTION

    def parse(self, layer: LayerSource) -> ConvLSTMAttrs:
        convs = list(layer.param.lstm_conv_param)
        if not 1 <= len(convs) <= 2:
            raise fail(
                layer, f"Caffe aborts here: {len(convs)} lstm_conv_param; ConvLSTM takes 1 or 2"
            )
        if len(convs) == 2 and convs[0].num_output != convs[1].num_output:
            raise fail(layer, "Caffe aborts here: the two lstm_conv_param differ in num_output")
        channels = int(convs[0].num_output)
        if channels <= 0:
            raise fail(layer, "Caffe aborts here: lstm_conv_param.num_output must be positive")
        debug = layer.param.lstm_debug_param
        ignore_x = bool(debug.ignore_x)
        # FillUnrolledNet reads the input convolution's param only without ignore_x.
        x_index = 1 if convs[0].type == "hidden" else 0
        h_index = 1 if convs[0].type == "input" else 0
        if max(h_index, 0 if ignore_x else x_index) >= len(convs):
            raise fail(
                layer,
                f"Caffe aborts here: lstm_conv_param type '{convs[0].type}' needs a second "
                "lstm_conv_param for the other convolution",
            )
        h_conv = self._geometry(layer, convs[h_index], channels)
        x_conv = h_conv if ignore_x else self._geometry(layer, convs[x_index], channels)
        if len(debug.expose):
            raise fail(layer, "lstm_debug_param.expose (tops of internal blobs) is not supported")
        expose = bool(layer.param.recurrent_param.expose_hidden)
        bottoms, tops = len(layer.bottoms), len(layer.tops)
        if bottoms != (4 if expose else 2):
            raise fail(
                layer,
                f"{bottoms} bottoms: {layer.type} takes x, cont"
                + (", h_0 and c_0" if expose else "")
                + " (x_static is not supported)",
            )
        if tops != (3 if expose else 1):
            raise fail(
                layer,
                f"Caffe aborts here: {tops} tops; {layer.type} with expose_hidden "
                f"{str(expose).lower()} has {3 if expose else 1}",
            )
        return ConvLSTMAttrs(
            channels,
            replace(x_conv, bias=False),
            h_conv,
            expose,
            ignore_x,
            not debug.disable_hadamard,
            int(debug.axis_hadamard),
            int(debug.num_axes_hadamard),
            layer.type == "ConvLSTMReLU",
        )

    @staticmethod
    def _geometry(layer: LayerSource, p: LSTMConvolutionParameter, channels: int) -> ConvGeometry:
        kernel = _spatial(layer, p.kernel_size, "kernel_size", 0)
        if kernel == (0, 0) and not len(p.kernel_size):
            raise fail(
                layer,
                "Caffe aborts here: lstm_conv_param needs kernel_size (the fork's CopyConv "
                "copies neither kernel_h nor kernel_w)",
            )
        geometry = ConvGeometry(
            kernel,
            _spatial(layer, p.pad, "pad", 0),
            _spatial(layer, p.stride, "stride", 1),
            _spatial(layer, p.dilation, "dilation", 1),
            int(p.group),
            bool(p.bias_term),
        )
        if min(kernel) <= 0 or min(geometry.stride) <= 0:
            raise fail(layer, "Caffe aborts here: kernel and stride dimensions must be nonzero")
        if geometry.group <= 0 or (4 * channels) % geometry.group:
            raise fail(
                layer,
                f"Caffe aborts here: 4 * num_output ({4 * channels}) is not a multiple of "
                f"group {geometry.group}",
            )
        return geometry

    def infer(
        self, attrs: ConvLSTMAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        x, cont = in_shapes[0], in_shapes[1]
        if len(x) != 5:
            raise fail(
                layer,
                f"expects x of 5 axes (T, N, C, H, W), got {x}: the fork reads axes 2 to 4",
            )
        steps, batch, c_in, height, width = x
        if cont != (steps, batch):
            raise fail(layer, f"Caffe aborts here: cont {cont} must be (T, N) = {(steps, batch)}")
        state: Shape = (1, batch, attrs.channels, height, width)
        for name, shape in zip(("h_0", "c_0"), in_shapes[2:], strict=False):
            if shape != state:
                raise fail(layer, f"Caffe aborts here: {name} {shape} must be {state}")
        convs = [("hidden", attrs.h_conv, attrs.channels)]
        if not attrs.ignore_x:
            convs.insert(0, ("input", attrs.x_conv, c_in))
        for name, conv, channels in convs:
            if channels % conv.group:
                raise fail(
                    layer,
                    f"Caffe aborts here: the {name} convolution's {channels} channels are not a "
                    f"multiple of group {conv.group}",
                )
            if conv.output((height, width)) != (height, width):
                raise fail(
                    layer,
                    f"the {name} convolution gives {conv.output((height, width))} from "
                    f"{(height, width)}: the fork's gates need H x W kept (pad the kernel)",
                )
        if attrs.hadamard:
            end = attrs.hadamard_axis + attrs.hadamard_axes
            if attrs.hadamard_axis >= 5 or end > 5:
                raise fail(
                    layer,
                    f"Caffe aborts here: axis_hadamard {attrs.hadamard_axis} and "
                    f"num_axes_hadamard {attrs.hadamard_axes} reach past the 5 axes of c",
                )
        output: Shape = (steps, batch, attrs.channels, height, width)
        return [output] + ([state, state] if attrs.expose_hidden else [])

    def _hadamard_shape(self, attrs: ConvLSTMAttrs, in_shapes: Sequence[Shape]) -> Shape:
        _, batch, _, height, width = in_shapes[0]
        state = (1, batch, attrs.channels, height, width)
        return state[attrs.hadamard_axis : attrs.hadamard_axis + attrs.hadamard_axes]

    def blobs(self, attrs: ConvLSTMAttrs, in_shapes: Sequence[Shape]) -> list[BlobSpec]:
        c_in, gates = in_shapes[0][2], 4 * attrs.channels
        specs = []
        x, h = attrs.x_conv, attrs.h_conv
        if not attrs.ignore_x:
            fan_in = c_in // x.group * math.prod(x.kernel)
            specs.append(BlobSpec((gates, c_in // x.group, *x.kernel), Init.FAN_IN, fan_in))
        dummy = BlobSpec((1,), Init.SMALL)
        specs += [dummy, dummy]
        fan_in = attrs.channels // h.group * math.prod(h.kernel)
        specs.append(BlobSpec((gates, attrs.channels // h.group, *h.kernel), Init.FAN_IN, fan_in))
        if h.bias:
            specs.append(BlobSpec((gates,), Init.SMALL))
        if attrs.hadamard:
            specs += [BlobSpec(self._hadamard_shape(attrs, in_shapes), Init.SMALL)] * 3
        return specs + [dummy, dummy]

    def learnable(self, attrs: ConvLSTMAttrs, in_shapes: Sequence[Shape]) -> tuple[str | None, ...]:
        names: list[str | None] = [] if attrs.ignore_x else ["weight_x"]
        names += [None, None, "weight_h"]
        if attrs.h_conv.bias:
            names.append("bias_h")
        if attrs.hadamard:
            names += ["hadamard_input", "hadamard_forget", "hadamard_output"]
        return (*names, None, None)

    def param_names(self, attrs: ConvLSTMAttrs, in_shapes: Sequence[Shape]) -> tuple[str, ...]:
        return tuple(name for name in self.learnable(attrs, in_shapes) if name is not None)

    def state(
        self, attrs: ConvLSTMAttrs, in_shapes: Sequence[Shape], blobs: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        """The used blobs by name; DummyForward's (1,) blobs are left out."""
        names = self.learnable(attrs, in_shapes)
        return {name: blob for name, blob in zip(names, blobs, strict=True) if name is not None}

    def emit(self, attrs: ConvLSTMAttrs, ctx: EmitContext) -> Emission:
        x, h = attrs.x_conv, attrs.h_conv

        def differs(field: str) -> object:
            value = getattr(h, field)
            return None if value == getattr(x, field) else value

        hadamard = self._hadamard_shape(attrs, ctx.in_shapes) if attrs.hadamard else None
        init = call(
            "CaffeConvLSTM",
            repr(ctx.in_shapes[0][2]),
            repr(attrs.channels),
            kernel=x.kernel,
            pad=x.pad if x.pad != (0, 0) else None,
            stride=x.stride if x.stride != (1, 1) else None,
            dilation=x.dilation if x.dilation != (1, 1) else None,
            group=x.group if x.group != 1 else None,
            hidden_kernel=differs("kernel"),
            hidden_pad=differs("pad"),
            hidden_stride=differs("stride"),
            hidden_dilation=differs("dilation"),
            hidden_group=differs("group"),
            bias=None if h.bias else False,
            hadamard=hadamard,
            hadamard_axis=attrs.hadamard_axis if hadamard and attrs.hadamard_axis != 3 else None,
            relu=attrs.relu or None,
            ignore_x=attrs.ignore_x or None,
        )
        args = list(ctx.inputs[:2])
        if attrs.expose_hidden:
            args += [f"h_0={ctx.inputs[2]}", f"c_0={ctx.inputs[3]}"]
        forward = f"self.{ctx.attr}({', '.join(args)})"
        helpers = ("caffe_conv_lstm_unit", "CaffeConvLSTM")
        note = "x gives only the shapes" if attrs.ignore_x else ""
        if not attrs.expose_hidden:
            return Emission(forward=f"{forward}[0]", init=init, note=note, helpers=helpers)
        return Emission(forward=forward, init=init, note=note, helpers=helpers)

    def multiply_adds(
        self, attrs: ConvLSTMAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> int:
        steps, batch, c_in, height, width = in_shapes[0]
        pixels = steps * batch * height * width
        gates = 4 * attrs.channels
        per_pixel = gates * attrs.channels // attrs.h_conv.group * math.prod(attrs.h_conv.kernel)
        if not attrs.ignore_x:
            per_pixel += gates * c_in // attrs.x_conv.group * math.prod(attrs.x_conv.kernel)
        return pixels * (per_pixel + 3 * attrs.channels)
