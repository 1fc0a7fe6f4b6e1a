import torch
from torch import nn


class Bias(nn.Module):
    """Caffe's Bias layer: x + bias, broadcast over `trailing` axes after it."""

    def __init__(self, shape: tuple[int, ...], trailing: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(shape))
        self.trailing = trailing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias
        for _ in range(self.trailing):
            bias = bias.unsqueeze(-1)
        return x + bias
