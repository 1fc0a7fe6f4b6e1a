"""The fork layer types of issue 15 against the numpy reference, which transcribes each fork's
C++ (repository, commit, file and function are named in each reference function's module:
protocaffe/verify/reference/ops/{conv,neuron,reorder,ctc,yolo,rcnn,coordmap}.py). Real Caffe
(the oracle build) runs none of these layers (its PSROIPooling has no CPU forward); OpenCV 4.x
runs Mish only; the Mish reference is the fork's C++ as here.

Each type runs on seeded random parameters, odd sizes and batches of one and more; every blob
of the generated module is compared with the reference's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fork_cases import compare_with_reference, layer, net_text, run_module

from protocaffe.api import convert
from protocaffe.errors import ProtocaffeError

SEEDS = range(4)


def _rng(seed: int, salt: int) -> np.random.Generator:
    return np.random.default_rng(1000 * salt + seed)


def _odd(rng: np.random.Generator, low: int = 3, high: int = 12) -> int:
    return int(rng.integers(low, high)) | 1


# ---- DepthwiseConvolution (yonghenglh6) -------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_depthwise_convolution_cpu_path(seed: int, tmp_path: Path) -> None:
    """The fork's CPU path is a Convolution with the prototxt's group, dilation and num_output:
    group = C (the usual), group 1 (a full convolution, arcface-landmark's case) or a divisor."""
    rng = _rng(seed, 1)
    channels = int(rng.choice([2, 3, 4, 6]))
    group = int(rng.choice([g for g in (1, channels, 2) if channels % g == 0]))
    num_output = channels if group == channels else group * int(rng.integers(1, 4))
    kernel, stride, pad, dilation = (
        int(rng.integers(1, 4)),
        int(rng.integers(1, 3)),
        int(rng.integers(0, 2)),
        int(rng.integers(1, 3)),
    )
    shape = (int(rng.integers(1, 3)), channels, _odd(rng, 7, 12), _odd(rng, 7, 12))
    params = (
        f"convolution_param {{ num_output: {num_output} group: {group} kernel_size: {kernel} "
        f"stride: {stride} pad: {pad} dilation: {dilation} "
        f"bias_term: {'true' if seed % 2 else 'false'} }}"
    )
    text = net_text({"x": shape}, layer("dw", "DepthwiseConvolution", "x", params=params))
    x = rng.normal(size=shape).astype(np.float32)
    conversion, _ = compare_with_reference(tmp_path, text, {"x": x}, seed=seed)
    assert f"groups={group}" in conversion.source or group == 1


@pytest.mark.parametrize("seed", SEEDS)
def test_depthwise_convolution_gpu_dialect(seed: int, tmp_path: Path) -> None:
    """--dialect depthwise-gpu: the fork's GPU kernel, one filter per channel taken from the
    first C * kh * kw weights of the stored blob, whatever the group (here 1 or C)."""
    rng = _rng(seed, 2)
    channels = int(rng.integers(2, 5))
    group = channels if seed % 2 else 1
    kernel, stride, pad = (
        int(rng.choice([1, 3, 5])),
        int(rng.integers(1, 3)),
        int(rng.integers(0, 3)),
    )
    shape = (2, channels, _odd(rng, 5, 11), _odd(rng, 5, 11))
    params = (
        f"convolution_param {{ num_output: {channels} group: {group} kernel_size: {kernel} "
        f"stride: {stride} pad: {pad} }}"
    )
    text = net_text({"x": shape}, layer("dw", "DepthwiseConvolution", "x", params=params))
    x = rng.normal(size=shape).astype(np.float32)
    conversion, _ = compare_with_reference(
        tmp_path, text, {"x": x}, dialects=["depthwise-gpu"], seed=seed
    )
    assert f"groups={channels}" in conversion.source or channels == 1


def test_depthwise_gpu_refuses_what_the_kernel_gets_wrong(tmp_path: Path) -> None:
    small = net_text(
        {"x": (1, 2, 2, 2)},
        layer(
            "dw",
            "DepthwiseConvolution",
            "x",
            params="convolution_param { num_output: 2 group: 2 kernel_size: 3 pad: 1 }",
        ),
    )
    path = tmp_path / "net.prototxt"
    path.write_text(small)
    convert(path)  # the CPU path is a plain grouped convolution
    with pytest.raises(ProtocaffeError, match="smaller than the kernel"):
        convert(path, dialects=["depthwise-gpu"])
    dilated = small.replace("pad: 1", "pad: 1 dilation: 2").replace("dim: 2 dim: 2", "dim: 9")
    path.write_text(dilated)
    with pytest.raises(ProtocaffeError, match="ignores dilation"):
        convert(path, dialects=["depthwise-gpu"])


def test_convolution_depthwise_ignores_num_output(tmp_path: Path) -> None:
    """farmingyard's ConvolutionDepthwise never reads num_output (MnasNet's prototxt gives one
    that differs from the input channels): Caffe builds the net, and so does protocaffe."""
    rng = _rng(0, 3)
    shape = (1, 5, 9, 7)
    params = "convolution_param { num_output: 32 kernel_size: 3 pad: 1 stride: 2 }"
    text = net_text({"x": shape}, layer("dw", "ConvolutionDepthwise", "x", params=params))
    x = rng.normal(size=shape).astype(np.float32)
    _conversion, reference = compare_with_reference(tmp_path, text, {"x": x})
    assert reference["dw"].shape == (1, 5, 5, 4)


# ---- Element-wise and reordering --------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_mish(seed: int, tmp_path: Path) -> None:
    """Including both softplus thresholds (|x| > 20)."""
    rng = _rng(seed, 4)
    shape = (int(rng.integers(1, 3)), 3, _odd(rng), _odd(rng))
    x = (rng.normal(size=shape) * 12).astype(np.float32)
    text = net_text({"x": shape}, layer("mish", "Mish", "x"))
    compare_with_reference(tmp_path, text, {"x": x}, tolerance=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_transpose(seed: int, tmp_path: Path) -> None:
    rng = _rng(seed, 5)
    rank = int(rng.integers(2, 5))
    shape = tuple(int(d) for d in rng.integers(1, 6, size=rank))
    dims = [int(d) for d in rng.permutation(rank)]
    params = "transpose_param { " + " ".join(f"dim: {d}" for d in dims) + " }"
    text = net_text({"x": shape}, layer("t", "Transpose", "x", params=params))
    x = rng.normal(size=shape).astype(np.float32)
    _, reference = compare_with_reference(tmp_path, text, {"x": x}, tolerance=0)
    assert reference["t"].shape == tuple(shape[d] for d in dims)


@pytest.mark.parametrize("seed", SEEDS)
def test_reverse(seed: int, tmp_path: Path) -> None:
    rng = _rng(seed, 6)
    shape = tuple(int(d) for d in rng.integers(1, 6, size=int(rng.integers(2, 5))))
    axis = int(rng.integers(0, len(shape)))
    text = net_text(
        {"x": shape}, layer("r", "Reverse", "x", params=f"reverse_param {{ axis: {axis} }}")
    )
    x = rng.normal(size=shape).astype(np.float32)
    compare_with_reference(tmp_path, text, {"x": x}, tolerance=0)


@pytest.mark.parametrize("width, height", [(True, False), (False, True), (True, True)])
def test_flip(width: bool, height: bool, tmp_path: Path) -> None:
    rng = _rng(int(width) + 2 * int(height), 7)
    shape = (2, 3, 5, 7)
    params = f"flip_param {{ flip_width: {str(width).lower()} flip_height: {str(height).lower()} }}"
    text = net_text({"x": shape}, layer("f", "Flip", "x", params=params))
    x = rng.normal(size=shape).astype(np.float32)
    compare_with_reference(tmp_path, text, {"x": x}, tolerance=0)


@pytest.mark.parametrize("stride, reverse", [(2, False), (3, False), (2, True), (3, True)])
def test_reorg(stride: int, reverse: bool, tmp_path: Path) -> None:
    """darknet's reorg index map (not a space-to-depth), both directions."""
    rng = _rng(stride, 8)
    s2 = stride * stride
    channels = s2 * int(rng.integers(1, 3)) if reverse else int(rng.integers(1, 4)) * s2
    shape = (2, channels, stride * 3, stride * 2)
    params = f"reorg_param {{ stride: {stride} reverse: {str(reverse).lower()} }}"
    text = net_text({"x": shape}, layer("reorg", "Reorg", "x", params=params))
    x = rng.normal(size=shape).astype(np.float32)
    _, reference = compare_with_reference(tmp_path, text, {"x": x}, tolerance=0)
    # Not torch's pixel_unshuffle: the channel order differs.
    if not reverse:
        import torch

        unshuffled = torch.nn.functional.pixel_unshuffle(torch.from_numpy(x), stride).numpy()
        assert reference["reorg"].shape == unshuffled.shape
        assert not np.array_equal(reference["reorg"], unshuffled)


# ---- CTC -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_ctc_greedy_decoder(seed: int, tmp_path: Path) -> None:
    """Repeated classes (integer scores tie between steps), blanks at 0, the last class (-1) or
    another index, with and without merging."""
    rng = _rng(seed, 9)
    steps, batch, classes = int(rng.integers(3, 12)), int(rng.integers(1, 4)), 5
    blank = [0, -1, 2, 4][seed]
    merge = seed % 2 == 0
    x = rng.integers(0, 4, size=(steps, batch, classes)).astype(np.float32)
    x += rng.normal(size=x.shape).astype(np.float32) * 0.01 * (seed % 3 == 0)
    params = (
        f"ctc_decoder_param {{ blank_index: {blank} ctc_merge_repeated: {str(merge).lower()} }}"
    )
    text = net_text(
        {"x": (steps, batch, classes)}, layer("ctc", "CTCGreedyDecoder", "x", params=params)
    )
    _, reference = compare_with_reference(tmp_path, text, {"x": x}, tolerance=0)
    assert reference["ctc"].shape == (batch, steps, 1, 1)


def test_ctc_decoder_with_labels_is_left_out(tmp_path: Path) -> None:
    text = net_text(
        {"x": (4, 1, 3), "label": (1, 4)},
        layer("id", "Sigmoid", "x", tops=["y"]) + layer("acc", "CTCGreedyDecoder", "y", "label"),
    )
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    conversion = convert(path)
    assert [n.name for n in conversion.graph.nodes] == ["id"]
    assert any("evaluation-only" in d.message for d in conversion.diagnostics)


# ---- YOLO heads (eric612/MobileNet-YOLO) ----------------------------------------------------


def _yolov3_text(shapes: list[tuple[int, ...]], classes: int, threshold: float) -> str:
    bottoms = [f"x{i}" for i in range(len(shapes))]
    biases = [10, 14, 23, 27, 37, 58, 81, 82, 135, 169, 344, 319]
    masks = list(range(3 * len(shapes)))[::-1]
    params = (
        "yolov3_detection_output_param { "
        f"num_classes: {classes} num_box: 3 confidence_threshold: {threshold} "
        f"nms_threshold: 0.45 mask_group_num: {len(shapes)} "
        + " ".join(f"biases: {b}" for b in biases)
        + " "
        + " ".join(f"mask: {m}" for m in masks)
        + " "
        + " ".join(f"anchors_scale: {s}" for s in (32, 16, 8)[: len(shapes)])
        + " }"
    )
    return net_text(
        dict(zip(bottoms, shapes, strict=True)),
        layer("det", "Yolov3DetectionOutput", *bottoms, params=params),
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_yolov3_detection_output(seed: int, tmp_path: Path) -> None:
    rng = _rng(seed, 10)
    classes, batch = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    shapes = [(batch, 3 * (5 + classes), 3, 5), (batch, 3 * (5 + classes), 5, 7)][: 1 + seed % 2]
    threshold = 0.5 if seed < 3 else 0.999  # the last case keeps nothing: the -1 rows
    inputs = {f"x{i}": (rng.normal(size=s) * 2).astype(np.float32) for i, s in enumerate(shapes)}
    text = _yolov3_text(shapes, classes, threshold)
    _, reference = compare_with_reference(tmp_path, text, inputs, tolerance=1e-5)
    rows = reference["det"]
    if seed == 3:
        assert rows.shape == (1, 1, batch, 7) and (rows[0, 0, :, 1] == -1).all()
    else:
        assert rows.shape[2] > 1


@pytest.mark.parametrize("seed", SEEDS)
def test_yolo_detection_output(seed: int, tmp_path: Path) -> None:
    rng = _rng(seed, 11)
    classes, boxes, side = int(rng.integers(2, 5)), int(rng.integers(1, 4)), _odd(rng, 3, 8)
    count = 1 + seed % 2
    shape = (int(rng.integers(1, 3)), boxes * (5 + classes), side, side)
    biases = " ".join(f"biases: {b:.2f}" for b in rng.uniform(0.5, 5, size=2 * boxes))
    params = (
        f"yolo_detection_output_param {{ num_classes: {classes} num_box: {boxes} "
        f"confidence_threshold: 0.2 nms_threshold: 0.4 {biases} }}"
    )
    names = [f"x{i}" for i in range(count)]
    text = net_text(
        dict.fromkeys(names, shape), layer("det", "YoloDetectionOutput", *names, params=params)
    )
    inputs = {n: (rng.normal(size=shape) * 2).astype(np.float32) for n in names}
    compare_with_reference(tmp_path, text, inputs, tolerance=1e-5)


# ---- R-CNN region layers (zhaoweicai/cascade-rcnn, zhaoweicai/mscnn, R-FCN) -------------------


def _rois(rng: np.random.Generator, count: int, images: int, size: tuple[int, int]) -> np.ndarray:
    """Regions in image coordinates, some reaching past the image, one empty-ish."""
    x1 = rng.uniform(-8, size[1] + 4, count)
    y1 = rng.uniform(-8, size[0] + 4, count)
    x2 = x1 + rng.uniform(-2, size[1], count)
    y2 = y1 + rng.uniform(-2, size[0], count)
    index = rng.integers(0, images, count)
    return np.stack([index, x1, y1, x2, y2], axis=1).astype(np.float32)


@pytest.mark.parametrize("seed", SEEDS)
def test_roi_align(seed: int, tmp_path: Path) -> None:
    rng = _rng(seed, 12)
    features = (2, 3, _odd(rng, 5, 12), _odd(rng, 5, 12))
    scale = float(rng.choice([1.0, 0.5, 0.25]))
    pooled = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    pad_ratio = float(rng.choice([0.0, 0.1, 0.25]))
    rois = _rois(rng, 7, 2, (int(features[2] / scale), int(features[3] / scale)))
    params = (
        f"roi_pooling_param {{ pooled_h: {pooled[0]} pooled_w: {pooled[1]} "
        f"spatial_scale: {scale} pad_ratio: {pad_ratio} }}"
    )
    text = net_text(
        {"f": features, "rois": (7, 5)}, layer("align", "ROIAlign", "f", "rois", params=params)
    )
    x = rng.normal(size=features).astype(np.float32)
    compare_with_reference(tmp_path, text, {"f": x, "rois": rois}, tolerance=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_psroi_pooling(seed: int, tmp_path: Path) -> None:
    rng = _rng(seed, 13)
    group, dim = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    features = (2, dim * group * group, _odd(rng, 5, 12), _odd(rng, 5, 12))
    scale = float(rng.choice([1.0, 0.5, 0.0625]))
    rois = _rois(rng, 6, 2, (int(features[2] / scale), int(features[3] / scale)))
    rois[0, 1:] = [2.5, 3.5, 2.5, 3.5]  # halves: C's round goes away from zero
    params = (
        f"psroi_pooling_param {{ spatial_scale: {scale} output_dim: {dim} group_size: {group} }}"
    )
    text = net_text(
        {"f": features, "rois": (6, 5)}, layer("ps", "PSROIPooling", "f", "rois", params=params)
    )
    x = rng.normal(size=features).astype(np.float32)
    compare_with_reference(tmp_path, text, {"f": x, "rois": rois}, tolerance=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_decode_bbox(seed: int, tmp_path: Path) -> None:
    rng = _rng(seed, 14)
    count = int(rng.integers(1, 9))
    rois = _rois(rng, count, 2, (60, 80))
    deltas = rng.normal(size=(count, 8)).astype(np.float32) * 0.5
    reg = (
        "bbox_reg_param { bbox_mean: 0 bbox_mean: 0 bbox_mean: 0 bbox_mean: 0 "
        "bbox_std: 0.1 bbox_std: 0.1 bbox_std: 0.2 bbox_std: 0.2 }"
        if seed % 2
        else ""
    )
    text = net_text(
        {"d": (count, 8), "rois": (count, 5)}, layer("dec", "DecodeBBox", "d", "rois", params=reg)
    )
    compare_with_reference(tmp_path, text, {"d": deltas, "rois": rois}, tolerance=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_box_output(seed: int, tmp_path: Path) -> None:
    """MS-CNN's proposal head over two feature levels, every NMS type."""
    rng = _rng(seed, 15)
    classes = int(rng.integers(2, 4))
    shapes = [(2, classes + 4, 5, 7), (2, classes + 4, 3, 3)]
    nms = ["IOU", "IOMU", "IOFU", "IOU"][seed]
    params = (
        f'box_output_param {{ fg_thr: -0.5 iou_thr: 0.4 nms_type: "{nms}" '
        "field_h: 24 field_h: 48 field_w: 16 field_w: 40 downsample_rate: 8 downsample_rate: 16 "
        f"field_whr: 2 field_xyr: 2 max_nms_num: {[0, 20, 5, 0][seed]} "
        f"max_post_nms_num: {[0, 6, 0, 3][seed]} min_size: 4 }}"
    )
    tops = ["boxes", "scored"] if seed % 2 else ["boxes"]
    text = net_text(
        {"a": shapes[0], "b": shapes[1]},
        layer("proposals", "BoxOutput", "a", "b", tops=tops, params=params),
    )
    inputs = {n: rng.normal(size=s).astype(np.float32) for n, s in zip("ab", shapes, strict=True)}
    compare_with_reference(tmp_path, text, inputs, tolerance=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_box_group_output(seed: int, tmp_path: Path) -> None:
    """Cascade R-CNN's proposal head over two (scores, deltas) pairs, G anchors each."""
    rng = _rng(seed, 16)
    images = int(rng.integers(1, 3))
    groups = (3, 2)
    shapes = [(images * groups[0], 2, 5, 6), (images * groups[1], 2, 3, 3)]
    nms = ["IOU", "IOMU", "IOFU", "IOU"][seed]
    params = (
        f'box_group_output_param {{ fg_thr: 0.3 iou_thr: 0.5 nms_type: "{nms}" '
        "box_group_param { field_w: 20 field_w: 14 field_w: 28 field_h: 20 field_h: 28 "
        "field_h: 14 stride: 8 } "
        "box_group_param { field_w: 40 field_w: 56 field_h: 40 field_h: 28 stride: 16 } "
        f"field_whr: 4 field_xyr: 2 max_nms_num: {[0, 15, 0, 4][seed]} "
        f"max_post_nms_num: {[0, 5, 3, 0][seed]} min_size: 6 }}"
    )
    tops = ["boxes", "scored"] if seed % 2 else ["boxes"]
    inputs: dict[str, np.ndarray] = {}
    declared: dict[str, tuple[int, ...]] = {}
    for j, shape in enumerate(shapes):
        logits = rng.normal(size=shape)
        probability = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        inputs[f"p{j}"] = probability.astype(np.float32)
        inputs[f"d{j}"] = (rng.normal(size=(shape[0], 4) + shape[2:]) * 0.5).astype(np.float32)
        declared[f"p{j}"], declared[f"d{j}"] = shape, (shape[0], 4) + shape[2:]
    text = net_text(
        declared,
        layer("proposals", "BoxGroupOutput", "p0", "d0", "p1", "d1", tops=tops, params=params),
    )
    compare_with_reference(tmp_path, text, inputs, tolerance=1e-5)


@pytest.mark.parametrize("low, high", [(None, 40.0), (20.0, 60.0), (60.0, None), (500.0, 900.0)])
def test_scale_route(low: float | None, high: float | None, tmp_path: Path) -> None:
    """The last range holds no region: the one closest to its middle scale is routed."""
    rng = _rng(int(high or 0), 17)
    rois = _rois(rng, 9, 2, (80, 80))
    fields = (f"low_scale: {low} " if low else "") + (f"high_scale: {high}" if high else "")
    text = net_text(
        {"rois": (9, 5)},
        layer("route", "ScaleRoute", "rois", params=f"scale_route_param {{ {fields} }}"),
    )
    compare_with_reference(tmp_path, text, {"rois": rois}, tolerance=0)


def test_proposal_heads_output_fixed_row_when_nothing_passes(tmp_path: Path) -> None:
    params = "box_output_param { fg_thr: 100 field_h: 8 field_w: 8 downsample_rate: 4 min_size: 1 }"
    text = net_text({"a": (1, 6, 3, 3)}, layer("p", "BoxOutput", "a", params=params))
    conversion, reference = compare_with_reference(
        tmp_path, text, {"a": np.zeros((1, 6, 3, 3), np.float32)}
    )
    np.testing.assert_array_equal(reference["p"].reshape(-1), [0, 1, 1, 10, 10])
    (out,) = run_module(conversion, np.zeros((1, 6, 3, 3), np.float32))
    np.testing.assert_array_equal(out.reshape(-1), [0, 1, 1, 10, 10])
