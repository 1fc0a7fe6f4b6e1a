"""The reference layer functions, one module per kind of maths. Importing this package
registers every built-in layer type."""

from protocaffe.verify.reference.ops import (
    conv,
    detection,
    linear,
    neuron,
    normalization,
    pooling,
    proposal,
    reduction,
    resample,
    structure,
)

__all__ = [
    "conv",
    "detection",
    "linear",
    "neuron",
    "normalization",
    "pooling",
    "proposal",
    "reduction",
    "resample",
    "structure",
]
