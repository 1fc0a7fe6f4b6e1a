"""Snapshots of the text-format and input diagnostics: the exact stderr a user sees.

Each expected text was checked by hand against its input file: a change to one of these
messages should be a visible, reviewed diff. Set up in-process (`main`), as the command line
runs; tests/test_errors.py runs the same kind of cases through a real subprocess.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from protocaffe.cli import EXIT_ERROR, EXIT_OK, main
from protocaffe.frontend.caffemodel import read_caffemodel
from protocaffe.random_weights import random_weights

ORACLE = Path("/opt/caffe-oracle/run-oracle.sh")

HEAD = 'name: "x"\ninput: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'

# A missing '}' (convolution_param's, line 9) in an indented file: without the indentation
# rule it read the rest of the file as unknown fields of the layer and failed at the end.
MISSING_BRACE = HEAD + (
    "layer {\n"  # 4
    '  name: "conv"\n'
    '  type: "Convolution"\n'
    '  bottom: "data"\n'
    '  top: "conv"\n'
    "  convolution_param {\n"  # 9: the '{' never closed
    "    num_output: 4\n"
    "    kernel_size: 3\n"
    "}\n"  # 12: lined up with `layer {`: the '}' before it is missing
    "layer {\n"
    '  name: "relu"\n'
    '  type: "ReLU"\n'
    '  bottom: "conv"\n'
    '  top: "conv"\n'
    "}\n"
)


def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """`protocaffe *args` in `tmp_path`: the exit status and stderr."""
    capsys.readouterr()
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.err


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def convert(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> tuple[int, str]:
    (tmp_path / "net.prototxt").write_text(text, encoding="utf-8")
    return run(tmp_path, capsys, "convert", "net.prototxt", "-o", "out")


def test_a_missing_brace_is_blamed_where_the_indentation_says_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = convert(tmp_path, capsys, MISSING_BRACE)
    assert status == EXIT_ERROR
    assert err == (
        "net.prototxt:12:1: syntax error: '{' at 9:21 is never closed: a '}' is missing before "
        "this line (its indentation closes that block)\n"
    )
    assert not (tmp_path / "out").exists()


def test_a_missing_layer_brace_is_blamed_on_the_next_layer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = MISSING_BRACE.replace("    kernel_size: 3\n}\n", "    kernel_size: 3\n  }\n")
    text = text.replace("  }\nlayer {", "  }\n\nlayer {")  # the layer's own '}' is missing
    status, err = convert(tmp_path, capsys, text)
    assert status == EXIT_ERROR
    assert err == (
        "net.prototxt:14:1: syntax error: '{' at 4:7 is never closed: a '}' is missing before "
        "this line (its indentation closes that block)\n"
    )


def test_an_unindented_file_keeps_the_error_at_its_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Where the indentation says nothing, no guess: the '{' still open at the end."""
    flat = "\n".join(line.strip() for line in MISSING_BRACE.splitlines()) + "\n"
    status, err = convert(tmp_path, capsys, flat)
    assert status == EXIT_ERROR
    assert err == "net.prototxt:19:1: syntax error: '{' at 4:7 is never closed\n"


def test_no_warning_comes_before_a_syntax_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = HEAD + (
        'layer { name: "r" type: "ReLU" bottom: "data" top: "r" frobnicate: 3 }\n'
        'layer { name: "s" type: "ReLU" bottom: "r" top: "s" } @\n'
    )
    status, err = convert(tmp_path, capsys, text)
    assert status == EXIT_ERROR
    assert err == "net.prototxt:5:55: syntax error: unexpected character '@'\n"


def test_unknown_fields_suggest_the_field_meant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = HEAD + (
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"\n'
        "  convolution_param { num_ouput: 4 kernel_size: 3 } }\n"
    )
    status, err = convert(tmp_path, capsys, text)
    assert status == EXIT_ERROR
    assert err == (
        "net.prototxt:5:23: warning: unknown field 'num_ouput' in ConvolutionParameter; "
        "ignored (did you mean 'num_output'?)\n"
        'net.prototxt:4: layer "conv" (Convolution): convolution_param.num_output is required\n'
    )


def test_unknown_layer_types_suggest_the_type_meant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = HEAD + (
        'layer { name: "a" type: "ConvolutionDepthwize" bottom: "data" top: "a" }\n'
        'layer { name: "b" type: "Relu" bottom: "a" top: "b" }\n'
        'layer { name: "c" type: "Convolutoin" bottom: "b" top: "c" }\n'
        'layer { name: "d" type: "Frobnicate" bottom: "c" top: "d" }\n'
    )
    status, err = convert(tmp_path, capsys, text)
    assert status == EXIT_ERROR
    readme = "see 'Custom layers' in the protocaffe README to add it"
    assert err == (
        'net.prototxt:4: layer "a" (ConvolutionDepthwize): unknown layer type '
        f"'ConvolutionDepthwize' (did you mean 'ConvolutionDepthwise'?); {readme}\n"
        "net.prototxt:5: layer \"b\" (Relu): unknown layer type 'Relu' (did you mean 'ReLU'?); "
        f"{readme}\n"
        "net.prototxt:6: layer \"c\" (Convolutoin): unknown layer type 'Convolutoin' (did you "
        f"mean 'Convolution'?); {readme}\n"
        f"net.prototxt:7: layer \"d\" (Frobnicate): unknown layer type 'Frobnicate'; {readme}\n"
    )


def test_a_byte_order_mark_is_not_part_of_the_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = "\ufeff" + 'name: "x" frobnicate: 1\n' + HEAD.split("\n", 1)[1]
    text += 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n'
    status, err = convert(tmp_path, capsys, text)
    assert status == EXIT_OK
    assert err == (
        "net.prototxt:1:11: warning: unknown field 'frobnicate' in NetParameter; ignored\n"
        "out: wrote model.py: class X, 0 parameters, no weights\n"
    )


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        (
            'name "r"',
            "net.prototxt:4:14: syntax error: expected ':' after 'name', found '\"r\"' (only a "
            "'{' may follow a field name directly)\n",
        ),
        (
            'name: "r" frobnicate 3',
            "net.prototxt:4:30: syntax error: expected ':' after 'frobnicate', found '3' (only "
            "a '{' may follow a field name directly)\n",
        ),
    ],
    ids=["known", "unknown"],
)
def test_a_scalar_needs_its_colon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, expected: str
) -> None:
    """protobuf's text format (so Caffe) lets the colon be left out only before a message's
    '{': `name "r"` is a syntax error, `input_shape { ... }` is fine."""
    text = HEAD + f'layer {{ {field} type: "ReLU" bottom: "data" top: "r" }}\n'
    status, err = convert(tmp_path, capsys, text)
    assert status == EXIT_ERROR
    assert err == expected


def test_a_message_may_leave_out_its_colon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = HEAD.replace("input_shape {", "input_shape: {") + (
        'layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param '
        "{ kernel_size: 2 stride: 2 } }\n"
    )
    status, err = convert(tmp_path, capsys, text)
    assert (status, err) == (EXIT_OK, "out: wrote model.py: class X, 0 parameters, no weights\n")


CONV_FC = HEAD + (
    'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"\n'
    "  convolution_param { num_output: 4 kernel_size: 3 } }\n"
    'layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc"\n'
    "  inner_product_param { num_output: 2 } }\n"
)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        (
            (1, 3, 10, 10),
            "protocaffe verify: x.npy: input 'data' has shape (1, 3, 10, 10), which the net "
            'cannot take (it declares (1, 3, 8, 8)): net.prototxt:6: layer "fc" '
            "(InnerProduct): blob 0 has shape (2, 144) in w.caffemodel, but this layer needs "
            "(2, 256)\n",
        ),
        (
            (1, 3, 2, 2),
            "protocaffe verify: x.npy: input 'data' has shape (1, 3, 2, 2), which the net "
            'cannot take (it declares (1, 3, 8, 8)): net.prototxt:4: layer "conv" '
            "(Convolution): the output would be (0, 0): kernel (3, 3) (dilation (1, 1), "
            "stride (1, 1), pad (0, 0)) leaves no output for the input (2, 2)\n",
        ),
        (
            (1, 4, 8, 8),
            "protocaffe verify: x.npy: input 'data' has shape (1, 4, 8, 8), the net declares "
            "(1, 3, 8, 8)\n",
        ),
    ],
    ids=["other-size", "too-small", "other-channels"],
)
def test_an_input_of_the_wrong_shape_is_blamed_on_its_file(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    shape: tuple[int, ...],
    expected: str,
) -> None:
    pytest.importorskip("torch")
    (tmp_path / "net.prototxt").write_text(CONV_FC)
    random_weights(tmp_path / "net.prototxt", tmp_path / "w.caffemodel", seed=0)
    np.save(tmp_path / "x.npy", np.zeros(shape, np.float32))
    args = ("verify", "net.prototxt", "w.caffemodel", "--input", "data=x.npy", "-q")
    assert run(tmp_path, capsys, *args) == (EXIT_ERROR, expected)


def test_random_weights_of_a_nameless_net_without_parameters_can_be_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The file is not empty (an empty file reads as a truncated one): protocaffe reads it,
    and so does real Caffe."""
    text = 'input: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
    text += 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n'
    (tmp_path / "net.prototxt").write_text(text)
    assert run(tmp_path, capsys, "random-weights", "net.prototxt", "-o", "w.caffemodel") == (
        EXIT_OK,
        "",
    )
    assert (tmp_path / "w.caffemodel").stat().st_size > 0
    model = read_caffemodel(tmp_path / "w.caffemodel")
    assert (model.net_name, model.layers) == ("", ())
    status, err = run(tmp_path, capsys, "convert", "net.prototxt", "w.caffemodel", "-o", "out")
    assert (status, err.splitlines()[-1].split(": wrote ")[0]) == (EXIT_OK, "out")
    if not ORACLE.exists():
        pytest.skip("real Caffe (the oracle) is not built")
    done = subprocess.run(
        [str(ORACLE), "run", "net.prototxt", "--weights", "w.caffemodel", "--random-input", "0"]
        + ["--out", str(tmp_path / "caffe")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
