import torch
from torch import nn


class CaffeParameter(nn.Module):
    """Caffe's Parameter layer (parameter_layer.hpp): its output is its one learned blob."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(shape))

    def forward(self) -> torch.Tensor:
        return self.weight
