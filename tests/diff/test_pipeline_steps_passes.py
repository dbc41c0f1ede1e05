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


@pytest.mark.parametrize("grow", [0, 4])
def test_relative_sky_equals_the_background_estimate(grow):
    """relative_sky (sep's mesh level with the objects and unusable pixels left out, no rms
    map) is exactly the level estimate_background gives the same difference, objects grown
    by grow_objects and unusable pixels as mask bit 1 (the former code)."""
    from dataclasses import replace

    from desgw.diff.pipeline_steps import grow_objects, relative_sky
    from desgw.diff.pipeline_types import DiffConfig
    from desgw.se.background import BackgroundConfig, estimate_background

    rng = np.random.default_rng(5)
    ny, nx = 256, 192
    yy, xx = np.mgrid[0:ny, 0:nx]
    search = rng.normal(0.5 + 0.01 * xx, 10.0).astype(np.float32)
    template = rng.normal(0.0, 8.0, (ny, nx)).astype(np.float32)
    for x, y in rng.uniform(5, 180, (25, 2)):
        search += (900.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 5.0)).astype(np.float32)
    good = rng.random((ny, nx)) > 0.05
    good[50:60, :] = False
    cfg = DiffConfig(background=replace(BackgroundConfig(), mesh=32, object_grow=grow))
    got = relative_sky(search, template, good, 10.0, cfg)

    thr = np.float32(cfg.object_sigma * 10.0)
    objects = (search > thr) | (template > thr)
    want = estimate_background(
        np.subtract(search, template, dtype=np.float32), (~good).astype(np.uint8),
        objects=grow_objects(objects, grow),
        config=BackgroundConfig(mesh=32, filter=cfg.background.filter, mask_bits=1,
                                object_grow=0)).level
    assert got.dtype == np.float32 and got.shape == (ny, nx)
    np.testing.assert_array_equal(got, want)
    assert np.ptp(got) > 0.1  # the gradient is there
