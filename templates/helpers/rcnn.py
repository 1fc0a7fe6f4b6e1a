import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F


def roi_align_grid(
    features: torch.Tensor,
    rois: torch.Tensor,
    pooled: Tuple[int, int],
    spatial_scale: float,
    pad_ratio: float,
) -> torch.Tensor:
    """zhaoweicai/cascade-rcnn's ROIAlign: (pooled_h + 1) x (pooled_w + 1) bilinear samples
    per region (padded by pad_ratio, scaled, shifted by -0.5), 0 outside [-0.5, size - 0.5]
    or for an empty region. In float32 throughout, in the fork's order of operations."""
    channels, height, width = features.shape[1], features.shape[2], features.shape[3]
    regions = rois.reshape(rois.shape[0], -1)
    images = regions[:, 0].to(torch.int64)
    x1, y1, x2, y2 = regions[:, 1], regions[:, 2], regions[:, 3], regions[:, 4]
    pad_w = (x2 - x1 + 1) * pad_ratio
    pad_h = (y2 - y1 + 1) * pad_ratio
    start_w = (x1 - pad_w) * spatial_scale - 0.5
    start_h = (y1 - pad_h) * spatial_scale - 0.5
    size_w = ((x2 + pad_w) * spatial_scale - 0.5) - start_w
    size_h = ((y2 + pad_h) * spatial_scale - 0.5) - start_h
    steps_h = torch.arange(pooled[0] + 1, dtype=features.dtype, device=features.device)
    steps_w = torch.arange(pooled[1] + 1, dtype=features.dtype, device=features.device)
    at_h = start_h[:, None] + steps_h[None, :] * (size_h / pooled[0])[:, None]  # (R, Gh)
    at_w = start_w[:, None] + steps_w[None, :] * (size_w / pooled[1])[:, None]  # (R, Gw)
    outside = (
        (size_h <= 0)[:, None, None]
        | (size_w <= 0)[:, None, None]
        | ((at_h < -0.5) | (at_h > height - 0.5))[:, :, None]
        | ((at_w < -0.5) | (at_w > width - 0.5))[:, None, :]
    )
    floor_h, floor_w = torch.floor(at_h), torch.floor(at_w)
    at_h = at_h.clamp(0, height - 1)
    at_w = at_w.clamp(0, width - 1)
    low_h = floor_h.clamp(0, height - 1)
    low_w = floor_w.clamp(0, width - 1)
    high_h = (floor_h + 1).clamp(0, height - 1).to(torch.int64)
    high_w = (floor_w + 1).clamp(0, width - 1).to(torch.int64)
    lh, lw = (at_h - low_h)[:, :, None], (at_w - low_w)[:, None, :]
    hh, hw = 1 - lh, 1 - lw
    low_h, low_w = low_h.to(torch.int64), low_w.to(torch.int64)
    planes = features.reshape(features.shape[0], channels, height * width).transpose(1, 2)
    image = images[:, None, None]
    value = (
        (hw * hh)[..., None] * _roi_samples(planes, image, low_h, low_w, width)
        + (lw * hh)[..., None] * _roi_samples(planes, image, low_h, high_w, width)
        + (hw * lh)[..., None] * _roi_samples(planes, image, high_h, low_w, width)
        + (lw * lh)[..., None] * _roi_samples(planes, image, high_h, high_w, width)
    )
    value = torch.where(outside[..., None], torch.zeros_like(value), value)
    return value.permute(0, 3, 1, 2).contiguous()


def _roi_samples(
    planes: torch.Tensor, image: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, width: int
) -> torch.Tensor:
    """The (R, Gh, Gw, C) values at grid rows x cols of each region's image plane."""
    return planes[image, rows[:, :, None] * width + cols[:, None, :]]


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    """C's round(): halves away from zero (torch.round goes to even)."""
    return torch.sign(x) * torch.floor(torch.abs(x) + 0.5)


def psroi_pool(
    features: torch.Tensor,
    rois: torch.Tensor,
    output_dim: int,
    group_size: int,
    spatial_scale: float,
) -> torch.Tensor:
    """R-FCN's PSROIPooling (the CUDA kernel's arithmetic): bin (ph, pw) of output channel d is
    the mean of input channel (d * group + ph) * group + pw over the bin, 0 when it is empty.
    Bin sums come from a float64 summed-area table."""
    height, width = features.shape[2], features.shape[3]
    regions = rois.reshape(rois.shape[0], -1)
    images = regions[:, 0].to(torch.int64)
    start_w = _round_half_away(regions[:, 1]) * spatial_scale
    start_h = _round_half_away(regions[:, 2]) * spatial_scale
    end_w = (_round_half_away(regions[:, 3]) + 1.0) * spatial_scale
    end_h = (_round_half_away(regions[:, 4]) + 1.0) * spatial_scale
    bin_w = torch.clamp(end_w - start_w, min=0.1) / group_size
    bin_h = torch.clamp(end_h - start_h, min=0.1) / group_size
    steps = torch.arange(group_size, dtype=features.dtype, device=features.device)
    h0 = torch.floor(steps[None, :] * bin_h[:, None] + start_h[:, None]).clamp(0, height)
    h1 = torch.ceil((steps[None, :] + 1) * bin_h[:, None] + start_h[:, None]).clamp(0, height)
    w0 = torch.floor(steps[None, :] * bin_w[:, None] + start_w[:, None]).clamp(0, width)
    w1 = torch.ceil((steps[None, :] + 1) * bin_w[:, None] + start_w[:, None]).clamp(0, width)
    table = F.pad(features.to(torch.float64).cumsum(2).cumsum(3), (1, 0, 1, 0))
    grid = torch.arange(group_size, device=features.device)
    channel = (
        torch.arange(output_dim, device=features.device)[:, None, None] * group_size
        + grid[None, :, None]
    ) * group_size + grid[None, None, :]  # (D, G, G)
    image = images[:, None, None, None]
    channel = channel[None]
    top, bottom = h0.to(torch.int64)[:, None, :, None], h1.to(torch.int64)[:, None, :, None]
    left, right = w0.to(torch.int64)[:, None, None, :], w1.to(torch.int64)[:, None, None, :]
    total = (
        table[image, channel, bottom, right]
        - table[image, channel, top, right]
        - table[image, channel, bottom, left]
        + table[image, channel, top, left]
    )
    area = ((bottom - top) * (right - left)).to(torch.float64)
    empty = (bottom <= top) | (right <= left)
    mean = torch.where(empty, torch.zeros_like(total), total / area.clamp(min=1.0))
    return mean.to(features.dtype)


def decode_bbox(
    deltas: torch.Tensor,
    rois: torch.Tensor,
    means: Tuple[float, float, float, float],
    stds: Tuple[float, float, float, float],
) -> torch.Tensor:
    """Cascade R-CNN's DecodeBBox at TEST: the foreground deltas (columns 4-7 of 8) applied to
    the regions with the +1 width convention; (R, 5, 1, 1) [image, x1, y1, x2, y2]."""
    regions = rois.reshape(rois.shape[0], -1)
    d = deltas.reshape(deltas.shape[0], -1)[:, 4:8]
    x1, y1, x2, y2 = regions[:, 1], regions[:, 2], regions[:, 3], regions[:, 4]
    prior_w, prior_h = x2 - x1 + 1, y2 - y1 + 1
    centre_x, centre_y = 0.5 * (x2 + x1), 0.5 * (y2 + y1)
    dx, dy = d[:, 0] * stds[0] + means[0], d[:, 1] * stds[1] + means[1]
    dw, dh = d[:, 2] * stds[2] + means[2], d[:, 3] * stds[3] + means[3]
    box_w, box_h = prior_w * torch.exp(dw), prior_h * torch.exp(dh)
    left = dx * prior_w + centre_x - (box_w - 1) / 2
    top = dy * prior_h + centre_y - (box_h - 1) / 2
    rows = torch.stack([regions[:, 0], left, top, left + box_w - 1, top + box_h - 1], dim=1)
    return rows.reshape(-1, 5, 1, 1)


def _proposal_tops(
    rows: List[torch.Tensor], like: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The (R, 5, 1, 1) regions and (R, 6, 1, 1) regions with scores of the MS-CNN / Cascade
    R-CNN proposal heads; with no region at all, [0, 1, 1, 10, 10] and a row of zeros."""
    if len(rows) == 0:
        fixed = torch.tensor([[0.0, 1.0, 1.0, 10.0, 10.0]], dtype=like.dtype, device=like.device)
        zeros = torch.zeros(1, 6, 1, 1, dtype=like.dtype, device=like.device)
        return fixed.reshape(1, 5, 1, 1), zeros
    scored = torch.cat(rows)
    return scored[:, :5].reshape(-1, 5, 1, 1), scored.reshape(-1, 6, 1, 1)


def box_output(
    inputs: List[torch.Tensor],
    fg_threshold: float,
    iou_threshold: float,
    nms_type: str,
    field_w: List[float],
    field_h: List[float],
    downsample: List[float],
    field_whr: float,
    field_xyr: float,
    max_nms: int,
    max_post_nms: int,
    min_size: float,
    means: List[float],
    stds: List[float],
) -> Tuple[torch.Tensor, torch.Tensor]:
    """MS-CNN's BoxOutput (zhaoweicai/mscnn box_output_layer.cpp, Forward_cpu)."""
    like = inputs[0]
    min_xyr, max_xyr = -1.0 / field_xyr, 1.0 / field_xyr
    min_whr, max_whr = math.log(1.0 / field_whr), math.log(field_whr)
    rows: List[torch.Tensor] = []
    for image in range(like.shape[0]):
        found: List[torch.Tensor] = []
        for j, x in enumerate(inputs):
            height, width = x.shape[2], x.shape[3]
            classes = x.shape[1] - 4
            data = x[image].reshape(x.shape[1], height * width)
            score = data[1:classes].amax(dim=0) - data[0]
            cells = (score >= fg_threshold).nonzero().reshape(-1)
            d = data[classes : classes + 4][:, cells]
            bx = d[0] * stds[0] + means[0]
            by = d[1] * stds[1] + means[1]
            bw = d[2] * stds[2] + means[2]
            bh = d[3] * stds[3] + means[3]
            col = (cells % width).to(x.dtype)
            row = torch.div(cells, width, rounding_mode="floor").to(x.dtype)
            bx = bx.clamp(min_xyr, max_xyr) * field_w[j] + (col + 0.5) * downsample[j]
            by = by.clamp(min_xyr, max_xyr) * field_h[j] + (row + 0.5) * downsample[j]
            bw = field_w[j] * torch.exp(bw.clamp(min_whr, max_whr))
            bh = field_h[j] * torch.exp(bh.clamp(min_whr, max_whr))
            bx = torch.clamp(bx - bw / 2, min=0.0)
            by = torch.clamp(by - bh / 2, min=0.0)
            bw = torch.minimum(bw, int(width * downsample[j]) - bx)
            bh = torch.minimum(bh, int(height * downsample[j]) - by)
            keep = (bw >= min_size) & (bh >= min_size)
            found.append(torch.stack([bx, by, bw, bh, score[cells]], dim=1)[keep])
        boxes = torch.cat(found)
        if boxes.shape[0] == 0:
            continue
        # std::sort of (score, index) pairs with std::greater: ties put the later box first.
        reverse = torch.flip(boxes, dims=[0])
        order = torch.sort(reverse[:, 4], descending=True, stable=True).indices
        boxes = reverse[order]
        if max_nms > 0:
            boxes = boxes[:max_nms]
        x, y, w, h = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
        keep = torch.ones(boxes.shape[0], dtype=torch.bool)
        for i in range(boxes.shape[0]):
            if not bool(keep[i]):
                continue
            left = torch.maximum(x[i], x[i + 1 :])
            top = torch.maximum(y[i], y[i + 1 :])
            right = torch.minimum(x[i] + w[i], x[i + 1 :] + w[i + 1 :])
            bottom = torch.minimum(y[i] + h[i], y[i + 1 :] + h[i + 1 :])
            over = torch.where(
                (left >= right) | (top >= bottom),
                torch.zeros_like(left),
                (right - left) * (bottom - top),
            )
            overlap = over / _union(w[i] * h[i], w[i + 1 :] * h[i + 1 :], over, nms_type)
            degenerate = (w[i] <= 0) | (h[i] <= 0) | (w[i + 1 :] <= 0) | (h[i + 1 :] <= 0)
            overlap = torch.where(degenerate, torch.zeros_like(overlap), overlap)
            keep[i + 1 :] = keep[i + 1 :] & ~(overlap > iou_threshold)
        boxes = boxes[keep]
        if max_post_nms > 0:
            boxes = boxes[:max_post_nms]
        if boxes.shape[0] == 0:
            continue
        corner = torch.stack(
            [
                torch.full_like(boxes[:, 0], float(image)),
                boxes[:, 0],
                boxes[:, 1],
                boxes[:, 0] + boxes[:, 2],
                boxes[:, 1] + boxes[:, 3],
                boxes[:, 4],
            ],
            dim=1,
        )
        rows.append(corner)
    return _proposal_tops(rows, like)


def _union(
    first: torch.Tensor, others: torch.Tensor, inter: torch.Tensor, nms_type: str
) -> torch.Tensor:
    """The denominator of the forks' overlap: IOMU the smaller area, IOFU the first box's."""
    if nms_type == "IOMU":
        return torch.minimum(first, others)
    if nms_type == "IOFU":
        return first.expand_as(others)
    return first + others - inter


def box_group_output(
    inputs: List[torch.Tensor],
    groups: List[int],
    fg_threshold: float,
    iou_threshold: float,
    nms_type: str,
    field_w: List[float],
    field_h: List[float],
    strides: List[float],
    field_whr: float,
    field_xyr: float,
    max_nms: int,
    max_post_nms: int,
    min_size: float,
    means: List[float],
    stds: List[float],
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Cascade R-CNN's BoxGroupOutput (zhaoweicai/cascade-rcnn box_group_output_layer.cpp,
    Forward_cpu; DecodeGroupBBoxes, ClipBBox, ApplyNMS)."""
    like = inputs[0]
    low_xy, high_xy = -1.0 / field_xyr, 1.0 / field_xyr
    low_wh, high_wh = math.log(1.0 / field_whr), math.log(field_whr)
    images = like.shape[0] // groups[0]
    rows: List[torch.Tensor] = []
    for image in range(images):
        found: List[torch.Tensor] = []
        first = 0
        for j in range(len(groups)):
            probability, deltas = inputs[2 * j], inputs[2 * j + 1]
            group, stride = groups[j], strides[j]
            height, width = deltas.shape[2], deltas.shape[3]
            cells = torch.arange(height * width, device=like.device)
            col = (cells % width).to(like.dtype)
            row = torch.div(cells, width, rounding_mode="floor").to(like.dtype)
            for k in range(group):
                index = image * group + k
                fw, fh = field_w[first + k], field_h[first + k]
                d = deltas[index].reshape(4, height * width)
                bx = (d[0] * stds[0] + means[0]).clamp(low_xy, high_xy)
                by = (d[1] * stds[1] + means[1]).clamp(low_xy, high_xy)
                bw = (d[2] * stds[2] + means[2]).clamp(low_wh, high_wh)
                bh = (d[3] * stds[3] + means[3]).clamp(low_wh, high_wh)
                bx = bx * fw + (col + 0.5) * stride
                by = by * fh + (row + 0.5) * stride
                bw, bh = fw * torch.exp(bw), fh * torch.exp(bh)
                x1, y1 = bx - bw / 2, by - bh / 2
                x2, y2 = x1 + bw - 1, y1 + bh - 1
                score = 1 - probability[index].reshape(probability.shape[1], -1)[0]
                x1, y1 = torch.clamp(x1, min=0.0), torch.clamp(y1, min=0.0)
                x2 = torch.clamp(x2, max=float(width * stride))
                y2 = torch.clamp(y2, max=float(height * stride))
                keep = (
                    (score >= fg_threshold)
                    & (x2 - x1 + 1 >= min_size)
                    & (y2 - y1 + 1 >= min_size)
                )
                found.append(torch.stack([x1, y1, x2, y2, score], dim=1)[keep])
            first += group
        boxes = torch.cat(found)
        if boxes.shape[0] == 0:
            continue
        order = torch.sort(boxes[:, 4], descending=True, stable=True).indices
        boxes = boxes[order]
        if max_nms > 0:
            boxes = boxes[:max_nms]
        keep = torch.ones(boxes.shape[0], dtype=torch.bool)
        sizes = _box_size(boxes)
        for i in range(boxes.shape[0]):
            if not bool(keep[i]):
                continue
            overlap = _jaccard(boxes[i], boxes[i + 1 :], sizes[i], sizes[i + 1 :], nms_type)
            keep[i + 1 :] = keep[i + 1 :] & ~(overlap > iou_threshold)
        boxes = boxes[keep]
        if max_post_nms > 0:
            boxes = boxes[:max_post_nms]
        column = torch.full_like(boxes[:, :1], float(image))
        rows.append(torch.cat([column, boxes], dim=1))
    return _proposal_tops(rows, like)


def _box_size(boxes: torch.Tensor) -> torch.Tensor:
    """cascade-rcnn's BBoxSize: (w + 1) * (h + 1), 0 for an inverted box."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return torch.where((w < 0) | (h < 0), torch.zeros_like(w), (w + 1) * (h + 1))


def _jaccard(
    box: torch.Tensor, others: torch.Tensor, size: torch.Tensor, sizes: torch.Tensor, mode: str
) -> torch.Tensor:
    """cascade-rcnn's JaccardOverlap(BBox, BBox, mode) of one box with each of `others`."""
    left = torch.maximum(box[0], others[:, 0])
    top = torch.maximum(box[1], others[:, 1])
    right = torch.minimum(box[2], others[:, 2])
    bottom = torch.minimum(box[3], others[:, 3])
    inter = torch.where(
        (left > right) | (top >= bottom),
        torch.zeros_like(left),
        (right - left + 1) * (bottom - top + 1),
    )
    union = _union(size, sizes, inter, mode)
    overlap = torch.where(union <= 0, torch.zeros_like(inter), inter / union)
    invalid = (box[2] < box[0]) | (box[3] < box[1])
    invalid = invalid | (others[:, 2] < others[:, 0]) | (others[:, 3] < others[:, 1])
    return torch.where(invalid, torch.zeros_like(overlap), overlap)


def scale_route(
    rois: torch.Tensor, low: Optional[float] = None, high: Optional[float] = None
) -> torch.Tensor:
    """Cascade R-CNN's ScaleRoute: the regions whose scale sqrt((w + 1)(h + 1)) is in
    [low, high); none: the one closest to the middle scale in log2 (the first such)."""
    low_scale = 0.0 if low is None else low
    high_scale = 3.4028234663852886e38 if high is None else high
    if low is not None and high is not None:
        middle = math.sqrt(low * high)
    elif low is not None:
        middle = low
    elif high is not None:
        middle = high
    else:
        middle = 256.0
    regions = rois.reshape(rois.shape[0], -1)
    w, h = regions[:, 3] - regions[:, 1], regions[:, 4] - regions[:, 2]
    size = torch.where((w < 0) | (h < 0), torch.zeros_like(w), (w + 1) * (h + 1))
    scale = torch.sqrt(size)
    chosen = ((scale >= low_scale) & (scale < high_scale)).nonzero().reshape(-1)
    if chosen.shape[0] == 0:
        distance = torch.abs(torch.log2(scale / middle))
        chosen = torch.argmin(distance).reshape(1)
    return rois[chosen]
