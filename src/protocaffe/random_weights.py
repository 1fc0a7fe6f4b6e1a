"""Seeded random weights for a prototxt, written as a .caffemodel.

Weights are scaled by fan-in and BatchNorm variances kept positive, so that activations stay of
order 1 through deep nets: plain N(0, 0.1) saturates them (AlexNet's logits reach 1e5).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Mapping, Sequence

import numpy as np

from protocaffe.errors import Reporter
from protocaffe.frontend.caffemodel_writer import write_caffemodel
from protocaffe.frontend.lower import build_graph
from protocaffe.frontend.prototxt import read_prototxt
from protocaffe.ir.graph import Graph
from protocaffe.layers import layer_of
from protocaffe.layers.base import BlobSpec, Init

# Values are drawn in float64 and stored in float32 a slab at a time (rows of the first axis),
# so that a 400 MB blob (VGG16's fc6) never needs its 800 MB float64 copy; numpy's Generator
# draws the same sequence whatever the slab sizes.
_SLAB_VALUES = 1 << 22


def _draw(spec: BlobSpec, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
    if spec.init is Init.FAN_IN:
        return rng.normal(0.0, 1.0 / np.sqrt(spec.fan_in), size)
    if spec.init is Init.SMALL:
        return rng.normal(0.0, 0.1, size)
    if spec.init is Init.ONE:
        return 1.0 + rng.normal(0.0, 0.1, size)
    if spec.init is Init.POSITIVE:
        return rng.uniform(0.5, 1.5, size)
    if spec.init is Init.UNIT:
        return np.ones(size)
    return rng.uniform(0.0, 0.5, size)


def random_blob(spec: BlobSpec, rng: np.random.Generator) -> np.ndarray:
    shape = tuple(spec.shape)
    if not shape or int(np.prod(shape)) <= _SLAB_VALUES:
        return _draw(spec, rng, shape).astype(np.float32)
    out = np.empty(shape, dtype=np.float32)
    row = int(np.prod(shape[1:]))
    step = max(1, _SLAB_VALUES // max(row, 1))
    for start in range(0, shape[0], step):
        stop = min(start + step, shape[0])
        out[start:stop] = _draw(spec, rng, (stop - start, *shape[1:]))
    return out


def random_weights(
    prototxt: str | os.PathLike[str],
    output: str | os.PathLike[str],
    seed: int = 0,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    reporter: Reporter | None = None,
    dialects: Collection[str] = (),
) -> None:
    """Write seeded random weights for every layer of `prototxt` that has weights."""
    reporter = reporter if reporter is not None else Reporter()
    net = read_prototxt(prototxt, reporter)
    shapes = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}
    write_random_weights(build_graph(net, reporter, shapes, dialects), output, seed)


def write_random_weights(graph: Graph, output: str | os.PathLike[str], seed: int = 0) -> None:
    """`random_weights` for a lowered graph (one no pass has changed: each node a Caffe layer).

    Blobs tied by `param { name }` get equal copies (the first layer's), as Caffe saves them."""
    rng = np.random.default_rng(seed)

    def layers() -> Iterator[tuple[str, str, list[np.ndarray]]]:
        # One layer's blobs at a time: the writer encodes each before the next is drawn. Blobs
        # shared by name (ParamSpec.name) are drawn once and written to every holder, as
        # Caffe's shared parameters are one blob.
        shared: dict[str, np.ndarray] = {}
        for node in graph.nodes:
            specs = layer_of(node).blobs(node.attrs, [v.shape for v in node.inputs])
            if not specs:
                continue
            shares = [p.share for p in node.param_specs] + [""] * len(specs)
            blobs = []
            for spec, share in zip(specs, shares, strict=False):
                if share and share in shared:
                    blobs.append(shared[share])
                    continue
                blob = random_blob(spec, rng)
                if share:
                    shared[share] = blob
                blobs.append(blob)
            yield (node.name, node.op, blobs)

    write_caffemodel(output, graph.name, layers())
