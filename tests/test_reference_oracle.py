"""The numpy reference (protocaffe.verify.reference) agrees with real Caffe, layer type by layer
type: seeded random parameters in every spelling Caffe reads, odd sizes, in-place variants,
and nets Caffe refuses (the reference must refuse them too). Every blob of every net is
compared, with weights that real Caffe drew and saved, so the reference also reads
caffemodels written by Caffe itself.

Skipped unless the real-Caffe oracle is installed (../shared/oracle/build.sh builds it into
/opt/caffe-oracle). PROTOCAFFE_REFERENCE_CASES sets the number of nets per type (default 12;
the deep local run uses a few hundred).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from oracle_runner import Case, check_case, layer, net_text, oracle_available, run_in_caffe
from reference_cases import CASES, generate

pytestmark = pytest.mark.skipif(
    not oracle_available(), reason="no real-Caffe oracle (/opt/caffe-oracle)"
)

PER_TYPE = int(os.environ.get("PROTOCAFFE_REFERENCE_CASES", "12"))


def _memory_cases() -> list[Case]:
    """Issue 13, cause 5: layers whose top shares its bottom's memory in Caffe, followed by an
    in-place layer on that top and a later reader of the bottom."""
    x = np.random.default_rng(5).normal(size=(2, 3, 4, 5)).astype(np.float32)
    shape = {"data": (2, 3, 4, 5)}
    share = {
        "reshape": layer(
            "flat", "Reshape", "data", params="reshape_param { shape { dim: 0 dim: -1 } }"
        ),
        "flatten": layer("flat", "Flatten", "data"),
        "split": layer("flat", "Split", "data", ["flat", "other"]),
        "concat1": layer("flat", "Concat", "data"),
        "slice1": layer("flat", "Slice", "data", ["flat"]),
        "permute_identity": layer(
            "flat", "Permute", "data", params="permute_param { order: 0 order: 1 }"
        ),
        "permute_real": layer(
            "flat",
            "Permute",
            "data",
            params="permute_param { order: 0 order: 2 order: 1 order: 3 }",
        ),
        "dropout": layer("flat", "Dropout", "data"),
    }
    cases = []
    for name, first in share.items():
        text = net_text(
            shape,
            first + layer("relu", "ReLU", "flat", "flat") + layer("tanh", "TanH", "data"),
        )
        cases.append(Case(f"memory-{name}", text, {"data": x}))
    # A chain: Reshape -> Flatten -> in-place Scale on the last view changes all three.
    chain = net_text(
        shape,
        layer("r", "Reshape", "data", params="reshape_param { shape { dim: 0 dim: 3 dim: -1 } }")
        + layer("f", "Flatten", "r")
        + layer("s", "Power", "f", "f", params="power_param { scale: 2 shift: 1 }")
        + layer("t", "AbsVal", "data")
        + layer("u", "Sigmoid", "r"),
    )
    cases.append(Case("memory-chain", chain, {"data": x}))
    # In place on an input blob, read again later.
    cases.append(
        Case(
            "memory-input-in-place",
            net_text(shape, layer("relu", "ReLU", "data", "data") + layer("t", "TanH", "data")),
            {"data": x},
        )
    )
    return cases


def _refused_cases() -> list[Case]:
    """Nets real Caffe refuses (issue 13, cause 8, and Net::Init's blob rules)."""
    x = np.random.default_rng(6).normal(size=(1, 2, 5, 5)).astype(np.float32)
    shape = {"data": (1, 2, 5, 5)}
    nets = {
        "pool-kernel-h-only": layer("p", "Pooling", "data", params="pooling_param { kernel_h: 2 }"),
        "pool-global-kernel": layer(
            "p", "Pooling", "data", params="pooling_param { global_pooling: true kernel_size: 2 }"
        ),
        "pool-pad-h-only": layer(
            "p", "Pooling", "data", params="pooling_param { kernel_size: 3 pad_h: 1 }"
        ),
        "conv-pad-and-pad-h": layer(
            "c",
            "Convolution",
            "data",
            params="convolution_param { num_output: 1 kernel_size: 3 pad: 1 pad_h: 1 }",
        ),
        "absval-in-place": layer("a", "AbsVal", "data", "data"),
        "flatten-in-place": layer("a", "Flatten", "data", "data"),
        "reshape-in-place": layer(
            "a", "Reshape", "data", "data", params="reshape_param { shape { dim: 0 dim: -1 } }"
        ),
        "eltwise-prod-coeff": layer(
            "e",
            "Eltwise",
            ["data", "data"],
            params="eltwise_param { operation: PROD coeff: 1 coeff: 2 }",
        ),
        "in-place-after-another-reader": layer("t", "TanH", "data")
        + layer("r", "ReLU", "data", "data"),
        "top-defined-twice": layer("a", "TanH", "data", "x") + layer("b", "ReLU", "data", "x"),
        "prelu-5d": "",
        "lrn-even-size": layer("l", "LRN", "data", params="lrn_param { local_size: 4 }"),
        "slice-uneven": layer(
            "s", "Slice", "data", ["p", "q", "r"], params="slice_param { axis: 2 }"
        ),
    }
    cases = []
    for name, body in nets.items():
        if name == "prelu-5d":
            text = net_text({"data": (1, 2, 3, 2, 2)}, layer("p", "PReLU", "data"))
            cases.append(
                Case(f"refused-{name}", text, {"data": np.ones((1, 2, 3, 2, 2), np.float32)})
            )
            continue
        cases.append(Case(f"refused-{name}", net_text(shape, body), {"data": x}))
    return cases


def _shared_parameter_cases() -> list[Case]:
    """Issue 13, cause 9: layers that name the same `param` share one blob in Caffe. The
    caffemodel holds a different copy for each: Caffe copies them in file order into the one
    shared blob, so every sharer uses the copy of the last one."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(1, 2, 6, 6)).astype(np.float32)
    conv = (
        'layer {{ name: "{n}" type: "Convolution" bottom: "{b}" top: "{n}" '
        'param {{ name: "shared_w" }} param {{ name: "shared_b" }} '
        "convolution_param {{ num_output: 2 kernel_size: 3 pad: 1 }} }}\n"
    )
    text = net_text(
        {"data": x.shape},
        "".join(conv.format(n=f"c{i}", b=b) for i, b in enumerate(["data", "c0", "c1"])),
    )
    copies = {
        f"c{i}": [
            rng.normal(size=(2, 2, 3, 3)).astype(np.float32),
            rng.normal(size=2).astype(np.float32),
        ]
        for i in range(3)
    }
    order = {"c2": copies["c2"], "c0": copies["c0"], "c1": copies["c1"]}  # c1 is copied last
    return [
        Case("shared-params-file-order", text, {"data": x}, blobs=copies),
        Case("shared-params-other-order", text, {"data": x}, blobs=order),
    ]


ORACLE_TYPES = sorted(CASES)
ALL = (
    generate(ORACLE_TYPES, PER_TYPE)
    + _memory_cases()
    + _refused_cases()
    + _shared_parameter_cases()
)


@pytest.fixture(scope="module")
def caffe_results(tmp_path_factory):
    return run_in_caffe(tmp_path_factory.mktemp("reference_oracle"), ALL)


@pytest.mark.parametrize("case", ALL, ids=[c.name for c in ALL])
def test_reference_matches_real_caffe(case: Case, caffe_results) -> None:
    check_case(case, caffe_results[case.name])


def test_refusals_are_refused_by_caffe(caffe_results) -> None:
    """The refused nets above are refused by real Caffe, so their tests prove something."""
    accepted = [c.name for c in _refused_cases() if caffe_results[c.name].error is None]
    assert not accepted, f"real Caffe accepts {accepted}"


def test_memory_nets_show_sharing(caffe_results) -> None:
    """The sharing nets do what issue 13 says: Caffe's TanH reads the rectified values."""
    result = caffe_results["memory-reshape"]
    assert result.blobs is not None
    np.testing.assert_allclose(
        result.blobs["tanh"], np.tanh(np.maximum(result.blobs["data"], 0)), rtol=1e-6
    )
    assert (result.blobs["data"] >= 0).all()


def test_shared_parameters_follow_the_last_copy(caffe_results) -> None:
    """The shared-parameter nets do what issue 13 says: all three convolutions use one copy."""
    a, b = caffe_results["shared-params-file-order"], caffe_results["shared-params-other-order"]
    assert a.blobs is not None and b.blobs is not None
    assert not np.allclose(a.blobs["c2"], b.blobs["c2"])  # the copy that wins differs
