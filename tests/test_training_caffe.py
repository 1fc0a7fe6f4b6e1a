"""Training semantics of the generated module against real Caffe's TRAIN and TEST phases.

Every net here runs in real Caffe (pycaffe, `caffe.Net(..., caffe.TRAIN or TEST)`, forward and
backward, all cases in one process: tests/caffe_train_driver.py) and in the module protocaffe
generates from the same prototxt and caffemodel, put in train() for Caffe's TRAIN phase and in
eval() for TEST. Compared: the outputs, the gradient that reaches the input (Caffe's Backward),
and the layers' blobs after the passes (BatchNorm's statistics and moving-average factor).

- BatchNorm, use_global_stats unset / true / false, in both phases, on 4-D and 2-D inputs and
  with one value per channel (issue 13 cause 6: Caffe outputs zeros there).
- Dropout: Caffe's mask comes from its own RNG and cannot be reproduced, so the rule is
  compared instead: Caffe's kept values are its input times one scale, the module's likewise,
  and the two scales agree; the gradient goes through the same mask and scale; the kept
  fractions are both within 5 standard deviations of 1 - ratio; TEST / eval() copy.
- Shared parameters (`param { name }`, issue 13 cause 9): a caffemodel whose copies differ
  loads as Caffe loads it, random-weights writes equal copies, the module holds one parameter
  per name, and Caffe's refusals are protocaffe's.

Skipped unless the real-Caffe oracle is installed (../shared/oracle/build.sh).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from caffe_check import assert_close, layer, net_text

from protocaffe.api import Conversion, convert, module_from_source
from protocaffe.errors import ProtocaffeError
from protocaffe.frontend.caffemodel_writer import write_caffemodel
from protocaffe.ir.graph import Graph
from protocaffe.passes import DEFAULT_PIPELINE
from protocaffe.random_weights import random_weights

ORACLE = Path(os.environ.get("PROTOCAFFE_CAFFE_ORACLE", "/opt/caffe-oracle"))
DRIVER = Path(__file__).with_name("caffe_train_driver.py")

pytestmark = pytest.mark.skipif(
    not (ORACLE / "venv" / "bin" / "python").exists(), reason=f"no real-Caffe oracle at {ORACLE}"
)

Shape = tuple[int, ...]
Blobs = dict[str, list[np.ndarray]]


@dataclass
class Case:
    """One net, run `passes` times in `phase` by both sides."""

    text: str
    phase: str  # "TRAIN" (the module in train()) or "TEST" (eval())
    inputs: dict[str, Shape]
    passes: int = 1
    backward: bool = True  # from random top diffs, through to the input
    weights: Blobs | None = None  # by layer name; the others get random-weights' values
    seed: int = 0
    # What the test asserts beyond the comparison, given the case's results.
    extra: Callable[[Result], None] | None = field(default=None, repr=False)


def bn_blobs(channels: int, factor: float, seed: int = 3) -> list[np.ndarray]:
    """Caffe's BatchNorm blobs: sums of means and of variances, and their factor."""
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(0, 1, channels) * factor).astype(np.float32),
        (rng.uniform(0.5, 2, channels) * factor).astype(np.float32),
        np.array([factor], np.float32),
    ]


def bn_net(shape: Shape, params: str = "") -> str:
    # force_backward: Caffe computes the input's diff although nothing below it learns.
    head = "force_backward: true\n"
    return head + net_text(
        {"data": shape}, layer("bn", "BatchNorm", "data", "out", f"batch_norm_param {{ {params} }}")
    )


BN4 = (4, 3, 5, 6)


def _stats_frozen(result: Result) -> None:
    before, after = result.case.weights["bn"], result.caffe_params  # type: ignore[index]
    for i in range(3):
        np.testing.assert_array_equal(after[f"bn/{i}"], before[i])


def _stats_moved(result: Result) -> None:
    before = result.case.weights["bn"]  # type: ignore[index]
    assert result.caffe_params["bn/2"][0] != before[2][0], "Caffe did not accumulate"


CASES: dict[str, Case] = {
    # use_global_stats unset: batch statistics and Caffe's update in TRAIN (three passes,
    # from a factor of 2.5), the stored statistics in TEST.
    "bn_unset_train": Case(
        bn_net(BN4, "eps: 0.001 moving_average_fraction: 0.9"),
        "TRAIN",
        {"data": BN4},
        passes=3,
        weights={"bn": bn_blobs(3, 2.5)},
        extra=_stats_moved,
    ),
    "bn_unset_test": Case(
        bn_net(BN4), "TEST", {"data": BN4}, weights={"bn": bn_blobs(3, 2.5)}, extra=_stats_frozen
    ),
    # Frozen: the stored statistics in TRAIN too, never updated.
    "bn_global_train": Case(
        bn_net(BN4, "use_global_stats: true"),
        "TRAIN",
        {"data": BN4},
        passes=2,
        weights={"bn": bn_blobs(3, 7.0)},
        extra=_stats_frozen,
    ),
    # Batch statistics in both phases; the default moving_average_fraction (0.999).
    "bn_batch_train": Case(
        bn_net(BN4, "use_global_stats: false"),
        "TRAIN",
        {"data": BN4},
        passes=2,
        weights={"bn": bn_blobs(3, 1.0)},
        extra=_stats_moved,
    ),
    "bn_batch_test": Case(bn_net(BN4, "use_global_stats: false"), "TEST", {"data": BN4}),
    # A factor of 0 (a layer that never accumulated): statistics 0 in global mode, and the
    # first update replaces them.
    "bn_factor_zero_train": Case(
        bn_net(BN4), "TRAIN", {"data": BN4}, passes=2, weights={"bn": bn_blobs(3, 0.0)}
    ),
    "bn_factor_zero_test": Case(
        bn_net(BN4), "TEST", {"data": BN4}, weights={"bn": bn_blobs(3, 0.0)}
    ),
    # An InnerProduct's output (N, C): the statistics over N only.
    "bn_2d_train": Case(bn_net((6, 5)), "TRAIN", {"data": (6, 5)}, passes=2),
    # One value per channel: x - mean is 0, so Caffe outputs zeros, and its unbiased variance
    # takes m / (m - 1) only when m > 1.
    "bn_one_value_train": Case(bn_net((1, 3, 1, 1)), "TRAIN", {"data": (1, 3, 1, 1)}, passes=2),
    # Issue 13 cause 6: a deploy net with use_global_stats: false and one value per channel.
    "bn_batch_one_value_test": Case(
        bn_net((1, 3, 1, 1), "use_global_stats: false"), "TEST", {"data": (1, 3, 1, 1)}
    ),
}
BATCHNORM_CASES = list(CASES)

DROPOUT_SHAPE = (8, 4, 30, 30)  # 28,800 values
DROPOUT_RATIO = 0.3
DROPOUT = "force_backward: true\n" + net_text(
    {"data": DROPOUT_SHAPE},
    layer("drop", "Dropout", "data", "out", f"dropout_param {{ dropout_ratio: {DROPOUT_RATIO} }}"),
)
CASES["dropout_train"] = Case(DROPOUT, "TRAIN", {"data": DROPOUT_SHAPE})
CASES["dropout_test"] = Case(DROPOUT, "TEST", {"data": DROPOUT_SHAPE})

# Issue 13 cause 9: Caffe ties blobs across layers by `param { name }`.
SHARED = 'param { name: "w" } param { name: "b" }'
SIAMESE = (
    'name: "siamese"\n'
    'input: "left"\ninput_shape { dim: 2 dim: 2 dim: 5 dim: 5 }\n'
    'input: "right"\ninput_shape { dim: 2 dim: 2 dim: 5 dim: 5 }\n'
    f'layer {{ name: "conv_l" type: "Convolution" bottom: "left" top: "feat_l" {SHARED} '
    "convolution_param { num_output: 3 kernel_size: 3 } }\n"
    f'layer {{ name: "conv_r" type: "Convolution" bottom: "right" top: "feat_r" {SHARED} '
    "convolution_param { num_output: 3 kernel_size: 3 } }\n"
    'layer { name: "diff" type: "Eltwise" bottom: "feat_l" bottom: "feat_r" top: "diff" '
    "eltwise_param { coeff: 1 coeff: -1 } }\n"
)
# DRFN reuses RB1_wa/RB1_ba in every recursion.
RECURSIVE = 'name: "drfn"\ninput: "data"\ninput_shape { dim: 2 dim: 2 dim: 6 dim: 7 }\n' + "".join(
    f'layer {{ name: "rb{i}" type: "Convolution" bottom: "{src}" top: "rb{i}" '
    'param { name: "RB1_wa" } param { name: "RB1_ba" } '
    "convolution_param { num_output: 2 kernel_size: 3 pad: 1 } }\n"
    f'layer {{ name: "relu{i}" type: "ReLU" bottom: "rb{i}" top: "rb{i}" }}\n'
    for i, src in enumerate(["data", "rb0", "rb1"])
)
SHARED_NETS = {"siamese": SIAMESE, "recursive": RECURSIVE}
SHARED_INPUTS = {
    "siamese": {"left": (2, 2, 5, 5), "right": (2, 2, 5, 5)},
    "recursive": {"data": (2, 2, 6, 7)},
}
SHARING_LAYERS = {"siamese": ["conv_l", "conv_r"], "recursive": ["rb0", "rb1", "rb2"]}


def untied_blobs(case: str) -> Blobs:
    """Different values in every layer's copy of the shared blobs (as a caffemodel trained
    without the ties, or edited by hand, holds them)."""
    rng = np.random.default_rng(11)
    shapes = {"siamese": [(3, 2, 3, 3), (3,)], "recursive": [(2, 2, 3, 3), (2,)]}[case]
    return {
        name: [rng.normal(0, 0.3, shape).astype(np.float32) for shape in shapes]
        for name in SHARING_LAYERS[case]
    }


for _case in SHARED_NETS:
    # TEST: the copies differ, and Caffe keeps the last one it loads.
    CASES[f"shared_{_case}_copies_differ"] = Case(
        "force_backward: true\n" + SHARED_NETS[_case],
        "TEST",
        SHARED_INPUTS[_case],
        weights=untied_blobs(_case),
    )
    # TRAIN, one forward and backward: the layers' gradients add up in the one shared blob.
    CASES[f"shared_{_case}_train"] = Case(
        "force_backward: true\n" + SHARED_NETS[_case], "TRAIN", SHARED_INPUTS[_case], seed=4
    )


@dataclass
class Result:
    case: Case
    case_folder: Path
    conversion: Conversion
    inputs: dict[str, np.ndarray]
    diffs: dict[str, np.ndarray]
    caffe_blobs: dict[str, np.ndarray]
    caffe_params: dict[str, np.ndarray]


def _every_value(graph: Graph) -> Graph:
    """A pass for tests: the last version of every blob becomes an output, in Caffe's name
    order, so that each can be compared with Caffe's blob of that name after the forward."""
    last = {v.blob: v for node in graph.nodes for v in node.outputs}
    names = tuple(sorted(last))
    return replace(graph, outputs=tuple(last[name] for name in names), output_names=names)


def _write_case(folder: Path, case: Case) -> Result:
    folder.mkdir()
    prototxt = folder / "net.prototxt"
    prototxt.write_text(case.text, encoding="utf-8")
    caffemodel = folder / "net.caffemodel"
    random_weights(prototxt, caffemodel, seed=case.seed)
    if case.weights:
        from protocaffe.frontend.caffemodel import read_caffemodel

        model = read_caffemodel(caffemodel)
        layers = [
            (one.name, one.type, case.weights.get(one.name, one.blobs)) for one in model.layers
        ]
        write_caffemodel(caffemodel, model.net_name, layers)
    conversion = convert(prototxt, caffemodel, passes=(*DEFAULT_PIPELINE, _every_value))
    rng = np.random.default_rng(case.seed + 1)
    inputs = {n: rng.normal(0.5, 2, s).astype(np.float32) for n, s in case.inputs.items()}
    np.savez(folder / "inputs.npz", **inputs)
    diffs: dict[str, np.ndarray] = {}
    if case.backward:
        real_outputs = convert(prototxt).graph.outputs
        diffs = {v.blob: rng.normal(0, 1, v.shape).astype(np.float32) for v in real_outputs}
        np.savez(folder / "diffs.npz", **diffs)
    (folder / "case.txt").write_text(f"{case.phase} {case.passes}")
    return Result(case, folder, conversion, inputs, diffs, {}, {})


def run_in_caffe(folders: list[Path]) -> str:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONNOUSERSITE": "1",
        "PYTHONPATH": str(ORACLE / "install" / "python"),
        "LD_LIBRARY_PATH": str(ORACLE / "install" / "lib"),
        "GLOG_minloglevel": "2",
        "OPENBLAS_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [str(ORACLE / "venv" / "bin" / "python"), str(DRIVER), *map(str, folders)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return done.stderr


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    root = tmp_path_factory.mktemp("training_caffe")
    found = {name: _write_case(root / name, case) for name, case in CASES.items()}
    log = run_in_caffe([root / name for name in CASES])
    for name, result in found.items():
        folder = root / name
        if (folder / "error.txt").exists():
            continue
        assert (folder / "blobs.npz").exists(), f"real Caffe did not run {name}:\n{log[-2000:]}"
        with np.load(folder / "blobs.npz") as blobs, np.load(folder / "params.npz") as params:
            result.caffe_blobs = {k: blobs[k] for k in blobs.files}
            result.caffe_params = {k: params[k] for k in params.files}
    return found


def run_module(result: Result) -> tuple[Any, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The module after the case's passes (train() for TRAIN, eval() for TEST): its outputs
    (every blob, by name), the input gradients, and the module itself."""
    conversion = result.conversion
    module = module_from_source(conversion.source, conversion.class_name)
    assert conversion.state_dict is not None
    module.load_state_dict(conversion.state_dict, strict=True)
    module.train(result.case.phase == "TRAIN")
    names = [v.blob for v in conversion.graph.outputs]
    for _ in range(result.case.passes):
        args = [
            torch.from_numpy(result.inputs[v.blob].copy()).requires_grad_()
            for v in conversion.graph.inputs
        ]
        outs = module(*args)
        outs = outs if isinstance(outs, tuple) else (outs,)
        by_name = dict(zip(names, outs, strict=True))
        if result.diffs:
            torch.autograd.backward(
                [by_name[n] for n in result.diffs],
                [torch.from_numpy(d) for d in result.diffs.values()],
            )
    values = {n: t.detach().numpy() for n, t in by_name.items()}
    grads = {
        v.blob: a.grad.numpy()
        for v, a in zip(conversion.graph.inputs, args, strict=True)
        if a.grad is not None
    }
    return module, values, grads


def compare_with_caffe(result: Result) -> Any:
    """Every blob's last version and every input's gradient, ours against Caffe's; returns
    the module after the passes."""
    assert result.caffe_blobs, "real Caffe refused the net"
    module, values, grads = run_module(result)
    for blob, ours in values.items():
        assert_close(ours, result.caffe_blobs[blob], 1e-5, what=blob)
    for blob, grad in grads.items():
        assert_close(grad, result.caffe_blobs["diff/" + blob], 1e-4, what=f"diff of {blob}")
    if result.diffs:
        assert grads, "no gradient reached the input"
    return module


@pytest.mark.parametrize("name", BATCHNORM_CASES)
def test_batchnorm_matches_caffe(results: dict[str, Result], name: str) -> None:
    result = results[name]
    module = compare_with_caffe(result)
    # The statistics: Caffe's sums over its factor are the module's running statistics.
    bn = module.bn
    theirs = [result.caffe_params[f"bn/{i}"] for i in range(3)]
    factor = float(theirs[2][0])
    scale = 0.0 if factor == 0 else 1.0 / factor
    batch_in_test = result.case.phase == "TEST" and "use_global_stats: false" in result.case.text
    if not batch_in_test:  # see test_batch_statistics_in_test_do_not_move_the_module
        assert_close(bn.factor.numpy(), theirs[2], 1e-6, what="factor")
        assert_close(bn.running_mean.numpy(), theirs[0] * scale, 1e-5, what="running_mean")
        assert_close(bn.running_var.numpy(), theirs[1] * scale, 1e-5, what="running_var")
    if result.case.extra is not None:
        result.case.extra(result)


def test_batch_statistics_in_test_do_not_move_the_module(results: dict[str, Result]) -> None:
    """use_global_stats: false in TEST: the outputs are Caffe's (test above), but Caffe also
    accumulates into its blobs during a TEST forward, which eval() does not (it never changes a
    module's state); the statistics are never read in this mode."""
    result = results["bn_batch_test"]
    module, _, _ = run_module(result)
    state = result.conversion.state_dict
    assert state is not None
    assert torch.equal(module.bn.factor, state["bn.factor"])
    assert float(result.caffe_params["bn/2"][0]) != float(state["bn.factor"][0])


def test_cause6_batch_statistics_one_value(results: dict[str, Result]) -> None:
    """Issue 13 cause 6: use_global_stats: false in a deploy net with one value per channel:
    Caffe's TEST phase outputs zeros; the module in eval() too (it raised ValueError)."""
    result = results["bn_batch_one_value_test"]
    compare_with_caffe(result)
    np.testing.assert_array_equal(result.caffe_blobs["out"], 0)


def test_cause6_batch_statistics_many_values(results: dict[str, Result]) -> None:
    compare_with_caffe(results["bn_batch_test"])


def _scale(output: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, float]:
    """The kept positions and the one factor that maps x to the output there."""
    kept = output != 0
    ratios = output[kept].astype(np.float64) / x[kept]
    scale = float(np.median(ratios))
    np.testing.assert_allclose(ratios, scale, rtol=1e-6)  # one scale for every kept value
    return kept, scale


def test_dropout_scales_as_caffe(results: dict[str, Result]) -> None:
    """Caffe's TRAIN Dropout and nn.Dropout in train(): the same rule. Masks come from each
    side's own RNG, so the test compares what they do with them: every kept value is the
    input times one scale, the same on both sides (1 / (1 - ratio), as float32); the
    gradient is the top gradient through the same mask and scale; and the kept fraction is
    1 - ratio within 5 standard deviations."""
    result = results["dropout_train"]
    x, top_diff = result.inputs["data"], result.diffs["out"]
    assert result.caffe_blobs, "real Caffe refused the net"
    caffe_kept, caffe_scale = _scale(result.caffe_blobs["out"], x)
    np.testing.assert_allclose(
        result.caffe_blobs["diff/data"], top_diff * caffe_kept * caffe_scale, rtol=1e-6
    )
    torch.manual_seed(0)
    _, values, grads = run_module(result)
    kept, scale = _scale(values["out"], x)
    np.testing.assert_allclose(grads["data"], top_diff * kept * scale, rtol=1e-6)
    assert scale == pytest.approx(caffe_scale, rel=1e-6)
    assert scale == pytest.approx(1 / (1 - DROPOUT_RATIO), rel=1e-6)
    n = x.size
    spread = 5 * np.sqrt(DROPOUT_RATIO * (1 - DROPOUT_RATIO) / n)
    for fraction in (caffe_kept.mean(), kept.mean()):
        assert abs(fraction - (1 - DROPOUT_RATIO)) < spread
    # Two runs of the module draw different masks (it is not a fixed pattern).
    _, again, _ = run_module(result)
    assert not np.array_equal(again["out"] != 0, kept)


def test_dropout_is_a_copy_in_test(results: dict[str, Result]) -> None:
    result = results["dropout_test"]
    compare_with_caffe(result)
    np.testing.assert_array_equal(result.caffe_blobs["out"], result.inputs["data"])


@pytest.mark.parametrize("case", sorted(SHARED_NETS))
def test_cause9_shared_copies_differ(results: dict[str, Result], case: str) -> None:
    """A caffemodel whose copies of a shared blob differ: Caffe copies the layers in file order
    into one blob (Net::CopyTrainedLayersFrom), so the last copy wins; so does the module, and
    the conversion says that the copies differ."""
    result = results[f"shared_{case}_copies_differ"]
    compare_with_caffe(result)
    last = SHARING_LAYERS[case][-1]
    notes = [str(d) for d in result.conversion.diagnostics]
    assert any(f"the last, {last!r}'s, wins" in note for note in notes), notes
    state = result.conversion.state_dict
    assert state is not None
    for layer_name in SHARING_LAYERS[case]:
        np.testing.assert_array_equal(
            state[f"{layer_name}.weight"].numpy(), result.case.weights[last][0]  # type: ignore[index]
        )
    # --outputs that leaves the last holder out still loads the whole net's copy, as Caffe's
    # net.blobs of the whole net has it.
    first = SHARING_LAYERS[case][0]
    blob = {"siamese": "feat_l", "recursive": "rb0"}[case]
    prototxt = result.case_folder / "net.prototxt"
    pruned = convert(prototxt, result.case_folder / "net.caffemodel", outputs=[blob])
    assert last in pruned.graph.left_out and first in {n.name for n in pruned.graph.nodes}
    module = module_from_source(pruned.source, pruned.class_name)
    module.load_state_dict(pruned.state_dict, strict=True)
    args = [torch.from_numpy(result.inputs[v.blob]) for v in pruned.graph.inputs]
    with torch.no_grad():
        ours = module.eval()(*args).numpy()
    assert_close(ours, result.caffe_blobs[blob], 1e-5, what=f"--outputs {blob}")


@pytest.mark.parametrize("case", sorted(SHARED_NETS))
def test_cause9_shared_gradients_add_up(results: dict[str, Result], case: str) -> None:
    """In TRAIN, Caffe's sharing layers share the blob's diff too (Net::ShareWeights), so their
    gradients add up in it; the module's one parameter gets the same sum from autograd."""
    result = results[f"shared_{case}_train"]
    module = compare_with_caffe(result)
    first = SHARING_LAYERS[case][0]
    for index, key in enumerate(("weight", "bias")):
        ours = getattr(getattr(module, first), key).grad.numpy()
        for layer_name in SHARING_LAYERS[case]:
            theirs = result.caffe_params[f"diff/{layer_name}/{index}"]
            assert_close(ours, theirs, 1e-5, what=f"{layer_name} {key} gradient")


@pytest.mark.parametrize("case", sorted(SHARED_NETS))
def test_cause9_random_weights_tie(tmp_path: Path, case: str) -> None:
    """random-weights writes one value into every copy of a shared blob (Caffe saves the one
    blob once per layer), so Caffe and protocaffe read the same weights whatever copy wins."""
    from protocaffe.frontend.caffemodel import read_caffemodel

    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(SHARED_NETS[case])
    weights = tmp_path / "random.caffemodel"
    subprocess.run(
        [sys.executable, "-m", "protocaffe", "random-weights", str(prototxt), "-o", str(weights)],
        check=True,
        capture_output=True,
    )
    layers = {one.name: one.blobs for one in read_caffemodel(weights).layers}
    first, *others = SHARING_LAYERS[case]
    for name in others:
        for mine, theirs in zip(layers[name], layers[first], strict=True):
            np.testing.assert_array_equal(mine, theirs)
    conversion = convert(prototxt, weights)
    assert not [d for d in conversion.diagnostics if "differ" in d.message]


@pytest.mark.parametrize("case", sorted(SHARED_NETS))
def test_cause9_one_parameter_per_name(tmp_path: Path, case: str) -> None:
    """The module holds one parameter per shared name, used by every layer that names it."""
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(SHARED_NETS[case])
    conversion = convert(prototxt)
    module = module_from_source(conversion.source, conversion.class_name)
    # Shared names w, b (siamese) or RB1_wa, RB1_ba (recursive): two tensors in all.
    assert len(list(module.parameters())) == 2
    first, *others = SHARING_LAYERS[case]
    for name in others:
        assert getattr(module, name).weight is getattr(module, first).weight
        assert f"self.{name}.weight = self.{first}.weight" in conversion.source
    assert len(module.caffe_param_groups()[0]["params"]) == 2


def caffe_refuses(tmp_path: Path, text: str) -> str:
    """Run `text` in real Caffe alone (a failed CHECK aborts the process): its message."""
    folder = tmp_path / "caffe"
    folder.mkdir()
    (folder / "net.prototxt").write_text(text)
    (folder / "net.caffemodel").write_bytes(b"")  # Caffe checks the net before reading weights
    np.savez(folder / "inputs.npz")
    (folder / "case.txt").write_text("TEST 1")
    log = run_in_caffe([folder])
    assert not (folder / "blobs.npz").exists(), "real Caffe ran the net"
    return log


def test_cause9_shared_shapes_differ(tmp_path: Path) -> None:
    """Caffe: "Cannot share param 'w' owned by layer 'conv_l' with layer 'conv_r'; shape
    mismatch" (net.cpp AppendParam); protocaffe refuses it in one located line."""
    right = 'bottom: "right" top: "feat_r"'
    head, tail = SIAMESE.split(right)
    text = head + right + tail.replace("kernel_size: 3", "kernel_size: 1", 1)
    (tmp_path / "net.prototxt").write_text(text)
    with pytest.raises(ProtocaffeError) as error:
        convert(tmp_path / "net.prototxt")
    assert re.fullmatch(
        r"\S+:\d+: layer \"conv_r\" \(Convolution\): Caffe aborts here: Cannot share param 'w' "
        r"owned by layer 'conv_l' with this layer; shape mismatch \(owner \(3, 2, 3, 3\), here "
        r"\(3, 2, 1, 1\)\)",
        str(error.value),
    )
    assert "shape mismatch" in caffe_refuses(tmp_path, text)


def test_cause9_too_many_param_specs(tmp_path: Path) -> None:
    """Caffe: "Too many params specified for layer l" (net.cpp Init: param_size must not
    exceed the number of parameter blobs)."""
    text = net_text(
        {"data": (1, 3, 4, 5)},
        layer("l", "Bias", "data", "out", 'param { name: "a" } param { name: "b" }'),
    )
    (tmp_path / "net.prototxt").write_text(text)
    with pytest.raises(ProtocaffeError, match="Caffe aborts here: Too many params specified"):
        convert(tmp_path / "net.prototxt")
    assert "Too many params specified for layer l" in caffe_refuses(tmp_path, text)


def test_cause9_mismatched_multipliers(tmp_path: Path) -> None:
    """Caffe: "Shared param 'w' has mismatched lr_mult" when two layers give it different ones;
    one given by a later layer applies to the owner's blob when the owner gave none."""
    text = SIAMESE.replace(SHARED, 'param { name: "w" lr_mult: 2 } param { name: "b" }', 1)
    text = text.replace(SHARED, 'param { name: "w" lr_mult: 3 } param { name: "b" }', 1)
    (tmp_path / "net.prototxt").write_text(text)
    with pytest.raises(ProtocaffeError, match="Shared param 'w' has mismatched lr_mult"):
        convert(tmp_path / "net.prototxt")
    assert "mismatched lr_mult" in caffe_refuses(tmp_path, text)
    later = SIAMESE.replace(SHARED, 'param { name: "w" } param { name: "b" decay_mult: 0 }', 2)
    (tmp_path / "net.prototxt").write_text(later.replace('name: "b" decay_mult: 0', 'name: "b"', 1))
    groups = module_from_source(*_source(tmp_path / "net.prototxt")).caffe_param_groups()
    assert [(g["lr_mult"], g["decay_mult"]) for g in groups] == [(1.0, 1.0), (1.0, 0.0)]


def _source(prototxt: Path) -> tuple[str, str]:
    conversion = convert(prototxt)
    return conversion.source, conversion.class_name
