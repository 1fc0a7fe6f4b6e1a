"""`verify()`: run a Caffe net on a reference and its PyTorch module on the same input, and
compare every Caffe blob, streamed (stream.py).

The steps: read and compile the net once (`api.compile`); make the inputs; choose the
reference (`references`: real Caffe, OpenCV, the numpy reference, in that order for `auto`,
each falling through to the next with its reason when it cannot run the net); make or read
the module; then run both, comparing each blob as soon as both sides have it.

The module is generated from the graph, or read from a given model.py (possibly hand-edited,
or made with --optimize). Its forward() is instrumented in memory (record.py) and each
recorded local is tied to a value of the graph: by the Caffe layer named in the line's trace
comment, else by the variable name the backend gives that value.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protocaffe import api
from protocaffe.backend.emit import local_names
from protocaffe.backend.weights import state_arrays
from protocaffe.errors import ProtocaffeError, Reporter
from protocaffe.frontend.caffemodel import CaffeModel, read_caffemodel
from protocaffe.frontend.prototxt import NetDef, read_prototxt
from protocaffe.ir.graph import Graph, Shape
from protocaffe.passes import DEFAULT_PIPELINE, OPTIMIZE_PIPELINE, run_pipeline
from protocaffe.passes.outputs import select_outputs
from protocaffe.verify.backend import REFERENCE_NAMES, Reference, ReferenceUnavailable, RefStep
from protocaffe.verify.compare import Tolerance
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
from protocaffe.verify.record import Instrumented, InstrumentError, instrument
from protocaffe.verify.report import ReferenceChoice, VerifyReport
from protocaffe.verify.stream import Comparison, plan_assignments
from protocaffe.version import __version__

REFERENCES = ("auto", *REFERENCE_NAMES)


class VerifyError(Exception):
    """Verification could not run (bad input, no reference for the net, a module that does
    not load): one line saying why. `reference_unavailable` is set when the chosen reference
    (or every reference `auto` tried) cannot run this net."""

    def __init__(self, message: str, reference_unavailable: bool = False) -> None:
        super().__init__(message)
        self.reference_unavailable = reference_unavailable


@dataclass
class VerifyOptions:
    """Everything `verify` needs besides the prototxt and the weights."""

    module: str | os.PathLike[str] | None = None  # a model.py; None: generate one
    weights: str | os.PathLike[str] | None = None  # its state_dict (.safetensors or .pt)
    inputs: Mapping[str, np.ndarray | str | os.PathLike[str]] = field(default_factory=dict)
    image: ImageSpec | None = None
    input_shapes: Mapping[str, Sequence[int]] = field(default_factory=dict)
    reference: str = "auto"
    tolerance: Tolerance = field(default_factory=Tolerance)
    seed: int = 0
    outputs: Sequence[str] | None = None  # the module's outputs (convert --outputs)
    dialects: Sequence[str] = ()  # fork dialects to read the net in (convert --dialect)
    # The net state's level and stages (convert --level/--stage); verify runs the TEST phase.
    level: int = 0
    stages: Sequence[str] = ()
    optimize: bool = False  # the module is (or is generated as) the --optimize one
    # Called with (blobs compared, blobs in all) as the comparison goes.
    progress: Callable[[int, int], None] | None = None


def verify(
    prototxt: str | os.PathLike[str],
    caffemodel: str | os.PathLike[str] | None = None,
    options: VerifyOptions | None = None,
    reporter: Reporter | None = None,
    **kwargs: Any,
) -> VerifyReport:
    """Verify the module for `prototxt` against a reference, blob by blob.

    Without `caffemodel`, both sides get the same seeded random weights. Keyword arguments set
    the fields of `VerifyOptions`. Raises `VerifyError` or `ProtocaffeError` when it cannot run.
    """
    opts = options if options is not None else VerifyOptions(**kwargs)
    if opts.reference not in REFERENCES:
        raise VerifyError(f"unknown reference {opts.reference!r} (choose from {REFERENCES})")
    reporter = reporter if reporter is not None else Reporter()
    net = read_prototxt(prototxt, reporter, level=opts.level, stages=opts.stages)
    lowered = api.compile(
        net,
        input_shapes=opts.input_shapes,
        passes=(),
        reporter=reporter,
        dialects=opts.dialects,
    )
    inputs = _inputs(lowered, opts)
    shapes = {name: tuple(a.shape) for name, a in inputs.items()}
    declared = {v.blob: v.shape for v in lowered.inputs}
    if shapes != declared:
        # An input of another size reshapes the net, as Caffe's Reshape does at run time; the
        # file was read and reported on already.
        with _blame_inputs(opts, shapes, declared):
            lowered = api.compile(
                net,
                input_shapes=shapes,
                passes=(),
                reporter=Reporter(),
                dialects=opts.dialects,
            )
    # The module's graph; --outputs leaves out what the chosen blobs do not need (before
    # --optimize, as convert does). The weights and the reference keep the whole net.
    selected = lowered
    if opts.outputs is not None:
        selected = run_pipeline(lowered, (select_outputs(opts.outputs),))
    graph = run_pipeline(selected, DEFAULT_PIPELINE)
    with tempfile.TemporaryDirectory(prefix="protocaffe-verify-") as work:
        weights = caffemodel
        if weights is None:
            from protocaffe.random_weights import write_random_weights

            weights = Path(work) / "random.caffemodel"
            write_random_weights(lowered, weights, seed=opts.seed)
        model = read_caffemodel(weights)
        session = _Session(net, graph, selected, model, opts, reporter)
        session.random_weights = caffemodel is None
        with _blame_inputs(opts, shapes, declared):
            rows, choice = session.run(prototxt, weights, inputs)
    report = VerifyReport(
        prototxt=str(prototxt),
        module=_module_label(opts),
        reference=choice.name,
        tolerance=opts.tolerance,
        inputs=shapes,
        rows=rows,
        choice=choice,
        provenance=_provenance(prototxt, caffemodel, opts, inputs),
    )
    return report


def _module_label(opts: VerifyOptions) -> str:
    if opts.module is not None:
        return str(opts.module)
    return "generated (--optimize)" if opts.optimize else "generated"


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
    blobFromImage option is given, else as cv2.dnn.blobFromImage prepares it (gray for a
    1-channel net)."""
    preprocess = module_preprocess(opts.module) if opts.module and image.plain else None
    if preprocess is None:
        return image_blob(image, declared)
    try:
        blob = preprocess(read_image(image.path))  # BGR, as cv2.imread gives it to a user
    except InputError:
        raise
    except Exception as exc:  # the module's code
        raise InputError(f"{image.path}: the module's preprocess() failed: {exc!r}") from exc
    return np.ascontiguousarray(np.asarray(blob), dtype=np.float32)


# --- choosing the reference ---------------------------------------------------------------


def _make_reference(
    name: str,
    net: NetDef,
    prototxt: str | os.PathLike[str],
    weights: str | os.PathLike[str],
    model: CaffeModel,
    random: bool,
    opts: VerifyOptions,
) -> Reference:
    if name == "caffe":
        from protocaffe.verify.pycaffe import CaffeReference

        caffe = CaffeReference(net, prototxt, weights, opts.level, tuple(opts.stages))
        if random:
            caffe.weights_label = "the seeded random weights verify drew"
        return caffe
    if name == "opencv":
        from protocaffe.verify.opencv import OpenCVReference

        return OpenCVReference(net, prototxt, weights)
    from protocaffe.verify.numpy_backend import NumpyReference

    return NumpyReference(net, model, opts.dialects)


_TITLES = {"caffe": "real Caffe", "opencv": "OpenCV", "numpy": "the numpy reference"}


def candidates(reference: str) -> tuple[list[str], list[str]]:
    """The references to try, in order, and those `auto` leaves out as not installed: the one
    asked for; or for `auto` real Caffe when pycaffe imports or the oracle is there, OpenCV
    4.x when it imports (with its Caffe importer), and the numpy reference last."""
    if reference != "auto":
        return [reference], []
    from protocaffe.verify.opencv import require_cv2
    from protocaffe.verify.pycaffe import available

    tried: list[str] = []
    absent: list[str] = []
    (tried if available() else absent).append("caffe")
    try:
        require_cv2()
        tried.append("opencv")
    except ReferenceUnavailable:
        absent.append("opencv")
    return [*tried, "numpy"], absent


def _why(name: str, reference: str, absent: Sequence[str], skipped: Sequence[str]) -> str:
    """Why `name` is the reference: the option, or the rule of `auto` that picked it."""
    if reference != "auto":
        return f"--reference {reference}"
    reasons = [f"{_TITLES[n]} is not installed" for n in absent] + [
        f"{_TITLES[n]} cannot run the net" for n in skipped
    ]
    rule = {
        "caffe": "real Caffe is installed",
        "opencv": "OpenCV imports and runs the net",
        "numpy": "the numpy reference runs the net",
    }[name]
    return "auto: " + "; ".join([*reasons, rule])


def _suggestion(name: str) -> str:
    if name == "numpy":
        return "; try --reference caffe or --reference opencv"
    return "; try --reference numpy"


# --- one session: the module, then each reference until one runs the net ------------------


class _Session:
    def __init__(
        self,
        net: NetDef,
        graph: Graph,
        lowered: Graph,
        model: CaffeModel,
        opts: VerifyOptions,
        reporter: Reporter,
    ) -> None:
        self.net = net
        self.graph = graph
        self.lowered = lowered
        self.model = model
        self.opts = opts
        self.reporter = reporter
        self._module: tuple[Instrumented, Any, str] | None = None
        self._local: Any = None
        self.random_weights = False

    def run(
        self,
        prototxt: str | os.PathLike[str],
        weights: str | os.PathLike[str],
        inputs: Mapping[str, np.ndarray],
    ) -> tuple[list[Any], ReferenceChoice]:
        skipped: list[tuple[str, str]] = []
        tried, absent = candidates(self.opts.reference)
        for name in tried:
            reference = _make_reference(
                name,
                self.net,
                prototxt,
                weights,
                self.model,
                self.random_weights,
                self.opts,
            )
            try:
                reference.prepare()
                steps = reference.run(inputs)
                rows = self._compare(reference, steps, inputs)
            except ReferenceUnavailable as exc:
                reference.close()
                if self.opts.reference != "auto":
                    raise VerifyError(exc.line(_suggestion(name)), True) from None
                skipped.append((name, exc.line()))
                last = exc
                continue
            reference.close()
            why = _why(name, self.opts.reference, absent, [n for n, _ in skipped])
            return rows, ReferenceChoice(name, reference.version(), why, tuple(skipped))
        others = [_TITLES[n] for n, _ in skipped[:-1]]
        tail = f" ({' and '.join(others)} cannot run it either)" if others else ""
        raise VerifyError(last.line(tail), True)

    def _compare(
        self, reference: Reference, steps: Iterator[RefStep], inputs: Mapping[str, np.ndarray]
    ) -> list[Any]:
        graph = self.graph
        comparison = Comparison(
            self.net,
            graph,
            plan_assignments(graph, [], {}),
            steps,
            self.opts.tolerance,
            progress=self.opts.progress,
        )
        # The reference starts first: one that runs the whole net at once (OpenCV, in its own
        # process) is done, and has given its memory back, before the module is built.
        comparison.graph_inputs = {v: inputs[v.blob] for v in graph.inputs}
        comparison.prime()
        compiled, model, filename = self._module_instance()
        by_local = {name: value for value, name in local_names(graph).items()}
        if self.opts.optimize:
            optimized = run_pipeline(self.lowered, OPTIMIZE_PIPELINE)
            by_local.update({name: value for value, name in local_names(optimized).items()})
        comparison.plan = plan_assignments(graph, compiled.assignments, by_local)
        comparison.lines = {a.index: a.line for a in compiled.assignments}
        comparison.reset_plan()
        comparison.local_check = self._local_check(reference)
        compiled.bind(comparison)
        _run_forward(model, graph, inputs, filename)
        return comparison.finish()

    def _local_check(self, reference: Reference) -> Callable[[int, Sequence[np.ndarray]], Any]:
        def check(position: int, bottoms: Sequence[np.ndarray]) -> Any:
            local: Any = reference if reference.name == "numpy" else self._numpy_reference()
            return local.layer_forward(position, bottoms)

        return check

    def _numpy_reference(self) -> Any:
        if self._local is None:
            from protocaffe.verify.numpy_backend import NumpyReference

            self._local = NumpyReference(self.net, self.model, self.opts.dialects)
            self._local.prepare()
        return self._local

    # --- the module ------------------------------------------------------------------------

    def _module_instance(self) -> tuple[Instrumented, Any, str]:
        if self._module is None:
            self._module = self._build_module()
        return self._module

    def _build_module(self) -> tuple[Instrumented, Any, str]:
        opts = self.opts
        module_graph = (
            run_pipeline(self.lowered, OPTIMIZE_PIPELINE) if opts.optimize else self.graph
        )
        conversion = api.convert_graph(module_graph, None, reporter=self.reporter)
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
            compiled = instrument(source, conversion.class_name, filename, release=True)
        except InstrumentError as exc:
            raise VerifyError(str(exc)) from exc
        if opts.weights is not None:
            state: Mapping[str, Any] = _read_state(opts.weights)
        else:
            arrays = state_arrays(module_graph, self.model, conversion.emitted.attrs, self.reporter)
            state = _tensors(arrays)
        model = _instantiate(compiled, state, filename)
        return compiled, model, filename


def _tensors(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """torch tensors sharing memory with the state arrays: float32 weights stay views of the
    caffemodel's read-only memory map, which the numpy reference reads too (the module only
    reads its parameters during forward())."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return {key: torch.from_numpy(np.asarray(value)) for key, value in arrays.items()}


def _read_state(weights: str | os.PathLike[str]) -> dict[str, Any]:
    import torch

    if str(weights).endswith(".safetensors"):
        from safetensors.torch import load_file

        loaded: dict[str, Any] = load_file(str(weights))
        return loaded
    state: dict[str, Any] = torch.load(str(weights), weights_only=True)
    return state


def _instantiate(compiled: Instrumented, state: Mapping[str, Any], filename: str) -> Any:
    """The module with `state` as its parameters. It is built on the meta device (no memory,
    no random initialisation) and given the state's tensors themselves; a module whose
    __init__ makes tensors the state does not hold is built normally and loaded by copy."""
    import torch

    try:
        with torch.device("meta"):
            model = compiled.cls()
        _load(model, state, assign=True)
        if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
            raise ValueError("tensors outside the state_dict")
    except VerifyError:
        raise
    except Exception:
        try:
            model = compiled.cls()
        except Exception as exc:  # the user's module failed to build
            raise VerifyError(f"{filename}: the module does not build: {exc!r}") from exc
        _load(model, state, assign=False)
    model.eval()
    return model


def _load(model: Any, state: Mapping[str, Any], assign: bool) -> None:
    try:
        model.load_state_dict(dict(state), strict=True, assign=assign)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise VerifyError(f"the weights do not fit the module: {' '.join(first[:2])}") from exc


def _run_forward(model: Any, graph: Graph, inputs: Mapping[str, np.ndarray], filename: str) -> None:
    import torch

    args = [torch.from_numpy(np.array(inputs[v.blob])) for v in graph.inputs]
    try:
        with torch.no_grad():
            model(*args)
    except ReferenceUnavailable:
        raise
    except Exception as exc:
        raise VerifyError(f"{filename}: forward() failed: {exc!r}") from exc


# --- what the report records to run it again -----------------------------------------------


def sha256_of(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _provenance(
    prototxt: str | os.PathLike[str],
    caffemodel: str | os.PathLike[str] | None,
    opts: VerifyOptions,
    inputs: Mapping[str, np.ndarray],
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "protocaffe_version": __version__,
        "prototxt_sha256": sha256_of(prototxt),
        "caffemodel": None if caffemodel is None else str(caffemodel),
        "caffemodel_sha256": None if caffemodel is None else sha256_of(caffemodel),
        "random_weights_seed": opts.seed if caffemodel is None else None,
        "optimize": opts.optimize,
        "dialects": list(opts.dialects),
        "net_state": {"phase": "TEST", "level": opts.level, "stages": list(opts.stages)},
        "module_path": None if opts.module is None else str(opts.module),
        "module_sha256": None if opts.module is None else sha256_of(opts.module),
        "module_weights": None if opts.weights is None else str(opts.weights),
        "module_weights_sha256": None if opts.weights is None else sha256_of(opts.weights),
    }
    described: dict[str, Any] = {}
    first = next(iter(inputs), None)
    for index, (name, array) in enumerate(inputs.items()):
        shape = list(array.shape)
        given = opts.inputs.get(name)
        if given is not None and not isinstance(given, np.ndarray):
            described[name] = {"npy": str(given), "sha256": sha256_of(given), "shape": shape}
        elif given is not None:
            described[name] = {"array": "given from Python", "shape": shape}
        elif opts.image is not None and name == first:
            image = opts.image
            described[name] = {
                "image": str(image.path),
                "sha256": sha256_of(image.path),
                "shape": shape,
                "preprocessing": {
                    "function": "cv2.dnn.blobFromImage",
                    "read": "gray" if shape[1:2] == [1] else "color (BGR)",
                    "scale": image.scale,
                    "size": list(image.size) if image.size else [shape[-1], shape[-2]],
                    "mean": list(image.mean),
                    "swap_rb": image.swap_rb,
                    "crop": image.crop,
                },
            }
        else:
            described[name] = {
                "random_seed": opts.seed + index,
                "distribution": "uniform [-1, 1), numpy default_rng",
                "shape": shape,
            }
    record["inputs"] = described
    return record
