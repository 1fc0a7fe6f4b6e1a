"""The registry: one `Layer` instance per Caffe type name, found by `lookup`.

Registering is also the plugin interface (`protocaffe.plugins.register`). A type that is not
built in makes the installed plugins (the `protocaffe.layers` entry points, see loading.py)
load, once, the first time it is looked up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from protocaffe.ir.graph import Node
from protocaffe.layers.base import Layer

if TYPE_CHECKING:  # numpy only where weights are folded (see folded_state)
    import numpy as np

_REGISTRY: dict[str, Layer[Any]] = {}

L = TypeVar("L", bound=type[Layer[Any]])


class DuplicateLayerType(RuntimeError):
    """A layer type is registered twice (two plugins, or a plugin and a built-in layer)."""


def register(cls: L) -> L:
    """Class decorator: registers one instance of `cls` under each of its Caffe type names."""
    instance = cls()
    taken = [name for name in cls.types if name in _REGISTRY]
    if taken:
        owner = type(_REGISTRY[taken[0]])
        raise DuplicateLayerType(
            f"layer type {taken[0]!r} is already registered by {owner.__module__}.{owner.__name__}"
        )
    for name in cls.types:
        _REGISTRY[name] = instance
    return cls


_entry_points_loaded = False


def lookup(type_name: str) -> Layer[Any] | None:
    """The layer registered for a Caffe type. A type that is not built in makes the installed
    plugins (the `protocaffe.layers` entry points) load, once: scanning every installed
    package's metadata costs more than the rest of start-up, and most nets need no plugin."""
    global _entry_points_loaded
    kind = _REGISTRY.get(type_name)
    if kind is None and not _entry_points_loaded:
        from protocaffe.layers.loading import load_entry_point_plugins

        _entry_points_loaded = True
        load_entry_point_plugins()
        kind = _REGISTRY.get(type_name)
    return kind


def layer_of(node: Node) -> Layer[Any]:
    """The layer definition of a graph node (every node's type was looked up when it was made)."""
    kind = _REGISTRY.get(node.op)
    if kind is None:
        raise LookupError(f"layer type {node.op!r} of node {node.name!r} is not registered")
    return kind


def registered_types() -> list[str]:
    return sorted(_REGISTRY)


def unregister(type_name: str) -> None:
    """Remove a type (for plugins and tests that register temporary layers)."""
    _REGISTRY.pop(type_name, None)


def folded_state(
    originals: Sequence[Node], states: Sequence[Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """The state_dict of a node that --optimize folded together (`Node.fused`): the first
    original absorbs the per-channel affine maps of the others, composed in dataflow order."""
    import numpy as np

    if len(originals) != len(states) or len(originals) < 2:
        raise ValueError(f"{len(states)} states for {len(originals)} folded layers")
    first = originals[0]
    scale: np.ndarray | None = None
    shift: np.ndarray | None = None
    for original, state in zip(originals[1:], states[1:], strict=True):
        a, c = layer_of(original).affine_coefficients(original.attrs, state)
        if scale is None or shift is None:
            scale, shift = np.ones_like(a), np.zeros_like(a)
        scale, shift = a * scale, a * shift + c
    assert scale is not None and shift is not None
    return layer_of(first).absorb_affine(first.attrs, states[0], scale, shift)
