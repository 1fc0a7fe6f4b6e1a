"""Hostile names: whatever strings a prototxt uses as net, layer and blob names, the generated
module parses, binds only allocated identifiers, quotes names only where it may, has no effect
beyond computing, and computes the same numbers as the same net with plain names."""

from __future__ import annotations

import builtins
import io
import keyword
import os
import subprocess
import sys
import textwrap
import tokenize
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile import check_generated, no_side_effects, quote_prototxt
from hypothesis import example, given
from hypothesis import strategies as st

from protocaffe.api import Conversion, convert, module_from_source
from protocaffe.backend.helpers import helper_names
from protocaffe.backend.names import RESERVED, Namespace, sanitize
from protocaffe.errors import ProtocaffeError
from protocaffe.frontend.caffemodel import read_caffemodel
from protocaffe.frontend.caffemodel_writer import write_caffemodel
from protocaffe.random_weights import random_weights

# Layer names (L0..L8) and blob names (IN, B0..B7) of one small net that uses an in-place
# layer, helpers (Scale, caffe_pool), a Concat, an Eltwise, a Slice with two tops and layers
# with weights; outputs B1, B6 and B7.
LAYERS = 9
BLOBS = 9
NET = """\
name: {net}
input: {IN}
input_shape {{ dim: 1 dim: 3 dim: 6 dim: 6 }}
layer {{ name: {L0} type: "Convolution" bottom: {IN} top: {B0}
  convolution_param {{ num_output: 4 kernel_size: 3 pad: 1 }} }}
layer {{ name: {L1} type: "ReLU" bottom: {B0} top: {B0} }}
layer {{ name: {L2} type: "Pooling" bottom: {B0} top: {B1}
  pooling_param {{ pool: AVE kernel_size: 2 stride: 3 }} }}
layer {{ name: {L3} type: "Scale" bottom: {B0} top: {B2} scale_param {{ bias_term: true }} }}
layer {{ name: {L4} type: "Convolution" bottom: {B2} top: {B3}
  convolution_param {{ num_output: 2 kernel_size: 1 }} }}
layer {{ name: {L5} type: "Concat" bottom: {B3} bottom: {B2} top: {B4} }}
layer {{ name: {L6} type: "Eltwise" bottom: {B4} bottom: {B4} top: {B5}
  eltwise_param {{ operation: SUM coeff: 1 coeff: -0.5 }} }}
layer {{ name: {L7} type: "Slice" bottom: {B5} top: {B6} top: {B7}
  slice_param {{ axis: 1 slice_point: 2 }} }}
layer {{ name: {L8} type: "PReLU" bottom: {B7} top: {B7} }}
"""
PLAIN_LAYERS = [f"layer{i}" for i in range(LAYERS)]
PLAIN_BLOBS = ["data"] + [f"blob{i}" for i in range(BLOBS - 1)]

HOSTILE = sorted(
    {
        "",
        " ",
        "_",
        "__",
        "__init__",
        "__class__",
        "__dict__",
        "__import__",
        "_parameters",
        "_modules",
        "_buffers",
        "_version",
        "input",
        "forward",
        "training",
        "eval",
        "state_dict",
        "self",
        "super",
        "torch",
        "nn",
        "F",
        "f",
        "none",
        "None",
        "True",
        "class",
        "import",
        "lambda",
        "match",
        "type",
        "print",
        "exec",
        "Optional",
        "Tensor",
        "math",
        "1x1",
        "0",
        "conv1/bn",
        "a.b-c d",
        '"""',
        "'''",
        '"""; import os; os.system("echo pwned") #',
        "\\",
        "\\'",
        '\\"',
        "x\ny",
        "x\r\ny",
        "\r",
        "\x0c",
        "\x00",
        "\x1b[31m",
        "\u2028",
        "\u2029",
        "\x85",
        "\u202e",
        "\ufeff",
        "é",
        "名前",
        "\U0001d518\U0001d52b",  # mathematical Fraktur letters
        "# comment",
        "{{ x }}",
        "{% raw %}",
        "%s",
        "{0}",
        *helper_names(),
    }
)

any_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)),  # UTF-8 cannot hold lone surrogates
    max_size=12,
)
names = st.one_of(st.sampled_from(HOSTILE), any_text)


def write_net(path: Path, net: str, layers: list[str], blobs: list[str], raw: bool) -> None:
    fields = {"net": quote_prototxt(net, raw)}
    fields |= {f"L{i}": quote_prototxt(n, raw) for i, n in enumerate(layers)}
    fields["IN"] = quote_prototxt(blobs[0], raw)
    fields |= {f"B{i}": quote_prototxt(n, raw) for i, n in enumerate(blobs[1:])}
    path.write_text(NET.format(**fields), encoding="utf-8")


def outputs_by_blob(conversion: Conversion, model: torch.nn.Module, x: torch.Tensor) -> list:
    """The outputs in the order of PLAIN_BLOBS' positions (Caffe sorts outputs by name)."""
    with torch.no_grad():
        result = model(x)
    result = result if isinstance(result, tuple) else (result,)
    return [(v.blob, out) for v, out in zip(conversion.graph.outputs, result, strict=True)]


def convert_and_run(tmp: Path, net: str, layers: list[str], blobs: list[str], raw: bool):
    proto = tmp / "net.prototxt"
    weights = tmp / "net.caffemodel"
    write_net(proto, net, layers, blobs, raw)
    random_weights(proto, weights, seed=1)
    conversion = convert(proto, weights)
    return conversion


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[int, np.ndarray]:
    """The plain-named net's outputs, keyed by blob position."""
    tmp = tmp_path_factory.mktemp("plain")
    conversion = convert_and_run(tmp, "plain", PLAIN_LAYERS, PLAIN_BLOBS, False)
    model = module_from_source(conversion.source, conversion.class_name)
    assert conversion.state_dict is not None
    model.load_state_dict(conversion.state_dict, strict=True)
    model.eval()
    x = torch.linspace(-1, 1, 108).reshape(1, 3, 6, 6)
    return {PLAIN_BLOBS.index(b): out.numpy() for b, out in outputs_by_blob(conversion, model, x)}


def check_names(
    tmp: Path, reference: dict[int, np.ndarray], net: str, layers: list[str], blobs: list[str]
) -> None:
    for raw in (False, True):
        conversion = convert_and_run(tmp, net, layers, blobs, raw)
        check_generated(conversion, [net, *layers, *blobs])
        assert conversion.state_dict is not None
        x = torch.linspace(-1, 1, 108).reshape(1, 3, 6, 6)
        with no_side_effects():
            model = module_from_source(conversion.source, conversion.class_name)
            model.load_state_dict(conversion.state_dict, strict=True)
            model.eval()
            outputs = outputs_by_blob(conversion, model, x)
        got = {blobs.index(b): out.numpy() for b, out in outputs}
        assert got.keys() == reference.keys()
        for position, expected in reference.items():
            np.testing.assert_allclose(got[position], expected, rtol=1e-5, atol=1e-6)


@given(
    net=names,
    layers=st.lists(names, min_size=LAYERS, max_size=LAYERS, unique=True),
    blobs=st.lists(names, min_size=BLOBS, max_size=BLOBS, unique=True),
)
@example(
    net="f",
    layers=["_parameters", "forward", "input", "caffe_pool", "Scale", "self", "", "x\ny", "'''"],
    blobs=["caffe_pool", "training", "__init__", "Bias", "\r", "\x00", "class", "\u2028", '"'],
)
def test_arbitrary_names(
    tmp_path_factory: pytest.TempPathFactory,
    reference: dict[int, np.ndarray],
    net: str,
    layers: list[str],
    blobs: list[str],
) -> None:
    check_names(tmp_path_factory.mktemp("hostile"), reference, net, layers, blobs)


# Names built to break out of each place a name is quoted: a string literal, a comment (with
# every line break Python or an editor knows), a docstring (closing triple quotes, a trailing
# backslash), a Jinja2 template, and an identifier (code after a newline).
BREAKOUT_LAYERS = [
    'x"""\nimport os\nos.system("touch pwned")\n"""',
    "x'''\nimport os\n'''",
    "x\nimport os  #",
    "x\r__import__('os').system('touch pwned')",
    "x\x0c\nimport os",
    "x\u2028import os",
    "x\\",
    "x\\\n",
    "{{ 7 * 7 }}{% for x in y %}",
    "_modules",
    "__class__",
]
BREAKOUT_BLOBS = [
    "data\\",
    '"""',
    "'''",
    "x\nimport os",
    "#",
    "\\N{BULLET}",
    "\\x41",
    "training",
    "F",
]


def test_breakout_names(tmp_path: Path, reference: dict[int, np.ndarray]) -> None:
    net = '"""\ndocstring breakout\\'
    layers = BREAKOUT_LAYERS[:LAYERS]
    check_names(tmp_path, reference, net, layers, BREAKOUT_BLOBS)
    conversion = convert(tmp_path / "net.prototxt")
    code_names = {
        tok.string
        for tok in tokenize.generate_tokens(io.StringIO(conversion.source).readline)
        if tok.type == tokenize.NAME
    }
    assert not code_names & {"os", "system", "__import__", "pwned", "touch"}


def test_breakout_module_runs_cleanly_in_a_fresh_process(tmp_path: Path) -> None:
    """Run the generated module in a fresh interpreter under an audit hook: executing it and
    its forward() imports nothing new, opens no file and starts no process."""
    write_net(tmp_path / "net.prototxt", '"""\\', BREAKOUT_LAYERS[:LAYERS], BREAKOUT_BLOBS, True)
    conversion = convert(tmp_path / "net.prototxt")
    (tmp_path / "model.py").write_text(conversion.source, encoding="utf-8")
    script = textwrap.dedent(f"""
        import sys, types
        import torch, torch.nn.functional, typing
        path = {str(tmp_path / "model.py")!r}
        code = compile(open(path, encoding="utf-8").read(), path, "exec")
        before = set(sys.modules)
        events = []
        def hook(event, args):
            if event.startswith(("open", "os.", "subprocess.", "socket.", "shutil.", "ctypes.")):
                events.append(event)
        sys.addaudithook(hook)
        model = types.ModuleType("model")
        exec(code, model.__dict__)
        net = getattr(model, {conversion.class_name!r})().eval()
        with torch.no_grad():
            net(torch.ones(1, 3, 6, 6))
        print("NEW", sorted(set(sys.modules) - before))
        print("EVENTS", events)
        """)
    before = set(os.listdir(tmp_path))
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert "NEW []" in done.stdout, done.stdout
    assert "EVENTS []" in done.stdout, done.stdout
    assert set(os.listdir(tmp_path)) == before


@pytest.mark.parametrize("name", HOSTILE)
def test_sanitize_gives_a_safe_identifier(name: str) -> None:
    ident = sanitize(name)
    assert ident.isidentifier() and not keyword.iskeyword(ident)
    assert ident not in RESERVED
    assert not ident.startswith("__") or ident.strip("_") == ""
    assert ident not in set(dir(builtins)) | set(dir(torch.nn.Module()))


def test_reserved_covers_nn_module() -> None:
    """A newer torch may add nn.Module attributes: the allocator must know all of them."""
    missing = {n for n in dir(torch.nn.Module()) if not n.startswith("__")} - RESERVED
    assert not missing, f"add to backend/names.py: {sorted(missing)}"


def test_namespace_is_unique_and_stable() -> None:
    ns = Namespace()
    got = [ns.name(i, "x") for i in range(5)] + [ns.name(0, "other")]
    assert got == ["x", "x_2", "x_3", "x_4", "x_5", "x"]
    assert ns.name("k", "x_2") == "x_2_2"


def test_invalid_utf8_in_a_name_is_a_diagnostic(tmp_path: Path) -> None:
    proto = tmp_path / "bad.prototxt"
    text = NET.format(
        net='"n"',
        IN='"in"',
        **{f"L{i}": f'"l{i}"' for i in range(LAYERS)},
        **{f"B{i}": f'"b{i}"' for i in range(BLOBS - 1)},
    ).replace('name: "l3"', 'name: "l\\xff3"')
    proto.write_text(text, encoding="utf-8")
    with pytest.raises(ProtocaffeError) as info:
        convert(proto)
    assert str(info.value) == f"{proto}:9:15: string is not valid UTF-8 after its escapes (byte 1)"


def test_hostile_names_in_the_caffemodel_stay_on_one_line(tmp_path: Path) -> None:
    """Caffemodel names are bytes (invalid UTF-8 is kept as surrogate escapes); one that no
    prototxt layer uses is reported in a note, which must stay one printable line."""
    proto = tmp_path / "net.prototxt"
    write_net(proto, "n", PLAIN_LAYERS, PLAIN_BLOBS, False)
    weights = tmp_path / "net.caffemodel"
    random_weights(proto, weights, seed=0)
    extra = tmp_path / "extra.caffemodel"
    layers = [(layer.name, layer.type, layer.blobs) for layer in read_caffemodel(weights).layers]
    hostile = "\udcff\n\x1b[2J\u2028'''"
    write_caffemodel(extra, "n", [*layers, (hostile, "Convolution", [np.ones((1,), np.float32)])])
    done = subprocess.run(
        [sys.executable, "-m", "protocaffe", "convert", str(proto), str(extra), "-o", tmp_path],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 2 and "has weights but no layer of that name" in lines[0], lines
    assert lines[0].isprintable() and lines[0].isascii()
    assert lines[1].startswith(f"{tmp_path.as_posix()}: wrote model.py")  # what convert wrote
