"""Read a deploy prototxt (V2, legacy V1 or V0) into a `NetDef`: inputs and layers in V2 form.

What happens here is what Caffe's `ReadNetParamsFromTextFile` + `UpgradeNetAsNeeded` +
`FilterNet` do: old formats are upgraded to `layer {}` messages, the include/exclude rules select
the layers of a net state (a deploy file is run in the TEST phase at level 0 with the stages its
own `state {}` names, as `caffe.Net(file, caffe.TEST)` runs it; `phase="TRAIN"`, `level` and
`stages` select another state, as `caffe.Net(file, phase, level, stages)` does), and the input
declarations (`input` + `input_dim`, `input` + `input_shape`, or `Input` layers) become
`InputDef`s.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from protocaffe.errors import ProtocaffeError, Reporter, SourceLoc
from protocaffe.frontend.textformat import Locations, parse_text
from protocaffe.frontend.upgrade import V0_TYPES, V1_TYPES, copy_common_params, upgrade_v0
from protocaffe.proto.caffe_types import LayerParameter
from protocaffe.proto.schema import message_class

Shape = tuple[int, ...]

PHASES = {"TRAIN": 0, "TEST": 1}


@dataclass(frozen=True)
class InputDef:
    name: str
    shape: Shape
    loc: SourceLoc


@dataclass(frozen=True)
class LayerDef:
    """One Caffe layer in V2 form. `param` is the LayerParameter message (schema defaults apply).
    It is a `protocaffe.layers.base.LayerSource`: what the layer definitions read."""

    name: str
    type: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    param: LayerParameter
    loc: SourceLoc
    locations: Locations
    # The fork dialects the layer is read in (frontend/dialects.py sets them; see --dialect).
    dialects: frozenset[str] = frozenset()


@dataclass(frozen=True)
class NetDef:
    name: str
    path: str
    inputs: tuple[InputDef, ...]
    layers: tuple[LayerDef, ...]
    # The layers of the file that the net state's include/exclude rules leave out, by name.
    left_out: tuple[str, ...] = ()


@dataclass(frozen=True)
class NetState:
    """Caffe's NetState: what a layer's include/exclude rules are checked against. The Net
    constructor sets the phase and the level it is given (0 by default) and adds the stages it
    is given to those of the file's own `state {}` (net.cpp, Net::Net)."""

    phase: str = "TEST"
    level: int = 0
    stages: tuple[str, ...] = ()

    def described(self) -> str:
        """'the TEST phase', with the level and the stages when they are set."""
        words = [f"the {self.phase} phase"]
        if self.level:
            words.append(f"level {self.level}")
        if self.stages:
            words.append("stages " + ", ".join(repr(stage) for stage in self.stages))
        return ", ".join(words)


def _meets(state: NetState, rule: Any) -> bool:
    """Caffe's StateMeetsRule (net.cpp)."""
    if rule.HasField("phase") and rule.phase != PHASES[state.phase]:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    if any(stage not in state.stages for stage in rule.stage):
        return False
    return not any(stage in state.stages for stage in rule.not_stage)


def _in_state(layer: Any, state: NetState, loc: SourceLoc) -> bool:
    """Whether FilterNet (net.cpp) keeps `layer`: one of its include rules is met, or, without
    include rules, none of its exclude rules."""
    if layer.include and layer.exclude:  # Caffe CHECKs this and aborts
        raise ProtocaffeError.at(
            loc, "specify either include rules or exclude rules, not both", layer.name, layer.type
        )
    if layer.include:
        return any(_meets(state, rule) for rule in layer.include)
    return not any(_meets(state, rule) for rule in layer.exclude)


def _v1_layers(net: Any, locations: Locations, path: str) -> list[tuple[Any, SourceLoc]]:
    v1_enum = message_class("V1LayerParameter").DESCRIPTOR.enum_types_by_name["LayerType"]
    upgraded: list[tuple[Any, SourceLoc]] = []
    layer_cls: Any = message_class("LayerParameter")
    for old in net.layers:
        loc = locations.of(old) or SourceLoc(path)
        new = layer_cls()
        new.bottom.extend(old.bottom)
        new.top.extend(old.top)
        new.include.extend(old.include)
        new.exclude.extend(old.exclude)
        if old.HasField("layer"):  # V0: the layer's own fields live in a nested message
            v0 = old.layer
            new.name = v0.name
            new.type = V0_TYPES.get(v0.type, v0.type)
            upgrade_v0(v0, new)
            _upgrade_param_specs(v0, new)
        else:
            new.name = old.name
            enum_name = v1_enum.values_by_number[old.type].name if old.HasField("type") else ""
            new.type = V1_TYPES.get(enum_name, enum_name)
            copy_common_params(old, new)
            _upgrade_param_specs(old, new)
        locations.record(new, loc)
        upgraded.append((new, loc))
    return upgraded


def _upgrade_param_specs(old: Any, new: Any) -> None:
    """V1's per-blob lists (`param` names, `blob_share_mode`, `blobs_lr`, `weight_decay`; V0
    has the last two) become one ParamSpec per blob, as UpgradeV1LayerParameter
    (upgrade_proto.cpp) makes them."""
    fields = (
        ("param", "name"),
        ("blob_share_mode", "share_mode"),
        ("blobs_lr", "lr_mult"),
        ("weight_decay", "decay_mult"),
    )
    for old_field, spec_field in fields:
        if old_field not in old.DESCRIPTOR.fields_by_name:
            continue
        for index, value in enumerate(getattr(old, old_field)):
            while len(new.param) <= index:
                new.param.add()
            setattr(new.param[index], spec_field, value)


def _declared_inputs(net: Any, locations: Locations, path: str) -> list[InputDef]:
    """`input` + `input_dim` / `input_shape` at the top of the file."""
    names = list(net.input)
    if not names:
        if net.input_dim or net.input_shape:
            loc = locations.of_field(net, "input_dim") or locations.of_field(net, "input_shape")
            raise ProtocaffeError.at(loc or SourceLoc(path), "input_dim/input_shape without input")
        return []
    loc = locations.of_field(net, "input") or SourceLoc(path)
    if net.input_shape:
        if len(net.input_shape) != len(names):
            raise ProtocaffeError.at(
                loc, f"{len(names)} inputs but {len(net.input_shape)} input_shape entries"
            )
        shapes = [tuple(int(d) for d in s.dim) for s in net.input_shape]
    elif net.input_dim:
        dims = [int(d) for d in net.input_dim]
        if len(dims) != 4 * len(names):
            raise ProtocaffeError.at(
                loc, f"{len(names)} inputs need {4 * len(names)} input_dim values, got {len(dims)}"
            )
        shapes = [tuple(dims[4 * i : 4 * i + 4]) for i in range(len(names))]
    else:
        raise ProtocaffeError.at(loc, "input without input_dim or input_shape")
    return [InputDef(n, s, loc) for n, s in zip(names, shapes, strict=True)]


def read_prototxt_text(
    text: str,
    path: str,
    reporter: Reporter,
    phase: str = "TEST",
    *,
    level: int = 0,
    stages: Sequence[str] = (),
) -> NetDef:
    """Parse prototxt text, keeping the layers of the net state of `phase` ("TEST" or
    "TRAIN"), `level` and `stages` (added to the file's own `state { stage }`), as
    `caffe.Net(path, phase, level=level, stages=stages)` keeps them. `path` is only used in
    diagnostics."""
    locations = Locations()
    net: Any = message_class("NetParameter")()
    parse_text(text, path, net, reporter, locations)
    if net.layer and net.layers:
        raise ProtocaffeError.at(SourceLoc(path, 1), "file mixes 'layer' (V2) and 'layers' (V1)")
    if net.layers:
        raw = _v1_layers(net, locations, path)
    else:
        raw = [(layer, locations.of(layer) or SourceLoc(path)) for layer in net.layer]

    inputs = _declared_inputs(net, locations, path)
    layers: list[LayerDef] = []
    state = NetState(phase, level, (*net.state.stage, *stages))
    left_out: list[str] = []
    for msg, loc in raw:
        if not _in_state(msg, state, loc):
            reporter.note(loc, f"not in {state.described()}; left out", msg.name, msg.type)
            left_out.append(msg.name)
            continue
        layers.append(
            LayerDef(
                name=msg.name,
                type=msg.type,
                bottoms=tuple(msg.bottom),
                tops=tuple(msg.top),
                param=msg,
                loc=loc,
                locations=locations,
            )
        )
    for shape_def in inputs:
        _check_shape(shape_def.shape, shape_def.loc, shape_def.name)
    return NetDef(net.name, path, tuple(inputs), tuple(layers), tuple(left_out))


def _check_shape(shape: Shape, loc: SourceLoc, name: str) -> None:
    if not shape or any(d <= 0 for d in shape):
        raise ProtocaffeError.at(loc, f'input "{name}" has a non-positive dimension: {shape}')


def read_prototxt(
    path: str | os.PathLike[str],
    reporter: Reporter,
    phase: str = "TEST",
    *,
    level: int = 0,
    stages: Sequence[str] = (),
) -> NetDef:
    """Read a prototxt file (the layers of a net state, see `read_prototxt_text`). Diagnostics
    name the path as given (relative paths stay relative)."""
    shown = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ProtocaffeError.at(SourceLoc(shown), f"cannot read file: {exc.strerror}") from None
    if not data.strip():
        raise ProtocaffeError.at(SourceLoc(shown), "empty file: no layers")
    try:
        # A byte-order mark (Windows editors write one) is not part of the text.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        hint = " (is this a binary .caffemodel?)" if b"\x00" in data[:4096] else ""
        raise ProtocaffeError.at(
            SourceLoc(shown, line), f"not UTF-8 text at byte {exc.start}{hint}"
        ) from None
    return read_prototxt_text(text, shown, reporter, phase, level=level, stages=stages)
