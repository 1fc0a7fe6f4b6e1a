"""YOLO detection heads of eric612/MobileNet-YOLO, transcribed candidate by candidate.

Sources: eric612/MobileNet-YOLO @ 69b4441c,
- src/caffe/layers/yolov3_detection_output_layer.cpp: LayerSetUp, Forward_cpu (the CPU
  branch), correct_yolo_boxes, ApplyNms, box_iou / box_intersection / overlap;
  src/caffe/util/bbox_util.cpp: get_region_box (the 12-argument form);
- src/caffe/layers/yolo_detection_output_layer.cpp: LayerSetUp, Forward_cpu, get_region_box,
  class_index_and_score, ApplyNms.
The candidates are sorted with libstdc++'s std::sort (`std_sort`), as the fork does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from protocaffe.verify.reference.ops.detection import std_sort
from protocaffe.verify.reference.params import as_f32, f32
from protocaffe.verify.reference.registry import Array, RefLayer, register


def _single(value: Any) -> np.float32:
    """float(value) rounded to float32, typed for mypy (array elements are Any)."""
    out: np.float32 = np.float32(value)
    return out


@dataclass
class _Prediction:
    x: np.float32
    y: np.float32
    w: np.float32
    h: np.float32
    class_type: int
    confidence: np.float32


def _sigmoid(v: np.float32) -> np.float32:
    """`1. / (1. + exp(-x))`: double arithmetic, stored as float."""
    return _single(1.0 / (1.0 + math.exp(-float(v))))


def _overlap(x1: np.float32, w1: np.float32, x2: np.float32, w2: np.float32) -> np.float32:
    l1, l2 = f32(x1 - w1 / f32(2)), f32(x2 - w2 / f32(2))
    r1, r2 = f32(x1 + w1 / f32(2)), f32(x2 + w2 / f32(2))
    return _single(min(r1, r2) - max(l1, l2))


def _iou(a: _Prediction, b: _Prediction) -> np.float32:
    w = _overlap(a.x, a.w, b.x, b.w)
    h = _overlap(a.y, a.h, b.y, b.h)
    inter = f32(0) if (w < 0 or h < 0) else f32(w * h)
    union = f32(f32(a.w * a.h) + f32(b.w * b.h) - inter)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _single(inter / union)


def _rows(predictions: list[_Prediction], threshold: float, images: int) -> Array:
    """Sort (std::sort, descending confidence), ApplyNms (class-agnostic, IoU >= threshold
    suppresses), and the (1, 1, K, 7) top."""
    std_sort(predictions, lambda a, b: bool(a.confidence > b.confidence))
    suppressed: set[int] = set()
    for i in range(len(predictions) - 1):
        if i in suppressed:
            continue
        for j in range(i + 1, len(predictions)):
            if j in suppressed:
                continue
            if _iou(predictions[i], predictions[j]) >= f32(threshold):
                suppressed.add(j)
    kept = [p for i, p in enumerate(predictions) if i not in suppressed]
    if not kept:
        top = np.full((images, 7), -1.0, np.float32)
        top[:, 0] = np.arange(images)
        return top.reshape(1, 1, images, 7)
    rows = [
        [
            0.0,
            p.class_type + 1,
            p.confidence,
            f32(float(p.x) - float(p.w) / 2.0),
            f32(float(p.y) - float(p.h) / 2.0),
            f32(float(p.x) + float(p.w) / 2.0),
            f32(float(p.y) + float(p.h) / 2.0),
        ]
        for p in kept
    ]
    return np.asarray(rows, np.float32).reshape(1, 1, len(kept), 7)


@register("Yolov3DetectionOutput", bottoms=(1, None))
def yolov3_detection_output(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.yolov3_detection_output_param
    layer.check(p.HasField("num_classes"), "Must specify num_classes")
    layer.check(len(bottoms) == p.mask_group_num, "bottom count != mask_group_num")
    layer.check(not p.gaussian_box, "gaussian_box is not transcribed")
    classes, num_box = int(p.num_classes), int(p.num_box)
    biases = [f32(b) for b in p.biases]
    mask = [int(m) for m in p.mask]
    groups = len(mask) // int(p.mask_group_num)
    length = 4 + classes + 1
    threshold = f32(p.confidence_threshold)
    predictions: list[_Prediction] = []
    mask_offset = 0
    for t, blob in enumerate(bottoms):
        data = as_f32(blob).reshape(-1)
        num, side_h, side_w = blob.shape[0], blob.shape[2], blob.shape[3]
        stride = side_w * side_h
        nw, nh = side_w * int(p.anchors_scale[t]), side_h * int(p.anchors_scale[t])
        per_image = data.size // num
        for b in range(num):
            for s in range(stride):
                for n in range(num_box):
                    index = n * length * stride + s + b * per_image
                    x_, y_ = _sigmoid(data[index]), _sigmoid(data[index + stride])
                    tw, th = data[index + 2 * stride], data[index + 3 * stride]
                    obj = _sigmoid(data[index + 4 * stride])
                    y2, x2 = s // side_w, s % side_w
                    m = mask[n + mask_offset]
                    for c in range(classes):
                        score = f32(_sigmoid(data[index + (5 + c) * stride]) * obj)
                        if score > threshold:
                            # get_region_box: (i + x) / lw, (j + y) / lh, exp(w) * bias / w ...
                            box = _Prediction(
                                f32((x2 + x_) / f32(side_w)),
                                f32((y2 + y_) / f32(side_h)),
                                f32(f32(math.exp(float(tw))) * biases[2 * m] / f32(nw)),
                                f32(f32(math.exp(float(th))) * biases[2 * m + 1] / f32(nh)),
                                c,
                                score,
                            )
                            predictions.append(_correct(box, side_w, side_h, nw, nh))
        mask_offset += groups
    return [_rows(predictions, float(f32(p.nms_threshold)), bottoms[0].shape[0])]


def _correct(box: _Prediction, w: int, h: int, netw: int, neth: int) -> _Prediction:
    """correct_yolo_boxes with relative = 1 (the identity when netw/w == neth/h)."""
    if f32(netw) / f32(w) < f32(neth) / f32(h):
        new_w, new_h = netw, (h * netw) // w
    else:
        new_h, new_w = neth, (w * neth) // h
    box.x = f32((float(box.x) - (netw - new_w) / 2.0 / netw) / float(f32(new_w) / f32(netw)))
    box.y = f32((float(box.y) - (neth - new_h) / 2.0 / neth) / float(f32(new_h) / f32(neth)))
    box.w = f32(box.w * (f32(netw) / f32(new_w)))
    box.h = f32(box.h * (f32(neth) / f32(new_h)))
    return box


@register("YoloDetectionOutput", bottoms=(1, 2))
def yolo_detection_output(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.yolo_detection_output_param
    layer.check(p.HasField("num_classes"), "Must specify num_classes")
    classes, num_box = int(p.num_classes), int(p.num_box)
    biases = [f32(b) for b in p.biases]
    threshold = f32(p.confidence_threshold)
    predictions: list[_Prediction] = []
    for blob in bottoms:
        num, channels, height, width = blob.shape
        side = width
        # swap: (num, H*W, num_box, C / num_box), channels last.
        swap = as_f32(blob).transpose(0, 2, 3, 1).reshape(num, height * width, channels)
        length = channels // num_box
        for b in range(num):
            for j in range(side):
                for i in range(side):
                    for n in range(num_box):
                        v = swap[b, j * side + i, n * length : (n + 1) * length]
                        # get_region_box: sigmoid on x, y; exp(w) * bias / side.
                        x = f32((i + _sigmoid(v[0])) / f32(side))
                        y = f32((j + _sigmoid(v[1])) / f32(side))
                        w = f32(f32(math.exp(float(v[2]))) * biases[2 * n] / f32(side))
                        h = f32(f32(math.exp(float(v[3]))) * biases[2 * n + 1] / f32(side))
                        obj = _sigmoid(v[4])
                        cls, prob = _class_index_and_score(v[5 : 5 + classes])
                        confidence = f32(obj * prob)
                        if confidence >= threshold:
                            predictions.append(_Prediction(x, y, w, h, cls, confidence))
    return [_rows(predictions, float(f32(p.nms_threshold)), bottoms[0].shape[0])]


def _class_index_and_score(scores: Array) -> tuple[int, np.float32]:
    """Softmax (minus the max, exp, sum, divide) then the first maximum, in float."""
    large = scores[0]
    for v in scores:
        if v > large:
            large = v
    exps = [f32(math.exp(float(f32(v - large)))) for v in scores]
    total = f32(0)
    for e in exps:
        total = f32(total + e)
    probs = [f32(e / total) for e in exps]
    best, index = probs[0], 0
    for c, v in enumerate(probs):
        if v > best:
            best, index = v, c
    return index, best
