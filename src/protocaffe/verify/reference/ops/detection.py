"""SSD's PriorBox and DetectionOutput.

Sources: weiliu89/caffe (ssd branch):
- src/caffe/layers/prior_box_layer.cpp (LayerSetUp: aspect ratios 1 first, then each new
  one and, with flip, its inverse; one more prior per max_size; variance 1 or 4 values,
  default 0.1; img_size / img_h, img_w; step / step_h, step_w. Forward_cpu: per position the
  min_size prior, the sqrt(min * max) prior, then the other aspect ratios; min_size and
  max_size are truncated to int (`int min_size_ = min_sizes_[s]`); coordinates computed in
  double from float centers and stored as float; clip to [0, 1]).
- src/caffe/layers/detection_output_layer.cpp (Forward_cpu) and src/caffe/util/bbox_util.cpp
  (GetLocPredictions, GetConfidenceScores, GetPriorBBoxes, DecodeBBox, GetMaxScoreIndex:
  scores above the threshold, std::stable_sort by score, top_k; ApplyNMSFast; JaccardOverlap
  with the decoded box's stored size; keep_top_k over the image by std::sort of (score, label,
  index) pairs; rows by image, label, then kept order; no detection at all: one row [image, -1,
  ...] per image). std::sort is not stable: equal scores come out in the order libstdc++'s
  introsort leaves them, so `std_sort` below transcribes that algorithm (GCC's
  bits/stl_algo.h and bits/stl_heap.h: __introsort_loop, __move_median_to_first,
  __unguarded_partition, heap sort past the depth limit, __final_insertion_sort with a
  threshold of 16), which reproduces real Caffe's rows even when scores tie.
- RefineDet's five-bottom form: sfzhang15/RefineDet @ 52b6fe23dc1a160fe710b7734576dca509bf4fae,
  src/caffe/layers/detection_output_layer.cpp (Forward_cpu: bottom[3] arm_conf, bottom[4]
  arm_loc) and src/caffe/util/bbox_util.cpp (OSGetConfidenceScores: a prior whose
  arm_conf[p * 2 + 1] < objectness_score gets scores 1.0 for class 0 and 0.0 for the others;
  CasRegDecodeBBoxesAll: per image, DecodeBBoxes of the priors by the ARM offsets of label -1,
  then DecodeBBoxes of the odm offsets against those decoded priors, same variances).
- TextBoxes++' DetectionOutput with use_polygon: MhLiao/TextBoxes_plusplus @
  39d4898de1504c53a2ed3d67966a57b3595836d0, src/caffe/layers/detection_output_layer.cpp
  (Forward_cpu, use_polygon branch: 15 values a row) and src/caffe/util/bbox_util.cpp
  (GetLocPredictions: 12 values a prior, xmin..ymax then x1, y1 .. x4, y4; DecodeBBoxPolygon,
  CENTER_SIZE: x1 = prior_variance[0] * x1 * prior_width + prior xmin, y1 = prior_variance[1]
  * y1 * prior_height + prior ymin; x2, y2 from xmax, ymin; x3, y3 from xmax, ymax; x4, y4
  from xmin, ymax; ApplyNMSFast on the boxes as SSD's); use_polygon false: 9 values a prior
  (xmin..ymax, x1, y1, x2, y2, h), DecodeBBoxRBox (CENTER_SIZE): x1 = prior_variance[0] * x1 *
  prior_width + prior_center_x, y1 = prior_variance[1] * y1 * prior_height + prior_center_y,
  x2, y2 likewise, h = exp(prior_variance[3] * h) * prior_height; rows of 12.
- FaceBoxes' PriorBox (`--dialect faceboxes-priorbox`): sfzhang15/FaceBoxes @
  b52cc92f9362d3adc08d54666aeb9ebb62fdb7da, src/caffe/layers/prior_box_layer.cpp (LayerSetUp:
  num_priors_ = 21 for three min_size values; Forward_cpu: `int min_size_ == 32` gives boxes
  at center + (j * 8, i * 8), i, j in [-2, 2), 64 at center + (j * 16, i * 16), i, j in [-1, 1),
  other sizes one box; each spans (box_width - 1) / 2. either side).
- TextBoxes' PriorBox (`--dialect textboxes-priorbox`): MhLiao/TextBoxes @
  fd4d7a96dce686938a8485ea5c2e895df592610a, src/caffe/layers/prior_box_layer.cpp (one float
  min_size and max_size; center_x = (w + 0.5) * step_x, center_y = (h + 0.5) * step_y and
  center_y_offset_1 = (h + 1.0) * step_y, each box written at both; clip defaults to true in
  its caffe.proto).
- TextBoxes++' `denser_prior_boxes`: MhLiao/TextBoxes_plusplus @
  39d4898de1504c53a2ed3d67966a57b3595836d0, src/caffe/layers/prior_box_layer.cpp (each box
  followed by the same box at center_y_offset_1 = (h + 1.0) * step_h).
- `clip` (not in weiliu89's caffe.proto; OpenCV's detection_output_layer.cpp DecodeBBox, used
  by its res10 face detector): decoded boxes are clipped to [0, 1] before NMS.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from protocaffe.verify.reference.params import FLT_MAX, as_f32, f32, legacy_shape
from protocaffe.verify.reference.registry import Array, RefLayer, register

_T = TypeVar("_T")
_Less = Callable[[Any, Any], bool]


def prior_boxes(
    layer_hw: tuple[int, int],
    image_hw: tuple[int, int],
    *,
    min_sizes: list[float],
    max_sizes: list[float],
    aspect_ratios: list[float],
    flip: bool,
    clip: bool,
    variances: list[float],
    step_hw: tuple[float, float] = (0.0, 0.0),
    offset: float = 0.5,
) -> Array:
    """The PriorBox top (1, 2, H * W * num_priors * 4) for a feature map of layer_hw."""
    ratios = [1.0]
    for ar in aspect_ratios:
        if any(abs(f32(ar) - f32(r)) < 1e-6 for r in ratios):
            continue
        ratios.append(float(f32(ar)))
        if flip:
            ratios.append(float(f32(1.0 / f32(ar))))
    layer_h, layer_w = layer_hw
    img_h, img_w = image_hw
    if step_hw[0] == 0 or step_hw[1] == 0:
        step_w, step_h = f32(f32(img_w) / f32(layer_w)), f32(f32(img_h) / f32(layer_h))
    else:
        step_h, step_w = f32(step_hw[0]), f32(step_hw[1])
    sizes: list[tuple[np.float32, np.float32]] = []
    for s, min_size in enumerate(min_sizes):
        m = int(f32(min_size))  # truncated, as the C++ stores it in an int
        sizes.append((f32(m), f32(m)))
        if max_sizes:
            side = f32(math.sqrt(m * int(f32(max_sizes[s]))))
            sizes.append((side, side))
        for ar in ratios:
            if abs(ar - 1.0) < 1e-6:
                continue
            root = np.sqrt(f32(ar))
            sizes.append((f32(f32(m) * root), f32(f32(m) / root)))
    cx = (np.arange(layer_w, dtype=np.float32) + f32(offset)) * step_w
    cy = (np.arange(layer_h, dtype=np.float32) + f32(offset)) * step_h
    bw = np.array([w for w, _ in sizes], np.float32).astype(np.float64)
    bh = np.array([h for _, h in sizes], np.float32).astype(np.float64)
    cx64 = cx.astype(np.float64)[None, :, None]
    cy64 = cy.astype(np.float64)[:, None, None]
    boxes = np.empty((layer_h, layer_w, len(sizes), 4), np.float32)
    boxes[..., 0] = (cx64 - bw / 2.0) / img_w
    boxes[..., 1] = (cy64 - bh / 2.0) / img_h
    boxes[..., 2] = (cx64 + bw / 2.0) / img_w
    boxes[..., 3] = (cy64 + bh / 2.0) / img_h
    flat = boxes.reshape(-1)
    if clip:
        flat = np.minimum(np.maximum(flat, f32(0)), f32(1))
    if len(variances) == 1:
        var = np.full(flat.shape, f32(variances[0]), np.float32)
    else:
        var = np.tile(np.array(variances, np.float32), flat.size // 4)
    return np.stack([flat, var]).reshape(1, 2, -1).astype(np.float32)


def _fork_prior_data(
    layer_hw: tuple[int, int],
    image_hw: tuple[int, int],
    step_hw: tuple[float, float],
    offset: float,
    boxes_at: Callable[[np.float32, np.float32, int, np.float32], list[tuple[float, ...]]],
    clip: bool,
    variances: list[float],
) -> Array:
    """The forks' Forward_cpu loop: for each cell, boxes_at(center_x, center_y, h, step_h) gives
    the (xmin, ymin, xmax, ymax) of its priors in double; stored as float, then clip and the
    variances as in SSD."""
    layer_h, layer_w = layer_hw
    img_h, img_w = image_hw
    if step_hw[0] == 0 or step_hw[1] == 0:
        step_w, step_h = f32(f32(img_w) / f32(layer_w)), f32(f32(img_h) / f32(layer_h))
    else:
        step_h, step_w = f32(step_hw[0]), f32(step_hw[1])
    data: list[float] = []
    for h in range(layer_h):
        for w in range(layer_w):
            center_x = f32(f32(f32(w) + f32(offset)) * step_w)
            center_y = f32(f32(f32(h) + f32(offset)) * step_h)
            for box in boxes_at(center_x, center_y, h, step_h):
                data += [box[0] / img_w, box[1] / img_h, box[2] / img_w, box[3] / img_h]
    flat = np.array(data, np.float32)
    if clip:
        flat = np.minimum(np.maximum(flat, f32(0)), f32(1))
    if len(variances) == 1:
        var = np.full(flat.shape, f32(variances[0]), np.float32)
    else:
        var = np.tile(np.array(variances, np.float32), flat.size // 4)
    return np.stack([flat, var]).reshape(1, 2, -1).astype(np.float32)


def _square(cx: float, cy: float, half: float) -> tuple[float, ...]:
    return (cx - half, cy - half, cx + half, cy + half)


def _ratio_sides(size: float, ratios: list[float]) -> list[tuple[np.float32, np.float32]]:
    """box_width = min_size_ * sqrt(ar), box_height = min_size_ / sqrt(ar) in float, for each
    ratio but 1."""
    sides = []
    for ar in ratios:
        if abs(ar - 1.0) < 1e-6:
            continue
        root = np.sqrt(f32(ar))
        sides.append((f32(f32(size) * root), f32(f32(size) / root)))
    return sides


def _ratios(aspect_ratios: list[float], flip: bool) -> list[float]:
    ratios = [1.0]
    for ar in aspect_ratios:
        if any(abs(f32(ar) - f32(r)) < 1e-6 for r in ratios):
            continue
        ratios.append(float(f32(ar)))
        if flip:
            ratios.append(float(f32(1.0 / f32(ar))))
    return ratios


def faceboxes_prior_boxes(
    layer_hw: tuple[int, int],
    image_hw: tuple[int, int],
    *,
    min_sizes: list[float],
    max_sizes: list[float],
    aspect_ratios: list[float],
    flip: bool,
    clip: bool,
    variances: list[float],
    step_hw: tuple[float, float] = (0.0, 0.0),
    offset: float = 0.5,
) -> Array:
    """sfzhang15/FaceBoxes PriorBoxLayer::Forward_cpu."""
    ratios = _ratios(aspect_ratios, flip)

    def boxes_at(
        cx: np.float32, cy: np.float32, _h: int, _step: np.float32
    ) -> list[tuple[float, ...]]:
        out: list[tuple[float, ...]] = []
        for s, size in enumerate(min_sizes):
            m = int(f32(size))
            half = float(f32(f32(m) - f32(1))) / 2.0  # (box_width-1) / 2.
            if m in (32, 64):
                span, pixels = (range(-2, 2), 8) if m == 32 else (range(-1, 1), 16)
                for i in span:
                    for j in span:
                        x = float(f32(cx + f32(j * pixels)))
                        y = float(f32(cy + f32(i * pixels)))
                        out.append(_square(x, y, half))
            else:
                out.append(_square(float(cx), float(cy), half))
            if max_sizes:
                side = float(f32(math.sqrt(m * int(f32(max_sizes[s])))))
                out.append(_square(float(cx), float(cy), side / 2.0))
            for bw, bh in _ratio_sides(float(m), ratios):
                x, y, half_w, half_h = float(cx), float(cy), float(bw) / 2.0, float(bh) / 2.0
                out.append((x - half_w, y - half_h, x + half_w, y + half_h))
        return out

    return _fork_prior_data(layer_hw, image_hw, step_hw, offset, boxes_at, clip, variances)


def textboxes_prior_boxes(
    layer_hw: tuple[int, int],
    image_hw: tuple[int, int],
    *,
    min_sizes: list[float],
    max_sizes: list[float],
    aspect_ratios: list[float],
    flip: bool,
    clip: bool,
    variances: list[float],
    step_hw: tuple[float, float] = (0.0, 0.0),
    offset: float = 0.5,
    truncate: bool = False,
) -> Array:
    """MhLiao/TextBoxes PriorBoxLayer::Forward_cpu (float sizes, step from the bottoms,
    offset 0.5), or with `truncate` TextBoxes++' denser_prior_boxes (int sizes as SSD, its
    step and offset): each box at center_y, then at center_y_offset_1 = (h + 1.0) * step."""
    ratios = _ratios(aspect_ratios, flip)

    def boxes_at(
        cx: np.float32, cy: np.float32, h: int, step_h: np.float32
    ) -> list[tuple[float, ...]]:
        lower = float(f32((h + 1.0) * float(step_h)))
        out: list[tuple[float, ...]] = []
        for s, size in enumerate(min_sizes):
            m: float = int(f32(size)) if truncate else float(f32(size))
            sides = [(f32(m), f32(m))]
            if max_sizes:
                mx = int(f32(max_sizes[s])) if truncate else float(f32(max_sizes[s]))
                if truncate:
                    side = f32(math.sqrt(m * mx))
                else:
                    side = f32(math.sqrt(float(f32(f32(m) * f32(mx)))))
                sides.append((side, side))
            sides += _ratio_sides(m, ratios)
            for bw, bh in sides:
                for y in (float(cy), lower):
                    out.append(
                        (
                            float(cx) - float(bw) / 2.0,
                            y - float(bh) / 2.0,
                            float(cx) + float(bw) / 2.0,
                            y + float(bh) / 2.0,
                        )
                    )
        return out

    return _fork_prior_data(layer_hw, image_hw, step_hw, offset, boxes_at, clip, variances)


@register("PriorBox", bottoms=(2, 2))
def prior_box(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.prior_box_param
    has = p.HasField
    layer.check(len(p.min_size) > 0, "must provide min_size.")
    layer.check(all(v > 0 for v in p.min_size), "min_size must be positive.")
    if len(p.max_size):
        layer.check(len(p.max_size) == len(p.min_size), "one max_size per min_size")
        layer.check(
            all(mx > mn for mn, mx in zip(p.min_size, p.max_size, strict=True)),
            "max_size must be greater than min_size.",
        )
    if len(p.variance) > 1:
        layer.check(len(p.variance) == 4, "Must and only provide 4 variance.")
    layer.check(all(v > 0 for v in p.variance), "variance must be positive")
    if has("img_h") or has("img_w"):
        layer.check(
            not has("img_size"), "Either img_size or img_h/img_w should be specified; not both."
        )
        layer.check(p.img_h > 0 and p.img_w > 0, "img_h and img_w should be larger than 0.")
        image = (int(p.img_h), int(p.img_w))
    elif has("img_size"):
        layer.check(p.img_size > 0, "img_size should be larger than 0.")
        image = (int(p.img_size), int(p.img_size))
    else:
        _, _, h, w = legacy_shape(layer, bottoms[1].shape)
        image = (h, w)
    if has("step_h") or has("step_w"):
        layer.check(not has("step"), "Either step or step_h/step_w should be specified; not both.")
        layer.check(p.step_h > 0 and p.step_w > 0, "step_h and step_w should be larger than 0.")
        step = (float(p.step_h), float(p.step_w))
    elif has("step"):
        layer.check(p.step > 0, "step should be larger than 0.")
        step = (float(p.step), float(p.step))
    else:
        step = (0.0, 0.0)
    _, _, fh, fw = legacy_shape(layer, bottoms[0].shape)
    options: dict[str, Any] = {
        "min_sizes": list(p.min_size),
        "max_sizes": list(p.max_size),
        "aspect_ratios": list(p.aspect_ratio),
        "flip": bool(p.flip),
        "clip": bool(p.clip),
        "variances": list(p.variance) or [0.1],
        "step_hw": step,
        "offset": float(p.offset),
    }
    if "faceboxes-priorbox" in layer.dialects:
        top = faceboxes_prior_boxes((fh, fw), image, **options)
        if len(p.min_size) == 3:  # LayerSetUp's num_priors_ = 21 (+ max_size)
            count = 21 + len(p.max_size)
            layer.check(top.shape[2] == fh * fw * count * 4, "21 priors for 3 min_size")
    elif "textboxes-priorbox" in layer.dialects:
        layer.check(len(p.min_size) == 1 and len(p.max_size) <= 1, "one min_size, max_size")
        absent = ("img_size", "img_h", "img_w", "step", "step_h", "step_w", "offset")
        layer.check(not any(has(name) for name in absent), "a field TextBoxes' proto lacks")
        options.update(step_hw=(0.0, 0.0), offset=0.5, clip=bool(p.clip) if has("clip") else True)
        _, _, ih, iw = legacy_shape(layer, bottoms[1].shape)
        top = textboxes_prior_boxes((fh, fw), (ih, iw), **options)
    elif p.denser_prior_boxes:
        top = textboxes_prior_boxes((fh, fw), image, truncate=True, **options)
    else:
        top = prior_boxes((fh, fw), image, **options)
    layer.check(top.shape[2] > 0, "no priors")
    return [top]


_THRESHOLD = 16  # libstdc++ _S_threshold


def std_sort(items: list[_T], less: Callable[[_T, _T], bool]) -> None:
    """libstdc++'s std::sort(first, last, comp), in place, element for element."""
    n = len(items)
    if n > 1:
        _introsort_loop(items, 0, n, 2 * (n.bit_length() - 1), less)
        _final_insertion_sort(items, 0, n, less)


def _introsort_loop(a: list[_T], first: int, last: int, depth: int, less: _Less) -> None:
    while last - first > _THRESHOLD:
        if depth == 0:
            _heap_sort(a, first, last, less)
            return
        depth -= 1
        mid = first + (last - first) // 2
        _move_median_to_first(a, first, first + 1, mid, last - 1, less)
        cut = _unguarded_partition(a, first + 1, last, first, less)
        _introsort_loop(a, cut, last, depth, less)
        last = cut


def _move_median_to_first(a: list[_T], result: int, x: int, y: int, z: int, less: _Less) -> None:
    if less(a[x], a[y]):
        if less(a[y], a[z]):
            pick = y
        elif less(a[x], a[z]):
            pick = z
        else:
            pick = x
    elif less(a[x], a[z]):
        pick = x
    elif less(a[y], a[z]):
        pick = z
    else:
        pick = y
    a[result], a[pick] = a[pick], a[result]


def _unguarded_partition(a: list[_T], first: int, last: int, pivot: int, less: _Less) -> int:
    while True:
        while less(a[first], a[pivot]):
            first += 1
        last -= 1
        while less(a[pivot], a[last]):
            last -= 1
        if not first < last:
            return first
        a[first], a[last] = a[last], a[first]
        first += 1


def _final_insertion_sort(a: list[_T], first: int, last: int, less: _Less) -> None:
    if last - first > _THRESHOLD:
        _insertion_sort(a, first, first + _THRESHOLD, less)
        for i in range(first + _THRESHOLD, last):
            _unguarded_linear_insert(a, i, less)
    else:
        _insertion_sort(a, first, last, less)


def _insertion_sort(a: list[_T], first: int, last: int, less: _Less) -> None:
    for i in range(first + 1, last):
        if less(a[i], a[first]):
            value = a[i]
            a[first + 1 : i + 1] = a[first:i]
            a[first] = value
        else:
            _unguarded_linear_insert(a, i, less)


def _unguarded_linear_insert(a: list[_T], last: int, less: _Less) -> None:
    value = a[last]
    prev = last - 1
    while less(value, a[prev]):
        a[last] = a[prev]
        last = prev
        prev -= 1
    a[last] = value


def _heap_sort(a: list[_T], first: int, last: int, less: _Less) -> None:
    """std::__partial_sort(first, last, last): __make_heap then __sort_heap."""
    n = last - first
    if n >= 2:
        parent = (n - 2) // 2
        while True:
            _adjust_heap(a, first, parent, n, a[first + parent], less)
            if parent == 0:
                break
            parent -= 1
    while last - first > 1:
        last -= 1
        value = a[last]
        a[last] = a[first]
        _adjust_heap(a, first, 0, last - first, value, less)


def _adjust_heap(a: list[_T], first: int, hole: int, n: int, value: _T, less: _Less) -> None:
    top = hole
    child = hole
    while child < (n - 1) // 2:
        child = 2 * (child + 1)
        if less(a[first + child], a[first + child - 1]):
            child -= 1
        a[first + hole] = a[first + child]
        hole = child
    if n % 2 == 0 and child == (n - 2) // 2:
        child = 2 * (child + 1)
        a[first + hole] = a[first + child - 1]
        hole = child - 1
    parent = (hole - 1) // 2
    while hole > top and less(a[first + parent], value):
        a[first + hole] = a[first + parent]
        hole = parent
        parent = (hole - 1) // 2
    a[first + hole] = value


CORNER, CENTER_SIZE, CORNER_SIZE = 1, 2, 3


def decode_boxes(
    priors: Array, variances: Array, offsets: Array, code_type: int, encoded: bool
) -> Array:
    """DecodeBBox for every prior (priors, variances (P, 4); offsets (..., P, 4)), float32."""
    var = np.ones_like(variances) if encoded else variances
    pr = priors
    if code_type == CORNER:
        return np.asarray(pr + var * offsets, dtype=np.float32)
    pw = pr[:, 2] - pr[:, 0]
    ph = pr[:, 3] - pr[:, 1]
    if code_type == CORNER_SIZE:
        size = np.stack([pw, ph, pw, ph], axis=1)
        return np.asarray(pr + var * offsets * size, dtype=np.float32)
    if code_type != CENTER_SIZE:
        raise ValueError(f"unknown code_type {code_type}")
    pcx = (pr[:, 0] + pr[:, 2]) / f32(2)
    pcy = (pr[:, 1] + pr[:, 3]) / f32(2)
    cx = var[:, 0] * offsets[..., 0] * pw + pcx
    cy = var[:, 1] * offsets[..., 1] * ph + pcy
    with np.errstate(over="ignore"):
        w = np.exp(var[:, 2] * offsets[..., 2]) * pw
        h = np.exp(var[:, 3] * offsets[..., 3]) * ph
    return np.stack([cx - w / f32(2), cy - h / f32(2), cx + w / f32(2), cy + h / f32(2)], axis=-1)


def box_sizes(boxes: Array) -> Array:
    """BBoxSize (normalized): 0 for an inverted box."""
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    invalid = (boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])
    return np.asarray(np.where(invalid, f32(0), w * h).astype(np.float32), dtype=np.float32)


def _caffe_max(a: Array, b: Array) -> Array:
    """std::max(a, b): `a < b ? b : a` (a NaN comes out only as `a`)."""
    return np.where(a < b, b, a)


def _caffe_min(a: Array, b: Array) -> Array:
    """std::min(a, b): `b < a ? b : a`."""
    return np.where(b < a, b, a)


def _overlaps(box: Array, size: np.float32, kept: Array, kept_sizes: Array) -> Array:
    """JaccardOverlap(box, each kept box) (bbox_util.cpp): IntersectBBox with std::max/min in
    Caffe's argument order, then the stored sizes; 0 unless the intersection's width and height
    are > 0 (so NaN coordinates come out as in Caffe)."""
    apart = (
        (kept[:, 0] > box[2])
        | (kept[:, 2] < box[0])
        | (kept[:, 1] > box[3])
        | (kept[:, 3] < box[1])
    )
    w = _caffe_min(box[2], kept[:, 2]) - _caffe_max(box[0], kept[:, 0])
    h = _caffe_min(box[3], kept[:, 3]) - _caffe_max(box[1], kept[:, 1])
    w = np.where(apart, f32(0), w)
    h = np.where(apart, f32(0), h)
    inter = w * h
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / (size + kept_sizes - inter)
    return np.asarray(np.where((w > 0) & (h > 0), iou, f32(0)), dtype=np.float32)


def nms_fast(
    boxes: Array,
    sizes: Array,
    scores: Array,
    threshold: float,
    nms_threshold: float,
    eta: float,
    top_k: int,
) -> list[int]:
    """ApplyNMSFast: candidates above the threshold by score (stable), top_k of them, each kept
    when its overlap with every box kept before it is <= the (adaptive) NMS threshold."""
    candidates = np.flatnonzero(scores > f32(threshold))
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    if top_k > -1:
        order = order[:top_k]
    kept: list[int] = []
    adaptive = f32(nms_threshold)
    for i in order:
        if kept:
            k = np.asarray(kept)
            # keep = overlap <= threshold: a NaN overlap suppresses.
            if not np.all(_overlaps(boxes[i], sizes[i], boxes[k], sizes[k]) <= adaptive):
                continue
        kept.append(int(i))
        if eta < 1 and adaptive > 0.5:
            adaptive = f32(adaptive * f32(eta))
    return kept


def detection_output(
    loc: Array,
    conf: Array,
    prior: Array,
    *,
    num_classes: int,
    share_location: bool = True,
    background_label: int = 0,
    code_type: int | str = CORNER,
    variance_encoded_in_target: bool = False,
    confidence_threshold: float | None = None,
    nms_threshold: float = 0.3,
    top_k: int = -1,
    eta: float = 1.0,
    keep_top_k: int = -1,
    clip: bool = False,
    arm_conf: Array | None = None,
    arm_loc: Array | None = None,
    objectness_score: float = 0.01,
    polygon: bool | None = None,
) -> Array:
    """DetectionOutputLayer::Forward_cpu: the (1, 1, rows, 7) top (RefineDet's when arm_conf
    and arm_loc are given)."""
    if isinstance(code_type, str):
        code_type = {"CORNER": CORNER, "CENTER_SIZE": CENTER_SIZE, "CORNER_SIZE": CORNER_SIZE}[
            code_type
        ]
    num = loc.shape[0]
    prior = as_f32(prior)
    num_priors = prior.shape[2] // 4
    priors = prior[0, 0].reshape(-1, 4)
    variances = prior[0, 1].reshape(-1, 4) if prior.shape[1] > 1 else np.ones_like(priors)
    loc_classes = 1 if share_location else num_classes
    values = {None: 4, True: 12, False: 9}[polygon]
    all_offsets = as_f32(loc).reshape(num, num_priors, loc_classes, values).transpose(0, 2, 1, 3)
    offsets = all_offsets[..., :4]
    corners = np.zeros(offsets.shape[:-1] + (0,), np.float32)
    if polygon is True:  # DecodeBBoxPolygon (CENTER_SIZE, variances in the prior)
        pw = priors[:, 2] - priors[:, 0]
        ph = priors[:, 3] - priors[:, 1]
        quad = all_offsets[..., 4:]
        at = [(0, 1), (2, 1), (2, 3), (0, 3)]
        corners = np.stack(
            [
                variances[:, axis % 2] * quad[..., 2 * k + axis % 2] * (pw, ph)[axis % 2]
                + priors[:, at[k][axis % 2]]
                for k in range(4)
                for axis in (0, 1)
            ],
            axis=-1,
        ).astype(np.float32)
    elif polygon is False:  # DecodeBBoxRBox (CENTER_SIZE, variances in the prior)
        pw = priors[:, 2] - priors[:, 0]
        ph = priors[:, 3] - priors[:, 1]
        pcx = (priors[:, 0] + priors[:, 2]) / f32(2)
        pcy = (priors[:, 1] + priors[:, 3]) / f32(2)
        rbox = all_offsets[..., 4:]
        with np.errstate(over="ignore"):
            height = np.exp(variances[:, 3] * rbox[..., 4]) * ph
        corners = np.stack(
            [
                variances[:, 0] * rbox[..., 0] * pw + pcx,
                variances[:, 1] * rbox[..., 1] * ph + pcy,
                variances[:, 0] * rbox[..., 2] * pw + pcx,
                variances[:, 1] * rbox[..., 3] * ph + pcy,
                height,
            ],
            axis=-1,
        ).astype(np.float32)
    scores_all = as_f32(conf).reshape(num, num_priors, num_classes).copy()
    if arm_conf is not None:  # OSGetConfidenceScores
        negative = as_f32(arm_conf).reshape(num, num_priors, 2)[:, :, 1] < f32(objectness_score)
        scores_all[negative] = f32(0.0)
        scores_all[negative, 0] = f32(1.0)  # label 0, whatever background_label_id says
    threshold = -FLT_MAX if confidence_threshold is None else confidence_threshold
    if arm_loc is None:
        decoded = decode_boxes(priors, variances, offsets, code_type, variance_encoded_in_target)
    else:  # CasRegDecodeBBoxesAll (share_location: the ARM offsets of label -1)
        arm_offsets = as_f32(arm_loc).reshape(num, num_priors, 4)
        decoded = np.empty(offsets.shape, np.float32)
        for i in range(num):
            refined = decode_boxes(
                priors, variances, arm_offsets[i], code_type, variance_encoded_in_target
            ).astype(np.float32)
            decoded[i] = decode_boxes(
                refined, variances, offsets[i], code_type, variance_encoded_in_target
            )
    sizes_all = box_sizes(decoded)
    if clip:
        decoded = np.minimum(np.maximum(decoded, f32(0)), f32(1))
        sizes_all = box_sizes(decoded)
    rows: list[list[float]] = []
    for image in range(num):
        scores = scores_all[image]
        found: dict[int, list[int]] = {}
        for label in range(num_classes):
            if label == background_label:
                continue
            k = 0 if share_location else label
            found[label] = nms_fast(
                decoded[image, k],
                sizes_all[image, k],
                scores[:, label],
                threshold,
                nms_threshold,
                eta,
                top_k,
            )
        total = sum(len(v) for v in found.values())
        if -1 < keep_top_k < total:
            pairs = [(scores[i, label], label, i) for label, ks in found.items() for i in ks]
            std_sort(pairs, lambda p, q: bool(p[0] > q[0]))  # SortScorePairDescend
            found = {}
            for _, label, i in pairs[:keep_top_k]:
                found.setdefault(label, []).append(i)
        for label in sorted(found):
            k = 0 if share_location else label
            for i in found[label]:
                rows.append(
                    [
                        image,
                        label,
                        float(scores[i, label]),
                        *decoded[image, k, i].tolist(),
                        *corners[image, k, i].tolist(),
                    ]
                )
    columns = {None: 7, True: 15, False: 12}[polygon]
    if not rows:
        empty = np.full((num, columns), -1.0, np.float32)
        empty[:, 0] = np.arange(num)
        return empty.reshape(1, 1, num, columns)
    return np.array(rows, np.float32).reshape(1, 1, -1, columns)


@register("DetectionOutput", bottoms=(3, 5))
def detection_output_layer(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.detection_output_param
    layer.check(p.HasField("num_classes"), "Must specify num_classes")
    nms = p.nms_param
    layer.check(nms.nms_threshold >= 0, "nms_threshold must be non negative.")
    layer.check(0 < nms.eta <= 1, "eta must be in (0, 1]")
    # DecodeBBoxesAll skips the label equal to background_label_id, which is -1, the shared
    # boxes' label, when share_location: then no box is decoded and Forward_cpu aborts.
    layer.check(
        not (p.share_location and p.background_label_id == -1),
        "Could not find location predictions for label -1",
    )
    loc, conf, prior = bottoms[:3]
    # Five bottoms: RefineDet's (arm_conf, arm_loc); a fourth alone is SSD's image to draw on.
    arm_conf, arm_loc = (bottoms[3], bottoms[4]) if len(bottoms) == 5 else (None, None)
    layer.check(
        arm_loc is None or bool(p.share_location),
        "CasRegDecodeBBoxesAll reads the ARM offsets of label -1 only (share_location)",
    )
    layer.check(loc.shape[0] == conf.shape[0], "loc and conf differ in num")
    num_classes = int(p.num_classes)
    loc_classes = 1 if p.share_location else num_classes
    num_priors = prior.shape[2] // 4 if prior.ndim >= 3 else 0
    polygon = bool(p.use_polygon) if p.HasField("use_polygon") else None
    layer.check(
        polygon is None or (p.code_type == CENTER_SIZE and not p.variance_encoded_in_target),
        "DecodeBBoxPolygon sets the quadrilateral for CENTER_SIZE, variances in the prior only",
    )
    layer.check(
        num_priors * loc_classes * {None: 4, True: 12, False: 9}[polygon]
        == legacy_shape(layer, loc.shape)[1],
        "Number of priors must match number of location predictions.",
    )
    layer.check(
        num_priors * num_classes == legacy_shape(layer, conf.shape)[1],
        "Number of priors must match number of confidence predictions.",
    )
    return [
        detection_output(
            loc,
            conf,
            prior,
            num_classes=num_classes,
            share_location=bool(p.share_location),
            background_label=int(p.background_label_id),
            code_type=int(p.code_type),
            variance_encoded_in_target=bool(p.variance_encoded_in_target),
            confidence_threshold=(
                float(p.confidence_threshold) if p.HasField("confidence_threshold") else None
            ),
            nms_threshold=float(nms.nms_threshold),
            top_k=int(nms.top_k) if nms.HasField("top_k") else -1,
            eta=float(nms.eta),
            keep_top_k=int(p.keep_top_k),
            clip=bool(p.clip),
            arm_conf=arm_conf,
            arm_loc=arm_loc,
            objectness_score=float(p.objectness_score),
            polygon=polygon,
        )
    ]
