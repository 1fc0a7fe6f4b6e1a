"""Whole nets: the numpy reference runs every corpus net and agrees, blob by blob, with real
Caffe wherever the oracle runs the net, and with OpenCV 4.x where only OpenCV does.

Weights are protocaffe's seeded `random-weights` caffemodel (what `verify` uses without one),
or the net's own caffemodel; inputs are seeded. Real Caffe's blobs are its final values after
forward() (an in-place layer's blob holds its last value), compared with
`ReferenceNet.forward`; OpenCV's are each layer's first top, compared with the reference's
snapshot right after the same layer.

Nets with more than FAST_PARAMETERS weights run only with PROTOCAFFE_FULL_CORPUS=1, like
test_conformance_corpus.py. PROTOCAFFE_REFERENCE_REPORT=FILE appends one JSON line per net
(reference used, largest error, reference forward time) for the tables in the README.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conformance import FAST_PARAMETERS, CorpusCase, corpus_cases, parameter_count
from oracle_runner import Case, assert_blobs_match, oracle_available, run_in_caffe
from shared_dir import CORPUS

from protocaffe.errors import ProtocaffeError, Reporter
from protocaffe.frontend.caffemodel import read_caffemodel
from protocaffe.frontend.prototxt import NetDef, read_prototxt
from protocaffe.random_weights import random_weights
from protocaffe.verify.reference import ReferenceNet

FULL = os.environ.get("PROTOCAFFE_FULL_CORPUS") == "1"
REPORT = os.environ.get("PROTOCAFFE_REFERENCE_REPORT")
# Blobs agree to this fraction of each blob's largest magnitude (float32 sums in another order
# over a whole net; measured figures are in the report).
TOLERANCE = 1e-4
# DeepLab's test net reads its image from an ImageSegData layer: its top is given as an input.
EXTRA_SHAPES = {"deeplab-v2-vgg16-aspp": {"data": (1, 3, 321, 321)}}


def _param(case: CorpusCase) -> object:
    marks = []
    if parameter_count(case) > FAST_PARAMETERS:
        marks.append(pytest.mark.slow)
        if not FULL:
            marks.append(pytest.mark.skip(reason="large net: set PROTOCAFFE_FULL_CORPUS=1"))
    return pytest.param(case, id=case.name.replace(" (real weights)", "[real]"), marks=marks)


CASES = [
    _param(replace(c, input_shapes={**c.input_shapes, **EXTRA_SHAPES.get(c.model, {})}))
    for c in corpus_cases(CORPUS)
]


def input_shapes(net: NetDef, ref: ReferenceNet, case: CorpusCase) -> dict[str, tuple[int, ...]]:
    overrides = dict(case.input_shapes)
    shapes: dict[str, tuple[int, ...]] = {i.name: i.shape for i in net.inputs}
    for layer in net.layers:
        if layer.type == "Input":
            declared = layer.param.input_param.shape
            for k, top in enumerate(layer.tops):
                shapes[top] = tuple(int(d) for d in declared[min(k, len(declared) - 1)].dim)
    shapes.update(overrides)
    return {n: shapes[n] for n in (*ref.inputs, *ref.optional_inputs) if n in shapes}


def _opencv_layers(
    prototxt: str, caffemodel: str, inputs: dict[str, np.ndarray], queries: list
) -> dict | str:
    from protocaffe.verify.opencv import ReferenceUnavailable, run_opencv

    try:
        return run_opencv(prototxt, caffemodel, inputs, queries)
    except ReferenceUnavailable as exc:
        return str(exc)


_WORKER: list[ProcessPoolExecutor] = []


@pytest.fixture(scope="module", autouse=True)
def _close_opencv_worker():
    yield
    for pool in _WORKER:
        pool.shutdown(cancel_futures=True)
    _WORKER.clear()


def opencv_layers(prototxt: Path, caffemodel: Path, inputs: dict, queries: list) -> dict | str:
    """run_opencv in a spawned worker process: OpenCV can corrupt its heap on nets it rejects
    (a crashed worker is replaced)."""
    pytest.importorskip("cv2")
    if not _WORKER:
        _WORKER.append(ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")))
    try:
        return (
            _WORKER[0]
            .submit(_opencv_layers, str(prototxt), str(caffemodel), inputs, queries)
            .result(timeout=600)
        )
    except BrokenProcessPool:
        _WORKER.clear()
        return "OpenCV crashed on this net"


def _detections_close(ours: np.ndarray, theirs: np.ndarray) -> bool:
    """DetectionOutput rows compared as a set: rows whose scores tie may come in any order."""
    if ours.shape != theirs.shape:
        return False
    a = ours.reshape(-1, 7)
    b = theirs.reshape(-1, 7)
    order_a = np.lexsort(a.T[::-1])
    order_b = np.lexsort(b.T[::-1])
    return bool(np.allclose(a[order_a], b[order_b], atol=1e-4, rtol=1e-4))


# The oracle build reads at most 512 MiB of caffemodel (io.cpp: SetTotalBytesLimit(536870912)),
# less than VGG16's 553 MB: for those nets real Caffe draws the random weights itself.
ORACLE_READ_LIMIT = 536870912


def _for_oracle(text: str) -> str:
    """The prototxt without DetectionOutput's save_output_param, which makes Caffe read a label
    map file relative to its working directory (it changes no blob)."""
    start = text.find("save_output_param")
    while start >= 0:
        depth, end = 0, text.index("{", start)
        while True:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            if depth == 0:
                break
            end += 1
        text = text[:start] + text[end + 1 :]
        start = text.find("save_output_param")
    return text


def _record(row: dict) -> None:
    if REPORT:
        with open(REPORT, "a") as f:
            f.write(json.dumps(row) + "\n")


@pytest.mark.skipif(not CASES, reason="../shared/corpus is absent")
@pytest.mark.parametrize("case", CASES)
def test_reference_runs_corpus_net(case: CorpusCase, tmp_path: Path) -> None:
    net = read_prototxt(case.prototxt, Reporter())
    try:
        skeleton = ReferenceNet(net, None)
    except ProtocaffeError as exc:
        # Faster R-CNN's proposal layer is Python code: one located line names it.
        assert len(exc.diagnostics) == 1 and "has no implementation" in str(exc), str(exc)
        _record({"net": case.name, "reference": "none", "reason": str(exc.diagnostics[0])})
        pytest.skip(f"needs a plugin: {exc.diagnostics[0]}")
    shapes = input_shapes(net, skeleton, case)
    rng = np.random.default_rng(0)
    inputs = {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}
    weights = case.weights
    if weights is None:
        weights = tmp_path / "random.caffemodel"
        random_weights(case.prototxt, weights, seed=0, input_shapes=shapes)
    ref = ReferenceNet(net, read_caffemodel(weights))

    start = time.perf_counter()
    ours = ref.forward(inputs)
    seconds = time.perf_counter() - start
    assert set(ref.outputs) <= set(ours)

    row: dict = {"net": case.name, "seconds": round(seconds, 3), "blobs": len(ours)}
    used = "reference only"
    if oracle_available():
        probe = Case(case.name.replace(" ", "_"), _for_oracle(case.prototxt.read_text()), inputs)
        given = {probe.name: weights}
        if weights.stat().st_size >= ORACLE_READ_LIMIT:
            given = {}  # the oracle draws and saves the weights, the reference reads them
        result = run_in_caffe(tmp_path / "caffe", [probe], given)[probe.name]
        if result.error is None and not given:
            ours = ReferenceNet(net, read_caffemodel(result.folder / "net.caffemodel")).forward(
                inputs
            )
            row["weights"] = "drawn by real Caffe (the file is past its read limit)"
        if result.error is None:
            assert result.blobs is not None
            worst = 0.0
            for name, mine in ours.items():
                theirs = np.asarray(result.blobs[name])
                if any(
                    layer.type == "DetectionOutput" and name in layer.tops for layer in net.layers
                ):
                    assert _detections_close(mine, theirs), f"{name}: detections differ"
                    continue
                one = Case(name, "", {}, rtol=0.0, atol=TOLERANCE)
                worst = max(worst, assert_blobs_match(one, {name: mine}, {name: theirs}))
            used = "real Caffe"
            row.update(reference=used, largest_error=worst)
        else:
            row["caffe_refuses"] = result.error[-300:]
        shutil.rmtree(tmp_path / "caffe", ignore_errors=True)
    if used == "reference only":
        from protocaffe.verify.opencv import LayerQuery

        snapshots = {}
        for step in ref.run(inputs):
            layer = net.layers[step.layer_index]
            if layer.tops:
                snapshots[layer.name] = step.tops[layer.tops[0]].copy()
        queries = [LayerQuery(x.name, x.type, x.tops) for x in net.layers if x.name in snapshots]
        theirs_cv = opencv_layers(case.prototxt, weights, inputs, queries)
        if isinstance(theirs_cv, dict):
            worst = 0.0
            for (name, _), theirs in theirs_cv.items():
                mine = snapshots[name]
                kind = next(x.type for x in net.layers if x.name == name)
                if kind == "DetectionOutput":
                    assert _detections_close(mine, theirs), f"{name}: detections differ"
                    continue
                if theirs.shape != mine.shape and theirs.size == mine.size:
                    theirs = theirs.reshape(mine.shape)  # OpenCV's own layouts (Flatten, ...)
                one = Case(name, "", {}, rtol=0.0, atol=TOLERANCE)
                worst = max(worst, assert_blobs_match(one, {name: mine}, {name: theirs}))
            used = "OpenCV"
            row.update(reference=used, largest_error=worst, layers_compared=len(theirs_cv))
        else:
            row["opencv_refuses"] = theirs_cv[-300:]
    row.setdefault("reference", used)
    _record(row)
