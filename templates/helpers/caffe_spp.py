import torch
import torch.nn.functional as F


def _spp_level(
    x: torch.Tensor, bins: int, average: bool
) -> torch.Tensor:
    """One pyramid level: Caffe's pooling (pooling_layer.cpp) with kernel = stride =
    ceil(size / bins) and pad (kernel * bins - size + 1) // 2 on each axis. Every window
    holds an input value (pad < kernel), so -inf padding never wins a MAX; an AVE window
    divides by its size clipped at the padded edge, as Caffe's does."""
    height, width = x.shape[2], x.shape[3]
    kernel = [-(-height // bins), -(-width // bins)]
    pad = [(kernel[0] * bins - height + 1) // 2, (kernel[1] * bins - width + 1) // 2]
    sizes: list[int] = []
    for size, k, p in ((height, kernel[0], pad[0]), (width, kernel[1], pad[1])):
        out = -(-(size + 2 * p - k) // k) + 1
        if (pad[0] > 0 or pad[1] > 0) and (out - 1) * k >= size + p:
            out -= 1
        sizes.append(out)
    bottom = sizes[0] * kernel[0] - pad[0] - height
    right = sizes[1] * kernel[1] - pad[1] - width
    fill = 0.0 if average else float("-inf")
    padded = F.pad(x, (pad[1], right, pad[0], bottom), value=fill)
    if not average:
        return F.max_pool2d(padded, kernel, kernel)
    total = F.avg_pool2d(padded, kernel, kernel) * float(kernel[0] * kernel[1])
    rows = torch.arange(sizes[0], device=x.device) * kernel[0] - pad[0]
    cols = torch.arange(sizes[1], device=x.device) * kernel[1] - pad[1]
    rows_count = torch.clamp(rows + kernel[0], max=height + pad[0]) - rows
    cols_count = torch.clamp(cols + kernel[1], max=width + pad[1]) - cols
    return total / (rows_count[:, None] * cols_count[None, :]).to(x.dtype)


def caffe_spp(x: torch.Tensor, pyramid_height: int, average: bool) -> torch.Tensor:
    """Caffe's SPP layer (spp_layer.cpp): level l pools 2^l bins per axis (`_spp_level`),
    the levels are flattened and concatenated, level 0 first; a pyramid of height 1 is its
    one pooling, unflattened. The geometry follows the input size, as Caffe's Reshape does."""
    if pyramid_height == 1:
        return _spp_level(x, 1, average)
    levels = [
        torch.flatten(_spp_level(x, 1 << level, average), 1) for level in range(pyramid_height)
    ]
    return torch.cat(levels, 1)
