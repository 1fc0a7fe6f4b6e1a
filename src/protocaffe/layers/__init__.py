"""The op library: one `Layer` definition per Caffe type, grouped by the maths they do.

convolution, pooling, spatial_pyramid, resampling, linear, elementwise, normalization,
reduction, structure, sources, recurrent, detection, proposal, and the fork families reorder
(Transpose, Reverse, Flip, Reorg), ctc, yolo, rcnn and dense_block (caffe_ocr's DenseBlock):
importing this package registers them all. base.py is the contract (and the LayerSource
protocol a layer reads), registry.py finds a definition by type, loading.py loads plugins.
The package imports nothing above the IR (see docs/architecture.md).
"""

from protocaffe.layers import (  # noqa: F401  (imported for their registrations)
    convolution,
    ctc,
    dense_block,
    detection,
    elementwise,
    linear,
    normalization,
    pooling,
    proposal,
    rcnn,
    recurrent,
    reduction,
    reorder,
    resampling,
    sources,
    spatial_pyramid,
    structure,
    yolo,
)
from protocaffe.layers.base import Layer
from protocaffe.layers.registry import layer_of, lookup, register, registered_types

__all__ = ["Layer", "layer_of", "lookup", "register", "registered_types"]
