"""The oracle build's C++ Proposal layer (PVANet's): RPN anchors decoded, clipped, small ones
zero-scored, partially quicksorted by score, then greedy NMS.

Source: brocolli-caffe 9.0.2 (the oracle's build), src/caffe/layers/proposal_layer.cpp:
generate_anchors (float, but for the half sizes: ROUND(ratio_w * scale * 1.0 / base_size - 1)
in double, ROUND(x) = (int)(x + 0.5)), enumerate_proposals_cpu (proposal order h, w, anchor;
the foreground scores start A * H * W values into each item), transform_box (+1 widths, clip
to [0, img - 1], keep iff both sides >= min_size, not scaled), sort_box (Caffe's own partial
quicksort, transcribed step for step so that tied scores come out in its order),
retrieve_rois_cpu, Forward_cpu (im_info's first two values serve every item); and
src/caffe/util/nms.cpp (nms_cpu: greedy, `iou > thresh` suppresses, stops at post_nms_topn;
iou with +1 areas, 0 for boxes that do not meet).
"""

from __future__ import annotations

import math

import numpy as np

from protocaffe.verify.reference.params import as_f32
from protocaffe.verify.reference.registry import Array, RefLayer, register

f32 = np.float32


def anchors(base_size: int, ratios: list[float], scales: list[float]) -> Array:
    base_area = f32(base_size * base_size)
    center = f32(0.5) * (f32(base_size) - f32(1))
    rows = []
    for ratio in (f32(r) for r in ratios):
        ratio_w = f32(math.sqrt(base_area / ratio))
        ratio_h = f32(ratio_w * ratio)
        for scale in (f32(s) for s in scales):
            scale_w = f32(0.5) * f32(int(float(ratio_w * scale) * 1.0 / base_size - 1.0 + 0.5))
            scale_h = f32(0.5) * f32(int(float(ratio_h * scale) * 1.0 / base_size - 1.0 + 0.5))
            rows.append([center - scale_w, center - scale_h, center + scale_w, center + scale_h])
    return np.array(rows, np.float32)


def _transform(
    box: Array, deltas: Array, img_w: np.float32, img_h: np.float32, min_size: np.float32
) -> Array:
    """transform_box for (K, 4) boxes and (K, 4) deltas (dx, dy, dlog_w, dlog_h): the new
    boxes, and whether each is at least min_size wide and high."""
    w = box[:, 2] - box[:, 0] + f32(1)
    h = box[:, 3] - box[:, 1] + f32(1)
    ctr_x = box[:, 0] + f32(0.5) * w
    ctr_y = box[:, 1] + f32(0.5) * h
    pred_x = deltas[:, 0] * w + ctr_x
    pred_y = deltas[:, 1] * h + ctr_y
    pred_w = np.exp(deltas[:, 2]).astype(np.float32) * w
    pred_h = np.exp(deltas[:, 3]).astype(np.float32) * h
    out = np.stack(
        [
            pred_x - f32(0.5) * pred_w,
            pred_y - f32(0.5) * pred_h,
            pred_x + f32(0.5) * pred_w,
            pred_y + f32(0.5) * pred_h,
        ],
        1,
    ).astype(np.float32)
    limits = np.array([img_w, img_h, img_w, img_h], np.float32) - f32(1)
    out = np.maximum(f32(0), np.minimum(out, limits)).astype(np.float32)
    box_w = out[:, 2] - out[:, 0] + f32(1)
    box_h = out[:, 3] - out[:, 1] + f32(1)
    return np.concatenate([out, ((box_w >= min_size) & (box_h >= min_size))[:, None]], 1)


def sort_box(rows: Array, num_top: int) -> None:
    """proposal_layer.cpp's sort_box(list, 0, n - 1, num_top) in place, over (n, 5) rows by
    column 4, best first; the recursion is kept as an explicit stack (the subranges are
    disjoint, so the order of visiting them does not matter)."""
    stack = [(0, rows.shape[0] - 1)]
    while stack:
        start, end = stack.pop()
        pivot = rows[start, 4]
        left, right = start + 1, end
        while left <= right:
            while left <= end and rows[left, 4] >= pivot:
                left += 1
            while right > start and rows[right, 4] <= pivot:
                right -= 1
            if left <= right:
                rows[[left, right]] = rows[[right, left]]
                left += 1
                right -= 1
        if right > start:
            rows[[start, right]] = rows[[right, start]]
        if start < right - 1:
            stack.append((start, right - 1))
        if right + 1 < num_top and right + 1 < end:
            stack.append((right + 1, end))


def _iou(a: Array, others: Array) -> Array:
    """nms.cpp's iou of box a with each row of others (float32); 0 where they do not meet."""
    apart = (
        (a[0] > others[:, 2])
        | (a[1] > others[:, 3])
        | (a[2] < others[:, 0])
        | (a[3] < others[:, 1])
    )
    width = np.maximum(
        f32(0), np.minimum(a[2], others[:, 2]) - np.maximum(a[0], others[:, 0]) + f32(1)
    )
    height = np.maximum(
        f32(0), np.minimum(a[3], others[:, 3]) - np.maximum(a[1], others[:, 1]) + f32(1)
    )
    area = width * height
    area_a = (a[2] - a[0] + f32(1)) * (a[3] - a[1] + f32(1))
    area_b = (others[:, 2] - others[:, 0] + f32(1)) * (others[:, 3] - others[:, 1] + f32(1))
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = (area / (area_a + area_b - area)).astype(np.float32)
    result: Array = np.where(apart, f32(0), iou)
    return result


def nms(boxes: Array, threshold: np.float32, max_out: int) -> list[int]:
    """nms_cpu: box i, if alive, is kept and kills every later box with iou > threshold (a
    dead box killed again stays dead, so the inner loop is done for all later boxes at once)."""
    dead = np.zeros(boxes.shape[0], bool)
    kept: list[int] = []
    for i in range(boxes.shape[0]):
        if dead[i]:
            continue
        kept.append(i)
        if len(kept) == max_out:
            break
        dead[i + 1 :] |= _iou(boxes[i], boxes[i + 1 :]) > threshold
    return kept


@register("Proposal", bottoms=(3, 3), tops=(1, 2))
def proposal(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.proposal_param
    scores, deltas, info = (as_f32(b) for b in bottoms)
    base = anchors(int(p.base_size), list(p.ratio), list(p.scale))
    count = base.shape[0]
    layer.check(count > 0, "no anchors: sort_box reads an empty list (undefined)")
    layer.check(scores.ndim == 4 and deltas.ndim == 4, "scores and deltas must be 4-D")
    num, _, height, width = scores.shape
    layer.check(
        scores.shape[1] >= 2 * count and deltas.shape[1] >= 4 * count,
        f"scores {scores.shape} and deltas {deltas.shape} are too small for {count} anchors",
    )
    img_h, img_w = f32(info.reshape(-1)[0]), f32(info.reshape(-1)[1])
    min_size = f32(int(p.min_size))
    stride = int(p.feat_stride)
    shift_x = np.arange(width, dtype=np.float32) * f32(stride)
    shift_y = np.arange(height, dtype=np.float32) * f32(stride)
    grid = np.stack(np.meshgrid(shift_x, shift_y), -1)  # (H, W, 2): x, y
    boxes = (np.concatenate([grid, grid], -1)[:, :, None, :] + base[None, None]).reshape(-1, 4)
    rois, roi_scores = [], []
    for n in range(num):
        d = deltas[n, : 4 * count].reshape(count, 4, height, width).transpose(2, 3, 0, 1)
        fg = scores[n].reshape(-1)[count * height * width :][: count * height * width]
        fg = fg.reshape(count, height, width).transpose(1, 2, 0).reshape(-1)
        decoded = _transform(boxes, d.reshape(-1, 4), img_w, img_h, min_size)
        rows = np.concatenate([decoded[:, :4], (decoded[:, 4] * fg)[:, None]], 1)
        rows = rows.astype(np.float32)
        sort_box(rows, int(p.pre_nms_topn))
        top_n = min(rows.shape[0], int(p.pre_nms_topn))
        kept = nms(rows[:top_n], f32(p.nms_thresh), int(p.post_nms_topn))
        picked = rows[kept]
        rois.append(np.concatenate([np.full((len(kept), 1), n, np.float32), picked[:, :4]], 1))
        roi_scores.append(picked[:, 4])
    tops = [np.concatenate(rois).astype(np.float32), np.concatenate(roi_scores).astype(np.float32)]
    return tops[: len(layer.tops)]
