"""The one-pass numba kernels of pipeline_steps equal the numpy expressions they replace
(exactly: same float32 arithmetic), NaN pixels and float64 inputs included."""

from __future__ import annotations

import numpy as np
import pytest

from desgw.diff.pipeline_steps import _above, _relative_inputs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_above_equals_numpy(dtype):
    rng = np.random.default_rng(3)
    image = rng.normal(100.0, 10.0, (64, 48)).astype(dtype)
    image[5, 7] = np.nan
    level = rng.normal(100.0, 1.0, (64, 48)).astype(np.float32)
    rms = np.abs(rng.normal(10.0, 1.0, (64, 48))).astype(np.float32)
    nsigma = np.float32(1.3)
    want = np.subtract(image, level, dtype=np.float32) > nsigma * rms
    got = _above(image, level, rms, nsigma)
    assert got.dtype == np.bool_
    np.testing.assert_array_equal(got, want)
    assert 0 < got.sum() < got.size


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relative_inputs_equal_numpy(dtype):
    rng = np.random.default_rng(4)
    search = rng.normal(0.0, 10.0, (40, 56)).astype(dtype)
    template = rng.normal(0.0, 10.0, (40, 56)).astype(np.float32)
    search[3, 3] = np.nan
    good = rng.random((40, 56)) > 0.1
    thr = np.float32(12.0)
    rel, objects, bad = _relative_inputs(search, template, good, thr)
    np.testing.assert_array_equal(rel, np.subtract(search, template, dtype=np.float32))
    np.testing.assert_array_equal(objects.view(bool), (search > thr) | (template > thr))
    np.testing.assert_array_equal(bad, (~good).view(np.uint8))
