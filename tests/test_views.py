"""`protocaffe inspect` and `protocaffe graph`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from review_support import FIXTURES, corpus_prototxt

from protocaffe import api
from protocaffe.backend.emit import local_names
from protocaffe.cli import EXIT_ERROR, EXIT_OK, main
from protocaffe.views.dot import graph_dot
from protocaffe.views.table import layer_table

FOLD = FIXTURES / "fold.prototxt"
TINYNET = Path(__file__).resolve().parents[1] / "examples" / "tinynet" / "deploy.prototxt"


def _inspect_json(prototxt: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert main(["inspect", str(prototxt), "--json", "-q"]) == EXIT_OK
    data: dict[str, object] = json.loads(capsys.readouterr().out)
    return data


def test_inspect_rows_count_by_hand(capsys: pytest.CaptureFixture[str]) -> None:
    data = _inspect_json(FOLD, capsys)
    rows = {row["name"]: row for row in data["layers"]}  # type: ignore[attr-defined]
    # conv_c: 6 outputs of 8/2 * 3 * 3 weights + 6 biases; 2*6*5*5 outputs, 36 products each.
    assert rows["conv_c"]["params"] == 6 * 4 * 9 + 6
    assert rows["conv_c"]["mult_adds"] == 2 * 6 * 5 * 5 * 36
    assert rows["conv_c"]["output_shapes"] == [[2, 6, 5, 5]]
    # fc: 150 -> 5 with bias; BatchNorm: mean, variance, factor.
    assert rows["fc"]["params"] == 150 * 5 + 5 and rows["fc"]["mult_adds"] == 2 * 5 * 150
    assert rows["fc_bn"]["params"] == 5 + 5 + 1
    # Inputs are named as model.py's locals, in bottom order ("drop": Dropout in place on scale_b).
    assert rows["merge"]["inputs"] == ["drop", "relu_a"]
    assert rows["sum"]["inputs"] == ["bn_c", "side"]
    totals = data["totals"]
    assert totals == {  # type: ignore[comparison-overlap]
        "params": sum(r["params"] for r in rows.values()),
        "mult_adds": sum(r["mult_adds"] for r in rows.values()),
    }


@pytest.mark.parametrize(
    ("net", "params", "mult_adds"),
    [
        # Published counts: VGG-16 has 138,357,544 parameters and 15.47 G multiply-adds
        # (Simonyan & Zisserman; netscope); the grouped Caffe AlexNet 60,965,224 parameters.
        ("vgg16", 138_357_544, 15_470_264_320),
        ("bvlc-alexnet", 60_965_224, None),
    ],
)
def test_inspect_totals_match_published_counts(
    net: str, params: int, mult_adds: int | None, capsys: pytest.CaptureFixture[str]
) -> None:
    prototxt = corpus_prototxt(net)
    if not prototxt.is_file():
        pytest.skip(f"shared corpus not found ({prototxt})")
    table = layer_table(
        prototxt, {"data": (1, 3, 224, 224) if net == "vgg16" else (1, 3, 227, 227)}
    )
    assert table.params == params
    if mult_adds is not None:
        assert table.mult_adds == mult_adds


DEPTHWISE = """input: "x"
input_shape { dim: 1 dim: 6 dim: 9 dim: 9 }
layer { name: "dw" type: "ConvolutionDepthwise" bottom: "x" top: "dw"
  convolution_param { num_output: 6 kernel_size: 3 stride: 2 pad: 1 } }
"""


def test_inspect_counts_a_depthwise_convolution_per_channel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Output channel c reads input channel c alone: 6 x 5 x 5 outputs, 3 x 3 products each
    (not 6 x 3 x 3, as if every output read every input channel)."""
    net = tmp_path / "dw.prototxt"
    net.write_text(DEPTHWISE)
    (row,) = _inspect_json(net, capsys)["layers"]  # type: ignore[misc]
    assert row["output_shapes"] == [[1, 6, 5, 5]]
    assert row["params"] == 6 * 1 * 3 * 3 + 6
    assert row["mult_adds"] == 6 * 5 * 5 * 3 * 3
    graph = api.compile(net)
    assert '"#cfe2f3"' in graph_dot(graph, local_names(graph))  # drawn as a convolution


def test_inspect_text_has_a_row_per_layer_and_totals(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(FOLD), "-q"]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "net 'FoldCases': inputs data (2, 3, 12, 12)"
    assert re.split(r"\s{2,}", lines[1]) == [
        "layer",
        "type",
        "inputs",
        "output shape",
        "params",
        "mult-adds",
    ]
    assert lines[-1].split()[:4] == ["total", "18", "layers", "1,165"]
    assert sum(1 for line in lines if line.startswith("conv_c ")) == 1


def _dot(prototxt: Path, optimize: bool = False) -> str:
    from protocaffe.api import convert
    from protocaffe.passes import DEFAULT_PIPELINE, OPTIMIZE_PIPELINE

    conversion = convert(prototxt, passes=OPTIMIZE_PIPELINE if optimize else DEFAULT_PIPELINE)
    return graph_dot(conversion.graph, conversion.emitted.locals)


def test_graph_numbers_the_inputs_of_multi_input_layers() -> None:
    text = _dot(TINYNET)
    # TinyNet's concat takes branch_b before branch_a; the Eltwise takes concat, then shortcut.
    assert re.search(r'-> (layer\d+) \[label="\[0\] branch_b"\];', text)
    assert re.search(r'-> (layer\d+) \[label="\[1\] branch_a"\];', text)
    assert '[label="[0] concat"]' in text and '[label="[1] shortcut"]' in text
    # A single-input layer gets the plain value name.
    assert '[label="pool1"]' in text


def test_graph_draws_in_place_chains_as_ssa_values() -> None:
    text = _dot(TINYNET)
    # conv1 -> conv1/bn -> conv1/scale -> relu1 all write blob "conv1"; each edge is the local
    # that model.py gives that version.
    for name in ("conv1", "conv1_bn", "conv1_scale", "relu1"):
        assert f'[label="{name}"]' in text, name
    # Node labels carry output shapes.
    assert "(1, 3, 32, 32)" in text or re.search(r"\(\d+(, \d+)+\)", text)


def test_graph_of_the_optimized_net_shows_folded_layers() -> None:
    text = _dot(FOLD, optimize=True)
    assert '"conv_a\\nbn_a\\nscale_a\\nConvolution + BatchNorm + Scale\\n(2, 4, 12, 12)"' in text


def test_graph_labels_cannot_break_out_of_dot_strings(tmp_path: Path) -> None:
    nasty = tmp_path / "nasty.prototxt"
    nasty.write_text(
        'name: "n\\"] ; evil [x"\ninput: "data"\ninput_shape { dim: 1 dim: 2 }\n'
        'layer { name: "a\\\\l\\"}\\n" type: "ReLU" bottom: "data" top: "out" }\n'
    )
    text = _dot(nasty)
    for line in text.splitlines()[1:-1]:
        # Every quote inside a label is escaped: unescaped quotes come in pairs per attribute.
        unescaped = re.sub(r"\\\\|\\\"", "", line).count('"')
        assert unescaped % 2 == 0, line
    assert "evil [x" in text and "\\\\l" in text


def test_graph_writes_dot_without_graphviz(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["graph", str(TINYNET), "-o", str(tmp_path / "net.dot")]) == EXIT_OK
    assert (tmp_path / "net.dot").read_text().startswith('digraph "TinyNet" {')
    assert main(["graph", str(TINYNET), "-o", str(tmp_path / "net.svg")]) == EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Graphviz 'dot' is not on PATH" in err[0] and ".dot" in err[0]
    assert not (tmp_path / "net.svg").exists()


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot is not installed")
def test_graph_renders_svg_with_graphviz(tmp_path: Path) -> None:
    out = tmp_path / "net.svg"
    assert main(["graph", str(TINYNET), "-o", str(out), "-q"]) == EXIT_OK
    svg = out.read_text()
    assert "<svg" in svg and "[0] branch_b" in svg


def test_graph_dot_is_deterministic() -> None:
    assert _dot(FOLD) == _dot(FOLD)
