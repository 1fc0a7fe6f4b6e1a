"""Inference latency at batch 1 on CPU: OpenCV dnn against the generated modules.

    PYTHONPATH=src python benchmarks/bench_inference.py [--threads 1] [--rounds R] [--budget S]
        [--nets ...] [--compile] [--clock wall|cpu] [--omp-wait-policy passive|active|default]

For each thread count a child process runs every variant with that many threads (OpenCV's and
torch's), on the same input, with fan-in scaled random weights from protocaffe.random_weights:

- opencv:     cv2.dnn.readNetFromCaffe, default backend (fusion on), CPU target: the reference;
- plain:      the module `protocaffe convert` writes, eager;
- optimized:  the `--optimize` module (BatchNorm/Scale folded, pass-through layers gone), eager;
- fast:       protocaffe.fast() of the plain module (channels-last weights, NNPACK where it is
              faster, TorchScript-frozen); its preparation time is printed beside it;
- fast opt:   protocaffe.fast() of the --optimize module;
- compiled:   with --compile, the --optimize module under torch.compile (inductor, fullgraph);
              its compile time is printed beside it.

Timing is round-robin (one call of each variant per round) so that load from other processes
hits every variant alike, for up to --rounds rounds or --budget seconds a net (at least 3); the
table shows the median per call and the ratio to OpenCV (below 1 is faster), and `max err` is
the largest difference to OpenCV's output over OpenCV's largest magnitude. `--clock cpu` times
the process's CPU time instead of the wall clock: on a machine that other work keeps busy it
measures the work a call does, not how long it waited for a core (at 1 thread only; at 2 it adds
the threads' times). A script, not a test: numbers depend on the machine; the load average is
printed with them.

Two process-wide settings, the same for both sides, are made fair by default:
- OpenMP's waiting (OMP_WAIT_POLICY, read when torch loads, so set in the child's environment):
  libgomp's threads spin ~300,000 times at every barrier before they sleep, which on a machine
  with fewer free cores than threads makes each parallel region wait for a thread that is not
  running (torch 5-8x slower than OpenCV at 2 threads at a load average of 8). OpenCV's own
  pool (pthreads) waits briefly, then sleeps: `passive` (the default here) makes libgomp sleep
  too; `default` leaves libgomp's spinning.
- glibc's malloc thresholds (mallopt, in the child): OpenCV's large buffers move glibc's
  adaptive mmap threshold, after which the weight reorders of each torch convolution get
  fresh pages from the kernel (30,000 page faults a call on ResNet-50). The child fixes the
  mmap threshold at 32 MiB and never trims, for both sides; --no-malloc-tuning leaves glibc's
  defaults.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = next(
    (p / "shared" for p in (REPO.parent, REPO.parents[1]) if (p / "shared").is_dir()),
    REPO.parent / "shared",
)

# net -> (corpus folder, input name, input shape)
NETS: dict[str, tuple[str, str, tuple[int, ...]]] = {
    "ResNet-50": ("resnet-50", "data", (1, 3, 224, 224)),
    "GoogLeNet": ("bvlc-googlenet", "data", (1, 3, 224, 224)),
    "MobileNet-v2": ("mobilenet-v2", "data", (1, 3, 224, 224)),
    "OpenPose BODY_25 368x368": ("openpose-body25", "image", (1, 3, 368, 368)),
}
VARIANTS = ("opencv", "plain", "optimized", "fast", "fast opt", "compiled")


def _variants(
    folder: str, input_name: str, shape: tuple[int, ...], workdir: Path, compile_: bool
) -> tuple[dict[str, Callable[[], np.ndarray]], dict[str, float]]:
    import cv2
    import torch

    import protocaffe
    from protocaffe.api import convert, module_from_source
    from protocaffe.passes import DEFAULT_PIPELINE, OPTIMIZE_PIPELINE
    from protocaffe.random_weights import random_weights

    prototxt = SHARED / "corpus" / folder / "deploy.prototxt"
    shapes = {input_name: shape}
    weights = workdir / f"{folder}.caffemodel"
    random_weights(prototxt, weights, seed=0, input_shapes=shapes)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)

    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    def opencv() -> np.ndarray:
        net.setInput(x, input_name)
        return np.asarray(net.forward())

    def module(optimize: bool) -> torch.nn.Module:
        passes = OPTIMIZE_PIPELINE if optimize else DEFAULT_PIPELINE
        conversion = convert(prototxt, weights, input_shapes=shapes, passes=passes)
        model = module_from_source(conversion.source, conversion.class_name)
        assert conversion.state_dict is not None
        model.load_state_dict(conversion.state_dict, strict=True)
        return model.eval()

    tensor = torch.from_numpy(x)
    plain, optimized = module(False), module(True)
    models: dict[str, Any] = {"plain": plain, "optimized": optimized}
    seconds: dict[str, float] = {}
    for label, base in (("fast", plain), ("fast opt", optimized)):
        start = time.perf_counter()
        models[label] = protocaffe.fast(base, tensor)
        seconds[label] = time.perf_counter() - start
    if compile_:
        start = time.perf_counter()
        models["compiled"] = torch.compile(optimized, fullgraph=True)
        with torch.inference_mode():
            models["compiled"](tensor)  # compiles
        seconds["compiled"] = time.perf_counter() - start

    def runner(model: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            with torch.inference_mode():
                return model(tensor).numpy()

        return run

    runs = {"opencv": opencv} | {label: runner(model) for label, model in models.items()}
    return runs, seconds


def _tune_malloc() -> None:
    """glibc only: a fixed 32 MiB mmap threshold and no trimming (see the module docstring)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_trim_threshold, 1 << 30)
    libc.mallopt(m_mmap_threshold, 32 << 20)


def _child(args: argparse.Namespace) -> int:
    """Measure every net at one thread count; print one JSON object per net."""
    import cv2
    import torch

    warnings.filterwarnings("ignore")
    if not args.no_malloc_tuning:
        _tune_malloc()
    threads = args.child
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.nets:
            folder, input_name, shape = NETS[name]
            runs, seconds = _variants(folder, input_name, shape, Path(tmp), args.compile)
            reference = runs["opencv"]()
            scale = float(np.abs(reference).max())
            error = max(float(np.abs(run() - reference).max()) / scale for run in runs.values())
            start = time.perf_counter()
            for _ in range(args.warmup):
                for run in runs.values():
                    run()
            # As many rounds as fit in --budget seconds (OpenPose's take seconds each), at
            # least 3 and at most --rounds.
            per_round = (time.perf_counter() - start) / max(args.warmup, 1)
            rounds = max(3, min(args.rounds, int(args.budget / max(per_round, 1e-9))))
            times: dict[str, list[float]] = {v: [] for v in runs}
            for _ in range(rounds):
                for variant, run in runs.items():
                    start = clock()
                    run()
                    times[variant].append(clock() - start)
            row = {
                "net": name,
                "threads": threads,
                "ms": {v: statistics.median(t) * 1000 for v, t in times.items()},
                "rounds": rounds,
                "prepare_s": seconds,
                "error": error,
                "load": os.getloadavg()[0],
            }
            print(json.dumps(row), flush=True)
    return 0


def _row(row: dict[str, Any], variants: list[str]) -> str:
    ms = row["ms"]
    line = f"{row['net']:26}{row['threads']:4} " + "".join(f"{ms[v]:13.1f}" for v in variants)
    line += "  " + "".join(f"{ms[v] / ms['opencv']:13.2f}" for v in variants[1:])
    prepared = " ".join(f"{k} {v:.1f}" for k, v in row["prepare_s"].items())
    return line + f"  {prepared}  {row['error']:.1e}  {row['load']:.1f}  {row['rounds']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # One thread count per run by default, so that a run takes ~2-3 minutes on a quiet 2-core
    # machine (OpenPose's calls take seconds): `--threads 2` for the other, or `--threads 1 2`.
    parser.add_argument("--threads", type=int, nargs="*", default=[1])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--budget",
        type=float,
        default=12.0,
        help="seconds of timed rounds per net and thread count",
    )
    parser.add_argument("--nets", nargs="*", default=list(NETS), choices=list(NETS))
    parser.add_argument("--compile", action="store_true", help="add torch.compile (minutes)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument(
        "--omp-wait-policy", choices=["passive", "active", "default"], default="passive"
    )
    parser.add_argument("--no-malloc-tuning", action="store_true")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.child is not None:
        return _child(args)

    import cv2
    import torch

    env = dict(os.environ)
    if args.omp_wait_policy != "default":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    print(
        f"torch {torch.__version__}, OpenCV {cv2.__version__}, batch 1, median of "
        f"up to {args.rounds} round-robin rounds ({args.budget:.0f} s a net), {args.clock} clock, "
        f"OMP_WAIT_POLICY="
        f"{env.get('OMP_WAIT_POLICY', '(unset)')}, malloc "
        f"{'glibc defaults' if args.no_malloc_tuning else 'tuned'}, {os.cpu_count()} cores",
        flush=True,
    )
    variants = [v for v in VARIANTS if v != "compiled" or args.compile]
    head = f"{'net':26}{'thr':>4} " + "".join(f"{v + ' ms':>13}" for v in variants)
    head += "  " + "".join(f"{v + '/cv':>13}" for v in variants[1:]) + "  prepare s"
    print(head + "        max err  load  rounds", flush=True)
    for threads in args.threads:
        # Each net's row as soon as its child measured it.
        command = [sys.executable, __file__, *argv, "--child", str(threads)]
        with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) as child:
            assert child.stdout is not None
            for text in child.stdout:
                if text.startswith("{"):
                    print(_row(json.loads(text), variants), flush=True)
        if child.returncode != 0:
            return child.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
