import torch


def prior_box(
    feature: torch.Tensor,
    image: torch.Tensor,
    boxes: list[list[float]],
    variance: tuple[float, float, float, float],
    offset: float,
    clip: bool,
    image_size: tuple[int, int] | None = None,
    step: tuple[float, float] | None = None,
    centres: list[list[float]] | None = None,
) -> torch.Tensor:
    """SSD's PriorBox: (1, 2, H * W * len(boxes) * 4): the corners of each (width, height) box
    centred on each feature-map cell, over the image size; then the variances.

    Computed from the run-time sizes with Caffe's precision: centres in float32, corners in
    float64, stored as float32.

    `centres` (the detection forks that move priors): per box [offset_x, offset_y, shift_x,
    shift_y], its centre at (index + offset) * step + shift instead of (index + offset) * step.
    """
    layer_h, layer_w = feature.shape[2], feature.shape[3]
    img_h, img_w = image_size if image_size is not None else (image.shape[2], image.shape[3])
    f32 = torch.float32
    if step is None:
        step_h = torch.tensor(float(img_h), dtype=f32) / layer_h
        step_w = torch.tensor(float(img_w), dtype=f32) / layer_w
    else:
        step_h, step_w = torch.tensor(step[0], dtype=f32), torch.tensor(step[1], dtype=f32)
    if centres is None:
        rows = (torch.arange(layer_h, dtype=f32) + offset) * step_h
        cols = (torch.arange(layer_w, dtype=f32) + offset) * step_w
        center_y = rows[:, None, None].expand(layer_h, layer_w, 1).double()
        center_x = cols[None, :, None].expand(layer_h, layer_w, 1).double()
    else:
        where = torch.tensor(centres, dtype=f32)  # (boxes, 4)
        rows = (torch.arange(layer_h, dtype=f32)[:, None] + where[:, 1]) * step_h + where[:, 3]
        cols = (torch.arange(layer_w, dtype=f32)[:, None] + where[:, 0]) * step_w + where[:, 2]
        center_y = rows[:, None, :].expand(layer_h, layer_w, -1).double()
        center_x = cols[None, :, :].expand(layer_h, layer_w, -1).double()
    sizes = torch.tensor(boxes, dtype=f32).double()
    half_w, half_h = sizes[:, 0] / 2.0, sizes[:, 1] / 2.0
    corners = torch.stack(
        [
            (center_x - half_w) / img_w,
            (center_y - half_h) / img_h,
            (center_x + half_w) / img_w,
            (center_y + half_h) / img_h,
        ],
        dim=-1,
    ).to(f32)
    if clip:
        corners = corners.clamp(0.0, 1.0)
    corners = corners.reshape(-1)
    variances = torch.tensor(variance, dtype=f32).repeat(corners.numel() // 4)
    # Caffe's float32 values, in the module's dtype (float64 after .double()) and device.
    priors = torch.stack([corners, variances]).unsqueeze(0)
    return priors.to(device=feature.device, dtype=feature.dtype)
