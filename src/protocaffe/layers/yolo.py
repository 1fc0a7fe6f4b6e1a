"""YOLO detection heads of eric612/MobileNet-YOLO: region decoding, confidence threshold and
class-agnostic NMS, with SSD's DetectionOutput output layout."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from protocaffe.ir.graph import Attrs, Shape
from protocaffe.layers.base import Emission, EmitContext, Layer, LayerSource, call, f32, fail
from protocaffe.layers.registry import register


@dataclass(frozen=True)
class Yolov3Attrs(Attrs):
    num_classes: int
    num_box: int
    confidence_threshold: float
    nms_threshold: float
    biases: tuple[float, ...]
    anchors_scale: tuple[int, ...]
    masks: tuple[tuple[int, ...], ...]  # per bottom: the anchor (bias pair) of each box


@register
class Yolov3DetectionOutput(Layer[Yolov3Attrs]):
    """YOLOv3's output layer. For each bottom t (N, num_box * (5 + classes), h, w), box n of
    cell (i, j) is centred at ((i + sigmoid(tx)) / w, (j + sigmoid(ty)) / h) with size
    (exp(tw) * bias[2m] / (w * s_t), exp(th) * bias[2m + 1] / (h * s_t)), where
    m = mask[n + t * (mask count / mask_group_num)] and s_t = anchors_scale[t]; each class c
    whose sigmoid(class c) * sigmoid(objectness) exceeds the threshold is a candidate. All
    candidates of all bottoms and images are sorted by score and suppressed class-agnostically
    (IoU >= nms_threshold); the output is (1, 1, K, 7) rows
    [0, class + 1, score, xmin, ymin, xmax, ymax] (image index always 0, as in the fork), or
    one row [i, -1, ...] per image when nothing is kept. K is known at run time only.

    Source: eric612/MobileNet-YOLO @ 69b4441c, src/caffe/layers/
    yolov3_detection_output_layer.cpp (LayerSetUp, Forward_cpu, ApplyNms, box_iou,
    correct_yolo_boxes, which is the identity here) and src/caffe/util/bbox_util.cpp
    (get_region_box).
    """

    types = ("Yolov3DetectionOutput",)
    bottoms = (1, None)

    def parse(self, layer: LayerSource) -> Yolov3Attrs:
        p = layer.param.yolov3_detection_output_param
        if not p.HasField("num_classes"):
            raise fail(layer, "yolov3_detection_output_param.num_classes is required")
        if p.gaussian_box:
            raise fail(layer, "gaussian_box (Gaussian YOLOv3) is not supported")
        bottoms = len(layer.bottoms)
        if p.mask_group_num != bottoms:
            raise fail(layer, f"mask_group_num {p.mask_group_num} must equal the {bottoms} bottoms")
        groups = len(p.mask) // bottoms
        masks = (
            tuple(
                tuple(int(p.mask[n + t * groups]) for n in range(p.num_box)) for t in range(bottoms)
            )
            if (bottoms - 1) * groups + p.num_box <= len(p.mask)
            else None
        )
        if masks is None:
            raise fail(
                layer,
                f"{len(p.mask)} mask values are too few for {p.num_box} boxes on {bottoms} "
                "bottoms",
            )
        if len(p.anchors_scale) < bottoms:
            raise fail(layer, f"{len(p.anchors_scale)} anchors_scale values for {bottoms} bottoms")
        biases = tuple(f32(b) for b in p.biases)
        if any(2 * m + 1 >= len(biases) for group in masks for m in group):
            raise fail(layer, f"a mask value indexes past the {len(biases)} biases")
        return Yolov3Attrs(
            num_classes=int(p.num_classes),
            num_box=int(p.num_box),
            confidence_threshold=f32(p.confidence_threshold),
            nms_threshold=f32(p.nms_threshold),
            biases=biases,
            anchors_scale=tuple(int(a) for a in p.anchors_scale[:bottoms]),
            masks=masks,
        )

    def infer(
        self, attrs: Yolov3Attrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        length = 5 + attrs.num_classes
        for shape in in_shapes:
            if len(shape) != 4 or shape[1] < attrs.num_box * length:
                raise fail(
                    layer,
                    f"bottom {shape} must be (N, at least {attrs.num_box} x {length}, H, W)",
                )
        return [(1, 1, 1, 7)]

    def emit(self, attrs: Yolov3Attrs, ctx: EmitContext) -> Emission:
        forward = call(
            "yolov3_detection_output",
            "[" + ", ".join(ctx.inputs) + "]",
            num_classes=attrs.num_classes,
            biases=list(attrs.biases),
            masks=[list(m) for m in attrs.masks],
            anchors_scale=list(attrs.anchors_scale),
            confidence_threshold=attrs.confidence_threshold,
            nms_threshold=attrs.nms_threshold,
        )
        return Emission(forward=forward, note="rows vary at run time", helpers=("yolo_detection",))


@dataclass(frozen=True)
class YoloAttrs(Attrs):
    num_classes: int
    num_box: int
    confidence_threshold: float
    nms_threshold: float
    biases: tuple[float, ...]


@register
class YoloDetectionOutput(Layer[YoloAttrs]):
    """YOLOv2's output layer. Bottom (N, num_box * (coords + 1 + classes), S, S): box n of
    cell (i, j) is centred at ((i + sigmoid(tx)) / S, (j + sigmoid(ty)) / S) with size
    (exp(tw) * bias[2n] / S, exp(th) * bias[2n + 1] / S); its class is the argmax of a softmax
    over the classes (first maximum) and its score sigmoid(objectness) times that probability.
    Boxes scoring >= the threshold (of up to two bottoms, all images) are sorted and suppressed
    as in Yolov3DetectionOutput, with the same output rows.

    Source: eric612/MobileNet-YOLO @ 69b4441c, src/caffe/layers/
    yolo_detection_output_layer.cpp (LayerSetUp, Forward_cpu, get_region_box,
    class_index_and_score, ApplyNms).
    """

    types = ("YoloDetectionOutput",)
    bottoms = (1, 2)

    def parse(self, layer: LayerSource) -> YoloAttrs:
        p = layer.param.yolo_detection_output_param
        if not p.HasField("num_classes"):
            raise fail(layer, "yolo_detection_output_param.num_classes is required")
        if p.coords != 4:
            raise fail(layer, f"coords {p.coords}: the fork reads 4 coordinates")
        biases = tuple(f32(b) for b in p.biases)
        if len(biases) < 2 * p.num_box:
            raise fail(layer, f"{len(biases)} biases for {p.num_box} boxes (2 each)")
        return YoloAttrs(
            num_classes=int(p.num_classes),
            num_box=int(p.num_box),
            confidence_threshold=f32(p.confidence_threshold),
            nms_threshold=f32(p.nms_threshold),
            biases=biases,
        )

    def infer(
        self, attrs: YoloAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        for shape in in_shapes:
            if len(shape) != 4 or shape[2] != shape[3]:
                raise fail(layer, f"bottom {shape} must be (N, C, S, S): the fork reads S x S")
            if shape[1] % attrs.num_box or shape[1] // attrs.num_box < 5 + attrs.num_classes:
                raise fail(
                    layer,
                    f"bottom {shape}: channels must be num_box x (5 + classes) "
                    f"= {attrs.num_box} x {5 + attrs.num_classes}",
                )
        return [(1, 1, 1, 7)]

    def emit(self, attrs: YoloAttrs, ctx: EmitContext) -> Emission:
        forward = call(
            "yolo_detection_output",
            "[" + ", ".join(ctx.inputs) + "]",
            num_classes=attrs.num_classes,
            num_box=attrs.num_box,
            biases=list(attrs.biases),
            confidence_threshold=attrs.confidence_threshold,
            nms_threshold=attrs.nms_threshold,
        )
        return Emission(forward=forward, note="rows vary at run time", helpers=("yolo_detection",))
