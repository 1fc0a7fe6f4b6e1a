"""--optimize: BatchNorm/Scale folding on dataflow, pass-through removal, unchanged numbers.

References are OpenCV's Caffe importer on the original prototxt and caffemodel (not our own
unoptimised output), and a numpy recomputation of the fold for the weight mapping.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from review_support import FIXTURES, corpus_prototxt, opencv_forward

from protocaffe.api import convert, module_from_source
from protocaffe.errors import Reporter
from protocaffe.frontend.lower import build_graph
from protocaffe.frontend.prototxt import read_prototxt
from protocaffe.passes import DEFAULT_PIPELINE, OPTIMIZE_PIPELINE, run_pipeline
from protocaffe.random_weights import random_weights

FOLD = FIXTURES / "fold.prototxt"


def _run(prototxt: Path, caffemodel: Path, optimize: bool) -> tuple[np.ndarray, np.ndarray, str]:
    conversion = convert(
        prototxt, caffemodel, passes=OPTIMIZE_PIPELINE if optimize else DEFAULT_PIPELINE
    )
    module = module_from_source(conversion.source, conversion.class_name).eval()
    assert conversion.state_dict is not None
    module.load_state_dict(conversion.state_dict, strict=True)
    shape = conversion.graph.inputs[0].shape
    x = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    with torch.no_grad():
        y = module(torch.from_numpy(x)).numpy()
    return x, y, conversion.source


def test_folds_follow_dataflow_not_file_order() -> None:
    graph = convert(FOLD, passes=OPTIMIZE_PIPELINE).graph
    by_name = {node.name: node for node in graph.nodes}
    folded = {name: [n.name for n in node.fused] for name, node in by_name.items() if node.fused}
    # bn_a comes after conv_b and bn_b in the file; its producer conv_a is still found.
    assert folded == {
        "conv_a": ["conv_a", "bn_a", "scale_a"],
        "conv_b": ["conv_b", "bn_b", "scale_b"],
        "fc": ["fc", "fc_bn", "fc_scale"],
    }
    # conv_c feeds bn_c and side: folding would change what side sees.
    assert "bn_c" in by_name and not by_name["conv_c"].fused
    # Dropout and the one-bottom Concat are gone; the two-bottom Concat stays.
    assert {"drop", "only"}.isdisjoint(by_name) and "merge" in by_name
    assert by_name["conv_b"].params == ("weight", "bias")


def test_optimized_module_reads_as_its_caffe_layers(tmp_path: Path) -> None:
    source = convert(FOLD, passes=OPTIMIZE_PIPELINE).source
    assert "# 'conv_a' Convolution + 'bn_a' BatchNorm + 'scale_a' Scale" in source
    assert "self.bn_c = CaffeBatchNorm(" in source  # bn_c stays
    assert "Dropout" not in source and "nn.Linear(150, 5)" in source


def test_folded_weights_match_a_numpy_recomputation(tmp_path: Path) -> None:
    weights = tmp_path / "fold.caffemodel"
    random_weights(FOLD, weights, seed=3)
    plain = convert(FOLD, weights).arrays
    folded = convert(FOLD, weights, passes=OPTIMIZE_PIPELINE).arrays
    assert plain is not None and folded is not None
    w, b = plain["conv_a.weight"], plain["conv_a.bias"]
    mean, var = plain["bn_a.running_mean"], plain["bn_a.running_var"]
    gamma, beta = plain["scale_a.weight"], plain["scale_a.bias"]
    a = gamma / np.sqrt(var + np.float32(0.001))
    np.testing.assert_allclose(folded["conv_a.weight"], w * a[:, None, None, None], rtol=1e-6)
    np.testing.assert_allclose(folded["conv_a.bias"], (b - mean) * a + beta, rtol=1e-5, atol=1e-6)
    assert not any(key.startswith(("bn_a.", "scale_a.", "fc_bn.")) for key in folded)


def test_folding_keeps_opencv_numbers(tmp_path: Path) -> None:
    weights = tmp_path / "fold.caffemodel"
    random_weights(FOLD, weights, seed=5)
    x, y, _ = _run(FOLD, weights, optimize=True)
    reference = opencv_forward(FOLD, weights, {"data": x})
    np.testing.assert_allclose(y, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())


@pytest.mark.parametrize("net", ["resnet-50", "mobilenet-v2"])
def test_optimized_corpus_nets_match_opencv(net: str, tmp_path: Path) -> None:
    prototxt = corpus_prototxt(net)
    if not prototxt.is_file():
        pytest.skip(f"shared corpus not found ({prototxt})")
    weights = tmp_path / "w.caffemodel"
    random_weights(prototxt, weights, seed=11)
    x, y, source = _run(prototxt, weights, optimize=True)
    assert "nn.BatchNorm2d" not in source and "Scale(" not in source
    reference = opencv_forward(prototxt, weights, {"data": x})
    error = np.abs(y - reference).max() / np.abs(reference).max()
    assert error < 1e-4, error


def test_optimize_pipeline_is_verified_after_each_pass() -> None:
    graph = build_graph(read_prototxt(FOLD, Reporter()), Reporter())
    seen: list[str] = []
    run_pipeline(graph, OPTIMIZE_PIPELINE, dump=lambda name, _: seen.append(name))
    assert seen == [
        "remove_identities",
        "link_unpool_sizes",
        "remove_noops",
        "fold_batchnorm_scale",
    ]
