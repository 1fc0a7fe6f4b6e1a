"""model.py's preprocess(image) against cv2.dnn.blobFromImage (OpenCV 4.x), the reference.

The module's preprocess() is generated from convert's image options or from a train_val data
layer's transform_param, and must make the blob blobFromImage makes with the same arguments:
within 1e-5 of the blob's largest magnitude for a float image, and within one uint8 step (times
the scale) for a uint8 image, which OpenCV resizes in 8-bit fixed point. Real photographs
(../shared/opencv-caffe-cases, and odd-sized crops of them) and a synthetic photo-like image
(gradients and noise, any size), colour and gray, crop on and off.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from shared_dir import SHARED

from protocaffe import api
from protocaffe.api import generated_module
from protocaffe.backend.preprocess import ImageOptions
from protocaffe.cli import EXIT_ERROR, EXIT_OK, main
from protocaffe.errors import ProtocaffeError
from protocaffe.proto.schema import message_class

cv2 = pytest.importorskip("cv2")

REPO = Path(__file__).resolve().parents[1]
PHOTOS = SHARED / "opencv-caffe-cases"


def net(channels: int, height: int, width: int) -> str:
    return (
        'name: "pre"\ninput: "data"\n'
        f"input_shape {{ dim: 1 dim: {channels} dim: {height} dim: {width} }}\n"
        'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n'
    )


def synthetic(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A photo-like BGR uint8 image: smooth gradients, a bright disc and sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    disc = 120.0 * (((x - 0.6 * width) ** 2 + (y - 0.4 * height) ** 2) < (0.2 * width) ** 2)
    planes = [x * 200 / width + disc, y * 220 / height, (x + y) * 150 / (width + height) + disc]
    image = np.stack(planes, axis=-1) + rng.normal(0.0, 12.0, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def photos() -> list[tuple[str, np.ndarray]]:
    found = [("synthetic 37x53", synthetic(37, 53)), ("synthetic 480x640", synthetic(480, 640))]
    path = PHOTOS / "googlenet_0.jpg"
    if path.is_file():
        photo = cv2.imread(str(path))
        found += [("googlenet_0", photo), ("googlenet_0 173x201", photo[13:186, 7:208])]
    return found


def preprocess_of(tmp_path: Path, channels: int, options: ImageOptions) -> Any:
    """The preprocess() function of the model.py convert writes for these options."""
    (tmp_path / "net.prototxt").write_text(net(channels, 24, 24))
    conversion = api.convert(tmp_path / "net.prototxt", preprocess=options)
    return generated_module(conversion.source).preprocess


@pytest.fixture(scope="module")
def blob_from_image(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The helper that model.py's preprocess() calls, as a generated model.py defines it."""
    folder = tmp_path_factory.mktemp("helper")
    (folder / "net.prototxt").write_text(net(3, 24, 24))
    conversion = api.convert(folder / "net.prototxt", preprocess=ImageOptions(scale=2.0))
    return generated_module(conversion.source).blob_from_image


def assert_like_opencv(ours: np.ndarray, ref: np.ndarray, image: np.ndarray, scale: float) -> None:
    assert ours.shape == ref.shape and ours.dtype == np.float32
    error = np.abs(ours.astype(np.float64) - ref)
    if image.dtype == np.uint8:
        # OpenCV resizes uint8 images in 8-bit fixed point: one step at most (and float32's
        # rounding of the result).
        assert error.max() <= abs(scale) * (1 + 1e-4), error.max() / abs(scale)
    else:
        assert error.max() <= 1e-5 * np.abs(ref).max(), error.max() / np.abs(ref).max()


SIZES = [(24, 24), (41, 29), (227, 227)]
SETTINGS = list(itertools.product(SIZES, [False, True], [False, True]))
IMAGES = photos()
DTYPES = ["uint8", "float32"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("label", "image"), IMAGES, ids=[label for label, _ in IMAGES])
def test_colour_is_blob_from_image(
    blob_from_image: Any, label: str, image: np.ndarray, dtype: str
) -> None:
    pixels = image.astype(dtype)
    scale, mean = 0.017, (103.94, 116.78, 123.68)
    for size, crop, swap in SETTINGS:
        ref = cv2.dnn.blobFromImage(pixels, scale, size, mean, swap, crop)
        ours = blob_from_image(pixels, size, scale, mean, swap, crop, False).numpy()
        assert_like_opencv(ours, ref, pixels, scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("label", "image"), IMAGES, ids=[label for label, _ in IMAGES])
def test_gray_is_blob_from_image(
    blob_from_image: Any, label: str, image: np.ndarray, dtype: str
) -> None:
    """A one-channel net: a gray image as it is, a BGR one made gray as cvtColor does."""
    colour = image.astype(dtype)
    gray = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)
    scale = 0.00390625
    for size, crop, _ in SETTINGS[::2]:
        ref = cv2.dnn.blobFromImage(gray, scale, size, (127.5,), False, crop)
        for given in (gray, gray[:, :, None], colour):
            ours = blob_from_image(given, size, scale, (127.5,), False, crop, True).numpy()
            assert_like_opencv(ours, ref, colour, scale)


@pytest.mark.parametrize(
    ("channels", "options", "arguments"),
    [
        (3, ImageOptions(scale=1.0), (1.0, (24, 24), (0, 0, 0), False, False)),
        (
            3,
            ImageOptions(scale=0.017, mean=(104.0, 117.0, 123.0), swap_rb=True, crop=True),
            (0.017, (24, 24), (104.0, 117.0, 123.0), True, True),
        ),
        (
            3,
            ImageOptions(mean=(128.0,), size=(57, 33)),
            (1.0, (57, 33), (128.0, 128.0, 128.0), False, False),
        ),
        (1, ImageOptions(scale=0.5, size=(9, 13), crop=True), (0.5, (9, 13), (0,), False, True)),
    ],
    ids=["defaults", "all", "one-mean", "gray"],
)
def test_preprocess_is_blob_from_image_with_the_same_arguments(
    tmp_path: Path, channels: int, options: ImageOptions, arguments: tuple[Any, ...]
) -> None:
    """model.py's own preprocess(), generated from convert's options (one mean value is
    every channel's; the size defaults to the input's; a 1-channel input is gray)."""
    preprocess = preprocess_of(tmp_path, channels, options)
    for _, image in IMAGES:
        pixels = image if channels == 3 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        ref = cv2.dnn.blobFromImage(pixels, *arguments)
        assert_like_opencv(preprocess(pixels).numpy(), ref, pixels, arguments[0])


def write_mean_file(path: Path, mean: np.ndarray) -> None:
    """A mean.binaryproto as Caffe's compute_image_mean writes it, serialized by protobuf."""
    blob = message_class("BlobProto")()
    blob.num, blob.channels, blob.height, blob.width = (1, *mean.shape)  # type: ignore[attr-defined]
    blob.data.extend(mean.reshape(-1).tolist())  # type: ignore[attr-defined]
    path.write_bytes(blob.SerializeToString())


def test_a_mean_file_subtracts_its_per_channel_average(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    mean = rng.uniform(90, 130, (3, 32, 40)).astype(np.float32)
    write_mean_file(tmp_path / "mean.binaryproto", mean)
    average = tuple(float(v) for v in mean.reshape(3, -1).astype(np.float64).mean(axis=1))
    for crop in (False, True):
        options = ImageOptions(
            scale=0.5, mean_file=tmp_path / "mean.binaryproto", size=(33, 27), crop=crop
        )
        preprocess = preprocess_of(tmp_path, 3, options)
        for _, image in IMAGES:
            ref = cv2.dnn.blobFromImage(image, 0.5, (33, 27), average, False, crop)
            assert_like_opencv(preprocess(image).numpy(), ref, image, 0.5)


LENET_TRAIN_VAL = """name: "LeNet"
layer {
  name: "mnist"
  type: "Data"
  top: "data"
  top: "label"
  include { phase: TRAIN }
  transform_param { scale: 0.00390625 mirror: true }
  data_param { source: "mnist_train_lmdb" batch_size: 64 backend: LMDB }
}
layer {
  name: "mnist"
  type: "Data"
  top: "data"
  top: "label"
  include { phase: TEST }
  transform_param { scale: 0.00390625 }
  data_param { source: "mnist_test_lmdb" batch_size: 100 backend: LMDB }
}
layer {
  name: "ip1"
  type: "InnerProduct"
  bottom: "data"
  top: "ip1"
  inner_product_param { num_output: 10 }
}
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
"""


def test_lenets_transform_param_becomes_preprocess(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """LeNet's `scale: 0.00390625` is no longer dropped: model.py's preprocess() applies it,
    to a one-channel blob (the net's input has one channel)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train_val.prototxt").write_text(LENET_TRAIN_VAL)
    args = ["convert", "train_val.prototxt", "-o", "out", "--input-shape", "data=1,1,28,28"]
    capsys.readouterr()
    assert main(args) == EXIT_OK
    err = capsys.readouterr().err.splitlines()
    assert (
        'train_val.prototxt:17: note: layer "mnist" (Data): transform_param becomes model.py\'s '
        "preprocess() (scale 0.00390625)"
    ) in err
    source = (tmp_path / "out" / "model.py").read_text()
    assert "Arguments from the transform_param of layer 'mnist' (line 11)." in source
    digit = synthetic(37, 41)[:, :, 1]
    ref = cv2.dnn.blobFromImage(digit, 0.00390625, (28, 28), (0,), False, False)
    ours = generated_module(source).preprocess(digit).numpy()
    assert_like_opencv(ours, ref, digit, 0.00390625)
    assert main([*args, "--check"]) == EXIT_OK


def test_transform_param_mean_crop_and_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    text = LENET_TRAIN_VAL.replace(
        "transform_param { scale: 0.00390625 }",
        "transform_param { mirror: true crop_size: 31 mean_file: 'data/mean.binaryproto' }",
    )
    (tmp_path / "caffe" / "data").mkdir(parents=True)
    (tmp_path / "caffe" / "train_val.prototxt").write_text(text)
    mean = np.random.default_rng(5).uniform(100, 120, (3, 36, 36)).astype(np.float32)
    write_mean_file(tmp_path / "caffe" / "data" / "mean.binaryproto", mean)
    args = ["convert", "caffe/train_val.prototxt", "-o", "out", "--input-shape", "data=1,3,31,31"]
    capsys.readouterr()
    assert main([*args, "--swap-rb"]) == EXIT_OK
    err = capsys.readouterr().err
    assert "transform_param: mirror is for training only; preprocess() does not mirror" in err
    source = (tmp_path / "out" / "model.py").read_text()
    # The option adds to the transform, field by field; the header records it.
    assert "-o . --input-shape data=1,3,31,31 --swap-rb'" in source
    average = tuple(float(v) for v in mean.reshape(3, -1).astype(np.float64).mean(axis=1))
    photo = synthetic(50, 70)
    ref = cv2.dnn.blobFromImage(photo, 1.0, (31, 31), average, True, True)
    assert_like_opencv(generated_module(source).preprocess(photo).numpy(), ref, photo, 1.0)


def test_the_module_with_preprocess_is_clean_and_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(net(3, 24, 24))
    options = ["--scale", "0.017", "--mean", "104,117,123.5", "--size", "40x30", "--crop"]
    assert main(["convert", "net.prototxt", "-o", "out", *options, "-q"]) == EXIT_OK
    model = tmp_path / "out" / "model.py"
    header = model.read_text().split('"""')[1]
    assert (
        "'protocaffe convert ../net.prototxt -o . --scale 0.017 --mean 104,117,123.5 --size "
        "40x30 --crop'" in header
    )
    assert main(["convert", "net.prototxt", "-o", "out", *options, "--check"]) == EXIT_OK
    assert main(["convert", "net.prototxt", "-o", "out", "--scale", "1", "--check"]) == 1
    for tool in (["black", "--check", "--quiet"], ["ruff", "check", "--isolated", "--quiet"]):
        done = subprocess.run(
            [sys.executable, "-m", *tool, str(model)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("channels", "options", "message"),
    [
        (3, ImageOptions(gray=True), "--gray makes one channel, the input has 3"),
        (4, ImageOptions(scale=2.0), "an image makes 1 (--gray) or 3 channels, the input has 4"),
        (3, ImageOptions(mean=(1.0, 2.0)), "2 mean values for 3 channels"),
        (1, ImageOptions(swap_rb=True), "--swap-rb has no meaning for a one-channel (--gray) blob"),
    ],
    ids=["gray-colour", "four-channels", "mean-count", "swap-gray"],
)
def test_preprocess_options_that_do_not_fit_the_net(
    tmp_path: Path, channels: int, options: ImageOptions, message: str
) -> None:
    (tmp_path / "net.prototxt").write_text(net(channels, 24, 24))
    with pytest.raises(ProtocaffeError) as raised:
        api.convert(tmp_path / "net.prototxt", preprocess=options)
    assert (
        str(raised.value)
        == f"{tmp_path / 'net.prototxt'}: preprocess() for input 'data': {message}"
    )


def test_mean_and_mean_file_together_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(net(3, 24, 24))
    capsys.readouterr()
    args = ["--mean", "1,2,3", "--mean-file", "m.binaryproto"]
    assert main(["convert", "net.prototxt", "-o", "out", *args]) == EXIT_ERROR
    assert capsys.readouterr().err == "--mean-file: give --mean or --mean-file, not both\n"


def test_verify_feeds_an_image_through_the_modules_preprocess(tmp_path: Path) -> None:
    """`verify --image` with a model.py that has a preprocess(): the module's, not a default
    blobFromImage. Shown by a hand-edited preprocess() of another size: the net runs on it."""
    pytest.importorskip("torch")
    from protocaffe.verify.core import VerifyOptions, verify
    from protocaffe.verify.inputs import ImageSpec

    tiny = REPO / "examples" / "tinynet"
    out = tmp_path / "out"
    args = [str(tiny / "deploy.prototxt"), str(tiny / "tinynet.caffemodel"), "-o", str(out)]
    assert main(["convert", *args, "--scale", "0.017", "--size", "48x40", "-q"]) == EXIT_OK
    cv2.imwrite(str(tmp_path / "photo.png"), synthetic(61, 75))
    options = VerifyOptions(
        module=out / "model.py",
        weights=out / "model.safetensors",
        image=ImageSpec(str(tmp_path / "photo.png")),
    )
    report = verify(tiny / "deploy.prototxt", tiny / "tinynet.caffemodel", options)
    assert report.ok
    assert report.inputs == {"data": (1, 3, 40, 48)}
    # Options given on verify's command line win over the module's preprocess().
    plain = VerifyOptions(
        module=out / "model.py",
        weights=out / "model.safetensors",
        image=ImageSpec(str(tmp_path / "photo.png"), scale=0.5),
    )
    assert verify(tiny / "deploy.prototxt", tiny / "tinynet.caffemodel", plain).inputs == {
        "data": (1, 3, 32, 32)
    }
