import torch


def caffe_mvn(
    x: torch.Tensor, across_channels: bool, normalize_variance: bool, eps: float
) -> torch.Tensor:
    """Caffe's MVN: subtract the mean over (C,) H, W per sample; divide by (std + eps)."""
    dims = [d for d in range(1 if across_channels else 2, x.dim())]
    centered = x - x.mean(dim=dims, keepdim=True)
    if not normalize_variance:
        return centered
    std = centered.pow(2).mean(dim=dims, keepdim=True).sqrt()
    return centered / (std + eps)
