"""Seeded random one-layer nets for the layer types of issue 15 (the rest of the Caffe zoo):
odd sizes, random parameters in the spellings Caffe reads, and some nets Caffe refuses.

`ORACLE_CASES[type](rng, i)` builds case i of a type real Caffe (the shared oracle) runs;
`TRANSCRIBED_CASES[type]` those of types it lacks (BVLC master's Clip and Swish, the `Lstm`
forks, crnn.caffe's ContinuationIndicator), which the tests check against the numpy
reference's transcription of their C++. `RECURRENT_MATRIX` is issue 15's LSTM/RNN grid.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from oracle_runner import Case, layer, net_text

Rng = np.random.Generator


def _odd(rng: Rng, low: int = 1, high: int = 9) -> int:
    return int(rng.choice([v for v in range(low, high + 1) if v % 2 == 1]))


def _x(rng: Rng, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    return rng.normal(0, scale, shape).astype(np.float32)


def _f(rng: Rng, lo: float, hi: float) -> float:
    return round(float(rng.uniform(lo, hi)), 3)


def _one(
    name: str, kind: str, params: str, shape: tuple[int, ...], rng: Rng, scale: float = 1.0
) -> Case:
    text = net_text({"data": shape}, layer("out", kind, "data", params=params))
    return Case(name, text, {"data": _x(rng, shape, scale)}, seed=int(rng.integers(1 << 30)))


def _nd(rng: Rng, low: int = 1, high: int = 4) -> tuple[int, ...]:
    return tuple(int(rng.integers(1, 6)) for _ in range(int(rng.integers(low, high + 1))))


# --- Recurrent ---------------------------------------------------------------------------


def _uniform(rng: Rng, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    bound = 1.0 / np.sqrt(max(fan_in, 1))
    return rng.uniform(-bound, bound, shape).astype(np.float32)


def recurrent_case(
    kind: str,
    steps: int,
    batch: int,
    expose: bool,
    rng: Rng,
    name: str,
    static: bool = False,
    features: tuple[int, ...] = (5,),
    hidden: int = 7,
    cont_values: str = "binary",
) -> Case:
    """An LSTM or RNN net: x (T, N, features), cont with 0 at t = 0 (with expose_hidden 1 in
    stream 0 and some others, which then start from h_0 / c_0) and zeros mid-sequence in
    some streams, optionally x_static and (expose_hidden) h_0 / c_0 inputs and h_T / c_T tops.
    The weights are given (uniform, fan-in scaled: the gates do not saturate)."""
    states = ["h_0", "c_0"] if kind == "LSTM" else ["h_0"]
    x_shape = (steps, batch, *features)
    shapes: dict[str, tuple[int, ...]] = {"x": x_shape, "cont": (steps, batch)}
    cont = np.ones((steps, batch), np.float32)
    cont[0] = 0
    if expose:  # stream 0 (and some others) continue from the given h_0 / c_0
        cont[0] = (rng.random(batch) < 0.5).astype(np.float32)
        cont[0, 0] = 1
    for n in range(batch):  # a new sequence starts mid-way in stream 0 and most others
        if steps > 2 and (n == 0 or rng.random() < 0.7):
            cont[int(rng.integers(1, steps)), n] = 0
    if cont_values == "real":  # Caffe scales by cont, whatever its value
        cont = (cont * rng.uniform(0.2, 1.5, cont.shape)).astype(np.float32)
    inputs = {"x": _x(rng, x_shape), "cont": cont}
    bottoms = ["x", "cont"]
    if static:
        shapes["x_static"] = (batch, 3, 2)
        inputs["x_static"] = _x(rng, (batch, 3, 2))
        bottoms.append("x_static")
    tops = ["y"]
    if expose:
        for state in states:
            shapes[state] = (1, batch, hidden)
            inputs[state] = _x(rng, (1, batch, hidden), 0.5)
            bottoms.append(state)
        tops += [s.replace("_0", "_T") for s in states]
    params = f"recurrent_param {{ num_output: {hidden} expose_hidden: {str(expose).lower()} }}"
    text = net_text(shapes, layer("rnn", kind, bottoms, tops, params=params))
    gates = 4 * hidden if kind == "LSTM" else hidden
    size = int(np.prod(features))
    blobs = [_uniform(rng, (gates, size), size), _uniform(rng, (gates,), hidden)]
    if static:
        blobs.append(_uniform(rng, (gates, 6), 6))
    blobs.append(_uniform(rng, (gates, hidden), hidden))
    if kind == "RNN":
        blobs += [_uniform(rng, (hidden, hidden), hidden), _uniform(rng, (hidden,), hidden)]
    return Case(name, text, inputs, blobs={"rnn": blobs}, rtol=1e-4, atol=1e-5)


# Issue 15's grid: LSTM and RNN, lengths 1, 7 and 20, batches 1 and 3, with and without
# expose_hidden, cont zeros mid-sequence.
RECURRENT_MATRIX = [
    (kind, steps, batch, expose)
    for kind in ("LSTM", "RNN")
    for steps in (1, 7, 20)
    for batch in (1, 3)
    for expose in (False, True)
]


def recurrent_matrix() -> list[Case]:
    cases = []
    for kind, steps, batch, expose in RECURRENT_MATRIX:
        rng = np.random.default_rng([15, steps, batch, int(expose), len(kind)])
        name = f"{kind}-T{steps}-N{batch}-{'exposed' if expose else 'hidden'}"
        cases.append(recurrent_case(kind, steps, batch, expose, rng, name))
    return cases


def recurrent(kind: str) -> Callable[[Rng, int], Case]:
    """Beyond the grid: x_static, features over several axes, real-valued cont."""

    def make(rng: Rng, i: int) -> Case:
        return recurrent_case(
            kind,
            int(rng.integers(1, 9)),
            int(rng.integers(1, 4)),
            bool(rng.random() < 0.5),
            rng,
            f"{kind}-{i}",
            static=i % 2 == 0,
            features=(3, 2) if i % 3 == 1 else (int(rng.integers(1, 6)),),
            hidden=int(rng.integers(1, 9)),
            cont_values="real" if i % 4 == 3 else "binary",
        )

    return make


def lstm_unit(rng: Rng, i: int) -> Case:
    batch, hidden = int(rng.integers(1, 5)), int(rng.integers(1, 7))
    cont = (rng.random((1, batch)) < 0.7).astype(np.float32)
    if i % 2:
        cont *= rng.uniform(0.1, 2, cont.shape).astype(np.float32)
    inputs = {
        "c_prev": _x(rng, (1, batch, hidden)),
        "gates": _x(rng, (1, batch, 4 * hidden), 2.0),
        "cont": cont,
    }
    text = net_text(
        {k: v.shape for k, v in inputs.items()},
        layer("unit", "LSTMUnit", ["c_prev", "gates", "cont"], ["c", "h"]),
    )
    return Case(f"LSTMUnit-{i}", text, inputs, rtol=1e-5, atol=1e-6)


# --- Other BVLC types --------------------------------------------------------------------


def embed(rng: Rng, i: int) -> Case:
    input_dim, num_output = int(rng.integers(1, 9)), int(rng.integers(1, 6))
    shape = _nd(rng, 1, 3)
    bias = "bias_term: false" if i % 3 == 2 else ""
    params = f"embed_param {{ num_output: {num_output} input_dim: {input_dim} {bias} }}"
    case = _one(f"Embed-{i}", "Embed", params, shape, rng)
    # Indices with fractions: Caffe truncates them (static_cast<int>).
    case.inputs["data"] = (rng.integers(0, input_dim, shape) + rng.uniform(0, 0.99, shape)).astype(
        np.float32
    )
    return case


def spp(rng: Rng, i: int) -> Case:
    height = int(rng.integers(1, 4))
    smallest = 2 ** (height - 1) * 2  # enough rows that every level's pad stays below its kernel
    shape = (
        int(rng.integers(1, 3)),
        int(rng.integers(1, 4)),
        int(rng.integers(smallest, smallest + 12)),
        int(rng.integers(smallest, smallest + 12)),
    )
    pool = str(rng.choice(["MAX", "AVE"]))
    if i % 5 == 4:  # too small for its pyramid: Caffe aborts on pad >= kernel
        shape, height = (1, 2, 3, 3), 3
    params = f"spp_param {{ pyramid_height: {height} pool: {pool} }}"
    return _one(f"SPP-{i}", "SPP", params, shape, rng)


def parameter(rng: Rng, i: int) -> Case:
    shape = _nd(rng, 1, 4)
    dims = " ".join(f"dim: {d}" for d in shape)
    text = net_text(
        {"data": shape},
        layer("p", "Parameter", [], params=f"parameter_param {{ shape {{ {dims} }} }}")
        + layer("out", "Eltwise", ["data", "p"], params="eltwise_param { operation: PROD }"),
    )
    return Case(f"Parameter-{i}", text, {"data": _x(rng, shape)}, seed=int(rng.integers(1 << 30)))


def im2col(rng: Rng, i: int) -> Case:
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), _odd(rng, 3, 11), _odd(rng, 3, 11))
    kh, kw = (int(v) for v in rng.integers(1, 5, 2))
    forms = [
        f"kernel_size: {kh}",
        f"kernel_h: {kh} kernel_w: {kw}",
        f"kernel_size: {kh} kernel_size: {kw}",
    ]
    parts = [forms[i % 3], f"stride: {int(rng.integers(1, 4))}"]
    if rng.random() < 0.6:
        parts.append(f"pad: {int(rng.integers(0, 3))}")
    if rng.random() < 0.3:
        parts.append(f"dilation: {int(rng.integers(1, 3))}")
    if i % 7 == 6:  # issue 15: a 2x2 kernel on a 1x1 map still gives one column (C++ division)
        shape, parts = (1, 2, 1, 1), ["kernel_size: 2", "stride: 2"]
    params = f"convolution_param {{ {' '.join(parts)} }}"
    return _one(f"Im2col-{i}", "Im2col", params, shape, rng)


def batch_reindex(rng: Rng, i: int) -> Case:
    shape = _nd(rng, 1, 4)
    count = int(rng.integers(1, 7))
    index = (rng.integers(0, shape[0], count) + rng.uniform(0, 0.99, count)).astype(np.float32)
    if i % 5 == 4:
        index[0] = shape[0]  # Caffe aborts: greater than the batch size
    text = net_text(
        {"data": shape, "index": (count,)}, layer("out", "BatchReindex", ["data", "index"])
    )
    return Case(f"BatchReindex-{i}", text, {"data": _x(rng, shape), "index": index}, exact=True)


def filter_(rng: Rng, i: int) -> Case:
    items = int(rng.integers(1, 6))
    shapes = [(items, *_nd(rng, 0, 3)) for _ in range(int(rng.integers(1, 3)))]
    selector_shape = (items,) + (1,) * int(rng.integers(0, 3))
    selector = (rng.random(selector_shape) < 0.6).astype(np.float32)
    selector[0] = 1  # at least one item (an empty top is another test)
    if i % 4 == 3:
        selector = selector * np.float32(-2.5)  # any non-zero value selects
    names = [f"x{j}" for j in range(len(shapes))]
    inputs = {n: _x(rng, s) for n, s in zip(names, shapes, strict=True)}
    inputs["sel"] = selector
    text = net_text(
        {**{n: s for n, s in zip(names, shapes, strict=True)}, "sel": selector_shape},
        layer("out", "Filter", [*names, "sel"], [f"y{j}" for j in range(len(names))]),
    )
    return Case(f"Filter-{i}", text, inputs, exact=True)


def dummy_data(rng: Rng, i: int) -> Case:
    """DummyData as the net's input (its shape fields size it); the data is fed by name."""
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 5)), _odd(rng), _odd(rng))
    if i % 2:
        spelled = f"num: {shape[0]} channels: {shape[1]} height: {shape[2]} width: {shape[3]}"
    else:
        spelled = "shape { " + " ".join(f"dim: {d}" for d in shape) + " }"
    tops = ["data", "label"] if i % 3 == 2 else ["data"]
    text = 'name: "t"\n' + layer(
        "input", "DummyData", [], tops, params=f"dummy_data_param {{ {spelled} }}"
    )
    text += layer("out", "TanH", "data")
    return Case(f"DummyData-{i}", text, {"data": _x(rng, shape)}, seed=i)


# --- The oracle build's (brocolli-caffe) types ---------------------------------------------


def pad(rng: Rng, i: int) -> Case:
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), _odd(rng, 3, 9), _odd(rng, 3, 9))
    mode = ["CONSTANT", "REPLICATE", "REFLECT"][i % 3]
    h, w = shape[2:]
    if i % 6 == 5:  # all four negative: a crop
        pads = [-int(rng.integers(1, h // 2 + 1)), -1, -int(rng.integers(1, w // 2 + 1)), -1]
    else:
        limit = (h - 1, h - 1, w - 1, w - 1) if mode == "REFLECT" else (4, 4, 4, 4)
        pads = [int(rng.integers(0, lim + 1)) for lim in limit]
    value = f"pad_value: {_f(rng, -2, 2)}" if mode == "CONSTANT" and rng.random() < 0.6 else ""
    params = (
        f"pad_param {{ pad_type: {mode} pad_u: {pads[0]} pad_d: {pads[1]} pad_l: {pads[2]} "
        f"pad_r: {pads[3]} {value} }}"
    )
    return _one(f"Pad-{i}", "Pad", params, shape, rng)


def pixel_shuffle(rng: Rng, i: int) -> Case:
    r = int(rng.integers(1, 4))
    channels = r * r * int(rng.integers(1, 4))
    if i % 4 == 3 and r > 1:
        channels += r  # divisible by r, not r^2: Caffe reads only the first channels
    shape = (int(rng.integers(1, 3)), channels, _odd(rng, 1, 7), _odd(rng, 1, 7))
    params = f"pixelshuffle_param {{ upscale_factor: {r} }}"
    case = _one(f"PixelShuffle-{i}", "PixelShuffle", params, shape, rng)
    case.exact = True
    return case


def hard_sigmoid(rng: Rng, i: int) -> Case:
    parts = []
    if rng.random() < 0.5:
        parts.append(f"alpha: {_f(rng, 0.05, 1)}")
    if rng.random() < 0.5:
        parts.append(f"beta: {_f(rng, -0.5, 1)}")
    params = f"hardsigmoid_param {{ {' '.join(parts)} }}"
    return _one(f"HardSigmoid-{i}", "HardSigmoid", params, _nd(rng, 1, 4), rng, scale=4.0)


def hard_swish(rng: Rng, i: int) -> Case:
    return _one(f"HardSwish-{i}", "HardSwish", "", _nd(rng, 1, 4), rng, scale=5.0)


def unsqueeze(rng: Rng, i: int) -> Case:
    shape = _nd(rng, 1, 4)
    dim = int(rng.integers(-len(shape) - 1, len(shape) + 1))
    case = _one(f"Unsqueeze-{i}", "Unsqueeze", f"unsqueeze_param {{ dim: {dim} }}", shape, rng)
    case.exact = True
    return case


def resize(rng: Rng, i: int) -> Case:
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), _odd(rng, 1, 9), _odd(rng, 1, 9))
    if i % 3 == 2:
        params = (
            f"resize_param {{ is_pyramid_test: true out_height_scale: {_f(rng, 0.5, 3)} "
            f"out_width_scale: {_f(rng, 0.5, 3)} }}"
        )
        if shape[2] * 0.5 < 1 or shape[3] * 0.5 < 1:
            shape = shape[:2] + (shape[2] + 2, shape[3] + 2)
    else:
        params = (
            f"resize_param {{ height: {int(rng.integers(1, 20))} "
            f"width: {int(rng.integers(1, 20))} }}"
        )
    return _one(f"Resize-{i}", "Resize", params, shape, rng)


def bilinear_interpolate(rng: Rng, i: int) -> Case:
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), _odd(rng, 1, 9), _odd(rng, 1, 9))
    align = i % 2 == 0
    if i % 3 == 2:
        factor = _f(rng, 0.6, 3)
        shape = shape[:2] + (shape[2] + 3, shape[3] + 3)
        size = f"scale_factor: {factor}"
    else:
        low = 2 if align else 1
        size = f"dst_h: {int(rng.integers(low, 20))} dst_w: {int(rng.integers(low, 20))}"
    params = f"bilinear_interpolate_param {{ {size} align_corners: {str(align).lower()} }}"
    return _one(f"BilinearInterpolate-{i}", "BilinearInterpolate", params, shape, rng)


def max_unpool(rng: Rng, i: int) -> Case:
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), _odd(rng, 3, 11), _odd(rng, 3, 11))
    k, s = int(rng.integers(2, 4)), int(rng.integers(1, 3))
    h, w = shape[2:]
    grow = int(rng.integers(0, 3))
    text = net_text(
        {"data": shape},
        layer(
            "pool",
            "Pooling",
            "data",
            ["pool", "mask"],
            params=f"pooling_param {{ pool: MAX kernel_size: {k} stride: {s} }}",
        )
        + layer(
            "out",
            "MaxUnPool",
            ["pool", "mask"],
            params=f"max_unpool_param {{ dst_h: {h + grow} dst_w: {w + grow} }}",
        ),
    )
    return Case(f"MaxUnPool-{i}", text, {"data": _x(rng, shape)}, exact=True)


def proposal(rng: Rng, i: int) -> Case:
    ratios = sorted({_f(rng, 0.3, 3) for _ in range(int(rng.integers(1, 4)))})
    scales = sorted({float(rng.choice([2, 4, 8, 16, 32])) for _ in range(int(rng.integers(1, 4)))})
    anchors = len(ratios) * len(scales)
    num, height, width = int(rng.integers(1, 3)), _odd(rng, 3, 9), _odd(rng, 3, 9)
    stride = int(rng.choice([4, 8, 16]))
    scores = rng.uniform(0.01, 1, (num, 2 * anchors, height, width)).astype(np.float32)
    deltas = _x(rng, (num, 4 * anchors, height, width), 0.3)
    info = np.array([[height * stride, width * stride, 1.0]], np.float32)
    parts = [f"ratio: {r}" for r in ratios] + [f"scale: {s}" for s in scales]
    parts += [
        f"feat_stride: {stride}",
        f"base_size: {int(rng.choice([8, 16]))}",
        f"min_size: {int(rng.integers(0, 24))}",
        f"pre_nms_topn: {int(rng.integers(20, 400))}",
        f"post_nms_topn: {int(rng.integers(5, 60))}",
        f"nms_thresh: {_f(rng, 0.3, 0.8)}",
    ]
    tops = ["rois", "scores"] if i % 2 == 0 else ["rois"]
    text = net_text(
        {"cls": scores.shape, "bbox": deltas.shape, "im_info": info.shape},
        layer(
            "out",
            "Proposal",
            ["cls", "bbox", "im_info"],
            tops,
            params=(f"proposal_param {{ {' '.join(parts)} }}"),
        ),
    )
    inputs = {"cls": scores, "bbox": deltas, "im_info": info}
    return Case(f"Proposal-{i}", text, inputs, rtol=1e-5, atol=1e-5)


def refused() -> list[Case]:
    """Nets real Caffe refuses (a CHECK fails): protocaffe and the reference must refuse them."""
    x = np.random.default_rng(15).normal(size=(2, 4, 5, 5)).astype(np.float32)
    seq = np.random.default_rng(16).normal(size=(3, 2, 4)).astype(np.float32)
    cont = np.ones((3, 2), np.float32)
    image = {"data": (2, 4, 5, 5)}
    nets = {
        "pad-in-place": (image, layer("p", "Pad", "data", "data", params="pad_param { pad_u: 1 }")),
        "unsqueeze-dim": (
            image,
            layer("u", "Unsqueeze", "data", params="unsqueeze_param { dim: 6 }"),
        ),
        "unsqueeze-no-dim": (image, layer("u", "Unsqueeze", "data")),
        "pixelshuffle-channels": (
            image,
            layer("s", "PixelShuffle", "data", params="pixelshuffle_param { upscale_factor: 3 }"),
        ),
        "embed-no-input-dim": (
            image,
            layer("e", "Embed", "data", params="embed_param { num_output: 2 }"),
        ),
        "im2col-kernel-h-only": (
            image,
            layer("i", "Im2col", "data", params="convolution_param { kernel_h: 2 }"),
        ),
        "resize-no-width": (
            image,
            layer("r", "Resize", "data", params="resize_param { height: 3 }"),
        ),
        "maxunpool-no-size": (image, layer("m", "MaxUnPool", ["data", "data"])),
        "filter-selector-shape": (
            {"data": (2, 4, 5, 5), "sel": (2, 3)},
            layer("f", "Filter", ["data", "sel"], "y"),
        ),
        "lstm-cont-shape": (
            {"x": (3, 2, 4), "cont": (3, 1)},
            layer("l", "LSTM", ["x", "cont"], params="recurrent_param { num_output: 3 }"),
        ),
        "lstm-2d-x": (
            {"x": (3, 2), "cont": (3, 2)},
            layer("l", "LSTM", ["x", "cont"], params="recurrent_param { num_output: 3 }"),
        ),
        "lstm-exposed-missing": (
            {"x": (3, 2, 4), "cont": (3, 2)},
            layer(
                "l",
                "LSTM",
                ["x", "cont"],
                ["h", "hT", "cT"],
                params="recurrent_param { num_output: 3 expose_hidden: true }",
            ),
        ),
        "rnn-no-num-output": ({"x": (3, 2, 4), "cont": (3, 2)}, layer("r", "RNN", ["x", "cont"])),
        "lstmunit-gates": (
            {"c": (1, 2, 3), "g": (1, 2, 11), "k": (1, 2)},
            layer("u", "LSTMUnit", ["c", "g", "k"], ["c2", "h2"]),
        ),
    }
    cases = []
    for name, (shapes, body) in nets.items():
        inputs = {}
        for blob, shape in shapes.items():
            source = seq if blob == "x" and shape == seq.shape else None
            if blob == "cont" and shape == cont.shape:
                source = cont
            inputs[blob] = source if source is not None else np.ones(shape, np.float32)
        if "data" in inputs and inputs["data"].shape == x.shape:
            inputs["data"] = x
        cases.append(Case(f"refused-{name}", net_text(shapes, body), inputs))
    return cases


def batch_norm_kyle(rng: Rng, i: int) -> Case:
    """Stored or batch statistics, with and without alpha/beta, ranks 2 to 6 (6 takes the
    flattened path), eps from the default to 0.1."""
    parts = []
    if i % 2 == 1:
        parts.append("use_alpha_beta: true")
    if i % 3 != 2:
        parts.append(f"use_global_stats: {'true' if i % 3 == 0 else 'false'}")
    if rng.random() < 0.5:
        parts.append(f"eps: {_f(rng, 0.001, 0.1)}")
    params = f"batch_norm_param {{ {' '.join(parts)} }}"
    shape = _nd(rng, 2, 6 if i % 5 == 4 else 5)
    return _one(f"BatchNormKyle-{i}", "BatchNormKyle", params, shape, rng, scale=3.0)


ORACLE_CASES: dict[str, Callable[[Rng, int], Case]] = {
    "BatchNormKyle": batch_norm_kyle,
    "LSTM": recurrent("LSTM"),
    "RNN": recurrent("RNN"),
    "LSTMUnit": lstm_unit,
    "Embed": embed,
    "SPP": spp,
    "Parameter": parameter,
    "Im2col": im2col,
    "BatchReindex": batch_reindex,
    "Filter": filter_,
    "DummyData": dummy_data,
    "Pad": pad,
    "PixelShuffle": pixel_shuffle,
    "HardSigmoid": hard_sigmoid,
    "HardSwish": hard_swish,
    "Unsqueeze": unsqueeze,
    "Resize": resize,
    "BilinearInterpolate": bilinear_interpolate,
    "MaxUnPool": max_unpool,
    "Proposal": proposal,
}


# --- Types real Caffe (the oracle) lacks: checked against the reference's transcriptions ----


def clip(rng: Rng, i: int) -> Case:
    low = _f(rng, -2, 1)
    high = low + _f(rng, -0.5, 2) if i % 4 == 3 else low + _f(rng, 0, 2)  # min > max at times
    params = f"clip_param {{ min: {low} max: {high} }}"
    return _one(f"Clip-{i}", "Clip", params, _nd(rng, 1, 4), rng, scale=2.0)


def swish(rng: Rng, i: int) -> Case:
    params = "" if i % 3 == 0 else f"swish_param {{ beta: {_f(rng, -2, 3)} }}"
    return _one(f"Swish-{i}", "Swish", params, _nd(rng, 1, 4), rng, scale=3.0)


def fork_lstm(rng: Rng, i: int) -> Case:
    """CTPN's (T, N, I) layout, junhyukoh's (T * N, I) rows, with and without a clip input."""
    hidden, steps = int(rng.integers(1, 8)), int(rng.integers(1, 9))
    rows = i % 2 == 1
    clip_given = i % 3 == 2
    batch = 1 if clip_given else int(rng.integers(1, 4))
    features = int(rng.integers(1, 6))
    shape = (steps * batch, features) if rows else (steps, batch, features)
    params = f"num_output: {hidden}" + (f" batch_size: {batch}" if rows else "")
    shapes: dict[str, tuple[int, ...]] = {"data": shape}
    inputs = {"data": _x(rng, shape)}
    bottoms = ["data"]
    if clip_given:
        shapes["clip"] = (steps, 1)
        clip_values = np.ones((steps, 1), np.float32)
        clip_values[0] = 0
        if steps > 3:
            clip_values[steps // 2] = 0
        inputs["clip"] = clip_values
        bottoms.append("clip")
    text = net_text(shapes, layer("lstm", "Lstm", bottoms, params=f"lstm_param {{ {params} }}"))
    blobs = [
        _uniform(rng, (4 * hidden, features), features),
        _uniform(rng, (4 * hidden, hidden), hidden),
        _uniform(rng, (4 * hidden,), hidden),
    ]
    return Case(f"Lstm-{i}", text, inputs, blobs={"lstm": blobs}, rtol=1e-4, atol=1e-5)


def continuation_indicator(rng: Rng, i: int) -> Case:
    """crnn.caffe's (batch_size given) and, for odd i, deepdetect's (the batch from x's axis)."""
    steps, batch = int(rng.integers(1, 9)), int(rng.integers(1, 4))
    if i % 2:
        axis = 1 if i % 4 == 1 else -2
        indicator = layer(
            "indicator",
            "ContinuationIndicator",
            "x",
            params=f"continuation_indicator_param {{ time_step: {steps} axis: {axis} }}",
        )
    else:
        indicator = layer(
            "indicator",
            "ContinuationIndicator",
            [],
            params=f"continuation_indicator_param {{ time_step: {steps} batch_size: {batch} }}",
        )
    text = net_text(
        {"x": (steps, batch, 3)},
        indicator
        + layer("lstm", "LSTM", ["x", "indicator"], params="recurrent_param { num_output: 4 }"),
    )
    blobs = [_uniform(rng, (16, 3), 3), _uniform(rng, (16,), 4), _uniform(rng, (16, 4), 4)]
    return Case(
        f"ContinuationIndicator-{i}",
        text,
        {"x": _x(rng, (steps, batch, 3))},
        blobs={"lstm": blobs},
        rtol=1e-4,
        atol=1e-5,
    )


TRANSCRIBED_CASES: dict[str, Callable[[Rng, int], Case]] = {
    "Clip": clip,
    "Swish": swish,
    "Lstm": fork_lstm,
    "ContinuationIndicator": continuation_indicator,
}


def generate(
    table: dict[str, Callable[[Rng, int], Case]], per_type: int, seed: int = 15
) -> list[Case]:
    cases = []
    for kind, make in table.items():
        for i in range(per_type):
            cases.append(make(np.random.default_rng([seed, sum(map(ord, kind)), i]), i))
    return cases
