"""`verify --reference numpy` over the shared corpus: every net verifies (exit 0), and so does
the module `--optimize` makes of it.

This is verify end to end on real nets, with the numpy reference (the one reference that runs
every net: SegNet, ENet, PSPNet and DeepLab have fork layers neither real Caffe nor OpenCV
runs, and Faster R-CNN's proposal layer is a plugin's, with its numpy reference). The numpy
reference itself is proven layer by layer and net by net against real Caffe and OpenCV
(test_reference_*.py); here the module is checked against it.

Nets with more than FAST_PARAMETERS weights run only with PROTOCAFFE_FULL_CORPUS=1, like
test_conformance_corpus.py. PROTOCAFFE_VERIFY_REPORT=FILE appends one JSON line per run (net,
module, blobs compared, largest error, seconds) for the table in the README.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conformance import FAST_PARAMETERS, CorpusCase, corpus_cases, parameter_count
from shared_dir import CORPUS

from protocaffe.verify import Status, verify

FULL = os.environ.get("PROTOCAFFE_FULL_CORPUS") == "1"
REPORT = os.environ.get("PROTOCAFFE_VERIFY_REPORT")
PLUGINS = Path(__file__).resolve().parents[1] / "examples" / "plugins"
# DeepLab's test net reads its image from an ImageSegData layer: its top is given as an input
# (what `--input-shape data=1,3,321,321` does on the command line).
EXTRA_SHAPES = {"deeplab-v2-vgg16-aspp": {"data": (1, 3, 321, 321)}}
# Nets whose layer types a plugin defines.
NEEDS_PLUGIN = {"faster-rcnn-vgg16-voc": "faster_rcnn_proposal"}


def _cases() -> list[object]:
    params = []
    for case in corpus_cases(CORPUS):
        case = replace(case, input_shapes={**case.input_shapes, **EXTRA_SHAPES.get(case.model, {})})
        marks = []
        if case.model in NEEDS_PLUGIN:
            _load_plugin(case.model)
        if parameter_count(case) > FAST_PARAMETERS:
            marks.append(pytest.mark.slow)
            if not FULL:
                marks.append(pytest.mark.skip(reason="large net: set PROTOCAFFE_FULL_CORPUS=1"))
        name = case.name.replace(" (real weights)", "[real]")
        for optimize in (False, True):
            label = f"{name}-{'optimize' if optimize else 'default'}"
            params.append(pytest.param(case, optimize, id=label, marks=marks))
    return params


def _load_plugin(model: str) -> None:
    from protocaffe.plugins import load_plugin

    if str(PLUGINS) not in sys.path:
        sys.path.insert(0, str(PLUGINS))
    load_plugin(NEEDS_PLUGIN[model])


CASES = _cases()


@pytest.mark.skipif(not CASES, reason="../shared/corpus is absent")
@pytest.mark.parametrize(("case", "optimize"), CASES)
def test_corpus_net_verifies_against_the_numpy_reference(case: CorpusCase, optimize: bool) -> None:
    if case.model in NEEDS_PLUGIN:
        _load_plugin(case.model)
    started = time.perf_counter()
    report = verify(
        case.prototxt,
        case.weights,
        reference="numpy",
        input_shapes=case.input_shapes,
        optimize=optimize,
    )
    seconds = time.perf_counter() - started
    assert report.ok, report.table(brief=True)
    assert report.reference == "numpy"
    compared = report.compared
    # The numpy reference gives every top: each blob the module computes is compared. An
    # --optimize module folds layers (reported as folded, never as a mismatch) and drops
    # pass-through ones (not computed).
    allowed = {Status.MATCH, Status.TIE}
    if optimize:
        allowed |= {Status.FOLDED, Status.MISSING}
    unexpected = [(r.layer, r.status.value) for r in report.rows if r.status not in allowed]
    assert not unexpected, report.table()
    if REPORT:
        with open(REPORT, "a") as handle:
            row = {
                "net": case.name,
                "optimize": optimize,
                "reference": report.reference,
                "inputs": {k: list(v) for k, v in report.inputs.items()},
                "blobs": len(compared),
                "folded": sum(1 for r in report.rows if r.status is Status.FOLDED),
                "ties": sum(1 for r in report.rows if r.status is Status.TIE),
                "largest_error": report.largest_error,
                "seconds": round(seconds, 2),
            }
            handle.write(json.dumps(row) + "\n")
