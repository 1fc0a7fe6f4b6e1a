"""The cases that OpenCV cannot check (see test_layers_opencv.py), run by real Caffe.

Skipped unless the real-Caffe oracle is installed (../shared/oracle/build.sh builds it into
/opt/caffe-oracle). All nets run in one pycaffe process (tests/caffe_oracle_driver.py) under the
oracle's own Python, so the whole module costs a few seconds.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from caffe_check import assert_close, build, layer, net_text, random_inputs

ORACLE = Path(os.environ.get("PROTOCAFFE_CAFFE_ORACLE", "/opt/caffe-oracle"))
DRIVER = Path(__file__).with_name("caffe_oracle_driver.py")

pytestmark = pytest.mark.skipif(
    not (ORACLE / "venv" / "bin" / "python").exists(), reason=f"no real-Caffe oracle at {ORACLE}"
)


def one(kind: str, params: str = "", shape: tuple[int, ...] = (2, 4, 9, 11)) -> str:
    return net_text({"data": shape}, layer("out", kind, "data", params=params))


def pooling(params: str, shape: tuple[int, ...]) -> str:
    return one("Pooling", f"pooling_param {{ {params} }}", shape)


def bn_factor(channels: int, factor: float) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [
        rng.normal(0, 1, channels).astype(np.float32),
        rng.uniform(0.5, 2, channels).astype(np.float32),
        np.array([factor], np.float32),
    ]


CASES: dict[str, tuple[str, dict[str, list[np.ndarray]] | None]] = {
    # Pooling: round_mode, kernel < stride with pad 0 (NaN / -FLT_MAX windows), big pads.
    "pool_max_floor": (
        pooling("pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR", (2, 3, 10, 10)),
        None,
    ),
    "pool_ave_floor_pad": (
        pooling("pool: AVE kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR", (2, 3, 10, 10)),
        None,
    ),
    "pool_max_kernel_below_stride": (
        pooling("pool: MAX kernel_size: 2 stride: 3", (1, 2, 9, 10)),
        None,
    ),
    "pool_ave_kernel_below_stride": (
        pooling("pool: AVE kernel_size: 2 stride: 3", (1, 2, 9, 10)),
        None,
    ),
    "pool_ave_kernel_1_stride_2": (
        pooling("pool: AVE kernel_size: 1 stride: 2", (1, 2, 6, 5)),
        None,
    ),
    "pool_ave_big_pad": (pooling("pool: AVE kernel_size: 3 stride: 2 pad: 2", (1, 3, 7, 8)), None),
    "pool_max_big_pad_hw": (
        pooling("pool: MAX kernel_h: 3 kernel_w: 2 pad_h: 2 pad_w: 1 stride: 1", (1, 2, 6, 5)),
        None,
    ),
    "pool_ave_last_window_clip": (
        pooling("pool: AVE kernel_size: 3 stride: 3 pad: 1", (1, 2, 5, 5)),
        None,
    ),
    "deconv_dilation": (
        one(
            "Deconvolution",
            "convolution_param { num_output: 2 kernel_size: 3 dilation: 2 stride: 2 pad: 1 }",
        ),
        None,
    ),
    "deconv_group": (
        one(
            "Deconvolution", "convolution_param { num_output: 6 kernel_size: 3 stride: 2 group: 2 }"
        ),
        None,
    ),
    "ip_transpose": (
        one("InnerProduct", "inner_product_param { num_output: 3 transpose: true }"),
        None,
    ),
    "ip_transpose_axis_2": (
        one("InnerProduct", "inner_product_param { num_output: 3 axis: 2 transpose: true }"),
        None,
    ),
    "log_params": (
        net_text(
            {"data": (2, 4, 9, 11)},
            layer("pos", "AbsVal", "data")
            + layer("out", "Log", "pos", params="log_param { base: 10 scale: 0.5 shift: 0.1 }"),
        ),
        None,
    ),
    "exp_base_2": (one("Exp", "exp_param { base: 2 scale: 0.7 shift: -0.3 }"), None),
    "bnll": (one("BNLL"), None),
    "threshold": (one("Threshold", "threshold_param { threshold: 0.3 }"), None),
    "lrn_defaults": (one("LRN"), None),
    "lrn_k": (one("LRN", "lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 }"), None),
    "lrn_within_k": (
        one("LRN", "lrn_param { norm_region: WITHIN_CHANNEL local_size: 3 k: 5 }"),
        None,
    ),
    "mvn_eps": (one("MVN", "mvn_param { eps: 0.1 }"), None),
    "mvn_across_eps": (one("MVN", "mvn_param { eps: 0.1 across_channels: true }"), None),
    "mvn_2d": (one("MVN", "", (3, 4)), None),
    "mvn_3d": (one("MVN", "", (2, 3, 5)), None),
    "bn_factor_zero": (
        one("BatchNorm", "batch_norm_param { eps: 0.01 }", (2, 4, 3, 5)),
        {"out": bn_factor(4, 0.0)},
    ),
    "bn_factor_2_5": (one("BatchNorm", "", (2, 4, 3, 5)), {"out": bn_factor(4, 2.5)}),
    "bn_local_stats": (one("BatchNorm", "batch_norm_param { use_global_stats: false }"), None),
    "bn_5d": (one("BatchNorm", "", (2, 3, 2, 3, 2)), {"out": bn_factor(3, 2.0)}),
    "scale_scalar_bias": (
        one("Scale", "scale_param { num_axes: 0 bias_term: true }", (2, 3, 4, 5)),
        None,
    ),
    "scale_axis_negative": (
        one("Scale", "scale_param { axis: -1 bias_term: true }", (2, 3, 4, 5)),
        None,
    ),
    "scale_two_bottoms_bias": (
        net_text(
            {"data": (2, 3, 4, 5), "s": (4, 5)},
            layer("out", "Scale", ["data", "s"], params="scale_param { axis: 2 bias_term: true }"),
        ),
        None,
    ),
    "bias_learned": (one("Bias", "bias_param { axis: 2 num_axes: 2 }", (2, 3, 4, 5)), None),
    "bias_two_bottoms": (
        net_text(
            {"data": (2, 3, 4, 5), "b": (2, 3)},
            layer("out", "Bias", ["data", "b"], params="bias_param { axis: 0 }"),
        ),
        None,
    ),
    "concat_dim": (
        net_text(
            {"a": (2, 3, 1, 4), "b": (2, 3, 2, 4)},
            layer("out", "Concat", ["b", "a"], params="concat_param { concat_dim: 2 }"),
        ),
        None,
    ),
    "slice_equal": (
        one("Slice", "slice_param { axis: 1 }", (2, 6, 3, 4)).replace(
            'top: "out"', 'top: "p" top: "q" top: "r"'
        ),
        None,
    ),
    "argmax_axis": (one("ArgMax", "argmax_param { axis: 1 top_k: 2 }", (2, 5, 3, 4)), None),
    "argmax_values": (
        one("ArgMax", "argmax_param { axis: 3 out_max_val: true top_k: 2 }", (2, 5, 3, 4)),
        None,
    ),
    "argmax_no_axis": (one("ArgMax", "argmax_param { top_k: 3 }", (2, 5, 3, 4)), None),
    "argmax_no_axis_values": (
        one("ArgMax", "argmax_param { out_max_val: true top_k: 3 }", (2, 5, 3, 4)),
        None,
    ),
    "reduction_asum": (
        one("Reduction", "reduction_param { operation: ASUM axis: 2 }", (2, 3, 4, 5)),
        None,
    ),
    "reduction_mean_coeff": (
        one("Reduction", "reduction_param { operation: MEAN axis: -1 coeff: -2 }", (2, 3, 4, 5)),
        None,
    ),
    "reduction_sumsq_all": (
        one("Reduction", "reduction_param { operation: SUMSQ coeff: 0.5 }", (2, 3, 4, 5)),
        None,
    ),
    "tile_axis_1": (one("Tile", "tile_param { tiles: 3 }", (2, 3, 4, 5)), None),
    "tile_axis_negative": (one("Tile", "tile_param { axis: -2 tiles: 2 }", (2, 3, 4, 5)), None),
    "reshape_insert": (
        one("Reshape", "reshape_param { shape { dim: 1 } axis: 1 num_axes: 0 }", (2, 3, 4, 5)),
        None,
    ),
    "flatten_axis_0": (one("Flatten", "flatten_param { axis: 0 }", (2, 3, 4, 5)), None),
    "crop_axis_1": (
        net_text(
            {"data": (2, 5, 9, 11), "ref": (2, 3, 4, 5)},
            layer(
                "out",
                "Crop",
                ["data", "ref"],
                params="crop_param { axis: 1 offset: 1 offset: 2 offset: 3 }",
            ),
        ),
        None,
    ),
}


# The golden nets that live in the repository (OpenCV cannot run edge_cases).
REPO = Path(__file__).resolve().parents[1]
for golden_net in ("inception_block", "resnet_block", "legacy_v1", "edge_cases"):
    CASES[f"golden_{golden_net}"] = (
        (REPO / "tests" / "fixtures" / f"{golden_net}.prototxt").read_text(),
        None,
    )
CASES["golden_tinynet"] = ((REPO / "examples" / "tinynet" / "deploy.prototxt").read_text(), None)


@pytest.fixture(scope="module")
def real_caffe(tmp_path_factory):
    """Build every case, run them all in one pycaffe process, and return each case's run,
    inputs and Caffe's outputs (or the reason Caffe gave none)."""
    root = tmp_path_factory.mktemp("real_caffe")
    runs = {}
    for name, (text, blobs) in CASES.items():
        folder = root / name
        folder.mkdir()
        run = build(folder, text, blobs=blobs)
        inputs = random_inputs(run)
        (folder / "outputs.txt").write_text("\n".join(run.output_names))
        np.savez(folder / "inputs.npz", **inputs)
        runs[name] = (run, inputs, folder)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONNOUSERSITE": "1",
        "PYTHONPATH": str(ORACLE / "install" / "python"),
        "LD_LIBRARY_PATH": str(ORACLE / "install" / "lib"),
        "GLOG_minloglevel": "2",
        "OPENBLAS_NUM_THREADS": "1",
    }
    folders = [str(runs[name][2]) for name in CASES]
    driver = subprocess.run(
        [str(ORACLE / "venv" / "bin" / "python"), str(DRIVER), *folders],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    (root / "driver.log").write_text(driver.stderr)
    return runs


@pytest.mark.parametrize("name", list(CASES))
def test_matches_real_caffe(real_caffe, name):
    run, inputs, folder = real_caffe[name]
    if (folder / "error.txt").exists():
        pytest.fail(f"real Caffe refused the net: {(folder / 'error.txt').read_text()}")
    log = (folder.parent / "driver.log").read_text()[-2000:]
    assert (folder / "outputs.npz").exists(), f"real Caffe did not run this net:\n{log}"
    theirs = np.load(folder / "outputs.npz")
    ours = run.ours(inputs)
    for blob in run.output_names:
        assert_close(ours[blob], theirs[blob], tol=2e-5, what=blob)
