"""t2mhanh/caffe_convLSTM_WTA's ConvLSTM and ConvLSTMReLU against the numpy reference
(protocaffe.verify.reference.ops.conv_lstm, transcribed from conv_lstm_layer.cpp's
FillUnrolledNet, the units' Forward_cpu and recurrent_layer.cpp @ 4f31996d), every blob, with
seeded random weights at odd sizes, T = 1 and 5, batches of 1 and 2 and cont zeros
mid-sequence; the caffemodel blob order of the fork's unrolled net; the units' equations by
hand; and the refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fork_cases import compare_with_reference, layer, net_text
from forks_support import load_module

from protocaffe.api import convert
from protocaffe.errors import ProtocaffeError, Reporter
from protocaffe.frontend.caffemodel import read_caffemodel
from protocaffe.frontend.caffemodel_writer import write_caffemodel
from protocaffe.frontend.prototxt import read_prototxt
from protocaffe.random_weights import random_weights
from protocaffe.verify.reference import ReferenceNet

C_IN, C, H, W = 3, 4, 5, 7

# label -> (lstm_debug_param, lstm_conv_param text(s))
VARIANTS = {
    "default": ("", "lstm_conv_param { num_output: 4 kernel_size: 3 pad: 1 }"),
    "no-hadamard": (
        "lstm_debug_param { disable_hadamard: true }",
        "lstm_conv_param { num_output: 4 kernel_size: 3 pad: 1 }",
    ),
    "two-convs": (
        "lstm_debug_param { axis_hadamard: 2 num_axes_hadamard: 3 }",
        'lstm_conv_param { type: "hidden" num_output: 4 kernel_size: 5 kernel_size: 3 pad: 2 '
        "pad: 1 bias_term: false group: 2 }\n"
        '  lstm_conv_param { type: "input" num_output: 4 kernel_size: 1 }',
    ),
    "ignore-x": (
        "lstm_debug_param { ignore_x: true }",
        "lstm_conv_param { num_output: 4 kernel_size: 3 pad: 1 dilation: 1 }",
    ),
}


def conv_lstm(kind: str, variant: str, expose: bool, bottoms: tuple[str, ...]) -> str:
    debug, convs = VARIANTS[variant]
    params = f"recurrent_param {{ expose_hidden: {str(expose).lower()} }}\n  {debug}\n  {convs}"
    tops = ["lstm", "h_T", "c_T"] if expose else ["lstm"]
    return layer("lstm", kind, *bottoms, tops=tops, params=params)


def cont_with_restarts(steps: int, batch: int) -> np.ndarray:
    """0 at step 0, and mid-sequence 0s (stream 0 at step 2, stream 1 at step 3)."""
    cont = np.ones((steps, batch), np.float32)
    cont[0] = 0
    if steps > 2:
        cont[2, 0] = 0
    if steps > 3 and batch > 1:
        cont[3, 1] = 0
    return cont


@pytest.mark.parametrize("kind", ["ConvLSTM", "ConvLSTMReLU"])
@pytest.mark.parametrize(("steps", "batch"), [(1, 1), (5, 2)])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("expose", [False, True])
def test_module_equals_reference(
    kind: str, steps: int, batch: int, variant: str, expose: bool, tmp_path: Path
) -> None:
    rng = np.random.default_rng(steps * 100 + batch * 10 + list(VARIANTS).index(variant))
    shapes = {"x": (steps, batch, C_IN, H, W), "cont": (steps, batch)}
    if expose:
        shapes |= {"h_0": (1, batch, C, H, W), "c_0": (1, batch, C, H, W)}
    inputs = {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}
    inputs["cont"] = cont_with_restarts(steps, batch)
    text = net_text(shapes, conv_lstm(kind, variant, expose, tuple(shapes)))
    conversion, reference = compare_with_reference(tmp_path, text, inputs, seed=steps + batch)
    assert reference["lstm"].shape == (steps, batch, C, H, W)
    calls = [line for line in conversion.source.splitlines() if "self.lstm(" in line]
    assert len(calls) == 1
    init = conversion.source.split("self.lstm = CaffeConvLSTM(")[1].split(")\n")[0]
    assert ("relu=True" in init) == (kind == "ConvLSTMReLU"), init


def test_cont_and_exposed_state_change_the_output(tmp_path: Path) -> None:
    """The reference is not blind to what the tests vary: a mid-sequence 0 in cont, and the
    exposed h_0 and c_0, change h."""
    steps, batch = 4, 2
    shapes = {
        "x": (steps, batch, C_IN, H, W),
        "cont": (steps, batch),
        "h_0": (1, batch, C, H, W),
        "c_0": (1, batch, C, H, W),
    }
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(net_text(shapes, conv_lstm("ConvLSTM", "default", True, tuple(shapes))))
    weights = tmp_path / "net.caffemodel"
    random_weights(prototxt, weights, seed=1)
    net = ReferenceNet(read_prototxt(prototxt, Reporter()), read_caffemodel(weights))
    rng = np.random.default_rng(4)
    inputs = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    inputs["cont"] = np.ones((steps, batch), np.float32)
    base = net.forward(dict(inputs))["lstm"]
    restarted = dict(inputs, cont=cont_with_restarts(steps, batch))
    changed = net.forward(restarted)["lstm"]
    assert np.abs(changed[2, 0] - base[2, 0]).max() > 1e-3
    zero_state = dict(inputs, h_0=np.zeros_like(inputs["h_0"]), c_0=np.zeros_like(inputs["c_0"]))
    assert np.abs(net.forward(zero_state)["lstm"][0] - base[0]).max() > 1e-3


def _fork_blob_shapes(variant: str, batch: int) -> list[tuple[int, ...]]:
    """The unrolled net's owned params in layer order (recurrent_layer.cpp LayerSetUp), read
    from FillUnrolledNet: x->transform's filter (4C, C_in, k, k) unless ignore_x, the
    DummyForward blobs (1,) of c_t=0 and h_t=0, hidden->transform's filter (4C, C / group,
    kh, kw) and bias (4C) when bias_term, the Hadamard Scales' blobs (c's shape from
    axis_hadamard, num_axes_hadamard axes) for input, forget, output, and the DummyForward
    blobs of h_t=T and c_t=T."""
    state = (1, batch, C, H, W)
    if variant == "two-convs":
        return [(16, C_IN, 1, 1), (1,), (1,), (16, 2, 5, 3)] + [state[2:5]] * 3 + [(1,), (1,)]
    x = [] if variant == "ignore-x" else [(16, C_IN, 3, 3)]
    hadamard = [] if variant == "no-hadamard" else [(H, W)] * 3
    return x + [(1,), (1,), (16, C, 3, 3), (16,)] + hadamard + [(1,), (1,)]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_blobs_follow_the_forks_order(variant: str, tmp_path: Path) -> None:
    """The caffemodel holds the unrolled net's params in the fork's order and shapes, and blob
    i reaches the module where the fork uses it (a caffemodel whose blob i is all i)."""
    batch = 2
    shapes = {"x": (3, batch, C_IN, H, W), "cont": (3, batch)}
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(net_text(shapes, conv_lstm("ConvLSTM", variant, False, tuple(shapes))))
    weights = tmp_path / "net.caffemodel"
    random_weights(prototxt, weights, seed=0)
    model = read_caffemodel(weights)
    (stored,) = model.layers
    expected = _fork_blob_shapes(variant, batch)
    assert [tuple(b.shape) for b in stored.blobs] == expected
    numbered = [np.full(b.shape, i, np.float32) for i, b in enumerate(stored.blobs)]
    write_caffemodel(weights, model.net_name, [(stored.name, stored.type, numbered)])
    state = convert(prototxt, weights).state_dict
    assert state is not None
    names = ["weight_x"] if variant != "ignore-x" else []
    names += [None, None, "weight_h"] + (["bias_h"] if variant != "two-convs" else [])
    if variant != "no-hadamard":
        names += ["hadamard_input", "hadamard_forget", "hadamard_output"]
    names += [None, None]
    assert len(names) == len(expected)
    for i, name in enumerate(names):
        if name is not None:
            value = state[f"lstm.{name}"]
            assert tuple(value.shape) == expected[i] and bool((value == i).all()), name
    assert len(state) == sum(name is not None for name in names)  # DummyForward's are unused


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + float(np.exp(-x)))


@pytest.mark.parametrize("kind", ["ConvLSTM", "ConvLSTMReLU"])
def test_unit_by_hand(kind: str, tmp_path: Path) -> None:
    """All weights 0 but the hidden bias (b_i, b_f, b_o, b_g per gate) and the forget
    peephole: the gates are constant, c_1 = sig(b_i) act(b_g), c_2 = cont_2 (sig(b_f + s_f
    c_1)) c_1 + sig(b_i) act(b_g), h = sig(b_o) act(c), act tanh (ReLU: max(., 0))."""
    shapes = {"x": (3, 1, 1, 3, 3), "cont": (3, 1)}
    body = conv_lstm(kind, "default", False, tuple(shapes)).replace(
        "num_output: 4", "num_output: 1"
    )
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(net_text(shapes, body))
    weights = tmp_path / "net.caffemodel"
    random_weights(prototxt, weights, seed=0)
    model = read_caffemodel(weights)
    (stored,) = model.layers
    blobs = [np.zeros(b.shape, np.float32) for b in stored.blobs]
    b_i, b_f, b_o, b_g, s_f = 0.3, -0.2, 0.5, 0.8, 0.7
    blobs[4][:] = [b_i, b_f, b_o, b_g]
    blobs[6][...] = s_f  # hadamard.forget
    write_caffemodel(weights, model.net_name, [(stored.name, stored.type, blobs)])
    act = (lambda v: max(v, 0.0)) if kind == "ConvLSTMReLU" else np.tanh
    cont = np.array([[0.0], [1.0], [0.0]], np.float32)
    c1 = _sigmoid(b_i) * act(b_g)
    c2 = _sigmoid(b_f + s_f * c1) * c1 + _sigmoid(b_i) * act(b_g)
    c3 = _sigmoid(b_i) * act(b_g)  # cont 0: no forget term
    expected = [_sigmoid(b_o) * act(c) for c in (c1, c2, c3)]
    module = load_module(convert(prototxt, weights))
    with torch.no_grad():
        out = module(torch.zeros(shapes["x"]), torch.from_numpy(cont))
    got = out.numpy()[:, 0, 0]
    for t in range(3):
        np.testing.assert_allclose(got[t], expected[t], rtol=1e-5)
    reference = ReferenceNet(read_prototxt(prototxt, Reporter()), read_caffemodel(weights))
    ref = reference.forward({"x": np.zeros(shapes["x"], np.float32), "cont": cont})["lstm"]
    np.testing.assert_allclose(ref[:, 0, 0], got, rtol=1e-5)


@pytest.mark.parametrize(
    ("params", "bottoms", "tops", "message"),
    [
        ("lstm_conv_param { num_output: 4 kernel_size: 3 }", 2, 1, "H x W kept"),
        (
            'lstm_debug_param { expose: "c_t=2" } lstm_conv_param { num_output: 4 kernel_size: 1 }',
            2,
            2,
            "expose",
        ),
        (
            "recurrent_param { expose_hidden: true } "
            "lstm_conv_param { num_output: 4 kernel_size: 1 }",
            5,
            3,
            "x_static",
        ),
        ("lstm_conv_param { num_output: 4 kernel_h: 1 kernel_w: 1 }", 2, 1, "kernel_size"),
        ('lstm_conv_param { type: "hidden" num_output: 4 kernel_size: 1 }', 2, 1, "second"),
    ],
)
def test_refusals(params: str, bottoms: int, tops: int, message: str, tmp_path: Path) -> None:
    names = ["x", "cont", "h_0", "c_0", "s"][:bottoms]
    shapes = {
        "x": (2, 1, C_IN, H, W),
        "cont": (2, 1),
        "h_0": (1, 1, C, H, W),
        "c_0": (1, 1, C, H, W),
        "s": (1, 1, C_IN, H, W),
    }
    text = net_text(
        {n: shapes[n] for n in names},
        layer("lstm", "ConvLSTM", *names, tops=["lstm", "a", "b"][:tops], params=params),
    )
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(text)
    with pytest.raises(ProtocaffeError, match=message):
        convert(prototxt)


def test_ignore_x_reads_only_the_hidden_param(tmp_path: Path) -> None:
    """With ignore_x, FillUnrolledNet never reads the input convolution's lstm_conv_param:
    one param typed "hidden" is enough (without ignore_x it needs a second)."""
    shapes = {"x": (3, 2, C_IN, H, W), "cont": (3, 2)}
    params = (
        "lstm_debug_param { ignore_x: true } "
        'lstm_conv_param { type: "hidden" num_output: 4 kernel_size: 3 pad: 1 }'
    )
    text = net_text(shapes, layer("lstm", "ConvLSTMReLU", "x", "cont", params=params))
    rng = np.random.default_rng(7)
    inputs = {"x": rng.normal(size=shapes["x"]).astype(np.float32)}
    inputs["cont"] = cont_with_restarts(3, 2)
    compare_with_reference(tmp_path, text, inputs)
