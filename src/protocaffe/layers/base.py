"""The contract every layer definition implements, and the small tools emitters share.

A layer definition is a subclass of `Layer[A]`, A being its frozen attributes dataclass,
registered under one or more Caffe type names (`registry.register`). It says:
- `parse`: the typed attributes, read from the layer's parameter message (a `LayerSource`);
- `infer`: output shapes from input shapes, with Caffe's exact rules;
- `blobs`: the shapes of the weight blobs Caffe stores for it (for checking and random weights);
- `param_names` and `state`: how those blobs become the generated module's state_dict entries,
  and `learnable`: which of them are trained (parameters, not buffers);
- `emit`: the Python that builds it in `__init__` (if anything) and computes it in `forward`;
- optional hooks that passes and views ask instead of testing type names: what the op does
  (`role`, `identity`, `silences`, `declared_inputs`), when it passes its input through
  (`passes_through`), how it folds (`absorbs_affine`, `channel_affine`, ...), its cost
  (`multiply_adds`), what a failed comparison may be blamed on (`sum_coefficients`), and a
  numpy implementation that verify runs where the numpy reference has none (`reference`).

This module imports nothing above the IR: a layer reads its Caffe layer through the narrow
`LayerSource` protocol, never through a reader's classes.
"""

from __future__ import annotations

import decimal
import enum
import functools
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar, cast

from protocaffe.errors import ProtocaffeError, SourceLoc
from protocaffe.ir.graph import Attrs, NoAttrs, Shape
from protocaffe.proto.caffe_types import LayerParameter, Message

if TYPE_CHECKING:  # numpy only where weights are converted (see Layer.state)
    import numpy as np


class LayerSource(Protocol):
    """What a layer definition reads of one Caffe layer: `frontend.prototxt.LayerDef` is one.

    `param` is the whole LayerParameter message in V2 form (schema defaults apply), typed by
    `protocaffe.proto.caffe_types`; `loc` is where the layer is written.
    """

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def bottoms(self) -> tuple[str, ...]: ...

    @property
    def tops(self) -> tuple[str, ...]: ...

    @property
    def param(self) -> LayerParameter: ...

    @property
    def loc(self) -> SourceLoc: ...

    @property
    def dialects(self) -> frozenset[str]:
        """The fork dialects the net is read in (`convert --dialect`): where forks give one
        prototxt two meanings, a layer follows BVLC unless its fork's dialect is named here."""
        ...


class Init(enum.Enum):
    """How `random-weights` fills a blob so that activations stay of order 1."""

    FAN_IN = "fan_in"  # N(0, 1/fan_in): weights of Convolution, InnerProduct, ...
    SMALL = "small"  # N(0, 0.1): biases and shifts
    ONE = "one"  # 1 + N(0, 0.1): scales, slopes
    POSITIVE = "positive"  # U(0.5, 1.5): variances
    UNIT = "unit"  # exactly 1: BatchNorm's moving-average factor
    SLOPE = "slope"  # U(0, 0.5): PReLU slopes


@dataclass(frozen=True)
class BlobSpec:
    """One Caffe weight blob: its Caffe shape, how to fill it randomly, and its fan-in."""

    shape: Shape
    init: Init
    fan_in: int = 1


# The import a generated module needs for `F.` (torch.nn.functional); `torch` and `nn` are
# always imported. Emitters and helpers declare every other import they use.
FUNCTIONAL = "import torch.nn.functional as F"


@dataclass(frozen=True)
class Emission:
    """What a node contributes to the generated module.

    `forward` is the Python expression that computes the node's outputs (a tuple for several).
    `init` is the right-hand side of `self.<attr> = ...` in `__init__`, or None.
    `note` is an optional short remark appended to the line's trace comment.
    `helpers` names functions/classes from templates/helpers (or registered by a plugin with
    `register_helper`) that the code uses; a helper declares its own imports.
    `imports` are the import statements the expressions need beyond `torch` and `nn`
    (`FUNCTIONAL` for `F.`, `import torchvision`, ...): nothing else is imported.
    `comment`, for a line that computes no Caffe layer of its own (the lowering's
    `SharedMemory` lines), replaces the trace comment; it must come from `repr()`'d names.
    """

    forward: str
    init: str | None = None
    note: str = ""
    helpers: tuple[str, ...] = ()
    imports: tuple[str, ...] = ()
    comment: str | None = None


@dataclass(frozen=True)
class EmitContext:
    """What an emitter may refer to: the names the backend allocated for this node."""

    attr: str  # `self.<attr>` is this node's module attribute, if it has one
    inputs: tuple[str, ...]  # local variable names of the inputs, in order
    in_shapes: tuple[Shape, ...]
    out_shapes: tuple[Shape, ...]
    # The first input may be overwritten: a fresh tensor (`Layer.fresh_output` of its
    # producer) that no other line reads and that is no input or output of the module.
    overwritable: bool = False

    @property
    def x(self) -> str:
        return self.inputs[0]


class Role(enum.Enum):
    """What a layer does, for views that group layers by it (the picture's fill colours)."""

    OTHER = "other"
    CONVOLUTION = "convolution"
    DENSE = "dense"  # InnerProduct
    POOLING = "pooling"
    COMBINE = "combine"  # joins or splits blobs, in an order that matters (Concat, Eltwise)
    NORMALIZATION = "normalization"  # BatchNorm and its Scale
    PROBABILITY = "probability"  # Softmax


A = TypeVar("A", bound=Attrs)


class Layer(Generic[A]):
    """Base class of a layer definition, generic in its attributes type A.

    Subclasses override what applies to them. A layer without parameters need not define
    `parse`: its attributes are `NoAttrs()`.
    """

    types: ClassVar[tuple[str, ...]] = ()
    # Caffe's own bounds on the number of bottoms and tops (None: no upper bound).
    bottoms: ClassVar[tuple[int, int | None]] = (1, 1)
    tops: ClassVar[tuple[int, int | None]] = (1, 1)
    # A layer that only passes its input through (Dropout at test time, Split): removed by a pass.
    identity: ClassVar[bool] = False
    # A layer that reads its bottoms only so that Caffe does not report them as outputs.
    silences: ClassVar[bool] = False
    # Caffe's own LayerSetUp/Reshape refuses to run the layer in place (top == bottom): AbsVal,
    # Flatten, Reshape and Split CHECK "... Layer does not allow in-place computation".
    refuses_in_place: ClassVar[bool] = False
    # A node the lowering inserts that is no Caffe layer (the `SharedMemory` re-binding of a
    # blob whose memory an in-place layer wrote through another name): its one output equals
    # its first input, reshaped to the output's shape (see docs/shared-memory.md).
    rebinds: ClassVar[bool] = False
    role: ClassVar[Role] = Role.OTHER
    # A data layer whose parameters declare its tops' shapes (DummyData, MemoryData): the tops
    # a later layer reads become inputs (see `declared_inputs`), the others (labels) are left out.
    data_source: ClassVar[bool] = False

    def parse(self, layer: LayerSource) -> A:
        # Only a layer whose A is NoAttrs relies on this default.
        return cast(A, NoAttrs())

    def infer(self, attrs: A, in_shapes: Sequence[Shape], layer: LayerSource) -> list[Shape]:
        return [in_shapes[0]]

    def blobs(self, attrs: A, in_shapes: Sequence[Shape]) -> list[BlobSpec]:
        return []

    def param_names(self, attrs: A, in_shapes: Sequence[Shape]) -> tuple[str, ...]:
        """state_dict keys (relative to the node's attribute) that `state` produces."""
        return ()

    def state(
        self, attrs: A, in_shapes: Sequence[Shape], blobs: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Caffe blobs (already checked against `blobs()`, float32) to state_dict arrays."""
        return {}

    def weight_notes(
        self, attrs: A, in_shapes: Sequence[Shape], blobs: Sequence[np.ndarray]
    ) -> tuple[str, ...]:
        """Notes about this layer's trained blobs (checked against `blobs()`, as stored: float32
        or float64): values the conversion follows faithfully but that suggest the model meant
        something else (a fork dialect), printed at the layer when the weights are converted."""
        return ()

    def learnable(self, attrs: A, in_shapes: Sequence[Shape]) -> tuple[str | None, ...]:
        """For each Caffe blob (in `blobs()` order): the state_dict key (relative to the node's
        attribute) of the nn.Parameter that holds it, or None for a blob the module keeps as a
        buffer and never trains (BatchNorm's statistics). Caffe's `param { lr_mult decay_mult
        name }` of blob i apply to that parameter. The default pairs blob i with
        `param_names()[i]`; a layer whose state is not one parameter per blob overrides it."""
        names = self.param_names(attrs, in_shapes)
        count = len(self.blobs(attrs, in_shapes))
        return names if len(names) == count else (None,) * count

    def emit(self, attrs: A, ctx: EmitContext) -> Emission:
        raise NotImplementedError

    # --- Optional hooks: what the lowering, passes and views ask of an op. ------------------

    def evaluates(self, layer: LayerSource) -> bool:
        """Whether this use of the layer only scores a forward pass (a fork's accuracy form,
        with a label bottom): it is left out of the module like Accuracy, with a note."""
        return False

    def declared_inputs(self, attrs: A) -> tuple[Shape, ...] | None:
        """For a layer that declares the net's inputs (Input): the shape of each top, which
        the lowering turns into graph inputs instead of a node."""
        return None

    def shares_memory(
        self, attrs: A, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> bool:
        """Whether Caffe gives the layer's tops the memory of its bottom 0 (`Blob::ShareData`):
        Split, Reshape, Flatten, a Concat of one bottom, a Slice with one top, an identity
        Permute. An in-place layer on such a top then also rewrites the bottom (and the other
        tops); the lowering makes later readers see it (docs/shared-memory.md)."""
        return False

    def computes_in_place(self, attrs: A, in_shapes: Sequence[Shape]) -> bool:
        """Whether Caffe still computes the layer's formula when it runs in place (top 0 is
        bottom 0): its CPU code reads each input value before it writes the output value at
        that place. Layers that read their input after writing into it (LRN across channels,
        Eltwise SUM, which zeroes the top first) or that reshape the blob under their input
        (Pooling, InnerProduct, ...) compute something else in place; the lowering refuses
        them there. A plugin layer is trusted to be elementwise when its shape does not change."""
        return True

    def degenerate_boxes(self, attrs: A, in_shapes: Sequence[Shape]) -> str | None:
        """For a layer that makes prior boxes (PriorBox): why some box has no positive width or
        height at the declared input shapes (an aspect ratio <= 0, or a box that clipping
        squeezes to nothing), which a box decoder downstream aborts on; else None."""
        return None

    def decodes_boxes(self, attrs: A) -> int | None:
        """For a layer that decodes boxes against priors and CHECKs that each prior has a
        positive width and height (DetectionOutput, bbox_util.cpp DecodeBBox): the position of
        its priors input; else None. The lowering refuses degenerate priors there."""
        return None

    def passes_through(
        self, attrs: A, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> bool:
        """Whether, with these parameters, the layer's one output equals its one input (a Concat
        of one bottom, Power 1 * x + 0): `--optimize` removes it."""
        return False

    def absorbs_affine(self, attrs: A, in_shapes: Sequence[Shape]) -> A | None:
        """For a layer whose output channel c (axis 1) is computed from row c (axis 0) of its
        "weight" alone, plus "bias"[c]: the attributes it takes on when a per-channel affine map
        is folded into it (with a bias); None when nothing can fold into it."""
        return None

    def channel_affine(self, attrs: A, in_shapes: Sequence[Shape]) -> bool:
        """Whether the layer maps each channel (axis 1) of its one input by a * x + c, a and c
        from its own weights: it can then fold into the layer before it (see `absorbs_affine`)."""
        return False

    def affine_coefficients(
        self, attrs: A, state: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(a, c) per channel, float64, of the map `channel_affine` promised, from the layer's
        state_dict entries."""
        raise NotImplementedError(f"{type(self).__name__} is not a per-channel affine map")

    def absorb_affine(
        self, attrs: A, state: Mapping[str, np.ndarray], scale: np.ndarray, shift: np.ndarray
    ) -> dict[str, np.ndarray]:
        """The state of a layer `absorbs_affine` accepts, followed by y -> scale * y + shift per
        output channel: "weight" rows scaled, "bias" scaled and shifted (float64, then float32)."""
        import numpy as np

        weight = state["weight"].astype(np.float64)
        channels = weight.shape[0]
        base_bias = state.get("bias")
        bias = np.zeros(channels) if base_bias is None else base_bias.astype(np.float64)
        per_row = scale.reshape((channels,) + (1,) * (weight.ndim - 1))
        return {
            "weight": (weight * per_row).astype(np.float32),
            "bias": (bias * scale + shift).astype(np.float32),
        }

    def multiply_adds(
        self, attrs: A, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> int:
        """Multiplications of the layer's main arithmetic, for `inspect` (0: it only moves,
        compares or adds values)."""
        return 0

    def sum_coefficients(self, attrs: A, inputs: int) -> tuple[float, ...] | None:
        """For a layer whose output is a weighted sum of its inputs: the weights (verify
        suggests other coefficients when its output differs)."""
        return None

    def reference(
        self, attrs: A, inputs: Sequence[np.ndarray], blobs: Sequence[np.ndarray] = ()
    ) -> Sequence[np.ndarray]:
        """The layer's tops computed in numpy from its bottoms (float32 arrays) and, for a layer
        with weights, its Caffe blobs as `blobs()` shapes them: what `verify --reference numpy`
        runs for a type the numpy reference does not know (a plugin's). Write it from the
        original layer's source, not from `emit`: a reference that shares code with the
        emitted module proves nothing. Not overridden: the type has no numpy reference."""
        raise NotImplementedError(f"{type(self).__name__} has no numpy reference")

    def records_argmax(self, attrs: A) -> bool:
        """Whether the layer's second top is the argmax mask of windows over its first input
        (MAX Pooling with two tops), which a max-unpooling layer reads."""
        return False

    def fresh_output(self, attrs: A, in_shapes: Sequence[Shape]) -> bool:
        """Whether the emitted line returns a new tensor (no view or alias of an input) that
        the layer's backward does not read (it saves its inputs, not its output): a
        consumer may then compute in place into it, in train() too."""
        return False

    def unpools(self, attrs: A, in_shapes: Sequence[Shape]) -> bool:
        """Whether the layer puts values back where a `records_argmax` mask (its second input)
        says; it then takes the pooled layer's input as a third input, for its run-time size."""
        return False


def fail(layer: LayerSource, message: str, loc: SourceLoc | None = None) -> ProtocaffeError:
    """An error about `layer`, at its location (or a more precise one)."""
    return ProtocaffeError.at(loc or layer.loc, message, layer.name, layer.type)


def spatial(
    values: Sequence[int], single: int | None, h: int | None, w: int | None, default: int
) -> tuple[int, int]:
    """Caffe's (h, w) from `x_h`/`x_w`, or a repeated `x` field (one value or one per axis)."""
    if h is not None and w is not None:
        return (h, w)
    if single is not None:
        return (single, single)
    if len(values) == 0:
        return (default, default)
    if len(values) == 1:
        return (values[0], values[0])
    return (values[0], values[1])


def opt(msg: Message, name: str) -> int | None:
    """The value of an optional scalar field, or None when it is not set."""
    value: Any = getattr(msg, name)
    return int(value) if msg.HasField(name) else None


def canonical_axis(axis: int, rank: int, layer: LayerSource) -> int:
    if not -rank <= axis < rank:
        raise fail(layer, f"axis {axis} is out of range for a {rank}-D input")
    return axis % rank


def f32(value: float) -> float:
    """The shortest decimal that is the same float32 as `value`.

    protobuf stores Caffe's float fields as float32; printing them as Python floats would show
    0.0010000000474974513 for 0.001. Both round to the same float32, which is what Caffe uses.
    """
    try:
        (single,) = struct.unpack("<f", struct.pack("<f", value))
    except OverflowError:  # rounds past float32's largest value, to infinity as numpy does
        return math.copysign(math.inf, value)
    if single == 0 or not math.isfinite(single):
        return float(single)
    return float(_shortest_f32(single))


def _as_f32(value: float) -> float:
    try:
        return float(struct.unpack("<f", struct.pack("<f", value))[0])
    except OverflowError:
        return math.copysign(math.inf, value)


@functools.lru_cache(maxsize=4096)
def _shortest_f32(single: float) -> str:
    """The fewest significant digits that read back as the float32 `single`, the closest such
    decimal when there are several (what numpy's repr of a float32 prints). Plain Python, so
    that generating model.py does not import numpy."""
    for digits in range(1, 10):
        text = f"{single:.{digits - 1}e}"  # the closest decimal with this many digits
        if _as_f32(float(text)) == single:
            return text
        # It may fall just outside the float32's rounding interval where that interval is
        # lopsided (at a power of two) while a neighbour falls inside it.
        mantissa, exponent = text.split("e")
        step = decimal.Decimal(1).scaleb(1 - digits)
        inside = [
            f"{candidate}e{exponent}"
            for candidate in (decimal.Decimal(mantissa) - step, decimal.Decimal(mantissa) + step)
            if _as_f32(float(f"{candidate}e{exponent}")) == single
        ]
        if inside:
            exact = decimal.Decimal(single)
            return min(inside, key=lambda t: abs(decimal.Decimal(t) - exact))
    return repr(single)


def fmt_shape(shape: Shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def tuple_expr(values: Sequence[object]) -> str:
    """A Python tuple literal of plain ints/floats (values come from numbers, never names)."""
    items = [repr(v) for v in values]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


class Code(str):
    """A Python expression the emitter built from numbers only: `call` writes it verbatim."""

    def __repr__(self) -> str:
        return str(self)


def call(fn: str, *args: str, **kwargs: object) -> str:
    """`fn(a, b, k=v)` with keyword values repr()'d; None-valued keywords are left out."""
    parts = list(args) + [f"{k}={v!r}" for k, v in kwargs.items() if v is not None]
    return f"{fn}({', '.join(parts)})"


def pair(values: tuple[int, int]) -> int | tuple[int, int]:
    """One int when both axes agree (`kernel_size=3`), else the pair."""
    return values[0] if values[0] == values[1] else values


@dataclass(frozen=True)
class ChannelWeightAttrs(Attrs):
    """Attributes of a layer with one learned weight per channel (axis 1), or one shared."""

    channel_shared: bool


CW = TypeVar("CW", bound=ChannelWeightAttrs)


class ChannelWeightLayer(Layer[CW]):
    """A layer whose one Caffe blob holds a weight per channel, or a single one when
    `channel_shared` (PReLU's slopes, Normalize's scale). The state_dict key is "weight"."""

    weight_init: ClassVar[Init] = Init.ONE

    def infer(self, attrs: CW, in_shapes: Sequence[Shape], layer: LayerSource) -> list[Shape]:
        if len(in_shapes[0]) < 2:
            raise fail(layer, f"expects an input with a channel axis, got {in_shapes[0]}")
        if len(in_shapes[0]) > 4:
            # Both read channels() (prelu_layer.cpp, normalize_layer.cpp), Blob::LegacyShape.
            raise fail(
                layer,
                f"Caffe aborts here: Cannot use legacy accessors on Blobs with > 4 axes (the "
                f"input is {in_shapes[0]})",
            )
        return [in_shapes[0]]

    def channels(self, attrs: CW, in_shapes: Sequence[Shape]) -> int:
        return 1 if attrs.channel_shared else in_shapes[0][1]

    def blobs(self, attrs: CW, in_shapes: Sequence[Shape]) -> list[BlobSpec]:
        # A shared weight is a 0-D blob in Caffe (LayerSetUp: Blob(vector<int>(0))).
        shape: Shape = () if attrs.channel_shared else (in_shapes[0][1],)
        return [BlobSpec(shape, self.weight_init)]

    def param_names(self, attrs: CW, in_shapes: Sequence[Shape]) -> tuple[str, ...]:
        return ("weight",)

    def state(
        self, attrs: CW, in_shapes: Sequence[Shape], blobs: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        return {"weight": blobs[0].reshape(-1)}
