import torch


def caffe_unpool(
    x: torch.Tensor, mask: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """SegNet's Upsample: put each value at the flat index h * W + w of its channel plane that
    the pooling mask recorded; every other position is zero."""
    out = x.new_zeros(x.shape[0], x.shape[1], size[0] * size[1])
    out.scatter_(2, mask.flatten(2).long(), x.flatten(2))
    return out.reshape(x.shape[0], x.shape[1], size[0], size[1])
