"""The reference layer functions, one module per kind of maths. Importing this package
registers every built-in layer type."""

from protocaffe.verify.reference.ops import (
    conv,
    coordmap,
    ctc,
    detection,
    linear,
    movement,
    neuron,
    normalization,
    pooling,
    proposal,
    rcnn,
    recurrent,
    reduction,
    reorder,
    resample,
    rpn,
    structure,
    yolo,
)

__all__ = [
    "conv",
    "coordmap",
    "ctc",
    "detection",
    "linear",
    "movement",
    "neuron",
    "normalization",
    "pooling",
    "proposal",
    "rcnn",
    "recurrent",
    "reduction",
    "reorder",
    "resample",
    "rpn",
    "structure",
    "yolo",
]
