"""Let max-unpooling follow the input size (SegNet's Upsample).

A SegNet `Upsample` states its output size (upsample_h/upsample_w) for the declared input only.
When that size is the size of the tensor that the matching Pooling layer reduced (the producer
of its mask), the unpooled tensor must have that tensor's size at any resolution: this pass adds
that tensor as a third input, so the generated code reads the size from it at run time. The
layers say which is which (`Layer.unpools`, `Layer.records_argmax`).
"""

from __future__ import annotations

from dataclasses import replace

from protocaffe.ir.graph import Graph, Node
from protocaffe.layers import layer_of


def link_unpool_sizes(graph: Graph) -> Graph:
    producers = {value: node for node in graph.nodes for value in node.outputs}
    nodes: list[Node] = []
    for node in graph.nodes:
        if layer_of(node).unpools(node.attrs, [v.shape for v in node.inputs]):
            pool = producers.get(node.inputs[1])
            if pool is not None and layer_of(pool).records_argmax(pool.attrs):
                pooled_from = pool.inputs[0]
                if pooled_from.shape[2:] == node.outputs[0].shape[2:]:
                    node = replace(node, inputs=node.inputs + (pooled_from,))
        nodes.append(node)
    return replace(graph, nodes=tuple(nodes))
