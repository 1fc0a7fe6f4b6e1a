"""A reference interpreter of Caffe nets in numpy: an independent second implementation that
`verify` compares a converted module with, in the spirit of onnx.reference.ReferenceEvaluator.

It reads only what Caffe reads: the prototxt (through `protocaffe.frontend.prototxt`, which
upgrades V0/V1 files and keeps the TEST phase) and the caffemodel's blobs (through
`protocaffe.frontend.caffemodel`). It never imports torch, the layer library, the IR, the
passes or the backend, nor reads generated code: each layer type is a numpy function
transcribed from the C++ of the Caffe or fork that defines it, with the source file and
function named in its module.

    net = ReferenceNet.load("deploy.prototxt", "weights.caffemodel")
    for step in net.run({"data": x}):          # streamed: one layer at a time
        print(step.index, step.name, {k: v.shape for k, v in step.tops.items()})
    blobs = net.forward({"data": x})           # every blob after the forward pass

Caffe's blob memory is modelled (see `net.py`): in-place layers write into their blob, and
the tops of the layers in SHARES_MEMORY share data with their bottom, so an in-place layer on
such a top changes the bottom too.
"""

from protocaffe.verify.reference import ops
from protocaffe.verify.reference.net import (
    DATA_LAYERS,
    SINK_LAYERS,
    ReferenceNet,
    Step,
    run_all,
)
from protocaffe.verify.reference.registry import RefLayer, RefOp, layer_types, lookup, register

# Layers whose top shares the bottom's memory in Caffe (`Blob::ShareData`), and when:
SHARES_MEMORY = {
    "Split": "always, every top (split_layer.cpp Forward_cpu)",
    "Reshape": "always (reshape_layer.cpp Reshape)",
    "Flatten": "always (flatten_layer.cpp Forward_cpu)",
    "Concat": "with one bottom (concat_layer.cpp Reshape)",
    "Slice": "with one top (slice_layer.cpp Reshape)",
    "Permute": "when the order is the identity (SSD permute_layer.cpp Forward_cpu)",
}

__all__ = [
    "DATA_LAYERS",
    "SHARES_MEMORY",
    "SINK_LAYERS",
    "RefLayer",
    "RefOp",
    "ReferenceNet",
    "Step",
    "layer_types",
    "lookup",
    "ops",
    "register",
    "run_all",
]
