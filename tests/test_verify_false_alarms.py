"""`verify` must not fail a correct module: one test per false alarm users met.

- a module made with --optimize (folded BatchNorm and Scale: the folded line is compared with
  the blob of the last layer it absorbed, the absorbed layers are reported as folded);
- layers that share a name (HED's five `crop` layers): told apart by position;
- DetectionOutput rows with equal scores, in another order than the reference's;
- choices between values that tie (a MAX pooling's mask, an ArgMax), and the layers after them.

Each also has its counterpart that must still fail, so that no rule passes everything.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from protocaffe.api import convert
from protocaffe.cli import main
from protocaffe.random_weights import random_weights
from protocaffe.verify import Status, verify
from protocaffe.verify.compare import Tolerance
from protocaffe.verify.ties import argmax_ties, mask_ties, match_detections

FIXTURES = Path(__file__).parent / "fixtures"
TINYNET = Path(__file__).resolve().parents[1] / "examples" / "tinynet" / "deploy.prototxt"
TOL = Tolerance()


# --- --optimize ---------------------------------------------------------------------------


def test_the_optimized_tinynet_verifies_with_its_folded_layers_reported() -> None:
    report = verify(TINYNET, reference="numpy", optimize=True, seed=1)
    assert report.ok, report.table()
    rows = {r.layer: r for r in report.rows}
    assert rows["conv1"].status is Status.FOLDED and rows["conv1/bn"].status is Status.FOLDED
    assert rows["conv1"].note is not None and "folded into 'conv1/scale'" in rows["conv1"].note
    # The folded line stands for the last layer it absorbed: compared with Scale's blob.
    assert rows["conv1/scale"].status is Status.MATCH
    assert not any(r.status.failed for r in report.rows)


def test_convert_optimize_then_verify_the_files_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "w.caffemodel"
    random_weights(TINYNET, weights, seed=2)
    out = tmp_path / "out"
    assert main(["convert", str(TINYNET), str(weights), "-o", str(out), "--optimize", "-q"]) == 0
    args = ["--module", str(out / "model.py"), "--weights", str(out / "model.safetensors")]
    status = main(["verify", str(TINYNET), str(weights), *args, "--reference", "numpy"])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "folded into 'conv1/scale'" in printed


def test_a_wrong_fold_still_fails_at_the_folded_line(tmp_path: Path) -> None:
    """The counterpart: the folded convolution with other weights is a mismatch, on its line."""
    weights = tmp_path / "w.caffemodel"
    random_weights(TINYNET, weights, seed=2)
    source = convert(TINYNET, weights).source  # not optimized: conv1 then BN then Scale
    # A hand-made "fold" that forgets BatchNorm and Scale but claims them in its comment.
    source = re.sub(
        r"# 'conv1' Convolution",
        "# 'conv1' Convolution + 'conv1/bn' BatchNorm + 'conv1/scale' Scale",
        source,
    )
    source = re.sub(r"\n\s*conv1_bn = self\.conv1_bn\(conv1\).*", "", source)
    source = re.sub(r"\n\s*conv1_scale = self\.conv1_scale\(conv1_bn\).*", "", source)
    source = source.replace("torch.relu_(conv1_scale)", "torch.relu_(conv1)")
    module = tmp_path / "model.py"
    module.write_text(source)
    report = verify(TINYNET, weights, module=module, reference="numpy")
    first = report.first_divergent
    assert first is not None and first.layer == "conv1/scale", report.table()


# --- layers that share a name ---------------------------------------------------------------

DUPLICATES = FIXTURES / "duplicate_names.prototxt"


@pytest.mark.parametrize("reference", ["numpy", "opencv", "caffe"])
def test_layers_of_one_name_are_told_apart_by_position(reference: str) -> None:
    if reference == "opencv":
        pytest.importorskip("cv2")
    if reference == "caffe":
        from protocaffe.verify.pycaffe import available

        if not available():
            pytest.skip("no real Caffe")
    report = verify(DUPLICATES, reference=reference, seed=3)
    assert report.ok, report.table()
    crops = [r for r in report.rows if r.layer == "crop"]
    assert [r.blob for r in crops] == ["crop1", "crop2"]
    assert crops[0].position != crops[1].position
    if reference == "numpy":
        # Both are compared, each with its own blob (their offsets differ, so their values do).
        assert all(r.status is Status.MATCH for r in report.rows)


def test_a_swapped_crop_is_caught_at_its_own_position(tmp_path: Path) -> None:
    weights = tmp_path / "w.caffemodel"
    random_weights(DUPLICATES, weights, seed=4)
    source = convert(DUPLICATES, weights).source
    # The second crop made with the first one's offset.
    edited = source.replace(
        "up2[:, :, 2 : 2 + data.shape[2], 2 : 2 + data.shape[3]]",
        "up2[:, :, 1 : 1 + data.shape[2], 1 : 1 + data.shape[3]]",
    )
    assert edited != source
    module = tmp_path / "model.py"
    module.write_text(edited)
    report = verify(DUPLICATES, weights, module=module, reference="numpy")
    first = report.first_divergent
    assert first is not None and (first.layer, first.blob) == ("crop", "crop2"), report.table()


def test_convert_notes_a_reused_name_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["convert", str(DUPLICATES), "-o", str(tmp_path / "out")]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "reuses layer name" in line]
    assert len(notes) == 1
    assert "'crop' (2 layers, lines 11, 17)" in notes[0] and "1 more name is reused" in notes[0]


# --- detections with equal scores ------------------------------------------------------------

DETECTIONS = FIXTURES / "tied_detections.prototxt"


def _detection_inputs(tmp_path: Path, tied: bool) -> list[str]:
    """16 non-overlapping priors in a 4 x 4 grid, no offsets, class 1 with score 1.0 for all
    (tied) or with 16 different scores."""
    prior = np.zeros((1, 2, 64), np.float32)
    for k in range(16):
        i, j = divmod(k, 4)
        prior[0, 0, 4 * k : 4 * k + 4] = [
            j / 4 + 0.02,
            i / 4 + 0.02,
            (j + 1) / 4 - 0.02,
            (i + 1) / 4 - 0.02,
        ]
        prior[0, 1, 4 * k : 4 * k + 4] = [0.1, 0.1, 0.2, 0.2]
    conf = np.zeros((1, 32), np.float32)
    conf[0, 1::2] = 1.0 if tied else np.linspace(0.5, 0.99, 16)
    args = []
    for name, array in (("loc", np.zeros((1, 64), np.float32)), ("conf", conf), ("prior", prior)):
        np.save(tmp_path / f"{name}.npy", array)
        args += ["--input", f"{name}={tmp_path / f'{name}.npy'}"]
    return args


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "distinct"])
def test_detections_may_come_in_any_order_among_equal_scores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tied: bool
) -> None:
    source = convert(DETECTIONS).source
    # Reversing the rows is a correct output when every score ties, and wrong when none does.
    flipped, count = re.subn(
        r"\n(\s*)return det(\.contiguous\(\))?\n",
        r"\n\1det = det.flip(2)\n\1return det\2\n",
        source,
    )
    assert count == 1
    module = tmp_path / "model.py"
    module.write_text(flipped)
    args = [str(DETECTIONS), *_detection_inputs(tmp_path, tied), "--module", str(module)]
    status = main(["verify", *args, "--reference", "numpy"])
    printed = capsys.readouterr().out
    if tied:
        assert status == 0, printed
        assert "16 of 16 rows in another order among equal scores" in printed
    else:
        assert status == 1, printed
        assert "<- first divergence" in printed


def _table(rows: list[tuple[float, ...]]) -> np.ndarray:
    return np.array(rows, np.float32).reshape(1, 1, -1, 7)


def test_detection_rows_match_by_image_label_score_and_box() -> None:
    a = (0, 1, 0.9, 0.1, 0.1, 0.2, 0.2)
    b = (0, 1, 0.9, 0.5, 0.5, 0.6, 0.6)
    c = (0, 2, 0.5, 0.3, 0.3, 0.4, 0.4)
    found = match_detections(_table([b, a, c]), _table([a, b, c]), TOL, keep_top_k=10)
    assert found is not None and found.matched and found.err.max_abs == 0
    assert found.note == "2 of 3 rows in another order among equal scores"
    # Rows of different scores do not trade places.
    assert match_detections(_table([c, a, b]), _table([a, b, c]), TOL, keep_top_k=10) is None
    # A tied row with another box is not a match.
    moved = (0, 1, 0.9, 0.5, 0.5, 0.6, 0.7)
    found = match_detections(_table([moved, a, c]), _table([a, b, c]), TOL, keep_top_k=10)
    assert found is not None and not found.matched


def test_keep_top_k_may_cut_a_run_of_ties_at_another_row() -> None:
    a = (0, 1, 0.9, 0.1, 0.1, 0.2, 0.2)
    b = (0, 1, 0.5, 0.5, 0.5, 0.6, 0.6)
    c = (0, 1, 0.5, 0.3, 0.3, 0.4, 0.4)
    found = match_detections(_table([a, c]), _table([a, b]), TOL, keep_top_k=2)
    assert found is not None and found.matched
    assert found.note is not None and "keep_top_k cut" in found.note
    # Without the cut (fewer rows than keep_top_k), the same difference is a mismatch.
    found = match_detections(_table([a, c]), _table([a, b]), TOL, keep_top_k=5)
    assert found is not None and not found.matched


# --- choices between equal values ------------------------------------------------------------

NEAR_TIE = FIXTURES / "near_tie_net.prototxt"


def _tied_input(path: Path) -> np.ndarray:
    """Every 2 x 2 window holds its maximum twice, at its top-left and top-right."""
    rng = np.random.default_rng(5)
    x = rng.uniform(-1.0, 0.0, (1, 2, 4, 6)).astype(np.float32)
    top = rng.uniform(0.5, 1.0, (1, 2, 2, 3)).astype(np.float32)
    x[:, :, 0::2, 0::2] = top
    x[:, :, 0::2, 1::2] = top
    np.save(path, x)
    return x


def _mask_edit(source: str, shift: int) -> str:
    """The module's mask moved `shift` elements to the right (1: the other tied maximum)."""
    edited, count = re.subn(
        r"\n(\s*)(pool, mask = .*)\n", rf"\n\1\2\n\1mask = mask + {shift}\n", source
    )
    assert count == 1
    return edited


@pytest.mark.parametrize("shift", [1, 3], ids=["other-maximum", "not-a-maximum"])
def test_a_mask_that_picks_the_other_tied_maximum_is_a_near_tie(tmp_path: Path, shift: int) -> None:
    _tied_input(tmp_path / "x.npy")
    module = tmp_path / "model.py"
    module.write_text(_mask_edit(convert(NEAR_TIE).source, shift))
    report = verify(NEAR_TIE, module=module, inputs={"data": tmp_path / "x.npy"}, reference="numpy")
    rows = {r.blob: r for r in report.rows}
    if shift == 1:
        assert report.ok, report.table()
        assert rows["mask"].status is Status.TIE
        assert rows["mask"].note is not None and "12 of 12 elements" in rows["mask"].note
        # The unpooled values sit elsewhere than Caffe's: checked on the module's own inputs.
        assert rows["unpool"].status is Status.TIE
        assert rows["unpool"].note is not None and "near tie at 'pool'" in rows["unpool"].note
    else:
        first = report.first_divergent
        assert first is not None and first.blob == "mask", report.table()


def test_tie_rules_look_at_the_reference_values() -> None:
    bottom = np.array([[[[1.0, 1.0, 0.0, 0.5]]]], np.float32)  # one window of 4, on one row
    pooled = np.array([[[[1.0]]]], np.float32)
    ref, other, wrong = (np.array([[[[i]]]], np.float32) for i in (0, 1, 3))
    assert mask_ties(other, ref, bottom, pooled, TOL).explained
    assert not mask_ties(wrong, ref, bottom, pooled, TOL).explained
    scores = np.array([[[[0.3]], [[0.7]], [[0.7]]]], np.float32)  # (1, 3, 1, 1): a tie 1-2
    assert argmax_ties(np.full((1, 1, 1, 1), 2.0), np.ones((1, 1, 1, 1)), scores, 1, TOL).explained
    assert not argmax_ties(np.zeros((1, 1, 1, 1)), np.ones((1, 1, 1, 1)), scores, 1, TOL).explained
    # Without an axis: the index into each sample's flattened values.
    assert argmax_ties(np.full((1, 1, 1), 2.0), np.ones((1, 1, 1)), scores, None, TOL).explained
