"""Parameter and multiply-add counts per node, for `protocaffe inspect`.

Parameters are the elements of the layer's Caffe weight blobs (what the caffemodel stores, so a
BatchNorm counts its mean, variance and moving-average factor). Multiply-adds count one per
multiplication of the layer's main arithmetic, as each layer says (`Layer.multiply_adds`):
Convolution, Deconvolution and InnerProduct count their weights' products; BatchNorm, Scale and
LRN one per output element (LRN's window sum is left out); layers that only move, compare or add
values count zero. A folded node counts the layers it stands for.
"""

from __future__ import annotations

import math

from protocaffe.ir.graph import Node
from protocaffe.layers import layer_of


def parameter_count(node: Node) -> int:
    total = 0
    for original in node.fused or (node,):
        specs = layer_of(original).blobs(original.attrs, [v.shape for v in original.inputs])
        total += sum(math.prod(spec.shape) for spec in specs)
    return total


def multiply_adds(node: Node) -> int:
    return sum(
        layer_of(original).multiply_adds(
            original.attrs,
            [v.shape for v in original.inputs],
            [v.shape for v in original.outputs],
        )
        for original in node.fused or (node,)
    )
