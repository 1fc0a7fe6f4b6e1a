import torch


def caffe_lstm_unit(
    c_prev: torch.Tensor, gates: torch.Tensor, cont: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Caffe's LSTMUnit (lstm_unit_layer.cpp): one step from the previous cell c_prev and the
    gate inputs (last axis: i, f, o, g, each H wide, Caffe's order); cont (0 where a sequence
    starts) scales the forget gate. Returns (c, h):

        c = cont * sigmoid(f) * c_prev + sigmoid(i) * tanh(g)
        h = sigmoid(o) * tanh(c)
    """
    i, f, o, g = gates.chunk(4, dim=-1)
    forget = cont.unsqueeze(-1) * torch.sigmoid(f)
    c = forget * c_prev + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return c, h
