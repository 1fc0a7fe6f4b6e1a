"""The detection forks' PriorBox and DetectionOutput variants (issue 15) against the numpy
reference, which transcribes each fork's C++ (repository, commit, file and function in
protocaffe/verify/reference/ops/detection.py): RefineDet's five-bottom DetectionOutput,
FaceBoxes' dense PriorBox (`--dialect faceboxes-priorbox`) and TextBoxes' vertically offset
PriorBox (`--dialect textboxes-priorbox`). Real Caffe (the oracle's SSD fork) knows none of these
variants; the SSD behaviour they leave alone is checked against it in tests/test_forks_ssd.py.

Each case runs on seeded random inputs, odd feature-map sizes and batches of one and more; every
blob of the generated module is compared with the reference's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fork_cases import compare_with_reference, layer, net_text

from protocaffe.api import convert
from protocaffe.errors import ProtocaffeError, Reporter, Severity

SEEDS = range(4)


def _rng(seed: int, salt: int) -> np.random.Generator:
    return np.random.default_rng(1000 * salt + seed)


def _odd(rng: np.random.Generator, low: int = 3, high: int = 12) -> int:
    return int(rng.integers(low, high)) | 1


# ---- RefineDet's DetectionOutput (sfzhang15/RefineDet) -----------------------------------------


def _refinedet_net(
    rng: np.random.Generator, seed: int
) -> tuple[str, dict[str, np.ndarray], dict[str, object]]:
    """PriorBox over an odd feature map, then RefineDet's DetectionOutput on random odm/arm
    predictions: objectness scores on both sides of objectness_score, offsets large enough
    for the refined priors to move and overlap."""
    num = int(rng.integers(1, 3))
    fh, fw = _odd(rng, 3, 8), _odd(rng, 3, 8)
    image = (num, 3, fh * 8 + int(rng.integers(0, 5)), fw * 8 + int(rng.integers(0, 5)))
    ratios = [2.0] if seed % 2 else [2.0, 3.0]
    boxes = 1 + 2 * len(ratios)  # flip: each ratio and its inverse
    priors = fh * fw * boxes
    classes = int(rng.integers(2, 5))
    code = ["CENTER_SIZE", "CORNER", "CORNER_SIZE"][seed % 3]
    objectness = float(rng.choice([0.01, 0.3, 0.5]))
    keep_top_k = int(rng.choice([-1, 7, 40]))
    top_k = int(rng.choice([20, 400]))
    prior_params = (
        "prior_box_param { min_size: 16 "
        + " ".join(f"aspect_ratio: {r}" for r in ratios)
        + " flip: true clip: false variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 "
        "step: 8 offset: 0.5 }"
    )
    out_params = (
        f"detection_output_param {{ num_classes: {classes} share_location: true "
        f"background_label_id: 0 nms_param {{ nms_threshold: 0.45 top_k: {top_k} }} "
        f"code_type: {code} keep_top_k: {keep_top_k} confidence_threshold: 0.2 "
        f"objectness_score: {objectness} }}"
    )
    inputs_shapes = {
        "feat": (num, 2, fh, fw),
        "data": image,
        "odm_loc": (num, priors * 4),
        "odm_conf": (num, priors * classes),
        "arm_conf": (num, priors * 2),
        "arm_loc": (num, priors * 4),
    }
    body = layer("priors", "PriorBox", "feat", "data", params=prior_params) + layer(
        "det",
        "DetectionOutput",
        "odm_loc",
        "odm_conf",
        "priors",
        "arm_conf",
        "arm_loc",
        params=out_params,
    )
    scale = 0.3 if code == "CENTER_SIZE" else 0.05
    arm = rng.uniform(0.0, 1.0, size=(num, priors, 1))
    inputs = {
        "feat": rng.normal(size=inputs_shapes["feat"]).astype(np.float32),
        "data": rng.normal(size=image).astype(np.float32),
        "odm_loc": (rng.normal(size=inputs_shapes["odm_loc"]) * scale).astype(np.float32),
        "odm_conf": rng.uniform(0.0, 1.0, size=inputs_shapes["odm_conf"]).astype(np.float32),
        "arm_conf": np.concatenate([1 - arm, arm], -1).reshape(num, -1).astype(np.float32),
        "arm_loc": (rng.normal(size=inputs_shapes["arm_loc"]) * scale).astype(np.float32),
    }
    facts = {"objectness": objectness, "classes": classes, "priors": priors}
    return net_text(inputs_shapes, body), inputs, facts


@pytest.mark.parametrize("seed", range(6))
def test_refinedet_detection_output(seed: int, tmp_path: Path) -> None:
    rng = _rng(seed, 1)
    text, inputs, facts = _refinedet_net(rng, seed)
    _, reference = compare_with_reference(tmp_path, text, inputs, seed=seed)
    rows = reference["det"].reshape(-1, 7)
    assert rows.shape[0] > 1 and (rows[:, 1] > 0).all(), "the case finds detections"
    # The ARM's filter matters: an easy negative (objectness below the score) is never kept.
    arm = inputs["arm_conf"].reshape(-1, 2)[:, 1]
    assert (arm < np.float32(facts["objectness"])).any() and (arm >= facts["objectness"]).any()


def test_refinedet_refines_and_filters(tmp_path: Path) -> None:
    """Independent of the reference: one prior, offsets that move it by a known amount, and an
    objectness on either side of the score. CENTER_SIZE with variances 1 (encoded in target):
    the arm offset (0.5, 0, 0, 0) shifts the prior by half its width, the odm one as much again
    of the refined (same-size) prior."""
    text = net_text(
        {"loc": (1, 4), "conf": (1, 2), "prior": (1, 2, 4), "arm_conf": (1, 2), "arm_loc": (1, 4)},
        layer(
            "det",
            "DetectionOutput",
            "loc",
            "conf",
            "prior",
            "arm_conf",
            "arm_loc",
            params="detection_output_param { num_classes: 2 code_type: CENTER_SIZE "
            "variance_encoded_in_target: true nms_param { nms_threshold: 0.5 } "
            "confidence_threshold: 0.1 objectness_score: 0.4 }",
        ),
    )
    prior = np.array([[[0.2, 0.2, 0.4, 0.6], [1, 1, 1, 1]]], np.float32)
    shift = np.array([[0.5, 0.0, 0.0, 0.0]], np.float32)
    conf = np.array([[0.1, 0.9]], np.float32)
    for objectness, expected in ((0.6, [[0, 1, 0.9, 0.4, 0.2, 0.6, 0.6]]), (0.3, None)):
        inputs = {
            "loc": shift,
            "conf": conf,
            "prior": prior,
            "arm_conf": np.array([[1 - objectness, objectness]], np.float32),
            "arm_loc": shift,
        }
        _, reference = compare_with_reference(tmp_path, text, inputs)
        rows = reference["det"].reshape(-1, 7)
        if expected is None:  # an easy negative: scores [1, 0], no detection
            np.testing.assert_array_equal(rows, [[0, -1, -1, -1, -1, -1, -1]])
        else:
            np.testing.assert_allclose(rows, expected, rtol=0, atol=1e-6)


def test_refinedet_refuses_what_the_fork_cannot_run(tmp_path: Path) -> None:
    shapes = {"loc": (1, 8), "conf": (1, 4), "prior": (1, 2, 8), "a": (1, 4), "b": (1, 8)}
    cases = {
        ("loc", "conf", "prior", "a"): "4 bottoms",
        ("loc", "conf", "prior", "a", "b"): "share_location",
    }
    for bottoms, message in cases.items():
        share = "false" if len(bottoms) == 5 else "true"
        text = net_text(
            shapes,
            layer(
                "det",
                "DetectionOutput",
                *bottoms,
                params=f"detection_output_param {{ num_classes: 2 share_location: {share} }}",
            ),
        )
        path = tmp_path / "net.prototxt"
        path.write_text(text)
        with pytest.raises(ProtocaffeError, match=message):
            convert(path, None)


# ---- FaceBoxes' and TextBoxes' PriorBox ----------------------------------------------------------


def _prior_net(
    rng: np.random.Generator, params: str, num: int = 1
) -> tuple[str, dict[str, np.ndarray]]:
    fh, fw = _odd(rng, 1, 8), _odd(rng, 1, 8)
    image = (num, 3, fh * 16 + int(rng.integers(0, 9)), fw * 16 + int(rng.integers(0, 9)))
    shapes = {"feat": (num, 2, fh, fw), "data": image}
    text = net_text(shapes, layer("priors", "PriorBox", "feat", "data", params=params))
    inputs = {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}
    return text, inputs


@pytest.mark.parametrize("seed", SEEDS)
def test_faceboxes_prior_box(seed: int, tmp_path: Path) -> None:
    """FaceBoxes' three layers (min_size 32, 64, 128 with 21 priors; 256; 512) and mixes with
    max_size and aspect ratios, on odd feature maps, clipped or not."""
    rng = _rng(seed, 2)
    sizes = [[32.0, 64.0, 128.0], [256.0], [32.7, 100.0], [64.0]][seed]
    extra = ["", "", "max_size: 48 max_size: 150 aspect_ratio: 2", "aspect_ratio: 3 flip: false"]
    step = "" if seed == 3 else f"step: {int(rng.choice([16, 32]))}"
    params = (
        "prior_box_param { "
        + " ".join(f"min_size: {s}" for s in sizes)
        + f" {extra[seed]} clip: {'true' if seed % 2 else 'false'} "
        f"variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 {step} offset: 0.5 }}"
    )
    text, inputs = _prior_net(rng, params, num=1 + seed % 2)
    _, reference = compare_with_reference(
        tmp_path, text, inputs, dialects=["faceboxes-priorbox"], tolerance=0
    )
    cells = inputs["feat"].shape[2] * inputs["feat"].shape[3]
    per_cell = {0: 21, 1: 1, 2: 16 + 1 + 2 + 1 + 1 + 2, 3: 4 + 1}[seed]
    assert reference["priors"].shape == (1, 2, cells * per_cell * 4)


def test_faceboxes_prior_box_by_hand(tmp_path: Path) -> None:
    """One 1 x 1 cell of a 64 x 64 image, step 64: the first of the 16 min_size-32 boxes sits at
    the centre (32, 32) shifted by (-16, -16) and spans 31 pixels; the 64 ones are shifted by
    -16 or 0 and span 63; the 128 one is centred."""
    text = net_text(
        {"feat": (1, 1, 1, 1), "data": (1, 3, 64, 64)},
        layer(
            "priors",
            "PriorBox",
            "feat",
            "data",
            params="prior_box_param { min_size: 32 min_size: 64 min_size: 128 step: 64 }",
        ),
    )
    inputs = {"feat": np.zeros((1, 1, 1, 1), np.float32), "data": np.zeros((1, 3, 64, 64))}
    inputs["data"] = inputs["data"].astype(np.float32)
    _, reference = compare_with_reference(
        tmp_path, text, inputs, dialects=["faceboxes-priorbox"], tolerance=0
    )
    boxes = reference["priors"][0, 0].reshape(-1, 4) * 64
    np.testing.assert_allclose(boxes[0], [0.5, 0.5, 31.5, 31.5], atol=1e-5)
    np.testing.assert_allclose(boxes[15], [24.5, 24.5, 55.5, 55.5], atol=1e-5)
    np.testing.assert_allclose(boxes[16], [-15.5, -15.5, 47.5, 47.5], atol=1e-5)
    np.testing.assert_allclose(boxes[19], [0.5, 0.5, 63.5, 63.5], atol=1e-5)
    np.testing.assert_allclose(boxes[20], [-31.5, -31.5, 95.5, 95.5], atol=1e-5)


@pytest.mark.parametrize(
    "params, dialect",
    [
        ("min_size: 32 min_size: 64 min_size: 128 step: 32", "faceboxes-priorbox"),
        ("min_size: 30 aspect_ratio: 2 aspect_ratio: 5 flip: false", "textboxes-priorbox"),
    ],
)
def test_without_the_dialect_ssd_priors_and_a_note(
    params: str, dialect: str, tmp_path: Path
) -> None:
    """Without --dialect the layer is SSD's (one box per min_size and ratio), and a note names
    the dialect that would read it as the fork does; with it, the fork's count."""
    path = tmp_path / "net.prototxt"
    path.write_text(
        net_text(
            {"feat": (1, 1, 3, 3), "data": (1, 3, 96, 96)},
            layer("p", "PriorBox", "feat", "data", params=f"prior_box_param {{ {params} }}"),
        )
    )
    reporter = Reporter()
    plain = convert(path, None, reporter=reporter)
    notes = [d.message for d in reporter.diagnostics if d.severity == Severity.NOTE]
    assert any(f"--dialect {dialect} follows it" in n for n in notes), notes
    ssd, fork = (3, 21) if dialect == "faceboxes-priorbox" else (3, 6)
    assert plain.graph.outputs[0].shape == (1, 2, 9 * ssd * 4)
    forked = convert(path, None, dialects=[dialect])
    assert forked.graph.outputs[0].shape == (1, 2, 9 * fork * 4)


@pytest.mark.parametrize("seed", SEEDS)
def test_textboxes_prior_box(seed: int, tmp_path: Path) -> None:
    """TextBoxes' pairs of priors (the second half a step lower), with a float min_size, an
    optional max_size, its text aspect ratios, and its default clip (true)."""
    rng = _rng(seed, 3)
    min_size = [30.0, 60.5, 114.0, 21.25][seed]
    max_size = "" if seed % 2 else f"max_size: {min_size * 2 + 0.5}"
    clip = ["", "clip: false", "clip: true", ""][seed]
    params = (
        f"prior_box_param {{ min_size: {min_size} {max_size} aspect_ratio: 2 aspect_ratio: 3 "
        f"aspect_ratio: 5 aspect_ratio: 7 aspect_ratio: 10 flip: false {clip} "
        "variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 }"
    )
    text, inputs = _prior_net(rng, params, num=1 + seed % 2)
    _, reference = compare_with_reference(
        tmp_path, text, inputs, dialects=["textboxes-priorbox"], tolerance=0
    )
    boxes = reference["priors"][0, 0].reshape(-1, 4)
    assert boxes.shape[0] % 2 == 0
    if clip != "clip: false":  # the fork's default clips
        assert boxes.min() >= 0 and boxes.max() <= 1


def test_textboxes_prior_box_by_hand(tmp_path: Path) -> None:
    """A 1 x 1 map of a 10 x 20 (h x w) image: the min_size 4 box centred at (10, 5) and again
    at (10, 10); the ratio-4 box 8 x 2 likewise."""
    text = net_text(
        {"feat": (1, 1, 1, 1), "data": (1, 3, 10, 20)},
        layer(
            "priors",
            "PriorBox",
            "feat",
            "data",
            params="prior_box_param { min_size: 4 aspect_ratio: 4 flip: false clip: false }",
        ),
    )
    inputs = {"feat": np.zeros((1, 1, 1, 1), np.float32), "data": np.zeros((1, 3, 10, 20))}
    inputs["data"] = inputs["data"].astype(np.float32)
    _, reference = compare_with_reference(
        tmp_path, text, inputs, dialects=["textboxes-priorbox"], tolerance=0
    )
    boxes = reference["priors"][0, 0].reshape(-1, 4) * [20, 10, 20, 10]
    expected = [[8, 3, 12, 7], [8, 8, 12, 12], [6, 4, 14, 6], [6, 9, 14, 11]]
    np.testing.assert_allclose(boxes, expected, atol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_textboxes_pp_denser_prior_box(seed: int, tmp_path: Path) -> None:
    """TextBoxes++' denser_prior_boxes (its own field, no dialect): SSD's priors, each followed by
    the same box at (h + 1) steps."""
    rng = _rng(seed, 4)
    step = "" if seed == 3 else f"step: {int(rng.choice([8, 16]))}"
    params = (
        "prior_box_param { min_size: 30.0 max_size: 60.0 aspect_ratio: 2 aspect_ratio: 3 "
        f"aspect_ratio: 5 flip: true clip: {'true' if seed % 2 else 'false'} variance: 0.1 "
        f"variance: 0.1 variance: 0.2 variance: 0.2 {step} offset: {[0.5, 0.5, 0.25, 0.5][seed]}"
        " denser_prior_boxes: true }"
    )
    text, inputs = _prior_net(rng, params, num=1 + seed % 2)
    _, reference = compare_with_reference(tmp_path, text, inputs, tolerance=0)
    cells = inputs["feat"].shape[2] * inputs["feat"].shape[3]
    assert reference["priors"].shape == (1, 2, cells * 2 * (1 + 1 + 6) * 4)


def test_fork_prior_box_refusals(tmp_path: Path) -> None:
    cases = {
        ("faceboxes-priorbox", "min_size: 32 min_size: 40 min_size: 50"): "21 priors",
        ("textboxes-priorbox", "min_size: 30 min_size: 60"): "one min_size",
        ("textboxes-priorbox", "min_size: 30 step: 8"): "no step field",
    }
    for (dialect, params), message in cases.items():
        path = tmp_path / "net.prototxt"
        path.write_text(
            net_text(
                {"feat": (1, 1, 3, 3), "data": (1, 3, 24, 24)},
                layer("p", "PriorBox", "feat", "data", params=f"prior_box_param {{ {params} }}"),
            )
        )
        with pytest.raises(ProtocaffeError, match=message):
            convert(path, None, dialects=[dialect])


# ---- TextBoxes++' DetectionOutput (use_polygon) -------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("polygon", [True, False])
def test_textboxes_pp_polygon_detection_output(seed: int, polygon: bool, tmp_path: Path) -> None:
    """Dense priors; 12 offsets a prior and rows of 15 (use_polygon), or 9 and rows of 12
    (rotated boxes); NMS, top_k and keep_top_k on the boxes."""
    rng = _rng(seed, 5)
    values, columns = (12, 15) if polygon else (9, 12)
    num = 1 + seed % 2
    fh, fw = _odd(rng, 3, 8), _odd(rng, 3, 8)
    image = (num, 3, fh * 8 + 3, fw * 8 + 1)
    priors = fh * fw * 2 * (1 + 1 + 2)
    classes = 2 + seed % 2
    share = "true" if seed < 3 else "false"
    loc_classes = 1 if seed < 3 else classes
    shapes = {
        "feat": (num, 2, fh, fw),
        "data": image,
        "loc": (num, priors * loc_classes * values),
        "conf": (num, priors * classes),
    }
    body = layer(
        "priors",
        "PriorBox",
        "feat",
        "data",
        params="prior_box_param { min_size: 12 max_size: 30 aspect_ratio: 3 flip: true "
        "variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 step: 8 denser_prior_boxes: "
        "true }",
    ) + layer(
        "det",
        "DetectionOutput",
        "loc",
        "conf",
        "priors",
        params=f"detection_output_param {{ num_classes: {classes} share_location: {share} "
        f"nms_param {{ nms_threshold: 0.45 top_k: {[30, 400][seed % 2]} }} code_type: "
        f"CENTER_SIZE keep_top_k: {[10, -1, 25, 8][seed]} confidence_threshold: 0.3 "
        f"use_polygon: {'true' if polygon else 'false'} }}",
    )
    inputs = {
        "feat": rng.normal(size=shapes["feat"]).astype(np.float32),
        "data": rng.normal(size=image).astype(np.float32),
        "loc": (rng.normal(size=shapes["loc"]) * 0.5).astype(np.float32),
        "conf": rng.uniform(0.0, 1.0, size=shapes["conf"]).astype(np.float32),
    }
    _, reference = compare_with_reference(tmp_path, net_text(shapes, body), inputs, seed=seed)
    rows = reference["det"].reshape(-1, columns)
    assert rows.shape[0] > 1 and (rows[:, 1] > 0).all()


def test_textboxes_pp_polygon_by_hand(tmp_path: Path) -> None:
    """One prior (0.2, 0.2)-(0.4, 0.6), variances 0.1 / 0.2: box offsets 0 keep the box; corner
    offsets (10, 5) move each corner by 0.1 * 10 * 0.2 = 0.2 right and 0.1 * 5 * 0.4 = 0.2 down."""
    text = net_text(
        {"loc": (1, 12), "conf": (1, 2), "prior": (1, 2, 4)},
        layer(
            "det",
            "DetectionOutput",
            "loc",
            "conf",
            "prior",
            params="detection_output_param { num_classes: 2 code_type: CENTER_SIZE "
            "nms_param { nms_threshold: 0.5 } use_polygon: true }",
        ),
    )
    inputs = {
        "loc": np.array([[0, 0, 0, 0] + [10, 5] * 4], np.float32),
        "conf": np.array([[0.25, 0.75]], np.float32),
        "prior": np.array([[[0.2, 0.2, 0.4, 0.6], [0.1, 0.1, 0.2, 0.2]]], np.float32),
    }
    _, reference = compare_with_reference(tmp_path, text, inputs)
    expected = [0, 1, 0.75, 0.2, 0.2, 0.4, 0.6, 0.4, 0.4, 0.6, 0.4, 0.6, 0.8, 0.4, 0.8]
    np.testing.assert_allclose(reference["det"].reshape(-1), expected, atol=1e-6)


def test_textboxes_pp_rotated_by_hand(tmp_path: Path) -> None:
    """use_polygon: false. One prior (0.2, 0.2)-(0.4, 0.6), centre (0.3, 0.4), size 0.2 x 0.4,
    variances 0.1 / 0.2: x offsets 5 and -5 move 0.1 either side of the centre, y offsets 5 and
    -5 0.2; h = exp(0.2 * 0) * 0.4."""
    text = net_text(
        {"loc": (1, 9), "conf": (1, 2), "prior": (1, 2, 4)},
        layer(
            "det",
            "DetectionOutput",
            "loc",
            "conf",
            "prior",
            params="detection_output_param { num_classes: 2 code_type: CENTER_SIZE "
            "nms_param { nms_threshold: 0.5 } use_polygon: false }",
        ),
    )
    inputs = {
        "loc": np.array([[0, 0, 0, 0, -5, -5, 5, 5, 0]], np.float32),
        "conf": np.array([[0.25, 0.75]], np.float32),
        "prior": np.array([[[0.2, 0.2, 0.4, 0.6], [0.1, 0.1, 0.2, 0.2]]], np.float32),
    }
    _, reference = compare_with_reference(tmp_path, text, inputs)
    expected = [0, 1, 0.75, 0.2, 0.2, 0.4, 0.6, 0.2, 0.2, 0.4, 0.6, 0.4]
    np.testing.assert_allclose(reference["det"].reshape(-1), expected, atol=1e-6)


def test_textboxes_pp_refusals(tmp_path: Path) -> None:
    cases = {
        "use_polygon: false code_type: CORNER_SIZE": "CENTER_SIZE",
        "use_polygon: true code_type: CORNER": "CENTER_SIZE",
        "use_polygon: true code_type: CENTER_SIZE variance_encoded_in_target: true": "CENTER",
    }
    for params, message in cases.items():
        path = tmp_path / "net.prototxt"
        path.write_text(
            net_text(
                {"loc": (1, 12), "conf": (1, 2), "prior": (1, 2, 4)},
                layer(
                    "det",
                    "DetectionOutput",
                    "loc",
                    "conf",
                    "prior",
                    params=f"detection_output_param {{ num_classes: 2 {params} }}",
                ),
            )
        )
        with pytest.raises(ProtocaffeError, match=message):
            convert(path, None)
