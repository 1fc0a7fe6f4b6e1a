"""One hand-written net through real Caffe and protocaffe: the regression tests' helper."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .campaign import examine, write_case
from .classify import Verdict
from .compare import layers_of, parse_net
from .oracle import CaffeOutcome, Oracle


def input_shapes(text: str) -> dict[str, tuple[int, ...]]:
    """The net's declared inputs: Input layers, `input` + `input_shape`, or `input_dim`."""
    net = parse_net(text)
    shapes: dict[str, tuple[int, ...]] = {}
    declared = list(net.input)  # type: ignore[attr-defined]
    dims = list(net.input_dim)  # type: ignore[attr-defined]
    for index, name in enumerate(declared):
        if len(net.input_shape) > index:  # type: ignore[attr-defined]
            shapes[name] = tuple(net.input_shape[index].dim)  # type: ignore[attr-defined]
        else:
            shapes[name] = tuple(dims[4 * index : 4 * index + 4])
    for layer in layers_of(net):
        if layer.type == "Input":  # type: ignore[attr-defined]
            params = list(layer.input_param.shape)  # type: ignore[attr-defined]
            for position, top in enumerate(layer.top):  # type: ignore[attr-defined]
                shape = params[position] if position < len(params) else params[0]
                shapes[top] = tuple(shape.dim)
    return shapes


def check(
    oracle: Oracle,
    folder: Path,
    text: str,
    inputs: Mapping[str, np.ndarray] | None = None,
    seed: int | None = 0,
    caffemodel: Path | None = None,
) -> tuple[Verdict, CaffeOutcome]:
    """Run `text` in Caffe (weights from `seed`, or `caffemodel` when given) and in protocaffe;
    the verdict says whether they agree (see classify.py)."""
    arrays = dict(inputs or {})
    rng = np.random.default_rng(12345)
    for name, shape in input_shapes(text).items():
        if name not in arrays:
            arrays[name] = rng.standard_normal(shape).astype(np.float32)
    write_case(folder, text, arrays, None if caffemodel is not None else seed)
    if caffemodel is not None:
        (folder / "net.caffemodel").write_bytes(caffemodel.read_bytes())
        spec = json.loads((folder / "case.json").read_text())
        (folder / "case.json").write_text(json.dumps({**spec, "seed": None}))
    outcome = oracle.run(folder)
    return examine(oracle, folder, outcome, arrays), outcome


def explain(verdict: Verdict) -> str:
    where = f' at layer "{verdict.layer}" ({verdict.layer_type})' if verdict.layer else ""
    blob = f", blob '{verdict.blob}'" if verdict.blob else ""
    detail = verdict.detail or verdict.caffe_message or verdict.protocaffe_message
    return f"{verdict.outcome}{where}{blob}: {verdict.cause}: {detail}"
