"""Parameter and multiply-add counts per node, for `protocaffe inspect`.

Parameters are the elements of the layer's Caffe weight blobs (what the caffemodel stores, so a
BatchNorm counts its mean, variance and moving-average factor). Multiply-adds count one per
multiplication of the layer's main arithmetic: Convolution, Deconvolution and InnerProduct
count their weights' products; BatchNorm, Scale and LRN one per output element (LRN's window
sum is left out); layers that only move, compare or add values count zero.
"""

from __future__ import annotations

import math

from protocaffe.ir.graph import Node
from protocaffe.layers import lookup
from protocaffe.layers.conv import ConvAttrs
from protocaffe.layers.linear import InnerProductAttrs


def parameter_count(node: Node) -> int:
    originals = node.fused or (node,)
    total = 0
    for original in originals:
        kind = lookup(original.op)
        assert kind is not None
        specs = kind.blobs(original.attrs, [v.shape for v in original.inputs])
        total += sum(math.prod(spec.shape) for spec in specs)
    return total


def multiply_adds(node: Node) -> int:
    originals = node.fused or (node,)
    return sum(_own_multiply_adds(original) for original in originals)


def _own_multiply_adds(node: Node) -> int:
    attrs = node.attrs
    out_elements = sum(math.prod(v.shape) for v in node.outputs)
    if isinstance(attrs, ConvAttrs):
        kh, kw = attrs.kernel
        if attrs.transposed:
            # Every input element is multiplied into num_output / group * kh * kw outputs.
            in_elements = math.prod(node.inputs[0].shape)
            return in_elements * attrs.num_output // attrs.group * kh * kw
        channels = node.inputs[0].shape[1]
        return out_elements * channels // attrs.group * kh * kw
    if isinstance(attrs, InnerProductAttrs):
        shape = node.inputs[0].shape
        axis = attrs.axis % len(shape)
        return out_elements * math.prod(shape[axis:])
    if node.op in ("BatchNorm", "Scale", "LRN"):
        return out_elements
    return 0
