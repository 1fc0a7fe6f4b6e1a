import torch
import torch.nn.functional as F


def _resize_taps(
    size_in: int, size_out: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each output row: the source row, and the weights of it and of the next one, as
    Caffe's BiLinearResizeMat_cpu computes them in float32."""
    scale = torch.tensor(size_in / size_out, dtype=torch.float32, device=device)
    position = torch.arange(size_out, dtype=torch.float32, device=device) * scale
    first = torch.floor(position)
    fraction = position - first
    return first.long(), torch.abs(1.0 - fraction), torch.abs(fraction)


def caffe_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The oracle build's Resize (util_img.cpp, BiLinearResizeMat_cpu): output (y, x) samples
    the input at (y * H / H_out, x * W / W_out), bilinearly; a neighbour past the last row or
    column is left out without renormalising the weights (a zero row and column are appended
    here, which reads the same)."""
    rows, up, down = _resize_taps(x.shape[2], size[0], x.device)
    cols, left, right = _resize_taps(x.shape[3], size[1], x.device)
    padded = F.pad(x, (0, 1, 0, 1))
    top = padded[:, :, rows]
    bottom = padded[:, :, rows + 1]
    up, down = up.to(x.dtype)[:, None], down.to(x.dtype)[:, None]
    left, right = left.to(x.dtype), right.to(x.dtype)
    return (
        up * left * top[:, :, :, cols]
        + up * right * top[:, :, :, cols + 1]
        + down * left * bottom[:, :, :, cols]
        + down * right * bottom[:, :, :, cols + 1]
    )
