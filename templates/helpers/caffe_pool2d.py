import torch
import torch.nn.functional as F


def caffe_pool2d(
    x: torch.Tensor,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pad: tuple[int, int],
    ceil: bool,
    average: bool,
    extra: int = 0,
) -> torch.Tensor:
    """Caffe's pooling, for geometries where torch's output size or padding rule differ.

    Pads explicitly to Caffe's output size (ceil, then drop a last window that starts in the
    padding when pad > 0) and, for AVE, divides by Caffe's window size clipped at H + pad.
    `extra` more rows and columns: ChenYingpeng/darknet2caffe's rule (--dialect darknet-pool).
    """
    sizes: list[int] = []
    for i in range(2):
        span = x.shape[2 + i] + 2 * pad[i] - kernel[i]
        out = (-(-span // stride[i]) if ceil else span // stride[i]) + 1 + extra
        if pad[i] > 0 and (out - 1) * stride[i] >= x.shape[2 + i] + pad[i]:
            out -= 1
        sizes.append(out)
    height, width = x.shape[2], x.shape[3]
    bottom = (sizes[0] - 1) * stride[0] + kernel[0] - pad[0] - height
    right = (sizes[1] - 1) * stride[1] + kernel[1] - pad[1] - width
    fill = 0.0 if average else torch.finfo(x.dtype).min
    padded = F.pad(x, (pad[1], right, pad[0], bottom), value=fill)
    if not average:
        return F.max_pool2d(padded, kernel, stride)
    total = F.avg_pool2d(padded, kernel, stride, divisor_override=1)
    rows = torch.arange(sizes[0], device=x.device) * stride[0] - pad[0]
    cols = torch.arange(sizes[1], device=x.device) * stride[1] - pad[1]
    rows_count = torch.clamp(rows + kernel[0], max=height + pad[0]) - rows
    cols_count = torch.clamp(cols + kernel[1], max=width + pad[1]) - cols
    return total / (rows_count[:, None] * cols_count[None, :]).to(x.dtype)
