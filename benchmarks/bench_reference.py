"""Time and peak memory of one numpy-reference forward pass (protocaffe.verify.reference).

Each net runs in a fresh process on one BLAS thread, streamed as `verify` will stream it
(`ReferenceNet.run`, every blob dropped when no later layer reads it), with protocaffe's seeded
random weights (written beforehand, outside the measurement). Printed per net: the forward's
wall and CPU seconds, the whole process's wall seconds (start-up, reading the prototxt and the
caffemodel included) and its peak RSS.

    PYTHONPATH=src python benchmarks/bench_reference.py                   # the three below
    PYTHONPATH=src python benchmarks/bench_reference.py --corpus   # every corpus net, batch <= 2
    PYTHONPATH=src python benchmarks/bench_reference.py vgg16:1x3x224x224

NET is a corpus folder name, optionally with input shapes (`name:1x3x368x656`, the first
input). Defaults: VGG16 at 224x224, GoogLeNet, OpenPose BODY_25 at 368x656. The machine is
shared: CPU seconds are printed beside wall seconds, and the load average with them.
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

DEFAULT = ["vgg16:1x3x224x224", "bvlc-googlenet:1x3x224x224", "openpose-body25:1x3x368x656"]

CHILD = r"""
import json, sys, time
import numpy as np
start = time.perf_counter()
from protocaffe.verify.reference import ReferenceNet
prototxt, caffemodel, shapes = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
net = ReferenceNet.load(prototxt, caffemodel)
rng = np.random.default_rng(0)
inputs = {n: rng.normal(size=s).astype(np.float32) for n, s in shapes.items()}
wall, cpu = time.perf_counter(), time.process_time()
layers = sum(1 for _ in net.run(inputs))
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
# VmHWM is this process's own peak (ru_maxrss may carry the parent's across fork and exec).
peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"layers": layers, "forward_wall": wall, "forward_cpu": cpu,
                  "process_wall": time.perf_counter() - start, "peak_rss": peak}))
"""


# The corpus harness and the locator of ../shared live with the tests.
TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))


def _shared() -> Path:
    from shared_dir import SHARED

    return SHARED


def _shapes(prototxt: Path, first: tuple[int, ...] | None) -> dict[str, tuple[int, ...]]:
    from protocaffe.errors import Reporter
    from protocaffe.frontend.prototxt import read_prototxt
    from protocaffe.verify.reference import ReferenceNet

    net = read_prototxt(prototxt, Reporter())
    shapes = {i.name: i.shape for i in net.inputs}
    for layer in net.layers:
        if layer.type == "Input":
            dims = layer.param.input_param.shape
            for k, top in enumerate(layer.tops):
                shapes[top] = tuple(int(d) for d in dims[min(k, len(dims) - 1)].dim)
        elif layer.type == "ImageSegData":  # DeepLab's test net: its image is an input here
            shapes[layer.tops[0]] = (1, 3, 321, 321)
    names = ReferenceNet(net).inputs or tuple(shapes)[:1]
    if first is not None:
        shapes[names[0]] = first
    return {n: shapes[n] for n in names}


def measure(name: str, first: tuple[int, ...] | None, work: Path) -> dict[str, object]:
    from protocaffe.random_weights import random_weights

    prototxt = _shared() / "corpus" / name / "deploy.prototxt"
    shapes = _shapes(prototxt, first)
    caffemodel = work / f"{name}.caffemodel"
    random_weights(prototxt, caffemodel, seed=0, input_shapes=shapes)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(prototxt), str(caffemodel), json.dumps(shapes)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    caffemodel.unlink()
    if out.returncode != 0:
        return {"net": name, "error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(net=name, shape="x".join(map(str, next(iter(shapes.values())))))
    return result


def main() -> int:
    from protocaffe.errors import ProtocaffeError

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("nets", nargs="*", help="corpus names, optionally name:NxCxHxW")
    parser.add_argument(
        "--corpus", action="store_true", help="every corpus net, at the conformance sizes"
    )
    args = parser.parse_args()
    specs = args.nets or DEFAULT
    if args.corpus:  # at the sizes the corpus conformance runs (batch <= 2, OpenPose resized)
        from conformance import corpus_cases

        specs = []
        for case in corpus_cases(_shared() / "corpus"):
            if case.weights is None:
                shape = next(iter(case.input_shapes.values()), None)
                specs.append(case.model + (":" + "x".join(map(str, shape)) if shape else ""))
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores; one BLAS thread")
    print(
        f"{'net':32} {'input':>14} {'layers':>6} {'fwd wall':>9} {'fwd cpu':>8} "
        f"{'process':>8} {'peak RSS':>9}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-reference-") as work:
        for spec in specs:
            name, _, dims = spec.partition(":")
            first = tuple(int(d) for d in dims.split("x")) if dims else None
            started = time.perf_counter()
            try:
                r = measure(name, first, Path(work))
            except ProtocaffeError as exc:
                r = {"net": name, "error": str(exc.diagnostics[0])}
            if "error" in r:
                print(f"{name:32} error: {r['error']} ({time.perf_counter() - started:.0f}s)")
                continue
            print(
                f"{name:32} {r['shape']:>14} {r['layers']:>6} {r['forward_wall']:>8.2f}s "
                f"{r['forward_cpu']:>7.2f}s {r['process_wall']:>7.2f}s "
                f"{int(r['peak_rss']) / 2**20:>7.0f} MB",  # type: ignore[call-overload]
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
