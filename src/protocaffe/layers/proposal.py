"""Region proposals of the oracle build's (PVANet's) C++ Proposal layer: anchors decoded by the
RPN's box deltas, clipped, the small ones zero-scored, sorted, and thinned by greedy NMS."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from protocaffe.ir.graph import Attrs, Shape
from protocaffe.layers.base import Emission, EmitContext, Layer, LayerSource, call, f32, fail
from protocaffe.layers.registry import register


def _single(value: float) -> float:
    """`value` rounded to float32 (the C++ Dtype)."""
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


def proposal_anchors(
    base_size: int, ratios: Sequence[float], scales: Sequence[float]
) -> list[tuple[float, float, float, float]]:
    """(x1, y1, x2, y2) per (ratio, scale), ratio major, as proposal_layer.cpp's
    generate_anchors computes them: float32, but for the rounded half-sizes, which C++ works
    out in double (`* 1.0`) and rounds with (int)(x + 0.5)."""
    area = _single(float(base_size * base_size))
    center = _single(0.5 * _single(base_size - 1.0))
    anchors = []
    for ratio in ratios:
        width = _single(math.sqrt(_single(area / ratio)))
        height = _single(width * ratio)
        for scale in scales:
            half_w = _single(0.5 * int(_single(width * scale) / base_size - 1.0 + 0.5))
            half_h = _single(0.5 * int(_single(height * scale) / base_size - 1.0 + 0.5))
            anchors.append(
                (
                    _single(center - half_w),
                    _single(center - half_h),
                    _single(center + half_w),
                    _single(center + half_h),
                )
            )
    return anchors


@dataclass(frozen=True)
class ProposalAttrs(Attrs):
    feat_stride: int
    base_size: int
    min_size: int
    ratios: tuple[float, ...]
    scales: tuple[float, ...]
    pre_nms_topn: int
    post_nms_topn: int
    nms_thresh: float


@register
class Proposal(Layer[ProposalAttrs]):
    """RPN proposals: bottoms scores (N, 2A, H, W) (foreground: the last A channels), box
    deltas (N, 4A, H, W) and im_info (its first row's height and width serve every image);
    tops rois (R, 5) = (image, x1, y1, x2, y2) and, optionally, their scores (R). R is known
    only at run time (at most N * post_nms_topn, the shape shown).

    Per image: anchor k at (h, w) shifted by (w, h) * feat_stride, decoded with +1 widths,
    clipped to the image; a box narrower or lower than min_size (not scaled by im_info) keeps
    its place with score 0; the best pre_nms_topn by score go to greedy NMS (IoU with +1
    areas above nms_thresh suppresses), which stops at post_nms_topn.

    Source: brocolli-caffe 9.0.2 (the oracle's build), src/caffe/layers/proposal_layer.cpp
    (generate_anchors, enumerate_proposals_cpu, transform_box, sort_box, Forward_cpu),
    src/caffe/util/nms.cpp (nms_cpu, iou)."""

    types = ("Proposal",)
    bottoms = (3, 3)
    tops = (1, 2)

    def parse(self, layer: LayerSource) -> ProposalAttrs:
        p = layer.param.proposal_param
        if not len(p.ratio) or not len(p.scale):
            raise fail(
                layer,
                "proposal_param needs ratio and scale values (without them Caffe sorts an "
                "empty list and reads past it)",
            )
        if p.feat_stride <= 0 or p.base_size <= 0:
            raise fail(layer, "feat_stride and base_size must be positive")
        if any(r <= 0 for r in p.ratio):
            raise fail(layer, f"ratio values must be positive, got {list(p.ratio)}")
        return ProposalAttrs(
            int(p.feat_stride),
            int(p.base_size),
            int(p.min_size),
            tuple(f32(r) for r in p.ratio),
            tuple(f32(s) for s in p.scale),
            int(p.pre_nms_topn),
            int(p.post_nms_topn),
            f32(p.nms_thresh),
        )

    def infer(
        self, attrs: ProposalAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        scores, deltas, info = in_shapes
        anchors = len(attrs.ratios) * len(attrs.scales)
        if len(scores) != 4 or scores[1] != 2 * anchors:
            raise fail(
                layer,
                f"the scores {scores} must be (N, 2 * {anchors} anchors, H, W) for "
                f"{len(attrs.ratios)} ratios x {len(attrs.scales)} scales",
            )
        if deltas != (scores[0], 4 * anchors) + scores[2:]:
            raise fail(layer, f"the box deltas {deltas} must be (N, 4 * {anchors} anchors, H, W)")
        if math.prod(info) < 2:
            raise fail(layer, f"im_info {info} must hold the image height and width")
        if attrs.post_nms_topn <= 0:
            raise fail(layer, "post_nms_topn must be positive")
        rows = scores[0] * attrs.post_nms_topn
        return [(rows, 5), (rows,)][: len(layer.tops)]

    def emit(self, attrs: ProposalAttrs, ctx: EmitContext) -> Emission:
        anchors = proposal_anchors(attrs.base_size, attrs.ratios, attrs.scales)
        rows = ("[" + ", ".join(repr(f32(v)) for v in anchor) + "]" for anchor in anchors)
        literal = "[" + ", ".join(rows) + "]"
        forward = call(
            "caffe_proposal",
            *ctx.inputs,
            literal,
            feat_stride=attrs.feat_stride,
            min_size=attrs.min_size,
            pre_nms_topn=attrs.pre_nms_topn,
            post_nms_topn=attrs.post_nms_topn,
            nms_thresh=attrs.nms_thresh,
        )
        if len(ctx.out_shapes) == 1:
            forward += "[0]"
        return Emission(forward=forward, note="rows known at run time", helpers=("caffe_proposal",))
