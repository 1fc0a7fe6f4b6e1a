"""`protocaffe.fast`: a generated module prepared for CPU inference in seconds, without
torch.compile.

The generated module is written to be read, trained and exported, and runs eagerly: every call
reorders each convolution's weights for oneDNN, BatchNorm and Scale are passes of their own,
and 3x3 convolutions are computed directly. `fast` makes an inference-only copy that does none
of that, in three steps whose cost is a few forward passes:

1. the weights are laid out channels-last, as forward() lays out its activations;
2. each stride-1 convolution that NNPACK's Winograd/FFT algorithms compute faster than oneDNN
   on the example input (timed on it, both ways: the big 3x3 convolutions of VGG-style nets) is
   computed by NNPACK (`torch._nnpack_spatial_convolution`, CPU float32 only);
3. TorchScript freezes the module: parameters become constants, BatchNorm and Scale fold into
   the convolution before them (`torch.jit.freeze`), and no Python runs per layer.

The result is a `torch.jit.ScriptModule` for inference only (no gradients, no training mode),
for the device and dtype of the example inputs; its outputs equal the module's to float32
rounding (Winograd's is about 1e-5 of the largest magnitude).
"""

from __future__ import annotations

import copy
import time
import warnings
from typing import Any

import torch


def fast(
    model: torch.nn.Module, *example_inputs: torch.Tensor, nnpack: bool | None = None
) -> torch.nn.Module:
    """An inference-only copy of `model` (a protocaffe module), prepared on `example_inputs`
    (tensors of the shapes it will see) for speed on the CPU; `model` is left as it was.

    `nnpack`: None times each eligible convolution both ways and keeps the faster (the choice
    then depends on the machine and its load); True uses NNPACK wherever it applies, False
    nowhere. NNPACK's thread pool takes torch.get_num_threads() when a process first uses it:
    set the thread count before calling this."""
    prepared = copy.deepcopy(model).eval()
    prepared.requires_grad_(False)
    with torch.no_grad():
        prepared.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if nnpack is not False:
            _use_nnpack(prepared, example_inputs, timed=nnpack is None)
        with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; it still works
            warnings.simplefilter("ignore", DeprecationWarning)
            frozen: torch.nn.Module = torch.jit.freeze(torch.jit.script(prepared))
        frozen(*example_inputs)  # TorchScript's profiling run happens here, not in a user's call
    return frozen


class NNPackConvolution(torch.nn.Module):
    """A stride-1 nn.Conv2d computed by NNPACK (Winograd for 3x3, FFT for larger kernels), which
    takes NCHW: channels-last in and out, as the module around it."""

    def __init__(self, conv: torch.nn.Conv2d) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(conv.weight.detach().contiguous(), requires_grad=False)
        if conv.bias is not None:
            self.bias = torch.nn.Parameter(conv.bias.detach(), requires_grad=False)
        else:
            self.register_parameter("bias", None)
        self.padding = [int(p) for p in conv.padding]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch._nnpack_spatial_convolution(x.contiguous(), self.weight, self.bias, self.padding)
        return y.contiguous(memory_format=torch.channels_last)


def _nnpack_eligible(conv: torch.nn.Conv2d, x: torch.Tensor) -> bool:
    return (
        torch._nnpack_available()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 4
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and isinstance(conv.padding, tuple)
        and max(conv.kernel_size) <= 16
        and all(p < k for p, k in zip(conv.padding, conv.kernel_size, strict=True))
    )


def _use_nnpack(model: torch.nn.Module, example_inputs: tuple[Any, ...], timed: bool) -> None:
    """Swap in NNPACK for each eligible convolution (when `timed`, only where it computes the
    convolution's example input faster)."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in model.named_modules():
        if type(module) is torch.nn.Conv2d:

            def keep(module: torch.nn.Module, args: tuple[Any, ...], name: str = name) -> None:
                seen.setdefault(name, args[0])

            handles.append(module.register_forward_pre_hook(keep))
    try:
        model(*example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    modules = dict(model.named_modules())
    for name, x in seen.items():
        conv = modules[name]
        assert isinstance(conv, torch.nn.Conv2d)
        if not _nnpack_eligible(conv, x):
            continue
        candidate = NNPackConvolution(conv)
        if not timed or _seconds(candidate, x) < 0.9 * _seconds(conv, x):
            parent, _, attr = name.rpartition(".")
            setattr(modules[parent] if parent else model, attr, candidate)


def _seconds(module: torch.nn.Module, x: torch.Tensor, repeat: int = 5) -> float:
    """The best of `repeat` timed calls, after one untimed (the least disturbed by other work)."""
    module(x)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        module(x)
        best = min(best, time.perf_counter() - start)
    return best
