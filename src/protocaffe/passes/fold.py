"""Fold per-channel affine layers (BatchNorm, Scale) into the linear layer that feeds them
(--optimize).

Matching follows dataflow, never the order of layers in the file: a node folds into the node
that produces its only input when the layers say so (`Layer.channel_affine` for the folded one,
`Layer.absorbs_affine` for the producer: Convolution, not Deconvolution, and InnerProduct over
axis 1) and when the producer's output has no other user and is not a net output. A folded layer
is a per-channel affine map on axis 1, y -> a * y + c, so the producer's weight becomes a * W
(per output channel) and its bias a * b + c.

The folded node keeps the producer's name, module and attribute; its `fused` field lists the
original nodes, whose Caffe weights make its state (`protocaffe.layers.registry.folded_state`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from protocaffe.ir.graph import Attrs, Graph, Node, Value
from protocaffe.layers import layer_of


def _channel_affine(node: Node) -> bool:
    """Whether `node` is a per-channel affine map on axis 1 that needs no runtime input."""
    if len(node.inputs) != 1 or len(node.outputs) != 1:
        return False
    shape = node.inputs[0].shape
    if len(shape) < 2:
        return False
    return layer_of(node).channel_affine(node.attrs, [shape])


def _absorbing(node: Node) -> Attrs | None:
    """The attributes `node` takes on when an affine map folds into it, or None."""
    if len(node.outputs) != 1:
        return None
    return layer_of(node).absorbs_affine(node.attrs, [v.shape for v in node.inputs])


def fold_batchnorm_scale(graph: Graph) -> Graph:
    """Fold every per-channel affine node whose input is the sole use of a linear node."""
    uses: Counter[Value] = Counter(v for node in graph.nodes for v in node.inputs)
    uses.update(graph.outputs)
    nodes: list[Node] = []
    position: dict[Value, int] = {}  # value -> index in `nodes` of the node that defines it
    for node in graph.nodes:
        index = position.get(node.inputs[0]) if node.inputs else None
        if _channel_affine(node) and index is not None and uses[node.inputs[0]] == 1:
            producer = nodes[index]
            attrs = _absorbing(producer)
            if attrs is not None:
                in_shapes = [v.shape for v in producer.inputs]
                nodes[index] = replace(
                    producer,
                    attrs=attrs,
                    params=layer_of(producer).param_names(attrs, in_shapes),
                    outputs=node.outputs,
                    fused=(producer.fused or (producer,)) + (node,),
                )
                position[node.outputs[0]] = index
                continue
        for value in node.outputs:
            position[value] = len(nodes)
        nodes.append(node)
    return replace(graph, nodes=tuple(nodes))
