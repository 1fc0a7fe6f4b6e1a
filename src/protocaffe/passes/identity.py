"""Remove layers that compute nothing at test time: Dropout, Split and Silence."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from protocaffe.ir.graph import Graph, Node, Value
from protocaffe.layers import layer_of


def drop_pass_through(graph: Graph, passes_through: Callable[[Node], bool]) -> Graph:
    """Drop the nodes `passes_through` selects; their outputs become aliases of their first
    input (kept in Graph.aliases, so tools still find every Caffe blob)."""
    substitute: dict[Value, Value] = {}
    aliases = list(graph.aliases)
    nodes: list[Node] = []
    for node in graph.nodes:
        inputs = tuple(substitute.get(v, v) for v in node.inputs)
        if passes_through(node):
            for out in node.outputs:
                substitute[out] = inputs[0]
                aliases.append((out, inputs[0]))
            continue
        nodes.append(replace(node, inputs=inputs) if inputs != node.inputs else node)
    outputs = tuple(substitute.get(v, v) for v in graph.outputs)
    return replace(graph, nodes=tuple(nodes), outputs=outputs, aliases=tuple(aliases))


def remove_identities(graph: Graph) -> Graph:
    """Drop identity layers (`Layer.identity`); their outputs become aliases of their input."""
    return drop_pass_through(graph, lambda node: layer_of(node).identity)
