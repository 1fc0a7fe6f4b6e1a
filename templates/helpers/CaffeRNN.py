import torch
import torch.nn.functional as F
from torch import nn


class CaffeRNN(nn.Module):
    """Caffe's RNN layer, unrolled over time as RecurrentLayer and RNNLayer build it
    (recurrent_layer.cpp, rnn_layer.cpp), with Caffe's blobs W_xh, b_h, W_xh_static, W_hh,
    W_ho, b_o:

        h_t = tanh(W_hh (cont_t * h_{t-1}) + W_xh x_t + b_h [+ W_xh_static x_static])
        o_t = tanh(W_ho h_t + b_o)

    x is (T, N, ...) (features from axis 2 on), cont (T, N): 0 where a sequence starts. Every
    call starts from h_0 when given, else from zero; Caffe instead carries the last call's h_T
    into the next one unless expose_hidden is set. Returns o for every step (T, N, H) and h_T
    (1, N, H).
    """

    def __init__(self, input_size: int, hidden_size: int, static_size: int = 0) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.weight_xh = nn.Parameter(torch.zeros(hidden_size, input_size))
        self.bias_h = nn.Parameter(torch.zeros(hidden_size))
        # A registered None, not an Optional annotation: TorchScript specialises on it.
        if static_size:
            self.weight_xh_static = nn.Parameter(torch.zeros(hidden_size, static_size))
        else:
            self.register_parameter("weight_xh_static", None)
        self.weight_hh = nn.Parameter(torch.zeros(hidden_size, hidden_size))
        self.weight_ho = nn.Parameter(torch.zeros(hidden_size, hidden_size))
        self.bias_o = nn.Parameter(torch.zeros(hidden_size))

    def forward(
        self,
        x: torch.Tensor,
        cont: torch.Tensor,
        x_static: torch.Tensor | None = None,
        h_0: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch = x.shape[1]
        inputs = F.linear(x.flatten(2), self.weight_xh, self.bias_h)
        if self.weight_xh_static is not None and x_static is not None:
            inputs = inputs + F.linear(x_static.flatten(1), self.weight_xh_static)
        h = x.new_zeros(batch, self.hidden_size) if h_0 is None else h_0[0]
        outputs: list[torch.Tensor] = []
        for t in range(x.shape[0]):
            h = torch.tanh(F.linear(cont[t].unsqueeze(1) * h, self.weight_hh) + inputs[t])
            outputs.append(torch.tanh(F.linear(h, self.weight_ho, self.bias_o)))
        return torch.stack(outputs), h.unsqueeze(0)
