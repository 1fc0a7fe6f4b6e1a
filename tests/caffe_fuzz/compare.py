"""Run one case through protocaffe and compare it with real Caffe, blob by blob.

protocaffe is driven only through its public entry points (`protocaffe.api.convert`,
`module_from_source`, `ProtocaffeError`), so that a refactor of its internals does not touch
the fuzzer. Every version of every blob is compared this way: for each layer of the net, the
net cut after that layer (a prefix) is converted and run; its outputs (Caffe's rule: the blobs
no layer of the prefix reads, in name order) are compared with the values Caffe's blobs held
right after that layer ran in the whole net (the driver's snapshots). Caffe's forward is
sequential, so a prefix's blobs are the whole net's blobs at that moment; this also compares
the blobs that Caffe changes through shared memory.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from google.protobuf import text_format
from google.protobuf.message import Message

from protocaffe.api import convert, module_from_source
from protocaffe.errors import ProtocaffeError
from protocaffe.proto.schema import message_class

from .oracle import CaffeOutcome

# |ours - theirs| <= RTOL * |theirs| + max(ATOL_SCALE * max|theirs|, ATOL_FLOOR), per element.
RTOL = 1e-4
ATOL_SCALE = 2e-5
ATOL_FLOOR = 1e-6

LOCATED = re.compile(r"^[^\n]*\.(prototxt(:\d+(:\d+)?)?|caffemodel(: byte \d+)?): ")


@dataclass
class Mismatch:
    """The first place where protocaffe and Caffe differ."""

    kind: str  # shape | value | outputs | protocaffe-crash
    layer: str  # the layer the prefix ends with
    layer_type: str
    blob: str = ""
    detail: str = ""
    prefix: int = 0  # index (among the net's layers) of the layer the prefix ends with
    caffe_at: int = 0  # index of that layer among Caffe's layers (Split layers included)
    ours: np.ndarray | None = None
    theirs: np.ndarray | None = None


@dataclass
class Result:
    """What happened to one case on both sides."""

    caffe: CaffeOutcome
    protocaffe_error: str | None = None  # a ProtocaffeError's text
    protocaffe_crash: str | None = None  # any other exception
    mismatch: Mismatch | None = None
    compared_blobs: int = 0
    docstring_outputs: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def protocaffe_accepted(self) -> bool:
        return self.protocaffe_error is None and self.protocaffe_crash is None


def parse_net(text: str) -> Message:
    net: Message = message_class("NetParameter")()
    text_format.Parse(text, net)
    return net


def layers_of(net: Message) -> list[Message]:
    return list(net.layer) or list(net.layers)  # type: ignore[attr-defined]


def net_inputs(net: Message) -> list[str]:
    names = list(net.input)  # type: ignore[attr-defined]
    for layer in layers_of(net):
        if layer.type == "Input":  # type: ignore[attr-defined]
            names += list(layer.top)  # type: ignore[attr-defined]
    return names


def caffe_outputs(net: Message, upto: int | None = None) -> list[str]:
    """Net::Init's outputs: every bottom taken from the available blobs, every top put back;
    what is left, in std::set (name) order. `upto`: only the layers up to that index."""
    available = set(net.input)  # type: ignore[attr-defined]
    for layer in layers_of(net)[: None if upto is None else upto + 1]:
        available.difference_update(layer.bottom)  # type: ignore[attr-defined]
        available.update(layer.top)  # type: ignore[attr-defined]
    return sorted(available)


def silenced_outputs(net: Message, upto: int) -> list[str]:
    """protocaffe's documented rule for a net whose every blob is consumed: the module returns
    the blobs only Silence layers read (Caffe itself reports no output then)."""
    kept = type(net)()
    kept.CopyFrom(net)
    repeated = kept.layer if len(kept.layer) else kept.layers  # type: ignore[attr-defined]
    silenced = set()
    for layer in list(repeated)[: upto + 1]:
        if layer.type == "Silence":
            silenced.update(layer.bottom)
    del repeated[upto + 1 :]
    for position in reversed(range(len(repeated))):
        if repeated[position].type == "Silence":
            del repeated[position]
    return sorted(set(caffe_outputs(kept)) & silenced)


def prefix_text(net: Message, upto: int) -> str:
    cut = type(net)()
    cut.CopyFrom(net)
    repeated = cut.layer if len(cut.layer) else cut.layers  # type: ignore[attr-defined]
    del repeated[upto + 1 :]
    return str(text_format.MessageToString(cut))


def close(ours: np.ndarray, theirs: np.ndarray) -> tuple[bool, str]:
    """Equal within tolerance, with NaN where Caffe has NaN and the same infinities."""
    ours = ours.astype(np.float64)
    theirs = theirs.astype(np.float64)
    nan_ours, nan_theirs = np.isnan(ours), np.isnan(theirs)
    if (nan_ours != nan_theirs).any():
        count = int((nan_ours != nan_theirs).sum())
        return False, f"NaN in different places ({count} of {theirs.size})"
    inf_theirs = np.isinf(theirs)
    if (np.isinf(ours) != inf_theirs).any() or (ours[inf_theirs] != theirs[inf_theirs]).any():
        return False, "infinities differ"
    finite = ~(nan_theirs | inf_theirs)
    if not finite.any():
        return True, ""
    a, b = ours[finite], theirs[finite]
    scale = float(np.abs(b).max())
    limit = RTOL * np.abs(b) + max(ATOL_SCALE * scale, ATOL_FLOOR)
    err = np.abs(a - b)
    if (err <= limit).all():
        return True, ""
    worst = int(np.argmax(err - limit))
    return False, (
        f"max abs error {err.max():.3g} (scale {scale:.3g}); {int((err > limit).sum())} of "
        f"{b.size} values off; e.g. ours {a[worst]:.7g} vs Caffe {b[worst]:.7g}"
    )


def _run_module(
    source: str, class_name: str, state: Any, inputs: Mapping[str, np.ndarray]
) -> list[np.ndarray]:
    module = module_from_source(source, class_name)
    if state is not None:
        module.load_state_dict(state, strict=True)
    module.eval()
    names = list(inspect.signature(module.forward).parameters)
    args = [torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in names]
    with torch.no_grad():
        result = module(*args)
    results = result if isinstance(result, tuple) else (result,)
    return [r.detach().numpy() for r in results]


def docstring_outputs(source: str) -> list[str] | None:
    """The output names the class docstring announces ("outputs 'a', 'b' (Caffe's order)")."""
    match = re.search(r"outputs? ((?:'[^']*'(?:, )?)+)\s*\(Caffe's\s+order\)", source)
    if match is None:
        return None
    return re.findall(r"'([^']*)'", match.group(1))


def judge(case: Path, caffe: CaffeOutcome, inputs: Mapping[str, np.ndarray]) -> Result:
    """Convert case/net.prototxt with protocaffe and compare with Caffe's outcome."""
    result = Result(caffe)
    prototxt = case / "net.prototxt"
    weights = case / "net.caffemodel" if caffe.accepted else None
    try:
        conversion = convert(prototxt, weights)
        result.docstring_outputs = docstring_outputs(conversion.source)
    except ProtocaffeError as error:
        result.protocaffe_error = str(error)
    except Exception as error:  # any other exception is a crash to report
        result.protocaffe_crash = f"{type(error).__name__}: {error}"
    if not caffe.accepted or result.protocaffe_crash is not None:
        return result
    # Where protocaffe refuses a net Caffe runs, the prefixes before the refused layer are
    # still compared: an earlier divergence (a wrong shape) is often the reason.
    net = parse_net(prototxt.read_text())
    layers = layers_of(net)
    snapshots = np.load(case / "snapshots.npz")
    caffe_index = _caffe_indices(layers, caffe)
    cut_shares = _prefixes_that_cut_shares(layers)
    for index, layer in enumerate(layers):
        if layer.type == "Input" or index not in caffe_index:  # type: ignore[attr-defined]
            continue
        if index in cut_shares:
            continue
        mismatch = _compare_prefix(case, net, index, caffe_index[index], snapshots, inputs, result)
        if mismatch is not None:
            result.mismatch = mismatch
            break
    return result


def _prefixes_that_cut_shares(layers: list[Message]) -> set[int]:
    """The prefixes that hold a shared param (`param { name }`) a later layer also holds.

    Caffe loads a caffemodel's copies of a shared blob into one memory, so the full net's
    value is the last copy in the file (net.cpp CopyTrainedLayersFrom after AppendParam's
    ShareData); a net cut before the last holder loads an earlier copy, so its blobs are not
    Caffe's full-net snapshots. Those prefixes are not compared; the full net always is."""
    last_holder: dict[str, int] = {}
    first_holder: dict[str, int] = {}
    for index, layer in enumerate(layers):
        for spec in layer.param:  # type: ignore[attr-defined]
            name = spec if isinstance(spec, str) else spec.name
            if name:
                first_holder.setdefault(name, index)
                last_holder[name] = index
    return {
        index for name, first in first_holder.items() for index in range(first, last_holder[name])
    }


def _caffe_indices(layers: list[Message], caffe: CaffeOutcome) -> dict[int, int]:
    """Our layer index -> Caffe's layer index (Caffe adds Split layers and drops none here)."""
    found: dict[int, int] = {}
    used: set[int] = set()
    for index, layer in enumerate(layers):
        for position, theirs in enumerate(caffe.layers):
            if position not in used and theirs["name"] == layer.name:  # type: ignore
                found[index] = position
                used.add(position)
                break
    return found


def _compare_prefix(
    case: Path,
    net: Message,
    index: int,
    caffe_at: int,
    snapshots: Any,
    inputs: Mapping[str, np.ndarray],
    result: Result,
) -> Mismatch | None:
    layer = layers_of(net)[index]
    name, kind = str(layer.name), str(layer.type)  # type: ignore[attr-defined]
    path = case / f"prefix{index}.prototxt"
    path.write_text(prefix_text(net, index))
    try:
        conversion = convert(path, case / "net.caffemodel")
        values = _run_module(
            conversion.source, conversion.class_name, conversion.state_dict, inputs
        )
    except ProtocaffeError as error:
        return Mismatch("protocaffe-rejects-prefix", name, kind, detail=str(error), prefix=index)
    except Exception as error:
        detail = f"{type(error).__name__}: {error}"
        return Mismatch("protocaffe-crash", name, kind, detail=detail, prefix=index)
    finally:
        path.unlink(missing_ok=True)
    expected = caffe_outputs(net, index) or silenced_outputs(net, index)
    if len(values) != len(expected):
        detail = f"{len(values)} outputs, Caffe has {len(expected)} ({', '.join(expected)})"
        return Mismatch("outputs", name, kind, detail=detail, prefix=index)
    for blob, ours in zip(expected, values, strict=True):
        theirs = snapshots[f"{caffe_at}/{blob}"]
        result.compared_blobs += 1
        if tuple(ours.shape) != tuple(theirs.shape):
            detail = f"shape {tuple(ours.shape)}, Caffe {tuple(theirs.shape)}"
            return Mismatch("shape", name, kind, blob, detail, index, caffe_at, ours, theirs)
        same, detail = close(ours, theirs)
        if not same:
            return Mismatch("value", name, kind, blob, detail, index, caffe_at, ours, theirs)
    return None


def is_located(message: str) -> bool:
    """A protocaffe error names the file and line (file:line: layer "x" (T): ...)."""
    return all(LOCATED.match(line) for line in message.splitlines() if line.strip())
