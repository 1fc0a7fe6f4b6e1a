"""senlinuc/caffe_ocr's DenseBlock against the numpy reference (protocaffe.verify.reference.ops
.dense_block, transcribed from DenseBlock_layer.cpp @ 81642f61: LayerSetUp, Forward_cpu,
BN_inf_Fwd, convolution_Fwd), blob by blob, with seeded random weights at odd sizes; the blob
order of LayerSetUp's `this->blobs_`; a case worked out by hand from convolution_Fwd's indices;
train() against a transcription of BN_train_Fwd; and the fork's refusals. `--dialect
denseblock-gpu` against the reference's transcription of DenseBlock_layer.cu (Forward_gpu),
train() against a transcription of its cuDNN calls, and the note that points to it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from fork_cases import compare_with_reference, layer, net_text
from forks_support import load_module, relative_error

from protocaffe.api import Conversion, convert
from protocaffe.cli import main
from protocaffe.errors import ProtocaffeError, Reporter, Severity
from protocaffe.frontend.caffemodel import read_caffemodel
from protocaffe.frontend.caffemodel_writer import write_caffemodel
from protocaffe.frontend.prototxt import read_prototxt
from protocaffe.random_weights import random_weights
from protocaffe.verify.reference import ReferenceNet
from protocaffe.verify.reference.ops.dense_block import convolution_fwd

RNG = np.random.default_rng(15)
Blobs = list[np.ndarray]
GPU = ("denseblock-gpu",)


def dense(options: str = "", transitions: int = 3, growth: int = 4) -> str:
    params = f"denseblock_param {{ numTransition: {transitions} growthRate: {growth} {options} }}"
    return layer("dense", "DenseBlock", "x", params=params)


def run(conversion: Conversion, x: np.ndarray, train: bool = False) -> np.ndarray:
    module = load_module(conversion)
    module.train(train)
    with torch.no_grad():
        out: torch.Tensor = module(torch.from_numpy(x))
    return out.numpy()


def write_net(
    tmp: Path, shape: tuple[int, ...], body: str, edit: Callable[[Blobs], None] | None = None
) -> tuple[Path, Path]:
    """The net and seeded random weights, the DenseBlock's blobs changed by `edit`."""
    prototxt = tmp / "net.prototxt"
    prototxt.write_text(net_text({"x": shape}, body))
    weights = tmp / "net.caffemodel"
    random_weights(prototxt, weights, seed=3)
    if edit is not None:
        model = read_caffemodel(weights)
        layers = []
        for stored in model.layers:
            blobs = [np.array(b, dtype=np.float32) for b in stored.blobs]
            edit(blobs)
            layers.append((stored.name, stored.type, blobs))
        write_caffemodel(weights, model.net_name, layers)
    return prototxt, weights


def reference_top(
    prototxt: Path, weights: Path, x: np.ndarray, dialects: tuple[str, ...] = ()
) -> np.ndarray:
    net = ReferenceNet(read_prototxt(prototxt, Reporter()), read_caffemodel(weights), dialects)
    top: np.ndarray = net.forward({"x": x})["dense"]
    return top


@pytest.mark.parametrize(
    ("shape", "options"),
    [
        ((1, 5, 7, 9), ""),
        ((1, 5, 7, 9), "use_BC: true"),
        ((1, 5, 7, 9), "use_dropout: true dropout_amount: 0.2 moving_average_fraction: 0.5"),
        ((2, 3, 5, 6), "use_BC: true use_dropout: true initChannel: 64 filter_H: 5 pad_h: 2"),
    ],
)
def test_module_equals_reference(shape: tuple[int, ...], options: str, tmp_path: Path) -> None:
    """Every blob of the module equals the reference's. The fields the fork never reads
    (initChannel, filter_H, pad_h) change nothing, and dropout is not applied."""
    x = RNG.normal(size=shape).astype(np.float32)
    conversion, reference = compare_with_reference(
        tmp_path, net_text({"x": shape}, dense(options)), {"x": x}
    )
    assert reference["dense"].shape == (shape[0], shape[1] + 3 * 4, *shape[2:])
    forward = [line for line in conversion.source.splitlines() if "self.dense(" in line]
    assert len(forward) == 1 and "dense = self.dense(x)" in forward[0]
    assert "class CaffeDenseBlock(nn.Module):" in conversion.source


@pytest.mark.parametrize("factor", [0.0, 2.5])
@pytest.mark.parametrize("options", ["", "use_BC: true"])
def test_moving_average_factor(factor: float, options: str, tmp_path: Path) -> None:
    """BN_inf_Fwd divides the stored statistics by the factor (the last blob), and takes them
    as 0 when it is 0."""
    shape = (1, 4, 5, 7)
    x = RNG.normal(size=shape).astype(np.float32)

    def set_factor(blobs: Blobs) -> None:
        blobs[-1][...] = factor

    prototxt, weights = write_net(tmp_path, shape, dense(options), set_factor)
    expected = reference_top(prototxt, weights, x)
    assert relative_error(run(convert(prototxt, weights), x), expected) <= 2e-5
    # The factor changes the numbers (random_weights writes 1).
    (tmp_path / "unit").mkdir()
    unit = write_net(tmp_path / "unit", shape, dense(options))
    assert relative_error(reference_top(*unit, x), expected) > 1e-3


def _fork_blob_shapes(c: int, g: int, transitions: int, bc: bool) -> list[tuple[int, ...]]:
    """LayerSetUp, read index by index: blobs_[t] the 3x3 filter, [T + t] the scaler,
    [2T + t] the bias, [3T + t] the global mean, [4T + t] the global variance; with use_BC
    [5T + t] the 1x1 filter and [6T .. 9T + t] the BC scaler, bias, mean and variance; the
    factor last ([5T], or [10T] with use_BC)."""
    t_count = 10 * transitions + 1 if bc else 5 * transitions + 1
    shapes: list[tuple[int, ...]] = [()] * t_count
    for t in range(transitions):
        ch = c + t * g
        shapes[t] = (g, 4 * g if bc else ch, 3, 3)
        for group in (1, 2, 3, 4):
            shapes[group * transitions + t] = (1, ch, 1, 1)
        if bc:
            shapes[5 * transitions + t] = (4 * g, ch, 1, 1)
            for group in (6, 7, 8, 9):
                shapes[group * transitions + t] = (1, 4 * g, 1, 1)
    shapes[-1] = (1,)
    return shapes


@pytest.mark.parametrize("bc", [False, True])
def test_blobs_follow_the_forks_order(bc: bool, tmp_path: Path) -> None:
    """The weights hold LayerSetUp's blobs in its order, and blob i reaches the module's
    state where the fork uses it: a caffemodel whose blob i is all i shows the mapping.
    Statistics and the factor are buffers (the fork gives them lr_mult 0); the filters,
    scalers and biases are parameters, in Caffe's order in caffe_param_groups()."""
    c, g, transitions = 5, 4, 3
    options = "use_BC: true" if bc else ""

    def number(blobs: Blobs) -> None:
        for i, blob in enumerate(blobs):
            blob[...] = i

    prototxt, weights = write_net(tmp_path, (1, c, 7, 9), dense(options), number)
    (stored,) = read_caffemodel(weights).layers
    expected = _fork_blob_shapes(c, g, transitions, bc)
    assert [tuple(b.shape) for b in stored.blobs] == expected
    conversion = convert(prototxt, weights)
    state = conversion.state_dict
    assert state is not None
    groups = ["weight", "scale", "bias", "global_mean", "global_var"]
    if bc:
        groups += ["bc_weight", "bc_scale", "bc_bias", "bc_global_mean", "bc_global_var"]
    for i, shape in enumerate(expected[:-1]):
        group, t = divmod(i, transitions)
        value = state[f"dense.transitions.{t}.{groups[group]}"]
        assert tuple(value.shape) == shape and bool((value == i).all()), (i, groups[group])
    assert state["dense.factor"].tolist() == [len(expected) - 1]
    module = load_module(conversion)
    trained = {name for name, _ in module.named_parameters()}
    learned = [
        f"dense.transitions.{t}.{name}"
        for name in groups
        if "global" not in name
        for t in range(transitions)
    ]
    assert trained == set(learned)
    (group,) = module.caffe_param_groups()
    assert [p.data_ptr() for p in group["params"]] == [
        module.get_parameter(name).data_ptr() for name in learned
    ]


def test_flipped_kernel_by_hand(tmp_path: Path) -> None:
    """convolution_Fwd reads x[h + k/2 - fx][w + k/2 - fy]: a filter whose only 1 is at
    (fx, fy) = (0, 0) gives new[h][w] = x[h + 1][w + 1] (0 past the edge), where Caffe's
    ConvolutionLayer would give x[h - 1][w - 1]. The BN is the identity (scaler 1, bias 0,
    mean 0, variance 1 - 1e-5, factor 1) and x > 0, so the ReLU keeps it."""
    shape = (1, 1, 4, 5)
    x = RNG.uniform(1.0, 2.0, size=shape).astype(np.float32)

    def identity(blobs: Blobs) -> None:
        filt, scaler, bias, mean, var, factor = blobs
        filt[...] = 0
        filt[0, 0, 0, 0] = 1
        scaler[...], bias[...], mean[...], var[...], factor[...] = 1, 0, 0, 1 - 1e-5, 1

    prototxt, weights = write_net(tmp_path, shape, dense("", 1, 1), identity)
    expected = np.zeros((1, 2, 4, 5), np.float32)
    expected[:, 0] = x[:, 0]
    expected[0, 1, :3, :4] = x[0, 0, 1:, 1:]
    np.testing.assert_allclose(reference_top(prototxt, weights, x), expected, rtol=1e-6)
    np.testing.assert_allclose(run(convert(prototxt, weights), x), expected, rtol=1e-6)


def _bn_train_fwd(x: np.ndarray, scaler: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, ...]:
    """DenseBlock_layer.cpp BN_train_Fwd: getMean; batchVar = m / (m - 1.0) * getVar; xhat =
    (x - batchMean) / sqrt(batchVar + 1e-5); top = scaler * xhat + bias."""
    m = x.shape[0] * x.shape[2] * x.shape[3]
    mean = x.astype(np.float64).mean(axis=(0, 2, 3), keepdims=True)
    var = m / (m - 1.0) * ((x - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
    top = scaler * ((x - mean) / np.sqrt(var + 1e-5)) + bias
    return top.astype(np.float32), mean, var


@pytest.mark.parametrize("bc", [False, True])
def test_train_forward(bc: bool, tmp_path: Path) -> None:
    """train() follows Forward_cpu in TRAIN: the batch's statistics (unbiased variance)
    normalise; globalMean/Var = f * global + batch per transition, then factor = f * factor + 1
    (f = moving_average_fraction)."""
    shape, transitions, g, f = (2, 3, 5, 6), 2, 3, 0.25
    options = f"moving_average_fraction: {f}" + (" use_BC: true" if bc else "")
    prototxt, weights = write_net(tmp_path, shape, dense(options, transitions, g))
    (stored,) = read_caffemodel(weights).layers
    blobs = [np.array(b, dtype=np.float32) for b in stored.blobs]
    x = RNG.normal(size=shape).astype(np.float32)
    merged, new_stats = x, {}
    for t in range(transitions):

        def blob(group: int, t: int = t) -> np.ndarray:
            return blobs[group * transitions + t]

        y, mean, var = _bn_train_fwd(merged, blob(1), blob(2))
        new_stats[(3, t)], new_stats[(4, t)] = f * blob(3) + mean, f * blob(4) + var
        y = np.maximum(y, 0)
        if bc:
            y, mean, var = _bn_train_fwd(convolution_fwd(y, blob(5)), blob(6), blob(7))
            new_stats[(8, t)], new_stats[(9, t)] = f * blob(8) + mean, f * blob(9) + var
            y = np.maximum(y, 0)
        merged = np.concatenate([merged, convolution_fwd(y, blob(0))], axis=1)
    conversion = convert(prototxt, weights)
    module = load_module(conversion).train()
    with torch.no_grad():
        ours = module(torch.from_numpy(x)).numpy()
    assert relative_error(ours, merged) <= 2e-5
    names = {3: "global_mean", 4: "global_var", 8: "bc_global_mean", 9: "bc_global_var"}
    for (group, t), value in new_stats.items():
        buffer = module.get_buffer(f"dense.transitions.{t}.{names[group]}").numpy()
        assert relative_error(buffer, value) <= 1e-5, (group, t)
    assert module.get_buffer("dense.factor").tolist() == pytest.approx([f * 1.0 + 1])


@pytest.mark.parametrize(
    ("shape", "params", "message"),
    [
        ((1, 3, 5, 5), "denseblock_param { numTransition: 2 } param { lr_mult: 1 }", "Nope"),
        ((1, 3, 5, 5), "denseblock_param { numTransition: 0 }", "must be positive"),
        ((1, 3, 5, 5), "denseblock_param { growthRate: -2 }", "must be positive"),
        ((1, 3, 5), "denseblock_param { numTransition: 2 }", "expects a 4-D input"),
    ],
)
def test_refusals(shape: tuple[int, ...], params: str, message: str, tmp_path: Path) -> None:
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(net_text({"x": shape}, layer("dense", "DenseBlock", "x", params=params)))
    with pytest.raises(ProtocaffeError, match=message) as error:
        convert(prototxt)
    assert "net.prototxt:" in str(error.value) and "DenseBlock" in str(error.value)


# ---- --dialect denseblock-gpu: DenseBlock_layer.cu, Forward_gpu ----------------------------------


@pytest.mark.parametrize("factor", [0.0, 2.5])
@pytest.mark.parametrize(
    "options", ["", "use_BC: true", "use_BC: true use_dropout: true dropout_amount: 0.3"]
)
def test_gpu_dialect_equals_reference(factor: float, options: str, tmp_path: Path) -> None:
    """Under the dialect the stored statistics are used as they are, whatever the factor:
    the module equals the reference's transcription of Forward_gpu (no dropout in eval), which
    the factor does not change, and which differs from the CPU path's numbers."""
    shape = (2, 3, 5, 7)
    x = RNG.normal(size=shape).astype(np.float32)

    def set_factor(blobs: Blobs) -> None:
        blobs[-1][...] = factor

    prototxt, weights = write_net(tmp_path, shape, dense(options), set_factor)
    expected = reference_top(prototxt, weights, x, GPU)
    conversion = convert(prototxt, weights, dialects=GPU)
    assert "gpu=True" in conversion.source
    assert relative_error(run(conversion, x), expected) <= 2e-5
    (tmp_path / "other").mkdir()
    other = write_net(tmp_path / "other", shape, dense(options), lambda b: b[-1].fill(7.0))
    np.testing.assert_array_equal(reference_top(*other, x, GPU), expected)
    assert relative_error(reference_top(prototxt, weights, x), expected) > 1e-3


def test_gpu_dialect_by_hand(tmp_path: Path) -> None:
    """The hand case of test_flipped_kernel_by_hand with the factor a GPU-trained model has,
    0: under the dialect the BN (scaler 1, bias 0, mean 0, variance 1 - 1e-5) is the identity;
    the CPU path takes mean and variance as 0 and divides by sqrt(1e-5)."""
    shape = (1, 1, 4, 5)
    x = RNG.uniform(1.0, 2.0, size=shape).astype(np.float32)

    def identity(blobs: Blobs) -> None:
        filt, scaler, bias, mean, var, factor = blobs
        filt[...] = 0
        filt[0, 0, 0, 0] = 1
        scaler[...], bias[...], mean[...], var[...], factor[...] = 1, 0, 0, 1 - 1e-5, 0

    prototxt, weights = write_net(tmp_path, shape, dense("", 1, 1), identity)
    expected = np.zeros((1, 2, 4, 5), np.float32)
    expected[:, 0] = x[:, 0]
    expected[0, 1, :3, :4] = x[0, 0, 1:, 1:]
    np.testing.assert_allclose(reference_top(prototxt, weights, x, GPU), expected, rtol=1e-6)
    np.testing.assert_allclose(
        run(convert(prototxt, weights, dialects=GPU), x), expected, rtol=1e-6
    )
    cpu = run(convert(prototxt, weights), x)
    np.testing.assert_allclose(cpu[:, 1], expected[:, 1] / np.sqrt(1e-5), rtol=1e-5)


def _cudnn_bn_train(
    x: np.ndarray, scaler: np.ndarray, bias: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cudnnBatchNormalizationForwardTraining (CUDNN_BATCHNORM_SPATIAL, factor 1): y =
    scaler * (x - mean) / sqrt(biased variance + 1e-5) + bias; the running outputs are the
    batch's mean and its unbiased variance."""
    m = x.shape[0] * x.shape[2] * x.shape[3]
    mean = x.astype(np.float64).mean(axis=(0, 2, 3), keepdims=True)
    biased = ((x - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
    top = scaler * ((x - mean) / np.sqrt(biased + 1e-5)) + bias
    return top.astype(np.float32), mean, biased * m / (m - 1.0)


@pytest.mark.parametrize("bc", [False, True])
def test_gpu_dialect_train_forward(bc: bool, tmp_path: Path) -> None:
    """train() under the dialect follows Forward_gpu in TRAIN: cuDNN's training BN into
    Mean_tmp/Var_tmp, then caffe_gpu_axpby(C, f, tmp, 1 - f, global), i.e. global = f * batch
    + (1 - f) * global; the factor is never touched."""
    shape, transitions, g, f = (2, 3, 5, 6), 2, 3, 0.25
    options = f"moving_average_fraction: {f}" + (" use_BC: true" if bc else "")
    prototxt, weights = write_net(tmp_path, shape, dense(options, transitions, g))
    (stored,) = read_caffemodel(weights).layers
    blobs = [np.array(b, dtype=np.float32) for b in stored.blobs]
    x = RNG.normal(size=shape).astype(np.float32)
    merged, new_stats = x, {}
    for t in range(transitions):

        def blob(group: int, t: int = t) -> np.ndarray:
            return blobs[group * transitions + t]

        y, mean, var = _cudnn_bn_train(merged, blob(1), blob(2))
        new_stats[(3, t)], new_stats[(4, t)] = f * mean + (1 - f) * blob(3), f * var + (
            1 - f
        ) * blob(4)
        y = np.maximum(y, 0)
        if bc:
            y, mean, var = _cudnn_bn_train(convolution_fwd(y, blob(5)), blob(6), blob(7))
            new_stats[(8, t)] = f * mean + (1 - f) * blob(8)
            new_stats[(9, t)] = f * var + (1 - f) * blob(9)
            y = np.maximum(y, 0)
        merged = np.concatenate([merged, convolution_fwd(y, blob(0))], axis=1)
    module = load_module(convert(prototxt, weights, dialects=GPU)).train()
    with torch.no_grad():
        ours = module(torch.from_numpy(x)).numpy()
    assert relative_error(ours, merged) <= 2e-5
    names = {3: "global_mean", 4: "global_var", 8: "bc_global_mean", 9: "bc_global_var"}
    for (group, t), value in new_stats.items():
        buffer = module.get_buffer(f"dense.transitions.{t}.{names[group]}").numpy()
        assert relative_error(buffer, value) <= 1e-5, (group, t)
    assert module.get_buffer("dense.factor").tolist() == [float(blobs[-1][0])]


def test_gpu_dialect_train_dropout(tmp_path: Path) -> None:
    """With use_dropout, Forward_gpu in TRAIN runs cudnnDropoutForward on each transition's
    new channels (kept values scaled by 1 / (1 - dropout_amount)); the input channels pass."""
    shape = (2, 3, 6, 7)
    options = "use_dropout: true dropout_amount: 0.5"
    prototxt, weights = write_net(tmp_path, shape, dense(options, 1, 8))
    x = RNG.normal(size=shape).astype(np.float32)
    (stored,) = read_caffemodel(weights).layers
    filt, scaler, bias = (np.array(b, dtype=np.float32) for b in stored.blobs[:3])
    y, _, _ = _cudnn_bn_train(x, scaler, bias)
    new = convolution_fwd(np.maximum(y, 0), filt)
    torch.manual_seed(0)
    module = load_module(convert(prototxt, weights, dialects=GPU)).train()
    with torch.no_grad():
        ours = module(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(ours[:, :3], x)
    dropped = ours[:, 3:] == 0
    assert 0.2 < dropped.mean() < 0.8
    np.testing.assert_allclose(ours[:, 3:][~dropped], 2 * new[~dropped], rtol=1e-4, atol=1e-5)


def _notes(reporter: Reporter) -> list[str]:
    return [d.message for d in reporter.diagnostics if d.severity == Severity.NOTE]


@pytest.mark.parametrize(
    ("factor", "zero_statistics", "dialects", "noted"),
    [
        (0.0, False, (), True),
        (2.5, False, (), False),
        (0.0, True, (), False),
        (0.0, False, GPU, False),
        (2.5, False, GPU, True),
    ],
)
def test_zero_factor_note(
    factor: float,
    zero_statistics: bool,
    dialects: tuple[str, ...],
    noted: bool,
    tmp_path: Path,
) -> None:
    """A factor of 0 with statistics that are not all 0 (a GPU-trained model) gets one note at
    the layer pointing to the dialect; nothing when the factor is set, when the statistics
    are 0 (both paths agree) or under the dialect, unless the dialect meets a factor that
    only CPU training sets (a CPU-trained model)."""

    def edit(blobs: Blobs) -> None:
        blobs[-1][...] = factor
        if zero_statistics:
            for blob in blobs[9:15]:  # 3 transitions, use_BC: means 9-11, variances 12-14
                blob[...] = 0
            for blob in blobs[24:30]:  # the BC means and variances
                blob[...] = 0

    prototxt, weights = write_net(tmp_path, (1, 3, 5, 5), dense("use_BC: true"), edit)
    reporter = Reporter()
    convert(prototxt, weights, reporter=reporter, dialects=dialects)
    found = [
        d for d in reporter.diagnostics if d.severity == Severity.NOTE and "factor" in d.message
    ]
    assert len(found) == noted, _notes(reporter)
    if noted:
        (note,) = found
        assert note.layer == "dense" and note.loc.file.endswith("net.prototxt")
        if dialects:  # a CPU-trained model (factor set) read as the GPU path reads it
            assert "trained on the CPU" in note.message
        else:
            assert "needs --dialect denseblock-gpu" in note.message
            assert "zero statistics" in note.message


def test_the_dialect_goes_into_the_regenerate_command(tmp_path: Path) -> None:
    prototxt, weights = write_net(tmp_path, (1, 3, 5, 5), dense())
    out = tmp_path / "out"
    args = ["convert", str(prototxt), str(weights), "-o", str(out)]
    assert main([*args, "--dialect", "denseblock-gpu", "-q"]) == 0
    source = (out / "model.py").read_text()
    header = source[: source.index("import")]
    assert "--dialect denseblock-gpu" in header
    assert "gpu=True" in source


def test_gpu_dialect_scripts(tmp_path: Path) -> None:
    """The dialect's module compiles with TorchScript and computes the same in eval(); its
    train() path (dropout, running statistics) runs scripted too."""
    shape = (2, 3, 5, 6)
    options = "use_BC: true use_dropout: true dropout_amount: 0.3"
    prototxt, weights = write_net(tmp_path, shape, dense(options, 2, 3))
    module = load_module(convert(prototxt, weights, dialects=GPU)).eval()
    scripted = torch.jit.script(module)
    x = torch.from_numpy(RNG.normal(size=shape).astype(np.float32))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), module(x), rtol=1e-6, atol=1e-6)
        scripted.train()
        assert scripted(x).shape == (2, 3 + 2 * 3, 5, 6)
