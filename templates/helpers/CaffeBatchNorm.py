import torch
import torch.nn.functional as F
from torch import nn


class CaffeBatchNorm(nn.Module):
    """Caffe's BatchNorm (batch_norm_layer.cpp); the affine part is a separate Scale layer.

    train(): normalises with this batch's mean and (biased) variance per channel, over
    every axis but 1, and accumulates them as Caffe does, which is not torch's momentum
    update: Caffe keeps sums and a factor, f = moving_average_fraction,

        factor = f * factor + 1
        mean_sum = f * mean_sum + mean
        var_sum = f * var_sum + m / (m - 1) * var   (m values per channel; 1 if m == 1)

    and uses sum / factor. running_mean and running_var hold those quotients (Caffe's
    blobs 0 and 1 over blob 2, which is `factor`), so the update is
    running = (f * factor * running + batch) / (f * factor + 1).

    eval(): normalises with running_mean and running_var, or, with
    `batch_stats_in_eval` (use_global_stats: false), with the batch's own statistics, as
    Caffe's TEST phase then does; eval() never changes the buffers.
    """

    def __init__(
        self,
        channels: int,
        eps: float,
        moving_average_fraction: float,
        batch_stats_in_eval: bool = False,
    ) -> None:
        super().__init__()
        self.eps = eps
        self.moving_average_fraction = moving_average_fraction
        self.batch_stats_in_eval = batch_stats_in_eval
        # Caffe's blobs start at 0: nothing accumulated yet.
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.zeros(channels))
        self.register_buffer("factor", torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and not self.batch_stats_in_eval:
            return F.batch_norm(x, self.running_mean, self.running_var, eps=self.eps)
        dims = [0] + list(range(2, x.dim()))  # every axis but the channels
        mean = x.mean(dims, keepdim=True)
        centred = x - mean
        var = (centred * centred).mean(dims, keepdim=True)
        if self.training:
            self.accumulate(mean.flatten(), var.flatten(), x.numel() // x.shape[1])
        # One value per channel: x - mean is 0 and so is the output, as in Caffe.
        return centred / torch.sqrt(var + self.eps)

    def accumulate(self, mean: torch.Tensor, var: torch.Tensor, m: int) -> None:
        with torch.no_grad():
            kept = self.moving_average_fraction * self.factor
            factor = kept + 1.0
            unbiased = var * (m / (m - 1)) if m > 1 else var
            self.running_mean.copy_((kept * self.running_mean + mean) / factor)
            self.running_var.copy_((kept * self.running_var + unbiased) / factor)
            self.factor.copy_(factor)
