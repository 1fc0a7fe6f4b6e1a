"""The contract every layer family implements, and the registry that finds them by Caffe type.

A layer family is a subclass of `Layer` registered under one or more Caffe type names. It says:
- `parse`: the typed attributes, read from the layer's parameter message;
- `infer`: output shapes from input shapes, with Caffe's exact rules;
- `blobs`: the shapes of the weight blobs Caffe stores for it (for checking and random weights);
- `state`: how those blobs become the generated module's state_dict entries;
- `emit`: the Python that builds it in `__init__` (if anything) and computes it in `forward`.
"""

from __future__ import annotations

import decimal
import enum
import functools
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from protocaffe.errors import ProtocaffeError, SourceLoc
from protocaffe.frontend.prototxt import LayerDef
from protocaffe.ir.graph import Attrs, NoAttrs, Shape

if TYPE_CHECKING:  # numpy only where weights are converted (see Layer.state)
    import numpy as np


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


@dataclass(frozen=True)
class Emission:
    """What a node contributes to the generated module.

    `init` is the right-hand side of `self.<attr> = ...` in `__init__`, or None.
    `forward` is the expression that computes the node's outputs (a tuple for several outputs).
    `note` is an optional short remark appended to the line's trace comment.
    `helpers` names functions/classes from templates/helpers (or registered by a plugin with
    `protocaffe.backend.helpers.register_helper`) that the code uses.
    `imports` are import statements the code needs beyond torch (`import torchvision`, ...):
    a plugin declares here everything its generated code imports; nothing else is imported.
    """

    forward: str
    init: str | None = None
    note: str = ""
    helpers: tuple[str, ...] = ()
    imports: tuple[str, ...] = ()


@dataclass(frozen=True)
class EmitContext:
    """What an emitter may refer to: the names the backend allocated for this node."""

    attr: str  # `self.<attr>` is this node's module attribute, if it has one
    inputs: tuple[str, ...]  # local variable names of the inputs, in order
    in_shapes: tuple[Shape, ...]
    out_shapes: tuple[Shape, ...]

    @property
    def x(self) -> str:
        return self.inputs[0]


class Layer:
    """Base class of a layer family. Subclasses override what applies to them."""

    types: ClassVar[tuple[str, ...]] = ()
    # Caffe's own bounds on the number of bottoms and tops (None: no upper bound).
    bottoms: ClassVar[tuple[int, int | None]] = (1, 1)
    tops: ClassVar[tuple[int, int | None]] = (1, 1)
    # A layer that only passes its input through (Dropout at test time, Split): removed by a pass.
    identity: ClassVar[bool] = False

    def parse(self, layer: LayerDef) -> Attrs:
        return NoAttrs()

    def infer(self, attrs: Attrs, in_shapes: Sequence[Shape], layer: LayerDef) -> list[Shape]:
        return [in_shapes[0]]

    def blobs(self, attrs: Attrs, in_shapes: Sequence[Shape]) -> list[BlobSpec]:
        return []

    def param_names(self, attrs: Attrs, in_shapes: Sequence[Shape]) -> tuple[str, ...]:
        """state_dict keys (relative to the node's attribute) that `state` produces."""
        return ()

    def state(
        self, attrs: Attrs, in_shapes: Sequence[Shape], blobs: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Caffe blobs (already checked against `blobs()`, float32) to state_dict arrays."""
        return {}

    def emit(self, attrs: Attrs, ctx: EmitContext) -> Emission:
        raise NotImplementedError


_REGISTRY: dict[str, Layer] = {}


class DuplicateLayerType(RuntimeError):
    """A layer type is registered twice (two plugins, or a plugin and a built-in layer)."""


def register(cls: type[Layer]) -> type[Layer]:
    """Class decorator: registers one instance of `cls` under each of its Caffe type names.

    This is also the plugin interface: a plugin module defines `Layer` subclasses with this
    decorator (see 'Custom layers' in the README).
    """
    instance = cls()
    taken = [name for name in cls.types if name in _REGISTRY]
    if taken:
        owner = type(_REGISTRY[taken[0]])
        raise DuplicateLayerType(
            f"layer type {taken[0]!r} is already registered by {owner.__module__}.{owner.__name__}"
        )
    for name in cls.types:
        _REGISTRY[name] = instance
    return cls


_entry_points_loaded = False


def lookup(type_name: str) -> Layer | None:
    """The layer registered for a Caffe type. A type that is not built in makes the installed
    plugins (the `protocaffe.layers` entry points) load, once: scanning every installed
    package's metadata costs more than the rest of start-up, and most nets need no plugin."""
    global _entry_points_loaded
    kind = _REGISTRY.get(type_name)
    if kind is None and not _entry_points_loaded:
        from protocaffe.plugins import load_entry_point_plugins

        _entry_points_loaded = True
        load_entry_point_plugins()
        kind = _REGISTRY.get(type_name)
    return kind


def registered_types() -> list[str]:
    return sorted(_REGISTRY)


def unregister(type_name: str) -> None:
    """Remove a type (for plugins and tests that register temporary layers)."""
    _REGISTRY.pop(type_name, None)


def fail(layer: LayerDef, message: str, loc: SourceLoc | None = None) -> ProtocaffeError:
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


def opt(msg: Any, name: str) -> int | None:
    """The value of an optional scalar field, or None when it is not set."""
    has = msg.HasField
    return int(getattr(msg, name)) if has(name) else None


def canonical_axis(axis: int, rank: int, layer: LayerDef) -> int:
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


def call(fn: str, *args: str, **kwargs: object) -> str:
    """`fn(a, b, k=v)` with keyword values repr()'d; None-valued keywords are left out."""
    parts = list(args) + [f"{k}={v!r}" for k, v in kwargs.items() if v is not None]
    return f"{fn}({', '.join(parts)})"


@dataclass(frozen=True)
class ChannelWeightAttrs(Attrs):
    """Attributes of a layer with one learned weight per channel (axis 1), or one shared."""

    channel_shared: bool


class ChannelWeightLayer(Layer):
    """A layer whose one Caffe blob holds a weight per channel, or a single one when
    `channel_shared` (PReLU's slopes, Normalize's scale). The state_dict key is "weight"."""

    weight_init: ClassVar[Init] = Init.ONE

    def infer(self, attrs: Attrs, in_shapes: Sequence[Shape], layer: LayerDef) -> list[Shape]:
        if len(in_shapes[0]) < 2:
            raise fail(layer, f"expects an input with a channel axis, got {in_shapes[0]}")
        return [in_shapes[0]]

    def channels(self, attrs: Attrs, in_shapes: Sequence[Shape]) -> int:
        assert isinstance(attrs, ChannelWeightAttrs)
        return 1 if attrs.channel_shared else in_shapes[0][1]

    def blobs(self, attrs: Attrs, in_shapes: Sequence[Shape]) -> list[BlobSpec]:
        return [BlobSpec((self.channels(attrs, in_shapes),), self.weight_init)]

    def param_names(self, attrs: Attrs, in_shapes: Sequence[Shape]) -> tuple[str, ...]:
        return ("weight",)

    def state(
        self, attrs: Attrs, in_shapes: Sequence[Shape], blobs: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        return {"weight": blobs[0].reshape(-1)}
