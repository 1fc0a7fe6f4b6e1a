"""Caffe blobs -> the generated module's state_dict, and writing it (atomically, see
protocaffe.atomic)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocaffe.atomic import atomic_write
from protocaffe.backend.safetensors_writer import ProgressCallback, write_safetensors
from protocaffe.errors import ProtocaffeError, Reporter, SourceLoc
from protocaffe.ir.graph import Attrs, Graph, Node, Shape
from protocaffe.layers import Layer, layer_of
from protocaffe.layers.registry import folded_state

if TYPE_CHECKING:  # numpy is imported only where weights are handled: model.py alone needs none
    import numpy as np

    from protocaffe.frontend.caffemodel import CaffeModel, LayerBlobs


def _fits(actual: Shape, expected: Shape) -> bool:
    """Caffe's BlobProto shape check: equal, or a legacy 4-D (num, channels, height, width)
    shape that is the expected one padded with leading ones."""
    if actual == expected:
        return True
    return (
        len(actual) == 4 and len(expected) <= 4 and (1,) * (4 - len(expected)) + expected == actual
    )


@dataclass(frozen=True)
class _NodeBlobs:
    """One node's checked blobs as read (usually views of the caffemodel's memory map)."""

    attr: str  # the module attribute that holds the node's parameters
    layer: Layer[Any]
    attrs: Attrs
    in_shapes: tuple[Shape, ...]
    blobs: tuple[np.ndarray, ...]
    shapes: tuple[Shape, ...]  # what the prototxt needs each blob to be

    def own_state(self) -> dict[str, np.ndarray]:
        """The layer's entries, relative to its attribute."""
        import numpy as np

        # float32 blobs stay views of the file; only double data is converted, here.
        blobs = [
            np.asarray(blob, dtype=np.float32).reshape(shape)
            for blob, shape in zip(self.blobs, self.shapes, strict=True)
        ]
        return self.layer.state(self.attrs, self.in_shapes, blobs)

    def state(self) -> dict[str, np.ndarray]:
        return {f"{self.attr}.{key}": array for key, array in self.own_state().items()}


@dataclass(frozen=True)
class _FusedBlobs:
    """A node that --optimize folded together (`Node.fused`): its state is computed from the
    states of its original layers, as their layer definitions say (`folded_state`)."""

    attr: str
    node: Node
    parts: tuple[_NodeBlobs | None, ...]  # one per node.fused; None for a layer with no blobs

    def state(self) -> dict[str, np.ndarray]:
        states = [part.own_state() if part is not None else {} for part in self.parts]
        folded = folded_state(self.node.fused, states)
        return {f"{self.attr}.{k}": v for k, v in folded.items()}


class StateArrays(Mapping[str, "np.ndarray"]):
    """The state_dict (float32 numpy arrays) of the emitted module, made one layer at a time.

    Nothing is converted up front: reading an entry runs its layer's `state` on that layer's
    blobs only, so a float32 weight is a view of the caffemodel's memory map and a converted one
    (double data, a transposed InnerProduct) exists only while it is being used. Each thread
    keeps the last layer it read, so that walking the items makes each layer once, and threads
    that walk it at once (the weights writer and the manifest's hashing) never share a layer.
    """

    def __init__(self, nodes: Sequence[_NodeBlobs | _FusedBlobs]) -> None:
        self._nodes = tuple(nodes)
        self._index: dict[str, int] = {}
        for number, node in enumerate(self._nodes):
            for key in node.state():  # views, or one converted layer at a time
                self._index[key] = number
        self._last = threading.local()

    def _state(self, number: int) -> dict[str, np.ndarray]:
        last: tuple[int, dict[str, np.ndarray]] | None = getattr(self._last, "layer", None)
        if last is None or last[0] != number:
            last = self._last.layer = (number, self._nodes[number].state())
        return last[1]

    def __getitem__(self, key: str) -> np.ndarray:
        return self._state(self._index[key])[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


def state_arrays(
    graph: Graph, model: CaffeModel, attrs: Mapping[int, str], reporter: Reporter
) -> StateArrays:
    """The state_dict (as float32 numpy arrays, made on access) of the module emitted for `graph`.

    `attrs` maps nodes (by position) to the module attributes that hold their parameters. Layers are
    matched by name; when the caffemodel has a name twice, the last one wins, as in Caffe.
    Blobs tied by `param { name }` are one parameter: every layer gets the copy Caffe ends up
    with (`_shared_blobs`). Every blob's shape is checked here, before anything is written.
    """
    by_name: dict[str, LayerBlobs] = {layer.name: layer for layer in model.layers}
    shared = _shared_blobs(graph, model, reporter)
    used: set[str] = set()
    nodes: list[_NodeBlobs | _FusedBlobs] = []
    for index, node in enumerate(graph.nodes):
        attr = attrs.get(index)
        if attr is None:
            for original in node.fused or (node,):
                _checked(original, "", by_name, model, used, shared)
            continue  # checked, but the module keeps nothing (a layer without a module)
        if node.fused:
            parts = tuple(
                _checked(original, attr, by_name, model, used, shared) for original in node.fused
            )
            for original, part in zip(node.fused, parts, strict=True):
                _note_weights(original, part, reporter)
            nodes.append(_FusedBlobs(attr, node, parts))
            continue
        blobs = _checked(node, attr, by_name, model, used, shared)
        _note_weights(node, blobs, reporter)
        if blobs is not None:
            nodes.append(blobs)
    left_out = set(graph.left_out)
    for layer in model.layers:
        if layer.name not in used and layer.name not in left_out and layer.blobs:
            reporter.note(
                SourceLoc(model.path, offset=layer.offset),
                "has weights but no layer of that name in the prototxt needs them; ignored",
                layer.name,
                layer.type,
            )
    return StateArrays(nodes)


def _note_weights(node: Node, blobs: _NodeBlobs | None, reporter: Reporter) -> None:
    """The layer's own notes about its trained values (`Layer.weight_notes`), at the layer."""
    if blobs is None:
        return
    shaped = [blob.reshape(shape) for blob, shape in zip(blobs.blobs, blobs.shapes, strict=True)]
    for message in blobs.layer.weight_notes(blobs.attrs, blobs.in_shapes, shaped):
        reporter.note(node.loc, message, node.name, node.op)


def _shared_blobs(
    graph: Graph, model: CaffeModel, reporter: Reporter
) -> dict[str, tuple[np.ndarray, str]]:
    """For each `param { name }`: the blob Caffe ends up with, and the layer it came from.

    Caffe's Net::CopyTrainedLayersFrom copies the caffemodel's layers in file order into the
    net's layers of the same name; the layers that share a blob share its memory, so the last
    copy in the file wins. A note says so when the copies differ."""
    import numpy as np

    # Every layer of the whole net that holds a copy, also those a pass left out (--outputs).
    shares: dict[str, list[tuple[int, str]]] = {}  # layer name -> (blob index, share name)
    for shared in graph.shared_params:
        for layer_name, index in shared.holders:
            shares.setdefault(layer_name, []).append((index, shared.name))
    copies: dict[str, list[tuple[np.ndarray, str]]] = {}
    for layer in model.layers:
        for index, share in shares.get(layer.name, ()):
            if index < len(layer.blobs):
                copies.setdefault(share, []).append((layer.blobs[index], layer.name))
    for share, found in copies.items():
        last, source = found[-1]
        differ = [name for blob, name in found[:-1] if not np.array_equal(blob, last)]
        if differ:
            names = ", ".join(repr(name) for name in differ)
            reporter.note(
                SourceLoc(model.path),
                f"the copies of shared param {share!r} differ (layer {names} and {source!r}); "
                f"Caffe loads them in file order into one blob, so the last, {source!r}'s, wins",
            )
    return {share: found[-1] for share, found in copies.items()}


def _checked(
    node: Node,
    attr: str,
    by_name: Mapping[str, LayerBlobs],
    model: CaffeModel,
    used: set[str],
    shared: Mapping[str, tuple[np.ndarray, str]],
) -> _NodeBlobs | None:
    """The node's blobs from the caffemodel, checked against the shapes the prototxt needs
    (a shared blob: the copy Caffe keeps); None for a layer without weights."""
    kind = layer_of(node)
    in_shapes = tuple(v.shape for v in node.inputs)
    specs = kind.blobs(node.attrs, in_shapes)
    if not specs:
        return None
    source = by_name.get(node.name)
    shares = [spec.share for spec in node.param_specs]
    shares += [""] * (len(specs) - len(shares))
    if source is None and len(shares) == len(specs) and all(s in shared for s in shares):
        # Every blob is shared and another layer's copy holds it: Caffe needs no copy of its own.
        blobs = tuple(shared[s][0] for s in shares)
        return _NodeBlobs(attr, kind, node.attrs, in_shapes, blobs, tuple(s.shape for s in specs))
    if source is None:
        raise ProtocaffeError.at(
            node.loc,
            f"the caffemodel {model.path} has no weights for this layer",
            node.name,
            node.op,
        )
    used.add(node.name)
    # Errors about a layer's blobs point at the layer in the prototxt, where its shapes
    # come from; the message names the caffemodel.
    if len(source.blobs) != len(specs):
        count = len(source.blobs)
        needed = ", ".join(str(spec.shape) for spec in specs)
        raise ProtocaffeError.at(
            node.loc,
            f"{model.path} has {count} blob{'' if count == 1 else 's'} for this layer, but "
            f"it needs {len(specs)}: {needed}",
            node.name,
            node.op,
        )
    for index, (blob, spec) in enumerate(zip(source.blobs, specs, strict=True)):
        if not _fits(tuple(blob.shape), spec.shape):
            raise ProtocaffeError.at(
                node.loc,
                f"blob {index} has shape {tuple(blob.shape)} in {model.path}, but this "
                f"layer needs {spec.shape}",
                node.name,
                node.op,
            )
    blobs = tuple(
        shared[share][0] if share in shared else blob
        for blob, share in zip(source.blobs, shares, strict=True)
    )
    return _NodeBlobs(attr, kind, node.attrs, in_shapes, blobs, tuple(spec.shape for spec in specs))


def write_state(
    path: Path,
    state: Mapping[str, np.ndarray],
    fmt: str,
    progress: ProgressCallback | None = None,
) -> None:
    """Write a state_dict as safetensors (default) or as a torch `.pt` file, atomically.

    safetensors is streamed tensor by tensor (see backend/safetensors_writer.py); `progress` is
    called with (bytes written, total bytes) as it goes.
    """
    with atomic_write(path) as tmp:
        write_state_to(tmp, state, fmt, progress)


def write_state_to(
    path: Path,
    state: Mapping[str, np.ndarray],
    fmt: str,
    progress: ProgressCallback | None = None,
) -> None:
    """`write_state` straight into `path` (a temporary file of the caller's `atomic_write`)."""
    writers: dict[str, Callable[[Path, Mapping[str, np.ndarray], ProgressCallback | None], None]]
    writers = {"safetensors": _write_safetensors, "pt": _write_pt}
    writers[fmt](path, state, progress)


def _write_safetensors(
    path: Path, state: Mapping[str, np.ndarray], progress: ProgressCallback | None
) -> None:
    from protocaffe.frontend.regions import file_region

    # "format": "pt" tells loaders such as transformers that these are PyTorch weights.
    # file_region: float32 weights are copied from the caffemodel file by the kernel.
    write_safetensors(path, state, metadata={"format": "pt"}, progress=progress, locate=file_region)


def _write_pt(
    path: Path, state: Mapping[str, np.ndarray], progress: ProgressCallback | None
) -> None:
    import numpy as np
    import torch

    state_dict = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
    # Through a file object: given a path, torch.save names the archive's folder after the file,
    # and the file here is /proc/self/fd/N, whose N depends on what else has files open.
    with open(path, "wb") as out:
        torch.save(state_dict, out)
