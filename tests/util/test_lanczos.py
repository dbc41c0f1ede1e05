"""The one Lanczos kernel (desgw.util.lanczos): exact polynomial reproduction, the table, the
compiled shift taps, and the accuracy of PSF-stamp shifts against analytically shifted stars
(Gaussian and Moffat, 3.3-5.5 px FWHM), compared with the plain normalised Lanczos kernel the
PSF model used before."""

import numpy as np
import pytest

from desgw.se.psf_lanczos import extract_matrix, lanczos_taps, shift_matrix, shift_stamp
from desgw.util.lanczos import (
    interpolation_matrix,
    lanczos_kernel,
    lanczos_table,
    lanczos_weights,
    shift_taps,
)


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_weights_reproduce_cubics_and_keep_the_lanczos_shape(order):
    t = np.random.default_rng(order).uniform(0, 1, 200)
    w = lanczos_weights(t, order)
    m = np.arange(-(order - 1), order + 1)
    d = t[:, None] - m[None, :]
    for p in range(4):
        assert np.allclose((w * d**p).sum(axis=1), 1.0 if p == 0 else 0.0, atol=1e-12), p
    # a quartic is not reproduced (the correction is the smallest one, not an exact fit)
    assert np.abs((w * d**4).sum(axis=1)).max() > 1e-3
    # the correction is small against the Lanczos weights themselves
    plain = lanczos_kernel(d, order)
    assert np.abs(w - plain).max() < 0.06
    # integer positions are the identity
    assert np.allclose(lanczos_weights([0.0], order)[0], (m == 0).astype(float), atol=1e-15)


def test_table_rows_are_the_weights():
    tab = lanczos_table(3)
    assert tab.dtype == np.float32 and not tab.flags.writeable
    k = np.array([0, 1, 777, 4096, 8191, 8192])
    assert np.allclose(tab[k], lanczos_weights(k / 8192.0, 3), atol=1e-7)


@pytest.mark.parametrize("shift", [-1.0, -0.73, -0.5, -0.1, 0.0, 0.2, 0.5, 0.99, 1.0])
def test_shift_taps_match_the_shift_matrix(shift):
    order, n = 4, 21
    w = shift_taps(shift, order)
    assert w.shape == (2 * order + 1,) and w.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.allclose(lanczos_taps(shift, order), w)
    mat = shift_matrix(n, shift, order)
    i = n // 2
    row = np.array([mat[i, i - m] for m in range(-order, order + 1)])
    assert np.allclose(row, w, atol=1e-14)
    # a ramp moves by exactly the shift (cubic reproduction) away from the ends
    ramp = np.arange(n, dtype=float) ** 3
    assert np.allclose((mat @ ramp)[order + 1:-order - 1],
                       (np.arange(n) - shift)[order + 1:-order - 1] ** 3, atol=1e-9)


def test_extract_matrix_recentres_and_rows_sum_to_one():
    n, order, off = 15, 4, 0.37
    m = extract_matrix(n, off, order)
    assert m.shape == (n, n + 2 * order)
    assert np.allclose(m.sum(axis=1), 1.0)
    x = np.arange(n + 2 * order, dtype=float)
    assert np.allclose(m @ x, np.arange(n) + order + off, atol=1e-12)
    assert np.allclose(interpolation_matrix(np.arange(n) + order + off, n + 2 * order, order,
                                            normalise_rows=True), m)
    # positions beyond the ends read nothing; one just inside reads only the pixels there
    far = interpolation_matrix([-20.0, -order + 0.5, n + 30.0], n, order)
    assert np.all(far[[0, 2]] == 0) and np.all(far[1, 1:] == 0) and far[1, 0] != 0


def _star(n, fwhm, x0, y0, beta=None):
    """Pixel-integrated (8 x 8 sub-samples) Gaussian or Moffat of unit flux at (x0, y0)."""
    y, x = np.mgrid[:n, :n].astype(float)
    off = (np.arange(8) + 0.5) / 8 - 0.5
    img = np.zeros((n, n))
    for a in off:
        for b in off:
            r2 = (x + a - x0) ** 2 + (y + b - y0) ** 2
            if beta is None:
                img += np.exp(-r2 / (2 * (fwhm / 2.3548) ** 2))
            else:
                alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
                img += (1 + r2 / alpha**2) ** (-beta)
    return img / img.sum()


def _plain_shift(n, s, order):
    """The plain Lanczos shift (taps normalised to sum 1) the PSF model used before."""
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    m = np.arange(-order - 1, order + 2)
    return lanczos_kernel(i - s - j, order) / lanczos_kernel(m - (s - np.floor(s)), order).sum()


@pytest.mark.parametrize("fwhm,beta", [(3.3, None), (3.8, None), (5.5, None), (3.8, 3.5)])
def test_psf_shift_accuracy_against_shifted_stars(fwhm, beta):
    """Shifting a star stamp by (dx, dy) against the star rendered at the shifted position:
    the centroid moves by exactly the shift (plain Lanczos-4: off by 0.02 px), the PSF-fit flux
    bias and the rms residual are no worse than with the plain kernel."""
    n, c, order = 41, 20, 4
    y, x = np.mgrid[:n, :n]
    worst = {"cen": [0.0, 0.0], "flux": [0.0, 0.0], "rms": [0.0, 0.0]}
    for dx in np.linspace(0.05, 0.95, 10):
        dy = -0.37 * dx
        star, truth = _star(n, fwhm, c, c, beta), _star(n, fwhm, c + dx, c + dy, beta)
        new = shift_stamp(star, dx, dy, order)
        old = _plain_shift(n, dy, order) @ star @ _plain_shift(n, dx, order).T
        for k, im in enumerate((new, old)):
            cen = np.hypot((im * x).sum() / im.sum() - c - dx, (im * y).sum() / im.sum() - c - dy)
            flux = (im * truth).sum() / (im * im).sum() - 1.0
            rms = np.sqrt(((im - truth) ** 2).sum() / (truth**2).sum())
            worst["cen"][k] = max(worst["cen"][k], cen)
            worst["flux"][k] = max(worst["flux"][k], abs(flux))
            worst["rms"][k] = max(worst["rms"][k], rms)
    assert worst["cen"][0] < 1e-3 < 0.01 < worst["cen"][1]
    assert worst["flux"][0] < 2.5e-3 and worst["flux"][0] <= worst["flux"][1]
    assert worst["rms"][0] < 5e-3 and worst["rms"][0] <= 1.01 * worst["rms"][1]
