def _decode_boxes(
    loc: torch.Tensor, priors: torch.Tensor, variances: torch.Tensor, code_type: str, encoded: bool
) -> torch.Tensor:
    """Caffe's DecodeBBox for (P, L, 4) offsets against (P, 1, 4) priors, in float32."""
    if encoded:
        variances = torch.ones_like(variances)
    if code_type == "CORNER":
        return priors + variances * loc
    prior_w = priors[..., 2] - priors[..., 0]
    prior_h = priors[..., 3] - priors[..., 1]
    if code_type == "CORNER_SIZE":
        size = torch.stack([prior_w, prior_h, prior_w, prior_h], dim=-1)
        return priors + variances * loc * size
    center_x = (priors[..., 0] + priors[..., 2]) / 2.0
    center_y = (priors[..., 1] + priors[..., 3]) / 2.0
    new_x = variances[..., 0] * loc[..., 0] * prior_w + center_x
    new_y = variances[..., 1] * loc[..., 1] * prior_h + center_y
    new_w = torch.exp(variances[..., 2] * loc[..., 2]) * prior_w
    new_h = torch.exp(variances[..., 3] * loc[..., 3]) * prior_h
    return torch.stack(
        [new_x - new_w / 2.0, new_y - new_h / 2.0, new_x + new_w / 2.0, new_y + new_h / 2.0],
        dim=-1,
    )


def _box_sizes(boxes: torch.Tensor) -> torch.Tensor:
    width = boxes[..., 2] - boxes[..., 0]
    height = boxes[..., 3] - boxes[..., 1]
    return torch.where((width < 0) | (height < 0), torch.zeros_like(width), width * height)


def _nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    score_threshold: float | None,
    nms_threshold: float,
    eta: float,
    top_k: int,
) -> torch.Tensor:
    """Caffe's ApplyNMSFast: candidates above the threshold, best first (ties by index), at most
    top_k; keep each one whose overlap with every kept box is <= the (adaptive) threshold."""
    candidates = torch.arange(scores.numel())
    if score_threshold is not None:
        candidates = candidates[scores > score_threshold]
    order = torch.sort(scores[candidates], descending=True, stable=True).indices
    candidates = candidates[order]
    if top_k > -1:
        candidates = candidates[:top_k]
    chosen = boxes[candidates]
    sizes = _box_sizes(chosen)
    kept: list[int] = []
    threshold = nms_threshold
    # Overlaps of a block of candidates with every candidate at once; blocks bound the memory
    # when there is no top_k (thousands of candidates).
    block = 256
    for start in range(0, chosen.shape[0], block):
        rows = chosen[start : start + block]
        low = torch.maximum(rows[:, None, :2], chosen[None, :, :2])
        high = torch.minimum(rows[:, None, 2:], chosen[None, :, 2:])
        inter_w, inter_h = high[..., 0] - low[..., 0], high[..., 1] - low[..., 1]
        inter = inter_w * inter_h
        union = sizes[start : start + block, None] + sizes[None, :] - inter
        overlaps: list[list[float]] = torch.where(
            (inter_w > 0) & (inter_h > 0), inter / torch.where(union == 0, 1.0, union), 0.0
        ).tolist()
        for offset, row in enumerate(overlaps):
            # A plain loop rather than all(...): TorchScript compiles no generator expressions.
            keep = True
            for j in kept:
                if row[j] > threshold:
                    keep = False
                    break
            if keep:
                kept.append(start + offset)
                if eta < 1 and threshold > 0.5:
                    threshold *= eta
    return candidates[kept]


def detection_output(
    loc: torch.Tensor,
    conf: torch.Tensor,
    prior: torch.Tensor,
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
    clip: bool = False,
) -> torch.Tensor:
    """SSD's DetectionOutput (CPU): decode, per-class NMS, keep_top_k by score. Returns
    (1, 1, rows, 7) rows [image, label, score, xmin, ymin, xmax, ymax], by label then score;
    with no detection at all, one row [image, -1, ...] per image."""
    num = loc.shape[0]
    num_priors = prior.shape[2] // 4
    loc_classes = 1 if share_location else num_classes
    locs = loc.reshape(num, num_priors, loc_classes, 4)
    confs = conf.reshape(num, num_priors, num_classes)
    priors = prior[0, 0].reshape(num_priors, 1, 4)
    variances = prior[0, 1].reshape(num_priors, 1, 4)
    rows: list[torch.Tensor] = []
    for image in range(num):
        boxes = _decode_boxes(locs[image], priors, variances, code_type, variance_encoded_in_target)
        if clip:
            boxes = boxes.clamp(0.0, 1.0)
        labels: list[int] = []
        found: list[torch.Tensor] = []
        for label in range(num_classes):
            if label == background_label:
                continue
            class_boxes = boxes[:, 0 if share_location else label]
            keep = _nms(
                class_boxes, confs[image, :, label], confidence_threshold, nms_threshold, eta, top_k
            )
            labels += [label] * keep.numel()
            found.append(keep)
        indices = torch.cat(found) if found else torch.zeros(0, dtype=torch.long)
        label_ids = torch.tensor(labels, dtype=torch.long)
        scores = confs[image, indices, label_ids]
        if -1 < keep_top_k < indices.numel():
            best = torch.sort(scores, descending=True, stable=True).indices[:keep_top_k]
            indices, label_ids, scores = indices[best], label_ids[best], scores[best]
        # Caffe lists the kept detections by label, and within a label by score.
        order = torch.sort(-scores, stable=True).indices
        order = order[torch.sort(label_ids[order], stable=True).indices]
        indices, label_ids, scores = indices[order], label_ids[order], scores[order]
        if share_location:
            chosen = boxes[indices, 0]
        else:
            chosen = boxes[indices, label_ids]
        image_ids = torch.full_like(scores, float(image))
        rows.append(
            torch.cat([image_ids[:, None], label_ids[:, None].to(scores), scores[:, None], chosen], 1)
        )
    detections = torch.cat(rows)
    if detections.shape[0] == 0:
        detections = torch.full((num, 7), -1.0, dtype=loc.dtype, device=loc.device)
        detections[:, 0] = torch.arange(num, dtype=loc.dtype, device=loc.device)
    return detections.reshape(1, 1, -1, 7)
