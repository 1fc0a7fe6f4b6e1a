"""`verify()`: run a Caffe net on a reference and its PyTorch module on the same input, and
compare every Caffe blob in topological order.

The net is compiled once (`api.compile`); its graph gives the declared inputs, the random
weights and the module. The module is generated from it, or read from a given model.py (possibly
hand-edited). Its forward() is instrumented in memory (see record.py) and each recorded local is
tied to an SSA value of the graph: by the Caffe layer named in the line's trace comment, else by
the variable name the backend gives that value.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from protocaffe import api
from protocaffe.errors import ProtocaffeError, Reporter
from protocaffe.frontend.prototxt import read_prototxt
from protocaffe.ir.graph import Graph, Node, Shape, Value
from protocaffe.layers import layer_of
from protocaffe.passes import DEFAULT_PIPELINE, run_pipeline
from protocaffe.passes.outputs import select_outputs
from protocaffe.verify.compare import (
    Status,
    Tolerance,
    comparable,
    diagnose_affine,
    diagnose_combination,
    diagnose_permutation,
    diagnose_shape,
    errors,
    within,
)
from protocaffe.verify.inputs import (
    ImageSpec,
    InputError,
    check_inputs,
    image_blob,
    load_npy,
    module_preprocess,
    random_input,
    read_image,
)
from protocaffe.verify.opencv import LayerQuery, ReferenceUnavailable
from protocaffe.verify.record import InstrumentError, Recording, instrument
from protocaffe.verify.report import BlobRow, VerifyReport

REFERENCES = ("opencv", "caffe")


class VerifyError(Exception):
    """Verification could not run (bad input, missing backend, a module that does not load)."""


@dataclass
class VerifyOptions:
    """Everything `verify` needs besides the prototxt and the weights."""

    module: str | os.PathLike[str] | None = None  # a model.py; None: generate one
    weights: str | os.PathLike[str] | None = None  # its state_dict (.safetensors or .pt)
    inputs: Mapping[str, np.ndarray | str | os.PathLike[str]] = field(default_factory=dict)
    image: ImageSpec | None = None
    input_shapes: Mapping[str, Sequence[int]] = field(default_factory=dict)
    reference: str = "opencv"
    tolerance: Tolerance = field(default_factory=Tolerance)
    seed: int = 0
    outputs: Sequence[str] | None = None  # the module's outputs (convert --outputs)


def verify(
    prototxt: str | os.PathLike[str],
    caffemodel: str | os.PathLike[str] | None = None,
    options: VerifyOptions | None = None,
    reporter: Reporter | None = None,
    **kwargs: Any,
) -> VerifyReport:
    """Verify the module for `prototxt` against the reference, blob by blob.

    Without `caffemodel`, both sides get the same seeded random weights. Keyword arguments set
    the fields of `VerifyOptions`. Raises `VerifyError` or `ProtocaffeError` when it cannot run.
    """
    opts = options if options is not None else VerifyOptions(**kwargs)
    if opts.reference not in REFERENCES:
        raise VerifyError(f"unknown reference {opts.reference!r} (choose from {REFERENCES})")
    reporter = reporter if reporter is not None else Reporter()
    net = read_prototxt(prototxt, reporter)
    lowered = api.compile(net, input_shapes=opts.input_shapes, passes=(), reporter=reporter)
    inputs = _inputs(lowered, opts)
    shapes = {name: tuple(a.shape) for name, a in inputs.items()}
    declared = {v.blob: v.shape for v in lowered.inputs}
    if shapes != declared:
        # An input of another size reshapes the net, as Caffe's Reshape does at run time; the
        # file was read and reported on already.
        with _blame_inputs(opts, shapes, declared):
            lowered = api.compile(net, input_shapes=shapes, passes=(), reporter=Reporter())
    passes = DEFAULT_PIPELINE
    if opts.outputs is not None:
        passes = (select_outputs(opts.outputs), *passes)
    graph = run_pipeline(lowered, passes)
    with tempfile.TemporaryDirectory(prefix="protocaffe-verify-") as work:
        weights = caffemodel
        if weights is None:
            from protocaffe.random_weights import write_random_weights

            weights = Path(work) / "random.caffemodel"
            write_random_weights(lowered, weights, seed=opts.seed)
        with _blame_inputs(opts, shapes, declared):
            conversion = api.convert_graph(graph, weights, reporter=reporter)
        ours = _run_module(conversion, opts, inputs, graph)
        queries = [LayerQuery(n.name, n.op, tuple(v.blob for v in n.outputs)) for n in graph.nodes]
        refs = _run_reference(opts.reference, prototxt, weights, inputs, queries)
    report = VerifyReport(
        prototxt=str(prototxt),
        module=str(opts.module) if opts.module is not None else "generated",
        reference=opts.reference,
        tolerance=opts.tolerance,
        inputs=shapes,
    )
    report.rows = _compare(graph, ours, refs, inputs, opts.tolerance)
    return report


def _source(opts: VerifyOptions, name: str) -> str | None:
    """The file an input came from (an --input .npy or the --image), if any."""
    given = opts.inputs.get(name)
    if given is not None and not isinstance(given, np.ndarray):
        return os.fspath(given)
    return opts.image.path if opts.image is not None and name not in opts.inputs else None


@contextmanager
def _blame_inputs(
    opts: VerifyOptions, shapes: Mapping[str, tuple[int, ...]], declared: Mapping[str, Shape]
) -> Iterator[None]:
    """An error of the net reshaped to the given inputs is the input file's, not the
    prototxt's: the net does not take an input of that shape."""
    try:
        yield
    except ProtocaffeError as exc:
        changed = [name for name in shapes if shapes[name] != declared.get(name)]
        if not changed:
            raise
        name = changed[0]
        where = _source(opts, name) or f"input {name!r}"
        raise InputError(
            f"{where}: input {name!r} has shape {shapes[name]}, which the net cannot take (it "
            f"declares {declared[name]}): {exc.diagnostics[0]}"
        ) from None


def _inputs(graph: Graph, opts: VerifyOptions) -> dict[str, np.ndarray]:
    declared = {v.blob: v.shape for v in graph.inputs}  # an unknown override raised already
    given: dict[str, np.ndarray] = {}
    for name, value in opts.inputs.items():
        check_inputs({name: np.zeros(declared.get(name, ()), np.float32)}, declared)
        given[name] = value if isinstance(value, np.ndarray) else load_npy(value)
        given[name] = np.ascontiguousarray(given[name], dtype=np.float32)
    if opts.image is not None:
        if not declared:
            raise InputError("the net declares no input to feed the image to")
        first = next(iter(declared))
        given[first] = _image(opts, opts.image, declared[first])
    for name, array in given.items():
        try:
            check_inputs({name: array}, declared)
        except InputError as exc:
            where = _source(opts, name)
            raise InputError(f"{where}: {exc}" if where is not None else str(exc)) from None
    arrays: dict[str, np.ndarray] = {}
    for index, (name, shape) in enumerate(declared.items()):
        arrays[name] = given[name] if name in given else random_input(shape, opts.seed + index)
    return arrays


def _image(opts: VerifyOptions, image: ImageSpec, declared: Shape) -> np.ndarray:
    """The image's blob: by the module's own preprocess() when it has one and no
    blobFromImage option is given, else as cv2.dnn.blobFromImage prepares it."""
    preprocess = module_preprocess(opts.module) if opts.module and image.plain else None
    if preprocess is None:
        return image_blob(image, declared)
    try:
        blob = preprocess(read_image(image.path))
    except Exception as exc:  # the module's code
        raise InputError(f"{image.path}: the module's preprocess() failed: {exc!r}") from exc
    return np.ascontiguousarray(np.asarray(blob), dtype=np.float32)


def _load_state(model: Any, conversion: Any, weights: str | os.PathLike[str] | None) -> None:
    import torch

    if weights is None:
        state = conversion.state_dict
    elif str(weights).endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(str(weights))
    else:
        state = torch.load(str(weights), weights_only=True)
    if state is None:
        return
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise VerifyError(f"the weights do not fit the module: {' '.join(first[:2])}") from exc


def _run_module(
    conversion: Any, opts: VerifyOptions, inputs: Mapping[str, np.ndarray], graph: Graph
) -> dict[Value, tuple[np.ndarray, int]]:
    """Every value the module computed (with its model.py line), keyed by the graph's values."""
    import torch

    if opts.module is not None:
        path = Path(opts.module)
        try:
            source = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise VerifyError(f"{path}: cannot read the module ({exc.strerror})") from exc
        filename = str(path)
    else:
        source, filename = conversion.source, "model.py"
    try:
        compiled = instrument(source, conversion.class_name, filename)
        model = compiled.cls()
    except InstrumentError as exc:
        raise VerifyError(str(exc)) from exc
    except Exception as exc:  # the user's module failed to build
        raise VerifyError(f"{filename}: the module does not build: {exc!r}") from exc
    _load_state(model, conversion, opts.weights)
    model.eval()
    recording = Recording(compiled.assignments)
    compiled.bind(recording)
    args = [torch.from_numpy(np.array(inputs[v.blob])) for v in graph.inputs]
    try:
        with torch.no_grad():
            model(*args)
    except Exception as exc:
        raise VerifyError(f"{filename}: forward() failed: {exc!r}") from exc

    # A re-binding line (SharedMemory) is named after the in-place layer that caused it, but
    # carries no trace comment: its value is found by its variable name.
    by_layer = {node.name: node for node in graph.nodes if not layer_of(node).rebinds}
    by_local = {name: value for value, name in conversion.emitted.locals.items()}
    found: dict[Value, tuple[np.ndarray, int]] = {}
    for index, values in recording.values:
        assignment = compiled.assignments[index]
        node = by_layer.get(assignment.layer) if assignment.layer is not None else None
        if node is not None and len(node.outputs) == len(values):
            targets: Sequence[Value | None] = node.outputs
        else:
            targets = [by_local.get(name) for name in assignment.targets]
        for value, tensor in zip(targets, values, strict=False):
            if value is not None and isinstance(tensor, torch.Tensor):
                found[value] = (tensor.detach().cpu().numpy(), assignment.line)
    return found


def _run_reference(
    reference: str,
    prototxt: str | os.PathLike[str],
    caffemodel: str | os.PathLike[str],
    inputs: Mapping[str, np.ndarray],
    queries: Sequence[LayerQuery],
) -> dict[tuple[str, int], np.ndarray]:
    try:
        if reference == "caffe":
            from protocaffe.verify.pycaffe import run_caffe

            return run_caffe(prototxt, caffemodel, inputs, queries)
        from protocaffe.verify.opencv import run_opencv

        return run_opencv(prototxt, caffemodel, inputs, queries)
    except ReferenceUnavailable as exc:
        raise VerifyError(str(exc)) from exc


def _compare(
    graph: Graph,
    ours: Mapping[Value, tuple[np.ndarray, int]],
    refs: Mapping[tuple[str, int], np.ndarray],
    inputs: Mapping[str, np.ndarray],
    tol: Tolerance,
) -> list[BlobRow]:
    ref_of: dict[Value, np.ndarray] = {v: inputs[v.blob] for v in graph.inputs}
    for node in graph.nodes:
        for index, value in enumerate(node.outputs):
            if layer_of(node).rebinds:
                # Caffe's blob shares the written blob's memory: the same values, its shape.
                written = ref_of.get(node.inputs[0])
                if written is not None and written.size == math.prod(value.shape):
                    ref_of[value] = written.reshape(value.shape)
            elif (node.name, index) in refs:
                ref_of[value] = refs[(node.name, index)]
    rows: list[BlobRow] = []
    row_of: dict[Value, int] = {}
    diagnosed = False
    for node in graph.nodes:
        for index, value in enumerate(node.outputs):
            ref = ref_of.get(value) if layer_of(node).rebinds else refs.get((node.name, index))
            row = _row(node, index, value, ours.get(value), ref, tol)
            if row.status.failed and not diagnosed:
                diagnosed = True
                row = _with_diagnosis(row, node, ours, ref_of, tol)
                _blame_skipped(graph, node, rows, row_of)
            row_of[value] = len(rows)
            rows.append(row)
    return rows


def _blame_skipped(
    graph: Graph, node: Node, rows: list[BlobRow], row_of: Mapping[Value, int]
) -> None:
    """A blob the module never computed is fine (a hand-edited file may fuse layers) until a
    blob computed from it diverges: then the earliest such ancestor is where it went wrong."""
    producers = {v: n for n in graph.nodes for v in n.outputs}
    seen: set[Value] = set()
    stack = list(node.inputs)
    skipped: list[int] = []
    while stack:
        value = stack.pop()
        if value in seen:
            continue
        seen.add(value)
        index = row_of.get(value)
        if index is not None and rows[index].status is Status.MISSING:
            skipped.append(index)
        producer = producers.get(value)
        if producer is not None:
            stack.extend(producer.inputs)
    if skipped:
        first = min(skipped)
        rows[first] = replace(
            rows[first],
            status=Status.SKIPPED,
            diagnosis=f"the module does not compute this layer, and {node.name!r} (computed"
            " from it) diverges: the layer was dropped or bypassed",
        )


def _row(
    node: Node,
    index: int,
    value: Value,
    mine: tuple[np.ndarray, int] | None,
    ref: np.ndarray | None,
    tol: Tolerance,
) -> BlobRow:
    row = BlobRow(
        layer=node.name,
        type=node.op,
        blob=value.blob,
        ours_shape=tuple(mine[0].shape) if mine is not None else None,
        ref_shape=tuple(ref.shape) if ref is not None else None,
        max_abs=None,
        max_rel=None,
        status=Status.MISSING if mine is None else Status.NO_REFERENCE,
        line=mine[1] if mine is not None else None,
    )
    if mine is None or ref is None:
        return row
    aligned = comparable(mine[0], ref)
    if aligned is None:
        diagnosis = diagnose_shape(node.op, mine[0].shape, ref.shape)
        return replace(row, status=Status.SHAPE, diagnosis=diagnosis)
    err = errors(mine[0], aligned)
    status = Status.MATCH if within(err, tol) else Status.MISMATCH
    return replace(row, max_abs=err.max_abs, max_rel=err.max_rel, status=status)


def _with_diagnosis(
    row: BlobRow,
    node: Node,
    ours: Mapping[Value, tuple[np.ndarray, int]],
    ref_of: Mapping[Value, np.ndarray],
    tol: Tolerance,
) -> BlobRow:
    if row.status is not Status.MISMATCH:
        return row
    value = next(v for v in node.outputs if v.blob == row.blob)
    mine = ours[value][0]
    ref = comparable(mine, ref_of[value])
    assert ref is not None
    diagnosis = diagnose_permutation(mine, ref, tol) or diagnose_affine(mine, ref, tol)
    if diagnosis is None:
        diagnosis = _sum_diagnosis(node, mine, ref_of, tol)
    if diagnosis is None:
        return row
    return replace(row, diagnosis=diagnosis)


def _sum_diagnosis(
    node: Node, mine: np.ndarray, ref_of: Mapping[Value, np.ndarray], tol: Tolerance
) -> str | None:
    """For a layer that sums its inputs with coefficients (Eltwise SUM): other coefficients
    that explain the output, if any."""
    coeffs = layer_of(node).sum_coefficients(node.attrs, len(node.inputs))
    if coeffs is None:
        return None
    bottoms = [ref_of.get(v) for v in node.inputs]
    if any(b is None for b in bottoms):
        return None
    arrays = [
        b.reshape(mine.shape) if b is not None and b.size == mine.size else b for b in bottoms
    ]
    return diagnose_combination(mine, [a for a in arrays if a is not None], coeffs, tol)
