"""Layers that make blobs without reading any: the data layers whose parameters give their
blobs' shapes (DummyData, MemoryData), which become the module's inputs as Input's tops do,
and Parameter, a learned blob."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from protocaffe.ir.graph import Attrs, Shape
from protocaffe.layers.base import (
    BlobSpec,
    Emission,
    EmitContext,
    Init,
    Layer,
    LayerSource,
    fail,
    tuple_expr,
)
from protocaffe.layers.registry import register

if TYPE_CHECKING:  # numpy only where weights are converted (see Layer.state)
    import numpy as np


@dataclass(frozen=True)
class DeclaredAttrs(Attrs):
    shapes: tuple[Shape, ...]


@register
class DummyData(Layer[DeclaredAttrs]):
    """A data layer whose `dummy_data_param` gives each top's shape (`shape`, or the legacy
    num/channels/height/width, once or once per top). Caffe fills the tops with its
    data_filler (zeros by default); deploy nets use it as a stand-in for the input, so its
    tops become the module's inputs (the ones a layer reads), with these shapes.

    Source: BVLC/caffe, src/caffe/layers/dummy_data_layer.cpp (LayerSetUp)."""

    types = ("DummyData",)
    bottoms = (0, 0)
    tops = (1, None)
    data_source = True

    def parse(self, layer: LayerSource) -> DeclaredAttrs:
        p = layer.param.dummy_data_param
        tops = len(layer.tops)
        fillers = len(p.data_filler)
        if fillers not in (0, 1, tops):
            raise fail(
                layer,
                f"Caffe aborts here: {fillers} data fillers for {tops} tops (0, 1 or one per top)",
            )
        legacy = {name: list(getattr(p, name)) for name in ("num", "channels", "height", "width")}
        if any(legacy.values()):
            if len(p.shape):
                raise fail(layer, "Caffe aborts here: Both shape and legacy fields were specified")
            for name, values in legacy.items():
                if len(values) not in (1, tops):
                    raise fail(
                        layer,
                        f"Caffe aborts here: must specify '{name}' once, or once per top blob "
                        f"({tops}); specified {len(values)}",
                    )
            shapes = [
                tuple(int(values[0 if len(values) == 1 else i]) for values in legacy.values())
                for i in range(tops)
            ]
        else:
            if len(p.shape) not in (1, tops):
                raise fail(
                    layer,
                    f"Caffe aborts here: Must specify 'shape' once, or once per top blob "
                    f"({tops}); specified {len(p.shape)}",
                )
            shapes = [
                tuple(int(d) for d in p.shape[0 if len(p.shape) == 1 else i].dim)
                for i in range(tops)
            ]
        return DeclaredAttrs(tuple(shapes))

    def declared_inputs(self, attrs: DeclaredAttrs) -> tuple[Shape, ...]:
        return attrs.shapes


@register
class MemoryData(Layer[DeclaredAttrs]):
    """A data layer fed from memory: data (batch_size, channels, height, width) and labels
    (batch_size). Its tops become the module's inputs (the ones a layer reads).

    Source: BVLC/caffe, src/caffe/layers/memory_data_layer.cpp (DataLayerSetUp)."""

    types = ("MemoryData",)
    bottoms = (0, 0)
    tops = (2, 2)
    data_source = True

    def parse(self, layer: LayerSource) -> DeclaredAttrs:
        p = layer.param.memory_data_param
        data = (int(p.batch_size), int(p.channels), int(p.height), int(p.width))
        if math.prod(data) <= 0:
            raise fail(
                layer,
                "Caffe aborts here: batch_size, channels, height, and width must be specified "
                f"and positive in memory_data_param (got {data})",
            )
        return DeclaredAttrs((data, (data[0],)))

    def declared_inputs(self, attrs: DeclaredAttrs) -> tuple[Shape, ...]:
        return attrs.shapes


@dataclass(frozen=True)
class ParameterAttrs(Attrs):
    shape: Shape


@register
class Parameter(Layer[ParameterAttrs]):
    """Outputs its one learned blob, of `parameter_param.shape`.

    Source: BVLC/caffe, include/caffe/layers/parameter_layer.hpp."""

    types = ("Parameter",)
    bottoms = (0, 0)

    def parse(self, layer: LayerSource) -> ParameterAttrs:
        shape = tuple(int(d) for d in layer.param.parameter_param.shape.dim)
        if not shape:
            raise fail(layer, "a Parameter without shape dims (a 0-D blob) is not supported")
        return ParameterAttrs(shape)

    def infer(
        self, attrs: ParameterAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        return [attrs.shape]

    def blobs(self, attrs: ParameterAttrs, in_shapes: Sequence[Shape]) -> list[BlobSpec]:
        return [BlobSpec(attrs.shape, Init.SMALL)]

    def param_names(self, attrs: ParameterAttrs, in_shapes: Sequence[Shape]) -> tuple[str, ...]:
        return ("weight",)

    def state(
        self, attrs: ParameterAttrs, in_shapes: Sequence[Shape], blobs: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        return {"weight": blobs[0]}

    def emit(self, attrs: ParameterAttrs, ctx: EmitContext) -> Emission:
        return Emission(
            forward=f"self.{ctx.attr}()",
            init=f"CaffeParameter({tuple_expr(attrs.shape)})",
            helpers=("CaffeParameter",),
        )
