"""The real-Caffe reference: pycaffe in this process when `import caffe` works, otherwise the
oracle wrapper `/opt/caffe-oracle/run-oracle.sh` (see ../shared/oracle/README.md), which runs
Caffe in its own Python.

Both run the net one layer at a time (`net._forward(i, i)`) and copy each layer's tops right
after it ran, so in-place layers give one snapshot per step, as the SSA values in the IR do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from protocaffe.verify.opencv import LayerQuery, ReferenceUnavailable

ORACLE = Path(os.environ.get("PROTOCAFFE_CAFFE_ORACLE", "/opt/caffe-oracle/run-oracle.sh"))
INSTALL_HINT = (
    "build pycaffe (or the oracle: ../shared/oracle/build.sh) so that `import caffe` works"
)


def _import_caffe() -> Any:
    try:
        import caffe  # type: ignore[import-not-found]
    except ImportError:
        return None
    return caffe


def available() -> bool:
    return _import_caffe() is not None or ORACLE.exists()


def _in_process(
    caffe: Any,
    prototxt: str,
    caffemodel: str | None,
    inputs: Mapping[str, np.ndarray],
) -> dict[tuple[str, int], np.ndarray]:
    caffe.set_mode_cpu()
    net = (
        caffe.Net(prototxt, caffe.TEST, weights=caffemodel)
        if caffemodel
        else caffe.Net(prototxt, caffe.TEST)
    )
    for name, array in inputs.items():
        net.blobs[name].reshape(*array.shape)
    net.reshape()
    for name, array in inputs.items():
        net.blobs[name].data[...] = array
    found: dict[tuple[str, int], np.ndarray] = {}
    for index, name in enumerate(net._layer_names):
        net._forward(index, index)
        for top_index, top in enumerate(net.top_names[name]):
            found[(name, top_index)] = np.array(net.blobs[top].data, dtype=np.float32, copy=True)
    return found


def _via_oracle(
    prototxt: str, caffemodel: str | None, inputs: Mapping[str, np.ndarray]
) -> dict[tuple[str, int], np.ndarray]:
    work = Path(tempfile.mkdtemp(prefix="protocaffe-caffe-"))
    try:
        command = [str(ORACLE), "run", prototxt, "--per-layer", "--out", str(work / "out")]
        if caffemodel:
            command += ["--weights", caffemodel]
        for index, (name, array) in enumerate(inputs.items()):
            path = work / f"input{index}.npy"
            np.save(path, array)
            command += ["--input", f"{name}={path}"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            message = _caffe_failure(done.stderr) or f"exit status {done.returncode}"
            raise ReferenceUnavailable(f"Caffe cannot run the net: {message}")
        manifest = json.loads((work / "out" / "manifest.json").read_text())
        found: dict[tuple[str, int], np.ndarray] = {}
        counts: dict[str, int] = {}
        for entry in manifest["per_layer"]:
            top_index = counts.get(entry["layer"], 0)
            counts[entry["layer"]] = top_index + 1
            array = np.load(work / "out" / entry["file"])
            found[(entry["layer"], top_index)] = np.asarray(array, dtype=np.float32)
        return found
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _caffe_failure(stderr: str) -> str:
    """The line that says why Caffe stopped: glog's fatal 'F...] Check failed' line, else the
    last line that is not part of a stack trace."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    fatal = [line for line in lines if line.startswith("F") and "]" in line]
    if fatal:
        return fatal[0].split("] ", 1)[-1]
    plain = [line for line in lines if not line.startswith(("***", "@", "Traceback", "File"))]
    return plain[-1] if plain else ""


# Data layers whose tops protocaffe makes the module's inputs (see layers/sources.py).
INPUT_DATA_LAYERS = ("MemoryData", "DummyData")


def data_layers_as_inputs(text: str, inputs: Mapping[str, np.ndarray]) -> str | None:
    """The net for Caffe when MemoryData or DummyData layers provide its inputs: Caffe cannot
    forward a MemoryData layer before a Reset (set_input_arrays), and DummyData fills its tops
    itself. Each such layer becomes an Input layer of the same name with the tops the module
    takes as inputs (so per-layer results line up). None when there is nothing to replace or
    the text is not a V2 net this schema parses (Caffe then gets the file as it is)."""
    from google.protobuf import text_format

    from protocaffe.proto.schema import message_class

    net: Any = message_class("NetParameter")()
    try:
        text_format.Parse(text, net)
    except text_format.ParseError:
        return None
    replaced = False
    for layer in net.layer:
        tops = [top for top in layer.top if top in inputs]
        if layer.type not in INPUT_DATA_LAYERS or not tops:
            continue
        name, include = layer.name, list(layer.include)
        layer.Clear()
        layer.name, layer.type = name, "Input"
        layer.include.extend(include)
        for top in tops:
            layer.top.append(top)
            layer.input_param.shape.add().dim.extend(inputs[top].shape)
        replaced = True
    return str(text_format.MessageToString(net)) if replaced else None


def run_caffe(
    prototxt: str | os.PathLike[str],
    caffemodel: str | os.PathLike[str] | None,
    inputs: Mapping[str, np.ndarray],
    layers: Sequence[LayerQuery],
) -> dict[tuple[str, int], np.ndarray]:
    """{(layer name, top index): the top right after the layer ran}, for every layer."""
    weights = str(caffemodel) if caffemodel else None
    rewritten = data_layers_as_inputs(Path(prototxt).read_text(errors="replace"), inputs)
    work = Path(tempfile.mkdtemp(prefix="protocaffe-net-")) if rewritten else None
    try:
        if work is not None and rewritten is not None:
            prototxt = work / "net.prototxt"
            prototxt.write_text(rewritten)
        caffe = _import_caffe()
        if caffe is not None:
            return _in_process(caffe, str(prototxt), weights, inputs)
        if ORACLE.exists():
            return _via_oracle(str(prototxt), weights, inputs)
        raise ReferenceUnavailable(f"the Caffe reference is not available: {INSTALL_HINT}")
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
