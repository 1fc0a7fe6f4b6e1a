"""The pass pipeline: a tuple of Graph -> Graph functions, run in order, verified after each."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from protocaffe.ir.graph import Graph
from protocaffe.ir.verify import verify_graph
from protocaffe.passes.fold import fold_batchnorm_scale
from protocaffe.passes.identity import remove_identities
from protocaffe.passes.noop import remove_noops
from protocaffe.passes.unpool import link_unpool_sizes

Pass = Callable[[Graph], Graph]

DEFAULT_PIPELINE: tuple[Pass, ...] = (remove_identities, link_unpool_sizes)

# `--optimize`: the module structure changes (fewer layers), the numbers do not.
OPTIMIZE_PIPELINE: tuple[Pass, ...] = (
    *DEFAULT_PIPELINE,
    remove_noops,
    fold_batchnorm_scale,
)


def run_pipeline(
    graph: Graph,
    passes: Sequence[Pass] = DEFAULT_PIPELINE,
    dump: Callable[[str, Graph], None] | None = None,
) -> Graph:
    """Run `passes` in order; `dump(pass_name, graph)` sees the IR after each one."""
    verify_graph(graph)
    for one_pass in passes:
        graph = one_pass(graph)
        verify_graph(graph)
        if dump is not None:
            dump(one_pass.__name__, graph)
    return graph
