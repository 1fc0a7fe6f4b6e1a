"""Caffe blobs -> the generated module's state_dict, and writing it to disk atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from protocaffe.errors import ProtocaffeError, Reporter, SourceLoc
from protocaffe.frontend.caffemodel import CaffeModel, LayerBlobs
from protocaffe.ir.graph import Graph, Shape
from protocaffe.layers import lookup


def _fits(actual: Shape, expected: Shape) -> bool:
    """Caffe's BlobProto shape check: equal, or a legacy 4-D (num, channels, height, width)
    shape that is the expected one padded with leading ones."""
    if actual == expected:
        return True
    return (
        len(actual) == 4 and len(expected) <= 4 and (1,) * (4 - len(expected)) + expected == actual
    )


def state_arrays(
    graph: Graph, model: CaffeModel, attrs: Mapping[str, str], reporter: Reporter
) -> dict[str, np.ndarray]:
    """The state_dict (as float32 numpy arrays) of the module emitted for `graph`.

    `attrs` maps node names to the module attributes that hold their parameters. Layers are
    matched by name; when the caffemodel has a name twice, the last one wins, as in Caffe.
    """
    by_name: dict[str, LayerBlobs] = {layer.name: layer for layer in model.layers}
    used: set[str] = set()
    state: dict[str, np.ndarray] = {}
    for node in graph.nodes:
        kind = lookup(node.op)
        assert kind is not None
        in_shapes = [v.shape for v in node.inputs]
        specs = kind.blobs(node.attrs, in_shapes)
        if not specs:
            continue
        source = by_name.get(node.name)
        if source is None:
            raise ProtocaffeError.at(
                node.loc,
                f"the caffemodel {model.path} has no weights for this layer",
                node.name,
                node.op,
            )
        used.add(node.name)
        if len(source.blobs) != len(specs):
            raise ProtocaffeError.at(
                node.loc,
                f"the caffemodel has {len(source.blobs)} blobs for this layer, "
                f"expected {len(specs)}",
                node.name,
                node.op,
            )
        blobs: list[np.ndarray] = []
        for index, (blob, spec) in enumerate(zip(source.blobs, specs, strict=True)):
            if not _fits(tuple(blob.shape), spec.shape):
                raise ProtocaffeError.at(
                    SourceLoc(model.path, offset=source.offset),
                    f"blob {index} has shape {tuple(blob.shape)} in the caffemodel, but the "
                    f"prototxt needs {spec.shape}",
                    node.name,
                    node.op,
                )
            blobs.append(np.asarray(blob, dtype=np.float32).reshape(spec.shape))
        for key, array in kind.state(node.attrs, in_shapes, blobs).items():
            state[f"{attrs[node.name]}.{key}"] = array
    for layer in model.layers:
        if layer.name not in used and layer.blobs:
            reporter.note(
                SourceLoc(model.path, offset=layer.offset),
                "has weights but no layer of that name in the prototxt needs them; ignored",
                layer.name,
                layer.type,
            )
    return state


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` only if the body succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_state(path: Path, state: Mapping[str, np.ndarray], fmt: str) -> None:
    """Write a state_dict as safetensors (default) or as a torch `.pt` file."""
    writers: dict[str, Callable[[Path, Mapping[str, np.ndarray]], None]] = {
        "safetensors": _write_safetensors,
        "pt": _write_pt,
    }
    with atomic_write(path) as tmp:
        writers[fmt](tmp, state)


def _write_safetensors(path: Path, state: Mapping[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(path))


def _write_pt(path: Path, state: Mapping[str, np.ndarray]) -> None:
    import torch

    torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, str(path))
