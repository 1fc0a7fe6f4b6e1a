"""Runs nets in real Caffe's TRAIN or TEST phase (pycaffe), forward and backward, many in one
process. Not a test module: it runs under the oracle's own Python (see
tests/test_training_caffe.py), which has pycaffe and numpy 1.x.

Usage: python caffe_train_driver.py CASE_DIR...
Each CASE_DIR holds net.prototxt, net.caffemodel, inputs.npz and case.txt (the phase, TRAIN or
TEST, and how many forward passes to run, e.g. "TRAIN 3"). The inputs are set once; each pass
is a forward, then, when diffs.npz exists, a backward from those top diffs. Written:
- blobs.npz: every blob's data after the last pass; `diff/NAME`: its diff after the last
  backward (force_backward: true in the net gives the inputs' diffs);
- params.npz: every layer's blobs after the last pass, as "layer/index", and with diffs.npz
  their diffs as "diff/layer/index" (a blob shared by `param { name }` shares its diff);
or error.txt if Caffe refused the case.
"""

import os
import sys

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")
import caffe

caffe.set_mode_cpu()


def run(case):
    with open(os.path.join(case, "case.txt")) as f:
        phase, passes = f.read().split()
    net = caffe.Net(
        os.path.join(case, "net.prototxt"),
        os.path.join(case, "net.caffemodel"),
        caffe.TRAIN if phase == "TRAIN" else caffe.TEST,
    )
    inputs = np.load(os.path.join(case, "inputs.npz"))
    for name in inputs.files:
        net.blobs[name].reshape(*inputs[name].shape)
        net.blobs[name].data[...] = inputs[name]
    diffs_path = os.path.join(case, "diffs.npz")
    diffs = np.load(diffs_path) if os.path.exists(diffs_path) else None
    for _ in range(int(passes)):
        net.forward()
        if diffs is not None:
            net.backward(**{name: diffs[name] for name in diffs.files})
    saved = {name: blob.data.copy() for name, blob in net.blobs.items()}
    if diffs is not None:
        saved.update({"diff/" + name: blob.diff.copy() for name, blob in net.blobs.items()})
    np.savez(os.path.join(case, "blobs.npz"), **saved)
    params = {}
    for layer, blobs in net.params.items():
        for index, blob in enumerate(blobs):
            params[f"{layer}/{index}"] = blob.data.copy()
            if diffs is not None:
                params[f"diff/{layer}/{index}"] = blob.diff.copy()
    np.savez(os.path.join(case, "params.npz"), **params)


for case in sys.argv[1:]:
    try:
        run(case)
    except Exception as exc:  # reported to the test, which fails on it
        with open(os.path.join(case, "error.txt"), "w") as f:
            f.write(repr(exc))
