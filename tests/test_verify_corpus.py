"""`verify --reference numpy` over the shared corpus: every net verifies (exit 0), and so does
the module `--optimize` makes of it.

This is verify end to end on real nets, with the numpy reference (the one reference that runs
every net: SegNet, ENet, PSPNet and DeepLab have fork layers neither real Caffe nor OpenCV
runs, and Faster R-CNN's proposal layer is a plugin's, with its numpy reference). The numpy
reference itself is proven layer by layer and net by net against real Caffe and OpenCV
(test_reference_*.py); here the module is checked against it.

The whole sweep (every net, plain and --optimize: about 45 minutes on 2 cores) runs with
PROTOCAFFE_SLOW=2. Otherwise a sample of it runs, drawn with a fixed seed so that a failure
reproduces: ENet (a net only the numpy reference runs) and SAMPLE_SMALL other runs of the nets
with at most FAST_PARAMETERS weights, plus, with PROTOCAFFE_FULL_CORPUS=1 (CI), SAMPLE_LARGE
run of a larger net of at most SAMPLE_LARGE_PARAMETERS weights. PROTOCAFFE_VERIFY_REPORT=FILE
appends one JSON line per run (net, module, blobs compared, largest error, seconds) for the
table in the README.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conformance import FAST_PARAMETERS, CorpusCase, corpus_cases, parameter_count
from shared_dir import CORPUS

from protocaffe.verify import Status, verify

FULL = os.environ.get("PROTOCAFFE_FULL_CORPUS") == "1"
SWEEP = os.environ.get("PROTOCAFFE_SLOW") == "2"
SAMPLE_SEED = 12
SAMPLE_SMALL = 5
SAMPLE_LARGE = 1
SAMPLE_LARGE_PARAMETERS = 30_000_000
ALWAYS = "enet-cityscapes-default"
REPORT = os.environ.get("PROTOCAFFE_VERIFY_REPORT")
PLUGINS = Path(__file__).resolve().parents[1] / "examples" / "plugins"
# DeepLab's test net reads its image from an ImageSegData layer: its top is given as an input
# (what `--input-shape data=1,3,321,321` does on the command line).
EXTRA_SHAPES = {"deeplab-v2-vgg16-aspp": {"data": (1, 3, 321, 321)}}
# Nets whose layer types a plugin defines.
NEEDS_PLUGIN = {"faster-rcnn-vgg16-voc": "faster_rcnn_proposal"}


def _cases() -> list[object]:
    runs: list[tuple[CorpusCase, bool, str, int]] = []
    for case in corpus_cases(CORPUS):
        case = replace(case, input_shapes={**case.input_shapes, **EXTRA_SHAPES.get(case.model, {})})
        with _plugin(case.model):
            weights = parameter_count(case)
        name = case.name.replace(" (real weights)", "[real]")
        for optimize in (False, True):
            runs.append(
                (case, optimize, f"{name}-{'optimize' if optimize else 'default'}", weights)
            )
    chosen = _sample(runs)
    params = []
    for case, optimize, label, weights in runs:
        marks = [pytest.mark.slow] if weights > FAST_PARAMETERS else []
        if label not in chosen:
            reason = "sampled out: PROTOCAFFE_SLOW=2 runs every net"
            if weights > FAST_PARAMETERS and not FULL:
                reason = "large net: set PROTOCAFFE_FULL_CORPUS=1 (PROTOCAFFE_SLOW=2: every net)"
            marks.append(pytest.mark.skip(reason=reason))
        params.append(pytest.param(case, optimize, id=label, marks=marks))
    return params


def _sample(runs: list[tuple[CorpusCase, bool, str, int]]) -> set[str]:
    """The labels of the runs to make: all with PROTOCAFFE_SLOW=2, else a seeded sample."""
    if SWEEP:
        return {label for _, _, label, _ in runs}
    rng = random.Random(SAMPLE_SEED)
    small = sorted(label for _, _, label, w in runs if w <= FAST_PARAMETERS and label != ALWAYS)
    large = sorted(
        label for _, _, label, w in runs if FAST_PARAMETERS < w <= SAMPLE_LARGE_PARAMETERS
    )
    chosen = {ALWAYS, *rng.sample(small, min(SAMPLE_SMALL, len(small)))}
    if FULL:
        chosen |= set(rng.sample(large, min(SAMPLE_LARGE, len(large))))
    return chosen


# The types and helpers each plugin registers, kept after its first load (importing it again
# does not register them again).
_PLUGIN_TYPES: dict[str, dict[str, Any]] = {}
_PLUGIN_HELPERS: dict[str, dict[str, Any]] = {}


@contextlib.contextmanager
def _plugin(model: str) -> Iterator[None]:
    """The net's plugin registered while the block runs, and unregistered after it: a plugin
    left registered (this module's collection used to leave one) changes what every later test
    sees, e.g. Faster R-CNN's `Python` layer becoming a known type."""
    if model not in NEEDS_PLUGIN:
        yield
        return
    from protocaffe.backend import helpers
    from protocaffe.layers import loading, registry
    from protocaffe.plugins import load_plugin

    module = NEEDS_PLUGIN[model]
    saved, loaded, imported = dict(registry._REGISTRY), set(loading._loaded), module in sys.modules
    saved_helpers = dict(helpers._PLUGIN_HELPERS)
    if model not in _PLUGIN_TYPES:
        if str(PLUGINS) not in sys.path:
            sys.path.insert(0, str(PLUGINS))
        load_plugin(module)
        _PLUGIN_TYPES[model] = {k: v for k, v in registry._REGISTRY.items() if k not in saved}
        _PLUGIN_HELPERS[model] = {
            k: v for k, v in helpers._PLUGIN_HELPERS.items() if k not in saved_helpers
        }
    registry._REGISTRY.update(_PLUGIN_TYPES[model])
    helpers._PLUGIN_HELPERS.update(_PLUGIN_HELPERS[model])
    try:
        yield
    finally:
        # As before the block: a later load_plugin of the same module imports and registers it
        # again.
        registry._REGISTRY.clear()
        registry._REGISTRY.update(saved)
        loading._loaded.clear()
        loading._loaded.update(loaded)
        helpers._PLUGIN_HELPERS.clear()
        helpers._PLUGIN_HELPERS.update(saved_helpers)
        if not imported:
            sys.modules.pop(module, None)


CASES = _cases()


@pytest.mark.skipif(not CASES, reason="../shared/corpus is absent")
@pytest.mark.parametrize(("case", "optimize"), CASES)
def test_corpus_net_verifies_against_the_numpy_reference(case: CorpusCase, optimize: bool) -> None:
    started = time.perf_counter()
    with _plugin(case.model):
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
