"""Fold BatchNorm and Scale into the Convolution or InnerProduct that feeds them (--optimize).

Matching follows dataflow, never the order of layers in the file: a BatchNorm or Scale folds
into the node that produces its only input when that node is a Convolution (not a
Deconvolution) or an InnerProduct over axis 1, and when the producer's output has no other user
and is not a net output. Both folded layers are per-channel affine maps on axis 1,
y -> a * y + c, so the producer's weight becomes a * W (per output channel) and its bias
a * b + c.

The folded node keeps the producer's name, module and attribute; its `fused` field lists the
original nodes, and `folded_state` turns their Caffe weights into its state_dict.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from protocaffe.ir.graph import Graph, Node, Value
from protocaffe.layers.conv import ConvAttrs
from protocaffe.layers.linear import BroadcastAttrs, InnerProductAttrs, _operand_shape
from protocaffe.layers.normalization import BatchNormAttrs

if TYPE_CHECKING:  # numpy only where weights are folded (see folded_state)
    import numpy as np


def _channels_affine(node: Node) -> bool:
    """Whether `node` is a per-channel affine map on axis 1 that needs no runtime input."""
    if len(node.inputs) != 1 or len(node.outputs) != 1:
        return False
    shape = node.inputs[0].shape
    if len(shape) < 2:
        return False
    if isinstance(node.attrs, BatchNormAttrs) and node.op == "BatchNorm":
        return node.attrs.use_global_stats
    if isinstance(node.attrs, BroadcastAttrs) and node.op == "Scale":
        axis = node.attrs.axis % len(shape)
        return axis == 1 and _operand_shape(node.attrs, [shape]) == (shape[1],)
    return False


def _linear_producer(node: Node) -> bool:
    """Whether `node` computes output channel c from weight row c only (weight axis 0)."""
    if len(node.outputs) != 1:
        return False
    if isinstance(node.attrs, ConvAttrs) and node.op == "Convolution":
        return not node.attrs.transposed
    if isinstance(node.attrs, InnerProductAttrs) and node.op == "InnerProduct":
        return node.attrs.axis % len(node.inputs[0].shape) == 1
    return False


def _with_bias(node: Node) -> Node:
    attrs = node.attrs
    assert isinstance(attrs, (ConvAttrs, InnerProductAttrs))
    return replace(node, attrs=replace(attrs, bias=True), params=("weight", "bias"))


def fold_batchnorm_scale(graph: Graph) -> Graph:
    """Fold every BatchNorm/Scale whose input is the sole use of a Convolution/InnerProduct."""
    uses: Counter[Value] = Counter(v for node in graph.nodes for v in node.inputs)
    uses.update(graph.outputs)
    nodes: list[Node] = []
    position: dict[Value, int] = {}  # value -> index in `nodes` of the node that defines it
    for node in graph.nodes:
        index = position.get(node.inputs[0]) if node.inputs else None
        if _channels_affine(node) and index is not None and uses[node.inputs[0]] == 1:
            producer = nodes[index]
            if _linear_producer(producer):
                fused = replace(
                    _with_bias(producer),
                    outputs=node.outputs,
                    fused=(producer.fused or (producer,)) + (node,),
                )
                nodes[index] = fused
                position[node.outputs[0]] = index
                continue
        for value in node.outputs:
            position[value] = len(nodes)
        nodes.append(node)
    return replace(graph, nodes=tuple(nodes))


def _affine(node: Node, state: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(a, c) of the per-channel map y -> a * y + c that a folded node computes, in float64."""
    import numpy as np

    if isinstance(node.attrs, BatchNormAttrs):
        mean = state["running_mean"].astype(np.float64)
        # Caffe and torch add eps to the float32 variance; do the same before widening.
        variance = (state["running_var"] + np.float32(node.attrs.eps)).astype(np.float64)
        scale = 1.0 / np.sqrt(variance)
        return scale, -mean * scale
    weight = state["weight"].astype(np.float64).reshape(-1)
    bias = state.get("bias")
    shift = np.zeros_like(weight) if bias is None else bias.astype(np.float64).reshape(-1)
    return weight, shift


def folded_state(node: Node, states: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The state_dict of a folded node from the states of its original nodes (`node.fused`)."""
    import numpy as np

    assert len(states) == len(node.fused) >= 2
    weight = states[0]["weight"].astype(np.float64)
    channels = weight.shape[0]
    base_bias = states[0].get("bias")
    bias = np.zeros(channels) if base_bias is None else base_bias.astype(np.float64)
    scale, shift = np.ones(channels), np.zeros(channels)
    for original, state in zip(node.fused[1:], states[1:], strict=True):
        a, c = _affine(original, state)
        scale, shift = a * scale, a * shift + c
    per_row = scale.reshape((channels,) + (1,) * (weight.ndim - 1))
    return {
        "weight": (weight * per_row).astype(np.float32),
        "bias": (bias * scale + shift).astype(np.float32),
    }
