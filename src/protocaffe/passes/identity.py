"""Remove layers that compute nothing at test time: Dropout, Split and Silence."""

from __future__ import annotations

from dataclasses import replace

from protocaffe.ir.graph import Graph, Node, Value
from protocaffe.layers import lookup


def remove_identities(graph: Graph) -> Graph:
    """Drop identity layers; their outputs become aliases of their input."""
    substitute: dict[Value, Value] = {}
    aliases = list(graph.aliases)
    nodes: list[Node] = []
    for node in graph.nodes:
        inputs = tuple(substitute.get(v, v) for v in node.inputs)
        kind = lookup(node.op)
        if kind is not None and kind.identity:
            for out in node.outputs:
                substitute[out] = inputs[0]
                aliases.append((out, inputs[0]))
            continue
        nodes.append(replace(node, inputs=inputs) if inputs != node.inputs else node)
    outputs = tuple(substitute.get(v, v) for v in graph.outputs)
    return replace(graph, nodes=tuple(nodes), outputs=outputs, aliases=tuple(aliases))
