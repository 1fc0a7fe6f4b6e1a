"""Layer families, one module each; importing this package registers them all."""

from protocaffe.layers import (  # noqa: F401  (imported for their registrations)
    conv,
    elementwise,
    linear,
    mobile,
    normalization,
    pooling,
    rcnn,
    reduction,
    segmentation,
    ssd,
    structure,
)
from protocaffe.layers.base import Layer, lookup, register, registered_types

__all__ = ["Layer", "lookup", "register", "registered_types"]
