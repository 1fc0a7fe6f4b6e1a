"""The OpenCV 4.x dnn reference: run the Caffe net and return every layer's output.

OpenCV names a layer's outputs after the layer, and `net.forward(names)` returns each named
layer's first output, so a multi-top layer (Slice) exposes only its first top. Its importer
renames the producer of a blob that is later updated in place to the blob's name (layer `conv`
with top `c` followed by an in-place `relu` becomes layer `c`), so a layer is looked up by its
own name first, then by its first top. Layer fusion is disabled so that every intermediate
exists, and Winograd convolution too, because it trades accuracy for speed. Where OpenCV's
importer departs from Caffe, OpenCV reads an adapted copy of the prototxt (`for_opencv`).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

INSTALL_HINT = "pip install 'protocaffe[verify]'"


# Tokens of the prototxt text format that matter for finding layer blocks: strings and comments
# (which may hold braces), braces, and bottom fields.
_TOKENS = re.compile(
    r"""(?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')|(?P<comment>#[^\n]*)"""
    r"""|(?P<open>\{)|(?P<close>\})"""
)
_BOTTOM = re.compile(r"""\bbottom\s*:\s*("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')""")


def _layer_blocks(text: str) -> list[tuple[int, int]]:
    """(start, end) of each top-level `{...}` block in a prototxt's text."""
    blocks: list[tuple[int, int]] = []
    depth, start = 0, 0
    for match in _TOKENS.finditer(text):
        if match.group("open"):
            if depth == 0:
                start = match.start()
            depth += 1
        elif match.group("close") and depth > 0:
            depth -= 1
            if depth == 0:
                blocks.append((start, match.end()))
    return blocks


def for_opencv(text: str) -> str:
    """The prototxt text OpenCV must read to compute what Caffe computes.

    OpenCV's importer wires Axpy as Scale(bottom[2], bottom[0]) + bottom[1], i.e.
    a * bottom[2] + bottom[1], while SENet's axpy_layer.hpp defines F = a * X + Y with
    X = bottom[1] and Y = bottom[2]: the copy given to OpenCV has those two bottoms swapped.
    """
    pieces: list[str] = []
    done = 0
    for start, end in _layer_blocks(text):
        block = text[start:end]
        if not re.search(r"""\btype\s*:\s*["']Axpy["']""", block):
            continue
        bottoms = list(_BOTTOM.finditer(block))
        if len(bottoms) != 3:
            continue
        x, y = bottoms[1], bottoms[2]
        swapped = (
            block[: x.start(1)] + y.group(1) + block[x.end(1) : y.start(1)] + x.group(1)
        ) + block[y.end(1) :]
        pieces += [text[done:start], swapped]
        done = end
    return "".join(pieces) + text[done:]


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
    text = Path(prototxt).read_text(encoding="utf-8", errors="surrogateescape")
    adapted = for_opencv(text)
    with tempfile.TemporaryDirectory(prefix="protocaffe-opencv-") as work:
        if adapted != text:
            prototxt = Path(work) / "for_opencv.prototxt"
            prototxt.write_text(adapted, encoding="utf-8", errors="surrogateescape")
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
