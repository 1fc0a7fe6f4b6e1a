"""The reference layer functions, one module per kind of maths. Importing this package
registers every built-in layer type."""

from protocaffe.verify.reference.ops import (
    conv,
    detection,
    linear,
    movement,
    neuron,
    normalization,
    pooling,
    proposal,
    recurrent,
    reduction,
    resample,
    rpn,
    structure,
)

__all__ = [
    "conv",
    "detection",
    "linear",
    "movement",
    "neuron",
    "normalization",
    "pooling",
    "proposal",
    "recurrent",
    "reduction",
    "resample",
    "rpn",
    "structure",
]
