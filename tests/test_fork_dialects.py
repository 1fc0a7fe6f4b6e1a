"""Fork dialects (`convert --dialect`) and the forks' V1 enum values.

Expected values come from the forks, not from protocaffe: HED's crop offsets (34, 35, 36, 38
and 42 for its five side outputs) are what s9xie/hed's CropLayer::LayerSetUp computes from the
coordinate maps (include/caffe/util/coords.hpp) for its deploy net, and every blob is compared
with the numpy reference (protocaffe/verify/reference/ops/coordmap.py transcribes that C++ in
float32, as DiagonalAffineMap<float> does; ops/pooling.py transcribes ChenYingpeng/darknet2caffe's
PoolingLayer::Reshape). The HED-like net below is written here: same geometry as HED's deploy
(conv1_1 pad 35, VGG16's 3x3 convs and 2x2 pools, deconvolutions 4/2, 8/4, 16/8, 32/16), with
few channels so that it runs in a second.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fork_cases import compare_with_reference, layer, net_text

from protocaffe.api import convert
from protocaffe.errors import ProtocaffeError, Reporter, Severity
from protocaffe.ir.graph import Graph

HED_OFFSETS = [34, 35, 36, 38, 42]  # s9xie/hed's crops of score-dsn1..5 to the image


def _conv(name: str, bottom: str, outputs: int, kernel: int, pad: int = 0, stride: int = 1) -> str:
    params = f"convolution_param {{ num_output: {outputs} kernel_size: {kernel} pad: {pad}"
    params += f" stride: {stride} }}" if stride != 1 else " }"
    return layer(name, "Convolution", bottom, params=params)


def _hed_like(crop_type: str = "Crop") -> str:
    body = ""
    bottom = "data"
    stages = [2, 2, 3, 3, 3]
    sides = []
    for stage, convs in enumerate(stages, start=1):
        for i in range(1, convs + 1):
            name = f"conv{stage}_{i}"
            pad = 35 if name == "conv1_1" else 1
            body += _conv(name, bottom, 3, 3, pad)
            body += layer(f"relu{stage}_{i}", "ReLU", name, tops=[name])
            bottom = name
        sides.append(bottom)
        if stage < 5:
            body += layer(
                f"pool{stage}",
                "Pooling",
                bottom,
                params="pooling_param { pool: MAX kernel_size: 2 stride: 2 }",
            )
            bottom = f"pool{stage}"
    for stage, side in enumerate(sides, start=1):
        score = f"score-dsn{stage}"
        body += _conv(score, side, 1, 1)
        if stage > 1:
            factor = 2 ** (stage - 1)
            body += layer(
                f"upsample_{factor}",
                "Deconvolution",
                score,
                tops=[f"{score}-up"],
                params=f"convolution_param {{ num_output: 1 kernel_size: {2 * factor} "
                f"stride: {factor} }}",
            )
            score = f"{score}-up"
        body += layer(f"crop{stage}", crop_type, score, "data", tops=[f"upscore-dsn{stage}"])
    return net_text({"data": (1, 2, 37, 43)}, body)


def _crop_offsets(graph: Graph) -> list[int]:
    """The offset of each crop of `graph` (from axis 2; equal on height and width here). Caffe's
    crop_param.offset is empty (0), one value for every axis, or one per axis."""
    offsets = []
    for node in (n for n in graph.nodes if n.op in ("Crop", "AutoCrop")):
        assert node.attrs.axis == 2
        given = tuple(node.attrs.offsets) or (0,)
        h, w = given * 2 if len(given) == 1 else given
        assert h == w, (node.name, given)
        offsets.append(int(h))
    return offsets


def test_hed_crop_dialect_takes_the_forks_offsets(tmp_path: Path) -> None:
    rng = np.random.default_rng(15)
    x = rng.normal(size=(1, 2, 37, 43)).astype(np.float32)
    conversion, reference = compare_with_reference(
        tmp_path, _hed_like(), {"data": x}, dialects=["hed-crop"]
    )
    assert _crop_offsets(conversion.graph) == HED_OFFSETS
    for stage in range(1, 6):
        assert reference[f"upscore-dsn{stage}"].shape == (1, 1, 37, 43)


def test_rcf_autocrop_always_takes_the_forks_offsets(tmp_path: Path) -> None:
    rng = np.random.default_rng(16)
    x = rng.normal(size=(1, 2, 37, 43)).astype(np.float32)
    conversion, _ = compare_with_reference(tmp_path, _hed_like("AutoCrop"), {"data": x})
    assert _crop_offsets(conversion.graph) == HED_OFFSETS


def test_without_the_dialect_crops_follow_bvlc_and_say_what_hed_would_do(tmp_path: Path) -> None:
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(_hed_like())
    reporter = Reporter()
    conversion = convert(prototxt, reporter=reporter)
    assert _crop_offsets(conversion.graph) == [0] * 5
    notes = [d.message for d in reporter.diagnostics if d.severity == Severity.NOTE]
    for stage, offset in enumerate(HED_OFFSETS, start=1):
        assert (
            f"Crop 'crop{stage}' has no offset: BVLC uses 0, the HED fork computes {offset} "
            "from the geometry; --dialect hed-crop follows it"
        ) in notes


# ---- darknet's stride-1 max pooling (ChenYingpeng/caffe-yolov3's yolov3-tiny) ------------------


def _tiny_tail() -> str:
    """yolov3-tiny's 13x13 stage: a 2x2 stride-1 max pooling whose output darknet keeps 13x13,
    concatenated with its input, as a check that the sizes agree."""
    body = layer(
        "pool6", "Pooling", "x", params="pooling_param { pool: MAX kernel_size: 2 stride: 1 }"
    )
    body += _conv("conv7", "pool6", 5, 3, 1)
    body += layer("cat", "Concat", "conv7", "x")
    return net_text({"x": (2, 3, 13, 13)}, body)


def test_darknet_pool_dialect_keeps_the_size(tmp_path: Path) -> None:
    x = np.random.default_rng(17).normal(size=(2, 3, 13, 13)).astype(np.float32)
    _, reference = compare_with_reference(tmp_path, _tiny_tail(), {"x": x}, ["darknet-pool"])
    assert reference["pool6"].shape == (2, 3, 13, 13)
    assert reference["cat"].shape == (2, 8, 13, 13)
    # The last row and column of darknet's pooling see one real value and the zero-padded edge
    # beyond it, which max pooling ignores: they are the input's own last row and column maxima.
    np.testing.assert_array_equal(
        reference["pool6"][:, :, -1, :-1], np.maximum(x[:, :, -1, :-1], x[:, :, -1, 1:])
    )


def test_without_darknet_pool_the_net_is_refused_with_a_note(tmp_path: Path) -> None:
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(_tiny_tail())
    reporter = Reporter()
    with pytest.raises(ProtocaffeError) as caught:
        convert(prototxt, reporter=reporter)
    assert "(Concat)" in str(caught.value)
    notes = [d.message for d in reporter.diagnostics if d.severity == Severity.NOTE]
    assert any("--dialect darknet-pool follows it" in n for n in notes), notes


# ---- Upsample's default scale ------------------------------------------------------------------


@pytest.mark.parametrize("dialects, scale", [((), 1), (("segnet-upsample",), 2)])
def test_upsample_default_scale(dialects: tuple[str, ...], scale: int, tmp_path: Path) -> None:
    text = net_text({"x": (1, 2, 3, 5)}, layer("up", "Upsample", "x"))
    x = np.random.default_rng(18).normal(size=(1, 2, 3, 5)).astype(np.float32)
    _, reference = compare_with_reference(tmp_path, text, {"x": x}, dialects)
    assert reference["up"].shape == (1, 2, 3 * scale, 5 * scale)
    np.testing.assert_array_equal(reference["up"][:, :, ::scale, ::scale], x)


def test_the_dialect_goes_into_the_regenerate_command(tmp_path: Path) -> None:
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(_tiny_tail())
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "protocaffe", "convert", str(prototxt), "-o", str(out)]
        + ["--dialect", "darknet-pool", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    header = (out / "model.py").read_text()
    assert "--dialect darknet-pool" in header


# ---- Fork values of V1LayerParameter.LayerType ------------------------------------------------


def _v1(body: str) -> str:
    return (
        'name: "v1"\ninput: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 9\ninput_dim: 11\n'
        + body
    )


def test_v1_fork_enum_values_read_as_the_forks_v2_types(tmp_path: Path) -> None:
    """DeconvNet's BN (INFERENCE) and CROP, DeepLab v1's INTERP, eric612's RELU6, C3D's
    VIDEO_DATA and DeepLab's SEG_ACCURACY (left out) in a `layers {}` file, against the numpy
    reference of the same forks' layers."""
    text = _v1(
        'layers { name: "video" type: VIDEO_DATA top: "clip" top: "label" }\n'
        'layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv"\n'
        "  convolution_param { num_output: 4 kernel_size: 3 pad: 2 } }\n"
        'layers { name: "bn" type: BN bottom: "conv" top: "bn"\n'
        "  bn_param { bn_mode: INFERENCE } }\n"
        'layers { name: "relu6" type: RELU6 bottom: "bn" top: "bn" }\n'
        'layers { name: "interp" type: INTERP bottom: "bn" top: "interp"\n'
        "  interp_param { zoom_factor: 2 } }\n"
        'layers { name: "crop" type: CROP bottom: "conv" bottom: "data" top: "crop" }\n'
        'layers { name: "acc" type: SEG_ACCURACY bottom: "crop" bottom: "label" top: "acc" }\n'
    )
    x = np.random.default_rng(19).normal(size=(1, 3, 9, 11)).astype(np.float32)
    conversion, reference = compare_with_reference(tmp_path, text, {"data": x})
    ops = [node.op for node in conversion.graph.nodes]
    assert ops == ["Convolution", "BN", "ReLU6", "Interp", "AutoCrop"]
    assert reference["interp"].shape == (1, 4, 21, 25)
    # The crop undoes conv's pad 2 around a 3x3 kernel: offset 1 (DeconvNet's coordinate maps).
    assert _crop_offsets(conversion.graph) == [1]
    np.testing.assert_array_equal(reference["crop"], reference["conv"][:, :, 1:10, 1:12])


def test_unknown_v1_names_still_fail_at_their_line(tmp_path: Path) -> None:
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(_v1('layers { name: "x" type: FROBNICATE bottom: "data" top: "x" }\n'))
    with pytest.raises(ProtocaffeError) as caught:
        convert(prototxt)
    assert "net.prototxt:7:26: unknown value 'FROBNICATE' for 'type'" in str(caught.value)


def test_rcf_autocrop_follows_dilated_convolutions(tmp_path: Path) -> None:
    """RCF's conv5 is dilated (kernel 3, dilation 2, pad 2) and its pool4 has stride 1; its
    conv_layer.hpp maps coordinates with the dilated kernel's extent, 5. Worked by hand with
    coords.hpp's FilterMap (input = stride * output + (extent - 1) / 2 - pad): pool1 gives
    data = 2 p + 0.5, the dilated conv the identity, the 4/2 deconvolution p = (u - 1.5) / 2,
    so data = u - 1: a crop offset of 1 (the undilated kernel would give 2)."""
    body = (
        layer("pool1", "Pooling", "data", params="pooling_param { pool: MAX kernel_size: 2 "
              "stride: 2 }")
        + layer("conv5", "Convolution", "pool1", params="convolution_param { num_output: 2 "
                "kernel_size: 3 pad: 2 dilation: 2 }")
        + layer("up", "Deconvolution", "conv5", params="convolution_param { num_output: 1 "
                "kernel_size: 4 stride: 2 }")
        + layer("crop", "AutoCrop", "up", "data", tops=["cropped"])
    )  # fmt: skip
    x = np.random.default_rng(17).normal(size=(1, 2, 13, 16)).astype(np.float32)
    conversion, reference = compare_with_reference(
        tmp_path, net_text({"data": x.shape}, body), {"data": x}
    )
    assert _crop_offsets(conversion.graph) == [1]
    assert reference["cropped"].shape == (1, 1, 13, 16)


def test_geometric_crop_after_an_in_place_layer_on_the_input_is_refused_not_hung(
    tmp_path: Path,
) -> None:
    """Found by the fuzzer: a ReLU in place on the net input is that blob's first writer, so
    the forks' walk back from the crop's bottoms (CropLayer::LayerSetUp's down_map) never
    ends. protocaffe refuses the geometric crop in one located line instead of hanging, and
    a bare Crop (BVLC's offset 0) gets no note."""
    body = (
        layer("r", "ReLU", "data", tops=["data"])
        + layer("conv", "Convolution", "data", tops=["c"],
                params="convolution_param { num_output: 2 kernel_size: 1 }")
    )  # fmt: skip
    text = net_text({"data": (1, 2, 9, 9)}, body + layer("crop", "AutoCrop", "c", "data"))
    (tmp_path / "auto.prototxt").write_text(text)
    with pytest.raises(ProtocaffeError, match="never returns"):
        convert(tmp_path / "auto.prototxt")
    bare = net_text({"data": (1, 2, 9, 9)}, body + layer("crop", "Crop", "c", "data"))
    (tmp_path / "bare.prototxt").write_text(bare)
    reporter = Reporter()
    convert(tmp_path / "bare.prototxt", reporter=reporter)
    assert not any("hed" in str(d) for d in reporter.diagnostics)
