import torch
from torch import nn


class ContinuationIndicator(nn.Module):
    """crnn.caffe's ContinuationIndicator: a constant (time_step, batch_size) blob, 0 at the
    first step and 1 after (an LSTM's `cont` for one whole sequence per forward)."""

    def __init__(self, time_step: int, batch_size: int) -> None:
        super().__init__()
        value = torch.ones(time_step, batch_size)
        value[0] = 0.0
        # A buffer (not saved with the weights), so that it follows .to(device) and .double().
        self.register_buffer("value", value, persistent=False)

    def forward(self) -> torch.Tensor:
        return self.value


def continuation_indicator(x: torch.Tensor, time_step: int, axis: int) -> torch.Tensor:
    """deepdetect's ContinuationIndicator: (time_step, x.shape[axis]), 0 at the first step and
    1 after."""
    value = x.new_ones(time_step, x.shape[axis])
    value[0] = 0.0
    return value
