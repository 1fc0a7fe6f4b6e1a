"""Issue 15's layer types, proven per blob: real Caffe (the shared oracle) runs every type it
knows on seeded random nets (tests/zoo_cases.py), and both protocaffe's generated module and
the numpy reference must give Caffe's values, or refuse what Caffe refuses. The types the
oracle lacks (BVLC master's Clip and Swish, the `Lstm` forks, crnn.caffe's
ContinuationIndicator) are checked against the reference's transcriptions of their C++, and
the forks' recurrent types also against the BVLC LSTM they equal.

The LSTM/RNN grid of issue 15 (lengths 1, 7, 20; batches 1, 3; with and without
expose_hidden; cont zeros mid-sequence) must agree within 1e-4 relative per blob.

Cases per type: 5 (PROTOCAFFE_ZOO_CASES sets it; HYPOTHESIS_PROFILE=deep runs 40). Skipped
without the oracle (/opt/caffe-oracle) except the transcription tests.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from oracle_runner import (
    ORACLE,
    CaffeResult,
    Case,
    assert_blobs_match,
    check_case,
    layer,
    net_text,
    oracle_available,
    run_in_caffe,
)
from zoo_cases import (
    ORACLE_CASES,
    TRANSCRIBED_CASES,
    generate,
    recurrent_case,
    recurrent_matrix,
    refused,
)

from protocaffe.api import Conversion, convert, module_from_source
from protocaffe.errors import ProtocaffeError, Reporter
from protocaffe.frontend.caffemodel import read_caffemodel
from protocaffe.frontend.caffemodel_writer import write_caffemodel
from protocaffe.frontend.prototxt import read_prototxt_text
from protocaffe.random_weights import random_weights
from protocaffe.verify.reference import ReferenceNet

DEEP = os.environ.get("HYPOTHESIS_PROFILE") == "deep"
PER_TYPE = int(os.environ.get("PROTOCAFFE_ZOO_CASES", "40" if DEEP else "5"))

needs_oracle = pytest.mark.skipif(
    not oracle_available(), reason=f"no real-Caffe oracle at {ORACLE}"
)


def _fork_equivalents() -> list[tuple[Case, Case]]:
    """(fork net, the BVLC LSTM net real Caffe runs that must give the same values)."""
    pairs = []
    for i in range(4):
        rng = np.random.default_rng([15, 77, i])
        steps, batch, features, hidden = 1 + 3 * i, 1 if i % 2 else 3, 4, 5
        bvlc = recurrent_case(
            "LSTM", steps, batch, False, rng, f"equiv-bvlc-{i}", features=(features,), hidden=hidden
        )
        w_xc, b_c, w_hc = bvlc.blobs["rnn"] if bvlc.blobs else []
        cont = np.ones((steps, batch), np.float32)
        cont[0] = 0
        if i % 2:  # the fork's clip input plays cont's part (one stream)
            cont[steps // 2] = 0
            fork_text = net_text(
                {"x": (steps, batch, features), "clip": (steps, 1)},
                layer("lstm", "Lstm", ["x", "clip"], "y", params="lstm_param { num_output: 5 }"),
            )
            fork_inputs = {"x": bvlc.inputs["x"], "clip": cont.reshape(steps, 1)}
        elif i == 2:  # crnn.caffe: a ContinuationIndicator feeds BVLC's LSTM
            fork_text = net_text(
                {"x": (steps, batch, features)},
                layer(
                    "ci",
                    "ContinuationIndicator",
                    [],
                    params=f"continuation_indicator_param {{ time_step: {steps} "
                    f"batch_size: {batch} }}",
                )
                + layer(
                    "rnn", "LSTM", ["x", "ci"], "y", params="recurrent_param { num_output: 5 }"
                ),
            )
            fork_inputs = {"x": bvlc.inputs["x"]}
        else:  # no clip: every step continues from a zero state
            fork_text = net_text(
                {"x": (steps, batch, features)},
                layer("lstm", "Lstm", "x", "y", params="lstm_param { num_output: 5 }"),
            )
            fork_inputs = {"x": bvlc.inputs["x"]}
        bvlc.inputs["cont"] = cont
        blobs = {"rnn": [w_xc, b_c, w_hc]} if i == 2 else {"lstm": [w_xc, w_hc, b_c]}
        fork = Case(f"equiv-fork-{i}", fork_text, fork_inputs, blobs=blobs)
        pairs.append((fork, bvlc))
    return pairs


MATRIX = recurrent_matrix()
REFUSED = refused()
ORACLE_ALL = generate(ORACLE_CASES, PER_TYPE) + MATRIX + REFUSED
EQUIVALENTS = _fork_equivalents()
TRANSCRIBED = generate(TRANSCRIBED_CASES, PER_TYPE)


@pytest.fixture(scope="module")
def caffe_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CaffeResult]:
    if not oracle_available():
        pytest.skip(f"no real-Caffe oracle at {ORACLE}")
    cases = ORACLE_ALL + [bvlc for _, bvlc in EQUIVALENTS]
    return run_in_caffe(tmp_path_factory.mktemp("zoo_oracle"), cases)


def _module(conversion: Conversion) -> torch.nn.Module:
    module = module_from_source(conversion.source, conversion.class_name)
    if conversion.state_dict is not None:
        module.load_state_dict(conversion.state_dict, strict=True)
    return module.eval()


def protocaffe_blobs(
    prototxt: Path, caffemodel: Path | None, inputs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The generated module's outputs, by blob name."""
    conversion = convert(prototxt, caffemodel)
    module = _module(conversion)
    args = [torch.from_numpy(np.ascontiguousarray(inputs[v.blob])) for v in conversion.graph.inputs]
    with torch.no_grad():
        result = module(*args)
    results = result if isinstance(result, tuple) else (result,)
    return {v.blob: r.numpy() for v, r in zip(conversion.graph.outputs, results, strict=True)}


@needs_oracle
@pytest.mark.parametrize("case", ORACLE_ALL, ids=[c.name for c in ORACLE_ALL])
def test_reference_matches_real_caffe(case: Case, caffe_results: dict[str, CaffeResult]) -> None:
    check_case(case, caffe_results[case.name])


@needs_oracle
@pytest.mark.parametrize("case", ORACLE_ALL, ids=[c.name for c in ORACLE_ALL])
def test_module_matches_real_caffe(case: Case, caffe_results: dict[str, CaffeResult]) -> None:
    result = caffe_results[case.name]
    prototxt = result.folder / "net.prototxt"
    model = result.folder / "net.caffemodel"
    caffemodel = model if model.exists() else None
    if result.error is not None:
        # Caffe refuses the net: protocaffe refuses it too, when converting or when running.
        with pytest.raises((ProtocaffeError, IndexError, RuntimeError)):
            protocaffe_blobs(prototxt, caffemodel, case.inputs)
        if case in REFUSED:  # a located error at conversion, not a failure at run time
            with pytest.raises(ProtocaffeError):
                convert(prototxt, caffemodel)
        return
    assert result.blobs is not None
    ours = protocaffe_blobs(prototxt, caffemodel, case.inputs)
    worst = assert_blobs_match(case, ours, result.blobs)
    if case in MATRIX:
        assert worst <= 1e-4


@needs_oracle
def test_refused_nets_are_refused_by_caffe(caffe_results: dict[str, CaffeResult]) -> None:
    """The nets meant to be refused are refused by real Caffe, so their tests prove something."""
    accepted = [c.name for c in REFUSED if caffe_results[c.name].error is None]
    assert not accepted, f"real Caffe accepts {accepted}"


@needs_oracle
def test_recurrent_grid_is_issue_15s(caffe_results: dict[str, CaffeResult]) -> None:
    """The grid covers what issue 15 asks, and Caffe ran all of it."""
    names = {c.name for c in MATRIX}
    assert len(names) == 24
    for case in MATRIX:
        assert caffe_results[case.name].error is None, caffe_results[case.name].error
        cont = case.inputs["cont"]
        if cont.shape[0] == 20:  # a sequence restarts mid-way somewhere
            assert (cont[1:] == 0).any()


@needs_oracle
@pytest.mark.parametrize("pair", EQUIVALENTS, ids=[fork.name for fork, _ in EQUIVALENTS])
def test_fork_recurrent_equals_bvlc_lstm(
    pair: tuple[Case, Case], caffe_results: dict[str, CaffeResult], tmp_path: Path
) -> None:
    """The Lstm forks (no clip, or a clip for one stream) and crnn.caffe's
    ContinuationIndicator + LSTM compute what real Caffe's LSTM computes with that cont."""
    fork, bvlc = pair
    result = caffe_results[bvlc.name]
    assert result.error is None and result.blobs is not None, result.error
    prototxt, model = tmp_path / "net.prototxt", tmp_path / "net.caffemodel"
    prototxt.write_text(fork.text)
    assert fork.blobs is not None
    write_caffemodel(model, "t", [(n, "", b) for n, b in fork.blobs.items()])
    ours = protocaffe_blobs(prototxt, model, fork.inputs)
    assert_blobs_match(bvlc, ours, {"y": result.blobs["y"]})
    reference = ReferenceNet(read_prototxt_text(fork.text, str(prototxt), Reporter()), fork.blobs)
    theirs = reference.forward(fork.inputs)
    assert_blobs_match(bvlc, {"y": theirs["y"]}, {"y": result.blobs["y"]})


@pytest.mark.parametrize("case", TRANSCRIBED, ids=[c.name for c in TRANSCRIBED])
def test_module_matches_transcription(case: Case, tmp_path: Path) -> None:
    """Types the oracle lacks, against the reference's transcription of their C++:
    BVLC master's clip_layer.cpp and swish_layer.cpp, the forks' lstm_layer.cu,
    crnn.caffe's continuation_indicator_layer.cpp."""
    prototxt, model = tmp_path / "net.prototxt", tmp_path / "net.caffemodel"
    prototxt.write_text(case.text)
    if case.blobs is not None:
        write_caffemodel(model, "t", [(n, "", b) for n, b in case.blobs.items()])
    else:
        random_weights(prototxt, model, seed=case.seed)
    ours = protocaffe_blobs(prototxt, model, case.inputs)
    net = read_prototxt_text(case.text, str(prototxt), Reporter())
    theirs = ReferenceNet(net, read_caffemodel(model)).forward(case.inputs)
    assert_blobs_match(case, ours, {k: theirs[k] for k in ours})


@needs_oracle
def test_memory_and_dummy_data_shapes_are_caffes(tmp_path: Path) -> None:
    """MemoryData and DummyData (legacy and shape spellings, several tops) size the module's
    inputs as Caffe sizes their tops (real Caffe cannot run MemoryData without a Reset: its
    net's blob shapes are compared)."""
    text = (
        'name: "t"\n'
        + layer(
            "mem",
            "MemoryData",
            [],
            ["data", "label"],
            params="memory_data_param { batch_size: 3 channels: 2 height: 5 width: 7 }",
        )
        + layer(
            "dummy",
            "DummyData",
            [],
            ["a", "b"],
            params="dummy_data_param { num: 2 num: 4 channels: 3 height: 1 width: 5 }",
        )
        + layer("sum", "Eltwise", ["a", "a"])
        + layer("flat", "Flatten", "b")
        + layer("out", "TanH", "data")
        + layer("both", "Concat", ["label", "label"], params="concat_param { axis: 0 }")
    )
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(text)
    info = subprocess.run(
        [str(ORACLE / "run-oracle.sh"), "info", str(prototxt)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    shapes = json.loads(info.stdout)["shapes"]
    conversion = convert(prototxt)
    ours = {v.blob: list(v.shape) for v in conversion.graph.inputs}
    assert ours == {name: shapes[name] for name in ("data", "label", "a", "b")}


def test_unread_data_layer_tops_are_left_out(tmp_path: Path) -> None:
    """A data layer's top that no layer computes with (a label only a loss reads) is no input
    of the module: it is left out with a note, as the training-only layers are."""
    text = (
        'name: "t"\n'
        + layer(
            "mem",
            "MemoryData",
            [],
            ["data", "label"],
            params="memory_data_param { batch_size: 1 channels: 2 height: 3 width: 3 }",
        )
        + layer("out", "TanH", "data")
        + layer("loss", "SoftmaxWithLoss", ["out", "label"])
    )
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(text)
    reporter = Reporter()
    conversion = convert(prototxt, reporter=reporter)
    assert [v.blob for v in conversion.graph.inputs] == ["data"]
    assert any("'label' is read by no layer" in str(d) for d in reporter.diagnostics)
