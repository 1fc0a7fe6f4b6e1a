import torch
import torch.nn.functional as F
from torch import nn


class CaffeDenseBlock(nn.Module):
    """senlinuc/caffe_ocr's DenseBlock (DenseBlock_layer.cpp, Forward_cpu): for each
    transition, x = torch.cat([x, new], 1) with new = conv3x3(relu(bn(x))) (growth_rate
    channels); with `bottleneck` (use_BC), bn-relu-conv1x1 to 4 * growth_rate channels and a
    second bn-relu come before the 3x3.

    The fork's convolutions are true convolutions (the kernel flipped, as convolution_Fwd
    and cuDNN's CUDNN_CONVOLUTION compute them): `weight` is its blob as stored, applied
    with weight.flip([2, 3]). Its BN keeps sums: global_mean, global_var and `factor`, the
    block's one moving-average factor. eval() normalises with global / factor (0 when the
    factor is 0, as BN_inf_Fwd), eps 1e-5, then scale * x + bias. train() follows
    BN_train_Fwd: the batch's mean and its unbiased variance (m / (m - 1) times the biased
    one) normalise, global = f * global + batch, and factor = f * factor + 1 once per call
    (f: moving_average_fraction). The fork's Forward_cpu applies no dropout.

    With `gpu` (--dialect denseblock-gpu) it follows the fork's Forward_gpu (cuDNN) instead:
    eval() normalises with global_mean and global_var as they are (the factor is never read),
    eps 1e-5 (CUDNN_BN_MIN_EPSILON); train() normalises with the batch's mean and biased
    variance, sets global = f * batch + (1 - f) * global (the batch's unbiased variance for
    global_var) and leaves the factor alone; `dropout` (use_dropout's dropout_amount) drops
    each transition's new channels in train() only, as cuDNN's dropout does.
    """

    def __init__(
        self,
        channels: int,
        growth_rate: int,
        transitions: int,
        bottleneck: bool = False,
        moving_average_fraction: float = 0.1,
        gpu: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.moving_average_fraction = moving_average_fraction
        self.gpu = gpu
        self.dropout = dropout
        self.transitions = nn.ModuleList(
            [
                _DenseTransition(channels + t * growth_rate, growth_rate, bottleneck)
                for t in range(transitions)
            ]
        )
        self.register_buffer("factor", torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gpu:  # Forward_gpu never reads the factor
            statistics = torch.ones_like(self.factor)
        else:
            zero = torch.zeros_like(self.factor)
            statistics = torch.where(self.factor == 0, zero, 1.0 / self.factor)
        for transition in self.transitions:
            new = transition(x, statistics, self.moving_average_fraction, self.gpu)
            if self.dropout > 0:
                new = F.dropout(new, self.dropout, self.training)
            x = torch.cat([x, new], dim=1)
        if self.training and not self.gpu:
            with torch.no_grad():
                self.factor.mul_(self.moving_average_fraction).add_(1.0)
        return x


class _DenseTransition(nn.Module):
    """One transition of CaffeDenseBlock: its blobs, as LayerSetUp shapes them."""

    def __init__(self, channels: int, growth_rate: int, bottleneck: bool) -> None:
        super().__init__()
        conv_channels = 4 * growth_rate if bottleneck else channels
        self.weight = nn.Parameter(torch.zeros(growth_rate, conv_channels, 3, 3))
        self.scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("global_mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("global_var", torch.zeros(1, channels, 1, 1))
        # A registered None, not an Optional annotation: TorchScript specialises on it.
        if bottleneck:
            quad = 4 * growth_rate
            self.bc_weight = nn.Parameter(torch.zeros(quad, channels, 1, 1))
            self.bc_scale = nn.Parameter(torch.zeros(1, quad, 1, 1))
            self.bc_bias = nn.Parameter(torch.zeros(1, quad, 1, 1))
            self.register_buffer("bc_global_mean", torch.zeros(1, quad, 1, 1))
            self.register_buffer("bc_global_var", torch.zeros(1, quad, 1, 1))
        else:
            self.register_parameter("bc_weight", None)
            self.register_parameter("bc_scale", None)
            self.register_parameter("bc_bias", None)
            self.register_buffer("bc_global_mean", None)
            self.register_buffer("bc_global_var", None)

    def forward(
        self, x: torch.Tensor, statistics: torch.Tensor, fraction: float, gpu: bool
    ) -> torch.Tensor:
        y = _dense_bn(
            x,
            self.scale,
            self.bias,
            self.global_mean,
            self.global_var,
            statistics,
            fraction,
            self.training,
            gpu,
        )
        y = torch.relu(y)
        if (
            self.bc_weight is not None
            and self.bc_scale is not None
            and self.bc_bias is not None
            and self.bc_global_mean is not None
            and self.bc_global_var is not None
        ):
            y = F.conv2d(y, self.bc_weight)
            y = _dense_bn(
                y,
                self.bc_scale,
                self.bc_bias,
                self.bc_global_mean,
                self.bc_global_var,
                statistics,
                fraction,
                self.training,
                gpu,
            )
            y = torch.relu(y)
        return F.conv2d(y, self.weight.flip([2, 3]), padding=1)


def _dense_bn(
    x: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor,
    global_mean: torch.Tensor,
    global_var: torch.Tensor,
    statistics: torch.Tensor,
    fraction: float,
    training: bool,
    gpu: bool,
) -> torch.Tensor:
    """The fork's BN_inf_Fwd (eval) or BN_train_Fwd (train), eps 1e-5; with `gpu`, its cuDNN
    calls: cudnnBatchNormalizationForwardInference or ForwardTraining and caffe_gpu_axpby."""
    if training and gpu:
        m = x.numel() // x.shape[1]
        mean = x.mean([0, 2, 3], keepdim=True)
        centred = x - mean
        biased = (centred * centred).mean([0, 2, 3], keepdim=True)
        with torch.no_grad():
            global_mean.mul_(1.0 - fraction).add_(fraction * mean)
            global_var.mul_(1.0 - fraction).add_(fraction * biased * m / (m - 1.0))
        return scale * (centred / torch.sqrt(biased + 1e-5)) + bias
    if training:
        m = x.numel() // x.shape[1]
        mean = x.mean([0, 2, 3], keepdim=True)
        centred = x - mean
        # m / (m - 1) in a tensor: one value per channel (m = 1) gives inf * 0 as in the fork.
        var = (centred * centred).mean([0, 2, 3], keepdim=True) * m / (m - 1.0)
        with torch.no_grad():
            global_mean.mul_(fraction).add_(mean)
            global_var.mul_(fraction).add_(var)
        return scale * (centred / torch.sqrt(var + 1e-5)) + bias
    mean = global_mean * statistics
    var = global_var * statistics
    return scale * ((x - mean) / torch.sqrt(var + 1e-5)) + bias
