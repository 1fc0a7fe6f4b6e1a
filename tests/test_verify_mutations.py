"""`verify` on a hand-edited model.py: each edit must fail and name the layer that diverges first,
under each of the three references (real Caffe, OpenCV 4.x, the numpy reference).

The fixture net is ours (tests/fixtures/mutation_net.prototxt); the reference runs it with the
same seeded random weights. The expected layer follows from the edit alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from protocaffe.api import convert
from protocaffe.cli import main
from protocaffe.random_weights import random_weights
from protocaffe.verify import Status, VerifyReport, verify
from protocaffe.verify.pycaffe import available as caffe_available

PROTOTXT = Path(__file__).parent / "fixtures" / "mutation_net.prototxt"


def _has_cv2() -> bool:
    try:
        import cv2
    except ImportError:
        return False
    return hasattr(cv2, "dnn") and hasattr(cv2.dnn, "readNetFromCaffe")


REFERENCES = [
    pytest.param("caffe", marks=pytest.mark.skipif(not caffe_available(), reason="no real Caffe")),
    pytest.param("opencv", marks=pytest.mark.skipif(not _has_cv2(), reason="no OpenCV 4.x")),
    "numpy",
]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    work = tmp_path_factory.mktemp("mutation")
    weights = work / "random.caffemodel"
    random_weights(PROTOTXT, weights, seed=3)
    return weights, convert(PROTOTXT, weights).source


def _edit(source: str, pattern: str, replacement: str) -> str:
    edited, count = re.subn(pattern, replacement, source)
    assert count == 1, f"the edit {pattern!r} must apply exactly once"
    return edited


def _verify(tmp_path: Path, weights: Path, source: str, reference: str = "numpy") -> VerifyReport:
    module = tmp_path / "model.py"
    module.write_text(source)
    report = verify(PROTOTXT, weights, module=module, reference=reference)
    assert report.reference == reference
    return report


@pytest.mark.parametrize("reference", REFERENCES)
def test_the_unedited_file_passes(
    tmp_path: Path, generated: tuple[Path, str], reference: str
) -> None:
    weights, source = generated
    report = _verify(tmp_path, weights, source, reference)
    assert report.ok, report.table()
    assert report.first_divergent is None
    compared = {row.layer for row in report.compared}
    assert {"conv1", "bn1", "scale1", "pool1", "concat", "sum", "fc"} <= compared


def swap_cat(source: str) -> str:
    return _edit(source, r"torch\.cat\(\[(\w+), (\w+)\]", r"torch.cat([\2, \1]")


def ceil_off(source: str) -> str:
    return _edit(source, r"MaxPool2d\((.*)ceil_mode=True", r"MaxPool2d(\1ceil_mode=False")


def bn_eps(source: str) -> str:
    return _edit(source, r"eps=0\.001", "eps=0.1")


def drop_scale(source: str) -> str:
    return _edit(source, r"= self\.scale1\((\w+)\)", r"= \1")


def eltwise_coeff(source: str) -> str:
    return _edit(source, r"\* -0\.5", "* -0.25")


MUTATIONS: list[tuple[Callable[[str], str], str, str]] = [
    (swap_cat, "concat", "concat or slice order"),
    (ceil_off, "pool1", "rounding mode"),
    (bn_eps, "bn1", "BatchNorm"),
    (drop_scale, "scale1", "Scale"),
    (eltwise_coeff, "sum", "Eltwise coeff"),
]


@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize(
    ("mutate", "layer", "diagnosis"), MUTATIONS, ids=[m[0].__name__ for m in MUTATIONS]
)
def test_an_edit_fails_at_its_layer(
    tmp_path: Path,
    generated: tuple[Path, str],
    mutate: Callable[[str], str],
    layer: str,
    diagnosis: str,
    reference: str,
) -> None:
    weights, source = generated
    report = _verify(tmp_path, weights, mutate(source), reference)
    assert not report.ok
    first = report.first_divergent
    assert first is not None
    assert first.layer == layer, report.table()
    assert first.diagnosis is not None and diagnosis in first.diagnosis, report.table()
    # Everything before the edited layer still matches.
    before = report.rows[: report.rows.index(first)]
    assert before and all(row.status is Status.MATCH for row in before)


def test_a_deleted_layer_is_blamed_when_its_consumer_diverges(
    tmp_path: Path, generated: tuple[Path, str]
) -> None:
    weights, source = generated
    source = _edit(source, r"\n\s*scale1 = self\.scale1\(bn1\).*", "")
    source = _edit(source, r"torch\.relu_\(scale1\)", "torch.relu_(bn1)")
    report = _verify(tmp_path, weights, source)
    first = report.first_divergent
    assert first is not None and first.layer == "scale1"
    assert first.status is Status.SKIPPED


def test_renamed_variables_are_matched_by_their_trace_comments(
    tmp_path: Path, generated: tuple[Path, str]
) -> None:
    weights, source = generated
    source = re.sub(r"\bconcat\b(?= =|,| \+)", "joined", source)
    assert "joined = torch.cat" in source
    report = _verify(tmp_path, weights, source)
    assert report.ok, report.table()
    assert any(row.layer == "concat" and row.status is Status.MATCH for row in report.rows)


def test_the_command_line_exits_1_on_a_mismatch(
    tmp_path: Path, generated: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    weights, source = generated
    module = tmp_path / "model.py"
    module.write_text(eltwise_coeff(source))
    status = main(["verify", str(PROTOTXT), str(weights), "--module", str(module)])
    out = capsys.readouterr().out
    assert status == 1
    assert "<- first divergence" in out and "MISMATCH" in out
    module.write_text(source)
    assert main(["verify", str(PROTOTXT), str(weights), "--module", str(module), "-q"]) == 0
