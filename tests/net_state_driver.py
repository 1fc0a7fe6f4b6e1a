"""Which layers real Caffe keeps for a net state. Not a test module: it runs under the oracle's
own Python (see tests/test_net_state.py).

Usage: python net_state_driver.py CASES.json RESULTS.json
CASES.json is a list of [prototxt, phase, level, stages]; RESULTS.json gets, for each, the
layer names of `caffe.Net(prototxt, phase, level=level, stages=stages)`, or null when Caffe
aborts (each case runs in a child of its own: a failed CHECK kills the process).
"""

import json
import os
import sys

os.environ.setdefault("GLOG_minloglevel", "3")
import caffe

with open(sys.argv[1]) as source:
    cases = json.load(source)
results = []
for prototxt, phase, level, stages in cases:
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read)
        try:
            net = caffe.Net(prototxt, getattr(caffe, phase), level=level, stages=stages)
            os.write(write, json.dumps(list(net._layer_names)).encode())
        finally:
            os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(child, 0)
    results.append(json.loads(b"".join(chunks)) if chunks else None)
with open(sys.argv[2], "w") as target:
    json.dump(results, target)
