import torch


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


def _decode_quadrilaterals(
    offsets: torch.Tensor, priors: torch.Tensor, variances: torch.Tensor
) -> torch.Tensor:
    """TextBoxes++' DecodeBBoxPolygon (CENTER_SIZE): (..., 8) offsets -> the 4 corners, each
    var * offset * prior size + the prior's matching corner, in float32."""
    prior_w = priors[..., 2] - priors[..., 0]
    prior_h = priors[..., 3] - priors[..., 1]
    corners = [(0, 1), (2, 1), (2, 3), (0, 3)]  # (xmin, ymin), (xmax, ymin), ...
    values = []
    for k, (x, y) in enumerate(corners):
        values.append(variances[..., 0] * offsets[..., 2 * k] * prior_w + priors[..., x])
        values.append(variances[..., 1] * offsets[..., 2 * k + 1] * prior_h + priors[..., y])
    return torch.stack(values, -1)


def _decode_rotated(
    offsets: torch.Tensor, priors: torch.Tensor, variances: torch.Tensor
) -> torch.Tensor:
    """TextBoxes++' DecodeBBoxRBox (CENTER_SIZE): (..., 5) offsets -> x1, y1, x2, y2 around the
    prior's centre and the height h, in float32."""
    prior_w = priors[..., 2] - priors[..., 0]
    prior_h = priors[..., 3] - priors[..., 1]
    center_x = (priors[..., 0] + priors[..., 2]) / 2.0
    center_y = (priors[..., 1] + priors[..., 3]) / 2.0
    values = []
    for k in range(2):
        values.append(variances[..., 0] * offsets[..., 2 * k] * prior_w + center_x)
        values.append(variances[..., 1] * offsets[..., 2 * k + 1] * prior_h + center_y)
    values.append(torch.exp(variances[..., 3] * offsets[..., 4]) * prior_h)
    return torch.stack(values, -1)


def _overlaps(
    candidates: torch.Tensor, kept: torch.Tensor, sizes: torch.Tensor, by_kept: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Caffe's JaccardOverlap(candidate, kept box) (bbox_util.cpp) of (..., 4, R) candidates
    with (..., 4, K) kept boxes (coordinates first, each a contiguous row, as
    _as_candidates and _as_kept lay them out), and the sum of their BBoxSizes `sizes` (..., R,
    K): (overlap, the intersection's narrower side), each (..., R, K), or (..., K, R)
    `by_kept`. Where the boxes do not intersect (Caffe: unless both sides are > 0) the side is
    0 and the overlap 0 or NaN (0 / 0, 0 * inf, or a NaN size), which _spared reads as Caffe's
    0."""
    c_rows, k_rows = (-2, -1) if by_kept else (-1, -2)
    c_x0, c_y0, c_x1, c_y1 = candidates.unsqueeze(c_rows).unbind(-3)
    k_x0, k_y0, k_x1, k_y1 = kept.unsqueeze(k_rows).unbind(-3)
    inter_w = (torch.minimum(c_x1, k_x1) - torch.maximum(c_x0, k_x0)).clamp_(min=0.0)
    inter_h = (torch.minimum(c_y1, k_y1) - torch.maximum(c_y0, k_y0)).clamp_(min=0.0)
    inter = inter_w * inter_h
    return inter / (sizes - inter), torch.minimum(inter_w, inter_h)


def _spared(overlap: torch.Tensor, side: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Caffe's `keep = overlap <= threshold` for one pair: a NaN overlap of boxes that
    intersect suppresses; boxes that do not intersect overlap 0, which the threshold (Caffe
    CHECKs nms_threshold >= 0, and eta > 0 only lowers it) spares."""
    return (overlap <= threshold) | (side == 0)


def _as_candidates(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4, K) boxes as IntersectBBox's first argument: Caffe's std::max(a, b) and
    std::min(a, b) return a NaN only as `a`, so a candidate with a NaN coordinate intersects
    nothing; it becomes the empty box [+inf, +inf, -inf, -inf] (its size is kept apart)."""
    empty = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=boxes.dtype, device=boxes.device)
    nan = torch.isnan(boxes).any(-2, keepdim=True)
    return torch.where(nan, empty[:, None] * float("inf"), boxes)


def _as_kept(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4, K) boxes as IntersectBBox's second argument: where a coordinate is NaN, the
    intersection takes the candidate's (see _as_candidates), as an infinite one would."""
    open_side = torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=boxes.dtype, device=boxes.device)
    return torch.where(torch.isnan(boxes), open_side[:, None] * float("inf"), boxes)


def _box_sizes(boxes: torch.Tensor) -> torch.Tensor:
    """Caffe's BBoxSize of (..., 4, K) boxes: 0 for an inverted box (NaN with a NaN side)."""
    width = boxes[..., 2, :] - boxes[..., 0, :]
    height = boxes[..., 3, :] - boxes[..., 1, :]
    return torch.where((width < 0) | (height < 0), torch.zeros_like(width), width * height)


def _nms_keep(
    boxes: torch.Tensor, valid: torch.Tensor, nms_threshold: float, eta: float
) -> torch.Tensor:
    """Caffe's ApplyNMSFast for every (image, class) at once, over candidates already sorted
    best first: (N, C, K, 4) boxes and (N, C, K) valid -> which candidates it keeps.

    Candidate i is kept when valid and its overlap with every kept earlier candidate is <= the
    threshold (which an eta < 1 lowers after each kept box while above 0.5); a NaN overlap is
    not. The loops run over the static range(K), with tensor steps only, so that torch.export
    and ONNX can follow them (a few nodes a step: they are unrolled there). Overlaps are
    computed a block of rows at a time, against the candidates on the side that matters only:
    memory stays O(N * C * K * 64).
    """
    count = boxes.shape[2]
    block = 64
    coordinates = boxes.transpose(2, 3).contiguous()
    as_candidates, as_kept = _as_candidates(coordinates), _as_kept(coordinates)
    sizes = _box_sizes(coordinates)
    keep = valid.clone()
    threshold = torch.full_like(boxes[:, :, :1, 0], nms_threshold)
    indices = torch.arange(count, device=boxes.device)
    for start in range(0, count, block):
        stop = min(start + block, count)
        rows = indices[start:stop, None]
        if eta >= 1.0:
            # A fixed threshold: once i is decided, it settles every later candidate it
            # overlaps too much (keep is final for i and all before it). Row i, column j: later
            # candidate j against kept box i.
            both = sizes[:, :, start:stop, None] + sizes[:, :, None, start:]
            overlap, side = _overlaps(
                as_candidates[..., start:], as_kept[..., start:stop], both, by_kept=True
            )
            later = indices[None, start:] > rows
            spares = _spared(overlap, side, threshold[..., None]) | ~later
            tail = keep[:, :, start:]
            for i in range(stop - start):
                # (Not torch.where: ONNX Runtime has no Where for booleans.)
                tail = tail & (spares[:, :, i] | ~tail[:, :, i : i + 1])
            keep = torch.cat([keep[:, :, :start], tail], 2)
        else:
            # The threshold a candidate meets depends on how many were kept before it: decide
            # i from the kept earlier ones, then lower the threshold.
            both = sizes[:, :, start:stop, None] + sizes[:, :, None, :stop]
            overlap, side = _overlaps(as_candidates[..., start:stop], as_kept[..., :stop], both)
            earlier = indices[None, :stop] < rows
            for i in range(start, stop):
                spared = _spared(overlap[:, :, i - start], side[:, :, i - start], threshold)
                close = ~spared & earlier[i - start]
                kept = keep[:, :, i] & ~(close & keep[:, :, :stop]).any(-1)
                keep[:, :, i] = kept
                lower = kept[:, :, None] & (threshold > 0.5)
                threshold = torch.where(lower, threshold * eta, threshold)
    return keep


def _sort_descending(values: torch.Tensor) -> torch.Tensor:
    """The indices that sort the last axis best first, ties by index (a stable sort). Spelled
    with plain sorts, which ONNX has (as TopK) and sort(stable=True) does not: a second sort on
    (run of equal values, index) orders each run of ties, whatever order the first one left."""
    ordered = torch.sort(values, dim=-1, descending=True)
    changes = (ordered.values[..., 1:] != ordered.values[..., :-1]).to(torch.int64)
    runs = torch.cat([torch.zeros_like(ordered.indices[..., :1]), changes.cumsum(-1)], -1)
    keys = runs * values.shape[-1] + ordered.indices
    return torch.gather(ordered.indices, -1, torch.argsort(keys, dim=-1))


def _without(values: torch.Tensor, index: int) -> torch.Tensor:
    """values without entry `index` of its last axis (none dropped when out of range)."""
    if index < 0 or index >= values.shape[-1]:
        return values
    return torch.cat([values[..., :index], values[..., index + 1 :]], -1)


def _static_shapes(x: torch.Tensor) -> bool:
    """Whether the sizes inside DetectionOutput must not depend on the data: under TorchScript,
    tracing, torch.compile, torch.export and ONNX export, and for tensors without data (the
    meta device)."""
    if torch.jit.is_scripting():
        return True
    return _traced(x)


@torch.jit.unused
def _traced(x: torch.Tensor) -> bool:
    compiler = getattr(torch, "compiler", None)
    compiling = compiler is not None and bool(compiler.is_compiling())
    return x.is_meta or compiling or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _priors_passing(
    loc: torch.Tensor,
    conf: torch.Tensor,
    prior: torch.Tensor,
    num_classes: int,
    background_label: int,
    confidence_threshold: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """loc, conf and prior of only the priors that some class (not the background) scores
    above the threshold in some image, in their order (no other prior can give a detection),
    when that leaves out at least half of them."""
    num = loc.shape[0]
    num_priors = prior.shape[2] // 4
    if num_priors == 0:
        return loc, conf, prior
    scores = _without(conf.reshape(num, num_priors, num_classes), background_label)
    index = (scores > confidence_threshold).any(-1).any(0).nonzero()[:, 0]
    if 2 * index.numel() > num_priors:
        return loc, conf, prior  # most pass: leaving out the rest would cost what it saves
    if index.numel() == 0:
        index = index.new_zeros(1)  # none passes: one prior to find nothing in
    loc = loc.reshape(num, num_priors, -1)[:, index].reshape(num, -1)
    conf = conf.reshape(num, num_priors, num_classes)[:, index].reshape(num, -1)
    prior = prior.reshape(prior.shape[0], 2, num_priors, 4)[:, :, index]
    return loc, conf, prior.reshape(prior.shape[0], 2, -1)


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
    arm_conf: torch.Tensor | None = None,
    arm_loc: torch.Tensor | None = None,
    objectness_score: float = 0.01,
    polygon: bool | None = None,
) -> torch.Tensor:
    """SSD's DetectionOutput (CPU): decode, per-class NMS, keep_top_k by score. Returns
    (1, 1, rows, 7) rows [image, label, score, xmin, ymin, xmax, ymax], by image, then label,
    then score; with no detection at all, one row [image, -1, ...] per image.

    Exported, compiled or scripted, no Python branch depends on the data (sizes are static,
    choices are masks): every class ranks min(top_k, priors) candidates, only the row count is
    data-dependent. Run eagerly, it first leaves out the priors that no class scores above the
    confidence threshold (NMS takes one step per candidate): the same rows, fast when few boxes
    pass.

    RefineDet's form (arm_conf and arm_loc given, share_location): a prior whose objectness
    (arm_conf's second score) is below objectness_score gets scores [1, 0, ...], and the odm
    offsets are decoded against the priors as arm_loc refines them, per image.

    TextBoxes++' forms (CENTER_SIZE): polygon True, 12 offsets a prior, the box's 4 and a
    quadrilateral's 8 (from the prior's corners, scaled by its size and variances 0 and 1),
    rows of 15; polygon False, 9 offsets, the box's and a rotated box's (x1, y1, x2, y2 from
    the prior's centre, h), rows of 12. NMS on the boxes.
    """
    num = loc.shape[0]
    arm_width = 0
    if arm_conf is not None:
        # OSGetConfidenceScores: class 0 certain, the others 0, for easy negatives.
        count = prior.shape[2] // 4
        negative = arm_conf.reshape(num, count, 2)[:, :, 1:2] < objectness_score
        certain = (torch.arange(num_classes, device=conf.device) == 0).to(conf.dtype)
        conf = torch.where(negative, certain, conf.reshape(num, count, num_classes))
        conf = conf.reshape(num, -1)
    if arm_loc is not None:
        # The ARM offsets travel beside the odm's, prior by prior (share_location: 4 each).
        count = prior.shape[2] // 4
        arm_width = 4
        loc = torch.cat([loc.reshape(num, count, -1), arm_loc.reshape(num, count, 4)], -1)
        loc = loc.reshape(num, -1)
    if confidence_threshold is not None and not _static_shapes(loc):
        loc, conf, prior = _priors_passing(
            loc, conf, prior, num_classes, background_label, confidence_threshold
        )
    num_priors = prior.shape[2] // 4
    loc_classes = 1 if share_location else num_classes
    priors = prior[0, 0].reshape(num_priors, 1, 4)
    variances = prior[0, 1].reshape(num_priors, 1, 4)
    if arm_width:
        # CasRegDecodeBBoxesAll: each image's priors decoded by its ARM offsets first.
        both = loc.reshape(num, num_priors, -1)
        refined = both[:, :, -arm_width:].reshape(num, num_priors, 1, 4)
        priors = _decode_boxes(refined, priors, variances, code_type, variance_encoded_in_target)
        loc = both[:, :, :-arm_width].reshape(num, -1)
    values = 4
    if polygon is not None:
        values = 12 if polygon else 9
    locs = loc.reshape(num, num_priors, loc_classes, values)
    boxes = _decode_boxes(locs[..., :4], priors, variances, code_type, variance_encoded_in_target)
    if clip:
        boxes = boxes.clamp(0.0, 1.0)
    if polygon is not None:
        if polygon:
            extra = _decode_quadrilaterals(locs[..., 4:], priors, variances)
        else:
            extra = _decode_rotated(locs[..., 4:], priors, variances)
        boxes = torch.cat([boxes, extra], -1)
    width = boxes.shape[-1]
    # (N, classes, priors): the background class is no candidate.
    scores = _without(conf.reshape(num, num_priors, num_classes), background_label)
    scores = scores.transpose(1, 2)
    labels = _without(torch.arange(num_classes, device=loc.device), background_label)
    boxes = boxes.transpose(1, 2)
    if not share_location:
        boxes = _without(boxes.transpose(1, 3), background_label).transpose(1, 3)
    classes = scores.shape[1]
    # ApplyNMSFast's candidates: by score (ties by prior index), the best top_k of them, those
    # above the confidence threshold (a mask: the sort puts them first).
    count = min(top_k, num_priors) if top_k > -1 else num_priors
    order = _sort_descending(scores)[:, :, :count]
    best = torch.gather(scores, 2, order)
    chosen = torch.gather(
        boxes.expand(-1, classes, -1, -1), 2, order[:, :, :, None].expand(-1, -1, -1, width)
    )
    if confidence_threshold is not None:
        valid = best > confidence_threshold
    else:
        valid = torch.ones_like(best, dtype=torch.bool)
    keep = _nms_keep(chosen[..., :4], valid, nms_threshold, eta).reshape(num, classes * count)
    if -1 < keep_top_k < classes * count:
        # The keep_top_k best kept detections of each image (ties in label, then rank, order).
        masked = torch.where(keep, best.reshape(num, -1), float("-inf"))
        keep = keep & (torch.argsort(_sort_descending(masked), dim=-1) < keep_top_k)
    # Row-major order of (image, class, rank) is Caffe's order of the rows.
    image_ids = torch.arange(num, dtype=best.dtype, device=best.device)
    rows = torch.cat(
        [
            image_ids[:, None, None, None].expand(-1, classes, count, 1),
            labels.to(best)[None, :, None, None].expand(num, -1, count, 1),
            best[:, :, :, None],
            chosen,
        ],
        -1,
    ).reshape(num * classes * count, 3 + width)
    # No detection in any image: one row [image, -1, ..., -1] per image instead.
    empty = torch.cat(
        [image_ids[:, None], torch.full_like(image_ids[:, None].expand(-1, 2 + width), -1.0)], 1
    )
    nothing = ~keep.any()
    selected = torch.cat([rows, empty])[torch.cat([keep.reshape(-1), nothing.expand(num)])]
    return selected[None, None]
