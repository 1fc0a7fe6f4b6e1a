"""Runs fuzz cases in real Caffe (pycaffe), many per process. Not a test module: it runs under
the oracle's own Python (Debian's python3 with numpy 1.x and pycaffe), never under the
project's, and imports nothing from the project.

Protocol (one persistent process, driven by tests/caffe_fuzz/oracle.py):
- on start it prints one JSON line: {"layer_types": [...], "schema": {message: [field, ...]}};
- then, for each case directory read from stdin (one per line), it prints one JSON line with
  the outcome. EOF ends it.

Each case runs in a forked child, because a failed CHECK in Caffe aborts the whole process
(SIGABRT): the parent imports caffe once (a second or two) and a fork costs milliseconds. The
child's stderr goes to CASE/stderr.txt, so the glog "Check failed" line is kept.

A case directory holds net.prototxt, inputs.npz and case.json:
  {"seed": int | null, "timeout": seconds}
With a seed, every parameter blob is filled from numpy's RandomState(seed) (see fill_params)
and the net is saved to net.caffemodel; without one, net.caffemodel must exist and is loaded.
The child writes snapshots.npz: after Caffe's i-th layer (auto-inserted Split layers included)
ran, key "i/BLOB" holds the value of every blob of the net, so each version of each blob, seen
the way Caffe's memory holds it (shared data included), is available.
"""

import json
import os
import signal
import sys
import time
import traceback
from typing import Any

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import contextlib

import numpy as np

WEIGHTED = ("Convolution", "Deconvolution", "InnerProduct", "Embed")


def fill_params(net: Any, seed: int) -> None:
    """Every parameter blob, in layer order and blob order, from RandomState(seed):
    - Convolution/Deconvolution/InnerProduct weights: N(0, 1) * sqrt(2 / fan_in);
    - BatchNorm: mean N(0, 1) * 0.5, variance |N(0, 1)| + 0.5, and a moving-average factor
      drawn from (1, 1, 0, 2.5) (0 is Caffe's "no statistics yet" case);
    - everything else: N(0, 1) * 0.5.
    Blobs shared by `param { name: ... }` are written by each sharing layer in turn; the last
    write wins, so all sharers hold one value, as Caffe holds it."""
    rng = np.random.RandomState(seed % 2**32)
    for layer in net.layers:
        for index, blob in enumerate(layer.blobs):
            shape = blob.data.shape
            draw = rng.standard_normal(size=shape)
            if layer.type == "BatchNorm":
                if index == 0:
                    value = draw * 0.5
                elif index == 1:
                    value = np.abs(draw) + 0.5
                else:
                    value = np.full(shape, (1.0, 1.0, 0.0, 2.5)[rng.randint(4)])
            elif layer.type in WEIGHTED and index == 0 and len(shape) >= 2:
                if layer.type == "Deconvolution":
                    fan_in = shape[0] * int(np.prod(shape[2:]))
                else:
                    fan_in = int(np.prod(shape[1:]))
                value = draw * np.sqrt(2.0 / max(fan_in, 1))
            else:
                value = draw * 0.5
            blob.data[...] = value.astype(np.float32)


def run_case(caffe: Any, case: str) -> None:
    with open(os.path.join(case, "case.json")) as f:
        spec = json.load(f)
    prototxt = os.path.join(case, "net.prototxt")
    weights = os.path.join(case, "net.caffemodel")
    if spec.get("seed") is None:
        net = caffe.Net(prototxt, caffe.TEST, weights=weights)
    else:
        net = caffe.Net(prototxt, caffe.TEST)
        fill_params(net, spec["seed"])
        net.save(weights)
    inputs = np.load(os.path.join(case, "inputs.npz"))
    for name in net.inputs:
        value = inputs[name]
        if tuple(net.blobs[name].data.shape) != tuple(value.shape):
            net.blobs[name].reshape(*value.shape)
    if any(tuple(net.blobs[n].data.shape) != tuple(inputs[n].shape) for n in net.inputs):
        raise ValueError("inputs do not fit the net")
    net.reshape()
    for name in net.inputs:
        net.blobs[name].data[...] = inputs[name]
    layers = []
    snapshots: dict[str, Any] = {}
    names = list(net._layer_names)
    for index, (name, layer) in enumerate(zip(names, net.layers, strict=False)):
        net._forward(index, index)
        layers.append(
            {
                "name": name,
                "type": layer.type,
                "bottoms": list(net.bottom_names[name]),
                "tops": list(net.top_names[name]),
            }
        )
        for blob_name, blob in net.blobs.items():
            snapshots[f"{index}/{blob_name}"] = np.array(blob.data, copy=True)
    np.savez(os.path.join(case, "snapshots.npz"), **snapshots)
    result = {
        "status": "ok",
        "layers": layers,
        "outputs": list(net.outputs),
        "inputs": list(net.inputs),
        "shapes": {n: list(b.data.shape) for n, b in net.blobs.items()},
    }
    with open(os.path.join(case, "result.json"), "w") as f:
        json.dump(result, f)


def check_message(text: str) -> str:
    """The glog FATAL line ("F1201 ... file.cpp:123] Check failed: ...") without its prefix."""
    for line in text.splitlines():
        if line[:1] == "F" and "] " in line:
            return line.split("] ", 1)[1].strip()
    for line in text.splitlines():
        if "Error" in line or "error" in line:
            return line.strip()
    return text.strip().splitlines()[-1] if text.strip() else ""


def supervise(caffe: Any, case: str) -> dict[str, Any]:
    """Fork, run the case in the child, and describe how the child ended."""
    for stale in ("result.json", "snapshots.npz", "stderr.txt", "error.txt"):
        with contextlib.suppress(OSError):
            os.remove(os.path.join(case, stale))
    try:
        with open(os.path.join(case, "case.json")) as f:
            timeout = float(json.load(f).get("timeout", 60))
    except (OSError, ValueError) as exc:
        return {"case": case, "status": "error", "message": repr(exc)}
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            fd = os.open(os.path.join(case, "stderr.txt"), os.O_WRONLY | os.O_CREAT, 0o644)
            os.dup2(fd, 2)
            run_case(caffe, case)
        except BaseException:
            with open(os.path.join(case, "error.txt"), "w") as f:
                f.write(traceback.format_exc())
            code = 1
        sys.stderr.flush()
        os._exit(code)
    start = time.monotonic()
    status = None
    while status is None:
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            status = raw
        elif time.monotonic() - start > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return {"case": case, "status": "timeout", "seconds": timeout}
        else:
            time.sleep(0.002)
    seconds = time.monotonic() - start
    stderr = ""
    try:
        with open(os.path.join(case, "stderr.txt"), errors="replace") as f:
            stderr = f.read()
    except OSError:
        pass
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        # SIGABRT is a failed CHECK or LOG(FATAL): Caffe rejects the net. Anything else (a
        # segfault) is a crash of Caffe itself.
        kind = "rejected" if sig == signal.SIGABRT else "crashed"
        return {
            "case": case,
            "status": kind,
            "signal": sig,
            "message": check_message(stderr),
            "seconds": seconds,
        }
    code = os.WEXITSTATUS(status)
    if code != 0:
        error = ""
        try:
            with open(os.path.join(case, "error.txt")) as f:
                error = f.read()
        except OSError:
            pass
        last = error.strip().splitlines()[-1] if error.strip() else check_message(stderr)
        return {"case": case, "status": "error", "message": last, "seconds": seconds}
    with open(os.path.join(case, "result.json")) as f:
        result: dict[str, Any] = json.load(f)
    result.update(case=case, seconds=seconds)
    return result


def schema(caffe_pb2: Any) -> dict[str, list[str]]:
    """Field names of every message of the oracle's caffe.proto."""
    fields: dict[str, list[str]] = {}
    for name, message in caffe_pb2.DESCRIPTOR.message_types_by_name.items():
        fields[name] = [f.name for f in message.fields]
        for nested in message.nested_types:
            fields[name + "." + nested.name] = [f.name for f in nested.fields]
    return fields


def main() -> None:
    import caffe  # type: ignore[import-not-found]  # the oracle's pycaffe
    from caffe.proto import caffe_pb2  # type: ignore[import-not-found]

    caffe.set_mode_cpu()
    hello = {"layer_types": sorted(caffe.layer_type_list()), "schema": schema(caffe_pb2)}
    sys.stdout.write(json.dumps(hello) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        case = line.strip()
        if not case:
            continue
        sys.stdout.write(json.dumps(supervise(caffe, case)) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
