"""Let SegNet's max-unpooling follow the input size.

A SegNet `Upsample` states its output size (upsample_h/upsample_w) for the declared input only.
When that size is the size of the tensor that the matching Pooling layer reduced (the producer
of its mask), the unpooled tensor must have that tensor's size at any resolution: this pass adds
that tensor as a third input, so the generated code reads the size from it at run time.
"""

from __future__ import annotations

from dataclasses import replace

from protocaffe.ir.graph import Graph, Node
from protocaffe.layers.segmentation import UpsampleAttrs


def link_unpool_sizes(graph: Graph) -> Graph:
    producers = {value: node for node in graph.nodes for value in node.outputs}
    nodes: list[Node] = []
    for node in graph.nodes:
        if node.op == "Upsample" and len(node.inputs) == 2:
            assert isinstance(node.attrs, UpsampleAttrs)
            pool = producers.get(node.inputs[1])
            if pool is not None and pool.op == "Pooling" and len(pool.outputs) == 2:
                pooled_from = pool.inputs[0]
                if pooled_from.shape[2:] == node.outputs[0].shape[2:]:
                    node = replace(node, inputs=node.inputs + (pooled_from,))
        nodes.append(node)
    return replace(graph, nodes=tuple(nodes))
