"""Remove layers that pass one input through unchanged in this net (--optimize).

Unlike Dropout or Split, these are only identities for some parameters (`Layer.passes_through`):
a Concat of one bottom, a Slice with one top, Power with power 1, scale 1 and shift 0.
"""

from __future__ import annotations

from protocaffe.ir.graph import Graph, Node
from protocaffe.layers import layer_of
from protocaffe.passes.identity import drop_pass_through


def _passes_through(node: Node) -> bool:
    if len(node.inputs) != 1 or len(node.outputs) != 1:
        return False
    if node.inputs[0].shape != node.outputs[0].shape:
        return False
    in_shapes = [v.shape for v in node.inputs]
    out_shapes = [v.shape for v in node.outputs]
    return layer_of(node).passes_through(node.attrs, in_shapes, out_shapes)


def remove_noops(graph: Graph) -> Graph:
    """Drop pass-through layers; their outputs become aliases of their input."""
    return drop_pass_through(graph, _passes_through)
