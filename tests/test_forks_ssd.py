"""The SSD fork's layers against real Caffe, OpenCV, and the corpus's SSD nets.

oracle_cases.npz holds real Caffe's blobs for oracle_cases.prototxt (make_oracle_cases.py);
the corpus comparisons use OpenCV 4.x, or real Caffe when /opt/caffe-oracle is built.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from forks_support import (
    CORPUS,
    convert_random,
    corpus_net,
    load_module,
    opencv_blobs,
    relative_error,
    run_capturing,
)
from hypothesis import given
from hypothesis import strategies as st

from protocaffe.api import convert
from protocaffe.verify.reference.ops.detection import detection_output

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "forks"
HELPERS = Path(__file__).resolve().parents[1] / "templates" / "helpers"
ORACLE = Path("/opt/caffe-oracle/run-oracle.sh")


@pytest.fixture(scope="module")
def oracle_cases() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    expected = dict(np.load(FIXTURES / "oracle_cases.npz"))
    conversion = convert(FIXTURES / "oracle_cases.prototxt", FIXTURES / "oracle_cases.caffemodel")
    model = load_module(conversion)
    inputs = [expected[f"input:{v.blob}"] for v in conversion.graph.inputs]
    values = run_capturing(conversion, model, inputs)
    ours = {v.blob: array for v, array in values.items()}
    return ours, expected


@pytest.mark.parametrize(
    "blob",
    ["prior_a", "prior_b", "priors", "norm_channels", "norm_all", "perm_last", "perm_partial"]
    + ["relu6", "relu6_leaky", "nearest"],
)
def test_layers_match_real_caffe(oracle_cases, blob: str) -> None:
    ours, expected = oracle_cases
    assert ours[blob].shape == expected[blob].shape
    np.testing.assert_allclose(ours[blob], expected[blob], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "blob", ["det_center", "det_corner", "det_per_class", "det_encoded", "det_none"]
)
def test_detections_match_real_caffe(oracle_cases, blob: str) -> None:
    """Same rows in the same order: image, label, score, then the box within 1e-5."""
    ours, expected = oracle_cases
    assert ours[blob].shape == expected[blob].shape
    np.testing.assert_array_equal(ours[blob][..., :2], expected[blob][..., :2])
    np.testing.assert_allclose(ours[blob][..., 2:], expected[blob][..., 2:], rtol=0, atol=1e-5)


def test_exported_and_compiled_detections_match_real_caffe() -> None:
    """torch.export (batch left free) and torch.compile(fullgraph=True) follow the whole
    DetectionOutput: every fixture case, per-class boxes, eta < 1 and no detection included."""
    expected = dict(np.load(FIXTURES / "oracle_cases.npz"))
    conversion = convert(FIXTURES / "oracle_cases.prototxt", FIXTURES / "oracle_cases.caffemodel")
    model = load_module(conversion)
    inputs = tuple(torch.from_numpy(expected[f"input:{v.blob}"]) for v in conversion.graph.inputs)
    program = torch.export.export(
        model, inputs, dynamic_shapes=tuple({0: torch.export.Dim.AUTO} for _ in inputs)
    )
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    for run in (program.module(), compiled):
        with torch.no_grad():
            outputs = dict(
                zip([v.blob for v in conversion.graph.outputs], run(*inputs), strict=True)
            )
        for blob in ("det_center", "det_corner", "det_per_class", "det_encoded", "det_none"):
            ours = outputs[blob].numpy()
            assert ours.shape == expected[blob].shape, blob
            np.testing.assert_array_equal(ours[..., :2], expected[blob][..., :2])
            np.testing.assert_allclose(ours[..., 2:], expected[blob][..., 2:], rtol=0, atol=1e-5)


def test_the_fixture_covers_the_interesting_cases(oracle_cases) -> None:
    _, expected = oracle_cases
    # keep_top_k cut (30 of more), both images present, per-class labels incl. 0 (no
    # background), and the all-empty case's one row of -1 per image.
    assert expected["det_center"].shape[2] == 60
    assert set(expected["det_center"][0, 0, :, 0]) == {0.0, 1.0}
    assert 0.0 in expected["det_per_class"][0, 0, :, 1]
    assert expected["det_none"][0, 0, :, 1:].tolist() == [[-1.0] * 6] * 2


SSD_NETS = [
    "mobilenet-ssd",
    "opencv-face-detector-res10-ssd",
    pytest.param("ssd-vgg16-voc0712-300", marks=pytest.mark.slow),
    "yufacedetectnet-v2",
]


@pytest.mark.parametrize("name", SSD_NETS)
def test_ssd_net_matches_opencv_per_blob(name: str, tmp_path: Path) -> None:
    """Every blob before the detections, with seeded random weights (OpenCV's own
    DetectionOutput disagrees with Caffe on random weights; the oracle test covers it)."""
    pytest.importorskip("cv2")
    prototxt = corpus_net(name)
    conversion, weights = convert_random(prototxt, tmp_path)
    inputs = [
        np.random.default_rng(0).standard_normal(v.shape).astype(np.float32)
        for v in conversion.graph.inputs
    ]
    ours = run_capturing(conversion, load_module(conversion), inputs)
    skip = [n.name for n in conversion.graph.nodes if n.op == "DetectionOutput"]
    reference = opencv_blobs(prototxt, weights, conversion, inputs, skip)
    assert len(reference) == len(conversion.graph.nodes) - len(skip)
    errors = {str(v): relative_error(ours[v], ref) for v, ref in reference.items()}
    worst = max(errors, key=errors.__getitem__)
    assert errors[worst] < 5e-5, (worst, errors[worst])


def test_yufacedetectnet_real_weights_match_opencv_at_two_sizes() -> None:
    """The corpus's real weights; detections on a seeded input, at the declared size and at
    another one (the priors follow the input)."""
    cv2 = pytest.importorskip("cv2")
    folder = CORPUS / "yufacedetectnet-v2"
    weights = folder / "yufacedetectnet-open-v2.caffemodel"
    if not weights.is_file():
        pytest.skip("yufacedetectnet weights not available")
    conversion = convert(folder / "deploy.prototxt", weights)
    model = load_module(conversion)
    net = cv2.dnn.readNetFromCaffe(str(folder / "deploy.prototxt"), str(weights))
    rng = np.random.default_rng(0)
    for height, width in ((240, 320), (176, 256)):
        image = rng.uniform(0, 255, (1, 3, height, width)).astype(np.float32)
        with torch.no_grad():
            ours = model(torch.from_numpy(image)).numpy()
        net.setInput(image)
        reference = net.forward()
        assert ours.shape == reference.shape and ours.shape[2] > 10
        np.testing.assert_array_equal(ours[..., :2], reference[..., :2])
        np.testing.assert_allclose(ours[..., 2:], reference[..., 2:], rtol=0, atol=1e-5)


def test_yufacedetectnet_scripts_and_the_script_detects_the_same() -> None:
    """The SSD helpers (prior boxes, NMS) compile under TorchScript; with the real weights the
    scripted module gives the eager module's detections, at two input sizes."""
    folder = CORPUS / "yufacedetectnet-v2"
    weights = folder / "yufacedetectnet-open-v2.caffemodel"
    if not weights.is_file():
        pytest.skip("yufacedetectnet weights not available")
    model = load_module(convert(folder / "deploy.prototxt", weights))
    scripted = torch.jit.script(model)
    rng = np.random.default_rng(1)
    for height, width in ((240, 320), (176, 256)):
        image = torch.from_numpy(rng.uniform(0, 255, (1, 3, height, width)).astype(np.float32))
        with torch.no_grad():
            eager, script = model(image), scripted(image)
        assert eager.shape[2] > 10
        torch.testing.assert_close(script, eager, rtol=0, atol=1e-6)


def test_opencv_clip_extension_matches_opencv(tmp_path: Path) -> None:
    """The res10 face detector's `clip: 1` (OpenCV's field) clips boxes before NMS."""
    cv2 = pytest.importorskip("cv2")
    source = corpus_net("opencv-face-detector-res10-ssd")
    prototxt = tmp_path / "res10.prototxt"
    prototxt.write_text(
        re.sub(r"confidence_threshold: [0-9.]+", "confidence_threshold: 0.3", source.read_text())
    )
    conversion, weights = convert_random(prototxt, tmp_path)
    image = np.random.default_rng(0).standard_normal((1, 3, 300, 300)).astype(np.float32)
    with torch.no_grad():
        ours = load_module(conversion)(torch.from_numpy(image)).numpy()[0, 0]
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
    net.enableFusion(False)
    net.setInput(image)
    reference = net.forward()[0, 0]
    reference = reference[reference[:, 2] > 0]  # OpenCV pads to keep_top_k with zero rows
    assert ours[:, 3:].min() >= 0 and ours[:, 3:].max() <= 1
    # OpenCV's row count differs from Caffe's on random weights; compare the rows it shares.
    distance = np.abs(ours[:, None, :] - reference[None, :, :]).max(axis=2)
    matched = distance.min(axis=1) <= 1e-5
    assert len(ours) > 50 and matched.mean() >= 0.9, matched.mean()


@pytest.mark.skipif(not ORACLE.exists(), reason="real Caffe (/opt/caffe-oracle) not built")
@pytest.mark.parametrize(
    ("name", "threshold"), [("mobilenet-ssd", "0.01"), ("opencv-face-detector-res10-ssd", "0.3")]
)
def test_corpus_detections_match_real_caffe(name: str, threshold: str, tmp_path: Path) -> None:
    """End to end against real Caffe, with the threshold lowered so that random weights give
    many detections (and without OpenCV's `clip` field, which Caffe does not know)."""
    text = corpus_net(name).read_text()
    text = re.sub(r"confidence_threshold: [0-9.]+", f"confidence_threshold: {threshold}", text)
    text = re.sub(r"\n\s*clip: 1\s*\n", "\n", text)
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(text)
    conversion, weights = convert_random(prototxt, tmp_path)
    image = np.random.default_rng(0).standard_normal((1, 3, 300, 300)).astype(np.float32)
    np.save(tmp_path / "x.npy", image)
    out = tmp_path / "out"
    subprocess.run(
        [str(ORACLE), "run", str(prototxt), "--weights", str(weights)]
        + ["--input", f"data={tmp_path / 'x.npy'}", "--out", str(out)],
        check=True,
        capture_output=True,
    )
    reference = np.load(out / "detection_out.npy")
    with torch.no_grad():
        ours = load_module(conversion)(torch.from_numpy(image)).numpy()
    assert ours.shape == reference.shape and ours.shape[2] > 50
    np.testing.assert_array_equal(ours[..., :2], reference[..., :2])
    np.testing.assert_allclose(ours[..., 2:], reference[..., 2:], rtol=0, atol=1e-5)


def test_many_candidates_without_top_k_match_numpy_reference(oracle_cases) -> None:
    """The fixture's inputs tiled to 3 x 222 priors, no top_k and an adaptive eta: NMS runs over
    more candidates than one overlap block holds."""
    _, expected = oracle_cases
    loc = np.tile(expected["input:loc"].reshape(2, -1, 4), (1, 3, 1)).reshape(2, -1)
    loc = loc + np.random.default_rng(3).normal(0, 0.05, loc.shape).astype(np.float32)
    conf = np.tile(expected["conf"], (1, 3, 1)).reshape(2, -1)
    prior = np.tile(expected["priors"].reshape(1, 2, -1, 4), (1, 1, 3, 1)).reshape(1, 2, -1)
    params: dict[str, Any] = {
        "num_classes": 4,
        "share_location": True,
        "background_label": 0,
        "code_type": "CENTER_SIZE",
        "variance_encoded_in_target": False,
        "confidence_threshold": 0.2,
        "nms_threshold": 0.7,
        "top_k": -1,
        "eta": 0.9,
        "keep_top_k": 150,
    }
    tensors = (torch.from_numpy(loc), torch.from_numpy(conf), torch.from_numpy(prior))
    ours = _detection_helper()(*tensors, **params).numpy()
    reference = detection_output(loc, conf, prior, **params)
    assert ours.shape == reference.shape and ours.shape[2] == 2 * 150  # keep_top_k per image
    np.testing.assert_array_equal(ours[..., :2], reference[..., :2])
    np.testing.assert_allclose(ours[..., 2:], reference[..., 2:], rtol=0, atol=1e-5)


@functools.cache
def _detection_helper() -> Callable[..., torch.Tensor]:
    """templates/helpers/detection_output.py's function, as generated modules include it."""
    source = HELPERS / "detection_output.py"
    # A named module (TorchScript resolves a function's globals through its module).
    module = types.ModuleType("detection_output_helper")
    module.torch = torch  # type: ignore[attr-defined]
    exec(compile(source.read_text(), str(source), "exec"), module.__dict__)
    sys.modules[module.__name__] = module
    function: Callable[..., torch.Tensor] = module.detection_output
    return function


@functools.cache
def _static_detection_helper() -> Callable[..., torch.Tensor]:
    """The helper on its static path (as torch.export, torch.compile and ONNX follow it), run
    eagerly: a second copy of the module whose `_static_shapes` always says so."""
    source = HELPERS / "detection_output.py"
    module = types.ModuleType("detection_output_static_helper")
    module.torch = torch  # type: ignore[attr-defined]
    exec(compile(source.read_text(), str(source), "exec"), module.__dict__)
    module._static_shapes = lambda x: True  # type: ignore[attr-defined]
    function: Callable[..., torch.Tensor] = module.detection_output
    return function


@functools.cache
def _scripted_detection_helper() -> Callable[..., torch.Tensor]:
    scripted: Callable[..., torch.Tensor] = torch.jit.script(_detection_helper())
    return scripted


@st.composite
def _detection_problems(draw: st.DrawFn) -> tuple[dict[str, Any], list[np.ndarray]]:
    """A DetectionOutput configuration over every parameter's edges, and its inputs: priors
    some of which have no area, scores with ties when `coarse`."""
    num_classes = draw(st.integers(1, 4))
    params: dict[str, Any] = {
        "num_classes": num_classes,
        "share_location": draw(st.booleans()),
        "background_label": draw(st.sampled_from([-1, 0, num_classes - 1])),
        "code_type": draw(st.sampled_from(["CORNER", "CENTER_SIZE", "CORNER_SIZE"])),
        "variance_encoded_in_target": draw(st.booleans()),
        "confidence_threshold": draw(st.sampled_from([None, 0.0, 0.1, 0.3, 0.6])),
        "nms_threshold": draw(st.sampled_from([0.0, 0.3, 0.45, 0.7, 1.0])),
        "top_k": draw(st.sampled_from([-1, 0, 1, 5, 1000])),
        "eta": draw(st.sampled_from([1.0, 0.9, 0.6])),
        "keep_top_k": draw(st.sampled_from([-1, 0, 1, 7, 1000])),
    }
    num, num_priors = draw(st.integers(1, 3)), draw(st.integers(1, 140))  # > 2 NMS blocks
    coarse = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    centers = rng.uniform(0, 1, (num_priors, 2))
    sizes = rng.uniform(0, 0.6, (num_priors, 2)) * (rng.uniform(size=(num_priors, 1)) > 0.2)
    boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], 1)
    variances = rng.uniform(0.05, 0.3, (num_priors, 4))
    prior = np.stack([boxes.reshape(-1), variances.reshape(-1)])[None].astype(np.float32)
    loc_classes = 1 if params["share_location"] else num_classes
    loc = rng.normal(0, 0.5, (num, num_priors * loc_classes * 4)).astype(np.float32)
    logits = rng.normal(0, 1.5, (num, num_priors, num_classes))
    conf = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    if coarse:
        conf = np.round(conf * 8) / 8
    return params, [loc, conf.reshape(num, -1).astype(np.float32), prior]


@given(_detection_problems())
def test_detection_output_matches_numpy_reference(problem) -> None:
    """Eager and TorchScript against Caffe's Forward_cpu written out in numpy
    (protocaffe.verify.reference.ops.detection), over random configurations and inputs."""
    params, inputs = problem
    reference = detection_output(*inputs, **params)
    tensors = [torch.from_numpy(x) for x in inputs]
    for function in (_detection_helper(), _scripted_detection_helper()):
        ours = function(*tensors, **params).numpy()
        assert ours.shape == reference.shape
        np.testing.assert_array_equal(ours[..., :2], reference[..., :2])
        np.testing.assert_allclose(ours[..., 2:], reference[..., 2:], rtol=0, atol=1e-5)


@given(_detection_problems())
def test_eager_detection_rows_are_the_static_ones(problem) -> None:
    """Run eagerly, DetectionOutput first leaves out the priors that no class scores above the
    threshold; its rows must be exactly those of the static path (which exports, TorchScript
    and torch.compile follow), over the same random configurations and inputs. (The test
    above checks the eager and the scripted path against the numpy port of Caffe.)"""
    params, inputs = problem
    tensors = [torch.from_numpy(x) for x in inputs]
    eager = _detection_helper()(*tensors, **params)
    static = _static_detection_helper()(*tensors, **params)
    assert torch.equal(eager, static)


@pytest.mark.parametrize("name", SSD_NETS)
def test_eager_detections_are_the_static_ones_on_corpus_nets(name: str, tmp_path: Path) -> None:
    """Run eagerly, DetectionOutput leaves out the priors no class scores above the threshold;
    the rows must be exactly those of the static path (which every export follows), at the net's own
    threshold (few rows) and at 0.01 (many, keep_top_k binding)."""
    prototxt = corpus_net(name)
    conversion, _ = convert_random(prototxt, tmp_path)
    model = load_module(conversion)
    namespace = type(model).forward.__globals__
    helper = namespace["detection_output"]
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def record(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append((args, kwargs))
        result: torch.Tensor = helper(*args, **kwargs)
        return result

    namespace["detection_output"] = record
    try:
        image = np.random.default_rng(0).standard_normal(conversion.graph.inputs[0].shape)
        with torch.no_grad():
            model(torch.from_numpy(image.astype(np.float32)))
    finally:
        namespace["detection_output"] = helper
    ((args, kwargs),) = calls
    counts = []
    for threshold in (kwargs["confidence_threshold"], 0.01):
        params = {**kwargs, "confidence_threshold": threshold}
        eager = _detection_helper()(*args, **params)
        static = _static_detection_helper()(*args, **params)
        assert torch.equal(eager, static), threshold
        counts.append(eager.shape[2])
    assert counts[1] > 10  # the low threshold exercises many candidates
