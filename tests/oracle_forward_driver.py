"""Runs nets in real Caffe for tests/oracle_runner.py. Not a test module: it runs under the
oracle's own Python (pycaffe, numpy 1.x), imports caffe once, and forks a child per case so
that a Caffe CHECK failure (SIGABRT) costs only that case.

Usage: python oracle_forward_driver.py CASE_DIR...
Each CASE_DIR holds net.prototxt, inputs.npz and case.json ({"seed": int, "bn_factor": float}
or {"weights": path}). Without given weights the child fills every parameter blob with seeded
random values and saves them with net.save() (net.caffemodel, so the reference reads a file
real Caffe wrote). It runs forward() and writes every blob as blobs/<i>.npy with blobs.json
(their names). If Caffe refuses the net, error.txt holds its message instead.
"""

import json
import os
import sys

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")
import caffe

caffe.set_mode_cpu()


def fill(net, seed, bn_factor):
    rng = np.random.RandomState(seed)
    for layer in net.layers:
        for j, blob in enumerate(layer.blobs):
            shape = blob.data.shape
            if layer.type == "BatchNorm":
                if j == 0:
                    values = rng.normal(0, 0.5, shape)
                elif j == 1:
                    values = rng.uniform(0.5, 1.5, shape)
                else:
                    values = np.full(shape, bn_factor)
            elif layer.type in ("Convolution", "Deconvolution", "InnerProduct") and j == 0:
                fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
                if layer.type == "InnerProduct" and len(shape) == 2:
                    fan_in = min(shape)
                values = rng.normal(0, 1.0 / np.sqrt(max(fan_in, 1)), shape)
            else:
                values = rng.normal(0.5, 0.5, shape)
            blob.data[...] = values


def run(case):
    with open(os.path.join(case, "case.json")) as f:
        spec = json.load(f)
    prototxt = os.path.join(case, "net.prototxt")
    if spec.get("weights"):
        net = caffe.Net(prototxt, spec["weights"], caffe.TEST)
    else:
        net = caffe.Net(prototxt, caffe.TEST)
        fill(net, spec["seed"], spec.get("bn_factor", 1.0))
        net.save(os.path.join(case, "net.caffemodel"))
    inputs = np.load(os.path.join(case, "inputs.npz"))
    for name in inputs.files:
        net.blobs[name].reshape(*inputs[name].shape)
        net.blobs[name].data[...] = inputs[name]
    net.forward()
    names = list(net.blobs.keys())
    os.mkdir(os.path.join(case, "blobs"))
    for i, name in enumerate(names):
        np.save(os.path.join(case, "blobs", f"{i}.npy"), net.blobs[name].data)
    with open(os.path.join(case, "blobs.json"), "w") as f:
        json.dump(names, f)


def main():
    for case in sys.argv[1:]:
        log = os.path.join(case, "stderr.txt")
        pid = os.fork()
        if pid == 0:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 2)
            try:
                run(case)
            except Exception as exc:  # a Python-side refusal, e.g. a bad input name
                sys.stderr.write(f"python error: {exc!r}\n")
                sys.stderr.flush()
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            with open(log) as f:
                text = f.read()
            lines = [line for line in text.splitlines() if line.strip()]
            failed = [line for line in lines if "Check failed" in line or line.startswith("F")]
            message = (failed or lines or [f"exit status {status}"])[-1]
            with open(os.path.join(case, "error.txt"), "w") as f:
                f.write(message)


if __name__ == "__main__":
    main()
