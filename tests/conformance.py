"""Conformance over a corpus of real prototxts: verify every supported model, blob by blob.

Usable on its own (`python tests/conformance.py --out conformance.md`) and from pytest
(tests/test_conformance_corpus.py parametrises over `corpus_cases()`). It is a harness for the
shared corpus (../shared, found by shared_dir.py), not part of the installed package.

- Every model folder of the corpus whose layer types are all registered is verified against
  OpenCV with seeded random weights (whatever layer families are registered when it runs, fork
  layers included). Others are skipped with the reason.
- A model folder that ships a .caffemodel is verified with those weights too.
- The real-Caffe reference outputs of ../shared/opencv-caffe-cases are checked against the
  module's output directly (no OpenCV involved).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from shared_dir import shared_dir

from protocaffe import api
from protocaffe.errors import ProtocaffeError, Reporter
from protocaffe.frontend.lower import TRAINING_ONLY
from protocaffe.frontend.prototxt import read_prototxt
from protocaffe.ir.graph import Shape
from protocaffe.layers import lookup
from protocaffe.verify.compare import Tolerance, errors, within
from protocaffe.views.cost import parameter_count as node_parameters

# Inputs verified at another size than declared, with why. Caffe reshapes a net to its input
# at run time, and no layer of these nets depends on the spatial size. OpenPose's deploy files
# declare a placeholder size: the two body nets run at OpenPose's real 368x368, the others at
# 184x184, which exercises the same layers at a quarter of the cost (every stride divides it).
_OPENPOSE_FULL: tuple[dict[str, Shape], str] = (
    {"image": (1, 3, 368, 368)},
    "declares 1x1 or 16x16; run at 368x368",
)
_OPENPOSE_SMALL: tuple[dict[str, Shape], str] = (
    {"image": (1, 3, 184, 184)},
    "declares 1x1 or 16x16; run at 184x184",
)
INPUT_SHAPES: dict[str, tuple[dict[str, Shape], str]] = {
    "openpose-body25": _OPENPOSE_FULL,
    "openpose-coco": _OPENPOSE_FULL,
    "openpose-mpi": _OPENPOSE_SMALL,
    "openpose-face": _OPENPOSE_SMALL,
    "openpose-hand": _OPENPOSE_SMALL,
}
# Batch size changes no layer's arithmetic per sample (Caffe reshapes the batch freely); larger
# declared batches (10 crops, 64 or 10000 digits) are verified with this many samples.
MAX_BATCH = 2
# Nets with more weights than this are the slow part of a run (random weights for 138M
# parameters take most of a VGG's time); pytest runs them only in the full profile.
FAST_PARAMETERS = 8_000_000


@dataclass(frozen=True)
class CorpusCase:
    """One verification: a corpus model with random or with its own weights."""

    model: str
    prototxt: Path
    weights: Path | None = None  # None: seeded random weights
    input_shapes: Mapping[str, Shape] = field(default_factory=dict)
    note: str = ""

    @property
    def name(self) -> str:
        return self.model + (" (real weights)" if self.weights is not None else "")


@dataclass(frozen=True)
class CaseResult:
    name: str
    status: str  # "pass", "fail", "skip" or "error"
    layers: int = 0
    blobs: int = 0
    largest_error: float | None = None  # relative to each blob's largest magnitude
    output_error: float | None = None  # the same for the net's last compared blob
    first_divergent: str = ""
    reason: str = ""
    seconds: float = 0.0


def corpus_cases(corpus: Path | None = None) -> list[CorpusCase]:
    corpus = corpus if corpus is not None else shared_dir() / "corpus"
    cases: list[CorpusCase] = []
    if not corpus.is_dir():
        return cases
    for folder in sorted(p for p in corpus.iterdir() if p.is_dir()):
        prototxt = folder / "deploy.prototxt"
        if not prototxt.is_file():
            continue
        shapes, note = INPUT_SHAPES.get(folder.name, ({}, ""))
        shapes, batch_note = _batch_limited(prototxt, dict(shapes))
        note = "; ".join(n for n in (note, batch_note) if n)
        cases.append(CorpusCase(folder.name, prototxt, None, shapes, note))
        for weights in sorted(folder.glob("*.caffemodel")):
            cases.append(CorpusCase(folder.name, prototxt, weights, shapes, note))
    return cases


def _declared_inputs(prototxt: Path, shapes: Mapping[str, Shape]) -> dict[str, Shape] | None:
    try:
        graph = api.compile(prototxt, input_shapes=shapes, passes=())
    except ProtocaffeError:
        return None  # unsupported or broken: run_case reports why
    return {v.blob: v.shape for v in graph.inputs}


def _batch_limited(prototxt: Path, shapes: dict[str, Shape]) -> tuple[dict[str, Shape], str]:
    declared = _declared_inputs(prototxt, shapes)
    if declared is None:
        return shapes, ""
    notes = []
    for name, shape in declared.items():
        if len(shape) >= 2 and shape[0] > MAX_BATCH:
            shapes[name] = (MAX_BATCH, *shape[1:])
            notes.append(f"batch {shape[0]} -> {MAX_BATCH}")
    return shapes, ", ".join(notes)


def parameter_count(case: CorpusCase) -> int:
    """How many weights the net has at the case's input size (0 when it does not build)."""
    try:
        graph = api.compile(case.prototxt, input_shapes=case.input_shapes, passes=())
    except ProtocaffeError:
        return 0
    return sum(node_parameters(node) for node in graph.nodes)


def unsupported_types(prototxt: Path) -> list[str]:
    """Layer types of the net that no registered layer definition handles."""
    net = read_prototxt(prototxt, Reporter())
    return sorted(
        {layer.type for layer in net.layers}
        - {t for t in {layer.type for layer in net.layers} if lookup(t) or t in TRAINING_ONLY}
    )


def run_case(
    case: CorpusCase, tolerance: Tolerance | None = None, reference: str = "opencv"
) -> CaseResult:
    from protocaffe.verify.core import VerifyError, verify
    from protocaffe.verify.inputs import InputError

    start = time.perf_counter()

    def done(status: str, **kwargs: object) -> CaseResult:
        seconds = time.perf_counter() - start
        return CaseResult(case.name, status, seconds=seconds, **kwargs)  # type: ignore[arg-type]

    try:
        missing = unsupported_types(case.prototxt)
        layers = len(read_prototxt(case.prototxt, Reporter()).layers)
    except ProtocaffeError as exc:
        return done("error", reason=_first_line(exc))
    if missing:
        return done("skip", layers=layers, reason="unsupported layer types: " + ", ".join(missing))
    try:
        report = verify(
            case.prototxt,
            case.weights,
            input_shapes=case.input_shapes,
            tolerance=tolerance or Tolerance(),
            reference=reference,
        )
    except ProtocaffeError as exc:
        fed = [d.message for d in exc.diagnostics if "training-only layer" in d.message]
        if fed:
            # The deploy file reads its input from a data layer: it needs a shape and a
            # reference prototxt with an Input layer in its place, which this runner does not
            # derive.
            return done("skip", layers=layers, reason=fed[0].split(";")[0])
        return done("error", layers=layers, reason=_first_line(exc))
    except (VerifyError, InputError) as exc:
        text = str(exc)
        # The reference's own limits (OpenCV cannot import a layer) are skips here; the numpy
        # reference covers those nets.
        unavailable = isinstance(exc, VerifyError) and exc.reference_unavailable
        status = "skip" if unavailable else "error"
        return done(status, layers=layers, reason=text)
    first = report.first_divergent
    return done(
        "pass" if report.ok else "fail",
        layers=layers,
        blobs=len(report.compared),
        largest_error=report.largest_error,
        output_error=report.output_error,
        first_divergent="" if first is None else f"{first.layer} ({first.type})",
        reason=(first.diagnosis or first.status.value) if first is not None else case.note,
    )


# --- The real-Caffe reference outputs of opencv-caffe-cases. ---


@dataclass(frozen=True)
class CaffeOutputCase:
    name: str
    prototxt: Path
    weights: Path | None
    input: Path
    expected: Path


def caffe_output_cases(folder: Path | None = None) -> list[CaffeOutputCase]:
    folder = folder if folder is not None else shared_dir() / "opencv-caffe-cases"
    cases: list[CaffeOutputCase] = []
    if not folder.is_dir():
        return cases
    for prototxt in sorted(folder.glob("layer_*.prototxt")):
        stem = prototxt.stem
        expected = folder / f"{stem}.npy"
        if not expected.is_file():
            continue
        weights = folder / f"{stem}.caffemodel"
        own_input = folder / f"{stem}.input.npy"
        cases.append(
            CaffeOutputCase(
                stem,
                prototxt,
                weights if weights.is_file() else None,
                own_input if own_input.is_file() else folder / "blob.npy",
                expected,
            )
        )
    return cases


def run_caffe_output_case(case: CaffeOutputCase, tolerance: Tolerance | None = None) -> CaseResult:
    """Our module's output against the output real Caffe computed for the same input."""
    import torch

    from protocaffe.api import convert, module_from_source

    tol = tolerance or Tolerance()
    start = time.perf_counter()
    x = np.load(case.input).astype(np.float32)
    try:
        conversion = convert(case.prototxt, case.weights, input_shapes={"input": x.shape})
    except ProtocaffeError as exc:
        return CaseResult(case.name, "error", reason=_first_line(exc))
    model = module_from_source(conversion.source, conversion.class_name)
    if conversion.state_dict is not None:
        model.load_state_dict(conversion.state_dict, strict=True)
    with torch.no_grad():
        out = model.eval()(torch.from_numpy(x)).numpy()
    expected = np.load(case.expected).astype(np.float32)
    seconds = time.perf_counter() - start
    layers = len(conversion.graph.nodes)
    if out.shape != expected.shape:
        reason = f"shape {out.shape} vs Caffe's {expected.shape}"
        return CaseResult(case.name, "fail", layers, 1, None, None, "output", reason, seconds)
    err = errors(out, expected)
    status = "pass" if within(err, tol) else "fail"
    return CaseResult(
        case.name,
        status,
        layers,
        1,
        err.max_rel,
        err.max_rel,
        "" if status == "pass" else "output",
        "",
        seconds,
    )


# --- The table. ---


def markdown(
    results: Sequence[CaseResult],
    caffe_results: Sequence[CaseResult],
    tolerance: Tolerance,
    reference: str = "opencv",
) -> str:
    passed = sum(r.status == "pass" for r in results)
    verified = sum(r.status in ("pass", "fail", "error") for r in results)
    lines = [
        "# Conformance: the corpus against "
        + ("OpenCV 4.x dnn" if reference == "opencv" else "real Caffe")
        + ", blob by blob",
        "",
        f"{passed} of {verified} supported cases match; {len(results) - verified} skipped. "
        f"A blob matches when max|ours - ref| <= {tolerance.atol:g} + {tolerance.rtol:g} * "
        "max|ref|; errors are relative to each blob's largest magnitude. Random weights are "
        "seeded (protocaffe random-weights, seed 0); inputs are uniform in [-1, 1).",
        "",
        "| model | layers | blobs compared | largest error | output error | status "
        "| first divergent blob | notes | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_markdown_row(r) for r in results]
    if caffe_results:
        lines += [
            "",
            "## Real-Caffe reference outputs (../shared/opencv-caffe-cases)",
            "",
            "| case | layers | largest error | status | notes |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r.name} | {r.layers} | {_err(r.largest_error)} | {r.status} | {_md(r.reason)} |"
            for r in caffe_results
        ]
    return "\n".join(lines) + "\n"


def _markdown_row(r: CaseResult) -> str:
    cells = [
        r.name,
        str(r.layers or ""),
        str(r.blobs or ""),
        _err(r.largest_error),
        _err(r.output_error),
        r.status,
        r.first_divergent,
        _md(r.reason),
        f"{r.seconds:.1f}",
    ]
    return "| " + " | ".join(cells) + " |"


def _err(value: float | None) -> str:
    return "" if value is None else f"{value:.2e}"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _first_line(exc: ProtocaffeError) -> str:
    return str(exc.diagnostics[0])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpus", type=Path, default=None, help="default: ../shared/corpus ($PROTOCAFFE_SHARED)"
    )
    parser.add_argument("--out", type=Path, help="write the markdown table here")
    parser.add_argument("--only", action="append", default=[], help="model folder (repeatable)")
    parser.add_argument("--rtol", type=float, default=Tolerance().rtol)
    parser.add_argument("--atol", type=float, default=Tolerance().atol)
    parser.add_argument("--reference", choices=("opencv", "caffe"), default="opencv")
    args = parser.parse_args(argv)
    tolerance = Tolerance(args.rtol, args.atol)
    results: list[CaseResult] = []
    for case in corpus_cases(args.corpus):
        if args.only and case.model not in args.only:
            continue
        result = run_case(case, tolerance, args.reference)
        results.append(result)
        print(
            f"{result.status:5} {result.name:40} {_err(result.largest_error):9} "
            f"{result.seconds:6.1f}s {result.first_divergent} {result.reason}",
            file=sys.stderr,
            flush=True,
        )
    caffe_results = (
        [] if args.only else [run_caffe_output_case(c, tolerance) for c in caffe_output_cases()]
    )
    table = markdown(results, caffe_results, tolerance, args.reference)
    if args.out is not None:
        from protocaffe.atomic import write_text

        write_text(args.out, table)
    else:
        print(table)
    bad = [r for r in [*results, *caffe_results] if r.status in ("fail", "error")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
