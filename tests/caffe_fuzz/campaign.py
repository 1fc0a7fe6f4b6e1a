"""A fuzzing campaign: generate nets, run them in real Caffe and in protocaffe, classify.

The same code serves the bounded CI profile (tests/test_fuzz_caffe.py) and the deep local run
(`python -m caffe_fuzz` from tests/, see __main__.py).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .classify import Verdict, classify
from .compare import judge, layers_of, parse_net, prefix_text
from .netgen import NetGenerator, NetSpec
from .oracle import CaffeOutcome, Oracle
from .params import ParamDrawer
from .probe import fuzzable_types


@dataclass
class CaseRecord:
    spec: NetSpec
    verdict: Verdict
    seconds_caffe: float
    seconds_protocaffe: float


def write_case(folder: Path, text: str, inputs: dict[str, np.ndarray], seed: int | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "net.prototxt").write_text(text)
    np.savez(folder / "inputs.npz", **inputs)  # type: ignore[arg-type]
    (folder / "case.json").write_text(json.dumps({"seed": seed, "timeout": 60}))


def failing_layer(oracle: Oracle, case: Path) -> int | None:
    """The index of the first layer at which Caffe aborts: the shortest prefix it refuses."""
    net = parse_net((case / "net.prototxt").read_text())
    folders = []
    for index in range(len(layers_of(net))):
        folder = case / f"cut{index}"
        folder.mkdir(exist_ok=True)
        (folder / "net.prototxt").write_text(prefix_text(net, index))
        shutil.copy(case / "inputs.npz", folder / "inputs.npz")
        shutil.copy(case / "case.json", folder / "case.json")
        folders.append(folder)
    outcomes = oracle.run_many(folders)
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    for index, outcome in enumerate(outcomes):
        if not outcome.accepted:
            return index
    return None


def examine(
    oracle: Oracle, case: Path, outcome: CaffeOutcome, inputs: Mapping[str, np.ndarray]
) -> Verdict:
    """Judge a case that the oracle has run, and classify the result."""
    result = judge(case, outcome, inputs)
    where = None
    if not outcome.accepted and result.protocaffe_accepted:
        try:
            where = failing_layer(oracle, case)
        except Exception:  # an unparsable net: no layer to blame
            where = None
    return classify(case, result, where)


class Campaign:
    """Owns an oracle process and a work directory for the cases of one run."""

    def __init__(self, oracle: Oracle, workdir: Path) -> None:
        self.oracle = oracle
        self.workdir = workdir
        self.types = fuzzable_types(oracle.layer_types)
        self.generator = NetGenerator(ParamDrawer(oracle.schema), self.types)

    def specs(self, seed: int, count: int, types: Sequence[str] | None = None) -> list[NetSpec]:
        """`count` nets; net i focuses on type i mod len(types), so every type gets its share."""
        chosen = sorted(types or self.generator.types)
        return [
            self.generator.net(seed * 1_000_003 + i, chosen[i % len(chosen)]) for i in range(count)
        ]

    def run(
        self, specs: Sequence[NetSpec], keep: bool = False, batch: int = 64
    ) -> Iterator[CaseRecord]:
        for start in range(0, len(specs), batch):
            chunk = specs[start : start + batch]
            folders = []
            arrays = []
            for spec in chunk:
                folder = self.workdir / spec.name
                if folder.exists():
                    shutil.rmtree(folder)
                inputs = spec.input_arrays()
                write_case(folder, spec.prototxt(), inputs, spec.seed)
                folders.append(folder)
                arrays.append(inputs)
            outcomes = self.oracle.run_many(folders)
            for spec, folder, inputs, outcome in zip(chunk, folders, arrays, outcomes, strict=True):
                began = time.monotonic()
                verdict = examine(self.oracle, folder, outcome, inputs)
                seconds = time.monotonic() - began
                yield CaseRecord(spec, verdict, outcome.seconds, seconds)
                if not keep and verdict.agrees:
                    shutil.rmtree(folder, ignore_errors=True)
