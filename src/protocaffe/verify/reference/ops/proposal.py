"""py-faster-rcnn's region proposal layer (a Python layer, so no registered type: the Faster
R-CNN plugin gives it to verify).

Source: rbgirshick/py-faster-rcnn, lib/rpn/generate_anchors.py (generate_anchors, _whctrs,
_mkanchors) and lib/rpn/proposal_layer.py (ProposalLayer.forward with the TEST configuration:
pre-NMS top 6000, post-NMS top 300, NMS 0.7, min size 16) with lib/nms/py_cpu_nms.py.
"""

from __future__ import annotations

import numpy as np

from protocaffe.verify.reference.registry import Array

f32 = np.float32


def _whctrs(anchor: Array) -> tuple[float, float, float, float]:
    w, h = anchor[2] - anchor[0] + 1, anchor[3] - anchor[1] + 1
    return w, h, anchor[0] + 0.5 * (w - 1), anchor[1] + 0.5 * (h - 1)


def _mkanchors(ws: Array, hs: Array, x: float, y: float) -> Array:
    ws, hs = ws[:, None], hs[:, None]
    return np.hstack(
        (x - 0.5 * (ws - 1), y - 0.5 * (hs - 1), x + 0.5 * (ws - 1), y + 0.5 * (hs - 1))
    )


def generate_anchors(scales: tuple[int, ...] = (8, 16, 32)) -> Array:
    """py-faster-rcnn lib/rpn/generate_anchors.py (base 16, ratios 0.5, 1, 2)."""
    w, h, x, y = _whctrs(np.array([0, 0, 15, 15], dtype=np.float64))
    ratios = np.array([0.5, 1, 2])
    ws = np.round(np.sqrt(w * h / ratios))
    ratio_anchors = _mkanchors(ws, np.round(ws * ratios), x, y)
    out = []
    for anchor in ratio_anchors:
        w, h, x, y = _whctrs(anchor)
        out.append(_mkanchors(w * np.array(scales), h * np.array(scales), x, y))
    return np.vstack(out)


def rpn_proposals(scores: Array, deltas: Array, im_info: Array, feat_stride: int = 16) -> Array:
    """py-faster-rcnn lib/rpn/proposal_layer.py forward() with the TEST configuration
    (pre-NMS 6000, post-NMS 300, NMS 0.7, min size 16) and py_cpu_nms."""
    anchors0 = generate_anchors()
    count = anchors0.shape[0]
    fg = scores[:, count:, :, :]
    height, width = fg.shape[-2:]
    shift_x, shift_y = np.meshgrid(np.arange(width) * feat_stride, np.arange(height) * feat_stride)
    shifts = np.vstack((shift_x.ravel(), shift_y.ravel(), shift_x.ravel(), shift_y.ravel())).T
    anchors = anchors0.reshape((1, count, 4)) + shifts.reshape((1, -1, 4)).transpose((1, 0, 2))
    anchors = anchors.reshape((-1, 4)).astype(deltas.dtype)
    d = deltas.transpose((0, 2, 3, 1)).reshape((-1, 4))
    fg = fg.transpose((0, 2, 3, 1)).reshape((-1,))
    widths = anchors[:, 2] - anchors[:, 0] + f32(1.0)
    heights = anchors[:, 3] - anchors[:, 1] + f32(1.0)
    ctr_x = anchors[:, 0] + f32(0.5) * widths
    ctr_y = anchors[:, 1] + f32(0.5) * heights
    px, py = d[:, 0] * widths + ctr_x, d[:, 1] * heights + ctr_y
    pw, ph = np.exp(d[:, 2]) * widths, np.exp(d[:, 3]) * heights
    info = im_info[0]
    boxes = np.stack(
        [
            np.clip(px - f32(0.5) * pw, 0, info[1] - 1),
            np.clip(py - f32(0.5) * ph, 0, info[0] - 1),
            np.clip(px + f32(0.5) * pw, 0, info[1] - 1),
            np.clip(py + f32(0.5) * ph, 0, info[0] - 1),
        ],
        axis=1,
    )
    smallest = 16 * info[2]
    keep = ((boxes[:, 2] - boxes[:, 0] + 1) >= smallest) & (
        (boxes[:, 3] - boxes[:, 1] + 1) >= smallest
    )
    boxes, fg = boxes[keep], fg[keep]
    order = np.argsort(-fg, kind="stable")[:6000]
    boxes = boxes[order]
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    rest = np.arange(boxes.shape[0])
    kept = []
    while rest.size > 0:
        i = rest[0]
        kept.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest[1:]]) - np.maximum(x1[i], x1[rest[1:]]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest[1:]]) - np.maximum(y1[i], y1[rest[1:]]) + 1)
        inter = w * h
        overlap = inter / (areas[i] + areas[rest[1:]] - inter)
        rest = rest[1:][overlap <= 0.7]
    chosen = boxes[kept[:300]]
    return np.hstack((np.zeros((chosen.shape[0], 1), f32), chosen))
