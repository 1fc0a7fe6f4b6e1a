import torch


def caffe_conv_lstm_unit(
    c_prev: torch.Tensor, gates: torch.Tensor, cont: torch.Tensor, relu: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """t2mhanh/caffe_convLSTM_WTA's ConvLSTMUnit (relu=False) and ConvLSTMReLUUnit (relu=True)
    (conv_lstm_unit_layer.cpp, conv_lstm_relu_unit_layer.cpp Forward_cpu): one step from the
    cell c_prev (1, N, C, H, W) and the gate inputs (1, N, 4C, H, W: i, f, o, g); cont
    (broadcastable, 0 where a sequence starts) scales the forget gate. Returns (c, h):

        c = cont * sigmoid(f) * c_prev + sigmoid(i) * act(g)
        h = sigmoid(o) * act(c)

    act is tanh, or max(., 0) with relu.
    """
    i, f, o, g = gates.chunk(4, dim=2)
    g = torch.relu(g) if relu else torch.tanh(g)
    c = cont * torch.sigmoid(f) * c_prev + torch.sigmoid(i) * g
    h = torch.sigmoid(o) * (torch.relu(c) if relu else torch.tanh(c))
    return c, h
