"""A catalogue of named bad inputs, each with a snapshot of the diagnostic protocaffe prints.

The fixtures live in tests/fixtures/bad/. Paths in the snapshots are shown relative to that
folder (or to examples/tinynet), as a user who runs protocaffe there would see them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from protocaffe.api import convert
from protocaffe.errors import ProtocaffeError

REPO = Path(__file__).resolve().parents[1]
BAD = REPO / "tests" / "fixtures" / "bad"
TINY = REPO / "examples" / "tinynet"

# fixture -> the diagnostic, exactly.
SNAPSHOTS = {
    # Layer "conv" (line 4) lacks its '}': the next `layer {`, at the same indentation, shows
    # where it belongs.
    "syntax_error.prototxt": "syntax_error.prototxt:6:1: syntax error: '{' at 4:7 is never "
    "closed: a '}' is missing before this line (its indentation closes that block)",
    "syntax_error_char.prototxt": (
        "syntax_error_char.prototxt:4:62: syntax error: unexpected character '='"
    ),
    "unknown_enum.prototxt": (
        "unknown_enum.prototxt:5:25: unknown value 'MAXIMUM' for 'pool' "
        "(expected one of: MAX, AVE, STOCHASTIC)"
    ),
    "zero_dim.prototxt": (
        'zero_dim.prototxt:2: layer "data" (Input): input "data" has a non-positive '
        "dimension: (1, 0, 6, 6)"
    ),
    "negative_dim.prototxt": (
        'negative_dim.prototxt:2:1: input "data" has a non-positive dimension: (1, 3, -6, 6)'
    ),
    "zero_num_output.prototxt": (
        "zero_num_output.prototxt:4: layer \"fc\" (InnerProduct): top 'fc' would have shape "
        "(1, 0): every dimension must be positive"
    ),
    "group_not_dividing.prototxt": (
        'group_not_dividing.prototxt:4: layer "conv" (Convolution): Caffe aborts here: input '
        "channels 4 % group 3 != 0"
    ),
    "kernel_too_large.prototxt": (
        'kernel_too_large.prototxt:4: layer "conv" (Convolution): the output would be (0, 0): '
        "kernel (9, 9) (dilation (1, 1), stride (1, 1), pad (1, 1)) leaves no output for the "
        "input (6, 6)"
    ),
    "pool_kernel_too_large.prototxt": (
        'pool_kernel_too_large.prototxt:4: layer "pool" (Pooling): kernel (9, 9) is larger '
        "than the padded input 8x8"
    ),
    "concat_mismatch.prototxt": (
        "concat_mismatch.prototxt:6: layer \"concat\" (Concat): bottom 1 'pool' has shape "
        "(1, 4, 3, 3), which does not match bottom 0 (1, 4, 6, 6) outside axis 1"
    ),
    "slice_out_of_range.prototxt": (
        'slice_out_of_range.prototxt:4: layer "slice" (Slice): slice points [5] must increase '
        "strictly inside (0, 4) on axis 1"
    ),
    "empty.prototxt": "empty.prototxt: empty file: no layers",
    "comment_only.prototxt": "comment_only.prototxt: the net declares no input",
    "non_utf8.prototxt": "non_utf8.prototxt:2: not UTF-8 text at byte 17",
}


def diagnostic(prototxt: Path, caffemodel: Path | None = None) -> str:
    """What protocaffe reports for the pair, run from the folder that holds them."""
    cwd = os.getcwd()
    os.chdir(prototxt.parent)
    try:
        convert(
            os.path.relpath(prototxt),
            os.path.relpath(caffemodel) if caffemodel else None,
        )
    except ProtocaffeError as exc:
        return str(exc)
    finally:
        os.chdir(cwd)
    raise AssertionError(f"{prototxt.name} converted without an error")


@pytest.mark.parametrize("name", sorted(SNAPSHOTS))
def test_bad_prototxt(name: str) -> None:
    assert diagnostic(BAD / name) == SNAPSHOTS[name]


def test_prototxt_given_as_caffemodel() -> None:
    assert diagnostic(TINY / "deploy.prototxt", TINY / "deploy.prototxt") == (
        "deploy.prototxt: byte 0: not a binary caffemodel (looks like a text prototxt)"
    )


def test_caffemodel_given_as_prototxt() -> None:
    assert diagnostic(TINY / "tinynet.caffemodel") == (
        "tinynet.caffemodel:2: not UTF-8 text at byte 9 (is this a binary .caffemodel?)"
    )


def test_empty_caffemodel() -> None:
    assert diagnostic(TINY / "deploy.prototxt", BAD / "empty.prototxt") == (
        "../../tests/fixtures/bad/empty.prototxt: byte 0: empty file"
    )


def test_cli_prints_the_snapshot_and_exits_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "protocaffe", "convert", "unknown_enum.prototxt", "-o", tmp_path],
        cwd=BAD,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr == SNAPSHOTS["unknown_enum.prototxt"] + "\n"
    assert list(tmp_path.iterdir()) == []


def chain(layers: int) -> str:
    """A net of `layers` layers: in-place ReLUs, Sigmoids and Eltwise sums in a chain."""
    lines = ['name: "long"', 'input: "data"', "input_shape { dim: 1 dim: 2 dim: 4 dim: 4 }"]
    prev = "data"
    for i in range(layers):
        if i % 3 == 0 and prev != "data":
            lines.append(f'layer {{ name: "r{i}" type: "ReLU" bottom: "{prev}" top: "{prev}" }}')
        elif i % 3 == 1:
            lines.append(f'layer {{ name: "s{i}" type: "Sigmoid" bottom: "{prev}" top: "b{i}" }}')
            prev = f"b{i}"
        else:
            lines.append(
                f'layer {{ name: "e{i}" type: "Eltwise" bottom: "{prev}" bottom: "{prev}" '
                f'top: "c{i}" }}'
            )
            prev = f"c{i}"
    return "\n".join(lines) + "\n"


def test_ten_thousand_layers_convert_in_linear_time(tmp_path: Path) -> None:
    """A 10,000-layer net converts, and costs about 4x a 2,500-layer one (quadratic: 16x).

    The bound is loose (10x; black alone measures about 5.7x): it tells linear from quadratic
    (16x), not fast from slow."""
    costs = {}
    for layers in (2_500, 10_000):
        path = tmp_path / f"long{layers}.prototxt"
        path.write_text(chain(layers))
        start = time.process_time()
        conversion = convert(path)
        costs[layers] = time.process_time() - start
        assert len(conversion.graph.nodes) == layers
    assert costs[10_000] < 10 * costs[2_500], costs
