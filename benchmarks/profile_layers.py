"""Where does inference time go, per Caffe layer type: OpenCV dnn against the generated module.

    PYTHONPATH=src python benchmarks/profile_layers.py [--threads 1] [--rounds 10] [--nets ...]

For each net (seeded random weights, batch 1), one process, the same thread count for both:

- OpenCV's own per-layer timings (`cv2.dnn.Net.getPerfProfile`), with fusion off (one row per
  Caffe layer) and on (fused layers count 0, their time in the layer they joined);
- the generated module's time per line of `forward()`: the file is instrumented in memory as
  `verify` does (protocaffe.verify.record), and the clock is read after every statement, so each
  line's time is billed to the Caffe layer its trace comment names. The default module
  (`plain`), the `--optimize` module, and `protocaffe.fast()` of the default module (whole
  calls only: TorchScript cannot follow the instrumented lines) are timed.

Times are the process's CPU time (OpenCV's per-layer ticks, which are wall time, are scaled by
its call's CPU / wall time), so that on a busy machine they measure work, not waiting: run it at
1 thread. The table sums per layer type the median (over the rounds) of each layer's time, in
ms; the last row is the median of whole calls. Round-robin over the variants, with glibc's
malloc tuned as in bench_inference.py. `plain CLw` is the plain module with its weights made
channels-last too (what protocaffe.fast does first). A script, not a test: numbers depend on
the machine and on its load (printed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CLOCK = time.process_time

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import NETS, SHARED, _tune_malloc  # noqa: E402


def _opencv_profile(
    prototxt: Path, weights: Path, x: np.ndarray, input_name: str, fusion: bool
) -> Callable[[], dict[str, float]]:
    import cv2

    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    net.enableFusion(fusion)
    names = net.getLayerNames()
    types = [net.getLayer(i + 1).type for i in range(len(names))]

    def run() -> dict[str, float]:
        net.setInput(x, input_name)
        start, wall = CLOCK(), time.perf_counter()
        net.forward()
        total, wall = CLOCK() - start, time.perf_counter() - wall
        _, ticks = net.getPerfProfile()
        # OpenCV's ticks are wall time: scaled by the call's CPU / wall time, to CPU time.
        scale = 1000.0 / cv2.getTickFrequency() * total / wall
        per_type: dict[str, float] = defaultdict(float)
        for kind, tick in zip(types, np.asarray(ticks).reshape(-1), strict=True):
            per_type[kind] += float(tick) * scale
        per_type["(total)"] = total * 1000.0
        return per_type

    return run


def _torch_profile(
    source: str,
    class_name: str,
    state: Any,
    x: np.ndarray,
    prepare: bool,
    channels_last: bool = False,
) -> tuple[Callable[[], dict[str, float]], float]:
    import torch

    import protocaffe
    from protocaffe.api import module_from_source
    from protocaffe.verify.record import RECORD_FN, instrument

    instrumented = instrument(source, class_name)
    # protocaffe.fast() freezes the module with TorchScript, which cannot follow the
    # instrumented lines: of it, only whole calls are timed.
    model = module_from_source(source, class_name) if prepare else instrumented.cls()
    model.load_state_dict(state)
    model.eval()
    prepare_s = 0.0
    tensor = torch.from_numpy(x)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if prepare:
        start = time.perf_counter()
        model = protocaffe.fast(model, tensor)
        prepare_s = time.perf_counter() - start
    types = {a.index: a.layer_type or "(other)" for a in instrumented.assignments}
    clock: list[float] = [0.0]
    spent: dict[str, float] = defaultdict(float)

    def tick(index: int, values: tuple[Any, ...]) -> None:
        now = CLOCK()
        spent[types.get(index, "(other)")] += (now - clock[0]) * 1000.0
        clock[0] = CLOCK()

    instrumented.cls.forward.__globals__[RECORD_FN] = tick

    def run() -> dict[str, float]:
        spent.clear()
        with torch.inference_mode():
            start = clock[0] = CLOCK()
            model(tensor)
            total = CLOCK() - start
        result = dict(spent)
        result["(total)"] = total * 1000.0
        return result

    return run, prepare_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--nets", nargs="*", default=list(NETS), choices=list(NETS))
    parser.add_argument("--no-fast", action="store_true", help="skip protocaffe.fast()")
    parser.add_argument("--variants", nargs="*", default=["plain", "optimized", "fast"])
    args = parser.parse_args(argv)

    import cv2
    import torch

    from protocaffe.api import convert
    from protocaffe.passes import DEFAULT_PIPELINE, OPTIMIZE_PIPELINE
    from protocaffe.random_weights import random_weights

    warnings.filterwarnings("ignore")
    _tune_malloc()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    print(
        f"torch {torch.__version__}, OpenCV {cv2.__version__}, {args.threads} threads, batch 1, "
        f"median of {args.rounds} rounds, load average {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.nets:
            folder, input_name, shape = NETS[name]
            prototxt = SHARED / "corpus" / folder / "deploy.prototxt"
            weights = Path(tmp) / f"{folder}.caffemodel"
            shapes = {input_name: shape}
            random_weights(prototxt, weights, seed=0, input_shapes=shapes)
            x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            runs: dict[str, Callable[[], dict[str, float]]] = {
                "cv nofuse": _opencv_profile(prototxt, weights, x, input_name, False),
                "cv fused": _opencv_profile(prototxt, weights, x, input_name, True),
            }
            prepared = {}
            for label, passes, prepare, cl in (
                ("plain", DEFAULT_PIPELINE, False, False),
                ("plain CLw", DEFAULT_PIPELINE, False, True),
                ("optimized", OPTIMIZE_PIPELINE, False, False),
                ("fast", DEFAULT_PIPELINE, True, False),
            ):
                if (prepare and args.no_fast) or label not in args.variants:
                    continue
                conversion = convert(prototxt, weights, input_shapes=shapes, passes=passes)
                runs[label], prepared[label] = _torch_profile(
                    conversion.source, conversion.class_name, conversion.state_dict, x, prepare, cl
                )
            for run in runs.values():  # warm-up
                run()
            samples: dict[str, list[dict[str, float]]] = {k: [] for k in runs}
            for _ in range(args.rounds):
                for label, run in runs.items():
                    samples[label].append(run())
            kinds = sorted({k for s in samples.values() for r in s for k in r} - {"(total)"})
            table = {
                label: {
                    kind: statistics.median(r.get(kind, 0.0) for r in rows)
                    for kind in [*kinds, "(total)"]
                }
                for label, rows in samples.items()
            }
            kinds.sort(key=lambda k: -table["cv nofuse"].get(k, 0.0) - table["plain"].get(k, 0.0))
            print(f"\n{name} (load {os.getloadavg()[0]:.1f})")
            if "fast" in prepared:
                print(f"  protocaffe.fast() prepared in {prepared['fast']:.2f} s")
            print(f"  {'layer type':22}" + "".join(f"{label:>12}" for label in runs))
            for kind in [*kinds, "(total)"]:
                row = "".join(f"{table[label][kind]:12.2f}" for label in runs)
                print(f"  {kind:22}{row}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
