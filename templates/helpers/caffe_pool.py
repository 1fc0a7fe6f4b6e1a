import torch
import torch.nn.functional as F


def _caffe_pool_sizes(
    x: torch.Tensor,
    kernel: list[int],
    stride: list[int],
    pad: list[int],
    ceil: bool,
    clip_last: bool,
    extra: int = 0,
) -> list[int]:
    """Caffe's pooled size per spatial axis: ceil (or floor), `extra` more (darknet2caffe's
    rule, --dialect darknet-pool), then, when any pad is non-zero (and `clip_last`: C3D's
    Pooling3D has no such rule), drop a last window that would start in the padding, on every
    axis (PoolingLayer::Reshape)."""
    clip = clip_last and max(pad) > 0
    sizes: list[int] = []
    for i in range(len(kernel)):
        size = x.shape[2 + i]
        span = size + 2 * pad[i] - kernel[i]
        out = (-(-span // stride[i]) if ceil else span // stride[i]) + 1 + extra
        if clip and (out - 1) * stride[i] >= size + pad[i]:
            out -= 1
        sizes.append(out)
    return sizes


def _caffe_padded(
    x: torch.Tensor,
    kernel: list[int],
    stride: list[int],
    pad: list[int],
    sizes: list[int],
    fill: float,
) -> torch.Tensor:
    """`x` padded (or cropped) so that plain windows of `kernel` and `stride` give `sizes`."""
    widths: list[int] = []
    for i in range(len(kernel) - 1, -1, -1):
        after = (sizes[i] - 1) * stride[i] + kernel[i] - pad[i] - x.shape[2 + i]
        widths += [pad[i], after]
    return F.pad(x, widths, value=fill)


def caffe_pool(
    x: torch.Tensor,
    kernel: list[int],
    stride: list[int],
    pad: list[int],
    ceil: bool,
    average: bool,
    clip_last: bool = True,
    extra: int = 0,
) -> torch.Tensor:
    """Caffe's MAX or AVE pooling over 2 or 3 spatial axes, for geometries where torch's output
    size or padding rule differ: pads explicitly to Caffe's output size and, for AVE, divides
    by Caffe's window size clipped at size + pad."""
    sizes = _caffe_pool_sizes(x, kernel, stride, pad, ceil, clip_last, extra)
    # -FLT_MAX, Caffe's start value for a max (a literal: TorchScript has no torch.finfo).
    fill = 0.0 if average else -3.4028234663852886e38
    padded = _caffe_padded(x, kernel, stride, pad, sizes, fill)
    if not average:
        if len(kernel) == 2:
            return F.max_pool2d(padded, kernel, stride)
        return F.max_pool3d(padded, kernel, stride)
    if len(kernel) == 2:
        total = F.avg_pool2d(padded, kernel, stride, divisor_override=1)
    else:
        total = F.avg_pool3d(padded, kernel, stride, divisor_override=1)
    count = torch.ones(sizes, dtype=x.dtype, device=x.device)
    for i in range(len(kernel)):
        starts = torch.arange(sizes[i], device=x.device) * stride[i] - pad[i]
        ends = torch.clamp(starts + kernel[i], max=x.shape[2 + i] + pad[i])
        shape = [1] * len(kernel)
        shape[i] = sizes[i]
        count = count * (ends - starts).to(x.dtype).reshape(shape)
    return total / count


def caffe_max_pool_mask(
    x: torch.Tensor,
    kernel: list[int],
    stride: list[int],
    pad: list[int],
    ceil: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Caffe's MAX pooling with its second top: the flat index of each window's first maximum
    within its channel's spatial volume (h * W + w), a float as Caffe stores it; -1 where the
    window holds no input value."""
    sizes = _caffe_pool_sizes(x, kernel, stride, pad, ceil, True)
    padded = _caffe_padded(x, kernel, stride, pad, sizes, -3.4028234663852886e38)
    if len(kernel) == 2:
        values, indices = F.max_pool2d(padded, kernel, stride, return_indices=True)
    else:
        values, indices = F.max_pool3d(padded, kernel, stride, return_indices=True)
    flat = torch.zeros_like(indices)
    inside = torch.ones_like(indices, dtype=torch.bool)
    scale = 1
    for i in range(len(kernel) - 1, -1, -1):
        coord = indices % padded.shape[2 + i] - pad[i]
        indices = torch.div(indices, padded.shape[2 + i], rounding_mode="floor")
        inside = inside & (coord >= 0) & (coord < x.shape[2 + i])
        flat = flat + coord * scale
        scale = scale * x.shape[2 + i]
    mask = torch.where(inside, flat, torch.full_like(flat, -1))
    return values, mask.to(x.dtype)
