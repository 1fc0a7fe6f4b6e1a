import torch
from torch import nn


class Normalize(nn.Module):
    """SSD's Normalize: x / sqrt(sum(x^2) + eps) * weight; the sum runs over channels at each
    position, or over everything but the batch axis when `across_spatial`."""

    def __init__(self, channels: int, across_spatial: bool, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.across_spatial = across_spatial
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Lists, not tuples built from range(): TorchScript types both.
        dims = list(range(1, x.dim())) if self.across_spatial else [1]
        norm = torch.sqrt(torch.sum(x * x, dim=dims, keepdim=True) + self.eps)
        weight = self.weight.reshape([1, -1] + [1] * (x.dim() - 2))
        return x / norm * weight
