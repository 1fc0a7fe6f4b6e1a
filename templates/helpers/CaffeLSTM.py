import torch
import torch.nn.functional as F
from torch import nn


class CaffeLSTM(nn.Module):
    """Caffe's LSTM layer, unrolled over time as RecurrentLayer and LSTMLayer build it
    (recurrent_layer.cpp, lstm_layer.cpp), with Caffe's blobs W_xc, b_c, W_xc_static, W_hc:

        gates_t = W_hc (cont_t * h_{t-1}) + W_xc x_t + b_c [+ W_xc_static x_static]
        c_t, h_t = caffe_lstm_unit(c_{t-1}, gates_t, cont_t)

    x is (T, N, ...) (features from axis 2 on), cont (T, N): 0 where a sequence starts (None:
    every step continues). Every call starts from h_0 and c_0 when given, else from zero; Caffe
    instead carries the last call's h_T and c_T into the next one unless expose_hidden is set.
    Returns h for every step (T, N, H), h_T and c_T (1, N, H).
    """

    def __init__(self, input_size: int, hidden_size: int, static_size: int = 0) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.weight_xc = nn.Parameter(torch.zeros(4 * hidden_size, input_size))
        self.bias_c = nn.Parameter(torch.zeros(4 * hidden_size))
        # A registered None, not an Optional annotation: TorchScript specialises on it.
        if static_size:
            self.weight_xc_static = nn.Parameter(torch.zeros(4 * hidden_size, static_size))
        else:
            self.register_parameter("weight_xc_static", None)
        self.weight_hc = nn.Parameter(torch.zeros(4 * hidden_size, hidden_size))

    def forward(
        self,
        x: torch.Tensor,
        cont: torch.Tensor | None,
        x_static: torch.Tensor | None = None,
        h_0: torch.Tensor | None = None,
        c_0: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = x.shape[1]
        gates_x = F.linear(x.flatten(2), self.weight_xc, self.bias_c)
        if self.weight_xc_static is not None and x_static is not None:
            gates_x = gates_x + F.linear(x_static.flatten(1), self.weight_xc_static)
        h = x.new_zeros(batch, self.hidden_size) if h_0 is None else h_0[0]
        c = x.new_zeros(batch, self.hidden_size) if c_0 is None else c_0[0]
        steps: list[torch.Tensor] = []
        for t in range(x.shape[0]):
            cont_t = x.new_ones(batch) if cont is None else cont[t]
            gates = F.linear(cont_t.unsqueeze(1) * h, self.weight_hc) + gates_x[t]
            c, h = caffe_lstm_unit(c, gates, cont_t)
            steps.append(h)
        return torch.stack(steps), h.unsqueeze(0), c.unsqueeze(0)
