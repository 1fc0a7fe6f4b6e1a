"""OpenCV's layer test cases whose expected outputs were computed by real Caffe (pycaffe, CPU).

The files live in ../shared/opencv-caffe-cases (see its SOURCES.md); the tests skip when it is
absent. Each case is a one-layer net with input blob `input` and output blob `output`; layers
with weights come with the .caffemodel real Caffe saved.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from shared_dir import SHARED

from protocaffe.api import load

CASES = SHARED / "opencv-caffe-cases"

pytestmark = pytest.mark.skipif(not CASES.is_dir(), reason=f"{CASES} is absent")

# case -> tolerance relative to the largest expected magnitude. Caffe's own float32 sums run in
# another order than torch's, so the larger convolutions differ in the last bits.
CASE_TOLERANCES = {
    "layer_convolution": 1e-5,
    "layer_deconvolution": 1e-5,
    "layer_inner_product": 1e-5,
    "layer_lrn_channels": 1e-5,
    "layer_lrn_spatial": 1e-5,
    "layer_mvn": 1e-5,
    "layer_pooling_ave": 1e-6,
    "layer_pooling_max": 0.0,
    "layer_softmax": 1e-6,
}


@pytest.mark.parametrize("case", sorted(CASE_TOLERANCES))
def test_matches_real_caffe(case):
    prototxt = CASES / f"{case}.prototxt"
    caffemodel = CASES / f"{case}.caffemodel"
    own_input = CASES / f"{case}.input.npy"
    x = np.load(own_input if own_input.exists() else CASES / "blob.npy")
    expected = np.load(CASES / f"{case}.npy")
    model = load(prototxt, caffemodel if caffemodel.exists() else None)
    with torch.no_grad():
        actual = model(torch.from_numpy(x)).numpy()
    assert actual.shape == expected.shape
    err = float(np.abs(actual.astype(np.float64) - expected).max())
    assert err <= CASE_TOLERANCES[case] * float(np.abs(expected).max()), err


def test_numpy_pooling_reference_matches_real_caffe():
    """The reference's pooling, which test_layers_opencv.py trusts for what OpenCV cannot
    check, agrees with real Caffe on its AVE (padded-divisor) and MAX cases."""
    from protocaffe.verify.reference.ops.pooling import pool2d

    x = np.load(CASES / "blob.npy")
    for method in ("ave", "max"):
        expected = np.load(CASES / f"layer_pooling_{method}.npy")
        actual, _ = pool2d(x, (3, 5), (2, 1), (2, 1), average=method == "ave")
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-6)


def test_numpy_lrn_and_mvn_references_match_real_caffe():
    from protocaffe.verify.reference.ops.normalization import lrn_values, mvn_values

    x = np.load(CASES / "blob.npy")
    across = lrn_values(x, 5, 1.1, 0.75, 1.0, within=False)
    within = lrn_values(x, 5, 0.9, 0.75, 1.0, within=True)
    mvn = mvn_values(x, across_channels=False, normalize_variance=True, eps=0.1)
    np.testing.assert_allclose(across, np.load(CASES / "layer_lrn_channels.npy"), atol=1e-6)
    np.testing.assert_allclose(within, np.load(CASES / "layer_lrn_spatial.npy"), atol=1e-6)
    np.testing.assert_allclose(mvn, np.load(CASES / "layer_mvn.npy"), atol=2e-5)


def test_numpy_deconvolution_reference_matches_real_caffe():
    from protocaffe.frontend.caffemodel import read_caffemodel
    from protocaffe.verify.reference.ops.conv import col2im_deconv

    (layer,) = read_caffemodel(CASES / "layer_deconvolution.caffemodel").layers
    weight, bias = (np.asarray(b, np.float32) for b in layer.blobs)
    x = np.load(CASES / "layer_deconvolution.input.npy")
    actual = col2im_deconv(
        x, weight.reshape(12, 4, 4, 5), bias.reshape(-1), (2, 3), (0, 1), (1, 1), 3
    )
    expected = np.load(CASES / "layer_deconvolution.npy")
    np.testing.assert_allclose(actual, expected, atol=1e-5 * np.abs(expected).max())
