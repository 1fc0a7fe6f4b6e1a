"""The OpenCV 4.x dnn reference: run the Caffe net and return every layer's output.

OpenCV names a layer's outputs after the layer, and `net.forward(names)` returns each named
layer's first output, so a multi-top layer (Slice) exposes only its first top. Its importer
renames the producer of a blob that is later updated in place to the blob's name (layer `conv`
with top `c` followed by an in-place `relu` becomes layer `c`), so a layer is looked up by its
own name first, then by its first top. Layer fusion is disabled so that every intermediate
exists, and Winograd convolution too, because it trades accuracy for speed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np

INSTALL_HINT = "pip install 'protocaffe[verify]'"


# Layer types where OpenCV itself departs from Caffe, with what it does instead. A mismatch at
# such a layer is reported with this note rather than blamed on the module.
KNOWN_DEVIATIONS = {
    # SENet's axpy_layer.hpp: F = a * X + Y with X = bottom[1], Y = bottom[2]. OpenCV's
    # importer wires Scale(bottom[2], bottom[0]) + bottom[1], i.e. a * Y + X.
    "Axpy": "OpenCV computes a * bottom[2] + bottom[1]; Caffe's Axpy is a * bottom[1] + bottom[2]",
}


class ReferenceUnavailable(Exception):
    """The reference cannot run this net (missing backend, unsupported layer, ...)."""


def require_cv2() -> ModuleType:
    try:
        import cv2
    except ImportError as exc:
        raise ReferenceUnavailable(
            f"the OpenCV reference needs opencv-python-headless<5: {INSTALL_HINT}"
        ) from exc
    if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromCaffe"):
        raise ReferenceUnavailable(
            f"OpenCV {cv2.__version__} has no Caffe importer (removed in 5.x): {INSTALL_HINT}"
        )
    return cv2


@dataclass(frozen=True)
class LayerQuery:
    """A Caffe layer to fetch: its name, its type and its tops (in order)."""

    name: str
    type: str
    tops: tuple[str, ...]


def _one_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def run_opencv(
    prototxt: str | os.PathLike[str],
    caffemodel: str | os.PathLike[str] | None,
    inputs: Mapping[str, np.ndarray],
    layers: Sequence[LayerQuery],
) -> dict[tuple[str, int], np.ndarray]:
    """{(layer name, top index): output} for every layer OpenCV can give (only top 0)."""
    cv2 = require_cv2()
    try:
        net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel) if caffemodel else "")
    except cv2.error as exc:
        raise ReferenceUnavailable(f"OpenCV cannot import the net: {_one_line(exc)}") from exc
    net.enableFusion(False)
    if hasattr(net, "enableWinograd"):
        net.enableWinograd(False)
    known: dict[str, str] = {}
    for name in net.getLayerNames():
        known[name] = net.getLayer(net.getLayerId(name)).type
    wanted: list[tuple[str, str]] = []  # (caffe layer name, opencv layer name)
    for layer in layers:
        for candidate in (layer.name, *layer.tops[:1]):
            if candidate in known and (candidate == layer.name or known[candidate] == layer.type):
                wanted.append((layer.name, candidate))
                break
    try:
        for name, array in inputs.items():
            net.setInput(np.ascontiguousarray(array, dtype=np.float32), name)
        outputs = net.forward([opencv_name for _, opencv_name in wanted]) if wanted else []
    except cv2.error as exc:
        raise ReferenceUnavailable(f"OpenCV cannot run the net: {_one_line(exc)}") from exc
    types = {layer.name: layer.type for layer in layers}
    batch = next(iter(inputs.values())).shape[0] if inputs else 1
    found: dict[tuple[str, int], np.ndarray] = {}
    for (caffe_name, _), out in zip(wanted, outputs, strict=True):
        array = np.asarray(out, dtype=np.float32)
        if types[caffe_name] == "DetectionOutput":
            array = caffe_detections(array, batch)
        found[(caffe_name, 0)] = array
    return found


def caffe_detections(out: np.ndarray, batch: int) -> np.ndarray:
    """OpenCV's DetectionOutput in Caffe's layout. OpenCV pads its (1, 1, rows, 7) output with
    all-zero rows (keep_top_k of them when nothing is detected); Caffe returns only the kept
    detections, or one row [image, -1, -1, -1, -1, -1, -1] per image when there are none."""
    rows = out.reshape(-1, 7)
    kept = rows[np.any(rows != 0, axis=1)]
    if len(kept) == 0:
        kept = np.full((batch, 7), -1.0, dtype=np.float32)
        kept[:, 0] = np.arange(batch)
    return kept.reshape(1, 1, -1, 7)
