"""Seeded random weights for a prototxt, written as a .caffemodel.

Weights are scaled by fan-in and BatchNorm variances kept positive, so that activations stay of
order 1 through deep nets: plain N(0, 0.1) saturates them (AlexNet's logits reach 1e5).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from protocaffe.errors import Reporter
from protocaffe.frontend.caffemodel_writer import write_caffemodel
from protocaffe.frontend.lower import build_graph
from protocaffe.frontend.prototxt import read_prototxt
from protocaffe.ir.graph import Graph
from protocaffe.layers import layer_of
from protocaffe.layers.base import BlobSpec, Init


def random_blob(spec: BlobSpec, rng: np.random.Generator) -> np.ndarray:
    shape = spec.shape
    if spec.init is Init.FAN_IN:
        values = rng.normal(0.0, 1.0 / np.sqrt(spec.fan_in), shape)
    elif spec.init is Init.SMALL:
        values = rng.normal(0.0, 0.1, shape)
    elif spec.init is Init.ONE:
        values = 1.0 + rng.normal(0.0, 0.1, shape)
    elif spec.init is Init.POSITIVE:
        values = rng.uniform(0.5, 1.5, shape)
    elif spec.init is Init.UNIT:
        values = np.ones(shape)
    else:
        values = rng.uniform(0.0, 0.5, shape)
    return values.astype(np.float32)


def random_weights(
    prototxt: str | os.PathLike[str],
    output: str | os.PathLike[str],
    seed: int = 0,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    reporter: Reporter | None = None,
) -> None:
    """Write seeded random weights for every layer of `prototxt` that has weights."""
    reporter = reporter if reporter is not None else Reporter()
    net = read_prototxt(prototxt, reporter)
    shapes = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}
    write_random_weights(build_graph(net, reporter, shapes), output, seed)


def write_random_weights(graph: Graph, output: str | os.PathLike[str], seed: int = 0) -> None:
    """`random_weights` for a lowered graph (one no pass has changed: each node a Caffe layer).

    Blobs tied by `param { name }` get equal copies (the first layer's), as Caffe saves them."""
    rng = np.random.default_rng(seed)
    layers = []
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
        layers.append((node.name, node.op, blobs))
    write_caffemodel(output, graph.name, layers)
