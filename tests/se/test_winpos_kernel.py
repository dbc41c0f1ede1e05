"""Windowed centroids (measure_kernels.winpos_all): the chord-trimmed sums against the
per-pixel definition, the zeroed-data path (no bad-pixel test) against the masked one, and
the centre of symmetric stars."""

from __future__ import annotations

import numpy as np
import pytest

from desgw.se.measure_kernels import winpos_all


def _moffat(shape, xs, ys, fluxes, fwhm, beta):
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(np.float64)
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    img = np.zeros(shape)
    for x, y, f in zip(xs, ys, fluxes):
        r2 = ((xx - x) ** 2 + (yy - y) ** 2) / alpha ** 2
        img += f * (beta - 1.0) / (np.pi * alpha ** 2) * (1.0 + r2) ** -beta
    return img


def _winpos_reference(data, bad, x, y, sig, max_iter):
    """The definition, pixel by pixel: 2-D Gaussian weights over the pixels within 4 sig."""
    ny, nx = data.shape
    yy, xx = np.mgrid[:ny, :nx].astype(np.float64)
    it = 0
    while it < max_iter:
        dx, dy = xx - x, yy - y
        sel = (dx * dx + dy * dy <= (4.0 * sig) ** 2) & ~bad
        w = np.exp(-(dx * dx + dy * dy) / (2.0 * sig * sig))[sel] * data[sel]
        sw = w.sum()
        it += 1
        if sw <= 0:
            return x, y, 0
        ddx, ddy = 2.0 * (w * dx[sel]).sum() / sw, 2.0 * (w * dy[sel]).sum() / sw
        x, y = x + ddx, y + ddy
        if ddx * ddx + ddy * ddy < 1e-8:
            break
    return x, y, it


@pytest.mark.parametrize("fwhm,beta", [(3.0, 2.5), (5.0, 3.5), (8.0, 4.5)])
def test_winpos_matches_per_pixel_definition(fwhm, beta):
    rng = np.random.default_rng(int(fwhm * 10 + beta))
    shape = (160, 150)
    n = 8
    xs = rng.uniform(5, shape[1] - 5, n)  # some windows cross the edges
    ys = rng.uniform(5, shape[0] - 5, n)
    img = _moffat(shape, xs, ys, rng.uniform(2e3, 5e4, n), fwhm, beta)
    img += rng.normal(0.0, 10.0, shape)
    bad = rng.random(shape) < 0.03
    bad[:, 70] = True  # a bad column through some windows
    data = np.where(bad, 0.0, img).astype(np.float32)
    x0 = xs + rng.normal(0, 0.7, n)
    y0 = ys + rng.normal(0, 0.7, n)
    sig = np.full(n, 2.0 / 2.35 * 0.6 * fwhm)
    xw, yw, it = winpos_all(data, bad, x0, y0, sig, 16)
    ref = np.array([_winpos_reference(data, bad, x0[i], y0[i], sig[i], 16) for i in range(n)])
    np.testing.assert_array_equal(it, ref[:, 2].astype(np.int32))
    np.testing.assert_allclose(xw, ref[:, 0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(yw, ref[:, 1], rtol=0, atol=1e-9)
    # data already 0 on the bad pixels: the untested path gives the same bits
    xz, yz, iz = winpos_all(data, bad, x0, y0, sig, 16, False)
    assert np.array_equal(xz, xw) and np.array_equal(yz, yw) and np.array_equal(iz, it)
    # the centroid finds the isolated stars away from the edges and the bad column
    dist = np.hypot(xs[:, None] - xs[None, :], ys[:, None] - ys[None, :]) + 1e9 * np.eye(n)
    edge = np.minimum(np.minimum(xs, shape[1] - 1 - xs), np.minimum(ys, shape[0] - 1 - ys))
    iso = (dist.min(axis=1) > 5 * fwhm) & (edge > 4 * sig) & (np.abs(xs - 70) > 2 * fwhm)
    assert iso.sum() >= 2
    assert np.all(np.hypot(xw - xs, yw - ys)[iso] < 0.05 * fwhm)


def test_winpos_centre_of_noiseless_symmetric_star():
    shape = (61, 61)
    xc, yc = 30.3, 29.8
    img = _moffat(shape, [xc], [yc], [1e5], 4.0, 3.0).astype(np.float32)
    bad = np.zeros(shape, bool)
    xw, yw, it = winpos_all(img, bad, np.array([31.0]), np.array([29.0]),
                            np.array([2.0 / 2.35 * 2.0]), 16)
    assert 0 < it[0] < 16
    assert abs(xw[0] - xc) < 2e-3 and abs(yw[0] - yc) < 2e-3


def test_winpos_failure_keeps_start():
    data = np.full((40, 40), -1.0, np.float32)
    bad = np.zeros((40, 40), bool)
    xw, yw, it = winpos_all(data, bad, np.array([20.2]), np.array([19.7]), np.array([2.0]), 16)
    assert it[0] == 0 and xw[0] == 20.2 and yw[0] == 19.7
