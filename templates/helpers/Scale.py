import torch
from torch import nn


class Scale(nn.Module):
    """Caffe's Scale layer: x * weight (+ bias), broadcast over `trailing` axes after them."""

    def __init__(self, shape: tuple[int, ...], trailing: int, bias: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(shape))
        # A registered None (as in nn.Conv2d), not an Optional annotation:
        # TorchScript then specialises `self.bias is None` per instance.
        if bias:
            self.bias = nn.Parameter(torch.zeros(shape))
        else:
            self.register_parameter("bias", None)
        self.trailing = trailing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        for _ in range(self.trailing):
            weight = weight.unsqueeze(-1)
        if self.bias is None:
            return x * weight
        bias = self.bias
        for _ in range(self.trailing):
            bias = bias.unsqueeze(-1)
        # One pass, where x * weight + bias takes two (and, channels-last, 3x as long).
        return torch.addcmul(bias, x, weight)
