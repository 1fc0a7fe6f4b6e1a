"""The plugin API: everything a plugin imports, from this one module.

This is protocaffe's stable surface for user-defined layers (see 'Custom layers' in the README
and examples/plugins/). Where these names live inside protocaffe may change; this module keeps
them. A plugin subclasses `Layer[MyAttrs]`, decorates it with `register`, reads its Caffe layer
through `LayerSource` (`layer.param` is the typed LayerParameter message), returns an `Emission`
from `emit`, and adds helper code to the generated module with `register_helper`.

- `Layer`, `register`: a layer definition and its registration under Caffe type names.
- `Attrs`, `NoAttrs`: base classes of a layer's frozen attributes dataclass.
- `Shape`: a tensor shape (a tuple of ints).
- `LayerSource`: what `parse` and `infer` read of the Caffe layer (name, type, bottoms, tops,
  param, loc).
- `Emission`, `EmitContext`: what `emit` returns, and the names it may use.
- `BlobSpec`, `Init`: the Caffe weight blobs of a layer with weights, and how random weights
  fill them.
- `Role`: what a layer does, for views (`role = Role.CONVOLUTION`).
- `fail`, `call`, `tuple_expr`: a located error; safe Python call and tuple expressions.
- `register_helper`: add a helper function or class to generated modules that use it.
- `load_plugin`: import a plugin module by name (what `--plugin` does).
- `numpy_reference`: the numpy reference interpreter (`protocaffe.verify.reference`), imported
  when called: a layer's optional `reference(attrs, inputs, blobs=())` method, the numpy
  implementation `verify --reference numpy` runs for the plugin's type, may build on its
  transcriptions of Caffe and its forks (`numpy_reference().ops`).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from protocaffe.backend.helpers import register_helper
from protocaffe.ir.graph import Attrs, NoAttrs, Shape
from protocaffe.layers.base import (
    BlobSpec,
    Emission,
    EmitContext,
    Init,
    Layer,
    LayerSource,
    Role,
    call,
    fail,
    tuple_expr,
)
from protocaffe.layers.loading import load_plugin
from protocaffe.layers.registry import register

__all__ = [
    "Attrs",
    "BlobSpec",
    "Emission",
    "EmitContext",
    "Init",
    "Layer",
    "LayerSource",
    "NoAttrs",
    "Role",
    "Shape",
    "call",
    "fail",
    "load_plugin",
    "numpy_reference",
    "register",
    "register_helper",
    "tuple_expr",
]


def numpy_reference() -> ModuleType:
    """The numpy reference interpreter's package, `protocaffe.verify.reference` (numpy is
    imported then, not when a plugin is loaded for a conversion)."""
    return importlib.import_module("protocaffe.verify.reference")
