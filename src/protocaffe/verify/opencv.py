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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from protocaffe.frontend.prototxt import NetDef
from protocaffe.verify.backend import ReferenceUnavailable, RefStep

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
    """OpenCV's message in one line: `(code) ... in f: what it expected`, not the last line
    alone (which may be a fragment such as `'2' is 2`)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    head = next((line for line in lines if " error: " in line), None)
    if head is None:
        return lines[-1]
    text = head.split(" error: ", 1)[1]
    text = re.sub(r"in function '(?:[^']*::)?(~?\w+)\([^']*'", r"in \1", text)
    text = re.sub(r"in function '([^']*)'", r"in \1", text)
    detail = next((line for line in lines if line.startswith(">")), None)
    if detail is not None:
        text += ": " + re.sub(r",\s*where$", "", detail.lstrip("> ").strip())
    return text


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
    try:
        known = {name: net.getLayer(net.getLayerId(name)).type for name in net.getLayerNames()}
    except cv2.error as exc:  # OpenCV makes each layer when first asked for it
        raise ReferenceUnavailable(f"OpenCV cannot import the net: {_one_line(exc)}") from exc
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


# --- OpenCV as a `verify` reference, in a child process ------------------------------------
#
# OpenCV runs in its own process: its importer can corrupt its heap on a net it rejects (a
# crash there must not take verify down), and the memory it holds (its own copy of the
# weights, every layer's output) is returned when it exits, before the module is built.

_CANNOT_CREATE = re.compile(r"""Can't create layer "(.*?)" of type "(.*?)\"""")


def _line_offsets(text: str) -> list[int]:
    offsets = [0]
    for match in re.finditer("\n", text):
        offsets.append(match.end())
    return offsets


def _prefix_text(text: str, line: int) -> str:
    """The prototxt text up to the end of the top-level block that holds `line` (1-based)."""
    offsets = _line_offsets(text)
    at = offsets[min(max(line, 1), len(offsets)) - 1]
    for _, end in _layer_blocks(text):
        if end > at:
            return text[:end] + "\n"
    return text


def _first_failing(count: int, fails: Any) -> int | None:
    """The smallest k in [1, count] with fails(k) true, for a monotone `fails`; None if none."""
    if count == 0 or not fails(count):
        return None
    low, high = 1, count
    while low < high:
        middle = (low + high) // 2
        if fails(middle):
            high = middle
        else:
            low = middle + 1
    return low


def _child(spec_path: str) -> None:
    """Run the net in OpenCV as the spec says and write the result next to it (result.json,
    one .npy per layer output). Any OpenCV error is located to a layer first."""
    import json

    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    layers: list[dict[str, Any]] = spec["layers"]  # position, name, type, tops, line
    result: dict[str, Any] = {"version": ""}

    def finish() -> None:
        (out / "result.json").write_text(json.dumps(result))

    try:
        cv2 = require_cv2()
    except ReferenceUnavailable as exc:
        result["error"] = str(exc)
        finish()
        return
    result["version"] = str(cv2.__version__)
    text = Path(spec["prototxt"]).read_text(encoding="utf-8", errors="surrogateescape")
    adapted = for_opencv(text)
    caffemodel = spec["caffemodel"] or ""

    def read(prototxt_text: str) -> tuple[Any, dict[str, str]]:
        """The net and its layers' types: OpenCV makes each layer when first asked for it."""
        path = out / "for_opencv.prototxt"
        path.write_text(prototxt_text, encoding="utf-8", errors="surrogateescape")
        net = cv2.dnn.readNetFromCaffe(str(path), caffemodel)
        known: dict[str, str] = {}
        for name in net.getLayerNames():
            known[name] = net.getLayer(net.getLayerId(name)).type
        return net, known

    (out / "stage").write_text("import")
    try:
        net, known = read(adapted)
    except cv2.error as exc:
        result.update(error=_one_line(exc), stage="import")
        named = _CANNOT_CREATE.search(str(exc))
        if named:
            result["layer"] = next((x["position"] for x in layers if x["name"] == named[1]), None)
        else:

            def import_fails(k: int) -> bool:
                try:
                    read(_prefix_text(adapted, layers[k - 1]["line"]))
                except cv2.error:
                    return True
                return False

            first = _first_failing(len(layers), import_fails)
            result["layer"] = layers[first - 1]["position"] if first else None
        finish()
        return
    net.enableFusion(False)
    if hasattr(net, "enableWinograd"):
        net.enableWinograd(False)
    wanted: list[tuple[dict[str, Any], str]] = []  # (layer, opencv layer name)
    taken: set[str] = set()
    for layer in layers:
        for candidate in (layer["name"], *layer["tops"][:1]):
            if candidate in taken:
                continue  # another layer of the same name: OpenCV keeps only one
            if candidate in known and (
                candidate == layer["name"] or known[candidate] == layer["type"]
            ):
                wanted.append((layer, candidate))
                taken.add(candidate)
                break
    inputs = {name: np.load(path) for name, path in spec["inputs"].items()}

    def forward(names: list[str]) -> list[Any]:
        for name, array in inputs.items():
            net.setInput(np.ascontiguousarray(array, dtype=np.float32), name)
        return list(net.forward(names)) if names else []

    names = [opencv_name for _, opencv_name in wanted]
    (out / "stage").write_text("run")
    try:
        outputs = forward(names)
    except cv2.error as exc:
        result.update(error=_one_line(exc), stage="run")

        def run_fails(k: int) -> bool:
            try:
                forward(names[:k])
            except cv2.error:
                return True
            return False

        first = _first_failing(len(names), run_fails)
        result["layer"] = wanted[first - 1][0]["position"] if first else None
        finish()
        return
    batch = next(iter(inputs.values())).shape[0] if inputs else 1
    files = []
    for k, ((layer, _), array) in enumerate(zip(wanted, outputs, strict=True)):
        value = np.asarray(array, dtype=np.float32)
        if layer["type"] == "DetectionOutput":
            value = caffe_detections(value, batch)
        np.save(out / f"{k}.npy", value)
        files.append([layer["position"], f"{k}.npy"])
    result["outputs"] = files
    finish()


class OpenCVReference:
    """OpenCV 4.x dnn, run in a child process; only each layer's first top is known to it."""

    name = "opencv"

    def __init__(
        self,
        net: NetDef,
        prototxt: str | os.PathLike[str],
        caffemodel: str | os.PathLike[str] | None,
    ) -> None:
        self.net = net
        self.prototxt = str(prototxt)
        self.caffemodel = str(caffemodel) if caffemodel is not None else None
        self._version = "OpenCV"
        self._work: Path | None = None

    def version(self) -> str:
        return self._version

    def prepare(self) -> None:
        cv2 = require_cv2()
        self._version = f"OpenCV {cv2.__version__}"
        if self.net.left_out:
            raise ReferenceUnavailable(
                "OpenCV's importer does not apply include/exclude rules: it would also build "
                f"layer {self.net.left_out[0]!r}, which the net state leaves out",
                reference=self.name,
            )

    def run(self, inputs: Mapping[str, np.ndarray]) -> Iterator[RefStep]:
        import json
        import subprocess
        import sys

        work = Path(tempfile.mkdtemp(prefix="protocaffe-opencv-"))
        self._work = work
        try:
            paths = {}
            for index, (name, array) in enumerate(inputs.items()):
                paths[name] = str(work / f"input{index}.npy")
                np.save(paths[name], array)
            layers = [
                {
                    "position": position,
                    "name": layer.name,
                    "type": layer.type,
                    "tops": list(layer.tops),
                    "line": layer.loc.line,
                }
                for position, layer in enumerate(self.net.layers)
            ]
            spec = {
                "prototxt": self.prototxt,
                "caffemodel": self.caffemodel,
                "inputs": paths,
                "layers": layers,
                "out": str(work),
            }
            (work / "spec.json").write_text(json.dumps(spec))
            done = subprocess.run(
                [sys.executable, "-m", "protocaffe.verify.opencv", str(work / "spec.json")],
                capture_output=True,
                text=True,
                check=False,
            )
            if not (work / "result.json").exists():
                stage = (work / "stage").read_text() if (work / "stage").exists() else "start"
                doing = {"import": "importing", "run": "running"}.get(stage, "starting on")
                reason = f"OpenCV crashed while {doing} the net"
                if done.returncode < 0:
                    reason += f" (signal {-done.returncode})"
                elif done.stderr.strip():
                    reason += ": " + done.stderr.strip().splitlines()[-1]
                raise ReferenceUnavailable(reason, reference=self.name)
            result = json.loads((work / "result.json").read_text())
            if result.get("version"):
                self._version = f"OpenCV {result['version']}"
            if "error" in result:
                raise self._failure(result)
            for position, filename in result["outputs"]:
                path = work / filename
                array = np.load(path)
                path.unlink()
                yield RefStep(int(position), {0: array})
        finally:
            self.close()

    def _failure(self, result: Mapping[str, Any]) -> ReferenceUnavailable:
        stage = "import" if result.get("stage") == "import" else "run"
        position = result.get("layer")
        if position is None:
            return ReferenceUnavailable(
                f"OpenCV cannot {stage} the net: {result['error']}", reference=self.name
            )
        layer = self.net.layers[int(position)]
        what = "this layer" if stage == "import" else "the net at this layer"
        return ReferenceUnavailable.at_layer(
            layer, f"OpenCV cannot {stage} {what}: {result['error']}", self.name
        )

    def close(self) -> None:
        if self._work is not None:
            import shutil

            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None


if __name__ == "__main__":
    import sys

    _child(sys.argv[1])
