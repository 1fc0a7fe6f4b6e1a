"""Runs nets with real Caffe (pycaffe), many in one process. Not a test module: it runs under
the oracle's own Python (see tests/test_real_caffe.py), which has pycaffe and numpy 1.x.

Usage: python caffe_oracle_driver.py CASE_DIR...
Each CASE_DIR holds net.prototxt, net.caffemodel and inputs.npz; outputs.npz gets every
blob named in outputs.txt (one per line) after forward(), or error.txt if Caffe refused.
"""

import os
import sys

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")
import caffe

caffe.set_mode_cpu()
for case in sys.argv[1:]:
    try:
        net = caffe.Net(
            os.path.join(case, "net.prototxt"), os.path.join(case, "net.caffemodel"), caffe.TEST
        )
        inputs = np.load(os.path.join(case, "inputs.npz"))
        for name in inputs.files:
            net.blobs[name].reshape(*inputs[name].shape)
            net.blobs[name].data[...] = inputs[name]
        net.forward()
        with open(os.path.join(case, "outputs.txt")) as f:
            names = f.read().split()
        np.savez(os.path.join(case, "outputs.npz"), **{n: net.blobs[n].data for n in names})
    except Exception as exc:  # reported to the test, which fails on it
        with open(os.path.join(case, "error.txt"), "w") as f:
            f.write(repr(exc))
