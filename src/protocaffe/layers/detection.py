"""Detection: SSD's PriorBox (default boxes) and DetectionOutput (decoding, per-class NMS)."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from protocaffe.ir.graph import Attrs, Shape
from protocaffe.layers.base import Emission, EmitContext, Layer, LayerSource, call, f32, fail
from protocaffe.layers.registry import register


@dataclass(frozen=True)
class PriorBoxAttrs(Attrs):
    """`boxes` are the (width, height) of each prior at one position, in Caffe's order (per
    min_size: the square, the max_size square, then each aspect ratio), as float32 values."""

    boxes: tuple[tuple[float, float], ...]
    clip: bool
    variance: tuple[float, float, float, float]
    image_size: tuple[int, int] | None  # (h, w); None: the second bottom's size at run time
    step: tuple[float, float] | None  # (h, w); None: image size / feature size
    offset: float


def single(value: float) -> float:
    """`value` rounded to float32. One +, -, *, / or sqrt of float32 operands done in double
    and rounded once gives exactly the float32 operation's result, so this reproduces Caffe's
    float arithmetic."""
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


@register
class PriorBox(Layer[PriorBoxAttrs]):
    """SSD's default boxes for one feature map: computed from the feature map's and the image's
    run-time sizes, so they follow the input when the module runs at another resolution.

    Source: weiliu89/caffe (branch ssd), src/caffe/layers/prior_box_layer.cpp.
    """

    types = ("PriorBox",)
    bottoms = (2, 2)

    def parse(self, layer: LayerSource) -> PriorBoxAttrs:
        p = layer.param.prior_box_param
        min_sizes = [single(v) for v in p.min_size]
        max_sizes = [single(v) for v in p.max_size]
        if not min_sizes or any(s <= 0 for s in min_sizes):
            raise fail(layer, "PriorBox needs positive min_size values")
        if max_sizes and len(max_sizes) != len(min_sizes):
            raise fail(layer, f"{len(max_sizes)} max_size values for {len(min_sizes)} min_size")
        if any(mx <= mn for mn, mx in zip(min_sizes, max_sizes, strict=False)):
            raise fail(layer, "each max_size must be greater than its min_size")
        # Aspect ratios as PriorBoxLayer::LayerSetUp builds them: 1 first, no repeats, flips.
        ratios = [1.0]
        for ar in (single(v) for v in p.aspect_ratio):
            if any(abs(ar - r) < 1e-6 for r in ratios):
                continue
            ratios.append(ar)
            if p.flip:
                ratios.append(single(1.0 / ar))
        # Box sides in float32, as Caffe computes them (sqrt of a float is a float).
        boxes: list[tuple[float, float]] = []
        for index, mn in enumerate(min_sizes):
            boxes.append((f32(mn), f32(mn)))
            if max_sizes:
                side = single(math.sqrt(single(mn * max_sizes[index])))
                boxes.append((f32(side), f32(side)))
            for ar in ratios:
                if abs(ar - 1.0) < 1e-6:
                    continue
                root = single(math.sqrt(ar))
                boxes.append((f32(single(mn * root)), f32(single(mn / root))))
        variance = [f32(v) for v in p.variance]
        if len(variance) == 0:
            variance = [0.1]
        if len(variance) == 1:
            variance = variance * 4
        if len(variance) != 4:
            raise fail(layer, f"variance needs 1 or 4 values, got {len(variance)}")
        if any(v <= 0 for v in variance):
            raise fail(layer, "variance values must be positive")
        image_size: tuple[int, int] | None = None
        if p.HasField("img_size"):
            image_size = (int(p.img_size), int(p.img_size))
        elif p.HasField("img_h") or p.HasField("img_w"):
            image_size = (int(p.img_h), int(p.img_w))
        step: tuple[float, float] | None = None
        if p.HasField("step"):
            step = (f32(p.step), f32(p.step))
        elif p.HasField("step_h") or p.HasField("step_w"):
            step = (f32(p.step_h), f32(p.step_w))
        if image_size is not None and min(image_size) <= 0:
            raise fail(layer, f"img_size must be positive, got {image_size}")
        if step is not None and min(step) <= 0:
            raise fail(layer, f"step must be positive, got {step}")
        return PriorBoxAttrs(
            tuple(boxes),
            bool(p.clip),
            (variance[0], variance[1], variance[2], variance[3]),
            image_size,
            step,
            f32(p.offset),
        )

    def infer(
        self, attrs: PriorBoxAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        feature, image = in_shapes
        if len(feature) != 4 or len(image) != 4:
            raise fail(layer, f"expects 4-D bottoms, got {feature} and {image}")
        return [(1, 2, feature[2] * feature[3] * len(attrs.boxes) * 4)]

    def emit(self, attrs: PriorBoxAttrs, ctx: EmitContext) -> Emission:
        forward = call(
            "prior_box",
            ctx.inputs[0],
            ctx.inputs[1],
            # A list of [width, height] lists: TorchScript types no variable-length tuples.
            boxes=[list(box) for box in attrs.boxes],
            variance=attrs.variance,
            offset=attrs.offset,
            clip=attrs.clip,
            image_size=attrs.image_size,
            step=attrs.step,
        )
        return Emission(forward=forward, helpers=("prior_box",))


CODE_TYPES = {1: "CORNER", 2: "CENTER_SIZE", 3: "CORNER_SIZE"}


@dataclass(frozen=True)
class DetectionOutputAttrs(Attrs):
    num_classes: int
    share_location: bool
    background_label: int
    nms_threshold: float
    top_k: int
    eta: float
    keep_top_k: int
    confidence_threshold: float | None
    code_type: str
    variance_encoded_in_target: bool
    clip: bool  # OpenCV's extension: clip decoded boxes to [0, 1] before NMS


@register
class DetectionOutput(Layer[DetectionOutputAttrs]):
    """Decode the boxes, run per-class NMS and keep the best: Caffe's CPU DetectionOutput.

    Its output is (1, 1, rows, 7), one row [image, label, score, xmin, ymin, xmax, ymax] per
    detection, in label order then by score; with no detection at all, one row of -1 per image
    (with its image index). The number of rows is known only at run time.

    Source: weiliu89/caffe (branch ssd), src/caffe/layers/detection_output_layer.cpp
    (Forward_cpu) and src/caffe/util/bbox_util.cpp (DecodeBBoxes, ApplyNMSFast).
    """

    types = ("DetectionOutput",)
    bottoms = (3, 3)

    def parse(self, layer: LayerSource) -> DetectionOutputAttrs:
        p = layer.param.detection_output_param
        if not p.HasField("num_classes") or p.num_classes < 1:
            raise fail(layer, "detection_output_param.num_classes is required")
        nms = p.nms_param
        if nms.nms_threshold < 0 or not 0 < nms.eta <= 1:
            raise fail(layer, "nms_threshold must be >= 0 and eta in (0, 1]")
        if p.code_type not in CODE_TYPES:
            raise fail(layer, f"unknown code_type {p.code_type}")
        return DetectionOutputAttrs(
            num_classes=int(p.num_classes),
            share_location=bool(p.share_location),
            background_label=int(p.background_label_id),
            nms_threshold=f32(nms.nms_threshold),
            top_k=int(nms.top_k) if nms.HasField("top_k") else -1,
            eta=f32(nms.eta),
            keep_top_k=int(p.keep_top_k),
            confidence_threshold=(
                f32(p.confidence_threshold) if p.HasField("confidence_threshold") else None
            ),
            code_type=CODE_TYPES[p.code_type],
            variance_encoded_in_target=bool(p.variance_encoded_in_target),
            clip=bool(p.clip),
        )

    def infer(
        self, attrs: DetectionOutputAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        loc, conf, prior = in_shapes
        num_priors = math.prod(prior[2:]) // 4 if len(prior) >= 3 else 0
        loc_classes = 1 if attrs.share_location else attrs.num_classes
        if len(prior) < 3 or prior[1] != 2 or num_priors * 4 != math.prod(prior[2:]):
            raise fail(layer, f"the priors {prior} must be (1, 2, 4 * num_priors)")
        if math.prod(loc[1:]) != num_priors * loc_classes * 4:
            raise fail(layer, f"loc {loc} does not hold {num_priors} priors x {loc_classes} x 4")
        if math.prod(conf[1:]) != num_priors * attrs.num_classes or conf[0] != loc[0]:
            raise fail(
                layer, f"conf {conf} does not hold {num_priors} priors x {attrs.num_classes}"
            )
        return [(1, 1, 1, 7)]

    def emit(self, attrs: DetectionOutputAttrs, ctx: EmitContext) -> Emission:
        loc, conf, prior = ctx.inputs
        forward = call(
            "detection_output",
            loc,
            conf,
            prior,
            num_classes=attrs.num_classes,
            share_location=attrs.share_location,
            background_label=attrs.background_label,
            code_type=attrs.code_type,
            variance_encoded_in_target=attrs.variance_encoded_in_target,
            clip=True if attrs.clip else None,
            confidence_threshold=attrs.confidence_threshold,
            nms_threshold=attrs.nms_threshold,
            top_k=attrs.top_k,
            eta=attrs.eta,
            keep_top_k=attrs.keep_top_k,
        )
        return Emission(
            forward=forward, note="rows vary at run time", helpers=("detection_output",)
        )
