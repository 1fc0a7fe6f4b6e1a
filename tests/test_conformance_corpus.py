"""Conformance over ../shared/corpus: every supported model matches OpenCV blob by blob.

One test per corpus case, so that a failure names its model. Nets with more than
`FAST_PARAMETERS` weights are marked slow and run only with PROTOCAFFE_FULL_CORPUS=1 (the
standalone runner, `python tests/conformance.py`, always runs everything).
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("cv2")

from conformance import (
    FAST_PARAMETERS,
    CaffeOutputCase,
    CorpusCase,
    caffe_output_cases,
    corpus_cases,
    parameter_count,
    run_caffe_output_case,
    run_case,
)

FULL = os.environ.get("PROTOCAFFE_FULL_CORPUS") == "1"


from shared_dir import SHARED  # noqa: E402


def _param(case: CorpusCase) -> object:
    marks = []
    if parameter_count(case) > FAST_PARAMETERS:
        marks.append(pytest.mark.slow)
        if not FULL:
            marks.append(pytest.mark.skip(reason="large net: set PROTOCAFFE_FULL_CORPUS=1"))
    return pytest.param(case, id=case.name.replace(" (real weights)", "[real]"), marks=marks)


CASES = [_param(case) for case in corpus_cases(SHARED / "corpus")]


@pytest.mark.skipif(not CASES, reason="../shared/corpus is absent")
@pytest.mark.parametrize("case", CASES)
def test_corpus_model_matches_opencv(case: CorpusCase) -> None:
    result = run_case(case)
    if result.status == "skip":
        pytest.skip(result.reason)
    assert result.status == "pass", (
        f"{result.name}: {result.status}; first divergent blob {result.first_divergent!r}: "
        f"{result.reason}"
    )
    assert result.blobs > 0


CAFFE_CASES = caffe_output_cases(SHARED / "opencv-caffe-cases")


@pytest.mark.skipif(not CAFFE_CASES, reason="../shared/opencv-caffe-cases is absent")
@pytest.mark.parametrize("case", CAFFE_CASES, ids=[c.name for c in CAFFE_CASES])
def test_real_caffe_reference_output(case: CaffeOutputCase) -> None:
    result = run_caffe_output_case(case)
    assert result.status == "pass", f"{result.name}: {result.reason} (error {result.largest_error})"
