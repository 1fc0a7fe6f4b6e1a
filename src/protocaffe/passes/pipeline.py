"""The pass pipeline: a tuple of Graph -> Graph functions, run in order, verified after each.

A pass is a plain function named for what it does; `run_pipeline` checks the graph's
invariants (ir/verify.py) after it and names it when they break, and `dump` sees the IR after
each step (`protocaffe inspect --dump-ir` prints it with ir/printer.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from protocaffe.ir.graph import Graph
from protocaffe.ir.verify import GraphInvariantError, verify_graph
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

LOWERING = "lowering"  # how errors name the step that made the graph given to the pipeline


def run_pipeline(
    graph: Graph,
    passes: Sequence[Pass] = DEFAULT_PIPELINE,
    dump: Callable[[str, Graph], None] | None = None,
) -> Graph:
    """Run `passes` in order; `dump(pass_name, graph)` sees the IR after each one. A graph
    that breaks an invariant raises GraphInvariantError naming the step that broke it (the
    lowering, for the graph given)."""
    _checked(LOWERING, graph)
    for one_pass in passes:
        graph = _checked(one_pass.__name__, one_pass(graph))
        if dump is not None:
            dump(one_pass.__name__, graph)
    return graph


def _checked(step: str, graph: Graph) -> Graph:
    try:
        verify_graph(graph)
    except GraphInvariantError as exc:
        raise GraphInvariantError(f"after {step}: {exc}") from None
    return graph
