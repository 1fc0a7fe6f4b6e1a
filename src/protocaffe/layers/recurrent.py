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
from dataclasses import dataclass
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
