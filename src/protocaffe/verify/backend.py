"""What `verify` asks of a reference (real Caffe, OpenCV 4.x or the numpy reference), and how it
names the Caffe layers whose blobs a reference gives.

A reference runs the net and yields, layer by layer in the prototxt's order, each layer's tops
(`RefStep`). A layer is named by its position in the prototxt (`NetDef.layers`), never by its
name alone: Caffe lets layers share a name (HED has five Crop layers called `crop`).

A reference that cannot run the net raises `ReferenceUnavailable`: one line, naming the layer
and where it is written when the reason is a layer (a type it lacks, a parameter it refuses).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from protocaffe.errors import Diagnostic, SourceLoc
from protocaffe.frontend.prototxt import LayerDef, NetDef

REFERENCE_NAMES = ("caffe", "opencv", "numpy")


class ReferenceUnavailable(Exception):
    """The reference cannot run this net (not installed, a layer it lacks, a file too large).

    `str()` is one line: `file:line: layer "x" (Type): reason` when a layer is to blame."""

    def __init__(
        self,
        reason: str,
        *,
        loc: SourceLoc | None = None,
        layer: str | None = None,
        layer_type: str | None = None,
        reference: str | None = None,
    ) -> None:
        self.reason = reason
        self.loc = loc
        self.layer = layer
        self.layer_type = layer_type
        self.reference = reference
        super().__init__(self.line())

    @classmethod
    def at_layer(cls, layer: LayerDef, reason: str, reference: str) -> ReferenceUnavailable:
        return cls(
            reason, loc=layer.loc, layer=layer.name, layer_type=layer.type, reference=reference
        )

    def line(self, suffix: str = "") -> str:
        text = self.reason + suffix
        if self.loc is None:
            return " ".join(text.split())
        return str(Diagnostic(self.loc, text, self.layer, self.layer_type))


@dataclass(frozen=True)
class RefStep:
    """One layer's tops after it ran: `layer` is its position in `NetDef.layers`, `tops` maps
    a top's position to its value (a reference may give only some tops). The arrays may be the
    reference's live blobs: copy what must outlive the next step."""

    layer: int
    tops: Mapping[int, np.ndarray]


class Reference(Protocol):
    """A way to run the Caffe net. `prepare` does the checks that are quick (is it installed,
    does it know every layer type, can it read the file) and raises ReferenceUnavailable;
    `run` may still raise it when the reference stops part way."""

    name: str

    def version(self) -> str: ...

    def prepare(self) -> None: ...

    def run(self, inputs: Mapping[str, np.ndarray]) -> Iterator[RefStep]: ...

    def close(self) -> None: ...


def layer_positions(net: NetDef) -> dict[str, list[int]]:
    """Layer name -> the positions of the layers with that name, in file order."""
    positions: dict[str, list[int]] = {}
    for index, layer in enumerate(net.layers):
        positions.setdefault(layer.name, []).append(index)
    return positions


def match_layer_list(net: NetDef, names: list[str]) -> dict[int, int]:
    """Map a reference's own list of layers (real Caffe's, which adds a Split layer after each
    blob read by several layers) to prototxt positions: {its index: prototxt position}. Layers
    are matched in order by name; a name that is not the next prototxt layer's is one the
    reference added."""
    found: dict[int, int] = {}
    ours = 0
    for theirs, name in enumerate(names):
        if ours < len(net.layers) and net.layers[ours].name == name:
            found[theirs] = ours
            ours += 1
    return found


def layer_at_line(net: NetDef, line: int) -> LayerDef | None:
    """The layer whose text holds `line` of the prototxt (the last one starting at or before)."""
    best: LayerDef | None = None
    for layer in net.layers:
        if 0 < layer.loc.line <= line and (best is None or layer.loc.line >= best.loc.line):
            best = layer
    return best


def file_size(path: str | os.PathLike[str] | None) -> int:
    if path is None:
        return 0
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
