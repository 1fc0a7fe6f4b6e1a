"""Region-based detection of the R-CNN forks: region features (ROIAlign, PSROIPooling), box
decoding (DecodeBBox), proposal heads with NMS (BoxOutput, BoxGroupOutput) and the routing of
regions by size (ScaleRoute). Regions are (R, 5) rows [image, x1, y1, x2, y2] whose number R is
known at run time only; shapes here use the declared R."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from protocaffe.ir.graph import Attrs, Shape
from protocaffe.layers.base import Emission, EmitContext, Layer, LayerSource, call, f32, fail
from protocaffe.layers.registry import register


def _regions(shape: Shape, layer: LayerSource, width: int = 5) -> int:
    if len(shape) < 2 or math.prod(shape[1:]) != width:
        raise fail(layer, f"the regions {shape} must be (R, {width}) rows")
    return shape[0]


@dataclass(frozen=True)
class ROIAlignAttrs(Attrs):
    pooled: tuple[int, int]
    spatial_scale: float
    pad_ratio: float


@register
class ROIAlign(Layer[ROIAlignAttrs]):
    """zhaoweicai/cascade-rcnn's ROIAlign: not a pooling but a (pooled_h + 1) x (pooled_w + 1)
    grid of bilinear samples per region (a Pooling layer follows it in the nets). The region is
    padded by pad_ratio of its size (+1 convention) on each side, scaled, and shifted by -0.5;
    sample (ph, pw) is at start + (ph, pw) * size / pooled, 0 outside [-0.5, size - 0.5] or
    for an empty region, else bilinear between the clamped neighbours.

    Source: zhaoweicai/cascade-rcnn @ 2252f461, src/caffe/layers/roi_align_layer.cpp
    (LayerSetUp, Reshape, Forward_cpu); roi_pooling_param: pooled_h, pooled_w, spatial_scale,
    pad_ratio.
    """

    types = ("ROIAlign",)
    bottoms = (2, 2)

    def parse(self, layer: LayerSource) -> ROIAlignAttrs:
        p = layer.param.roi_pooling_param
        pooled = (int(p.pooled_h), int(p.pooled_w))
        if min(pooled) <= 0:
            raise fail(layer, f"pooled_h and pooled_w must be positive, got {pooled}")
        return ROIAlignAttrs(pooled, f32(p.spatial_scale), f32(p.pad_ratio))

    def infer(
        self, attrs: ROIAlignAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        features, rois = in_shapes
        if len(features) != 4:
            raise fail(layer, f"expects 4-D features, got {features}")
        count = _regions(rois, layer)
        return [(count, features[1], attrs.pooled[0] + 1, attrs.pooled[1] + 1)]

    def emit(self, attrs: ROIAlignAttrs, ctx: EmitContext) -> Emission:
        forward = call(
            "roi_align_grid",
            ctx.inputs[0],
            ctx.inputs[1],
            pooled=attrs.pooled,
            spatial_scale=attrs.spatial_scale,
            pad_ratio=attrs.pad_ratio,
        )
        return Emission(forward=forward, helpers=("rcnn",))


@dataclass(frozen=True)
class PSROIPoolingAttrs(Attrs):
    spatial_scale: float
    output_dim: int
    group_size: int


@register
class PSROIPooling(Layer[PSROIPoolingAttrs]):
    """R-FCN's position-sensitive ROI pooling: output (R, output_dim, group, group), bin
    (ph, pw) of output channel d the average of input channel (d * group + ph) * group + pw over
    the bin (corners rounded half away from zero, end + 1, times spatial_scale; size at least
    0.1; floor/ceil bin bounds clipped to the map), 0 for an empty bin.

    Source: R-FCN's psroi_pooling_layer.cu (PSROIPoolingForward; the forks' CPU forward is
    NOT_IMPLEMENTED), as in zhaoweicai/cascade-rcnn @ 2252f461 and the oracle build (which
    cannot run it on a CPU).
    """

    types = ("PSROIPooling",)
    bottoms = (2, 2)

    def parse(self, layer: LayerSource) -> PSROIPoolingAttrs:
        p = layer.param.psroi_pooling_param
        if p.output_dim <= 0 or p.group_size <= 0 or not p.HasField("spatial_scale"):
            raise fail(
                layer,
                "psroi_pooling_param needs spatial_scale, output_dim > 0 and " "group_size > 0",
            )
        return PSROIPoolingAttrs(f32(p.spatial_scale), int(p.output_dim), int(p.group_size))

    def infer(
        self, attrs: PSROIPoolingAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        features, rois = in_shapes
        group = attrs.group_size
        if len(features) != 4 or features[1] != attrs.output_dim * group * group:
            raise fail(
                layer,
                f"features {features} must have output_dim x group_size² = "
                f"{attrs.output_dim * group * group} channels",
            )
        return [(_regions(rois, layer), attrs.output_dim, group, group)]

    def emit(self, attrs: PSROIPoolingAttrs, ctx: EmitContext) -> Emission:
        forward = call(
            "psroi_pool",
            ctx.inputs[0],
            ctx.inputs[1],
            output_dim=attrs.output_dim,
            group_size=attrs.group_size,
            spatial_scale=attrs.spatial_scale,
        )
        return Emission(forward=forward, helpers=("rcnn",))


@dataclass(frozen=True)
class BBoxRegAttrs(Attrs):
    means: tuple[float, float, float, float]
    stds: tuple[float, float, float, float]


def _bbox_reg(layer: LayerSource) -> BBoxRegAttrs:
    """bbox_reg_param's de-normalisation (both lists of 4, or neither: mean 0, std 1)."""
    p = layer.param.bbox_reg_param
    if len(p.bbox_mean) > 0 and len(p.bbox_std) > 0:
        if len(p.bbox_mean) != 4 or len(p.bbox_std) != 4:
            raise fail(layer, "bbox_reg_param needs 4 bbox_mean and 4 bbox_std values")
        if min(p.bbox_std) <= 0:
            raise fail(layer, "bbox_std values must be positive")
        m, s = [f32(v) for v in p.bbox_mean], [f32(v) for v in p.bbox_std]
        return BBoxRegAttrs((m[0], m[1], m[2], m[3]), (s[0], s[1], s[2], s[3]))
    return BBoxRegAttrs((0.0, 0.0, 0.0, 0.0), (1.0, 1.0, 1.0, 1.0))


@register
class DecodeBBox(Layer[BBoxRegAttrs]):
    """Decode class-agnostic box deltas (R, 8) (background, foreground) against the regions
    (R, 5): the foreground deltas, de-normalised by bbox_reg_param, applied with the +1 width
    convention; output (R, 5, 1, 1) [image, x1, y1, x2, y2], not clipped. (At TRAIN time the
    fork also drops boxes; a deploy net runs in TEST.)

    Source: zhaoweicai/cascade-rcnn @ 2252f461 (and zhaoweicai/mscnn), src/caffe/layers/
    decode_bbox_layer.cpp (LayerSetUp, Reshape, Forward_cpu) and src/caffe/util/bbox_util.cpp
    (DecodeBBoxesWithPrior).
    """

    types = ("DecodeBBox",)
    bottoms = (2, 2)  # a third bottom (matched ground truth) is TRAIN only

    def parse(self, layer: LayerSource) -> BBoxRegAttrs:
        return _bbox_reg(layer)

    def infer(
        self, attrs: BBoxRegAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        deltas, rois = in_shapes
        count = _regions(rois, layer)
        if len(deltas) < 2 or deltas[1] != 8 or deltas[0] != count:
            raise fail(layer, f"the deltas {deltas} must be ({count}, 8): class-agnostic")
        return [(count, 5, 1, 1)]

    def emit(self, attrs: BBoxRegAttrs, ctx: EmitContext) -> Emission:
        forward = call(
            "decode_bbox", ctx.inputs[0], ctx.inputs[1], means=attrs.means, stds=attrs.stds
        )
        return Emission(forward=forward, helpers=("rcnn",))


NMS_TYPES = ("IOU", "IOMU", "IOFU")


@dataclass(frozen=True)
class BoxOutputAttrs(Attrs):
    fg_threshold: float
    iou_threshold: float
    nms_type: str
    field_w: tuple[float, ...]
    field_h: tuple[float, ...]
    downsample: tuple[float, ...]  # BoxOutput: per bottom; BoxGroupOutput: per pair's stride
    groups: tuple[int, ...]  # BoxGroupOutput: anchors per bottom pair; () for BoxOutput
    field_whr: float
    field_xyr: float
    max_nms: int
    max_post_nms: int
    min_size: float
    reg: BBoxRegAttrs


def _nms_type(layer: LayerSource, value: str) -> str:
    if value not in NMS_TYPES:
        raise fail(layer, f"nms_type {value!r} is not one of {', '.join(NMS_TYPES)}")
    return value


@register
class BoxOutput(Layer[BoxOutputAttrs]):
    """MS-CNN's proposal head: bottom j (N, classes + 4, h, w) holds class scores then box
    deltas at each cell; a cell's score is its best non-background score minus the background
    one; cells scoring >= fg_thr give a box (deltas clipped by field_xyr/field_whr, centred on
    the cell, sized by field_w/h[j] and downsample_rate[j], clipped to the image, kept when
    both sides >= min_size); per image the boxes are sorted by score, cut to max_nms_num,
    suppressed (overlap > iou_thr, greedy) and cut to max_post_nms_num. Output (R, 5) rows
    [image, x1, y1, x2, y2] of all images, R known at run time (one fixed row [0, 1, 1, 10, 10]
    when none); a second top adds the score as a sixth column.

    Source: zhaoweicai/mscnn @ 534bcac5, src/caffe/layers/box_output_layer.cpp (Forward_cpu,
    nmsMax) and src/caffe/util/bbox_util.cpp (BoxIOU).
    """

    types = ("BoxOutput",)
    bottoms = (1, None)
    tops = (1, 2)

    def parse(self, layer: LayerSource) -> BoxOutputAttrs:
        p = layer.param.box_output_param
        count = len(layer.bottoms)
        if not len(p.field_h) == len(p.field_w) == len(p.downsample_rate) == count:
            raise fail(
                layer, f"field_h, field_w and downsample_rate need one value per bottom ({count})"
            )
        return BoxOutputAttrs(
            fg_threshold=f32(p.fg_thr),
            iou_threshold=f32(p.iou_thr),
            nms_type=_nms_type(layer, p.nms_type),
            field_w=tuple(float(v) for v in p.field_w),
            field_h=tuple(float(v) for v in p.field_h),
            downsample=tuple(float(v) for v in p.downsample_rate),
            groups=(),
            field_whr=f32(p.field_whr),
            field_xyr=f32(p.field_xyr),
            max_nms=int(p.max_nms_num),
            max_post_nms=int(p.max_post_nms_num),
            min_size=f32(p.min_size),
            reg=_bbox_reg(layer),
        )

    def infer(
        self, attrs: BoxOutputAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        first = in_shapes[0]
        for shape in in_shapes:
            if len(shape) != 4 or shape[1] != first[1] or shape[0] != first[0] or shape[1] < 6:
                raise fail(layer, f"bottoms {list(in_shapes)} must be (N, classes + 4, h, w)")
        tops: list[Shape] = [(1, 5, 1, 1), (1, 6, 1, 1)]
        return tops[: len(layer.tops)]

    def emit(self, attrs: BoxOutputAttrs, ctx: EmitContext) -> Emission:
        forward = call(
            "box_output",
            "[" + ", ".join(ctx.inputs) + "]",
            fg_threshold=attrs.fg_threshold,
            iou_threshold=attrs.iou_threshold,
            nms_type=attrs.nms_type,
            field_w=list(attrs.field_w),
            field_h=list(attrs.field_h),
            downsample=list(attrs.downsample),
            field_whr=attrs.field_whr,
            field_xyr=attrs.field_xyr,
            max_nms=attrs.max_nms,
            max_post_nms=attrs.max_post_nms,
            min_size=attrs.min_size,
            means=list(attrs.reg.means),
            stds=list(attrs.reg.stds),
        )
        if len(ctx.out_shapes) == 1:
            forward += "[0]"
        return Emission(forward=forward, note="rows vary at run time", helpers=("rcnn",))


@register
class BoxGroupOutput(Layer[BoxOutputAttrs]):
    """Cascade R-CNN's proposal head: bottoms in pairs (probabilities (N * G, 2?, h, w),
    deltas (N * G, 4, h, w)) per feature level, G anchors of field_w/h[k] at stride s; the
    foreground score is 1 - the first probability; deltas de-normalised and clipped, decoded
    around the cell centre, clipped to the image (w * s, h * s) and kept when both sides
    (+1) >= min_size; per image: partial sort to max_nms_num, NMS (overlap > iou_thr, +1
    areas), cut to max_post_nms_num. Output as BoxOutput.

    Source: zhaoweicai/cascade-rcnn @ 2252f461, src/caffe/layers/box_group_output_layer.cpp
    (LayerSetUp, Forward_cpu) and src/caffe/util/bbox_util.cpp (DecodeGroupBBoxes, ClipBBox,
    ApplyNMS, JaccardOverlap, BBoxSize).
    """

    types = ("BoxGroupOutput",)
    bottoms = (2, None)
    tops = (1, 2)

    def parse(self, layer: LayerSource) -> BoxOutputAttrs:
        p = layer.param.box_group_output_param
        pairs = len(layer.bottoms) // 2
        if len(layer.bottoms) % 2 or len(p.box_group_param) != pairs:
            raise fail(layer, "needs bottom pairs (scores, deltas), one box_group_param per pair")
        field_w: list[float] = []
        field_h: list[float] = []
        for group in p.box_group_param:
            if len(group.field_w) != len(group.field_h) or not group.field_w:
                raise fail(layer, "each box_group_param needs as many field_w as field_h")
            field_w += [float(v) for v in group.field_w]
            field_h += [float(v) for v in group.field_h]
        return BoxOutputAttrs(
            fg_threshold=f32(p.fg_thr),
            iou_threshold=f32(p.iou_thr),
            nms_type=_nms_type(layer, p.nms_type),
            field_w=tuple(field_w),
            field_h=tuple(field_h),
            downsample=tuple(float(g.stride) for g in p.box_group_param),
            groups=tuple(len(g.field_w) for g in p.box_group_param),
            field_whr=f32(p.field_whr),
            field_xyr=f32(p.field_xyr),
            max_nms=int(p.max_nms_num),
            max_post_nms=int(p.max_post_nms_num),
            min_size=f32(p.min_size),
            reg=_bbox_reg(layer),
        )

    def infer(
        self, attrs: BoxOutputAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        images = None
        for j, group in enumerate(attrs.groups):
            scores, deltas = in_shapes[2 * j], in_shapes[2 * j + 1]
            if len(scores) != 4 or len(deltas) != 4 or deltas[1] != 4:
                raise fail(
                    layer,
                    f"pair {j}: scores {scores} and deltas {deltas} must be 4-D, "
                    "the deltas with 4 channels",
                )
            if scores[0] != deltas[0] or scores[2:] != deltas[2:] or scores[0] % group:
                raise fail(
                    layer,
                    f"pair {j}: scores {scores} and deltas {deltas} must agree "
                    f"and hold images x {group} anchors",
                )
            if images is not None and scores[0] // group != images:
                raise fail(layer, "the pairs hold different numbers of images")
            images = scores[0] // group
        tops: list[Shape] = [(1, 5, 1, 1), (1, 6, 1, 1)]
        return tops[: len(layer.tops)]

    def emit(self, attrs: BoxOutputAttrs, ctx: EmitContext) -> Emission:
        forward = call(
            "box_group_output",
            "[" + ", ".join(ctx.inputs) + "]",
            groups=list(attrs.groups),
            fg_threshold=attrs.fg_threshold,
            iou_threshold=attrs.iou_threshold,
            nms_type=attrs.nms_type,
            field_w=list(attrs.field_w),
            field_h=list(attrs.field_h),
            strides=list(attrs.downsample),
            field_whr=attrs.field_whr,
            field_xyr=attrs.field_xyr,
            max_nms=attrs.max_nms,
            max_post_nms=attrs.max_post_nms,
            min_size=attrs.min_size,
            means=list(attrs.reg.means),
            stds=list(attrs.reg.stds),
        )
        if len(ctx.out_shapes) == 1:
            forward += "[0]"
        return Emission(forward=forward, note="rows vary at run time", helpers=("rcnn",))


@dataclass(frozen=True)
class ScaleRouteAttrs(Attrs):
    low: float | None
    high: float | None


@register
class ScaleRoute(Layer[ScaleRouteAttrs]):
    """Cascade R-CNN's FPN routing: the rows of every bottom whose region (bottom 0, (R, 5))
    has sqrt(area, +1 convention) in [low_scale, high_scale); when none does, the one region
    whose scale is closest to the middle scale (in log2). R known at run time.

    Source: zhaoweicai/cascade-rcnn @ 2252f461, src/caffe/layers/scale_route_layer.cpp
    (Forward_cpu) and src/caffe/util/bbox_util.cpp (BBoxSize).
    """

    types = ("ScaleRoute",)
    bottoms = (1, 1)  # the fork routes more bottoms alike; no net seen does

    def parse(self, layer: LayerSource) -> ScaleRouteAttrs:
        p = layer.param.scale_route_param
        low = f32(p.low_scale) if p.HasField("low_scale") else None
        high = f32(p.high_scale) if p.HasField("high_scale") else None
        if (low is not None and low <= 0) or (low is not None and high is not None and high < low):
            raise fail(layer, f"the scales [{low}, {high}) are not a positive range")
        return ScaleRouteAttrs(low, high)

    def infer(
        self, attrs: ScaleRouteAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        _regions(in_shapes[0], layer)
        return [in_shapes[0]]

    def emit(self, attrs: ScaleRouteAttrs, ctx: EmitContext) -> Emission:
        forward = call("scale_route", ctx.x, low=attrs.low, high=attrs.high)
        return Emission(forward=forward, note="rows vary at run time", helpers=("rcnn",))
