import torch
import torch.nn.functional as F
from torch import nn


class Embed(nn.Module):
    """Caffe's Embed layer (embed_layer.cpp): each input value, truncated to an int index,
    becomes that row of the (input_dim, num_output) weight, plus the bias."""

    def __init__(self, input_dim: int, num_output: int, bias: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(input_dim, num_output))
        # A registered None (as in nn.Conv2d): TorchScript specialises `self.bias is None`.
        if bias:
            self.bias = nn.Parameter(torch.zeros(num_output))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float -> int64 truncates toward zero, as Caffe's static_cast<int>.
        out = F.embedding(x.long(), self.weight)
        if self.bias is None:
            return out
        return out + self.bias
