import torch


def _proposal_iou(box: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """nms.cpp's iou of one (x1, y1, x2, y2) box with (K, 4) boxes: +1 widths, 0 where the
    boxes do not meet."""
    apart = (
        (box[0] > others[:, 2])
        | (box[1] > others[:, 3])
        | (box[2] < others[:, 0])
        | (box[3] < others[:, 1])
    )
    width = (torch.minimum(box[2], others[:, 2]) - torch.maximum(box[0], others[:, 0]) + 1.0)
    height = (torch.minimum(box[3], others[:, 3]) - torch.maximum(box[1], others[:, 1]) + 1.0)
    inter = width.clamp(min=0.0) * height.clamp(min=0.0)
    area = (box[2] - box[0] + 1.0) * (box[3] - box[1] + 1.0)
    areas = (others[:, 2] - others[:, 0] + 1.0) * (others[:, 3] - others[:, 1] + 1.0)
    return torch.where(apart, torch.zeros_like(inter), inter / (area + areas - inter))


def _caffe_sort_box(keys: list[float], num_top: int) -> list[int]:
    """The order proposal_layer.cpp's sort_box leaves n scores in: Caffe's own quicksort,
    best first, sorted only as far as its first num_top places need (ties come out as it
    leaves them, which no stable sort reproduces). Its recursion is an explicit stack here:
    the two subranges are disjoint, so the order of visiting them does not matter."""
    order = list(range(len(keys)))
    stack: list[tuple[int, int]] = [(0, len(keys) - 1)]
    while len(stack) > 0:
        start, end = stack.pop()
        pivot = keys[start]
        left, right = start + 1, end
        while left <= right:
            while left <= end and keys[left] >= pivot:
                left += 1
            while right > start and keys[right] <= pivot:
                right -= 1
            if left <= right:
                key, index = keys[left], order[left]
                keys[left], order[left] = keys[right], order[right]
                keys[right], order[right] = key, index
                left += 1
                right -= 1
        if right > start:
            key, index = keys[start], order[start]
            keys[start], order[start] = keys[right], order[right]
            keys[right], order[right] = key, index
        if start < right - 1:
            stack.append((start, right - 1))
        if right + 1 < num_top and right + 1 < end:
            stack.append((right + 1, end))
    return order


def caffe_proposal(
    scores: torch.Tensor,
    deltas: torch.Tensor,
    im_info: torch.Tensor,
    anchors: list[list[float]],
    feat_stride: int,
    min_size: int,
    pre_nms_topn: int,
    post_nms_topn: int,
    nms_thresh: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The oracle build's Proposal layer (proposal_layer.cpp, nms.cpp): (rois (R, 5) rows
    [image, x1, y1, x2, y2], their scores (R)), R known only at run time. Python loops (the
    sort and the greedy NMS) decide what comes out, so this runs eagerly or in TorchScript
    only."""
    count = len(anchors)
    height, width = scores.shape[2], scores.shape[3]
    base = torch.tensor(anchors, dtype=scores.dtype, device=scores.device)
    shift_y = torch.arange(height, device=scores.device).to(scores.dtype) * feat_stride
    shift_x = torch.arange(width, device=scores.device).to(scores.dtype) * feat_stride
    shifts = torch.stack(
        [
            shift_x[None, :].expand(height, width),
            shift_y[:, None].expand(height, width),
            shift_x[None, :].expand(height, width),
            shift_y[:, None].expand(height, width),
        ],
        -1,
    )
    # Proposals in Caffe's order: row h, column w, anchor k.
    boxes = (shifts[:, :, None, :] + base[None, None, :, :]).reshape(-1, 4)
    image_h, image_w = im_info.flatten()[0], im_info.flatten()[1]
    rois: list[torch.Tensor] = []
    kept_scores: list[torch.Tensor] = []
    for n in range(scores.shape[0]):
        d = deltas[n].reshape(count, 4, height, width).permute(2, 3, 0, 1).reshape(-1, 4)
        foreground = scores[n, count:].permute(1, 2, 0).reshape(-1)
        w = boxes[:, 2] - boxes[:, 0] + 1.0
        h = boxes[:, 3] - boxes[:, 1] + 1.0
        center_x = d[:, 0] * w + (boxes[:, 0] + 0.5 * w)
        center_y = d[:, 1] * h + (boxes[:, 1] + 0.5 * h)
        half_w = 0.5 * (torch.exp(d[:, 2]) * w)
        half_h = 0.5 * (torch.exp(d[:, 3]) * h)
        x1 = torch.minimum(center_x - half_w, image_w - 1.0).clamp(min=0.0)
        y1 = torch.minimum(center_y - half_h, image_h - 1.0).clamp(min=0.0)
        x2 = torch.minimum(center_x + half_w, image_w - 1.0).clamp(min=0.0)
        y2 = torch.minimum(center_y + half_h, image_h - 1.0).clamp(min=0.0)
        large = (x2 - x1 + 1.0 >= min_size) & (y2 - y1 + 1.0 >= min_size)
        score = foreground * large.to(foreground.dtype)
        decoded = torch.stack([x1, y1, x2, y2], 1)
        keys: list[float] = score.tolist()
        ranking = _caffe_sort_box(keys, pre_nms_topn)[:pre_nms_topn]
        order = torch.tensor(ranking, dtype=torch.long, device=scores.device)
        candidates, ranked = decoded[order], score[order]
        # Greedy NMS: each kept box suppresses the later ones it overlaps more than nms_thresh.
        suppressed = torch.zeros_like(ranked, dtype=torch.bool)
        keep: list[int] = []
        for i in range(candidates.shape[0]):
            if bool(suppressed[i]):
                continue
            keep.append(i)
            if len(keep) == post_nms_topn:
                break
            overlap = _proposal_iou(candidates[i], candidates[i + 1 :])
            suppressed[i + 1 :] = suppressed[i + 1 :] | (overlap > nms_thresh)
        index = torch.tensor(keep, dtype=torch.long, device=scores.device)
        image = torch.full_like(ranked[index], float(n))
        rois.append(torch.cat([image[:, None], candidates[index]], 1))
        kept_scores.append(ranked[index])
    return torch.cat(rois), torch.cat(kept_scores)
