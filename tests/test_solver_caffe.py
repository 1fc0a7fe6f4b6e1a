"""`protocaffe solver` against real Caffe's training loop: each solver type and each lr_policy.

For every case, the same small net (Convolution + BatchNorm + Scale + ReLU + Pooling +
InnerProduct + SoftmaxWithLoss), the same initial weights (one caffemodel both sides load) and
the same batches train for 20 iterations in real Caffe (`caffe.get_solver(...).step`, run by
tests/caffe_solver_driver.py under the oracle's Python, all cases in one process) and with the
generated optim.py on the module protocaffe converts from the very train net (its MemoryData
layer becomes the input, the loss is left out, `--outputs ip,side`; the module's own
caffe_param_groups() carries the net's lr_mult/decay_mult). Compared:
- every weight blob after the last iteration, within 1e-4 of the blob's largest magnitude, and
  the whole change of each blob (final - initial) within 1e-3 of the largest change, so that a
  wrong update cannot hide behind weights that barely move;
- BatchNorm's statistics after the last iteration (Caffe accumulates them in every forward pass
  of TRAIN, iter_size passes per iteration; the module in train() likewise), within 1e-4. The
  train net gives the statistics `param { lr_mult: 0 decay_mult: 0 }` x3: the oracle (unlike
  BVLC master) would otherwise let weight decay shrink them;
- the learning rate of every iteration: Caffe's is read from its own log ("Iteration N, lr = X",
  which SGDSolver::ApplyUpdate prints with `display: 1`, to 6 significant digits); ours is the
  optimizer's "lr" when optimizer.step() runs. Nothing on the Caffe side computes a rate.

Skipped unless the real-Caffe oracle is installed (../shared/oracle/build.sh).
"""

from __future__ import annotations

import os
import re
import subprocess
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from protocaffe.api import convert, module_from_source
from protocaffe.backend.optim import solver_source
from protocaffe.errors import Reporter
from protocaffe.frontend.caffemodel import read_caffemodel
from protocaffe.random_weights import random_weights

ORACLE = Path(os.environ.get("PROTOCAFFE_CAFFE_ORACLE", "/opt/caffe-oracle"))
DRIVER = Path(__file__).with_name("caffe_solver_driver.py")

pytestmark = pytest.mark.skipif(
    not (ORACLE / "venv" / "bin" / "python").exists(), reason=f"no real-Caffe oracle at {ORACLE}"
)

ITERATIONS = 20
BATCH, BATCHES = 4, 3  # MemoryData hands out the batches in turn, wrapping around
SHAPE = (2, 7, 7)
CLASSES = 5
WEIGHT_RTOL = 1e-4  # of the blob's largest magnitude
CHANGE_RTOL = 1e-3  # of the blob's largest change over the run
LR_RTOL = 1e-4  # Caffe prints the rate with 6 significant digits

LAYERS = """
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv" {conv}
  convolution_param {{ num_output: 3 kernel_size: 3 }} }}
layer {{ name: "relu" type: "ReLU" bottom: "conv" top: "conv" }}
layer {{ name: "pool" type: "Pooling" bottom: "conv" top: "pool"
  pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "bn" type: "BatchNorm" bottom: "pool" top: "pool"
  param {{ lr_mult: 0 decay_mult: 0 }} param {{ lr_mult: 0 decay_mult: 0 }}
  param {{ lr_mult: 0 decay_mult: 0 }} }}
layer {{ name: "scale" type: "Scale" bottom: "pool" top: "pool" scale_param {{ bias_term: true }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "pool" top: "ip" {ip}
  inner_product_param {{ num_output: {classes} }} }}
layer {{ name: "side" type: "InnerProduct" bottom: "pool" top: "side"
  inner_product_param {{ num_output: 2 }} }}
"""
TRAIN_HEAD = f"""name: "solver_net"
layer {{ name: "data" type: "MemoryData" top: "data" top: "label"
  memory_data_param {{ batch_size: {BATCH} channels: {SHAPE[0]} height: {SHAPE[1]}
    width: {SHAPE[2]} }} }}
"""
TRAIN_LOSS = """layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label"
  top: "loss" }
"""


@dataclass(frozen=True)
class Blob:
    """One learnable blob: the module's parameter, Caffe's layer/index and its ParamSpec."""

    attr: str
    caffe: str
    lr_mult: float = 1.0
    decay_mult: float = 1.0


# The module's parameters and Caffe's blobs, in Caffe's order (net->learnable_params()).
BLOBS = (
    ("conv.weight", "conv/0"),
    ("conv.bias", "conv/1"),
    ("scale.weight", "scale/0"),
    ("scale.bias", "scale/1"),
    ("ip.weight", "ip/0"),
    ("ip.bias", "ip/1"),
    ("side.weight", "side/0"),
    ("side.bias", "side/1"),
)


def _variant(mults: tuple[tuple[float, float], ...] | None) -> tuple[Blob, ...]:
    if mults is None:
        return tuple(Blob(attr, caffe) for attr, caffe in BLOBS)
    one = (1.0, 1.0)  # "scale" and "side": default multipliers
    mults = mults[:2] + (one, one) + mults[2:] + (one, one)
    return tuple(Blob(a, c, lr, decay) for (a, c), (lr, decay) in zip(BLOBS, mults, strict=True))


# ParamSpecs of the train net. "plain" gives none (Caffe's default multipliers 1); the others
# include lr_mult 0 blobs and a whole frozen layer.
VARIANTS = {
    "plain": _variant(None),
    "mults": _variant(((1.0, 1.0), (2.0, 0.0), (0.5, 3.0), (0.0, 0.0))),
    "frozen": _variant(((0.0, 1.0), (0.0, 1.0), (1.5, 0.5), (1.0, 0.0))),
}


def _param_specs(blobs: tuple[Blob, ...], layer: str) -> str:
    if blobs == VARIANTS["plain"]:
        return ""
    return " ".join(
        f"param {{ lr_mult: {b.lr_mult} decay_mult: {b.decay_mult} }}"
        for b in blobs
        if b.caffe.startswith(layer + "/")
    )


@dataclass(frozen=True)
class Case:
    name: str
    solver: str  # solver.prototxt fields besides the net, display and max_iter
    variant: str = "plain"
    clips: bool = False  # the case must make Caffe clip the gradients at least once


CASES = [
    Case("sgd_fixed_momentum0", 'type: "SGD" base_lr: 0.1 lr_policy: "fixed"'),
    Case(
        "sgd_step_momentum_l2_mults",
        'type: "SGD" base_lr: 0.1 lr_policy: "step" gamma: 0.5 stepsize: 5 momentum: 0.9 '
        "weight_decay: 0.01",
        "mults",
    ),
    Case(
        "sgd_multistep_l1",
        'type: "SGD" base_lr: 0.1 lr_policy: "multistep" gamma: 0.5 stepvalue: 3 stepvalue: 3 '
        'stepvalue: 8 stepvalue: 15 momentum: 0.9 weight_decay: 0.01 regularization_type: "L1"',
        "mults",
    ),
    Case(
        "sgd_exp_iter_size2",
        'type: "SGD" base_lr: 0.1 lr_policy: "exp" gamma: 0.95 momentum: 0.9 iter_size: 2',
    ),
    Case(
        "sgd_inv_clip",
        'type: "SGD" base_lr: 0.2 lr_policy: "inv" gamma: 0.1 power: 0.75 momentum: 0.9 '
        "clip_gradients: 0.5 weight_decay: 0.005",
        "mults",
        clips=True,
    ),
    Case(
        "sgd_poly_frozen_layer",
        'type: "SGD" base_lr: 0.1 lr_policy: "poly" power: 2 momentum: 0.9 weight_decay: 0.01',
        "frozen",
    ),
    Case(
        "sgd_sigmoid",
        'type: "SGD" base_lr: 0.2 lr_policy: "sigmoid" gamma: 0.3 stepsize: 10 momentum: 0.5',
    ),
    Case(
        "nesterov_step_l2_mults",
        'type: "Nesterov" base_lr: 0.05 lr_policy: "step" gamma: 0.7 stepsize: 4 momentum: 0.9 '
        "weight_decay: 0.01",
        "mults",
    ),
    Case(
        "nesterov_clip_iter_size2_l1",
        'type: "Nesterov" base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 iter_size: 2 '
        'clip_gradients: 0.8 weight_decay: 0.01 regularization_type: "L1"',
        clips=True,
    ),
    Case(
        "adagrad_inv_mults",
        'type: "AdaGrad" base_lr: 0.05 lr_policy: "inv" gamma: 0.2 power: 0.5 delta: 1e-6 '
        "weight_decay: 0.005",
        "mults",
    ),
    Case(
        "rmsprop_exp_l1",
        'type: "RMSProp" base_lr: 0.01 lr_policy: "exp" gamma: 0.97 rms_decay: 0.95 delta: 1e-6 '
        'weight_decay: 0.005 regularization_type: "L1"',
    ),
    Case(
        "adadelta_fixed_mults",
        'type: "AdaDelta" base_lr: 1.0 lr_policy: "fixed" momentum: 0.95 delta: 1e-6 '
        "weight_decay: 0.005",
        "mults",
    ),
    Case(
        "adam_multistep_mults",
        'type: "Adam" base_lr: 0.01 lr_policy: "multistep" gamma: 0.5 stepvalue: 5 stepvalue: 12 '
        "momentum: 0.9 momentum2: 0.999 delta: 1e-8 weight_decay: 0.01",
        "mults",
    ),
    Case(
        "adam_legacy_enum_clip_iter_size2_l1",
        'solver_type: ADAM base_lr: 0.01 lr_policy: "poly" power: 1.5 momentum: 0.9 delta: 0.001 '
        'iter_size: 2 clip_gradients: 0.5 weight_decay: 0.01 regularization_type: "L1"',
        "frozen",
        clips=True,
    ),
]


@dataclass(frozen=True)
class CaffeRun:
    weights: dict[str, np.ndarray]
    rates: list[float]
    clipped: int  # iterations in which Caffe clipped the gradients


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("solvers")
    plain = root / "plain.prototxt"
    plain.write_text(
        TRAIN_HEAD + LAYERS.format(conv="", ip="", classes=CLASSES) + TRAIN_LOSS, encoding="utf-8"
    )
    init = root / "init.caffemodel"
    random_weights(plain, init, seed=7)
    rng = np.random.default_rng(11)
    data = rng.normal(0.0, 1.0, (BATCH * BATCHES, *SHAPE)).astype(np.float32)
    label = rng.integers(0, CLASSES, BATCH * BATCHES).astype(np.float32)

    cases = []
    for case in CASES:
        folder = root / case.name
        folder.mkdir()
        blobs = VARIANTS[case.variant]
        train = TRAIN_HEAD + LAYERS.format(
            conv=_param_specs(blobs, "conv"), ip=_param_specs(blobs, "ip"), classes=CLASSES
        )
        (folder / "train.prototxt").write_text(train + TRAIN_LOSS, encoding="utf-8")
        (folder / "solver.prototxt").write_text(
            f'net: "{folder / "train.prototxt"}"\n{case.solver}\n'
            f"max_iter: 25\ndisplay: 1\nsolver_mode: CPU\n",
            encoding="utf-8",
        )
        (folder / "init.caffemodel").symlink_to(init)
        np.savez(folder / "data.npz", data=data, label=label.reshape(-1, 1, 1, 1))
        (folder / "iterations.txt").write_text(str(ITERATIONS))
        cases.append(folder)
    done = subprocess.run(
        [str(ORACLE / "venv" / "bin" / "python"), str(DRIVER), *map(str, cases)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    yield {
        "root": root,
        "init": {
            f"{layer.name}/{i}": np.asarray(blob, np.float32)
            for layer in read_caffemodel(init).layers
            for i, blob in enumerate(layer.blobs)
        },
        "data": torch.from_numpy(data).reshape(BATCHES, BATCH, *SHAPE),
        "label": torch.from_numpy(label).long().reshape(BATCHES, BATCH),
    }


def caffe_run(folder: Path) -> CaffeRun:
    if (folder / "error.txt").exists():
        pytest.fail(f"Caffe refused {folder.name}: {(folder / 'error.txt').read_text()}")
    log = (folder / "caffe.log").read_text(errors="replace")
    rates = {int(i): float(lr) for i, lr in re.findall(r"Iteration (\d+), lr = (\S+)", log)}
    assert sorted(rates) == list(range(ITERATIONS)), "Caffe's log lacks a rate line"
    with np.load(folder / "weights.npz") as saved:
        weights = {name: saved[name] for name in saved.files}
    clipped = len(re.findall(r"Gradient clipping: scaling down", log))
    return CaffeRun(weights, [rates[i] for i in range(ITERATIONS)], clipped)


def load_optim(source: str) -> types.ModuleType:
    module = types.ModuleType("optim_under_test")
    exec(compile(source, "optim.py", "exec"), module.__dict__)
    return module


def train_torch(
    setup: dict[str, Any], case: Case, optim: types.ModuleType
) -> tuple[dict[str, np.ndarray], list[float]]:
    folder = setup["root"] / case.name
    # The train net itself: MemoryData's data top is the input (its label is read only by the
    # loss, which is left out), the loss reads ip: --outputs ip, side (Caffe's order).
    conversion = convert(
        folder / "train.prototxt", folder / "init.caffemodel", outputs=["ip", "side"]
    )
    model = module_from_source(conversion.source, conversion.class_name)
    assert conversion.state_dict is not None
    model.load_state_dict(conversion.state_dict, strict=True)
    model.train()
    params = dict(model.named_parameters(remove_duplicate=False))
    blobs = VARIANTS[case.variant]
    for blob in blobs:  # model.py freezes the lr_mult 0 blobs
        assert params[blob.attr].requires_grad == (blob.lr_mult != 0), blob.attr
    optimizer, scheduler = optim.make_optimizer(model)
    rates = []
    batch = 0
    for _ in range(ITERATIONS):
        optimizer.zero_grad()
        for _ in range(optim.ITER_SIZE):
            logits, _side = model(setup["data"][batch % BATCHES])  # Caffe's order: ip, side
            # SoftmaxWithLoss, normalization VALID without ignore_label: the batch mean.
            F.cross_entropy(logits, setup["label"][batch % BATCHES]).backward()
            batch += 1
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    weights = {b.caffe: params[b.attr].detach().numpy().copy() for b in blobs}
    # BatchNorm's blobs as Caffe keeps them: sums, and the factor they are divided by.
    factor = model.bn.factor.numpy().copy()
    weights["bn/0"] = model.bn.running_mean.numpy() * factor
    weights["bn/1"] = model.bn.running_var.numpy() * factor
    weights["bn/2"] = factor
    return weights, rates


def relative(ours: np.ndarray, reference: np.ndarray) -> float:
    scale = float(np.abs(reference).max())
    return float(np.abs(ours - reference).max()) / scale if scale else float(np.abs(ours).max())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_solver_matches_caffe(setup: dict[str, Any], case: Case) -> None:
    folder = setup["root"] / case.name
    caffe = caffe_run(folder)
    source = solver_source(str(folder / "solver.prototxt"), Reporter())
    weights, rates = train_torch(setup, case, load_optim(source))

    for i, (ours, theirs) in enumerate(zip(rates, caffe.rates, strict=True)):
        assert ours == pytest.approx(theirs, rel=LR_RTOL), f"iteration {i}: lr {ours} vs {theirs}"
    if case.clips:
        assert caffe.clipped > 0, "the case should make Caffe clip the gradients"
    for blob in VARIANTS[case.variant]:
        before = setup["init"][blob.caffe]
        theirs, ours = caffe.weights[blob.caffe], weights[blob.caffe]
        if blob.lr_mult == 0:
            np.testing.assert_array_equal(theirs, before, err_msg=f"Caffe moved {blob.caffe}")
            np.testing.assert_array_equal(ours, before, err_msg=f"we moved {blob.caffe}")
            continue
        change = relative(ours - before, theirs - before)
        print(f"{case.name} {blob.caffe}: {relative(ours, theirs):.1e}, change {change:.1e}")
        assert relative(ours, theirs) <= WEIGHT_RTOL, f"{blob.caffe}: weights differ"
        assert change <= CHANGE_RTOL, f"{blob.caffe}: its change differs by {change:.2e}"
        if blob.caffe.startswith("side/"):
            # Off the loss path: no gradient (None in torch), but Caffe still updates the blob
            # every iteration, so weight decay moves it.
            if "weight_decay" in case.solver:
                assert relative(theirs, before) > 0, f"Caffe left {blob.caffe} alone"
            continue
        # The run must move each trainable blob well beyond the tolerances, or they prove little.
        assert relative(theirs, before) > 100 * WEIGHT_RTOL, f"{blob.caffe} barely moved"
    for index in range(3):
        name = f"bn/{index}"
        theirs, ours = caffe.weights[name], weights[name]
        print(f"{case.name} {name}: {relative(ours, theirs):.1e}")
        assert relative(ours, theirs) <= WEIGHT_RTOL, f"{name}: BatchNorm statistics differ"
        assert relative(theirs, setup["init"][name]) > 100 * WEIGHT_RTOL, f"{name} did not move"
