"""Fork layers against the numpy reference (protocaffe.verify.reference, transcribed from the
forks' C++ with the source named), on
small nets; the size-following layers also at input sizes other than the declared one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fork_cases import compare_with_reference, layer, net_text
from forks_support import load_module, run_capturing

from protocaffe.api import convert
from protocaffe.errors import ProtocaffeError
from protocaffe.frontend.caffemodel import read_caffemodel
from protocaffe.random_weights import random_weights
from protocaffe.verify.reference.ops.conv import im2col_conv
from protocaffe.verify.reference.ops.linear import axpy_values
from protocaffe.verify.reference.ops.normalization import bn_pspnet, bn_segnet
from protocaffe.verify.reference.ops.pooling import pool2d, roi_pool
from protocaffe.verify.reference.ops.resample import interp_values, unpool
from protocaffe.verify.reference.ops.structure import shuffle_values


def build(
    tmp: Path, body: str, inputs: dict[str, tuple[int, ...]]
) -> tuple[object, torch.nn.Module, dict[str, list[np.ndarray]]]:
    """Convert a net of `body` layers with seeded random weights; also return the weights as
    Caffe stores them (layer name -> blobs)."""
    header = "".join(
        f'input: "{name}"\ninput_shape {{ {" ".join(f"dim: {d}" for d in shape)} }}\n'
        for name, shape in inputs.items()
    )
    prototxt = tmp / "net.prototxt"
    prototxt.write_text('name: "case"\n' + header + body)
    weights = tmp / "net.caffemodel"
    random_weights(prototxt, weights, seed=1)
    conversion = convert(prototxt, weights)
    blobs = {
        layer.name: [np.asarray(b, dtype=np.float32) for b in layer.blobs]
        for layer in read_caffemodel(weights).layers
    }
    return conversion, load_module(conversion), blobs


def run(module: torch.nn.Module, *arrays: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(*[torch.from_numpy(a) for a in arrays])
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def blobs_of(
    conversion: object, module: torch.nn.Module, *arrays: np.ndarray
) -> dict[str, np.ndarray]:
    """Every blob's last value in forward(), by Caffe blob name."""
    values = run_capturing(conversion, module, arrays)  # type: ignore[arg-type]
    return {v.blob: a for v, a in sorted(values.items(), key=lambda item: item[0].version)}


RNG = np.random.default_rng(7)


def test_pooling_mask_and_unpool_with_ties_at_two_sizes(tmp_path: Path) -> None:
    """SegNet's pattern: MAX pooling with a mask top (ceil mode, odd sizes), then Upsample
    with upsample_h/w. Integer inputs make ties, which Caffe breaks by first maximum. At
    another input size, the unpooled tensor takes the pooled tensor's size."""
    body = """
layer { name: "pool" type: "Pooling" bottom: "x" top: "pooled" top: "mask"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "up" type: "Upsample" bottom: "pooled" bottom: "mask" top: "up"
  upsample_param { scale: 2 upsample_h: 7 upsample_w: 9 } }
"""
    conversion, module, _ = build(tmp_path, body, {"x": (2, 3, 7, 9)})
    assert "caffe_unpool(pooled, mask, (x.shape[2], x.shape[3]))" in conversion.source
    for shape in ((2, 3, 7, 9), (1, 2, 10, 5), (1, 1, 3, 3)):
        x = RNG.integers(0, 3, shape).astype(np.float32)
        ours = blobs_of(conversion, module, x)
        pooled, mask = pool2d(x, (2, 2), (2, 2), (0, 0), False)
        np.testing.assert_array_equal(ours["pooled"], pooled)
        np.testing.assert_array_equal(ours["mask"].astype(np.float32), mask)
        np.testing.assert_array_equal(ours["up"], unpool(pooled, mask, shape[2], shape[3]))


def test_pooling_mask_with_padding(tmp_path: Path) -> None:
    body = """
layer { name: "pool" type: "Pooling" bottom: "x" top: "pooled" top: "mask"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
"""
    conversion, module, _ = build(tmp_path, body, {"x": (1, 2, 8, 7)})
    x = RNG.integers(-2, 2, (1, 2, 8, 7)).astype(np.float32)
    ours = blobs_of(conversion, module, x)
    pooled, mask = pool2d(x, (3, 3), (2, 2), (1, 1), False)
    np.testing.assert_array_equal(ours["pooled"], pooled)
    np.testing.assert_array_equal(ours["mask"].astype(np.float32), mask)


def test_enet_unpool_by_scale(tmp_path: Path) -> None:
    body = """
layer { name: "pool" type: "Pooling" bottom: "x" top: "pooled" top: "mask"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "up" type: "Upsample" bottom: "pooled" bottom: "mask" top: "up"
  upsample_param { scale: 2 } }
"""
    _, module, _ = build(tmp_path, body, {"x": (1, 2, 6, 8)})
    for shape in ((1, 2, 6, 8), (2, 2, 4, 10)):
        x = RNG.standard_normal(shape).astype(np.float32)
        (up,) = run(module, x)
        pooled, mask = pool2d(x, (2, 2), (2, 2), (0, 0), False)
        np.testing.assert_array_equal(up, unpool(pooled, mask, shape[2], shape[3]))


INTERP_CASES = {
    "zoom": ("zoom_factor: 8", dict(zoom=8)),
    "shrink": ("shrink_factor: 3", dict(shrink=3)),
    "both": ("zoom_factor: 3 shrink_factor: 2", dict(zoom=3, shrink=2)),
    "fixed": ("height: 60 width: 60", dict(height=60, width=60)),
    "zoom_beats_size": ("zoom_factor: 2 height: 5 width: 5", dict(zoom=2, height=5, width=5)),
    "cropped": ("zoom_factor: 2 pad_beg: -1 pad_end: -2", dict(zoom=2, pad_beg=-1, pad_end=-2)),
}


@pytest.mark.parametrize("case", sorted(INTERP_CASES))
def test_interp_at_declared_and_other_sizes(case: str, tmp_path: Path) -> None:
    """PSPNet (zoom_factor 8; height/width 60) and DeepLab Interp parameters; the factor forms
    follow the run-time size, height/width stay fixed as in Caffe."""
    param, kwargs = INTERP_CASES[case]
    body = (
        f'layer {{ name: "interp" type: "Interp" bottom: "x" top: "y" interp_param {{ {param} }} }}'
    )
    _, module, _ = build(tmp_path, body, {"x": (1, 3, 9, 7)})
    for shape in ((1, 3, 9, 7), (2, 2, 13, 6)):
        x = RNG.standard_normal(shape).astype(np.float32)
        (ours,) = run(module, x)
        expected = interp_values(x, **kwargs)
        assert ours.shape == expected.shape
        np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-6)


@pytest.mark.parametrize(
    ("param", "dialect"),
    [
        ("bn_param { bn_mode: INFERENCE }", "segnet"),
        ("bn_param { scale_filler { type: 'constant' value: 1 } }", "segnet-learn"),
        (
            "bn_param { slope_filler { type: 'constant' value: 1 } frozen: true eps: 0.001 }",
            "pspnet",
        ),
    ],
)
def test_bn_dialects(param: str, dialect: str, tmp_path: Path) -> None:
    body = f'layer {{ name: "bn" type: "BN" bottom: "x" top: "y" {param} }}'
    _, module, blobs = build(tmp_path, body, {"x": (2, 4, 5, 3)})
    x = RNG.standard_normal((2, 4, 5, 3)).astype(np.float32) * 3 + 1
    (ours,) = run(module, x)
    if dialect == "pspnet":
        expected = bn_pspnet(x, *blobs["bn"], eps=0.001)
    else:
        expected = bn_segnet(x, *blobs["bn"], learn=dialect == "segnet-learn")
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


def test_mobile_layers(tmp_path: Path) -> None:
    body = """
layer { name: "dw" type: "ConvolutionDepthwise" bottom: "x" top: "dw"
  convolution_param { num_output: 6 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "shuffle" type: "ShuffleChannel" bottom: "dw" top: "shuffle"
  shuffle_channel_param { group: 3 } }
layer { name: "axpy" type: "Axpy" bottom: "scale" bottom: "shuffle" bottom: "shortcut"
  top: "axpy" }
layer { name: "axpy2" type: "Axpy" bottom: "scale2d" bottom: "shuffle" bottom: "shortcut"
  top: "axpy2" }
"""
    inputs = {"x": (2, 6, 7, 6), "scale": (2, 6, 1, 1), "scale2d": (2, 6), "shortcut": (2, 6, 4, 3)}
    conversion, module, blobs = build(tmp_path, body, inputs)
    arrays = {k: RNG.standard_normal(v).astype(np.float32) for k, v in inputs.items()}
    ours = blobs_of(conversion, module, *[arrays[v.blob] for v in conversion.graph.inputs])
    channels = arrays["x"].shape[1]
    dw = im2col_conv(arrays["x"], blobs["dw"][0], blobs["dw"][1], (2, 2), (1, 1), (1, 1), channels)
    np.testing.assert_allclose(ours["dw"], dw, rtol=1e-5, atol=1e-5)
    shuffled = shuffle_values(ours["dw"], 3)
    np.testing.assert_array_equal(ours["shuffle"], shuffled)
    for name, scale in (("axpy", "scale"), ("axpy2", "scale2d")):
        expected = axpy_values(arrays[scale], shuffled, arrays["shortcut"])
        np.testing.assert_allclose(ours[name], expected, rtol=1e-6, atol=1e-6)


def test_roi_pooling(tmp_path: Path) -> None:
    """Regions partly outside the map, degenerate ones, the second image, rounding halves."""
    body = """
layer { name: "roi" type: "ROIPooling" bottom: "features" bottom: "rois" top: "pooled"
  roi_pooling_param { pooled_h: 3 pooled_w: 2 spatial_scale: 0.25 } }
"""
    _, module, _ = build(tmp_path, body, {"features": (2, 3, 9, 11), "rois": (5, 5)})
    features = RNG.standard_normal((2, 3, 9, 11)).astype(np.float32)
    rois = np.array(
        [
            [0, 0, 0, 40, 32],
            [1, 6, 2, 18, 30],
            [1, -10, -6, 3, 5],
            [0, 30, 30, 30, 30],
            [1, 50, 10, 60, 60],
        ],
        dtype=np.float32,
    )
    (ours,) = run(module, features, rois)
    np.testing.assert_array_equal(ours, roi_pool(features, rois, 3, 2, 0.25))


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((1, 3, 7, 9), "unpool_size: 9"),
        ((2, 2, 7, 9), "unpool_h: 8 unpool_w: 10"),
        ((1, 2, 5, 6), ""),
    ],
)
def test_deconvnet_unpooling(shape: tuple[int, ...], size: str, tmp_path: Path) -> None:
    """DeconvNet's Unpooling after a masked MAX pooling (ceil mode, odd sizes; integer inputs
    make ties), against the numpy reference of HyeonwooNoh/caffe's unpooling_layer.cpp. Without
    a size the fork's formula gives max((H - 1) * 2 + 2, H * 2 + 1) = 2 H + 1."""
    body = layer(
        "pool", "Pooling", "x", tops=["pooled", "mask"],
        params="pooling_param { pool: MAX kernel_size: 2 stride: 2 }",
    ) + layer(
        "unpool", "Unpooling", "pooled", "mask",
        params=f"unpooling_param {{ unpool: MAX kernel_size: 2 stride: 2 {size} }}",
    )  # fmt: skip
    x = RNG.integers(0, 3, shape).astype(np.float32)
    conversion, reference = compare_with_reference(tmp_path, net_text({"x": shape}, body), {"x": x})
    pooled_h, pooled_w = reference["pooled"].shape[2:]
    expected = {
        "unpool_size: 9": (9, 9),
        "unpool_h: 8 unpool_w: 10": (8, 10),
        "": (2 * pooled_h + 1, 2 * pooled_w + 1),
    }[size]
    assert reference["unpool"].shape[2:] == expected
    assert "caffe_unpool(" in conversion.source


def test_deconvnet_unpooling_v1_and_refusals(tmp_path: Path) -> None:
    v1 = (
        'name: "v1"\ninput: "x"\ninput_dim: 1\ninput_dim: 2\ninput_dim: 6\ninput_dim: 6\n'
        'layers { name: "pool" type: POOLING bottom: "x" top: "pooled" top: "mask"\n'
        "  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n"
        'layers { name: "unpool" type: UNPOOLING bottom: "pooled" bottom: "mask" top: "up"\n'
        "  unpooling_param { unpool: MAX kernel_size: 2 stride: 2 unpool_size: 6 } }\n"
    )
    x = RNG.normal(size=(1, 2, 6, 6)).astype(np.float32)
    compare_with_reference(tmp_path, v1, {"x": x})
    for params, message in (
        ("unpool: AVE kernel_size: 2 stride: 2", "only MAX unpooling is supported"),
        ("kernel_size: 2 stride: 2 pad: 1", "only zero padding is allowed"),
        ("kernel_size: 2 kernel_h: 2 kernel_w: 2", "kernel_size OR kernel_h and kernel_w"),
    ):
        text = v1.replace("unpool: MAX kernel_size: 2 stride: 2 unpool_size: 6", params)
        (tmp_path / "bad.prototxt").write_text(text)
        with pytest.raises(ProtocaffeError, match=message):
            convert(tmp_path / "bad.prototxt")
