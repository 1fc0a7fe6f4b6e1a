"""The plugin interface: loading by name and by entry point, declared imports, helpers, and the
example Faster R-CNN proposal plugin (examples/plugins)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from forks_support import convert_random, corpus_net, load_module, run_capturing

from protocaffe import cli
from protocaffe.api import convert
from protocaffe.errors import ProtocaffeError
from protocaffe.layers import loading
from protocaffe.layers.registry import unregister
from protocaffe.plugins import load_plugin
from protocaffe.verify.reference.ops.proposal import rpn_proposals

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "plugins"

NET = """name: "withcustom"
input: "x"
input_shape { dim: 1 dim: 2 dim: 3 dim: 3 }
layer { name: "twice" type: "Doubler" bottom: "x" top: "y" }
layer { name: "py" type: "Python" bottom: "y" top: "z"
  python_param { module: "mine" layer: "Thing" } }
"""

PLUGIN = """
from protocaffe.plugins import Emission, Layer, register, register_helper


@register
class Doubler(Layer):
    types = ("Doubler",)

    def emit(self, attrs, ctx):
        return Emission(forward=f"doubled({ctx.x})", helpers=("doubled",), imports=("import math",))


register_helper("doubled", "def doubled(x):\\n    return x * math.prod((2,))\\n")
"""


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "doubler_plugin.py").write_text(PLUGIN)
    (tmp_path / "net.prototxt").write_text(NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    unregister("Doubler")
    sys.modules.pop("doubler_plugin", None)
    from protocaffe.backend import helpers

    helpers._PLUGIN_HELPERS.pop("doubled", None)
    loading._loaded.discard("doubler_plugin")


def test_unknown_types_are_one_error_listing_each(plugin_dir: Path) -> None:
    with pytest.raises(ProtocaffeError) as caught:
        convert(plugin_dir / "net.prototxt")
    lines = [str(d) for d in caught.value.diagnostics]
    assert len(lines) == 2
    assert "net.prototxt:4" in lines[0]
    assert 'layer "twice" (Doubler): unknown layer type' in lines[0]
    assert 'layer "py" (Python)' in lines[1] and "Python layers run arbitrary code" in lines[1]
    assert all("see 'Custom layers' in the protocaffe README" in line for line in lines)


def test_cli_plugin_registers_and_declares_imports(
    plugin_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    net = plugin_dir / "net.prototxt"
    net.write_text(NET.split('layer { name: "py"')[0])
    out = plugin_dir / "out"
    assert cli.main(["convert", str(net), "-o", str(out), "--plugin", "doubler_plugin"]) == 0
    source = (out / "model.py").read_text()
    assert "import math\n" in source and "def doubled(x):" in source
    assert "y = doubled(x)" in source


def test_missing_and_broken_plugins_are_errors(
    plugin_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    net = str(plugin_dir / "net.prototxt")
    assert cli.main(["convert", net, "-o", str(plugin_dir / "o"), "--plugin", "nope_x"]) == 2
    assert "--plugin nope_x: no such module" in capsys.readouterr().err
    (plugin_dir / "broken_plugin.py").write_text("raise ValueError('oops')\n")
    assert cli.main(["convert", net, "-o", str(plugin_dir / "o"), "--plugin", "broken_plugin"]) == 2
    assert "plugin failed to load: ValueError: oops" in capsys.readouterr().err
    (plugin_dir / "clash_plugin.py").write_text(
        "from protocaffe.plugins import Layer, register\n"
        "@register\nclass Mine(Layer):\n    types = ('Convolution',)\n"
    )
    assert cli.main(["convert", net, "-o", str(plugin_dir / "o"), "--plugin", "clash_plugin"]) == 2
    assert "'Convolution' is already registered" in capsys.readouterr().err


def test_an_emitter_may_not_smuggle_code_as_an_import(plugin_dir: Path) -> None:
    (plugin_dir / "bad_import_plugin.py").write_text(
        PLUGIN.replace("Doubler", "Tripler")
        .replace('"doubled"', '"tripled"')
        .replace('imports=("import math",)', 'imports=("import os; os.system(1)",)')
    )
    load_plugin("bad_import_plugin")
    net = plugin_dir / "t.prototxt"
    net.write_text(
        NET.split('layer { name: "twice"')[0]
        + 'layer { name: "t" type: "Tripler" bottom: "x" top: "y" }\n'
    )
    try:
        with pytest.raises(ProtocaffeError, match="not one import statement"):
            convert(net)
    finally:
        unregister("Tripler")


def test_faster_rcnn_converts_with_the_example_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proposal layer against a numpy transcription of py-faster-rcnn's, on the layer's own
    inputs; the generated module imports nothing but torch (and the standard library's typing)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    load_plugin("faster_rcnn_proposal")
    try:
        conversion, _ = convert_random(corpus_net("faster-rcnn-vgg16-voc"), tmp_path)
        imports = [
            line for line in conversion.source.splitlines() if line.startswith(("import", "from"))
        ]
        assert imports == [
            "from typing import Any, NamedTuple",
            "import torch",
            "from torch import nn",
        ]
        image = np.random.default_rng(0).standard_normal((1, 3, 160, 192)).astype(np.float32)
        info = np.array([[160, 192, 1.0]], np.float32)
        values = run_capturing(conversion, load_module(conversion), [image, info])
        node = next(n for n in conversion.graph.nodes if n.op == "Python")
        scores, deltas, im_info = (values[v] for v in node.inputs)
        rois = values[node.outputs[0]]
        expected = rpn_proposals(scores, deltas, im_info)
        assert rois.shape == expected.shape and rois.shape[0] > 10
        np.testing.assert_allclose(rois, expected, rtol=0, atol=1e-3)
        pooled = next(v for v in values if v.blob == "pool5")
        assert values[pooled].shape == (rois.shape[0], 512, 7, 7)
    finally:
        unregister("Python")
        loading._loaded.discard("faster_rcnn_proposal")
        sys.modules.pop("faster_rcnn_proposal", None)


def test_readme_plugin_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's 'Writing one' example, taken from the README itself, converts and computes a
    clamp; the worked Faster R-CNN example it names is the plugin tested above."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("### Writing one") :]
    code = section[section.index("```python") + len("```python") : section.index("```\n", 10)]
    assert "--plugin faster_rcnn_proposal" in readme
    (tmp_path / "readme_clip.py").write_text(code)
    (tmp_path / "net.prototxt").write_text(
        'input: "x"\ninput_shape { dim: 1 dim: 2 dim: 3 dim: 3 }\n'
        'layer { name: "c" type: "MyClip" bottom: "x" top: "y"\n'
        "  clip_param { min: -0.5 max: 0.25 } }\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        load_plugin("readme_clip")
        conversion = convert(tmp_path / "net.prototxt")
        model = load_module(conversion)
        x = np.linspace(-1, 1, 18, dtype=np.float32).reshape(1, 2, 3, 3)
        import torch

        out = model(torch.from_numpy(x)).numpy()
        np.testing.assert_array_equal(out, np.clip(x, np.float32(-0.5), np.float32(0.25)))
    finally:
        unregister("MyClip")
        sys.modules.pop("readme_clip", None)
        from protocaffe.backend import helpers

        helpers._PLUGIN_HELPERS.pop("my_clip", None)
        loading._loaded.discard("readme_clip")


def test_entry_point_plugins_load(plugin_dir: Path) -> None:
    """An installed package's `protocaffe.layers` entry point (a .dist-info on sys.path)."""
    from protocaffe.layers import lookup, registry
    from protocaffe.layers.loading import load_entry_point_plugins

    dist = plugin_dir / "doubler_dist-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: doubler-dist\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[protocaffe.layers]\ndoubler = doubler_plugin\n")
    registry._entry_points_loaded = False  # as in a fresh process
    assert "Doubler" not in registry.registered_types()
    assert lookup("Doubler") is not None  # a type not built in: the entry points are loaded
    load_entry_point_plugins()  # loading them again is harmless
    loading._loaded.discard("entry point doubler = doubler_plugin")
