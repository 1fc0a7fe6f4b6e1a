"""Golden files: the reviewed output for representative nets, compared byte for byte.

For each net: model.py plain and --optimize (model-optimized.py), the graph IR after each
pipeline (ir.txt, ir-optimized.txt: what a pass did shows in their diff), and, for nets with
weights, the weight manifest (model.manifest.txt). A mismatch prints a unified diff and the
command that accepts the new output. Each golden module must also import, load converted
weights with strict=True, and be a fixed point of black under protocaffe's pinned Mode.
"""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from caffe_check import assert_close
from shared_dir import SHARED

from protocaffe import api
from protocaffe.api import convert, module_from_source
from protocaffe.backend.outputs import weight_manifest
from protocaffe.backend.render import format_source
from protocaffe.ir.printer import format_graph
from protocaffe.passes import DEFAULT_PIPELINE, OPTIMIZE_PIPELINE
from protocaffe.random_weights import random_weights

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "golden"
UPDATE = "pytest tests/test_golden.py --update-golden"


@dataclass(frozen=True)
class Net:
    prototxt: str  # relative to the repository, or to ../shared/corpus when `corpus`
    what: str  # why this net is here
    corpus: bool = False
    opencv: bool = False  # also compare the golden module's output with OpenCV's
    weights: str | None = None  # a caffemodel next to the prototxt: its manifest is golden too

    @property
    def path(self) -> Path:
        return (SHARED / "corpus" if self.corpus else REPO) / self.prototxt

    @property
    def weights_path(self) -> Path | None:
        return self.path.parent / self.weights if self.weights is not None else None


NETS = {
    "tinynet": Net(
        "examples/tinynet/deploy.prototxt",
        "the bundled example: BatchNorm + Scale in place, ceil pooling, concat order, coeffs",
        opencv=True,
        weights="tinynet.caffemodel",
    ),
    "inception_block": Net(
        "tests/fixtures/inception_block.prototxt",
        "four-branch concat in bottom order, ceil pooling with and without pad, LRN, Dropout",
        opencv=True,
    ),
    "resnet_block": Net(
        "tests/fixtures/resnet_block.prototxt",
        "BatchNorm + Scale pairs in place, projection shortcut, Eltwise SUM, global pooling",
        opencv=True,
    ),
    "legacy_v1": Net(
        "tests/fixtures/legacy_v1.prototxt",
        "V1 `layers` with enum types and input_dim, in-place ReLU after pooling",
        opencv=True,
    ),
    "edge_cases": Net(
        "tests/fixtures/edge_cases.prototxt",
        "hostile names, two inputs, three outputs, pooling torch cannot express, SSA readers",
    ),
    "squeezenet-v1.0": Net(
        "squeezenet-v1.0/deploy.prototxt",
        "fire modules (concat of 1x1 and 3x3 expands), ceil pooling, global AVE pooling",
        corpus=True,
    ),
    "cifar10-quick": Net(
        "cifar10-quick/deploy.prototxt",
        "a corpus net whose real weights are a legacy V1 binary",
        opencv=True,
        corpus=True,
        weights="cifar10_quick_iter_5000.caffemodel",
    ),
}


def generate(net: Net, optimize: bool = False) -> str:
    """model.py for `net`: repository nets are named by their path in the repository."""
    passes = OPTIMIZE_PIPELINE if optimize else DEFAULT_PIPELINE
    if net.corpus:
        return convert(net.path, passes=passes).source
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        return convert(net.prototxt, passes=passes).source
    finally:
        os.chdir(cwd)


def ir_text(net: Net, optimize: bool) -> str:
    return format_graph(
        api.compile(net.path, passes=OPTIMIZE_PIPELINE if optimize else DEFAULT_PIPELINE)
    )


def manifest(net: Net) -> str:
    assert net.weights_path is not None
    arrays = convert(net.path, net.weights_path).arrays
    assert arrays is not None
    return weight_manifest(arrays)


# The golden files of each net, and how each is made.
ARTEFACTS = {
    "model.py": generate,
    "model-optimized.py": lambda net: generate(net, optimize=True),
    "ir.txt": lambda net: ir_text(net, optimize=False),
    "ir-optimized.txt": lambda net: ir_text(net, optimize=True),
    "model.manifest.txt": manifest,
}


def params(names, artefacts=("model.py",)):
    """One pytest param per net (and artefact); corpus nets skip when ../shared is absent."""
    found = []
    for name in names:
        net = NETS[name]
        absent = net.corpus and not net.path.exists()
        marks = [pytest.mark.skip(reason=f"{net.path} is absent")] if absent else []
        for artefact in artefacts:
            if artefact == "model.manifest.txt" and net.weights is None:
                continue
            values = (name,) if len(artefacts) == 1 else (name, artefact)
            found.append(pytest.param(*values, id="/".join(values), marks=marks))
    return found


@pytest.mark.parametrize(("name", "artefact"), params(NETS, tuple(ARTEFACTS)))
def test_matches_golden(name, artefact, request):
    actual = ARTEFACTS[artefact](NETS[name])
    golden = GOLDEN / name / artefact
    if request.config.getoption("--update-golden"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(actual, encoding="utf-8")
        return
    assert golden.exists(), f"no golden file {golden}; create it with: {UPDATE}"
    expected = golden.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                f"golden/{name}/{artefact}",
                "generated",
            )
        )
        pytest.fail(f"the output differs from the golden file:\n{diff}\nAccept it: {UPDATE}")


@pytest.mark.parametrize(("name", "artefact"), params(NETS, ("model.py", "model-optimized.py")))
def test_golden_module_loads_and_runs(name, artefact, tmp_path):
    """The golden file itself (what reviewers read) imports, takes the converted weights with
    strict=True, and runs on the declared input shapes."""
    net = NETS[name]
    source = (GOLDEN / name / artefact).read_text(encoding="utf-8")
    assert format_source(source) == source, "not a fixed point of black"
    real = sorted(net.path.parent.glob("*.caffemodel")) if net.corpus else []
    weights = real[0] if real else tmp_path / "random.caffemodel"
    if not real:
        random_weights(net.path, weights, seed=0)
    optimize = artefact == "model-optimized.py"
    conversion = convert(
        net.path, weights, passes=OPTIMIZE_PIPELINE if optimize else DEFAULT_PIPELINE
    )
    module = module_from_source(source, conversion.class_name, f"golden_{name}")
    state = conversion.state_dict
    assert state is not None
    module.load_state_dict(state, strict=True)
    # Batch 1 whatever the declared batch (squeezenet declares 10): the module does not
    # depend on it, and the test stays fast.
    rng = np.random.default_rng(0)
    inputs = [
        torch.from_numpy(rng.standard_normal((1, *v.shape[1:])).astype(np.float32))
        for v in conversion.graph.inputs
    ]
    with torch.no_grad():
        result = module.eval()(*inputs)
    results = result if isinstance(result, tuple) else (result,)
    expected_shapes = [(1, *v.shape[1:]) for v in conversion.graph.outputs]
    assert [tuple(r.shape) for r in results] == expected_shapes
    if net.opencv:
        cv2 = pytest.importorskip("cv2")
        reference = cv2.dnn.readNetFromCaffe(str(net.path), str(weights))
        reference.enableFusion(False)
        for value, array in zip(conversion.graph.inputs, inputs, strict=True):
            reference.setInput(array.numpy(), value.blob)
        (expected,) = results
        assert_close(expected.numpy(), reference.forward())


GENERATE = (
    "import sys\n"
    "from protocaffe.api import convert\n"
    "for path in sys.argv[1:]:\n"
    "    sys.stdout.write(convert(path).source)\n"
)


def test_same_bytes_whatever_the_hash_seed():
    """Two interpreters with different PYTHONHASHSEED (set and dict iteration orders of str
    keys differ between them) generate the same bytes."""
    paths = [NETS[name].prototxt for name in ("tinynet", "edge_cases", "inception_block")]
    outputs = []
    for seed in ("0", "4242"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(REPO / "src"))
        result = subprocess.run(
            [sys.executable, "-c", GENERATE, *paths],
            cwd=REPO,
            env=env,
            capture_output=True,
            check=True,
            timeout=300,
        )
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1]
    assert (
        outputs[0]
        == "".join(
            generate(NETS[name]) for name in ("tinynet", "edge_cases", "inception_block")
        ).encode()
    )
