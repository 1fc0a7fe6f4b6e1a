"""How much does `protocaffe verify` cost beside what it compares: one reference forward and one
module forward?

For each net (seeded random weights and input, written beforehand, outside the measurement),
three fresh processes run one after the other:

  1. `protocaffe verify NET W.caffemodel --input data=x.npy` (the reference auto picks, or
     --reference), which streams the comparison;
  2. the same reference alone (the very backend verify uses, asked for every layer's tops, as
     verify asks it), in its own process;
  3. the module alone: `protocaffe.api.load` and one forward() under no_grad.

Printed per net: the wall seconds of each, verify's against the sum of the other two, and the
peak RSS of each (the largest single process, ru_maxrss; verify's own process without the
reference's children; and the whole process tree: verify and the reference may run children;
the last two polled every 20 ms). Targets (issue 12): verify's wall at
most 1.5x (2) + (3); peak RSS at most 1.5 GB for OpenPose BODY_25 at 368x656 and VGG16 at
224x224.

    PYTHONPATH=src python benchmarks/bench_verify.py                 # the three below
    PYTHONPATH=src python benchmarks/bench_verify.py vgg16:1x3x224x224 --reference numpy

NET is a corpus folder name with the first input's shape. Defaults: OpenPose BODY_25 at
368x656, VGG16 at 224x224, GoogLeNet at 224x224. The machine may be shared: the load average
is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the ../shared locator

DEFAULT = ["openpose-body25:1x3x368x656", "vgg16:1x3x224x224", "bvlc-googlenet:1x3x224x224"]

REFERENCE_ALONE = r"""
import json, sys
import numpy as np
from protocaffe.errors import Reporter
from protocaffe.frontend.caffemodel import read_caffemodel
from protocaffe.frontend.prototxt import read_prototxt
from protocaffe.verify.core import _make_reference
prototxt, caffemodel, name, inputs = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
net = read_prototxt(prototxt, Reporter())
reference = _make_reference(name, net, prototxt, caffemodel, read_caffemodel(caffemodel), False)
reference.prepare()
arrays = {k: np.load(v) for k, v in inputs.items()}
steps = sum(1 for _ in reference.run(arrays))
reference.close()
print(json.dumps({"steps": steps}))
"""

MODULE_ALONE = r"""
import json, sys
import numpy as np
import torch
from protocaffe.api import load
prototxt, caffemodel, inputs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
shapes = {k: np.load(v).shape for k, v in inputs.items()}
model = load(prototxt, caffemodel, input_shapes=shapes)
args = [torch.from_numpy(np.load(v)) for v in inputs.values()]
with torch.no_grad():
    model(*args)
print(json.dumps({"ok": True}))
"""


def _tree_rss(root: int) -> int:
    """The summed RSS of `root` and its descendants, from /proc."""
    return _rss(root)[0]


def _rss(root: int) -> tuple[int, int]:
    """The summed RSS of `root` and its descendants, and the RSS of root's first child (the
    measured command itself, without the children it starts: a reference's process), from
    /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/statm") as handle:
                pages = int(handle.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        pid = int(entry)
        children.setdefault(int(fields[1]), []).append(pid)
        rss[pid] = pages * os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    first = min(children.get(root, []), default=None)
    return total, rss.get(first, 0) if first is not None else 0


def measure(command: list[str], env: dict[str, str]) -> dict[str, float | str]:
    """Wall seconds, the largest process's peak RSS and the tree's peak RSS of one command,
    run in a fresh wrapper so that ru_maxrss covers only it."""
    wrapper = (
        "import json, resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024\n"
        "print(json.dumps({'rc': done.returncode, 'peak': peak, 'out': done.stdout[-4000:],"
        " 'err': done.stderr[-2000:]}))\n"
    )
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", wrapper, *command], stdout=subprocess.PIPE, text=True, env=env
    )
    tree = own = 0
    while process.poll() is None:
        total, alone = _rss(process.pid)
        tree, own = max(tree, total), max(own, alone)
        time.sleep(0.02)
    wall = time.perf_counter() - started
    result = json.loads(process.stdout.read() if process.stdout else "{}")
    return {
        "wall": wall,
        "peak": float(result["peak"]),
        "tree": float(tree),
        "own": float(own),
        "rc": float(result["rc"]),
        "out": result["out"],
        "err": result["err"],
    }


def prepare(name: str, shape: tuple[int, ...], work: Path) -> tuple[Path, Path, dict[str, str]]:
    import numpy as np
    from shared_dir import CORPUS

    from protocaffe.errors import Reporter
    from protocaffe.frontend.prototxt import read_prototxt
    from protocaffe.random_weights import random_weights

    prototxt = CORPUS / name / "deploy.prototxt"
    net = read_prototxt(prototxt, Reporter())
    first = (
        net.inputs[0].name
        if net.inputs
        else next(layer.tops[0] for layer in net.layers if layer.type == "Input")
    )
    caffemodel = work / f"{name}.caffemodel"
    random_weights(prototxt, caffemodel, seed=0, input_shapes={first: shape})
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    np.save(work / f"{name}.npy", x)
    return prototxt, caffemodel, {first: str(work / f"{name}.npy")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("nets", nargs="*", help="corpus names with a shape: name:NxCxHxW")
    parser.add_argument("--reference", default="auto", choices=("auto", "caffe", "opencv", "numpy"))
    args = parser.parse_args()
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    head = (
        f"{'net':28} {'reference':9} {'verify':>8} {'ref':>7} {'module':>7} {'ratio':>6} "
        f"{'RSS verify':>11} {'(own)':>7} {'(tree)':>8} {'RSS ref':>9} {'(tree)':>8} "
        f"{'RSS module':>10}"
    )
    print(head)
    gb = 2**30
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as folder:
        work = Path(folder)
        for spec in args.nets or DEFAULT:
            name, _, dims = spec.partition(":")
            shape = tuple(int(d) for d in dims.split("x"))
            prototxt, caffemodel, inputs = prepare(name, shape, work)
            given = [f"--input={k}={v}" for k, v in inputs.items()]
            report = work / "report.json"
            verify = measure(
                [
                    sys.executable,
                    "-m",
                    "protocaffe",
                    "verify",
                    str(prototxt),
                    str(caffemodel),
                    *given,
                    "--reference",
                    args.reference,
                    "-q",
                    "--json",
                    str(report),
                ],
                env,
            )
            if not report.exists():
                print(f"{name:28} verify failed: {str(verify['err']).strip()[-300:]}")
                continue
            chosen = json.loads(report.read_text())["reference"]
            alone = measure(
                [
                    sys.executable,
                    "-c",
                    REFERENCE_ALONE,
                    str(prototxt),
                    str(caffemodel),
                    chosen,
                    json.dumps(inputs),
                ],
                env,
            )
            module = measure(
                [
                    sys.executable,
                    "-c",
                    MODULE_ALONE,
                    str(prototxt),
                    str(caffemodel),
                    json.dumps(inputs),
                ],
                env,
            )
            ratio = verify["wall"] / (alone["wall"] + module["wall"])
            print(
                f"{name + ' ' + dims:28} {chosen:9} {verify['wall']:7.1f}s {alone['wall']:6.1f}s "
                f"{module['wall']:6.1f}s {ratio:5.2f}x {verify['peak'] / gb:9.2f}GB "
                f"{verify['own'] / gb:5.2f}GB {verify['tree'] / gb:6.2f}GB "
                f"{alone['peak'] / gb:7.2f}GB {alone['tree'] / gb:6.2f}GB "
                f"{module['peak'] / gb:8.2f}GB",
                flush=True,
            )
            if verify["rc"] != 0:
                print(f"  verify exited {int(verify['rc'])}: {str(verify['out']).strip()[-300:]}")
            caffemodel.unlink()
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
