import torch
import torch.nn.functional as F
from torch import nn


class CaffeConvLSTM(nn.Module):
    """t2mhanh/caffe_convLSTM_WTA's ConvLSTM (relu=False) and ConvLSTMReLU (relu=True),
    unrolled over time as conv_lstm_layer.cpp's FillUnrolledNet builds it:

        gates_t = conv_h(cont_t * h_{t-1}) + conv_x(x_t) + [s_i, s_f, s_o, 0] * c_{t-1}
        c_t = cont_t * sigmoid(f) * c_{t-1} + sigmoid(i) * act(g)
        h_t = sigmoid(o) * act(c_t)

    act is tanh, or max(., 0) for ConvLSTMReLU; gate channels i, f, o, g; conv_x has no bias;
    the peephole (Hadamard) scales s multiply the unscaled c_{t-1} (cont does not reach them),
    broadcast from axis `hadamard_axis` of the (1, N, C, H, W) state. With ignore_x, x only
    gives the shapes. x is (T, N, C_in, H, W), cont (T, N): 0 where a sequence starts. Every
    call starts from h_0 and c_0 when given, else from zero (the fork never carries the state
    between calls). Returns h for every step (T, N, C, H, W), h_T and c_T (1, N, C, H, W).
    """

    def __init__(
        self,
        input_channels: int,
        channels: int,
        kernel: tuple[int, int],
        pad: tuple[int, int] = (0, 0),
        stride: tuple[int, int] = (1, 1),
        dilation: tuple[int, int] = (1, 1),
        group: int = 1,
        hidden_kernel: tuple[int, int] | None = None,
        hidden_pad: tuple[int, int] | None = None,
        hidden_stride: tuple[int, int] | None = None,
        hidden_dilation: tuple[int, int] | None = None,
        hidden_group: int | None = None,
        bias: bool = True,
        hadamard: tuple[int, ...] | None = None,
        hadamard_axis: int = 3,
        relu: bool = False,
        ignore_x: bool = False,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.pad, self.stride, self.dilation, self.group = pad, stride, dilation, group
        h_kernel = kernel if hidden_kernel is None else hidden_kernel
        self.hidden_pad = pad if hidden_pad is None else hidden_pad
        self.hidden_stride = stride if hidden_stride is None else hidden_stride
        self.hidden_dilation = dilation if hidden_dilation is None else hidden_dilation
        self.hidden_group = group if hidden_group is None else hidden_group
        self.relu = relu
        # Registered Nones, not Optional annotations: TorchScript specialises on them.
        if ignore_x:
            self.register_parameter("weight_x", None)
        else:
            shape = (4 * channels, input_channels // group, kernel[0], kernel[1])
            self.weight_x = nn.Parameter(torch.zeros(shape))
        h_shape = (4 * channels, channels // self.hidden_group, h_kernel[0], h_kernel[1])
        self.weight_h = nn.Parameter(torch.zeros(h_shape))
        if bias:
            self.bias_h = nn.Parameter(torch.zeros(4 * channels))
        else:
            self.register_parameter("bias_h", None)
        if hadamard is None:
            self.hadamard_view: list[int] = []
            for name in ("hadamard_input", "hadamard_forget", "hadamard_output"):
                self.register_parameter(name, None)
        else:
            view = [1] * 5
            view[hadamard_axis : hadamard_axis + len(hadamard)] = hadamard
            self.hadamard_view = view
            self.hadamard_input = nn.Parameter(torch.zeros(hadamard))
            self.hadamard_forget = nn.Parameter(torch.zeros(hadamard))
            self.hadamard_output = nn.Parameter(torch.zeros(hadamard))

    def forward(
        self,
        x: torch.Tensor,
        cont: torch.Tensor,
        h_0: torch.Tensor | None = None,
        c_0: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        steps, batch, height, width = x.shape[0], x.shape[1], x.shape[3], x.shape[4]
        gate_shape = [1, batch, 4 * self.channels, height, width]
        h = x.new_zeros(1, batch, self.channels, height, width) if h_0 is None else h_0
        c = x.new_zeros(1, batch, self.channels, height, width) if c_0 is None else c_0
        gates_x: torch.Tensor | None = None
        if self.weight_x is not None:
            flat = F.conv2d(
                x.flatten(0, 1), self.weight_x, None, self.stride, self.pad, self.dilation,
                self.group,
            )  # fmt: skip
            gates_x = flat.reshape(steps, batch, 4 * self.channels, height, width)
        s_i, s_f, s_o = self.hadamard_input, self.hadamard_forget, self.hadamard_output
        outputs: list[torch.Tensor] = []
        for t in range(steps):
            cont_t = cont[t].reshape(1, batch, 1, 1, 1)
            gates = F.conv2d(
                (h * cont_t).flatten(0, 1), self.weight_h, self.bias_h, self.hidden_stride,
                self.hidden_pad, self.hidden_dilation, self.hidden_group,
            ).reshape(gate_shape)  # fmt: skip
            if gates_x is not None:
                gates = gates + gates_x[t : t + 1]
            if s_i is not None and s_f is not None and s_o is not None:
                view = self.hadamard_view
                peephole = [c * s_i.reshape(view), c * s_f.reshape(view), c * s_o.reshape(view)]
                gates = gates + torch.cat(peephole + [torch.zeros_like(c)], dim=2)
            c, h = caffe_conv_lstm_unit(c, gates, cont_t, self.relu)
            outputs.append(h)
        return torch.cat(outputs, 0), h, c
