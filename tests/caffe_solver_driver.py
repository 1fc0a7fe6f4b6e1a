"""Trains small nets with real Caffe's solvers (pycaffe), many in one process. Not a test module:
it runs under the oracle's own Python (see tests/test_solver_caffe.py), which has pycaffe and
numpy 1.x.

Usage: python caffe_solver_driver.py CASE_DIR...
Each CASE_DIR holds solver.prototxt (whose train net starts with a MemoryData layer named
"data"), init.caffemodel, data.npz (`data` and `label`, whole batches) and iterations.txt.
The driver loads the weights, feeds the arrays (MemoryData hands out one batch per forward pass,
in order, wrapping around), runs that many iterations with `solver.step`, and writes:
- weights.npz: every learnable blob after the last iteration, as "layer/index";
- caffe.log: Caffe's own log of the run (glog INFO, with `display: 1` in the solver: one
  "Iteration N, lr = X" line per iteration, from SGDSolver::ApplyUpdate, and a "Gradient
  clipping" line whenever ClipGradients scales the gradients);
or error.txt if Caffe refused the case.

BatchNorm's statistics: BVLC Caffe never lets a solver change them (BatchNormLayer::LayerSetUp
gives its three blobs lr_mult 0 and refuses any other). The oracle (brocolli-caffe 9.0.2) does
not: UpgradeNetBatchNorm (upgrade_proto.cpp) clears a BatchNorm's three `param` specs, as BVLC
does, but its LayerSetUp lacks BVLC's block that then sets lr_mult 0, so its statistics get
lr_mult 1 and decay_mult 1 whatever the prototxt says, and weight decay shrinks them. The
driver undoes that: it saves every BatchNorm blob once the iteration's forward passes have
accumulated into them (the solver's on_gradients_ready callback, just before ApplyUpdate) and
puts them back after the update, which is what BVLC master computes.
"""

import os
import sys

# Before pycaffe loads glog: INFO lines to stderr, which each case sends to its own caffe.log.
os.environ.update(GLOG_minloglevel="0", GLOG_logtostderr="1")

import caffe
import numpy as np

caffe.set_mode_cpu()


def run(case):
    solver = caffe.get_solver(os.path.join(case, "solver.prototxt"))
    solver.net.copy_from(os.path.join(case, "init.caffemodel"))
    arrays = np.load(os.path.join(case, "data.npz"))
    data = np.ascontiguousarray(arrays["data"], dtype=np.float32)
    label = np.ascontiguousarray(arrays["label"], dtype=np.float32)
    solver.net.set_input_arrays(data, label)
    with open(os.path.join(case, "iterations.txt")) as f:
        iterations = int(f.read())
    net = solver.net
    layers = zip(net._layer_names, net.layers, strict=True)
    batchnorms = [name for name, layer in layers if layer.type == "BatchNorm"]
    saved = {}

    def save_statistics():
        for name in batchnorms:
            saved[name] = [blob.data.copy() for blob in net.params[name]]

    solver.add_callback(lambda: None, save_statistics)
    for _ in range(iterations):
        solver.step(1)
        for name in batchnorms:  # undo the update BVLC Caffe would not have made
            for blob, value in zip(net.params[name], saved[name], strict=True):
                blob.data[...] = value
    blobs = {}
    for layer, params in solver.net.params.items():
        for index, blob in enumerate(params):
            blobs[f"{layer}/{index}"] = blob.data.copy()
    np.savez(os.path.join(case, "weights.npz"), **blobs)


saved_stderr = os.dup(2)
for case in sys.argv[1:]:
    log = os.open(os.path.join(case, "caffe.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stderr.flush()
    os.dup2(log, 2)
    try:
        run(case)
    except Exception as exc:  # reported to the test, which fails on it
        with open(os.path.join(case, "error.txt"), "w") as f:
            f.write(repr(exc))
    finally:
        sys.stderr.flush()
        os.dup2(saved_stderr, 2)
        os.close(log)
