"""Invariants of a well-formed graph, checked after every pass."""

from __future__ import annotations

from protocaffe.ir.graph import Graph, Value


class GraphInvariantError(AssertionError):
    """A pass broke the IR: this is a bug in protocaffe, not in the input."""


def verify_graph(graph: Graph) -> None:
    defined: set[Value] = set(graph.inputs)
    if len(defined) != len(graph.inputs):
        raise GraphInvariantError("an input is listed twice")
    for node in graph.nodes:
        for value in node.inputs:
            if value not in defined:
                raise GraphInvariantError(f"{node.name}: input {value} used before definition")
        for value in node.outputs:
            if value in defined:
                raise GraphInvariantError(f"{node.name}: {value} defined twice")
            if any(d <= 0 for d in value.shape):
                raise GraphInvariantError(f"{node.name}: {value} has shape {value.shape}")
            defined.add(value)
    for value in graph.outputs:
        if value not in defined:
            raise GraphInvariantError(f"output {value} is never defined")
    if graph.output_names and len(graph.output_names) != len(graph.outputs):
        raise GraphInvariantError(
            f"{len(graph.output_names)} output names for {len(graph.outputs)} outputs"
        )
