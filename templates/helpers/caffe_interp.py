import torch
import torch.nn.functional as F


def caffe_interp(
    x: torch.Tensor,
    zoom_factor: int | None = None,
    shrink_factor: int | None = None,
    size: tuple[int, int] | None = None,
    pad_beg: int = 0,
    pad_end: int = 0,
) -> torch.Tensor:
    """DeepLab/PSPNet's Interp: crop by -pad_beg/-pad_end, then resize bilinearly with corners
    aligned (Caffe's caffe_cpu_interp2). Factors apply to the run-time size; `size` is fixed."""
    height, width = x.shape[2] + pad_beg + pad_end, x.shape[3] + pad_beg + pad_end
    x = x[:, :, -pad_beg : -pad_beg + height, -pad_beg : -pad_beg + width]
    if size is None:
        out: list[int] = []
        for extent in (height, width):
            if shrink_factor is not None:
                extent = (extent - 1) // shrink_factor + 1
            if zoom_factor is not None:
                extent = extent + (extent - 1) * (zoom_factor - 1)
            out.append(extent)
        size = (out[0], out[1])
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
