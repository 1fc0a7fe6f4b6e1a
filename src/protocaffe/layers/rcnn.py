"""Faster R-CNN's ROIPooling (rbgirshick/caffe-fast-rcnn)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from protocaffe.frontend.prototxt import LayerDef
from protocaffe.ir.graph import Attrs, Shape
from protocaffe.layers.base import Emission, EmitContext, Layer, call, f32, fail, register


@dataclass(frozen=True)
class ROIPoolingAttrs(Attrs):
    pooled: tuple[int, int]
    spatial_scale: float


@register
class ROIPooling(Layer):
    """Max pooling of each region of interest into pooled_h x pooled_w bins. The second bottom
    holds R rows [batch index, x1, y1, x2, y2] in image coordinates; the output is
    (R, C, pooled_h, pooled_w), R known only at run time."""

    types = ("ROIPooling",)
    bottoms = (2, 2)

    def parse(self, layer: LayerDef) -> ROIPoolingAttrs:
        p = layer.param.roi_pooling_param
        pooled = (int(p.pooled_h), int(p.pooled_w))
        if min(pooled) <= 0:
            raise fail(layer, f"pooled_h and pooled_w must be positive, got {pooled}")
        return ROIPoolingAttrs(pooled, f32(p.spatial_scale))

    def infer(self, attrs: Attrs, in_shapes: Sequence[Shape], layer: LayerDef) -> list[Shape]:
        assert isinstance(attrs, ROIPoolingAttrs)
        features, rois = in_shapes
        if len(features) != 4:
            raise fail(layer, f"expects 4-D features, got {features}")
        if len(rois) < 2 or rois[1] != 5:
            raise fail(layer, f"the regions {rois} must be (R, 5)")
        return [(rois[0], features[1]) + attrs.pooled]

    def emit(self, attrs: Attrs, ctx: EmitContext) -> Emission:
        assert isinstance(attrs, ROIPoolingAttrs)
        forward = call(
            "roi_pool",
            ctx.inputs[0],
            ctx.inputs[1],
            pooled=attrs.pooled,
            spatial_scale=attrs.spatial_scale,
        )
        return Emission(forward=forward, helpers=("roi_pool",))
