"""The layer types of issue 15 in generated modules that are good PyTorch citizens: a small net
per type (tests/fixtures/zoo/) through the checks of test_exportable.py (TorchScript,
torch.export, torch.compile fullgraph, ONNX + ONNX Runtime, float64, the meta device, other
batch sizes, black/ruff).

Recurrent nets keep Caffe's layout, time first: their batch axis is 1 (x_static's is 0), so the
export and batch checks here take a batch axis per input and output. Where an export path
cannot work, the reason is in NOT_EXPORTABLE (and docs/exporting.md): a test then checks that
it still fails, so that the documentation stays true.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from test_exportable import (
    CHECKS,
    _close,
    _generate,
    _import,
    _outputs,
)

from protocaffe.api import Conversion

ZOO = Path(__file__).resolve().parent / "fixtures" / "zoo"
TIME_MAJOR = {"x": 1, "cont": 1, "x_static": 0, "h_0": 1, "c_0": 1}


@dataclass(frozen=True)
class ZooNet:
    """A fixture net; `inputs` maps each input to its batch axis and `outputs` gives the
    outputs' batch axis (None: the net has no batch axis to vary)."""

    label: str
    inputs: Mapping[str, int] | None = None
    outputs: int = 0
    not_exportable: Mapping[str, str] = field(default_factory=dict)


PROPOSAL_LOOPS = (
    "Proposal's sort (Caffe's own quicksort, for its order of tied scores) and greedy NMS are "
    "Python loops over values read back from the tensors"
)
NETS = [
    ZooNet("lstm", TIME_MAJOR, 1),
    ZooNet("rnn", TIME_MAJOR, 1),
    ZooNet("lstm_unit", {"c_prev": 1, "gates": 1, "cont": 1}, 1),
    # The indicator's batch size is a parameter: the net runs at that batch only.
    ZooNet("lstm_fork"),
    # deepdetect's indicator reads its batch size from x: the batch axis stays free.
    ZooNet("indicator_from_input", {"x": 1}, 1),
    ZooNet("neurons", {"data": 0}),
    ZooNet("embed", {"words": 0}),
    # Stored statistics: batch statistics would mix the items the batch check compares.
    ZooNet("batch_norm_kyle", {"data": 0}),
    ZooNet("spp", {"data": 0}),
    # The learned blob has a fixed shape: the net runs at that batch only.
    ZooNet("parameter"),
    ZooNet("im2col", {"data": 0}),
    # BatchReindex picks items by index and Filter by a selector: no per-item batch axis.
    ZooNet("batch_reindex"),
    ZooNet("filter"),
    ZooNet("dummy_data", {"data": 0}),
    ZooNet("pad", {"data": 0}),
    ZooNet("pixel_shuffle", {"data": 0}),
    ZooNet("resize", {"data": 0}),
    ZooNet("max_unpool", {"data": 0}),
    ZooNet(
        "proposal",
        not_exportable={
            "export": PROPOSAL_LOOPS,
            "compile": PROPOSAL_LOOPS,
            "onnx": PROPOSAL_LOOPS,
            "device": PROPOSAL_LOOPS + " (the meta device has no values)",
        },
    ),
]


def _inputs(c: Conversion, net: ZooNet, batch: int | None = None) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(1)
    shapes = []
    for value in c.graph.inputs:
        shape = list(value.shape)
        if batch is not None and net.inputs is not None:
            shape[net.inputs[value.blob]] = batch
        shapes.append(shape)
    return tuple(torch.randn(*s, generator=gen) for s in shapes)


def check_export(module: torch.nn.Module, c: Conversion, net: ZooNet) -> None:
    """torch.export with the batch axes free (sampled at 2: a 1 would be specialised), run at
    another batch; a net without a batch axis is exported with static shapes."""
    if net.inputs is None:
        x = _inputs(c, net)
        program = torch.export.export(module, x)
        with torch.no_grad():
            _close(program.module()(*x), module(*x))
        return
    x = _inputs(c, net, 2)
    dynamic = tuple({net.inputs[v.blob]: torch.export.Dim.AUTO} for v in c.graph.inputs)
    program = torch.export.export(module, x, dynamic_shapes=dynamic)
    other = _inputs(c, net, 3)
    with torch.no_grad():
        _close(program.module()(*x), module(*x))
        _close(program.module()(*other), module(*other))


def check_batch(module: torch.nn.Module, c: Conversion, net: ZooNet) -> None:
    """A batch of 4 gives what each item gives alone (items 0 and 3)."""
    if net.inputs is None:
        pytest.skip(f"{net.label}: no batch axis to vary (see the comment in NETS)")
    x = _inputs(c, net, 4)
    axes = [net.inputs[v.blob] for v in c.graph.inputs]
    with torch.no_grad():
        whole = _outputs(module(*x))
        for i in (0, 3):
            alone = _outputs(module(*(t.narrow(a, i, 1) for t, a in zip(x, axes, strict=True))))
            for w, a in zip(whole, alone, strict=True):
                _close(w.narrow(net.outputs, i, 1), a)


def _generic(name: str) -> Callable[[torch.nn.Module, Conversion, ZooNet, Path], None]:
    """test_exportable's check `name`, with this net's inputs."""

    def run(module: torch.nn.Module, c: Conversion, net: ZooNet, folder: Path) -> None:
        import test_exportable

        original = test_exportable._inputs
        test_exportable._inputs = lambda conv, batch=None: _inputs(conv, net, batch)  # type: ignore[assignment]
        try:
            CHECKS[name](module, c, folder)
        finally:
            test_exportable._inputs = original

    return run


ZOO_CHECKS: dict[str, Callable[[torch.nn.Module, Conversion, ZooNet, Path], None]] = {
    "script": _generic("script"),
    "export": lambda m, c, n, f: check_export(m, c, n),
    "compile": _generic("compile"),
    "onnx": _generic("onnx"),
    "double": _generic("double"),
    "device": _generic("device"),
    "batch": lambda m, c, n, f: check_batch(m, c, n),
    "style": _generic("style"),
}

_GENERATED: dict[str, tuple[torch.nn.Module, Conversion, Path]] = {}


def _net(net: ZooNet, factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Conversion, Path]:
    if net.label not in _GENERATED:
        folder = factory.mktemp(net.label)
        conversion = _generate(ZOO / f"{net.label}.prototxt", {}, False, folder)
        module, _ = _import(conversion, folder)
        _GENERATED[net.label] = (module, conversion, folder)
    return _GENERATED[net.label]


@pytest.mark.parametrize("check", list(ZOO_CHECKS))
@pytest.mark.parametrize("net", NETS, ids=[n.label for n in NETS])
def test_zoo_net_is_exportable(
    check: str, net: ZooNet, tmp_path_factory: pytest.TempPathFactory
) -> None:
    module, conversion, folder = _net(net, tmp_path_factory)
    if check in net.not_exportable:
        # Documented as impossible: it must still fail, or the documentation is out of date.
        with warnings.catch_warnings(), pytest.raises(Exception):  # noqa: B017
            warnings.simplefilter("ignore")
            ZOO_CHECKS[check](module, conversion, net, folder)
        return
    ZOO_CHECKS[check](module, conversion, net, folder)


def test_every_fixture_net_is_checked() -> None:
    assert sorted(p.stem for p in ZOO.glob("*.prototxt")) == sorted(n.label for n in NETS)
