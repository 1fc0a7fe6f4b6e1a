"""The Python API: `convert` returns the generated source and weights; `load` returns a module.

The pipeline, in order: read the prototxt (frontend) -> lower to the graph IR -> run the passes
-> emit and render model.py (backend) -> map caffemodel blobs to the state_dict.
"""

from __future__ import annotations

import os
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from protocaffe.backend.emit import Emitted, emit_module
from protocaffe.backend.render import render_module
from protocaffe.backend.weights import state_arrays
from protocaffe.errors import Diagnostic, Reporter
from protocaffe.frontend.caffemodel import read_caffemodel
from protocaffe.frontend.prototxt import read_prototxt
from protocaffe.ir.build import build_graph
from protocaffe.ir.graph import Graph
from protocaffe.passes import DEFAULT_PIPELINE, Pass, run_pipeline

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Conversion:
    """The result of one conversion."""

    source: str  # model.py
    class_name: str
    graph: Graph  # the IR after the passes
    emitted: Emitted
    arrays: dict[str, np.ndarray] | None  # the state_dict as numpy arrays; None without weights
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def state_dict(self) -> dict[str, torch.Tensor] | None:
        if self.arrays is None:
            return None
        import torch

        return {k: torch.from_numpy(np.array(v)) for k, v in self.arrays.items()}


def convert(
    prototxt: str | os.PathLike[str],
    caffemodel: str | os.PathLike[str] | None = None,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    passes: Sequence[Pass] = DEFAULT_PIPELINE,
    reporter: Reporter | None = None,
) -> Conversion:
    """Compile `prototxt` (and map the weights of `caffemodel`, if given).

    Raises `protocaffe.errors.ProtocaffeError` for bad input.
    """
    reporter = reporter if reporter is not None else Reporter()
    net = read_prototxt(prototxt, reporter)
    shapes = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}
    graph = run_pipeline(build_graph(net, reporter, shapes), passes)
    emitted = emit_module(graph)
    source = render_module(emitted.parts)
    arrays = None
    if caffemodel is not None:
        model = read_caffemodel(caffemodel)
        arrays = state_arrays(graph, model, emitted.attrs, reporter)
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
    exec(compile(source, f"<{module_name}>", "exec"), module.__dict__)
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
