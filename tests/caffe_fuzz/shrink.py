"""Shrink a disagreeing net to a small one with the same verdict (outcome and cause).

Greedy, one round at a time: every candidate one step smaller than the current net (a layer
removed, with the layers that then read a missing blob; a parameter field cleared; an unused
input dropped) is run through real Caffe and protocaffe in one oracle batch, and the first
candidate with the same verdict becomes the current net. It ends when no candidate keeps the
verdict. The result is the net for a regression test (tests/test_fuzz_regressions.py).

    cd tests && python -m caffe_fuzz --shrink /tmp/caffe_fuzz/fuzz2026001234
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from google.protobuf.message import Message

from .campaign import examine, write_case
from .classify import Verdict
from .compare import layers_of, parse_net
from .oracle import Oracle


def _layer_list(net: Message) -> Message:
    return net.layer if len(net.layer) else net.layers  # type: ignore[attr-defined,no-any-return]


def _without_layer(net: Message, index: int) -> Message:
    """`net` without layer `index` and without the layers that then read an unknown blob."""
    cut = type(net)()
    cut.CopyFrom(net)
    repeated = _layer_list(cut)
    del repeated[index]  # type: ignore[attr-defined]
    known = set(cut.input)  # type: ignore[attr-defined]
    position = 0
    while position < len(repeated):  # type: ignore[arg-type]
        layer = repeated[position]  # type: ignore[index]
        if all(b in known for b in layer.bottom):
            known.update(layer.top)
            position += 1
        else:
            del repeated[position]  # type: ignore[attr-defined]
    return cut


def _candidates(net: Message) -> Iterator[Message]:
    layers = layers_of(net)
    for index, layer in enumerate(layers):
        if layer.type != "Input" and len(layers) > 1:  # type: ignore[attr-defined]
            yield _without_layer(net, index)
    for index, layer in enumerate(layers):
        for field, value in layer.ListFields():
            if field.name.endswith("_param") and field.name != "input_param":
                for inner, _ in value.ListFields():
                    smaller = type(net)()
                    smaller.CopyFrom(net)
                    getattr(_layer_list(smaller)[index], field.name).ClearField(inner.name)  # type: ignore[index]
                    yield smaller
            elif field.name == "param":
                smaller = type(net)()
                smaller.CopyFrom(net)
                _layer_list(smaller)[index].ClearField("param")  # type: ignore[index]
                yield smaller
    used = {b for layer in layers for b in layer.bottom}  # type: ignore[attr-defined]
    for index, layer in enumerate(layers):
        if layer.type == "Input" and not set(layer.top) & used:  # type: ignore[attr-defined]
            yield _without_layer(net, index)


def _same(a: Verdict, b: Verdict) -> bool:
    return (a.outcome, a.cause) == (b.outcome, b.cause)


def shrink(oracle: Oracle, case: Path, workdir: Path, rounds: int = 30) -> tuple[str, Verdict]:
    """The smallest net found with `case`'s verdict, as prototxt text, and that verdict."""
    inputs = dict(np.load(case / "inputs.npz"))
    seed = json.loads((case / "case.json").read_text()).get("seed")
    target = examine(oracle, case, oracle.run(case), inputs)
    current = parse_net((case / "net.prototxt").read_text())
    for _ in range(rounds):
        texts = [str(text_format.MessageToString(c)) for c in _candidates(current)]
        folders = []
        for number, text in enumerate(texts):
            folder = workdir / f"try{number}"
            shutil.rmtree(folder, ignore_errors=True)
            wanted = {k: v for k, v in inputs.items() if f'"{k}"' in text}
            write_case(folder, text, wanted, seed)
            folders.append((folder, wanted))
        outcomes = oracle.run_many([f for f, _ in folders])
        for (folder, wanted), outcome, text in zip(folders, outcomes, texts, strict=True):
            if _same(examine(oracle, folder, outcome, wanted), target):
                current = parse_net(text)
                break
        else:
            break
    return str(text_format.MessageToString(current)), target
