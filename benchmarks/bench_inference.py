"""Inference latency at batch 1 on CPU: OpenCV dnn against the generated modules.

    PYTHONPATH=src python benchmarks/bench_inference.py [--threads N] [--rounds R] [--nets ...]

Every variant runs in this one process with the same thread count (OpenCV's and torch's), on
the same input, with fan-in scaled random weights from protocaffe.random_weights:

- opencv:    cv2.dnn.readNetFromCaffe, default backend, CPU target (the reference);
- plain:     the module `protocaffe convert` writes, eager;
- optimized: the `--optimize` module (BatchNorm/Scale folded, pass-through layers gone), eager;
- compiled:  the `--optimize` module under torch.compile (inductor, fullgraph).

Timing is round-robin (one call of each variant per round) so that load from other processes
hits every variant alike; the table shows the median per call and the ratio to OpenCV (below
1 is faster). `max err` is the largest difference to OpenCV's output over OpenCV's largest
magnitude. This is a script, not a test: numbers depend on the machine.

On a machine shared with other work, use `--threads 1`: with more threads than free cores,
torch's OpenMP workers (and OpenCV's pool) spin at barriers while descheduled, and torch's
eager ResNet-50 was measured 4x slower at 2 threads than at 1 on a loaded 2-core machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

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
VARIANTS = ("opencv", "plain", "optimized", "compiled")


def _variants(
    folder: str, input_name: str, shape: tuple[int, ...], workdir: Path
) -> tuple[dict[str, Callable[[], np.ndarray]], dict[str, float]]:
    import cv2
    import torch

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
    start = time.perf_counter()
    compiled_model = torch.compile(optimized, fullgraph=True)
    with torch.inference_mode():
        compiled_model(tensor)  # compiles
    compile_seconds = time.perf_counter() - start

    def runner(model: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            with torch.inference_mode():
                return model(tensor).numpy()

        return run

    runs = {
        "opencv": opencv,
        "plain": runner(plain),
        "optimized": runner(optimized),
        "compiled": runner(compiled_model),
    }
    return runs, {"compile_s": compile_seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="default: all cores")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--nets", nargs="*", default=list(NETS), choices=list(NETS))
    args = parser.parse_args(argv)

    import os

    import cv2
    import torch

    warnings.filterwarnings("ignore")
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    print(
        f"torch {torch.__version__}, OpenCV {cv2.__version__}, {threads} threads "
        f"(torch {torch.get_num_threads()}, OpenCV {cv2.getNumThreads()}), batch 1, "
        f"median of {args.rounds} round-robin rounds",
        flush=True,
    )
    header = f"{'net':26} " + " ".join(f"{v + ' ms':>12}" for v in VARIANTS)
    header += "  " + " ".join(f"{v + '/cv':>13}" for v in VARIANTS[1:]) + "  max err"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.nets:
            folder, input_name, shape = NETS[name]
            runs, info = _variants(folder, input_name, shape, Path(tmp))
            reference = runs["opencv"]()
            errors = [
                float(np.abs(runs[v]() - reference).max() / np.abs(reference).max())
                for v in VARIANTS[1:]
            ]
            for _ in range(args.warmup):
                for run in runs.values():
                    run()
            times: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for _ in range(args.rounds):
                for variant in VARIANTS:
                    start = time.perf_counter()
                    runs[variant]()
                    times[variant].append(time.perf_counter() - start)
            medians = {v: statistics.median(t) * 1000 for v, t in times.items()}
            row = f"{name:26} " + " ".join(f"{medians[v]:12.1f}" for v in VARIANTS)
            row += "  " + " ".join(f"{medians[v] / medians['opencv']:13.2f}" for v in VARIANTS[1:])
            row += f"  {max(errors):.1e}"
            rows.append(row)
            print(f"  {name}: compiled in {info['compile_s']:.0f} s", file=sys.stderr, flush=True)
    print(header)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
