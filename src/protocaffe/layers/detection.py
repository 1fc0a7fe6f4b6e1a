"""Detection: SSD's PriorBox (default boxes) and DetectionOutput (decoding, per-class NMS)."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from protocaffe.ir.graph import Attrs, Shape
from protocaffe.layers.base import (
    Code,
    Emission,
    EmitContext,
    Layer,
    LayerSource,
    call,
    f32,
    fail,
)
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
    # Per box, where its centre lies in the cell, for the forks that move some priors:
    # (offset_x, offset_y, shift_x, shift_y), the centre being (index + offset) * step + shift
    # in float32. None: every box at `offset`, unshifted (SSD).
    centres: tuple[tuple[float, float, float, float], ...] | None = None


def single(value: float) -> float:
    """`value` rounded to float32. One +, -, *, / or sqrt of float32 operands done in double
    and rounded once gives exactly the float32 operation's result, so this reproduces Caffe's
    float arithmetic."""
    if math.isnan(value):
        return value
    try:
        return float(struct.unpack("<f", struct.pack("<f", value))[0])
    except OverflowError:  # beyond float32's range: infinity, as a float cast gives
        return math.copysign(math.inf, value)


def _sqrt(value: float) -> float:
    """C's sqrt: NaN for a negative value (Caffe computes with aspect ratios <= 0 too)."""
    return math.sqrt(value) if value >= 0 else math.nan


def _divide(a: float, b: float) -> float:
    """IEEE division: a / 0 is an infinity (or NaN for 0 / 0), as in C."""
    if b != 0 or math.isnan(b):
        return a / b
    if a == 0 or math.isnan(a):
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


def legacy_dim(shape: Shape, index: int) -> int:
    """Blob::LegacyShape: the axis, or 1 beyond a blob's axes (num, channels, height, width)."""
    return shape[index] if index < len(shape) else 1


@register
class PriorBox(Layer[PriorBoxAttrs]):
    """SSD's default boxes for one feature map: computed from the feature map's and the image's
    run-time sizes, so they follow the input when the module runs at another resolution.

    The fork truncates min_size and max_size to int before computing a box
    (`int min_size_ = min_sizes_[s]`, Forward_cpu); a bottom with fewer than 4 axes has height
    and width 1 where it has no such axis (the legacy accessors).

    Source: weiliu89/caffe (branch ssd), src/caffe/layers/prior_box_layer.cpp.

    Two forks give the same fields other meanings (`--dialect`): FaceBoxes' densified anchors
    (`faceboxes-priorbox`: sfzhang15/FaceBoxes @ b52cc92f, prior_box_layer.cpp Forward_cpu) and
    TextBoxes' vertically offset pairs (`textboxes-priorbox`: MhLiao/TextBoxes @ fd4d7a96, the
    same file). TextBoxes++' `denser_prior_boxes` (MhLiao/TextBoxes_plusplus @ 39d4898d) is
    a field of its own: each box twice, at (w + offset, h + offset) and (w + offset, h + 1)
    steps.
    """

    types = ("PriorBox",)
    bottoms = (2, 2)

    def computes_in_place(self, attrs: PriorBoxAttrs, in_shapes: Sequence[Shape]) -> bool:
        return False

    def parse(self, layer: LayerSource) -> PriorBoxAttrs:
        p = layer.param.prior_box_param
        min_sizes = [single(v) for v in p.min_size]
        max_sizes = [single(v) for v in p.max_size]
        # The CHECKs of PriorBoxLayer::LayerSetUp, in its order.
        if not min_sizes:
            raise fail(layer, "Caffe aborts here: must provide min_size")
        if any(not s > 0 for s in min_sizes):
            raise fail(layer, "Caffe aborts here: min_size must be positive")
        # Aspect ratios as LayerSetUp builds them: 1 first, no repeats, flips (1 / ar in double,
        # stored as float; a ratio <= 0 gives boxes of side 0, infinity or NaN, as in Caffe).
        ratios = [1.0]
        for ar in (single(v) for v in p.aspect_ratio):
            if any(abs(ar - r) < 1e-6 for r in ratios):
                continue
            ratios.append(ar)
            if p.flip:
                ratios.append(single(_divide(1.0, ar)))
        if max_sizes and len(max_sizes) != len(min_sizes):
            raise fail(
                layer,
                f"Caffe aborts here: {len(max_sizes)} max_size values for {len(min_sizes)} "
                "min_size (CHECK_EQ)",
            )
        if any(not mx > mn for mn, mx in zip(min_sizes, max_sizes, strict=False)):
            raise fail(layer, "Caffe aborts here: max_size must be greater than min_size")
        variance = [f32(v) for v in p.variance]
        if len(variance) > 1 and len(variance) != 4:
            raise fail(
                layer, f"Caffe aborts here: variance needs 1 or 4 values, got {len(variance)}"
            )
        if any(not v > 0 for v in variance):
            raise fail(layer, "Caffe aborts here: variance values must be positive")
        if len(variance) == 0:
            variance = [0.1]
        if len(variance) == 1:
            variance = variance * 4
        image_size = _image_size(layer)
        step = _step(layer)
        if FACEBOXES in layer.dialects:
            sides, where = _faceboxes_boxes(layer, min_sizes, max_sizes, ratios, float(p.offset))
            return PriorBoxAttrs(
                sides, bool(p.clip), _four(variance), image_size, step, f32(p.offset), where
            )
        if TEXTBOXES in layer.dialects:
            sides, where = _textboxes_boxes(layer, min_sizes, max_sizes, ratios)
            clip = bool(p.clip) if p.HasField("clip") else True  # the fork's default
            return PriorBoxAttrs(sides, clip, _four(variance), None, None, 0.5, where)
        # Box sides as Forward_cpu computes them: int sizes, float (sqrt of a float is a
        # float; sqrt(int * int) is a double, stored into a float).
        boxes: list[tuple[float, float]] = []
        for index, size in enumerate(min_sizes):
            mn = int(size)
            boxes.append((float(mn), float(mn)))
            if max_sizes:
                side = single(math.sqrt(mn * int(max_sizes[index])))
                boxes.append((f32(side), f32(side)))
            for ar in ratios:
                if abs(ar - 1.0) < 1e-6:
                    continue
                root = single(_sqrt(ar))
                boxes.append((f32(single(mn * root)), f32(single(_divide(mn, root)))))
        centres: tuple[tuple[float, float, float, float], ...] | None = None
        if p.denser_prior_boxes:
            # TextBoxes++' PriorBoxLayer::Forward_cpu: each box at (w + offset, h + offset)
            # steps, then the same box at (w + offset, h + 1.0) (center_y_offset_1).
            boxes = [box for box in boxes for _ in range(2)]
            o = f32(p.offset)
            centres = tuple(
                (o, o if index % 2 == 0 else 1.0, 0.0, 0.0) for index in range(len(boxes))
            )
        return PriorBoxAttrs(
            tuple(boxes),
            bool(p.clip),
            _four(variance),
            image_size,
            step,
            f32(p.offset),
            centres,
        )

    def degenerate_boxes(self, attrs: PriorBoxAttrs, in_shapes: Sequence[Shape]) -> str | None:
        for width, height in attrs.boxes:
            if not (width > 0 and height > 0):
                return f"a prior of width {width} and height {height}"
        if not attrs.clip or len(in_shapes) < 2:
            return None
        # With clip, a box wholly outside the image becomes [0, 0] or [1, 1] on an axis. The
        # corners as Forward_cpu (and the prior_box helper) compute them: centres in float32,
        # (centre -+ side / 2) / image size in double, stored as float32, then clipped.
        feature, image = in_shapes
        cells = (legacy_dim(feature, 3), legacy_dim(feature, 2))  # (w, h)
        img = attrs.image_size or (legacy_dim(image, 2), legacy_dim(image, 3))  # (h, w)
        sizes = (img[1], img[0])
        if attrs.step is None:
            steps = (single(float(img[1]) / cells[0]), single(float(img[0]) / cells[1]))
        else:
            steps = (attrs.step[1], attrs.step[0])
        same = (attrs.offset, attrs.offset, 0.0, 0.0)
        for box, where in zip(attrs.boxes, attrs.centres or [same] * len(attrs.boxes), strict=True):
            for axis in (0, 1):
                side, offset, shift = box[axis], where[axis], where[2 + axis]
                for index in range(cells[axis]):
                    centre = single(single(single(index + offset) * steps[axis]) + shift)
                    low = single((centre - side / 2.0) / sizes[axis])
                    high = single((centre + side / 2.0) / sizes[axis])
                    if min(max(high, 0.0), 1.0) - min(max(low, 0.0), 1.0) <= 0:
                        what = ("column", "width") if axis == 0 else ("row", "height")
                        return (
                            f"a prior of {what[1]} 0 after clipping, at {what[0]} {index} "
                            "(a box outside the image)"
                        )
        return None

    def infer(
        self, attrs: PriorBoxAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        feature, image = in_shapes
        for shape in (feature, image):
            if len(shape) > 4:
                raise fail(
                    layer,
                    f"Caffe aborts here: Cannot use legacy accessors on Blobs with > 4 axes "
                    f"(a bottom is {shape})",
                )
        cells = legacy_dim(feature, 2) * legacy_dim(feature, 3)
        return [(1, 2, cells * len(attrs.boxes) * 4)]

    def emit(self, attrs: PriorBoxAttrs, ctx: EmitContext) -> Emission:
        feature, image = (
            _as_4d(name, shape) for name, shape in zip(ctx.inputs, ctx.in_shapes, strict=True)
        )
        forward = call(
            "prior_box",
            feature,
            image,
            # A list of [width, height] lists: TorchScript types no variable-length tuples.
            boxes=Code(
                "[" + ", ".join(f"[{_literal(w)}, {_literal(h)}]" for w, h in attrs.boxes) + "]"
            ),
            variance=attrs.variance,
            offset=attrs.offset,
            clip=attrs.clip,
            image_size=attrs.image_size,
            step=attrs.step,
            centres=(
                None
                if attrs.centres is None
                else Code("[" + ", ".join(_list(c) for c in attrs.centres) + "]")
            ),
        )
        return Emission(forward=forward, helpers=("prior_box",))


FACEBOXES, TEXTBOXES = "faceboxes-priorbox", "textboxes-priorbox"


def _four(variance: list[float]) -> tuple[float, float, float, float]:
    return (variance[0], variance[1], variance[2], variance[3])


def _list(values: Sequence[float]) -> str:
    return "[" + ", ".join(_literal(v) for v in values) + "]"


def _faceboxes_boxes(
    layer: LayerSource,
    min_sizes: list[float],
    max_sizes: list[float],
    ratios: list[float],
    offset: float,
) -> tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float, float, float], ...]]:
    """sfzhang15/FaceBoxes' PriorBoxLayer::Forward_cpu: a min_size of 32 (as an int) gives 4 x 4
    boxes shifted by 8 pixels (-16 .. 8), one of 64 gives 2 x 2 shifted by 16 (-16, 0), row
    (y) first; those and any other min_size box span min_size - 1 ((box_width - 1) / 2 either
    side); the max_size and aspect-ratio boxes follow as in SSD. LayerSetUp fixes 21 priors
    (plus one per max_size) for three min_size values, whatever they are."""
    boxes: list[tuple[float, float]] = []
    centres: list[tuple[float, float, float, float]] = []
    o = f32(offset)
    for index, size in enumerate(min_sizes):
        mn = int(size)
        side = float(mn - 1)
        dense = {32: (range(-2, 2), 8), 64: (range(-1, 1), 16)}.get(mn)
        if dense is None:
            boxes.append((side, side))
            centres.append((o, o, 0.0, 0.0))
        else:
            steps, pixels = dense
            for i in steps:
                for j in steps:
                    boxes.append((side, side))
                    centres.append((o, o, float(j * pixels), float(i * pixels)))
        if max_sizes:
            root = f32(single(math.sqrt(mn * int(max_sizes[index]))))
            boxes.append((root, root))
            centres.append((o, o, 0.0, 0.0))
        for ar in ratios:
            if abs(ar - 1.0) < 1e-6:
                continue
            root = single(_sqrt(ar))
            boxes.append((f32(single(mn * root)), f32(single(_divide(mn, root)))))
            centres.append((o, o, 0.0, 0.0))
    if len(min_sizes) == 3 and len(boxes) != 21 + len(max_sizes):
        raise fail(
            layer,
            f"the FaceBoxes fork sets 21 priors (+1 per max_size) for three min_size values, "
            f"this layer computes {len(boxes)}: its top would be partly unset or overrun",
        )
    return tuple(boxes), tuple(centres)


def _textboxes_boxes(
    layer: LayerSource, min_sizes: list[float], max_sizes: list[float], ratios: list[float]
) -> tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float, float, float], ...]]:
    """MhLiao/TextBoxes' PriorBoxLayer::Forward_cpu: one float min_size (not truncated), an
    optional max_size; each box twice, centred at (w + 0.5, h + 0.5) steps and at (w + 0.5,
    h + 1.0); the image size and step come from the bottoms (the fork has no step, offset or
    img_size fields)."""
    p = layer.param.prior_box_param
    if len(min_sizes) != 1 or len(max_sizes) > 1:
        raise fail(layer, "TextBoxes' PriorBox has one min_size and at most one max_size")
    for name in ("img_size", "img_h", "img_w", "step", "step_h", "step_w", "offset"):
        if p.HasField(name):
            raise fail(layer, f"TextBoxes' PriorBox has no {name} field (its caffe.proto)")
    mn = min_sizes[0]
    sides = [(mn, mn)]
    if max_sizes:
        root = single(math.sqrt(single(mn * max_sizes[0])))
        sides.append((root, root))
    for ar in ratios:
        if abs(ar - 1.0) < 1e-6:
            continue
        root = single(_sqrt(ar))
        sides.append((single(mn * root), single(_divide(mn, root))))
    boxes = tuple(side for side in sides for _ in range(2))
    centres = tuple((0.5, 0.5 if index % 2 == 0 else 1.0, 0.0, 0.0) for index in range(len(boxes)))
    return boxes, centres


def _image_size(layer: LayerSource) -> tuple[int, int] | None:
    p = layer.param.prior_box_param
    if p.HasField("img_h") or p.HasField("img_w"):
        if p.HasField("img_size"):
            raise fail(
                layer,
                "Caffe aborts here: Either img_size or img_h/img_w should be specified; not both",
            )
        if not p.img_h > 0 or not p.img_w > 0:
            raise fail(layer, "Caffe aborts here: img_h and img_w should be larger than 0")
        return (int(p.img_h), int(p.img_w))
    if p.HasField("img_size"):
        if not p.img_size > 0:
            raise fail(layer, "Caffe aborts here: img_size should be larger than 0")
        return (int(p.img_size), int(p.img_size))
    return None


def _step(layer: LayerSource) -> tuple[float, float] | None:
    p = layer.param.prior_box_param
    if p.HasField("step_h") or p.HasField("step_w"):
        if p.HasField("step"):
            raise fail(
                layer,
                "Caffe aborts here: Either step or step_h/step_w should be specified; not both",
            )
        if not p.step_h > 0 or not p.step_w > 0:
            raise fail(layer, "Caffe aborts here: step_h and step_w should be larger than 0")
        return (f32(p.step_h), f32(p.step_w))
    if p.HasField("step"):
        if not p.step > 0:
            raise fail(layer, "Caffe aborts here: step should be larger than 0")
        return (f32(p.step), f32(p.step))
    return None


def _as_4d(name: str, shape: Shape) -> str:
    """A bottom of fewer than 4 axes, as the legacy accessors see it (missing axes are 1)."""
    missing = 4 - len(shape)
    return f"{name}[{', '.join(['...'] + ['None'] * missing)}]" if missing > 0 else name


def _literal(value: float) -> str:
    """A float literal, with infinities and NaN (aspect ratios <= 0) spelled as Python can."""
    if math.isnan(value):
        return 'float("nan")'
    if math.isinf(value):
        return 'float("inf")' if value > 0 else '-float("inf")'
    return repr(value)


CODE_TYPES = {1: "CORNER", 2: "CENTER_SIZE", 3: "CORNER_SIZE"}
FLT_MAX = 3.4028234663852886e38


@dataclass(frozen=True)
class DetectionOutputAttrs(Attrs):
    num_classes: int
    share_location: bool
    background_label: int
    nms_threshold: float
    top_k: int
    eta: float
    keep_top_k: int
    confidence_threshold: float
    code_type: str
    variance_encoded_in_target: bool
    clip: bool  # OpenCV's extension: clip decoded boxes to [0, 1] before NMS
    # RefineDet's two-step form (bottoms odm_loc, odm_conf, priors, arm_conf, arm_loc): the
    # objectness below which an anchor is scored as background; None for SSD's three bottoms.
    objectness_score: float | None = None
    # TextBoxes++' use_polygon: true, 12 offsets a prior and a quadrilateral after each row's
    # box; false, 9 offsets and a rotated box (x1, y1, x2, y2, h). None: SSD's.
    polygon: bool | None = None


@register
class DetectionOutput(Layer[DetectionOutputAttrs]):
    """Decode the boxes, run per-class NMS and keep the best: Caffe's CPU DetectionOutput.

    Its output is (1, 1, rows, 7), one row [image, label, score, xmin, ymin, xmax, ymax] per
    detection, in label order then by score; with no detection at all, one row of -1 per image
    (with its image index). The number of rows is known only at run time.

    Source: weiliu89/caffe (branch ssd), src/caffe/layers/detection_output_layer.cpp
    (Forward_cpu) and src/caffe/util/bbox_util.cpp (DecodeBBoxes, ApplyNMSFast).

    With five bottoms it is RefineDet's (sfzhang15/RefineDet @ 52b6fe23, the same files:
    Forward_cpu, OSGetConfidenceScores, CasRegDecodeBBoxesAll): bottoms 3 and 4 are the anchor
    refinement module's objectness (2 scores per prior) and offsets; the priors are first
    decoded by arm_loc (per image), the odm offsets are decoded against those refined priors,
    and a prior whose objectness (score 1) is below `objectness_score` gets scores [1, 0, ...]
    (class 0 certain, whatever background_label_id says). Four bottoms mean different things
    in SSD (an image for visualisation) and RefineDet (arm_conf alone): refused.

    With `use_polygon: true` it is TextBoxes++' (MhLiao/TextBoxes_plusplus @ 39d4898d, the same
    files: Forward_cpu's use_polygon branch, GetLocPredictions, DecodeBBoxPolygon): 12 offsets
    per prior, the box's 4 as SSD's and 8 for a quadrilateral decoded from the prior's corners
    (x1 = var[0] * dx1 * prior_width + xmin; corners xmin,ymin / xmax,ymin / xmax,ymax /
    xmin,ymax); NMS on the boxes as SSD's; rows of 15 (the quadrilateral after the box).
    The fork decodes quadrilaterals only for CENTER_SIZE without variance_encoded_in_target
    (elsewhere it leaves them unset or uninitialised): others are refused. `use_polygon: false`
    is its rotated-box form (DecodeBBoxRBox): 9 offsets per prior, the box's 4 and (x1, y1, x2,
    y2, h), x = var[0] * dx * prior_width + prior_center_x, y likewise with var[1], h =
    exp(var[3] * dh) * prior_height; rows of 12.
    """

    types = ("DetectionOutput",)
    bottoms = (3, 5)

    def computes_in_place(self, attrs: DetectionOutputAttrs, in_shapes: Sequence[Shape]) -> bool:
        return False

    def decodes_boxes(self, attrs: DetectionOutputAttrs) -> int | None:
        # DecodeBBox CHECKs prior_width > 0 and prior_height > 0 for the size-based codes.
        return None if attrs.code_type == "CORNER" else 2

    def parse(self, layer: LayerSource) -> DetectionOutputAttrs:
        p = layer.param.detection_output_param
        if not p.HasField("num_classes") or p.num_classes < 1:
            raise fail(layer, "detection_output_param.num_classes is required")
        nms = p.nms_param
        if nms.nms_threshold < 0 or not 0 < nms.eta <= 1:
            raise fail(layer, "nms_threshold must be >= 0 and eta in (0, 1]")
        if p.code_type not in CODE_TYPES:
            raise fail(layer, f"unknown code_type {p.code_type}")
        if p.share_location and p.background_label_id == -1:
            # DecodeBBoxesAll skips the background label, and shared predictions have label -1.
            raise fail(
                layer,
                "Caffe aborts here: Could not find location predictions for label -1 "
                "(share_location with background_label_id -1)",
            )
        if len(layer.bottoms) == 4:
            raise fail(
                layer,
                "4 bottoms: SSD reads the fourth as an image to draw on, RefineDet as arm_conf; "
                "give SSD's three or RefineDet's five (odm_loc, odm_conf, priors, arm_conf, "
                "arm_loc)",
            )
        refine = len(layer.bottoms) == 5
        polygon = bool(p.use_polygon) if p.HasField("use_polygon") else None
        if polygon is not None and (refine or p.code_type != 2 or p.variance_encoded_in_target):
            raise fail(
                layer,
                "TextBoxes++ decodes quadrilaterals and rotated boxes only for code_type "
                "CENTER_SIZE without variance_encoded_in_target, and has no ARM bottoms",
            )
        if refine and not p.share_location:
            # CasRegDecodeBBoxesAll reads the ARM offsets of label -1 (shared) only.
            raise fail(layer, "RefineDet's DetectionOutput needs share_location (arm_loc)")
        return DetectionOutputAttrs(
            num_classes=int(p.num_classes),
            share_location=bool(p.share_location),
            background_label=int(p.background_label_id),
            nms_threshold=f32(nms.nms_threshold),
            top_k=int(nms.top_k) if nms.HasField("top_k") else -1,
            eta=f32(nms.eta),
            keep_top_k=int(p.keep_top_k),
            # Unset: Caffe keeps every score above -FLT_MAX (detection_output_layer.cpp).
            confidence_threshold=(
                f32(p.confidence_threshold) if p.HasField("confidence_threshold") else f32(-FLT_MAX)
            ),
            code_type=CODE_TYPES[p.code_type],
            variance_encoded_in_target=bool(p.variance_encoded_in_target),
            clip=bool(p.clip),
            objectness_score=f32(p.objectness_score) if refine else None,
            polygon=polygon,
        )

    def infer(
        self, attrs: DetectionOutputAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        loc, conf, prior = in_shapes[:3]
        num_priors = math.prod(prior[2:]) // 4 if len(prior) >= 3 else 0
        loc_classes = 1 if attrs.share_location else attrs.num_classes
        if len(prior) < 3 or prior[1] != 2 or num_priors * 4 != math.prod(prior[2:]):
            raise fail(layer, f"the priors {prior} must be (1, 2, 4 * num_priors)")
        width = {None: 4, True: 12, False: 9}[attrs.polygon]
        if math.prod(loc[1:]) != num_priors * loc_classes * width:
            raise fail(
                layer, f"loc {loc} does not hold {num_priors} priors x {loc_classes} x {width}"
            )
        if math.prod(conf[1:]) != num_priors * attrs.num_classes or conf[0] != loc[0]:
            raise fail(
                layer, f"conf {conf} does not hold {num_priors} priors x {attrs.num_classes}"
            )
        if attrs.objectness_score is not None:
            arm_conf, arm_loc = in_shapes[3:]
            if math.prod(arm_conf[1:]) != num_priors * 2 or arm_conf[0] != loc[0]:
                raise fail(layer, f"arm_conf {arm_conf} does not hold {num_priors} priors x 2")
            if math.prod(arm_loc[1:]) != num_priors * 4 or arm_loc[0] != loc[0]:
                raise fail(layer, f"arm_loc {arm_loc} does not hold {num_priors} priors x 4")
        return [(1, 1, 1, {None: 7, True: 15, False: 12}[attrs.polygon])]

    def emit(self, attrs: DetectionOutputAttrs, ctx: EmitContext) -> Emission:
        loc, conf, prior = ctx.inputs[:3]
        refine: dict[str, object] = {}
        if attrs.objectness_score is not None:
            refine = {
                "arm_conf": Code(ctx.inputs[3]),
                "arm_loc": Code(ctx.inputs[4]),
                "objectness_score": attrs.objectness_score,
            }
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
            polygon=attrs.polygon,
            **refine,
        )
        return Emission(
            forward=forward, note="rows vary at run time", helpers=("detection_output",)
        )
