"""The corpus's fork nets: each converts, and the segmentation nets (which OpenCV cannot load)
match the numpy references layer by layer, at input sizes other than the declared ones."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from forks_support import (
    CORPUS,
    convert_random,
    corpus_net,
    load_module,
    relative_error,
    run_capturing,
)

from protocaffe.api import convert
from protocaffe.errors import ProtocaffeError
from protocaffe.frontend.caffemodel import read_caffemodel
from protocaffe.ir.graph import Node, Value
from protocaffe.verify.reference.ops.normalization import bn_pspnet, bn_segnet
from protocaffe.verify.reference.ops.pooling import pool2d
from protocaffe.verify.reference.ops.resample import interp_values, unpool

FORK_NETS = {
    "colorization-v2": None,
    "deeplab-v2-vgg16-aspp": {"data": (1, 3, 513, 513)},
    "enet-cityscapes": None,
    "mobilenet-ssd": None,
    "opencv-face-detector-res10-ssd": None,
    "pspnet50-ade20k": None,
    "se-resnet-50": None,
    "segnet-camvid-webdemo": None,
    "shufflenet-v1-1x-g3": None,
    "shufflenet-v2-1x": None,
    "ssd-vgg16-voc0712-300": None,
    "yufacedetectnet-v2": None,
}


@pytest.mark.parametrize("name", sorted(FORK_NETS))
def test_fork_net_converts(name: str) -> None:
    conversion = convert(corpus_net(name), input_shapes=FORK_NETS[name])
    compile(conversion.source, name, "exec")


def test_python_layer_is_one_clear_error() -> None:
    with pytest.raises(ProtocaffeError) as caught:
        convert(corpus_net("faster-rcnn-vgg16-voc"))
    (diagnostic,) = caught.value.diagnostics
    text = str(diagnostic)
    assert 'layer "proposal" (Python)' in text and "deploy.prototxt:461" in text
    assert "'Custom layers' in the protocaffe README" in text


def test_colorization_returns_its_silenced_result() -> None:
    conversion = convert(corpus_net("colorization-v2"))
    assert [v.blob for v in conversion.graph.outputs] == ["class8_ab"]


def _check_fork_nodes(
    nodes: list[Node], values: dict[Value, np.ndarray], blobs: dict[str, list[np.ndarray]]
) -> dict[str, int]:
    """Each BN, masked Pooling, Upsample and Interp node's output against the numpy reference
    applied to the node's own inputs."""
    checked: dict[str, int] = {}
    for node in nodes:
        inputs = [values[v] for v in node.inputs]
        out = values[node.outputs[0]]
        attrs = node.attrs
        if node.op == "BN":
            if attrs.dialect == "pspnet":
                expected = bn_pspnet(inputs[0], *blobs[node.name], eps=attrs.eps)
            else:
                expected = bn_segnet(inputs[0], *blobs[node.name], learn=False)
            np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
        elif node.op == "Pooling" and len(node.outputs) == 2:
            k, s, p = attrs.kernel[0], attrs.stride[0], attrs.pad[0]  # type: ignore[attr-defined]
            pooled, mask = pool2d(inputs[0], (k, k), (s, s), (p, p), False, attrs.ceil)  # type: ignore[attr-defined]
            np.testing.assert_array_equal(out, pooled)
            np.testing.assert_array_equal(values[node.outputs[1]].astype(np.float32), mask)
        elif node.op == "Upsample":
            height, width = out.shape[2:]
            np.testing.assert_array_equal(out, unpool(inputs[0], inputs[1], height, width))
        elif node.op == "Interp":
            kwargs = {
                "zoom": attrs.zoom_factor,  # type: ignore[attr-defined]
                "shrink": attrs.shrink_factor,  # type: ignore[attr-defined]
                "height": attrs.height,  # type: ignore[attr-defined]
                "width": attrs.width,  # type: ignore[attr-defined]
            }
            expected = interp_values(inputs[0], **kwargs)
            np.testing.assert_allclose(out, expected, rtol=0, atol=2e-6 * np.abs(expected).max())
        else:
            continue
        checked[node.op] = checked.get(node.op, 0) + 1
    return checked


def _run_layer_by_layer(
    name: str, tmp: Path, run_shape: tuple[int, ...], convert_shapes: dict | None = None
) -> tuple[dict[str, int], dict[Value, np.ndarray], object]:
    conversion, weights = convert_random(corpus_net(name), tmp, convert_shapes)
    model = load_module(conversion)
    image = np.random.default_rng(0).standard_normal(run_shape).astype(np.float32)
    values = run_capturing(conversion, model, [image])
    blobs = {
        layer.name: [np.asarray(b, dtype=np.float32) for b in layer.blobs]
        for layer in read_caffemodel(weights).layers
    }
    return _check_fork_nodes(list(conversion.graph.nodes), values, blobs), values, conversion


def test_segnet_layer_by_layer_at_another_size(tmp_path: Path) -> None:
    """Declared 360x480 (upsample_h/w written for it); run at 72x100: the masks' indices and
    the unpooled sizes follow the pooled tensors."""
    checked, values, conversion = _run_layer_by_layer(
        "segnet-camvid-webdemo", tmp_path, (1, 3, 72, 100)
    )
    assert checked == {"BN": 25, "Pooling": 5, "Upsample": 5}
    (output,) = conversion.graph.outputs  # type: ignore[attr-defined]
    assert values[output].shape[2:] == (72, 100)


def test_enet_layer_by_layer_at_another_size(tmp_path: Path) -> None:
    checked, values, conversion = _run_layer_by_layer("enet-cityscapes", tmp_path, (1, 3, 64, 128))
    assert checked == {"BN": 3, "Pooling": 2, "Upsample": 2}  # two of its 3 pools have masks
    (output,) = conversion.graph.outputs  # type: ignore[attr-defined]
    assert values[output].shape[2:] == (64, 128)


@pytest.mark.slow
def test_pspnet_layer_by_layer(tmp_path: Path) -> None:
    """PSPNet's pyramid pools to fixed kernels, so it runs only near its declared 473x473;
    473x476 is another size it accepts (its stride-8 map is 60x60 at both, so the final zoom
    Interp gives 473x473 again)."""
    checked, values, conversion = _run_layer_by_layer("pspnet50-ade20k", tmp_path, (1, 3, 473, 476))
    assert checked == {"BN": 60, "Interp": 5}
    (output,) = conversion.graph.outputs  # type: ignore[attr-defined]
    assert values[output].shape[2:] == (473, 473)


def test_corpus_folder_is_present_or_skipped() -> None:
    if not CORPUS.is_dir():
        pytest.skip("no corpus")
    assert (CORPUS / "SOURCES.md").is_file()


def _swap_axpy_operands(text: str) -> str:
    """OpenCV 4.x imports Axpy as bottom[0] * bottom[2] + bottom[1], while SENet's layer is
    bottom[0] * bottom[1] + bottom[2] (axpy_layer.cpp: top = y, then axpy(a, x)); giving OpenCV
    the two operands swapped makes it compute SENet's value."""
    pattern = re.compile(
        r'(type: "Axpy"\s*bottom: "[^"]+"\s*)bottom: "([^"]+)"(\s*)bottom: "([^"]+)"'
    )
    swapped, count = pattern.subn(r'\1bottom: "\4"\3bottom: "\2"', text)
    assert count > 0
    return swapped


@pytest.mark.parametrize("name", ["shufflenet-v1-1x-g3", "shufflenet-v2-1x", "se-resnet-50"])
def test_mobile_nets_match_opencv_per_blob(name: str, tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    prototxt = corpus_net(name)
    conversion, weights = convert_random(prototxt, tmp_path)
    image = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    ours = run_capturing(conversion, load_module(conversion), [image])
    for_opencv = tmp_path / "opencv.prototxt"
    text = prototxt.read_text()
    for_opencv.write_text(_swap_axpy_operands(text) if "Axpy" in text else text)
    net = cv2.dnn.readNetFromCaffe(str(for_opencv), str(weights))
    net.enableFusion(False)
    net.setInput(image)
    names = [node.name for node in conversion.graph.nodes]
    worst = 0.0
    for node, reference in zip(conversion.graph.nodes, net.forward(names), strict=True):
        worst = max(worst, relative_error(ours[node.outputs[0]], np.asarray(reference)))
    assert worst < 5e-5


def test_deeplab_matches_opencv_per_blob_at_another_size(tmp_path: Path) -> None:
    """OpenCV loads DeepLab once its data layer is an input and the .mat writer and Silence are
    gone; then every blob, Interp included, compares, at a size other than the converted one."""
    cv2 = pytest.importorskip("cv2")
    source = corpus_net("deeplab-v2-vgg16-aspp")
    conversion, weights = convert_random(source, tmp_path, {"data": (1, 3, 65, 65)})
    blocks = re.split(r"(?m)^(?=layer\s*\{)", source.read_text())
    kept = [
        b
        for b in blocks
        if b.lstrip().startswith("layer")
        and not re.search(r'type:\s*"(ImageSegData|MatWrite|Silence)"', b)
    ]
    for_opencv = tmp_path / "opencv.prototxt"
    for_opencv.write_text(
        'input: "data"\ninput_shape { dim: 1 dim: 3 dim: 65 dim: 65 }\n' + "".join(kept)
    )
    image = np.random.default_rng(0).standard_normal((1, 3, 97, 81)).astype(np.float32)
    ours = run_capturing(conversion, load_module(conversion), [image])
    net = cv2.dnn.readNetFromCaffe(str(for_opencv), str(weights))
    net.enableFusion(False)
    net.setInput(image)
    names = [node.name for node in conversion.graph.nodes]
    worst = 0.0
    for node, reference in zip(conversion.graph.nodes, net.forward(names), strict=True):
        worst = max(worst, relative_error(ours[node.outputs[0]], np.asarray(reference)))
    assert worst < 5e-5
    assert _check_fork_nodes(list(conversion.graph.nodes), ours, {}) == {"Interp": 1}
