"""The Python API: `compile` returns the graph IR, `convert` the generated source and weights,
`load` a ready module.

The pipeline, in order: read the prototxt (frontend) -> lower to the graph IR -> run the passes
(`compile` ends here; views and verify start from its graph) -> emit and render model.py
(backend) -> map caffemodel blobs to the state_dict.
"""

from __future__ import annotations

import builtins
import hashlib
import linecache
import os
import sys
import types
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocaffe.backend.emit import Emitted, emit_module
from protocaffe.backend.preprocess import ImageOptions, Preprocess, resolve_preprocess
from protocaffe.backend.render import render_module
from protocaffe.errors import Diagnostic, Reporter
from protocaffe.frontend.lower import build_graph
from protocaffe.frontend.prototxt import NetDef, read_prototxt
from protocaffe.ir.graph import Graph
from protocaffe.passes import DEFAULT_PIPELINE, LOWERING, OPTIMIZE_PIPELINE, Pass, run_pipeline
from protocaffe.passes.outputs import select_outputs

__all__ = [
    "Conversion",
    "ImageOptions",
    "compile",
    "convert",
    "convert_graph",
    "generated_module",
    "load",
    "module_from_source",
    "restore_generated",
    "write_conversion",
]

if TYPE_CHECKING:  # numpy and torch only when weights are asked for: model.py alone needs neither
    import numpy as np
    import torch

    from protocaffe.backend.outputs import BlobDigests
    from protocaffe.backend.safetensors_writer import ProgressCallback
    from protocaffe.frontend.caffemodel import CaffeModel


@dataclass(frozen=True)
class Conversion:
    """The result of one conversion."""

    source: str  # model.py
    class_name: str
    graph: Graph  # the IR after the passes
    emitted: Emitted
    # The state_dict as numpy arrays, made one layer at a time on access (float32 weights are
    # read-only views of the caffemodel's memory map); None without weights.
    arrays: Mapping[str, np.ndarray] | None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    # What write_conversion wrote and removed (file names in the output folder), and the size
    # of the weights file it wrote.
    written: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    weight_bytes: int = 0

    @property
    def state_dict(self) -> dict[str, torch.Tensor] | None:
        if self.arrays is None:
            return None
        import numpy as np
        import torch

        return {k: torch.from_numpy(np.array(v)) for k, v in self.arrays.items()}


def compile(  # shadows the builtin in this module, which calls it as builtins.compile
    prototxt: str | os.PathLike[str] | NetDef,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    outputs: Sequence[str] | None = None,
    phase: str = "TEST",
    level: int = 0,
    stages: Sequence[str] = (),
    passes: Sequence[Pass] = DEFAULT_PIPELINE,
    reporter: Reporter | None = None,
    dump: Callable[[str, Graph], None] | None = None,
    dialects: Collection[str] = (),
) -> Graph:
    """The graph IR of `prototxt` (a path, or a NetDef already read) after `passes`.

    `input_shapes` overrides declared input shapes; `outputs` names the blobs the module returns
    instead of Caffe's outputs (and leaves out what they do not need: passes/outputs.py);
    `phase` ("TEST" or "TRAIN"), `level` and `stages` are the net state whose layers a path's
    include/exclude rules select, as in `caffe.Net(path, phase, level=level, stages=stages)`;
    `dump(step, graph)` sees the IR after the lowering and after each pass; `dialects` names
    the fork dialects to read the net in (`protocaffe.frontend.dialects.DIALECTS`).
    Raises `protocaffe.errors.ProtocaffeError` for bad input.
    """
    reporter = reporter if reporter is not None else Reporter()
    if isinstance(prototxt, NetDef):
        net = prototxt
    else:
        net = read_prototxt(prototxt, reporter, phase, level=level, stages=stages)
    shapes = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}
    graph = build_graph(net, reporter, shapes, dialects)
    if dump is not None:
        dump(LOWERING, graph)
    if outputs is not None:
        passes = (select_outputs(outputs), *passes)
    return run_pipeline(graph, passes, dump)


def convert(
    prototxt: str | os.PathLike[str],
    caffemodel: str | os.PathLike[str] | None = None,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    outputs: Sequence[str] | None = None,
    phase: str = "TEST",
    level: int = 0,
    stages: Sequence[str] = (),
    optimize: bool = False,
    class_name: str | None = None,
    preprocess: ImageOptions | None = None,
    passes: Sequence[Pass] | None = None,
    reporter: Reporter | None = None,
    command: str | None = None,
    source_name: str | None = None,
    dialects: Collection[str] = (),
) -> Conversion:
    """Compile `prototxt` into model.py's source, and map the weights of `caffemodel` (if
    given) to its state_dict.

    `input_shapes` overrides declared input shapes ({"data": (1, 3, 224, 224)}); `outputs`
    names the blobs the module returns (["fc8"]: the logits, not `prob`) and leaves out what
    they do not need; `phase` ("TEST" or "TRAIN"), `level` and `stages` the net state whose
    layers the include/exclude rules keep (as in pycaffe's `caffe.Net`); `optimize`
    folds BatchNorm and Scale into the layer before them and drops pass-through layers (the
    numbers do not change), or `passes` gives the pipeline itself; `class_name` names the
    module's class (default: the net's name made an identifier); `preprocess` adds a
    module-level `preprocess(image)` (it also follows a train_val data layer's
    transform_param). `command` is the command line the header says regenerates the file, and
    `source_name` how it names the prototxt (default: its path, or its file name when the path
    is absolute).

    Returns a `Conversion` (`.source`, `.class_name`, `.state_dict`, `.graph`). Raises
    `protocaffe.errors.ProtocaffeError`, whose lines say file:line and layer, for bad input.
    """
    reporter = reporter if reporter is not None else Reporter()
    selection = _Selection(
        input_shapes, outputs, phase, _pipeline(optimize, passes), dialects, level, tuple(stages)
    )
    graph, emitted = _compile(
        prototxt, selection, reporter, command, source_name, class_name, preprocess
    )
    source = render_module(emitted.parts)
    arrays = _weights(graph, emitted, caffemodel, reporter) if caffemodel is not None else None
    return _conversion(source, graph, emitted, arrays, reporter)


def _pipeline(optimize: bool, passes: Sequence[Pass] | None) -> Sequence[Pass]:
    if passes is not None:
        if optimize:
            raise TypeError("give optimize=True or passes, not both")
        return passes
    return OPTIMIZE_PIPELINE if optimize else DEFAULT_PIPELINE


def convert_graph(
    graph: Graph,
    caffemodel: str | os.PathLike[str] | None = None,
    *,
    reporter: Reporter | None = None,
    command: str | None = None,
    source_name: str | None = None,
    class_name: str | None = None,
    preprocess: Preprocess | None = None,
) -> Conversion:
    """`convert` from a graph that `compile` made: emit and render model.py, and map the
    weights of `caffemodel`, if given."""
    reporter = reporter if reporter is not None else Reporter()
    emitted = emit_module(
        graph,
        regenerate=command,
        source_name=source_name,
        class_name=class_name,
        preprocess=preprocess,
    )
    source = render_module(emitted.parts)
    arrays = _weights(graph, emitted, caffemodel, reporter) if caffemodel is not None else None
    return _conversion(source, graph, emitted, arrays, reporter)


def write_conversion(
    prototxt: str | os.PathLike[str],
    caffemodel: str | os.PathLike[str] | None,
    output: str | os.PathLike[str],
    *,
    fmt: str = "safetensors",
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    outputs: Sequence[str] | None = None,
    phase: str = "TEST",
    level: int = 0,
    stages: Sequence[str] = (),
    optimize: bool = False,
    class_name: str | None = None,
    preprocess: ImageOptions | None = None,
    passes: Sequence[Pass] | None = None,
    manifest: bool = True,
    force: bool = False,
    reporter: Reporter | None = None,
    progress: ProgressCallback | None = None,
    command: str | None = None,
    source_name: str | None = None,
    dialects: Collection[str] = (),
) -> Conversion:
    """`convert`, writing `output`/model.py and, with weights, `output`/model.<fmt> and the
    weight manifest (model.manifest.txt).

    A model.py that protocaffe did not write is not replaced unless `force`; the files of an
    earlier conversion that this one does not write (weights in the other format, a manifest,
    weights when converting without) are removed once the new ones are in place.

    Every check of the input (prototxt, caffemodel, blob shapes) is done before anything is
    written. The caffemodel is read, and its blobs hashed for the manifest, in other threads
    while this one compiles the prototxt (its errors still come first); the weights are then
    copied while this thread renders and formats model.py. The copy is mostly the kernel's (see
    backend/safetensors_writer.py) and blake3 lets go of the GIL, so on two cores they overlap.
    The files appear only once all are complete.
    """
    from concurrent.futures import ThreadPoolExecutor

    from protocaffe.atomic import atomic_files
    from protocaffe.backend.outputs import (
        MANIFEST_NAME,
        MODULE_NAME,
        WEIGHT_NAMES,
        BlobDigests,
        check_replaceable,
        earlier_outputs,
        weight_manifest,
    )
    from protocaffe.backend.weights import write_state_to

    reporter = reporter if reporter is not None else Reporter()
    out = Path(output)
    if not force:
        check_replaceable(out)
    selection = _Selection(
        input_shapes, outputs, phase, _pipeline(optimize, passes), dialects, level, tuple(stages)
    )
    options = (command, source_name, class_name, preprocess)
    if caffemodel is None:
        graph, emitted = _compile(prototxt, selection, reporter, *options)
        source = render_module(emitted.parts)
        leftovers = earlier_outputs(out, [MODULE_NAME])
        with atomic_files([out / MODULE_NAME], remove=leftovers) as (model_tmp,):
            model_tmp.write_text(source, encoding="utf-8")
        return _conversion(source, graph, emitted, None, reporter, [MODULE_NAME], leftovers)
    from protocaffe.backend.weights import state_arrays

    weights_name = WEIGHT_NAMES[fmt]
    names = [MODULE_NAME, *([MANIFEST_NAME] if manifest else []), weights_name]
    # Left in this order, the pool (reading) is waited for before the digests are stopped.
    with BlobDigests() as digests, ThreadPoolExecutor(1) as pool:
        reading = pool.submit(_read_and_hash, caffemodel, digests if manifest else None)
        graph, emitted = _compile(prototxt, selection, reporter, *options)
        arrays = state_arrays(graph, reading.result(), emitted.attrs, reporter)
        leftovers = earlier_outputs(out, names)
        # All files are complete before any replaces the previous one (model.py last), so a
        # run killed part way leaves the previous set, which still belong together.
        with atomic_files([out / name for name in names], remove=leftovers) as tmps:
            model_tmp, weights_tmp = tmps[0], tmps[-1]
            copying = pool.submit(write_state_to, weights_tmp, arrays, fmt, progress)
            try:
                source = render_module(emitted.parts)
            finally:
                copying.result()  # waits, and raises what the copy raised
            model_tmp.write_text(source, encoding="utf-8")
            if manifest:
                tmps[1].write_text(weight_manifest(arrays, digests), encoding="utf-8")
    conversion = _conversion(source, graph, emitted, arrays, reporter, names, leftovers)
    return replace(conversion, weight_bytes=(out / weights_name).stat().st_size)


@dataclass(frozen=True)
class _Selection:
    """What `compile` takes besides the prototxt: which layers, shapes, outputs and dialects."""

    input_shapes: Mapping[str, Sequence[int]] | None
    outputs: Sequence[str] | None
    phase: str
    passes: Sequence[Pass]
    dialects: Collection[str] = ()
    level: int = 0
    stages: tuple[str, ...] = ()


def _compile(
    prototxt: str | os.PathLike[str],
    selection: _Selection,
    reporter: Reporter,
    command: str | None = None,
    source_name: str | None = None,
    class_name: str | None = None,
    preprocess: ImageOptions | None = None,
) -> tuple[Graph, Emitted]:
    net = read_prototxt(
        prototxt, reporter, selection.phase, level=selection.level, stages=selection.stages
    )
    graph = compile(
        net,
        input_shapes=selection.input_shapes,
        outputs=selection.outputs,
        passes=selection.passes,
        reporter=reporter,
        dialects=selection.dialects,
    )
    spec = resolve_preprocess(net, graph, preprocess, reporter)
    emitted = emit_module(
        graph,
        regenerate=command,
        source_name=source_name,
        class_name=class_name,
        preprocess=spec,
    )
    return graph, emitted


def _read_and_hash(caffemodel: str | os.PathLike[str], digests: BlobDigests | None) -> CaffeModel:
    from protocaffe.frontend.caffemodel import read_caffemodel

    model = read_caffemodel(caffemodel)
    if digests is not None:
        digests.start(model)
    return model


def _weights(
    graph: Graph, emitted: Emitted, caffemodel: str | os.PathLike[str], reporter: Reporter
) -> Mapping[str, np.ndarray]:
    from protocaffe.backend.weights import state_arrays
    from protocaffe.frontend.caffemodel import read_caffemodel

    return state_arrays(graph, read_caffemodel(caffemodel), emitted.attrs, reporter)


def _conversion(
    source: str,
    graph: Graph,
    emitted: Emitted,
    arrays: Mapping[str, np.ndarray] | None,
    reporter: Reporter,
    written: Sequence[str] = (),
    removed: Sequence[Path] = (),
) -> Conversion:
    return Conversion(
        source=source,
        class_name=emitted.parts.class_name,
        graph=graph,
        emitted=emitted,
        arrays=arrays,
        diagnostics=list(reporter.diagnostics),
        written=tuple(written),
        removed=tuple(path.name for path in removed),
    )


# Generated modules are registered in sys.modules under this prefix and their source's digest.
GENERATED_PREFIX = "protocaffe_generated_"


def generated_module(source: str, module_name: str | None = None) -> types.ModuleType:
    """The module that executing generated `source` makes.

    Without `module_name` it is registered in sys.modules as protocaffe_generated_<digest of
    the source> (the same name in every process, and executed once per process), and its
    classes pickle: an instance reduces to `restore_generated(source, class name)` and its
    state, so `torch.save(model)` loads back (`torch.load(..., weights_only=False)`) in a
    process that has protocaffe, even one that never generated the module.
    """
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    name = module_name if module_name is not None else GENERATED_PREFIX + digest
    if module_name is None and name in sys.modules:
        return sys.modules[name]
    module = types.ModuleType(name)
    # Register the source with linecache so that `inspect.getsource` (which torch.jit.script
    # needs) finds it although no file exists.
    filename = f"<protocaffe:{name}:{digest}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    module.__file__ = filename
    exec(builtins.compile(source, filename, "exec"), module.__dict__)
    if module_name is None:
        module.__dict__[_SOURCE] = source
        for value in list(module.__dict__.values()):
            if isinstance(value, type) and value.__module__ == name:
                value.__reduce_ex__ = _reduce_generated  # type: ignore[assignment, method-assign]
        sys.modules[name] = module
    return module


_SOURCE = "__protocaffe_source__"


def _reduce_generated(self: object, protocol: object) -> tuple[Any, ...]:
    cls = type(self)
    source = sys.modules[cls.__module__].__dict__[_SOURCE]
    return (restore_generated, (source, cls.__qualname__), self.__dict__.copy())


def restore_generated(source: str, class_name: str) -> Any:
    """An empty instance of class `class_name` of generated `source`, for unpickling (its state
    is set next). Pickles of generated modules name this function: keep it."""
    cls = getattr(generated_module(source), class_name)
    return cls.__new__(cls)


def module_from_source(source: str, class_name: str, module_name: str | None = None) -> Any:
    """An instance of class `class_name` of generated `source` (see `generated_module`)."""
    return getattr(generated_module(source, module_name), class_name)()


def require_torch(what: str) -> None:
    """Raise ModuleNotFoundError, saying how to install it, when torch is not installed."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise ModuleNotFoundError(
            f"{what} needs PyTorch, which is not installed: pip install 'protocaffe[torch]'",
            name="torch",
        )


def load(
    prototxt: str | os.PathLike[str],
    caffemodel: str | os.PathLike[str] | None = None,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    outputs: Sequence[str] | None = None,
    phase: str = "TEST",
    level: int = 0,
    stages: Sequence[str] = (),
    optimize: bool = False,
    class_name: str | None = None,
    dialects: Collection[str] = (),
) -> torch.nn.Module:
    """A ready module in eval mode, with the caffemodel's weights if given (else those its
    layers initialise themselves with).

    The arguments are `convert`'s. The module's class lives in a module of its own, registered
    in sys.modules, so `torch.save(model)` and `copy.deepcopy(model)` work. Needs torch.
    """
    require_torch("protocaffe.load")
    conversion = convert(
        prototxt,
        caffemodel,
        input_shapes=input_shapes,
        outputs=outputs,
        phase=phase,
        level=level,
        stages=stages,
        optimize=optimize,
        class_name=class_name,
        dialects=dialects,
    )
    model: torch.nn.Module = module_from_source(conversion.source, conversion.class_name)
    state = conversion.state_dict
    if state is not None:
        model.load_state_dict(state, strict=True)
    return model.eval()
