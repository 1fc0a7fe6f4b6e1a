"""DetectionOutput's cost on the corpus's SSD nets: the eager path against the static one.

    PYTHONPATH=src python benchmarks/bench_detection.py [--rounds 15] [--threads 1]

templates/helpers/detection_output.py ranks, for every image and class, min(top_k, priors)
candidates when the sizes must be static (TorchScript, torch.compile, torch.export, ONNX: the
path that all runs took before issue 17); run eagerly, it first leaves out the priors that no
class scores above the confidence threshold (when that leaves out at least half). Each net gets
seeded random weights and a seeded input; the helper's inputs (loc, conf, prior) are taken from
one forward pass, then both paths are timed on them, round-robin, at the net's own threshold and
at 0.01 (many rows). The rows must be identical; the table shows the median ms per call and the
row count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_inference import SHARED  # noqa: E402

NETS = {  # corpus folder -> input shape
    "mobilenet-ssd": (1, 3, 300, 300),
    "opencv-face-detector-res10-ssd": (1, 3, 300, 300),
    "ssd-vgg16-voc0712-300": (1, 3, 300, 300),
    "yufacedetectnet-v2": (1, 3, 240, 320),
}


def _inputs(folder: str, shape: tuple[int, ...], workdir: Path) -> tuple[Any, dict[str, Any]]:
    """The generated module's detection_output function and the arguments it is called with."""
    import torch

    from protocaffe.api import convert, module_from_source
    from protocaffe.random_weights import random_weights

    prototxt = SHARED / "corpus" / folder / "deploy.prototxt"
    weights = workdir / f"{folder}.caffemodel"
    random_weights(prototxt, weights, seed=0)
    conversion = convert(prototxt, weights)
    model = module_from_source(conversion.source, conversion.class_name)
    assert conversion.state_dict is not None
    model.load_state_dict(conversion.state_dict)
    namespace = type(model).forward.__globals__
    helper = namespace["detection_output"]
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def record(*args: Any, **kwargs: Any) -> Any:
        seen.append((args, kwargs))
        return helper(*args, **kwargs)

    namespace["detection_output"] = record
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    with torch.no_grad():
        model.eval()(x)
    namespace["detection_output"] = helper
    ((args, kwargs),) = seen
    names = ["loc", "conf", "prior"]
    return namespace, {**dict(zip(names, args, strict=False)), **kwargs}


def _call(namespace: dict[str, Any], call: dict[str, Any], static: bool) -> Any:
    """The helper on `call`'s arguments, on its static path or as it runs eagerly."""
    eager_switch = namespace["_static_shapes"]
    if static:
        namespace["_static_shapes"] = lambda x: True
    try:
        return namespace["detection_output"](**call)
    finally:
        namespace["_static_shapes"] = eager_switch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--nets", nargs="*", default=list(NETS), choices=list(NETS))
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), median of {args.rounds} "
        f"round-robin calls, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'net':32}{'threshold':>10}{'rows':>6}{'static ms':>11}{'eager ms':>10}{'ratio':>7}")
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for folder in args.nets:
            namespace, call = _inputs(folder, NETS[folder], Path(tmp))
            shipped = call["confidence_threshold"]
            for threshold in dict.fromkeys((shipped, 0.01)):
                call["confidence_threshold"] = threshold

                rows = _call(namespace, call, static=False)
                if not torch.equal(rows, _call(namespace, call, static=True)):
                    sys.exit(f"{folder}: the eager rows differ from the static ones")
                times: dict[str, list[float]] = {"static": [], "eager": []}
                for _ in range(args.rounds):
                    for label in times:
                        start = time.perf_counter()
                        _call(namespace, call, static=label == "static")
                        times[label].append(time.perf_counter() - start)
                ms = {k: statistics.median(v) * 1000 for k, v in times.items()}
                shown = repr(threshold)
                print(
                    f"{folder:32}{shown:>10}{rows.shape[2]:6}{ms['static']:11.2f}"
                    f"{ms['eager']:10.2f}{ms['eager'] / ms['static']:7.2f}"
                )
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
