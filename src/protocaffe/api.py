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
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocaffe.backend.emit import Emitted, emit_module
from protocaffe.backend.render import render_module
from protocaffe.errors import Diagnostic, Reporter
from protocaffe.frontend.lower import build_graph
from protocaffe.frontend.prototxt import NetDef, read_prototxt
from protocaffe.ir.graph import Graph
from protocaffe.passes import DEFAULT_PIPELINE, LOWERING, Pass, run_pipeline

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
    passes: Sequence[Pass] = DEFAULT_PIPELINE,
    reporter: Reporter | None = None,
    dump: Callable[[str, Graph], None] | None = None,
) -> Graph:
    """The graph IR of `prototxt` (a path, or a NetDef already read) after `passes`.

    `input_shapes` overrides declared input shapes; `dump(step, graph)` sees the IR after the
    lowering and after each pass. Raises `protocaffe.errors.ProtocaffeError` for bad input.
    """
    reporter = reporter if reporter is not None else Reporter()
    net = prototxt if isinstance(prototxt, NetDef) else read_prototxt(prototxt, reporter)
    shapes = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}
    graph = build_graph(net, reporter, shapes)
    if dump is not None:
        dump(LOWERING, graph)
    return run_pipeline(graph, passes, dump)


def convert(
    prototxt: str | os.PathLike[str],
    caffemodel: str | os.PathLike[str] | None = None,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    passes: Sequence[Pass] = DEFAULT_PIPELINE,
    reporter: Reporter | None = None,
    command: str | None = None,
    source_name: str | None = None,
) -> Conversion:
    """Compile `prototxt` (and map the weights of `caffemodel`, if given).

    `command`, when given, is the command line that the generated header says regenerates it;
    `source_name` how the header names the prototxt (default: its path, or its file name when
    the path is absolute). Raises `protocaffe.errors.ProtocaffeError` for bad input.
    """
    reporter = reporter if reporter is not None else Reporter()
    graph = compile(prototxt, input_shapes=input_shapes, passes=passes, reporter=reporter)
    return convert_graph(
        graph, caffemodel, reporter=reporter, command=command, source_name=source_name
    )


def convert_graph(
    graph: Graph,
    caffemodel: str | os.PathLike[str] | None = None,
    *,
    reporter: Reporter | None = None,
    command: str | None = None,
    source_name: str | None = None,
) -> Conversion:
    """`convert` from a graph that `compile` made: emit and render model.py, and map the
    weights of `caffemodel`, if given."""
    reporter = reporter if reporter is not None else Reporter()
    emitted = emit_module(graph, regenerate=command, source_name=source_name)
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
    passes: Sequence[Pass] = DEFAULT_PIPELINE,
    manifest: bool = True,
    reporter: Reporter | None = None,
    progress: ProgressCallback | None = None,
    command: str | None = None,
    source_name: str | None = None,
) -> Conversion:
    """`convert`, writing `output`/model.py and, with weights, `output`/model.<fmt> and the
    weight manifest (model.manifest.txt).

    Every check of the input (prototxt, caffemodel, blob shapes) is done before anything is
    written. The caffemodel is read, and its blobs hashed for the manifest, in other threads
    while this one compiles the prototxt (its errors still come first); the weights are then
    copied while this thread renders and formats model.py. The copy is mostly the kernel's (see
    backend/safetensors_writer.py) and blake3 lets go of the GIL, so on two cores they overlap.
    The files appear only once all are complete.
    """
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import nullcontext

    from protocaffe.atomic import atomic_write, write_text
    from protocaffe.backend.outputs import MANIFEST_NAME, BlobDigests, weight_manifest
    from protocaffe.backend.weights import write_state_to

    reporter = reporter if reporter is not None else Reporter()
    out = Path(output)
    if caffemodel is None:
        graph, emitted = _compile(prototxt, input_shapes, passes, reporter, command, source_name)
        source = render_module(emitted.parts)
        write_text(out / "model.py", source)
        return _conversion(source, graph, emitted, None, reporter)
    from protocaffe.backend.weights import state_arrays

    # Left in this order, the pool (reading) is waited for before the digests are stopped.
    with BlobDigests() as digests, ThreadPoolExecutor(1) as pool:
        reading = pool.submit(_read_and_hash, caffemodel, digests if manifest else None)
        graph, emitted = _compile(prototxt, input_shapes, passes, reporter, command, source_name)
        arrays = state_arrays(graph, reading.result(), emitted.attrs, reporter)
        suffix = "safetensors" if fmt == "safetensors" else "pt"
        # Nested: all three files are complete before any replaces the previous one, so a run
        # killed part way leaves the previous set, which still belong together.
        with (
            atomic_write(out / "model.py") as model_tmp,
            atomic_write(out / MANIFEST_NAME) if manifest else nullcontext(None) as manifest_tmp,
            atomic_write(out / f"model.{suffix}") as tmp,
        ):
            copying = pool.submit(write_state_to, tmp, arrays, fmt, progress)
            try:
                source = render_module(emitted.parts)
            finally:
                copying.result()  # waits, and raises what the copy raised
            model_tmp.write_text(source, encoding="utf-8")
            if manifest_tmp is not None:
                listing = weight_manifest(arrays, digests)
                manifest_tmp.write_text(listing, encoding="utf-8")
    if not manifest:
        # A manifest left from an earlier run would describe other weights.
        (out / MANIFEST_NAME).unlink(missing_ok=True)
    return _conversion(source, graph, emitted, arrays, reporter)


def _compile(
    prototxt: str | os.PathLike[str],
    input_shapes: Mapping[str, Sequence[int]] | None,
    passes: Sequence[Pass],
    reporter: Reporter,
    command: str | None = None,
    source_name: str | None = None,
) -> tuple[Graph, Emitted]:
    graph = compile(prototxt, input_shapes=input_shapes, passes=passes, reporter=reporter)
    return graph, emit_module(graph, regenerate=command, source_name=source_name)


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
) -> Conversion:
    return Conversion(
        source=source,
        class_name=emitted.parts.class_name,
        graph=graph,
        emitted=emitted,
        arrays=arrays,
        diagnostics=list(reporter.diagnostics),
    )


def module_from_source(source: str, class_name: str, module_name: str = "protocaffe_model") -> Any:
    """Execute generated source in a fresh module and return an instance of its class."""
    module = types.ModuleType(module_name)
    # Register the source with linecache so that `inspect.getsource` (which torch.jit.script
    # needs) finds it although no file exists.
    filename = f"<protocaffe:{module_name}:{hashlib.sha256(source.encode()).hexdigest()[:16]}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    module.__file__ = filename
    exec(builtins.compile(source, filename, "exec"), module.__dict__)
    return getattr(module, class_name)()


def load(
    prototxt: str | os.PathLike[str],
    caffemodel: str | os.PathLike[str] | None = None,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> torch.nn.Module:
    """A ready module in eval mode (with the caffemodel's weights, if given)."""
    conversion = convert(prototxt, caffemodel, input_shapes=input_shapes)
    model: torch.nn.Module = module_from_source(conversion.source, conversion.class_name)
    state = conversion.state_dict
    if state is not None:
        model.load_state_dict(state, strict=True)
    return model.eval()
