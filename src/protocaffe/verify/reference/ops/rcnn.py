"""Region layers of the R-CNN forks, transcribed from their C++ (CUDA for PSROIPooling, whose
CPU forward the forks leave NOT_IMPLEMENTED).

Sources:
- zhaoweicai/cascade-rcnn @ 2252f461: src/caffe/layers/roi_align_layer.cpp (Forward_cpu),
  psroi_pooling_layer.cu (PSROIPoolingForward, R-FCN's kernel), decode_bbox_layer.cpp
  (Forward_cpu at TEST), box_group_output_layer.cpp (LayerSetUp, Forward_cpu),
  scale_route_layer.cpp (Forward_cpu), src/caffe/util/bbox_util.cpp (DecodeBBoxesWithPrior,
  DecodeGroupBBoxes, ClipBBox, BBoxSize, JaccardOverlap(BBox, BBox, mode), ApplyNMS).
- zhaoweicai/mscnn @ 534bcac5: src/caffe/layers/box_output_layer.cpp (Forward_cpu, nmsMax),
  src/caffe/util/math_functions.cpp (BoxIOU).
Arithmetic is float32 where the C++ is (Dtype, float), element by element.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from protocaffe.verify.reference.params import FLT_MAX, as_f32, f32
from protocaffe.verify.reference.registry import Array, RefLayer, register


def _single(value: Any) -> np.float32:
    """float(value) rounded to float32, typed for mypy (array elements are Any)."""
    out: np.float32 = np.float32(value)
    return out


def _round_half_away(value: np.float32) -> np.float32:
    return _single(math.floor(abs(float(value)) + 0.5) * (1 if value >= 0 else -1))


def roi_align_values(
    features: Array, rois: Array, pooled: tuple[int, int], scale: np.float32, pad_ratio: np.float32
) -> Array:
    """ROIAlignLayer::Forward_cpu."""
    n_, channels, height, width = features.shape
    regions = as_f32(rois).reshape(rois.shape[0], -1)
    grid_h, grid_w = pooled[0] + 1, pooled[1] + 1
    top = np.full((regions.shape[0], channels, grid_h, grid_w), -FLT_MAX, np.float32)
    for n, roi in enumerate(regions):
        batch = int(roi[0])
        if not 0 <= batch < n_:
            raise ValueError(f"region {n} names image {batch} of {n_}")
        pad_w = f32(f32(roi[3] - roi[1] + f32(1)) * pad_ratio)
        pad_h = f32(f32(roi[4] - roi[2] + f32(1)) * pad_ratio)
        start_w = f32(f32(f32(roi[1] - pad_w) * scale) - f32(0.5))
        start_h = f32(f32(f32(roi[2] - pad_h) * scale) - f32(0.5))
        end_w = f32(f32(f32(roi[3] + pad_w) * scale) - f32(0.5))
        end_h = f32(f32(f32(roi[4] + pad_h) * scale) - f32(0.5))
        roi_h, roi_w = f32(end_h - start_h), f32(end_w - start_w)
        bin_h, bin_w = f32(roi_h / f32(pooled[0])), f32(roi_w / f32(pooled[1]))
        data = features[batch]
        for ph in range(grid_h):
            for pw in range(grid_w):
                if roi_h <= 0 or roi_w <= 0:
                    top[n, :, ph, pw] = 0
                    continue
                hf = f32(start_h + f32(f32(ph) * bin_h))
                wf = f32(start_w + f32(f32(pw) * bin_w))
                if hf < -0.5 or hf > height - 0.5 or wf < -0.5 or wf > width - 0.5:
                    top[n, :, ph, pw] = 0
                    continue
                hfloor, wfloor = math.floor(hf), math.floor(wf)
                hceil, wceil = hfloor + 1, wfloor + 1
                hf = f32(min(max(hf, f32(0)), f32(height - 1)))
                wf = f32(min(max(wf, f32(0)), f32(width - 1)))
                hfloor, wfloor = min(max(hfloor, 0), height - 1), min(max(wfloor, 0), width - 1)
                hceil, wceil = min(max(hceil, 0), height - 1), min(max(wceil, 0), width - 1)
                lh, lw = f32(hf - f32(hfloor)), f32(wf - f32(wfloor))
                hh, hw = f32(1 - lh), f32(1 - lw)
                w00, w10, w01, w11 = f32(hw * hh), f32(lw * hh), f32(hw * lh), f32(lw * lh)
                top[n, :, ph, pw] = (
                    w00 * data[:, hfloor, wfloor]
                    + w10 * data[:, hfloor, wceil]
                    + w01 * data[:, hceil, wfloor]
                    + w11 * data[:, hceil, wceil]
                )
    return top


@register("ROIAlign", bottoms=(2, 2))
def roi_align(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.roi_pooling_param
    layer.check(p.pooled_h > 0 and p.pooled_w > 0, "pooled_h and pooled_w must be > 0")
    try:
        top = roi_align_values(
            as_f32(bottoms[0]),
            bottoms[1],
            (int(p.pooled_h), int(p.pooled_w)),
            f32(p.spatial_scale),
            f32(p.pad_ratio),
        )
    except ValueError as exc:
        raise layer.fail(f"Caffe aborts here: {exc}") from None
    return [top]


def psroi_values(
    features: Array, rois: Array, output_dim: int, group: int, scale: np.float32
) -> Array:
    """PSROIPoolingForward, one output element at a time."""
    height, width = features.shape[2], features.shape[3]
    regions = as_f32(rois).reshape(rois.shape[0], -1)
    top = np.zeros((regions.shape[0], output_dim, group, group), np.float32)
    for n, roi in enumerate(regions):
        batch = int(roi[0])
        start_w = f32(_round_half_away(roi[1]) * scale)
        start_h = f32(_round_half_away(roi[2]) * scale)
        end_w = f32(f32(float(_round_half_away(roi[3])) + 1.0) * scale)
        end_h = f32(f32(float(_round_half_away(roi[4])) + 1.0) * scale)
        roi_w = f32(max(float(f32(end_w - start_w)), 0.1))
        roi_h = f32(max(float(f32(end_h - start_h)), 0.1))
        bin_h, bin_w = f32(roi_h / f32(group)), f32(roi_w / f32(group))
        for ctop in range(output_dim):
            for ph in range(group):
                for pw in range(group):
                    hstart = math.floor(f32(f32(f32(ph) * bin_h) + start_h))
                    wstart = math.floor(f32(f32(f32(pw) * bin_w) + start_w))
                    hend = math.ceil(f32(f32(f32(ph + 1) * bin_h) + start_h))
                    wend = math.ceil(f32(f32(f32(pw + 1) * bin_w) + start_w))
                    hstart, hend = min(max(hstart, 0), height), min(max(hend, 0), height)
                    wstart, wend = min(max(wstart, 0), width), min(max(wend, 0), width)
                    if hend <= hstart or wend <= wstart:
                        continue  # is_empty: 0
                    c = (ctop * group + ph) * group + pw
                    window = features[batch, c, hstart:hend, wstart:wend].astype(np.float32)
                    total = f32(0)
                    for value in window.reshape(-1):
                        total = f32(total + value)
                    top[n, ctop, ph, pw] = f32(total / f32((hend - hstart) * (wend - wstart)))
    return top


@register("PSROIPooling", bottoms=(2, 2))
def psroi_pooling(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.psroi_pooling_param
    layer.check(p.output_dim > 0 and p.group_size > 0, "output_dim and group_size must be > 0")
    x = as_f32(bottoms[0])
    group = int(p.group_size)
    layer.check(
        x.shape[1] == p.output_dim * group * group,
        "input channel number does not match layer parameters",
    )
    return [psroi_values(x, bottoms[1], int(p.output_dim), group, f32(p.spatial_scale))]


def _means_stds(layer: RefLayer) -> tuple[list[np.float32], list[np.float32]]:
    p = layer.param.bbox_reg_param
    if len(p.bbox_mean) > 0 and len(p.bbox_std) > 0:
        layer.check(len(p.bbox_mean) == 4 and len(p.bbox_std) == 4, "need 4 means and 4 stds")
        layer.check(min(p.bbox_std) > 0, "bbox_std must be > 0")
        return [f32(v) for v in p.bbox_mean], [f32(v) for v in p.bbox_std]
    return [f32(0)] * 4, [f32(1)] * 4


@register("DecodeBBox", bottoms=(2, 3))
def decode_bbox(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """DecodeBBoxLayer::Forward_cpu at TEST (every box kept)."""
    layer.check(len(bottoms) == 2, "a third bottom is for TRAIN (CHECK(phase_ == TRAIN))")
    deltas, priors = as_f32(bottoms[0]), as_f32(bottoms[1])
    layer.check(deltas.shape[1] == 8 and priors.shape[1] == 5, "bottoms must be (R, 8), (R, 5)")
    means, stds = _means_stds(layer)
    num = priors.shape[0]
    d, r = deltas.reshape(num, -1), priors.reshape(num, -1)
    top = np.zeros((num, 5, 1, 1), np.float32)
    for i in range(num):
        xmin, ymin, xmax, ymax = r[i, 1], r[i, 2], r[i, 3], r[i, 4]
        pw, ph = f32(f32(xmax - xmin) + f32(1)), f32(f32(ymax - ymin) + f32(1))
        cx, cy = f32(0.5 * float(f32(xmax + xmin))), f32(0.5 * float(f32(ymax + ymin)))
        c = 4  # class 1 of the class-agnostic (background, foreground) deltas
        bx = f32(f32(d[i, c] * stds[0]) + means[0])
        by = f32(f32(d[i, c + 1] * stds[1]) + means[1])
        bw = f32(f32(d[i, c + 2] * stds[2]) + means[2])
        bh = f32(f32(d[i, c + 3] * stds[3]) + means[3])
        tx, ty = f32(f32(bx * pw) + cx), f32(f32(by * ph) + cy)
        tw, th = f32(pw * f32(math.exp(float(bw)))), f32(ph * f32(math.exp(float(bh))))
        tx, ty = f32(tx - f32(f32(tw - f32(1)) / f32(2))), f32(ty - f32(f32(th - f32(1)) / f32(2)))
        top[i, :, 0, 0] = [r[i, 0], tx, ty, f32(f32(tx + tw) - f32(1)), f32(f32(ty + th) - f32(1))]
    return [top]


def _bbox_size(b: list[np.float32]) -> np.float32:
    if b[2] < b[0] or b[3] < b[1]:
        return _single(0)
    return _single(f32(f32(b[2] - b[0]) + f32(1)) * f32(f32(b[3] - b[1]) + f32(1)))


def _jaccard(a: list[np.float32], b: list[np.float32], mode: str) -> np.float32:
    """cascade-rcnn's JaccardOverlap(BBox, BBox, iou_mode)."""
    if a[2] < a[0] or a[3] < a[1] or b[2] < b[0] or b[3] < b[1]:
        return _single(0)
    ix0, iy0 = max(a[0], b[0]), max(a[1], b[1])
    ix1, iy1 = min(a[2], b[2]), min(a[3], b[3])
    if ix0 > ix1 or iy0 >= iy1:
        inter = f32(0)
    else:
        inter = f32(f32(f32(ix1 - ix0) + f32(1)) * f32(f32(iy1 - iy0) + f32(1)))
    s1, s2 = _bbox_size(a), _bbox_size(b)
    if mode == "IOMU":
        union = min(s1, s2)
    elif mode == "IOFU":
        union = s1
    else:
        union = f32(f32(s1 + s2) - inter)
    return _single(0) if union <= 0 else _single(inter / union)


def _proposal_tops(batch_boxes: list[list[list[float]]], two: bool) -> list[Array]:
    rows = [[float(i)] + box[:5] for i, boxes in enumerate(batch_boxes) for box in boxes]
    if not rows:
        first = np.array([0, 1, 1, 10, 10], np.float32).reshape(1, 5, 1, 1)
        return [first, np.zeros((1, 6, 1, 1), np.float32)][: 2 if two else 1]
    table = np.asarray(rows, np.float32)
    tops = [table[:, :5].reshape(-1, 5, 1, 1), table.reshape(-1, 6, 1, 1)]
    return tops[: 2 if two else 1]


@register("BoxGroupOutput", bottoms=(2, None), tops=(1, 2))
def box_group_output(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.box_group_output_param
    layer.check(len(bottoms) % 2 == 0, "bottoms come in pairs")
    pairs = len(bottoms) // 2
    layer.check(pairs == len(p.box_group_param), "one box_group_param per bottom pair")
    means, stds = _means_stds(layer)
    field_whr, field_xyr = f32(p.field_whr), f32(p.field_xyr)
    bounds = [
        f32(f32(-1) / field_xyr),
        f32(f32(1) / field_xyr),
        f32(math.log(float(f32(f32(1) / field_whr)))),
        f32(math.log(float(field_whr))),
    ]
    groups = [len(g.field_h) for g in p.box_group_param]
    num = bottoms[0].shape[0] // groups[0]
    fg_thr, iou_thr, min_size = f32(p.fg_thr), float(f32(p.iou_thr)), f32(p.min_size)
    batch_boxes: list[list[list[float]]] = []
    for i in range(num):
        boxes: list[list[np.float32]] = []
        for j, group in enumerate(p.box_group_param):
            probs, deltas = as_f32(bottoms[2 * j]), as_f32(bottoms[2 * j + 1])
            height, width = deltas.shape[2], deltas.shape[3]
            stride = f32(group.stride)
            img_w, img_h = f32(width * int(group.stride)), f32(height * int(group.stride))
            for k in range(len(group.field_h)):
                g = i * len(group.field_h) + k
                fw, fh = f32(group.field_w[k]), f32(group.field_h[k])
                for s in range(height * width):
                    fg = f32(f32(1) - probs[g].reshape(probs.shape[1], -1)[0, s])
                    if fg < fg_thr:
                        continue
                    h, w = s // width, s % width
                    d = deltas[g].reshape(4, -1)[:, s]
                    bx = f32(f32(d[0] * stds[0]) + means[0])
                    by = f32(f32(d[1] * stds[1]) + means[1])
                    bw = f32(f32(d[2] * stds[2]) + means[2])
                    bh = f32(f32(d[3] * stds[3]) + means[3])
                    bx, by = min(bounds[1], max(bounds[0], bx)), min(bounds[1], max(bounds[0], by))
                    bw, bh = min(bounds[3], max(bounds[2], bw)), min(bounds[3], max(bounds[2], bh))
                    bx = f32(f32(bx * fw) + f32(f32(f32(w) + f32(0.5)) * stride))
                    by = f32(f32(by * fh) + f32(f32(f32(h) + f32(0.5)) * stride))
                    bw, bh = f32(fw * f32(math.exp(float(bw)))), f32(fh * f32(math.exp(float(bh))))
                    bx, by = f32(bx - f32(bw / f32(2))), f32(by - f32(bh / f32(2)))
                    box = [bx, by, f32(f32(bx + bw) - f32(1)), f32(f32(by + bh) - f32(1))]
                    box = [
                        max(f32(0), box[0]),
                        max(f32(0), box[1]),
                        min(img_w, box[2]),
                        min(img_h, box[3]),
                    ]  # ClipBBox
                    if (
                        f32(f32(box[2] - box[0]) + f32(1)) >= min_size
                        and f32(f32(box[3] - box[1]) + f32(1)) >= min_size
                    ):
                        boxes.append(box + [fg])
        if not boxes:
            batch_boxes.append([])
            continue
        boxes.sort(key=lambda b: -float(b[4]))  # partial_sort's ties are unspecified
        if p.max_nms_num > 0:
            boxes = boxes[: int(p.max_nms_num)]
        keep = [True] * len(boxes)
        for a in range(len(boxes)):
            if not keep[a]:
                continue
            for b in range(a + 1, len(boxes)):
                if keep[b] and _jaccard(boxes[a], boxes[b], p.nms_type) > iou_thr:
                    keep[b] = False
        kept = [[float(v) for v in box] for box, k in zip(boxes, keep, strict=True) if k]
        if p.max_post_nms_num > 0:
            kept = kept[: int(p.max_post_nms_num)]
        batch_boxes.append(kept)
    return _proposal_tops(batch_boxes, len(layer.tops) == 2)


def _box_iou(a: list[np.float32], b: list[np.float32], mode: str) -> np.float32:
    """mscnn's BoxIOU(x, y, w, h, ...)."""
    x1, y1, w1, h1 = a[1], a[2], a[3], a[4]
    x2, y2, w2, h2 = b[1], b[2], b[3], b[4]
    if w1 <= 0 or h1 <= 0 or w2 <= 0 or h2 <= 0:
        return _single(0)
    tlx, tly = max(x1, x2), max(y1, y2)
    brx, bry = min(f32(x1 + w1), f32(x2 + w2)), min(f32(y1 + h1), f32(y2 + h2))
    over = f32(0) if (tlx >= brx or tly >= bry) else f32(f32(brx - tlx) * f32(bry - tly))
    a1, a2 = f32(w1 * h1), f32(w2 * h2)
    if mode == "IOMU":
        union = min(a1, a2)
    elif mode == "IOFU":
        union = a1
    else:
        union = f32(f32(a1 + a2) - over)
    return _single(over / union)


@register("BoxOutput", bottoms=(1, None), tops=(1, 2))
def box_output(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.box_output_param
    count = len(bottoms)
    layer.check(
        count == len(p.field_h) == len(p.field_w) == len(p.downsample_rate),
        "field_h, field_w and downsample_rate need one value per bottom",
    )
    means, stds = _means_stds(layer)
    field_whr, field_xyr = f32(p.field_whr), f32(p.field_xyr)
    min_whr, max_whr = f32(math.log(float(f32(f32(1) / field_whr)))), f32(
        math.log(float(field_whr))
    )
    min_xyr, max_xyr = f32(f32(-1) / field_xyr), f32(f32(1) / field_xyr)
    fg_thr, iou_thr, min_size = f32(p.fg_thr), float(f32(p.iou_thr)), f32(p.min_size)
    num = bottoms[0].shape[0]
    batch_boxes: list[list[list[float]]] = [[] for _ in range(num)]
    for i in range(num):
        boxes: list[list[np.float32]] = []
        pairs: list[tuple[np.float32, int]] = []
        for j, blob in enumerate(bottoms):
            data = as_f32(blob)[i].reshape(blob.shape[1], -1)
            classes = blob.shape[1] - 4
            height, width = blob.shape[2], blob.shape[3]
            rate = f32(p.downsample_rate[j])
            img_w, img_h = int(width * rate), int(height * rate)
            fw, fh = f32(p.field_w[j]), f32(p.field_h[j])
            for s in range(height * width):
                h, w = s // width, s % width
                fg = f32(-FLT_MAX)
                for k in range(1, classes):
                    fg = max(fg, data[k, s])
                fg = f32(fg - data[0, s])
                if fg < fg_thr:
                    continue
                bx, by, bw, bh = (data[classes + q, s] for q in range(4))
                bx, by = f32(f32(bx * stds[0]) + means[0]), f32(f32(by * stds[1]) + means[1])
                bw, bh = f32(f32(bw * stds[2]) + means[2]), f32(f32(bh * stds[3]) + means[3])
                bx, by = min(max_xyr, max(min_xyr, bx)), min(max_xyr, max(min_xyr, by))
                bx = f32(f32(bx * fw) + f32(f32(f32(w) + f32(0.5)) * rate))
                by = f32(f32(by * fh) + f32(f32(f32(h) + f32(0.5)) * rate))
                bw, bh = min(max_whr, max(min_whr, bw)), min(max_whr, max(min_whr, bh))
                bw, bh = f32(fw * f32(math.exp(float(bw)))), f32(fh * f32(math.exp(float(bh))))
                bx, by = f32(bx - f32(bw / f32(2))), f32(by - f32(bh / f32(2)))
                bx, by = max(bx, f32(0)), max(by, f32(0))
                bw, bh = min(bw, f32(f32(img_w) - bx)), min(bh, f32(f32(img_h) - by))
                if bw >= min_size and bh >= min_size:
                    pairs.append((fg, len(boxes)))
                    boxes.append([f32(i), bx, by, bw, bh, fg])
        if not boxes:
            continue
        pairs.sort(reverse=True)  # std::sort with std::greater<pair<Dtype, int>>
        ordered = [boxes[index] for _, index in pairs]
        if p.max_nms_num > 0 and len(ordered) > p.max_nms_num:
            ordered = ordered[: int(p.max_nms_num)]
        keep = [True] * len(ordered)
        for a in range(len(ordered)):
            if not keep[a]:
                continue
            for b in range(a + 1, len(ordered)):
                if keep[b] and _box_iou(ordered[a], ordered[b], p.nms_type) > iou_thr:
                    keep[b] = False
        kept = [box for box, k in zip(ordered, keep, strict=True) if k]
        if p.max_post_nms_num > 0:
            kept = kept[: int(p.max_post_nms_num)]
        batch_boxes[i] = [
            [
                float(b[1]),
                float(b[2]),
                float(f32(b[1] + b[3])),
                float(f32(b[2] + b[4])),
                float(b[5]),
            ]
            for b in kept
        ]
    return _proposal_tops(batch_boxes, len(layer.tops) == 2)


@register("ScaleRoute", bottoms=(1, None), tops=(1, None))
def scale_route(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.scale_route_param
    layer.check(len(bottoms) == len(layer.tops), "one top per bottom")
    low = f32(p.low_scale) if p.HasField("low_scale") else f32(0)
    high = f32(p.high_scale) if p.HasField("high_scale") else f32(FLT_MAX)
    if p.HasField("low_scale") and p.HasField("high_scale"):
        middle = f32(math.sqrt(float(f32(low * high))))
    elif p.HasField("low_scale"):
        middle = low
    elif p.HasField("high_scale"):
        middle = high
    else:
        middle = f32(256)
    rois = as_f32(bottoms[0]).reshape(bottoms[0].shape[0], -1)
    layer.check(rois.shape[1] == 5, "the regions must be (R, 5)")
    selected: list[int] = []
    best, best_index = f32(FLT_MAX), -1
    for i, roi in enumerate(rois):
        scale = f32(math.sqrt(float(_bbox_size([roi[1], roi[2], roi[3], roi[4]]))))
        if low <= scale < high:
            selected.append(i)
        with np.errstate(divide="ignore"):
            distance = f32(abs(math.log2(float(f32(scale / middle))))) if scale > 0 else f32(np.inf)
        if distance < best:
            best, best_index = distance, i
    if not selected:
        layer.check(best_index >= 0, "no region at all")
        selected = [best_index]
    return [as_f32(b)[selected] for b in bottoms]
