"""The diagnoses of verify/compare.py on synthetic blobs whose defect is known by construction."""

from __future__ import annotations

import numpy as np

from protocaffe.verify.compare import (
    Tolerance,
    comparable,
    diagnose_affine,
    diagnose_combination,
    diagnose_permutation,
    diagnose_shape,
    errors,
    within,
)

RNG = np.random.default_rng(7)
REF = RNG.standard_normal((2, 6, 5, 4)).astype(np.float32)
TOL = Tolerance()


def test_errors_are_relative_to_the_largest_magnitude() -> None:
    ours = REF.copy()
    ours[0, 0, 0, 0] += 1e-3
    err = errors(ours, REF)
    assert np.isclose(err.max_abs, 1e-3, rtol=1e-3)
    assert np.isclose(err.max_rel, err.max_abs / np.abs(REF).max())
    assert not within(err, TOL) and within(errors(REF, REF), TOL)


def test_nan_in_ours_only_is_an_infinite_error() -> None:
    ours = REF.copy()
    ours[1, 1, 1, 1] = np.nan
    assert errors(ours, REF).max_abs == float("inf")


def test_unit_axes_do_not_make_a_shape_mismatch() -> None:
    flat = REF.reshape(2, 120)
    assert comparable(flat, REF.reshape(2, 120, 1, 1)) is not None
    assert comparable(flat, REF.reshape(4, 60)) is None


def test_pooling_off_by_one_names_the_rounding_mode() -> None:
    assert "rounding mode" in diagnose_shape("Pooling", (1, 8, 5, 5), (1, 8, 6, 6))
    assert "cannot be compared" in diagnose_shape("Convolution", (1, 8, 5, 5), (1, 4, 5, 5))


def test_channels_in_another_order_name_concat_or_slice() -> None:
    swapped = np.concatenate([REF[:, 3:], REF[:, :3]], axis=1)
    found = diagnose_permutation(swapped, REF, TOL)
    assert found is not None and "concat or slice order" in found
    assert diagnose_permutation(REF, REF, TOL) is None
    assert diagnose_permutation(REF * 2, REF, TOL) is None


def test_scale_and_shift_name_batchnorm_or_scale() -> None:
    found = diagnose_affine(REF * 1.5 + 0.25, REF, TOL)
    assert found is not None and "ours = 1.5 * reference + 0.25" in found
    per_channel = REF * np.linspace(0.5, 2.0, 6, dtype=np.float32)[None, :, None, None]
    found = diagnose_affine(per_channel, REF, TOL)
    assert found is not None and "per channel" in found and "BatchNorm" in found
    assert diagnose_affine(np.tanh(REF), REF, TOL) is None


def test_eltwise_coefficients_are_recovered() -> None:
    other = RNG.standard_normal(REF.shape).astype(np.float32)
    found = diagnose_combination(REF + 0.25 * other, [REF, other], [1.0, 0.5], TOL)
    assert found is not None and "[1, 0.25]" in found
    assert diagnose_combination(REF + 0.5 * other, [REF, other], [1.0, 0.5], TOL) is None


def test_errors_count_equal_non_finite_values_as_equal() -> None:
    from protocaffe.verify.compare import errors

    ours = np.array([1.0, np.nan, np.inf, 2.0], np.float32)
    same = np.array([1.0, np.nan, np.inf, 2.5], np.float32)
    err = errors(ours, same)
    assert (err.max_abs, err.ref_max) == (0.5, 2.5)
    for other in ([1.0, 0.0, np.inf, 2.0], [1.0, np.nan, -np.inf, 2.0]):
        assert errors(ours, np.array(other, np.float32)).max_abs == float("inf")
    # Blobs larger than one chunk are measured whole.
    big = np.zeros(3_000_001, np.float32)
    moved = big.copy()
    moved[-1] = 0.25
    assert errors(big, moved).max_abs == 0.25
