"""What the generated code does for speed, and `protocaffe.fast`, checked for behaviour (never
for time: benchmarks/bench_inference.py measures that).

- forward() lays out 4-D inputs channels-last and returns contiguous 4-D outputs;
- `protocaffe.fast` returns an inference copy with the module's outputs, NNPACK included, and
  leaves the module as it was.

The module's numbers themselves are checked against Caffe and OpenCV elsewhere (test_verify,
test_layers_opencv, test_conformance_corpus): here the reference is the generated module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from review_support import FIXTURES

import protocaffe
from protocaffe.api import convert, module_from_source
from protocaffe.inference import NNPackConvolution
from protocaffe.random_weights import random_weights

RESNET_BLOCK = Path(__file__).resolve().parent / "fixtures" / "resnet_block.prototxt"

# A 4-D output, after a Concat of a Slice's two tops and a ReLU's. (relu_b is not in place:
# Caffe refuses an in-place write to a blob another layer read first.)
BRANCHES = """name: "Branches"
input: "data"
input_shape { dim: 1 dim: 3 dim: 12 dim: 12 }
layer { name: "conv_a" type: "Convolution" bottom: "data" top: "a"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu_a" type: "ReLU" bottom: "a" top: "a" }
layer { name: "conv_b" type: "Convolution" bottom: "a" top: "b"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "pool_b" type: "Pooling" bottom: "b" top: "pooled"
  pooling_param { pool: MAX kernel_size: 3 stride: 1 pad: 1 } }
layer { name: "relu_b" type: "ReLU" bottom: "b" top: "rb" }
layer { name: "conv_c" type: "Convolution" bottom: "rb" top: "c"
  convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "slice_c" type: "Slice" bottom: "c" top: "c1" top: "c2"
  slice_param { axis: 1 slice_point: 2 } }
layer { name: "relu_c" type: "ReLU" bottom: "c1" top: "c1" }
layer { name: "conv_d" type: "Convolution" bottom: "pooled" top: "d"
  convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "relu_d" type: "ReLU" bottom: "d" top: "e" }
layer { name: "join" type: "Concat" bottom: "c1" bottom: "c2" bottom: "e" top: "out" }
"""


def _module(prototxt: Path, tmp_path: Path) -> tuple[torch.nn.Module, str, tuple[int, ...]]:
    weights = tmp_path / "net.caffemodel"
    random_weights(prototxt, weights, seed=3)
    conversion = convert(prototxt, weights)
    model = module_from_source(conversion.source, conversion.class_name)
    assert conversion.state_dict is not None
    model.load_state_dict(conversion.state_dict)
    return model.eval(), conversion.source, conversion.graph.inputs[0].shape


def test_forward_computes_channels_last_and_returns_contiguous_outputs(tmp_path: Path) -> None:
    prototxt = tmp_path / "branches.prototxt"
    prototxt.write_text(BRANCHES)
    model, source, shape = _module(prototxt, tmp_path)
    # forward()'s lines, up to the next method (caffe_param_groups).
    forward = source.split("def forward(self, data", 1)[1].split("\n    def ", 1)[0]
    body = forward.rstrip().splitlines()
    assert body[2].strip() == "data = data.contiguous(memory_format=torch.channels_last)"
    assert body[-1].strip() == "return out.contiguous()"  # the one output is 4-D
    seen = []
    hook = model.conv_a.register_forward_hook(
        lambda module, args, out: seen.append(out.is_contiguous(memory_format=torch.channels_last))
    )
    with torch.no_grad():
        out = model(torch.randn(shape))
    hook.remove()
    assert seen == [True] and out.is_contiguous() and out.shape == (1, 6, 12, 12)


def test_fast_gives_the_module_outputs_and_leaves_it_alone(tmp_path: Path) -> None:
    model, _, shape = _module(RESNET_BLOCK, tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.from_numpy(np.random.default_rng(2).standard_normal(shape).astype(np.float32))
    prepared = protocaffe.fast(model, x)
    assert isinstance(prepared, torch.jit.ScriptModule)
    with torch.no_grad():
        torch.testing.assert_close(prepared(x), model(x), rtol=1e-5, atol=1e-6)
        # Another batch size than the example's.
        batch = torch.cat([x, -x])
        torch.testing.assert_close(prepared(batch), model(batch), rtol=1e-5, atol=1e-6)
    assert not model.training  # still in eval mode, as it was
    for key, value in model.state_dict().items():
        assert value.is_contiguous() and torch.equal(value, before[key]), key
    assert all(p.requires_grad for p in model.parameters())


def test_nnpack_convolution_equals_the_convolution() -> None:
    if not torch._nnpack_available():
        pytest.skip("this torch has no NNPACK")
    torch.manual_seed(0)
    for kernel, padding, bias in ((3, 1, True), (5, 2, False), (1, 0, True)):
        conv = torch.nn.Conv2d(8, 6, kernel, padding=padding, bias=bias).eval()
        x = torch.randn(2, 8, 20, 17).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            expected = conv(x)
            ours = NNPackConvolution(conv)(x)
        assert ours.is_contiguous(memory_format=torch.channels_last)
        # Winograd's and FFT's rounding: about 1e-5 of the largest magnitude.
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-4 * expected.abs().max().item())


def test_fast_with_nnpack_everywhere_it_applies(tmp_path: Path) -> None:
    if not torch._nnpack_available():
        pytest.skip("this torch has no NNPACK")
    model, _, shape = _module(FIXTURES.parent / "inception_block.prototxt", tmp_path)
    x = torch.from_numpy(np.random.default_rng(4).standard_normal(shape).astype(np.float32))
    prepared = protocaffe.fast(model, x, nnpack=True)
    # The frozen graph inlines the modules: count NNPACK's calls in it. Every stride-1
    # convolution with padding < kernel: the 1x1s, 3x3 and 5x5 of the inception block.
    assert str(prepared.graph).count("aten::_nnpack_spatial_convolution") == 6
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(
            prepared(x), expected, rtol=0, atol=1e-4 * expected.abs().max().item()
        )
    none = protocaffe.fast(model, x, nnpack=False)
    assert "_nnpack" not in str(none.graph)


IN_PLACE = """name: "InPlace"
input: "data"
input_shape { dim: 2 dim: 3 dim: 6 dim: 7 }
layer { name: "relu_in" type: "ReLU" bottom: "data" top: "r0" }
layer { name: "conv" type: "Convolution" bottom: "r0" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "relu_a" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "conv_b" type: "Convolution" bottom: "conv" top: "b"
  convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "relu_b" type: "ReLU" bottom: "b" top: "rb" }
layer { name: "sig" type: "Sigmoid" bottom: "conv" top: "sig" }
layer { name: "relu_s" type: "ReLU" bottom: "sig" top: "rs" }
layer { name: "sum" type: "Eltwise" bottom: "rb" bottom: "rs" bottom: "b" top: "sum" }
layer { name: "relu_c" type: "ReLU" bottom: "sum" top: "sum" relu_param { negative_slope: 0.1 } }
"""


def test_relu_computes_in_place_only_into_a_fresh_tensor_no_one_else_reads(
    tmp_path: Path,
) -> None:
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(IN_PLACE)
    weights = tmp_path / "net.caffemodel"
    random_weights(prototxt, weights, seed=3)
    conversion = convert(prototxt, weights)
    source = conversion.source
    assert "torch.relu(data)" in source  # the caller's tensor
    assert "torch.relu_(scale)" in source  # Scale's new tensor, read by the ReLU only
    assert "torch.relu(b)" in source  # 'b' is also read by the Eltwise
    assert "torch.relu(sig)" in source  # Sigmoid's backward reads its output
    assert "F.leaky_relu(sum_, 0.1, inplace=True)" in source
    # train(): the same gradients as the module with every ReLU out of place.
    out_of_place = source.replace("torch.relu_(", "torch.relu(").replace(", inplace=True", "")
    modules = []
    for text in (source, out_of_place):
        module = module_from_source(text, conversion.class_name)
        module.load_state_dict(conversion.state_dict)
        modules.append(module.train())
    x = torch.from_numpy(np.random.default_rng(4).normal(size=(2, 3, 6, 7)).astype(np.float32))
    grads = []
    for module in modules:
        module.zero_grad()
        module(x).square().sum().backward()
        grads.append([p.grad.clone() for p in module.parameters()])
    for ours, theirs in zip(*grads, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
