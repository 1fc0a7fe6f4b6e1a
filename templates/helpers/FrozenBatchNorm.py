import torch
import torch.nn.functional as F
from torch import nn


class FrozenBatchNorm(nn.Module):
    """Caffe's BatchNorm with use_global_stats: true (batch_norm_layer.cpp): it normalises
    with the stored statistics in train() and eval() alike and never updates them. The
    affine part is a separate Scale layer. running_mean and running_var are Caffe's blobs
    0 and 1 divided by its moving-average factor (blob 2, kept as `factor`; 0 when the
    layer never accumulated anything, and then the statistics are 0, as in Caffe).
    """

    def __init__(self, channels: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.zeros(channels))
        self.register_buffer("factor", torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, eps=self.eps)
