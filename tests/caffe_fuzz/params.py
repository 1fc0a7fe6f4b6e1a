"""Random layer parameter messages, drawn from the caffe.proto descriptor.

Every field of a layer's parameter message that both schemas know (protocaffe's caffe.desc and
the oracle's caffe.proto) is set or left unset at random; a set field takes a value from a pool
of boundary values for its type (0, 1, -1, odd numbers, a size larger than the input, 0.5, ...)
or, more often, from the layer recipe's pool of plausible values, so that a good share of the
nets is valid and their numbers get compared. Fields that spell the same thing two ways
(kernel_size vs kernel_h/kernel_w, pad vs pad_h/pad_w, round_mode vs ceil_mode, axis vs
concat_dim/slice_dim, img_size vs img_h/img_w, step vs step_h/step_w) are drawn as a group:
one spelling, the other, half of a pair, or both.

Nothing here knows what a valid net is: real Caffe decides. The pools only steer.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from protocaffe.proto.schema import message_class

# Fields never drawn: fillers only initialise weights that the fuzzer overwrites (and an unknown
# filler type aborts Caffe for a reason that has nothing to do with the layer); engine CUDNN
# does not exist in a CPU build; nested messages other than those listed have their own recipe.
SKIPPED = frozenset(
    {
        "weight_filler",
        "bias_filler",
        "filler",
        "scale_filler",
        "engine",
        "save_output_param",
        "visualize",
        "visualize_threshold",
        "save_file",
    }
)

INT_BOUNDARY = (0, 1, -1, 2, 3, -2, 5, 7)
UINT_BOUNDARY = (0, 1, 2, 3, 5, 7, 9)
FLOAT_BOUNDARY = (0.0, 1.0, -1.0, 0.5, 2.0, 1e-3, -0.5, 3.7, 1e-9)

INTEGER_TYPES = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
}
UNSIGNED_TYPES = {
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64,
}
FLOAT_TYPES = {FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE}


@dataclass
class Draw:
    """How one parameter message is drawn.

    `hints` are the plausible values per field; `groups` lists dialect groups, each a list of
    (weight, fields) spellings (a spelling may set no field at all); `p_set` is the
    chance that a field outside any group is set; `p_boundary` the chance that a set field
    takes a boundary value instead of a plausible one; `fixed` fields are set as given."""

    hints: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    groups: Sequence[Sequence[tuple[float, Sequence[str]]]] = ()
    p_set: float = 0.4
    p_boundary: float = 0.12
    fixed: Mapping[str, Any] = field(default_factory=dict)
    max_repeated: int = 3
    skip: frozenset[str] = frozenset()


def boundary_pool(fd: FieldDescriptor, larger: int) -> list[Any]:
    """Boundary values for a field's type; `larger` is a size larger than the input."""
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return [False, True]
    if fd.type == FieldDescriptor.TYPE_ENUM:
        assert fd.enum_type is not None
        return [v.name for v in fd.enum_type.values]
    if fd.type in INTEGER_TYPES:
        return [*INT_BOUNDARY, larger]
    if fd.type in UNSIGNED_TYPES:
        return [*UINT_BOUNDARY, larger]
    if fd.type in FLOAT_TYPES:
        return list(FLOAT_BOUNDARY)
    return []


def assign(message: Message, fd: FieldDescriptor, value: Any) -> None:
    if fd.type == FieldDescriptor.TYPE_ENUM and isinstance(value, str):
        assert fd.enum_type is not None
        value = fd.enum_type.values_by_name[value].number
    if fd.is_repeated:
        getattr(message, fd.name).append(value)
    else:
        setattr(message, fd.name, value)


class ParamDrawer:
    """Draws parameter messages restricted to the fields the oracle's schema also has."""

    def __init__(self, oracle_schema: Mapping[str, frozenset[str]]) -> None:
        self.oracle_schema = oracle_schema

    def known(self, message_name: str, field_name: str) -> bool:
        return field_name in self.oracle_schema.get(message_name, frozenset())

    def draw(
        self, rng: random.Random, message_name: str, how: Draw, larger: int = 10
    ) -> tuple[Message, list[str]]:
        """A random `message_name` and the fields it sets, in the order they were drawn.

        Negative values for unsigned fields cannot live in a message: those come back as raw
        text lines in the second element (`name: -1`), to be appended inside the block."""
        message = message_class(message_name)()
        raw: list[str] = []
        # types-protobuf types DESCRIPTOR as the union of the Python and upb classes
        descriptor = cast(Descriptor, message.DESCRIPTOR)
        grouped = {f for group in how.groups for _, spelling in group for f in spelling}
        for group in how.groups:
            spelling = rng.choices([s for _, s in group], [w for w, _ in group])[0]
            for name in spelling:
                if self.known(message_name, name):
                    self._set(rng, message, descriptor.fields_by_name[name], how, larger, raw)
        for fd in descriptor.fields:
            if fd.name in grouped or fd.name in SKIPPED or fd.name in how.skip:
                continue
            if not self.known(message_name, fd.name):
                continue
            if fd.name in how.fixed:
                value = how.fixed[fd.name]
                for one in value if isinstance(value, list) else [value]:
                    assign(message, fd, one)
                continue
            if fd.type == FieldDescriptor.TYPE_MESSAGE or fd.type == FieldDescriptor.TYPE_STRING:
                continue  # nested messages and strings: only where a recipe draws them
            if rng.random() < how.p_set:
                self._set(rng, message, fd, how, larger, raw)
        return message, raw

    def _set(
        self,
        rng: random.Random,
        message: Message,
        fd: FieldDescriptor,
        how: Draw,
        larger: int,
        raw: list[str],
    ) -> None:
        count = rng.randint(1, how.max_repeated) if fd.is_repeated else 1
        if fd.is_repeated and rng.random() < 0.6:
            count = 1
        for _ in range(count):
            hints = how.hints.get(fd.name)
            if hints and rng.random() >= how.p_boundary:
                value = rng.choice(list(hints))
            else:
                pool = boundary_pool(fd, larger)
                if not pool:
                    return
                value = rng.choice(pool)
                if fd.type in UNSIGNED_TYPES and rng.random() < 0.03:
                    raw.append(f"{fd.name}: -1")  # not a uint: the text parser must refuse it
                    continue
            if fd.type in UNSIGNED_TYPES and isinstance(value, int) and value < 0:
                raw.append(f"{fd.name}: {value}")
                continue
            assign(message, fd, value)
