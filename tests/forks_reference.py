"""Independent numpy implementations of fork layers, written from the forks' C++ sources
(loops as in Forward_cpu, float32 where Caffe computes in float). The tests compare the
generated torch code with these, layer by layer."""

from __future__ import annotations

import math

import numpy as np

f32 = np.float32


def bn_segnet(x: np.ndarray, scale: np.ndarray, shift: np.ndarray, learn: bool) -> np.ndarray:
    """caffe-segnet bn_layer.cpp: INFERENCE is x * scale + shift; LEARN normalises with the
    batch's mean and E(x^2) - E(x)^2, eps 1e-9, then scales and shifts."""
    c = x.shape[1]
    scale, shift = scale.reshape(1, c, 1, 1), shift.reshape(1, c, 1, 1)
    if not learn:
        return x * scale + shift
    mean = x.mean(axis=(0, 2, 3), keepdims=True, dtype=np.float64)
    var = (x.astype(np.float64) ** 2).mean(axis=(0, 2, 3), keepdims=True) - mean**2
    return ((x - mean) / np.sqrt(var + 1e-9) * scale + shift).astype(f32)


def bn_pspnet(
    x: np.ndarray,
    slope: np.ndarray,
    bias: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    eps: float,
) -> np.ndarray:
    """PSPNet bn_layer.cpp at TEST: (x - mean) * (var + eps)^-0.5 * slope + bias."""
    c = x.shape[1]
    inv_std = (var.reshape(1, c, 1, 1) + f32(eps)) ** f32(-0.5)
    return (x - mean.reshape(1, c, 1, 1)) * inv_std * slope.reshape(1, c, 1, 1) + bias.reshape(
        1, c, 1, 1
    )


def interp_out_size(
    size: int, zoom: int | None, shrink: int | None, fixed: int | None, pad_beg: int, pad_end: int
) -> int:
    """InterpLayer::Reshape."""
    eff = size + pad_beg + pad_end
    if shrink is not None and zoom is None:
        return (eff - 1) // shrink + 1
    if zoom is not None and shrink is None:
        return eff + (eff - 1) * (zoom - 1)
    if fixed is not None:
        return fixed
    assert zoom is not None and shrink is not None
    out = (eff - 1) // shrink + 1
    return out + (out - 1) * (zoom - 1)


def interp(
    x: np.ndarray,
    zoom: int | None = None,
    shrink: int | None = None,
    height: int | None = None,
    width: int | None = None,
    pad_beg: int = 0,
    pad_end: int = 0,
) -> np.ndarray:
    """caffe_cpu_interp2 on the region that starts at -pad_beg, with corners aligned."""
    n, c, h_in, w_in = x.shape
    h1, w1 = h_in + pad_beg + pad_end, w_in + pad_beg + pad_end
    h2 = interp_out_size(h_in, zoom, shrink, height, pad_beg, pad_end)
    w2 = interp_out_size(w_in, zoom, shrink, width, pad_beg, pad_end)
    data = x[:, :, -pad_beg:, -pad_beg:]
    out = np.zeros((n, c, h2, w2), f32)
    if (h1, w1) == (h2, w2):
        return data[:, :, :h1, :w1].copy()
    rheight = f32(h1 - 1) / f32(h2 - 1) if h2 > 1 else f32(0)
    rwidth = f32(w1 - 1) / f32(w2 - 1) if w2 > 1 else f32(0)
    for i in range(h2):
        h1r = f32(rheight * f32(i))
        y = int(h1r)
        yp = 1 if y < h1 - 1 else 0
        ly1 = f32(h1r - f32(y))
        ly0 = f32(1) - ly1
        for j in range(w2):
            w1r = f32(rwidth * f32(j))
            xx = int(w1r)
            xp = 1 if xx < w1 - 1 else 0
            lx1 = f32(w1r - f32(xx))
            lx0 = f32(1) - lx1
            out[:, :, i, j] = ly0 * (
                lx0 * data[:, :, y, xx] + lx1 * data[:, :, y, xx + xp]
            ) + ly1 * (lx0 * data[:, :, y + yp, xx] + lx1 * data[:, :, y + yp, xx + xp])
    return out


def caffe_pooled(size: int, k: int, s: int, p: int, ceil: bool = True) -> int:
    out = (math.ceil((size + 2 * p - k) / s) if ceil else (size + 2 * p - k) // s) + 1
    if p > 0 and (out - 1) * s >= size + p:
        out -= 1
    return out


def max_pool_with_mask(
    x: np.ndarray, k: int, s: int, p: int, ceil: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """BVLC pooling_layer.cpp MAX with a mask top: first maximum (strict >) in row-major
    window order; the mask is the flat index h * W + w, as a float."""
    n, c, h, w = x.shape
    ph_n, pw_n = caffe_pooled(h, k, s, p, ceil), caffe_pooled(w, k, s, p, ceil)
    top = np.full((n, c, ph_n, pw_n), -np.finfo(f32).max, f32)
    mask = np.full((n, c, ph_n, pw_n), -1.0, f32)
    for ph in range(ph_n):
        for pw in range(pw_n):
            hs, ws = ph * s - p, pw * s - p
            he, we = min(hs + k, h), min(ws + k, w)
            hs, ws = max(hs, 0), max(ws, 0)
            for hh in range(hs, he):
                for ww in range(ws, we):
                    value = x[:, :, hh, ww]
                    better = value > top[:, :, ph, pw]
                    top[:, :, ph, pw] = np.where(better, value, top[:, :, ph, pw])
                    mask[:, :, ph, pw] = np.where(better, hh * w + ww, mask[:, :, ph, pw])
    return top, mask


def unpool(x: np.ndarray, mask: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """caffe-segnet upsample_layer.cpp: top[mask[i]] = bottom[i] per channel, zeros elsewhere."""
    n, c = x.shape[:2]
    out = np.zeros((n, c, out_h * out_w), f32)
    flat_x, flat_mask = x.reshape(n, c, -1), mask.reshape(n, c, -1).astype(np.int64)
    for b in range(n):
        for ch in range(c):
            for i in range(flat_x.shape[2]):
                out[b, ch, flat_mask[b, ch, i]] = flat_x[b, ch, i]
    return out.reshape(n, c, out_h, out_w)


def shuffle_channel(x: np.ndarray, group: int) -> np.ndarray:
    """ShuffleNet's Resize_cpu: channel block (i, j) of a group x (C / group) grid goes to
    position j * group + i."""
    c = x.shape[1]
    columns = c // group
    out = np.empty_like(x)
    for i in range(group):
        for j in range(columns):
            out[:, j * group + i] = x[:, i * columns + j]
    return out


def depthwise_conv(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: int, pad: int
) -> np.ndarray:
    """farmingyard conv_dw_layer.cpp: output channel c from input channel c and filter c."""
    n, c, h, w = x.shape
    k = weight.shape[2]
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            window = padded[:, :, i * stride : i * stride + k, j * stride : j * stride + k]
            out[:, :, i, j] = (window * weight[:, 0][None]).sum(axis=(2, 3))
    if bias is not None:
        out += bias.reshape(1, c, 1, 1)
    return out.astype(f32)


def axpy(a: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SENet axpy_layer.cpp: top = a[n, c] * x[n, c, ...] + y."""
    return a.reshape(a.shape[:2] + (1,) * (x.ndim - 2)) * x + y


def roi_pool(
    features: np.ndarray, rois: np.ndarray, pooled_h: int, pooled_w: int, scale: float
) -> np.ndarray:
    """caffe-fast-rcnn roi_pooling_layer.cpp Forward_cpu."""
    _, c, h, w = features.shape
    out = np.zeros((rois.shape[0], c, pooled_h, pooled_w), f32)
    for r, roi in enumerate(rois):
        batch = int(roi[0])
        sw, sh, ew, eh = (int(np.sign(v) * np.floor(abs(v * scale) + 0.5)) for v in roi[1:5])
        roi_h, roi_w = max(eh - sh + 1, 1), max(ew - sw + 1, 1)
        bin_h, bin_w = f32(roi_h) / f32(pooled_h), f32(roi_w) / f32(pooled_w)
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                hs = min(max(int(np.floor(f32(ph) * bin_h)) + sh, 0), h)
                he = min(max(int(np.ceil(f32(ph + 1) * bin_h)) + sh, 0), h)
                ws = min(max(int(np.floor(f32(pw) * bin_w)) + sw, 0), w)
                we = min(max(int(np.ceil(f32(pw + 1) * bin_w)) + sw, 0), w)
                if he > hs and we > ws:
                    out[r, :, ph, pw] = features[batch, :, hs:he, ws:we].max(axis=(1, 2))
    return out


def _whctrs(anchor: np.ndarray) -> tuple[float, float, float, float]:
    w, h = anchor[2] - anchor[0] + 1, anchor[3] - anchor[1] + 1
    return w, h, anchor[0] + 0.5 * (w - 1), anchor[1] + 0.5 * (h - 1)


def _mkanchors(ws: np.ndarray, hs: np.ndarray, x: float, y: float) -> np.ndarray:
    ws, hs = ws[:, None], hs[:, None]
    return np.hstack(
        (x - 0.5 * (ws - 1), y - 0.5 * (hs - 1), x + 0.5 * (ws - 1), y + 0.5 * (hs - 1))
    )


def generate_anchors(scales: tuple[int, ...] = (8, 16, 32)) -> np.ndarray:
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


def rpn_proposals(
    scores: np.ndarray, deltas: np.ndarray, im_info: np.ndarray, feat_stride: int = 16
) -> np.ndarray:
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


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """SSD bbox_util.cpp JaccardOverlap (normalized boxes)."""
    if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
        return 0.0
    w = f32(min(a[2], b[2]) - max(a[0], b[0]))
    h = f32(min(a[3], b[3]) - max(a[1], b[1]))
    if w <= 0 or h <= 0:
        return 0.0
    inter = f32(w * h)
    size_a = f32((a[2] - a[0]) * (a[3] - a[1]))
    size_b = f32((b[2] - b[0]) * (b[3] - b[1]))
    return float(f32(inter / f32(size_a + size_b - inter)))


def _decode_bbox(
    prior: np.ndarray, variance: np.ndarray, offset: np.ndarray, code_type: str, encoded: bool
) -> np.ndarray:
    """SSD bbox_util.cpp DecodeBBox for one box (float32, as Caffe computes it)."""
    var = np.ones(4, f32) if encoded else variance
    if code_type == "CORNER":
        return (prior + var * offset).astype(f32)
    prior_w, prior_h = f32(prior[2] - prior[0]), f32(prior[3] - prior[1])
    if code_type == "CORNER_SIZE":
        return (prior + var * offset * np.array([prior_w, prior_h, prior_w, prior_h], f32)).astype(
            f32
        )
    center_x, center_y = f32((prior[0] + prior[2]) / f32(2)), f32((prior[1] + prior[3]) / f32(2))
    x = f32(var[0] * offset[0] * prior_w + center_x)
    y = f32(var[1] * offset[1] * prior_h + center_y)
    w = f32(np.exp(f32(var[2] * offset[2])) * prior_w)
    h = f32(np.exp(f32(var[3] * offset[3])) * prior_h)
    return np.array([x - w / f32(2), y - h / f32(2), x + w / f32(2), y + h / f32(2)], f32)


def _apply_nms_fast(
    boxes: np.ndarray,
    scores: np.ndarray,
    threshold: float | None,
    nms_threshold: float,
    eta: float,
    top_k: int,
) -> list[int]:
    """SSD bbox_util.cpp ApplyNMSFast: GetMaxScoreIndex (above the threshold, stable by score,
    top_k), then keep each candidate whose overlap with every kept one is <= the threshold."""
    order = [int(i) for i in np.argsort(-scores, kind="stable")]
    if threshold is not None:
        order = [i for i in order if scores[i] > f32(threshold)]
    if top_k > -1:
        order = order[:top_k]
    kept: list[int] = []
    adaptive = f32(nms_threshold)
    for i in order:
        keep = True
        for k in kept:
            if _jaccard(boxes[i], boxes[k]) > adaptive:
                keep = False
                break
        if keep:
            kept.append(i)
            if eta < 1 and adaptive > 0.5:
                adaptive = f32(adaptive * f32(eta))
    return kept


def detection_output(
    loc: np.ndarray,
    conf: np.ndarray,
    prior: np.ndarray,
    *,
    num_classes: int,
    share_location: bool,
    background_label: int,
    code_type: str,
    variance_encoded_in_target: bool,
    confidence_threshold: float | None,
    nms_threshold: float,
    top_k: int,
    eta: float,
    keep_top_k: int,
) -> np.ndarray:
    """SSD detection_output_layer.cpp Forward_cpu: decode every prior's box (per class unless
    share_location), ApplyNMSFast per class but the background, keep_top_k best of an image
    (a stable sort by score of the (label, index) pairs), rows by image, label, then that
    order; with no detection at all, one row [image, -1, ...] per image."""
    num = loc.shape[0]
    priors = prior[0, 0].reshape(-1, 4)
    variances = prior[0, 1].reshape(-1, 4)
    loc_classes = 1 if share_location else num_classes
    rows = []
    for image in range(num):
        offsets = loc[image].reshape(len(priors), loc_classes, 4)
        scores = conf[image].reshape(len(priors), num_classes)
        boxes = np.array(
            [
                [
                    _decode_bbox(
                        priors[p],
                        variances[p],
                        offsets[p, c],
                        code_type,
                        variance_encoded_in_target,
                    )
                    for c in range(loc_classes)
                ]
                for p in range(len(priors))
            ],
            f32,
        ).reshape(len(priors), loc_classes, 4)
        found: dict[int, list[int]] = {}
        for label in range(num_classes):
            if label == background_label:
                continue
            found[label] = _apply_nms_fast(
                boxes[:, 0 if share_location else label],
                scores[:, label],
                confidence_threshold,
                nms_threshold,
                eta,
                top_k,
            )
        pairs = [(scores[i, label], label, i) for label, ks in found.items() for i in ks]
        if -1 < keep_top_k < len(pairs):
            pairs = sorted(pairs, key=lambda p: -p[0])[:keep_top_k]
            found = {}
            for _, label, i in pairs:
                found.setdefault(label, []).append(i)
        for label in sorted(found):
            for i in found[label]:
                box = boxes[i, 0 if share_location else label]
                rows.append([image, label, scores[i, label], *box])
    if not rows:
        return np.array([[i] + [-1] * 6 for i in range(num)], f32).reshape(1, 1, num, 7)
    return np.array(rows, f32)[None, None]
