"""Shared by the review-workflow tests: where the shared corpus is, and running OpenCV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from shared_dir import CORPUS

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures" / "review"
REPO = HERE.parent


def corpus_prototxt(name: str) -> Path:
    return CORPUS / name / "deploy.prototxt"


def opencv_forward(prototxt: Path, caffemodel: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The net's (single) output computed by OpenCV's Caffe importer, the reference."""
    import cv2

    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    for name, array in inputs.items():
        net.setInput(np.ascontiguousarray(array, dtype=np.float32), name)
    return np.asarray(net.forward())
