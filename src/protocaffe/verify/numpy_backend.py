"""The numpy reference as a `verify` reference: `protocaffe.verify.reference.ReferenceNet`,
streamed one layer at a time, with the layer types of plugins that give a numpy `reference`.

The reference is a second implementation of Caffe (it reads only the prototxt and the
caffemodel). A plugin's layer type is the one thing it cannot know: a plugin `Layer` that
overrides `reference(attrs, inputs, blobs=())` (see 'Custom layers' in the README) is run for
that type, on the layer as the reference reads it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from protocaffe.errors import ProtocaffeError
from protocaffe.frontend.caffemodel import CaffeModel
from protocaffe.frontend.prototxt import NetDef
from protocaffe.layers import Layer, lookup
from protocaffe.verify.backend import ReferenceUnavailable, RefStep
from protocaffe.verify.reference import ReferenceNet, RefLayer, RefOp
from protocaffe.verify.reference import lookup as reference_lookup
from protocaffe.version import __version__

PLUGIN_HINT = (
    "give the plugin's Layer a numpy reference(attrs, inputs) method (see 'Custom layers' in "
    "the protocaffe README), or try --reference caffe or --reference opencv"
)


def has_reference(kind: Layer[Any]) -> bool:
    return type(kind).reference is not Layer.reference


def _plugin_op(kind: Layer[Any]) -> RefOp:
    def forward(layer: RefLayer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        attrs = kind.parse(layer)
        in_shapes = [tuple(int(d) for d in b.shape) for b in bottoms]
        specs = kind.blobs(attrs, in_shapes)
        if specs:
            blobs = layer.weights(*[spec.shape for spec in specs])
            tops: Sequence[np.ndarray] = kind.reference(attrs, bottoms, blobs)
        else:
            tops = kind.reference(attrs, bottoms)
        return [np.ascontiguousarray(top, dtype=np.float32) for top in tops]

    return RefOp(forward, bottoms=kind.bottoms, tops=kind.tops, in_place=False)


def plugin_ops(net: NetDef) -> dict[str, RefOp]:
    """The references plugins give for the types of `net` that the numpy reference lacks."""
    ops: dict[str, RefOp] = {}
    for layer in net.layers:
        if layer.type in ops or reference_lookup(layer.type) is not None:
            continue
        kind = lookup(layer.type)
        if kind is not None and has_reference(kind):
            ops[layer.type] = _plugin_op(kind)
    return ops


class NumpyReference:
    """`protocaffe.verify.reference`, run in this process."""

    name = "numpy"

    def __init__(
        self, net: NetDef, weights: CaffeModel | None, dialects: Collection[str] = ()
    ) -> None:
        self.net = net
        self.weights = weights
        self.dialects = tuple(dialects)
        self.reference: ReferenceNet | None = None

    def version(self) -> str:
        return f"protocaffe {__version__} numpy reference, numpy {np.__version__}"

    def prepare(self) -> None:
        try:
            self.reference = ReferenceNet(
                self.net, self.weights, dialects=self.dialects, ops=plugin_ops(self.net)
            )
        except ProtocaffeError as exc:
            first = exc.diagnostics[0]
            reason = first.message
            if "has no implementation of layer type" in reason:
                kind = lookup(first.layer_type or "")
                reason = (
                    f"the numpy reference has no implementation of layer type {first.layer_type!r}"
                )
                if kind is not None:  # a plugin layer without a reference
                    reason += "; " + PLUGIN_HINT
            raise ReferenceUnavailable(
                reason,
                loc=first.loc,
                layer=first.layer,
                layer_type=first.layer_type,
                reference=self.name,
            ) from None

    def run(self, inputs: Mapping[str, np.ndarray]) -> Iterator[RefStep]:
        if self.reference is None:
            self.prepare()
        assert self.reference is not None
        net = self.reference
        known = set(net.inputs) | set(net.optional_inputs)
        given = {name: value for name, value in inputs.items() if name in known}
        for step in net.run(given):
            layer = self.net.layers[step.layer_index]
            yield RefStep(
                step.layer_index,
                {j: step.tops[top] for j, top in enumerate(layer.tops) if top in step.tops},
            )

    def layer_forward(self, index: int, bottoms: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One layer on other inputs (after a near tie upstream, see ties.py)."""
        if self.reference is None:
            self.prepare()
        assert self.reference is not None
        return self.reference.layer_forward(index, bottoms)

    def close(self) -> None:
        self.reference = None
