import torch


def caffe_spp(x: torch.Tensor, pyramid_height: int, average: bool) -> torch.Tensor:
    """Caffe's SPP layer (spp_layer.cpp): level l pools with kernel = stride =
    ceil(size / 2^l) and pad (kernel * 2^l - size + 1) // 2 per axis, by Caffe's pooling
    rules (caffe_pool2d); the levels are flattened and concatenated, level 0 first. A pyramid
    of height 1 is its one pooling, unflattened."""
    levels: list[torch.Tensor] = []
    for level in range(pyramid_height):
        bins = 2**level
        kernel_h = -(-x.shape[2] // bins)
        kernel_w = -(-x.shape[3] // bins)
        pad_h = (kernel_h * bins - x.shape[2] + 1) // 2
        pad_w = (kernel_w * bins - x.shape[3] + 1) // 2
        pooled = caffe_pool2d(
            x, (kernel_h, kernel_w), (kernel_h, kernel_w), (pad_h, pad_w), True, average
        )
        if pyramid_height == 1:
            return pooled
        levels.append(torch.flatten(pooled, 1))
    return torch.cat(levels, 1)
