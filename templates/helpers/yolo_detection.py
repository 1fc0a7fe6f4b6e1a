from typing import List

import torch


def _yolo_rows(
    scores: torch.Tensor, classes: torch.Tensor, boxes: torch.Tensor, nms_threshold: float, images: int
) -> torch.Tensor:
    """eric612/MobileNet-YOLO's common tail: sort the candidates by score (best first),
    suppress class-agnostically each box whose IoU with a kept better one is >= the threshold,
    and write (1, 1, K, 7) rows [0, class + 1, score, xmin, ymin, xmax, ymax]; no candidate
    left: one row [i, -1, -1, ...] per image. `boxes` are (K, 4) centre x, y, width, height."""
    order = torch.sort(scores, descending=True, stable=True).indices
    scores, classes, boxes = scores[order], classes[order], boxes[order]
    count = scores.shape[0]
    if count == 0:
        rows = torch.full((images, 7), -1.0, dtype=boxes.dtype, device=boxes.device)
        rows[:, 0] = torch.arange(images, dtype=boxes.dtype, device=boxes.device)
        return rows.reshape(1, 1, images, 7)
    x, y, w, h = boxes.unbind(1)
    left, right = x - w / 2, x + w / 2
    top, bottom = y - h / 2, y + h / 2
    area = w * h
    suppressed = torch.zeros(count, dtype=torch.bool, device=boxes.device)
    for i in range(count - 1):
        if bool(suppressed[i]):
            continue
        inter_w = torch.minimum(right[i], right[i + 1 :]) - torch.maximum(left[i], left[i + 1 :])
        inter_h = torch.minimum(bottom[i], bottom[i + 1 :]) - torch.maximum(top[i], top[i + 1 :])
        inter = torch.where(
            (inter_w < 0) | (inter_h < 0), torch.zeros_like(inter_w), inter_w * inter_h
        )
        iou = inter / (area[i] + area[i + 1 :] - inter)
        suppressed[i + 1 :] = suppressed[i + 1 :] | (iou >= nms_threshold)
    keep = ~suppressed
    kept = int(keep.sum())
    rows = torch.stack(
        [
            torch.zeros(kept, dtype=boxes.dtype, device=boxes.device),
            classes[keep].to(boxes.dtype) + 1,
            scores[keep],
            left[keep],
            top[keep],
            right[keep],
            bottom[keep],
        ],
        dim=1,
    )
    return rows.reshape(1, 1, kept, 7)


def yolov3_detection_output(
    inputs: List[torch.Tensor],
    num_classes: int,
    biases: List[float],
    masks: List[List[int]],
    anchors_scale: List[int],
    confidence_threshold: float,
    nms_threshold: float,
) -> torch.Tensor:
    """eric612's Yolov3DetectionOutput (CPU): candidates in the fork's order (bottom, image,
    cell, box, class) before the sort, so that ties keep it."""
    scores: List[torch.Tensor] = []
    classes: List[torch.Tensor] = []
    boxes: List[torch.Tensor] = []
    length = 5 + num_classes
    for t, x in enumerate(inputs):
        n, height, width = x.shape[0], x.shape[2], x.shape[3]
        num_box = len(masks[t])
        raw = x[:, : num_box * length].reshape(n, num_box, length, height * width)
        raw = raw.permute(0, 3, 1, 2)  # (N, cells, boxes, 5 + classes)
        cells = torch.arange(height * width, device=x.device)
        cell_x = (cells % width).to(x.dtype)[None, :, None]
        cell_y = torch.div(cells, width, rounding_mode="floor").to(x.dtype)[None, :, None]
        anchors = torch.tensor(masks[t], device=x.device)
        table = torch.tensor(biases, dtype=x.dtype, device=x.device).reshape(-1, 2)[anchors]
        net_w = float(width * anchors_scale[t])
        net_h = float(height * anchors_scale[t])
        centre_x = (cell_x + torch.sigmoid(raw[..., 0])) / width
        centre_y = (cell_y + torch.sigmoid(raw[..., 1])) / height
        box_w = torch.exp(raw[..., 2]) * table[:, 0] / net_w
        box_h = torch.exp(raw[..., 3]) * table[:, 1] / net_h
        score = torch.sigmoid(raw[..., 5:]) * torch.sigmoid(raw[..., 4:5])  # (N, cells, boxes, C)
        found = score > confidence_threshold
        where = found.nonzero()
        box = torch.stack([centre_x, centre_y, box_w, box_h], dim=-1)
        scores.append(score[found])
        classes.append(where[:, 3])
        boxes.append(box[where[:, 0], where[:, 1], where[:, 2]])
    return _yolo_rows(
        torch.cat(scores), torch.cat(classes), torch.cat(boxes), nms_threshold, inputs[0].shape[0]
    )


def yolo_detection_output(
    inputs: List[torch.Tensor],
    num_classes: int,
    num_box: int,
    biases: List[float],
    confidence_threshold: float,
    nms_threshold: float,
) -> torch.Tensor:
    """eric612's YoloDetectionOutput (YOLOv2, CPU): candidates in the fork's order (bottom,
    image, row, column, box) before the sort."""
    scores: List[torch.Tensor] = []
    classes: List[torch.Tensor] = []
    boxes: List[torch.Tensor] = []
    for x in inputs:
        n, side = x.shape[0], x.shape[3]
        raw = x.reshape(n, num_box, x.shape[1] // num_box, side * side).permute(0, 3, 1, 2)
        cells = torch.arange(side * side, device=x.device)
        cell_x = (cells % side).to(x.dtype)[None, :, None]
        cell_y = torch.div(cells, side, rounding_mode="floor").to(x.dtype)[None, :, None]
        table = torch.tensor(biases, dtype=x.dtype, device=x.device)[: 2 * num_box].reshape(-1, 2)
        centre_x = (cell_x + torch.sigmoid(raw[..., 0])) / side
        centre_y = (cell_y + torch.sigmoid(raw[..., 1])) / side
        box_w = torch.exp(raw[..., 2]) * table[:, 0] / side
        box_h = torch.exp(raw[..., 3]) * table[:, 1] / side
        probability = torch.softmax(raw[..., 5 : 5 + num_classes], dim=-1)
        best = probability.max(dim=-1)
        score = torch.sigmoid(raw[..., 4]) * best.values
        found = score >= confidence_threshold
        scores.append(score[found])
        classes.append(best.indices[found])
        boxes.append(torch.stack([centre_x, centre_y, box_w, box_h], dim=-1)[found])
    return _yolo_rows(
        torch.cat(scores), torch.cat(classes), torch.cat(boxes), nms_threshold, inputs[0].shape[0]
    )
