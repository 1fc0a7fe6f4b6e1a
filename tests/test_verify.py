"""`protocaffe verify`: inputs, bad input, the report, the recording of model.py's locals."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from protocaffe.cli import main
from protocaffe.verify import ImageSpec, Status, verify
from protocaffe.verify.inputs import image_blob
from protocaffe.verify.record import Recording, instrument, trace_comment

FIXTURES = Path(__file__).parent / "fixtures"
NET = FIXTURES / "mutation_net.prototxt"

# Two tops from one layer (Slice), an in-place chain and a Dropout (removed by a pass).
SLICE_NET = """
name: "SliceNet"
input: "data"
input_shape { dim: 2 dim: 4 dim: 5 dim: 5 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "c"
  convolution_param { num_output: 6 kernel_size: 1 } }
layer { name: "relu" type: "ReLU" bottom: "c" top: "c" }
layer { name: "drop" type: "Dropout" bottom: "c" top: "c" }
layer { name: "split" type: "Slice" bottom: "c" top: "a" top: "b"
  slice_param { axis: 1 slice_point: 2 } }
layer { name: "prod" type: "Eltwise" bottom: "a" bottom: "a" top: "p"
  eltwise_param { operation: PROD } }
"""


def test_trace_comments_name_the_layer() -> None:
    assert trace_comment(" 'conv1/bn' BatchNorm -> (1, 8, 6, 6)") == ("conv1/bn", "BatchNorm")
    assert trace_comment(""" "it's" ReLU""") == ("it's", "ReLU")
    assert trace_comment(" 'a\\nb' Pooling: Caffe rounds up") == ("a\nb", "Pooling")
    assert trace_comment(" a plain remark") is None


def test_recording_follows_the_file_as_written() -> None:
    source = """
import torch
from torch import nn


class Helper(nn.Module):
    def forward(self, x):
        y = x + 100  # 'not the net' Scale
        return y


class Net(nn.Module):
    def forward(self, x, flag: bool = True):
        # 'first' ReLU
        a = torch.relu(x)
        b, c = a * 2, a * 3  # 'pair' Slice
        if flag:
            d = b + c  # 'sum' Eltwise
        d.add_(1)
        e = d
        return e
"""
    compiled = instrument(source, "Net")
    recording = Recording(compiled.assignments)
    compiled.bind(recording)
    import torch

    x = torch.tensor([-1.0, 2.0])
    compiled.cls()(x)
    layers = [(a.layer, a.targets) for a in compiled.assignments]
    assert layers == [("first", ("a",)), ("pair", ("b", "c")), ("sum", ("d",)), (None, ("e",))]
    values = {compiled.assignments[i].targets: v for i, v in recording.values}
    assert values[("b", "c")][1].tolist() == [0.0, 6.0]
    # The snapshot is taken when the line ran, before the later in-place add_.
    assert values[("d",)][0].tolist() == [0.0, 10.0]
    assert values[("e",)][0].tolist() == [1.0, 11.0]


def test_every_top_is_compared_and_identities_are_not_rows(tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    prototxt = tmp_path / "slice.prototxt"
    prototxt.write_text(SLICE_NET)
    report = verify(prototxt)
    assert report.ok, report.table()
    rows = [(r.layer, r.blob, r.status) for r in report.rows]
    assert ("conv", "c", Status.MATCH) in rows and ("relu", "c", Status.MATCH) in rows
    # OpenCV names outputs by layer: only a layer's first top is available from it.
    assert ("split", "a", Status.MATCH) in rows
    assert ("split", "b", Status.NO_REFERENCE) in rows
    # Dropout is a layer of the module (the identity in eval(), as in Caffe's TEST phase).
    assert any(r.layer == "drop" and r.status is Status.MATCH for r in report.rows)


def _png(path: Path, height: int = 6, width: int = 8) -> np.ndarray:
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)
    return pixels


def test_image_input_follows_blob_from_image(tmp_path: Path) -> None:
    pixels = _png(tmp_path / "x.png")
    spec = ImageSpec(str(tmp_path / "x.png"), scale=0.5, mean=(10, 20, 30), swap_rb=True)
    blob = image_blob(spec, (1, 3, 6, 8))
    # blobFromImage: swap B and R, subtract the mean (in the swapped order), then scale.
    expected = (pixels[..., ::-1].astype(np.float32) - np.float32([10, 20, 30])) * 0.5
    np.testing.assert_allclose(blob, expected.transpose(2, 0, 1)[None], rtol=0, atol=1e-5)


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["verify", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_json_report_and_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("cv2")
    out = tmp_path / "report.json"
    status, stdout, _ = _cli(capsys, str(NET), "--json", str(out), "--seed", "4")
    assert status == 0 and stdout.rstrip().splitlines()[-1].startswith("OK:")
    report = json.loads(out.read_text())
    assert report["ok"] is True and report["first_divergent"] is None
    assert [r["layer"] for r in report["rows"]][:3] == ["conv1", "bn1", "scale1"]
    assert report["blobs_compared"] == len(report["rows"])


def test_an_image_feeds_the_net(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _png(tmp_path / "x.png", 30, 20)
    args = ["--image", str(tmp_path / "x.png"), "--scale", "0.0039", "--mean", "104,117,123"]
    status, _, err = _cli(capsys, str(NET), *args, "--swap-rb", "-q")
    assert status == 0, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "nope=x.npy"], "input 'nope' matches no net input"),
        (["--input", "data={bad}"], "has shape (1, 4, 12, 12), the net declares (1, 3, 12, 12)"),
        (["--input", "data={missing}"], "cannot read as a .npy array"),
        (["--image", "{missing}"], "cannot read the image"),
        (["--image", "{bad}"], "cannot read the image"),
        (["--input-shape", "nope=1,3,8,8"], "nope, which is not an input"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    pytest.importorskip("cv2")
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((1, 4, 12, 12), np.float32))
    paths = {"bad": str(bad), "missing": str(tmp_path / "missing")}
    status, out, err = _cli(capsys, str(NET), *[a.format(**paths) for a in args])
    assert status == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and message in err


def test_a_missing_opencv_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` raise ImportError
    status, out, err = _cli(capsys, str(NET))
    assert status == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "pip install 'protocaffe[verify]'" in err


def test_weights_file_must_fit_the_module(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("cv2")
    from safetensors.numpy import save_file

    save_file({"conv1.weight": np.zeros((1,), np.float32)}, str(tmp_path / "w.safetensors"))
    status, _, err = _cli(capsys, str(NET), "--weights", str(tmp_path / "w.safetensors"))
    assert status == 2 and "the weights do not fit the module" in err


def test_convert_then_verify_the_written_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("cv2")
    from protocaffe.random_weights import random_weights

    weights = tmp_path / "w.caffemodel"
    random_weights(NET, weights, seed=5)
    assert main(["convert", str(NET), str(weights), "-o", str(tmp_path / "out"), "-q"]) == 0
    for fmt, suffix in (("safetensors", "safetensors"), ("pt", "pt")):
        out = tmp_path / fmt
        assert main(["convert", str(NET), str(weights), "-o", str(out), "--format", fmt]) == 0
        args = ["--module", str(out / "model.py"), "--weights", str(out / f"model.{suffix}")]
        status, stdout, err = _cli(capsys, str(NET), str(weights), *args, "-q")
        assert status == 0, err + stdout


AXPY_NET = """
name: "AxpyNet"  # a comment with a brace {
input: "scale" input_shape { dim: 1 dim: 2 dim: 1 dim: 1 }
input: "x" input_shape { dim: 1 dim: 2 dim: 3 dim: 4 }
input: "y" input_shape { dim: 1 dim: 2 dim: 3 dim: 4 }
layer { name: "keep" type: "Eltwise" bottom: "x" bottom: "y" top: "keep" }
layer {
  name: "axpy"
  type: "Axpy"
  bottom: "scale"
  bottom: "x"  # the 'x' of F = a * x + y
  bottom: "y"
  top: "axpy"
}
"""


def test_opencv_gets_axpy_operands_in_its_own_order(tmp_path: Path) -> None:
    """SENet's Axpy is F = a * bottom[1] + bottom[2]; OpenCV imports it as a * bottom[2] +
    bottom[1], so the copy OpenCV reads swaps them (checked here against numpy)."""
    cv2 = pytest.importorskip("cv2")
    from protocaffe.verify.opencv import for_opencv

    adapted = for_opencv(AXPY_NET)
    assert 'bottom: "y"  # the \'x\' of F = a * x + y\n  bottom: "x"' in adapted
    assert 'bottom: "x" bottom: "y" top: "keep"' in adapted  # other layers untouched
    path = tmp_path / "axpy.prototxt"
    path.write_text(adapted)
    rng = np.random.default_rng(3)
    a = rng.standard_normal((1, 2, 1, 1)).astype(np.float32)
    x, y = (rng.standard_normal((1, 2, 3, 4)).astype(np.float32) for _ in range(2))
    net = cv2.dnn.readNetFromCaffe(str(path))
    for name, value in (("scale", a), ("x", x), ("y", y)):
        net.setInput(value, name)
    np.testing.assert_allclose(net.forward("axpy"), a * x + y, rtol=1e-6, atol=1e-6)
