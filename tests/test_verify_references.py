"""Choosing the reference: `--reference auto` takes real Caffe when it is installed, else OpenCV
when it runs the net, else the numpy reference, each falling through to the next with its
reason; a reference that cannot run the net is one located line naming the layer and another
reference to try, never an internal error.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from protocaffe.cli import main
from protocaffe.layers.registry import unregister
from protocaffe.verify import core as verify_core
from protocaffe.verify import pycaffe, verify
from protocaffe.verify.core import VerifyError, candidates

README = Path(__file__).resolve().parents[1] / "README.md"
HAS_CAFFE = pycaffe.available()


def _has_cv2() -> bool:
    try:
        import cv2
    except ImportError:
        return False
    return hasattr(cv2, "dnn") and hasattr(cv2.dnn, "readNetFromCaffe")


HAS_CV2 = _has_cv2()

# SegNet's BN (a fork layer: real Caffe's build lacks the type, OpenCV's importer refuses it).
SEGNET_BN = """\
name: "BnNet"
input: "data"
input_shape { dim: 1 dim: 3 dim: 6 dim: 6 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "conv_bn" type: "BN" bottom: "conv" top: "conv"
  bn_param { scale_filler { type: "constant" value: 1 }
    shift_filler { type: "constant" value: 0 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
"""

# darknet2caffe's Upsample with `scale`: real Caffe's build has it, OpenCV has no such layer.
DARKNET_UPSAMPLE = """\
name: "Darknet"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "up" type: "Upsample" bottom: "conv" top: "up" upsample_param { scale: 2 } }
"""

# The README's plugin layer.
CLIP_NET = """\
name: "ClipNet"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "clip" type: "MyClip" bottom: "conv" top: "clip" clip_param { min: -0.5 max: 0.5 } }
"""


def _write(tmp_path: Path, text: str, name: str = "net.prototxt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["verify", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_auto_tries_caffe_then_opencv_then_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    from protocaffe.verify import opencv

    def missing() -> None:
        raise verify_core.ReferenceUnavailable("no OpenCV")

    monkeypatch.setattr(pycaffe, "available", lambda: True)
    monkeypatch.setattr(opencv, "require_cv2", lambda: None)
    assert candidates("auto") == (["caffe", "opencv", "numpy"], [])
    monkeypatch.setattr(pycaffe, "available", lambda: False)
    monkeypatch.setattr(opencv, "require_cv2", missing)
    assert candidates("auto") == (["numpy"], ["caffe", "opencv"])
    assert candidates("opencv") == (["opencv"], [])


def test_auto_without_caffe_or_opencv_uses_numpy_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pycaffe, "available", lambda: False)
    monkeypatch.setitem(sys.modules, "cv2", None)  # `import cv2` raises ImportError
    report = verify(_write(tmp_path, DARKNET_UPSAMPLE))
    assert report.ok and report.reference == "numpy"
    assert report.choice is not None
    assert report.choice.why == (
        "auto: real Caffe is not installed; OpenCV is not installed; the numpy reference runs "
        "the net"
    )


@pytest.mark.skipif(not (HAS_CAFFE and HAS_CV2), reason="needs real Caffe and OpenCV 4.x")
def test_auto_falls_through_with_each_reason_located(tmp_path: Path) -> None:
    prototxt = _write(tmp_path, SEGNET_BN)
    report = verify(prototxt)
    assert report.ok, report.table()
    assert report.reference == "numpy"
    assert report.choice is not None
    skipped = dict(report.choice.skipped)
    assert skipped["caffe"] == (
        f"{prototxt}:6: layer \"conv_bn\" (BN): this Caffe build has no layer type 'BN'"
    )
    assert skipped["opencv"].startswith(f'{prototxt}:6: layer "conv_bn" (BN): OpenCV cannot ')
    assert "cannot run the net" in report.choice.why
    # The report says which reference ran, why, and why the others did not.
    table = report.table()
    assert table.splitlines()[0].startswith("reference: numpy (")
    assert "  caffe skipped: " in table and "  opencv skipped: " in table


@pytest.mark.skipif(not HAS_CV2, reason="needs OpenCV 4.x")
@pytest.mark.parametrize("text", [SEGNET_BN, DARKNET_UPSAMPLE], ids=["segnet-bn", "darknet-up"])
def test_a_layer_opencv_lacks_is_one_located_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    prototxt = _write(tmp_path, text)
    status, out, err = _cli(capsys, str(prototxt), "--reference", "opencv")
    assert status == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    layer = 'layer "conv_bn" (BN)' if "BN" in text else 'layer "up" (Upsample)'
    assert lines[0].startswith(f"protocaffe verify: {prototxt}:6: {layer}: OpenCV cannot ")
    assert lines[0].endswith("; try --reference numpy")
    assert "internal error" not in err


@pytest.mark.skipif(not HAS_CAFFE, reason="needs real Caffe")
def test_a_layer_caffe_lacks_is_one_located_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prototxt = _write(tmp_path, SEGNET_BN)
    status, out, err = _cli(capsys, str(prototxt), "--reference", "caffe")
    assert status == 2 and out == ""
    assert err == (
        f'protocaffe verify: {prototxt}:6: layer "conv_bn" (BN): this Caffe build has no layer '
        "type 'BN'; try --reference numpy\n"
    )


@pytest.mark.skipif(not HAS_CAFFE, reason="needs real Caffe")
def test_a_caffemodel_past_caffes_read_limit_falls_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Caffe reads at most 512 MiB of caffemodel (VGG16's is 553 MB): auto goes on with the
    reason. The limit is lowered here so that a small net stands for a large one."""
    monkeypatch.setattr(pycaffe, "CAFFEMODEL_LIMIT", 100)
    report = verify(_write(tmp_path, DARKNET_UPSAMPLE))
    assert report.ok and report.reference != "caffe"
    assert report.choice is not None
    reason = dict(report.choice.skipped)["caffe"]
    assert reason.startswith("the seeded random weights verify drew is ")
    assert "Caffe reads at most 0 MiB of caffemodel" in reason


@pytest.fixture
def readme_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The README's MyClip plugin, importable as `myclip_plugin` (and unloaded afterwards)."""
    text = README.read_text()
    section = text[text.index("### Writing one") :]
    code = section[section.index("```python") + len("```python") : section.index("```\n", 10)]
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "myclip_plugin.py").write_text(textwrap.dedent(code))
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    from protocaffe.backend import helpers
    from protocaffe.layers import loading

    unregister("MyClip")
    helpers._PLUGIN_HELPERS.pop("my_clip", None)
    sys.modules.pop("myclip_plugin", None)
    loading._loaded.discard("myclip_plugin")


def test_a_plugin_layer_without_a_numpy_reference_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], readme_plugin: Path
) -> None:
    prototxt = _write(tmp_path, CLIP_NET)
    for reference in ("numpy", "auto"):
        status, out, err = _cli(
            capsys, str(prototxt), "--plugin", "myclip_plugin", "--reference", reference
        )
        assert status == 2 and out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith(
            f'protocaffe verify: {prototxt}:6: layer "clip" (MyClip): the numpy reference has '
            "no implementation of layer type 'MyClip'; give the plugin's Layer a numpy "
            "reference(attrs, inputs) method"
        )
        assert "internal error" not in err


def test_a_plugin_layer_with_a_numpy_reference_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], readme_plugin: Path
) -> None:
    plugin = readme_plugin / "myclip_plugin.py"
    plugin.write_text(plugin.read_text() + textwrap.dedent('''
            def _reference(self, attrs, inputs, blobs=()):
                """caffe clip_layer.cpp: min(max(x, min), max)."""
                import numpy as np

                return [np.minimum(np.maximum(inputs[0], attrs.low), attrs.high)]


            MyClip.reference = _reference
            '''))
    prototxt = _write(tmp_path, CLIP_NET)
    status, out, err = _cli(
        capsys, str(prototxt), "--plugin", "myclip_plugin", "--reference", "numpy"
    )
    assert status == 0, err + out
    assert "clip   MyClip" in out and out.rstrip().splitlines()[-1].startswith("OK: 2 blobs")


def test_an_unknown_reference_is_refused() -> None:
    with pytest.raises(VerifyError, match="unknown reference 'tensorflow'"):
        verify(Path(__file__).parent / "fixtures" / "mutation_net.prototxt", reference="tensorflow")
