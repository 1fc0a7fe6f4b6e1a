"""Fuzzed nets: random valid nets from the standard layers must match OpenCV's Caffe importer
(cv2.dnn, fusion off) on every layer's output.

The strategy grows a net layer by layer over the blobs defined so far, so the layers come in
dataflow order and form a random DAG; it picks layer types, parameters, in-place updates (only on
a blob no layer has read yet, as Caffe requires) and the order of Concat/Eltwise bottoms. The
generated module's forward() is re-run with every assignment recorded, and each layer's local
is compared with OpenCV's output of the same layer.
"""

from __future__ import annotations

import ast
import itertools
import math
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from caffe_fuzz.aliasing import stale_reads
from caffe_fuzz.compare import layers_of, parse_net
from hypothesis import example, given, note, reject, settings
from hypothesis import strategies as st
from opencv_ref import OpenCVWorker

from protocaffe.api import Conversion, convert
from protocaffe.errors import ProtocaffeError
from protocaffe.random_weights import random_weights

pytest.importorskip("cv2")

Shape = tuple[int, ...]


@dataclass
class NetBuilder:
    """A prototxt under construction, with the shape of every blob (computed here, from
    Caffe's rules, not by protocaffe)."""

    shapes: dict[str, Shape] = field(default_factory=dict)
    read: set[str] = field(default_factory=set)  # blobs some layer has read since last written
    lines: list[str] = field(default_factory=list)
    count: int = 0

    def blob(self) -> str:
        return f"b{len(self.shapes)}"

    def add(
        self,
        kind: str,
        bottoms: list[str],
        tops: list[str],
        tops_shapes: list[Shape],
        params: str = "",
    ) -> None:
        name = f"l{self.count}"
        self.count += 1
        text = [f'layer {{ name: "{name}" type: "{kind}"']
        text += [f'  bottom: "{b}"' for b in bottoms]
        text += [f'  top: "{t}"' for t in tops]
        if params:
            text.append("  " + params)
        text.append("}")
        self.lines.append("\n".join(text))
        self.read.update(bottoms)
        for top, shape in zip(tops, tops_shapes, strict=True):
            self.shapes[top] = shape
            self.read.discard(top)

    def text(self, input_shape: Shape) -> str:
        dims = " ".join(f"dim: {d}" for d in input_shape)
        head = 'name: "fuzz"\nlayer { name: "data" type: "Input" top: "data"\n'
        head += f"  input_param {{ shape {{ {dims} }} }} }}\n"
        return head + "\n".join(self.lines) + "\n"


def conv_size(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - (d * (k - 1) + 1)) // s + 1


def pool_size(size: int, k: int, s: int, p: int) -> int:
    out = math.ceil((size + 2 * p - k) / s) + 1
    if p > 0 and (out - 1) * s >= size + p:
        out -= 1
    return out


ACTIVATIONS = ["ReLU", "Sigmoid", "TanH", "ELU", "AbsVal", "Power", "PReLU", "Dropout"]


def add_layer(draw: Any, net: NetBuilder) -> None:
    blobs = sorted(net.shapes)
    four_d = [b for b in blobs if len(net.shapes[b]) == 4]
    kind = draw(
        st.sampled_from(
            [
                "Convolution",
                "Deconvolution",
                "Pooling",
                "InnerProduct",
                "Softmax",
                "LRN",
                "BatchNorm",
                "Scale",  # OpenCV has no Bias layer: layers tests cover it
                "Eltwise",
                "Concat",
                "Slice",
                "Split",
                "Crop",
                "Flatten",
                "Reshape",
                *ACTIVATIONS,
            ]
        )
    )
    # OpenCV runs these on 4-D blobs only (BatchNorm, Scale and PReLU fail on 2-D ones).
    spatial = ("Convolution", "Deconvolution", "Pooling", "LRN", "Crop", "BatchNorm", "Scale")
    if kind in (*spatial, "PReLU") and not four_d:
        kind = "ReLU"
    pool = four_d if kind in (*spatial, "PReLU") else blobs
    bottom = draw(st.sampled_from(pool))
    shape = net.shapes[bottom]
    in_place_ok = bottom not in net.read and bottom != "data"

    def out_top(elementwise: bool) -> str:
        if elementwise and in_place_ok and draw(st.booleans()):
            return bottom
        return net.blob()

    if kind in ACTIVATIONS or kind in ("BatchNorm", "Scale"):
        params = ""
        if kind == "ReLU" and draw(st.booleans()):
            params = f"relu_param {{ negative_slope: {draw(st.sampled_from([0.1, 0.5, 2.0]))} }}"
        elif kind == "ELU":
            params = f"elu_param {{ alpha: {draw(st.sampled_from([0.5, 1.0, 2.0]))} }}"
        elif kind == "Power":
            power = draw(st.sampled_from([1.0, 2.0, 3.0]))
            scale = draw(st.sampled_from([1.0, 0.5, -2.0]))
            shift = draw(st.sampled_from([0.0, 1.0, -0.5]))
            params = f"power_param {{ power: {power} scale: {scale} shift: {shift} }}"
        elif kind == "PReLU":
            # channel_shared: its weight is a 0-D blob in Caffe's files, which OpenCV 4 cannot
            # load; real Caffe checks it (test_fuzz_regressions.py, cause 1).
            if len(shape) < 2:
                kind = "TanH"
        elif kind == "BatchNorm":
            if len(shape) < 2:
                kind = "Sigmoid"
            else:
                params = f"batch_norm_param {{ eps: {draw(st.sampled_from([1e-5, 1e-3, 0.1]))} }}"
        elif kind == "Scale":
            params = f"scale_param {{ bias_term: {str(draw(st.booleans())).lower()} }}"
        net.add(kind, [bottom], [out_top(True)], [shape], params)
        return
    if kind in ("Convolution", "Deconvolution"):
        n, c, h, w = shape
        groups = [g for g in (1, 2, 3) if c % g == 0]
        group = draw(st.sampled_from(groups))
        num_output = group * draw(st.integers(1, 3))
        kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
        ph, pw = draw(st.integers(0, 1)), draw(st.integers(0, 1))
        dil = draw(st.integers(1, 2))
        if group > 1 and dil > 1 and (ph or pw):
            # OpenCV 4.14 gets grouped, dilated, padded convolutions wrong (checked against
            # numpy in test_grouped_dilated_padded_convolution_matches_numpy).
            dil = 1
        if kind == "Deconvolution":
            # OpenCV ignores dilation in Deconvolution (its output is 2 wide where Caffe's is 3)
            # and misplaces the output when pad_h != pad_w: compare only what it gets right.
            dil, pw = 1, ph
            # It also misplaces the output when pad >= kernel.
            ph = pw = min(ph, kh - 1, kw - 1)
        if kind == "Convolution":
            oh, ow = conv_size(h, kh, sh, ph, dil), conv_size(w, kw, sw, pw, dil)
        else:
            oh = sh * (h - 1) + dil * (kh - 1) + 1 - 2 * ph
            ow = sw * (w - 1) + dil * (kw - 1) + 1 - 2 * pw
        if min(oh, ow) <= 0 or max(oh, ow) > 24:
            return
        bias = str(draw(st.booleans())).lower()
        params = (
            f"convolution_param {{ num_output: {num_output} kernel_h: {kh} kernel_w: {kw} "
            f"stride_h: {sh} stride_w: {sw} pad_h: {ph} pad_w: {pw} dilation: {dil} "
            f"group: {group} bias_term: {bias} }}"
        )
        net.add(kind, [bottom], [net.blob()], [(n, num_output, oh, ow)], params)
        return
    if kind == "Pooling":
        n, c, h, w = shape
        method = draw(st.sampled_from(["MAX", "AVE"]))
        if draw(st.integers(0, 4)) == 0:
            params = f"pooling_param {{ pool: {method} global_pooling: true }}"
            net.add(kind, [bottom], [net.blob()], [(n, c, 1, 1)], params)
            return
        k = draw(st.integers(1, 4))
        s = draw(st.integers(1, 3))
        p = draw(st.integers(0, k - 1))
        oh, ow = pool_size(h, k, s, p), pool_size(w, k, s, p)
        if min(oh, ow) <= 0:
            return
        if p == 0 and ((oh - 1) * s >= h or (ow - 1) * s >= w):
            # The last window starts past the input: Caffe gives -FLT_MAX (MAX) or 0/0 (AVE),
            # OpenCV gives 0. Real-Caffe tests cover this; OpenCV is no reference here.
            return
        params = f"pooling_param {{ pool: {method} kernel_size: {k} stride: {s} pad: {p} }}"
        net.add(kind, [bottom], [net.blob()], [(n, c, oh, ow)], params)
        return
    if kind == "InnerProduct":
        num_output = draw(st.integers(1, 6))
        bias = str(draw(st.booleans())).lower()
        params = f"inner_product_param {{ num_output: {num_output} bias_term: {bias} }}"
        if len(shape) < 2:
            return
        net.add(kind, [bottom], [net.blob()], [(shape[0], num_output)], params)
        return
    if kind == "Softmax":
        if len(shape) < 2:
            return
        axis = draw(st.integers(1, len(shape) - 1))
        net.add(kind, [bottom], [net.blob()], [shape], f"softmax_param {{ axis: {axis} }}")
        return
    if kind == "LRN":
        size = draw(st.sampled_from([1, 3, 5]))
        region = draw(st.sampled_from(["ACROSS_CHANNELS", "WITHIN_CHANNEL"]))
        alpha = draw(st.sampled_from([1e-4, 0.1, 1.0]))
        beta = draw(st.sampled_from([0.75, 0.5]))
        params = (
            f"lrn_param {{ local_size: {size} alpha: {alpha} beta: {beta} norm_region: {region} }}"
        )
        net.add(kind, [bottom], [net.blob()], [shape], params)
        return
    if kind in ("Eltwise", "Concat"):
        if kind == "Eltwise":
            same = [b for b in blobs if net.shapes[b] == shape]
        else:
            same = [
                b
                for b in blobs
                if len(net.shapes[b]) == len(shape)
                and net.shapes[b][:1] + net.shapes[b][2:] == shape[:1] + shape[2:]
            ]
        others = draw(st.lists(st.sampled_from(same), min_size=1, max_size=2))
        bottoms = draw(st.permutations([bottom, *others]))
        if kind == "Eltwise":
            op = draw(st.sampled_from(["SUM", "PROD", "MAX"]))
            params = f"eltwise_param {{ operation: {op}"
            if op == "SUM" and draw(st.booleans()):
                coeffs = draw(
                    st.lists(st.sampled_from([1.0, -1.0, 0.5, 2.0]), min_size=3, max_size=3)
                )
                params += "".join(f" coeff: {c}" for c in coeffs[: len(bottoms)])
            net.add(kind, bottoms, [net.blob()], [shape], params + " }")
        else:
            total = sum(net.shapes[b][1] for b in bottoms)
            out = shape[:1] + (total,) + shape[2:]
            net.add(kind, bottoms, [net.blob()], [out], "concat_param { axis: 1 }")
        return
    if kind == "Slice":
        if len(shape) < 2 or shape[1] < 2:
            return
        c = shape[1]
        points = sorted(draw(st.sets(st.integers(1, c - 1), min_size=1, max_size=min(2, c - 1))))
        bounds = [0, *points, c]
        tops = [f"{net.blob()}_{i}" for i in range(len(points) + 1)]
        shapes = [shape[:1] + (b - a,) + shape[2:] for a, b in itertools.pairwise(bounds)]
        params = "slice_param { axis: 1" + "".join(f" slice_point: {p}" for p in points) + " }"
        net.add(kind, [bottom], tops, shapes, params)
        return
    if kind == "Split":
        top = net.blob()
        net.add(kind, [bottom], [top + "_0", top + "_1"], [shape, shape])
        return
    if kind == "Crop":
        n, c, h, w = shape
        refs = [
            b
            for b in four_d
            if net.shapes[b][:2] == (n, c)
            and net.shapes[b][2] <= h
            and net.shapes[b][3] <= w
            and b != bottom
        ]
        if not refs:
            return
        ref = draw(st.sampled_from(refs))
        rh, rw = net.shapes[ref][2:]
        oh, ow = draw(st.integers(0, h - rh)), draw(st.integers(0, w - rw))
        params = f"crop_param {{ axis: 2 offset: {oh} offset: {ow} }}"
        net.add(kind, [bottom, ref], [net.blob()], [(n, c, rh, rw)], params)
        return
    if kind == "Flatten":
        if len(shape) < 2:
            return
        net.add(kind, [bottom], [net.blob()], [(shape[0], math.prod(shape[1:]))])
        return
    if kind == "Reshape":
        if len(shape) != 4:
            return
        n, c, h, w = shape
        if draw(st.booleans()):
            dims, out = "dim: 0 dim: -1", (n, c * h * w)
        else:
            dims, out = "dim: 0 dim: 0 dim: -1 dim: 1", (n, c, h * w, 1)
        net.add(kind, [bottom], [net.blob()], [out], f"reshape_param {{ shape {{ {dims} }} }}")
        return
    raise AssertionError(kind)


@st.composite
def nets(draw: Any) -> tuple[str, Shape]:
    shape = (
        draw(st.integers(1, 2)),
        draw(st.integers(1, 6)),
        draw(st.integers(1, 9)),
        draw(st.integers(1, 9)),
    )
    net = NetBuilder()
    net.shapes["data"] = shape
    for _ in range(draw(st.integers(1, 8))):
        add_layer(draw, net)
    if net.count == 0:
        net.add("ReLU", ["data"], [net.blob()], [shape])
    return net.text(shape), shape


def recorded_forward(conversion: Conversion) -> tuple[Any, dict[str, torch.Tensor]]:
    """The generated module, with forward() rewritten to record a copy of every local it
    assigns (a later line may compute in place into it: a ReLU after a BatchNorm)."""
    tree = ast.parse(conversion.source)
    record: dict[str, torch.Tensor] = {}
    for cls in tree.body:
        if isinstance(cls, ast.ClassDef) and cls.name == conversion.class_name:
            forward = next(f for f in cls.body if getattr(f, "name", "") == "forward")
            assert isinstance(forward, ast.FunctionDef)
            body: list[ast.stmt] = []
            for arg in forward.args.args[1:]:
                body.append(ast.parse(f"RECORD[{arg.arg!r}] = SNAP({arg.arg})").body[0])
            for stmt in forward.body:
                body.append(stmt)
                if isinstance(stmt, ast.Assign):
                    target = stmt.targets[0]
                    for name in target.elts if isinstance(target, ast.Tuple) else [target]:
                        assert isinstance(name, ast.Name)
                        body.append(ast.parse(f"RECORD[{name.id!r}] = SNAP({name.id})").body[0])
            forward.body = body
    module = types.ModuleType("fuzzed")
    module.__dict__["RECORD"] = record
    module.__dict__["SNAP"] = lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else v
    exec(compile(ast.fix_missing_locations(tree), "<fuzzed>", "exec"), module.__dict__)
    return getattr(module, conversion.class_name)(), record


def check_against_opencv(
    opencv: OpenCVWorker, tmp: Path, text: str, shape: Shape, seed: int
) -> None:
    proto = tmp / "net.prototxt"
    weights = tmp / "net.caffemodel"
    proto.write_text(text)
    note(text)
    random_weights(proto, weights, seed=seed)
    conversion = convert(proto, weights)
    model, record = recorded_forward(conversion)
    assert conversion.state_dict is not None
    model.load_state_dict(conversion.state_dict, strict=True)
    model.eval()
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    with torch.no_grad():
        model(torch.from_numpy(x))

    layers = list(conversion.graph.nodes)
    if not layers:  # only identities (Split, Dropout), which the passes removed
        return
    names = [f"{node.name}\0{node.outputs[0].blob}" for node in layers]
    expected = opencv.forward(str(proto), str(weights), x, names)
    if isinstance(expected, str):  # a net OpenCV cannot run is no evidence either way
        note(expected)
        reject()
    for node, want in zip(layers, expected, strict=True):
        local = conversion.emitted.locals[node.outputs[0]]
        got = record[local].numpy()
        want = np.asarray(want).reshape(node.outputs[0].shape)
        scale = 1.0 + float(np.nanmax(np.abs(want))) if want.size else 1.0
        np.testing.assert_allclose(
            got, want, rtol=1e-4, atol=2e-5 * scale, err_msg=f"layer {node.name} ({node.op})"
        )


@pytest.fixture(scope="module")
def opencv() -> Iterator[OpenCVWorker]:
    worker = OpenCVWorker()
    yield worker
    worker.close()


TANH_THEN_LRN = """name: "fuzz"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 2 dim: 5 dim: 2 dim: 6 } } }
layer { name: "l0" type: "TanH" bottom: "data" top: "b1" }
layer { name: "l1" type: "LRN" bottom: "b1" top: "b2"
  lrn_param { local_size: 5 alpha: 1.0 beta: 0.5 norm_region: WITHIN_CHANNEL } }
layer { name: "l2" type: "Sigmoid" bottom: "b2" top: "b2" }
layer { name: "l3" type: "AbsVal" bottom: "b1" top: "b3" }
"""


# The fuzzer runs several times as many nets as the profile's default (they are quick).
@settings(max_examples=6 * settings.default.max_examples)
@given(net=nets(), seed=st.integers(0, 2**16))
# Found by this test: TanH, Sigmoid and AbsVal emitted the identity.
@example(net=(TANH_THEN_LRN, (2, 5, 2, 6)), seed=249)
def test_fuzzed_net_matches_opencv(
    opencv: OpenCVWorker,
    tmp_path_factory: pytest.TempPathFactory,
    net: tuple[str, Shape],
    seed: int,
) -> None:
    text, shape = net
    if stale_reads(layers_of(parse_net(text))):
        # A reader of memory an in-place layer wrote through another blob (issue 13 cause 5):
        # protocaffe follows Caffe there (checked against the oracle in
        # test_fuzz_regressions.py); OpenCV follows the dataflow.
        reject()
    try:
        check_against_opencv(opencv, tmp_path_factory.mktemp("fuzz"), text, shape, seed)
    except ProtocaffeError as exc:
        # The generator may run a layer in place where real Caffe aborts (AbsVal, Flatten,
        # Reshape, Split; a write after another layer read the blob): protocaffe refuses such a
        # net with Caffe's CHECK, in one located line, as test_fuzz_regressions.py checks
        # against the oracle. OpenCV runs it, so there is nothing to compare.
        if "Caffe aborts here" not in str(exc) and "in place" not in str(exc):
            raise
        reject()


def test_grouped_dilated_padded_convolution_matches_numpy(tmp_path: Path) -> None:
    """The case where the fuzzer found OpenCV wrong: checked against Caffe's convolution
    written out in numpy (zero padding, dilation, one kernel per group)."""
    proto = tmp_path / "conv.prototxt"
    weights = tmp_path / "conv.caffemodel"
    proto.write_text(
        'name: "conv"\n'
        'layer { name: "data" type: "Input" top: "data"\n'
        "  input_param { shape { dim: 1 dim: 2 dim: 7 dim: 7 } } }\n"
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"\n'
        "  convolution_param { num_output: 4 kernel_size: 3 pad_h: 0 pad_w: 1 dilation: 2\n"
        "    group: 2 } }\n"
    )
    random_weights(proto, weights, seed=3)
    conversion = convert(proto, weights)
    model, _ = recorded_forward(conversion)
    assert conversion.state_dict is not None
    model.load_state_dict(conversion.state_dict, strict=True)
    state = conversion.state_dict
    w = state["conv.weight"].numpy()
    bias = state["conv.bias"].numpy()
    x = np.random.default_rng(3).standard_normal((1, 2, 7, 7)).astype(np.float32)
    padded = np.pad(x, ((0, 0), (0, 0), (0, 0), (1, 1)))
    out_h, out_w = 7 - 4, 7 + 2 - 4
    want = np.zeros((1, 4, out_h, out_w), np.float64)
    for o in range(4):
        group = o // 2
        for i in range(out_h):
            for j in range(out_w):
                window = padded[0, group, i : i + 5 : 2, j : j + 5 : 2]
                want[0, o, i, j] = (window * w[o, 0]).sum() + bias[o]
    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
