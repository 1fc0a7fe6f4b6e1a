"""A protocaffe plugin: py-faster-rcnn's region proposal layer.

Faster R-CNN's test net computes its regions of interest in a `Python` layer
(`python_param { module: 'rpn.proposal_layer' layer: 'ProposalLayer' }`), which protocaffe
cannot know. This module teaches it that one layer. Use it with

    PYTHONPATH=examples/plugins protocaffe convert test.prototxt weights.caffemodel -o out \\
        --plugin faster_rcnn_proposal

The generated model.py stays self-contained: the proposal code below is copied into it as a
helper, and it imports nothing but torch.

For `protocaffe verify`, the layer also has a numpy `reference`: py-faster-rcnn's
proposal_layer.py as the numpy reference transcribes it (`numpy_reference().ops.proposal`,
written from py-faster-rcnn's source, not from the torch helper below), so that the net
verifies end to end under `--reference numpy` (neither Caffe nor OpenCV runs Python layers).
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from protocaffe.plugins import (
    Attrs,
    Emission,
    EmitContext,
    Layer,
    LayerSource,
    Shape,
    call,
    fail,
    numpy_reference,
    register,
    register_helper,
)

# py-faster-rcnn's TEST configuration (lib/fast_rcnn/config.py).
PRE_NMS_TOP_N, POST_NMS_TOP_N, NMS_THRESHOLD, MIN_SIZE = 6000, 300, 0.7, 16


@dataclass(frozen=True)
class ProposalAttrs(Attrs):
    feat_stride: int
    scales: tuple[int, ...]


@register
class ProposalLayer(Layer[ProposalAttrs]):
    """`Python` layers whose python_param names rpn.proposal_layer.ProposalLayer.

    Registering a type is all-or-nothing, so this plugin owns the `Python` type and refuses
    every other Python layer with a clear message.
    """

    types = ("Python",)
    bottoms = (3, 3)

    def parse(self, layer: LayerSource) -> ProposalAttrs:
        p = layer.param.python_param
        if (p.module, p.layer) != ("rpn.proposal_layer", "ProposalLayer"):
            raise fail(
                layer,
                f"this plugin knows rpn.proposal_layer.ProposalLayer, not {p.module}.{p.layer}",
            )
        try:  # param_str is YAML in py-faster-rcnn; its usual form is also a Python dict body
            params = ast.literal_eval("{" + p.param_str + "}") if p.param_str else {}
        except (SyntaxError, ValueError):
            raise fail(layer, f"cannot read param_str {p.param_str!r}") from None
        return ProposalAttrs(
            int(params.get("feat_stride", 16)), tuple(params.get("scales", (8, 16, 32)))
        )

    def infer(
        self, attrs: ProposalAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        scores, deltas, _ = in_shapes
        anchors = 3 * len(attrs.scales)
        if scores[1] != 2 * anchors or deltas[1] != 4 * anchors:
            raise fail(layer, f"expects {2 * anchors} scores and {4 * anchors} deltas per cell")
        # The number of regions is known at run time only (at most POST_NMS_TOP_N); Caffe's
        # Python layer also declares one row at set-up.
        return [(1, 5)]

    def emit(self, attrs: ProposalAttrs, ctx: EmitContext) -> Emission:
        forward = call(
            "rpn_proposals",
            *ctx.inputs,
            feat_stride=attrs.feat_stride,
            scales=attrs.scales,
            pre_nms_top_n=PRE_NMS_TOP_N,
            post_nms_top_n=POST_NMS_TOP_N,
            nms_threshold=NMS_THRESHOLD,
            min_size=MIN_SIZE,
        )
        return Emission(
            forward=forward, note="regions vary at run time", helpers=("rpn_proposals",)
        )

    def reference(
        self, attrs: ProposalAttrs, inputs: Sequence[Any], blobs: Sequence[Any] = ()
    ) -> list[Any]:
        """py-faster-rcnn's lib/rpn/proposal_layer.py (TEST), in numpy: (R, 5) rows."""
        scores, deltas, im_info = inputs
        proposal = numpy_reference().ops.proposal
        rois = proposal.rpn_proposals(scores, deltas, im_info, attrs.feat_stride, attrs.scales)
        return [rois]


register_helper(
    "rpn_proposals",
    '''
import torch


def rpn_proposals(
    scores: torch.Tensor,
    deltas: torch.Tensor,
    im_info: torch.Tensor,
    feat_stride: int,
    scales: tuple[int, ...],
    pre_nms_top_n: int,
    post_nms_top_n: int,
    nms_threshold: float,
    min_size: int,
) -> torch.Tensor:
    """py-faster-rcnn's ProposalLayer (TEST): shifted anchors, decoded by the deltas, clipped
    to the image, small ones dropped, best pre_nms_top_n, NMS, best post_nms_top_n.
    Returns (R, 5) rows [0, x1, y1, x2, y2]."""
    base = torch.tensor([0.0, 0.0, 15.0, 15.0], dtype=torch.float64)
    w, h = base[2] - base[0] + 1, base[3] - base[1] + 1
    cx, cy = base[0] + 0.5 * (w - 1), base[1] + 0.5 * (h - 1)
    anchors = []
    for ratio in (0.5, 1.0, 2.0):  # generate_anchors: ratios, then scales
        ws = torch.round(torch.sqrt(w * h / ratio))
        hs = torch.round(ws * ratio)
        for scale in scales:
            sw, sh = ws * scale, hs * scale
            half_w, half_h = 0.5 * (sw - 1), 0.5 * (sh - 1)
            anchors.append(torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h]))
    base_anchors = torch.stack(anchors)
    count = base_anchors.shape[0]
    height, width = scores.shape[2], scores.shape[3]
    shift_y, shift_x = torch.meshgrid(
        torch.arange(height, dtype=torch.float64) * feat_stride,
        torch.arange(width, dtype=torch.float64) * feat_stride,
        indexing="ij",
    )
    shifts = torch.stack([shift_x, shift_y, shift_x, shift_y], dim=-1).reshape(-1, 1, 4)
    # bbox_transform_inv computes in the deltas' precision (float32).
    boxes = (base_anchors[None] + shifts).reshape(-1, 4).to(deltas.dtype)
    fg = scores[:, count:].permute(0, 2, 3, 1).reshape(-1)
    d = deltas.permute(0, 2, 3, 1).reshape(-1, 4)
    widths = boxes[:, 2] - boxes[:, 0] + 1.0
    heights = boxes[:, 3] - boxes[:, 1] + 1.0
    ctr_x = boxes[:, 0] + 0.5 * widths + d[:, 0] * widths
    ctr_y = boxes[:, 1] + 0.5 * heights + d[:, 1] * heights
    pred_w, pred_h = torch.exp(d[:, 2]) * widths, torch.exp(d[:, 3]) * heights
    info = im_info.reshape(-1)
    proposals = torch.stack(
        [
            (ctr_x - 0.5 * pred_w).clamp(0, float(info[1]) - 1),
            (ctr_y - 0.5 * pred_h).clamp(0, float(info[0]) - 1),
            (ctr_x + 0.5 * pred_w).clamp(0, float(info[1]) - 1),
            (ctr_y + 0.5 * pred_h).clamp(0, float(info[0]) - 1),
        ],
        dim=1,
    )
    smallest = min_size * float(info[2])
    keep = ((proposals[:, 2] - proposals[:, 0] + 1) >= smallest) & (
        (proposals[:, 3] - proposals[:, 1] + 1) >= smallest
    )
    proposals, fg = proposals[keep], fg[keep]
    order = torch.sort(fg, descending=True, stable=True).indices[:pre_nms_top_n]
    proposals = proposals[order]
    areas = (proposals[:, 2] - proposals[:, 0] + 1) * (proposals[:, 3] - proposals[:, 1] + 1)
    low = torch.maximum(proposals[:, None, :2], proposals[None, :, :2])
    high = torch.minimum(proposals[:, None, 2:], proposals[None, :, 2:])
    inter = (high - low + 1).clamp(min=0).prod(dim=2)
    overlaps = (inter / (areas[:, None] + areas[None, :] - inter)).tolist()
    suppressed = [False] * len(overlaps)
    kept: list[int] = []
    for i in range(len(overlaps)):
        if suppressed[i]:
            continue
        kept.append(i)
        if len(kept) == post_nms_top_n:
            break
        row = overlaps[i]
        for j in range(i + 1, len(overlaps)):
            if row[j] > nms_threshold:
                suppressed[j] = True
    chosen = proposals[kept]
    return torch.cat([torch.zeros(chosen.shape[0], 1), chosen], dim=1)
''',
)
