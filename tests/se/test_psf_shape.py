"""fit_moffat: its analytic Jacobian is the model's derivative, and it recovers the parameters
of pixel-integrated elliptical Moffat stamps (varied FWHM, beta, ellipticity, centre)."""

from __future__ import annotations

import numpy as np
import pytest

from desgw.se.psf_shape import _moffat_eval, _moffat_pixels, fit_moffat

_OFF = (np.arange(5) + 0.5) / 5 - 0.5


def _subsamples(n: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:n, :n]
    sx, sy = np.meshgrid(_OFF, _OFF)
    return (np.ascontiguousarray(xx.ravel()[:, None] + sx.ravel()[None], dtype=np.float64),
            np.ascontiguousarray(yy.ravel()[:, None] + sy.ravel()[None], dtype=np.float64))


@pytest.mark.parametrize("params", [
    [100.0, 10.2, 9.7, np.log(4.5), 0.05, -0.03, 2.8],
    [50.0, 10.0, 10.0, np.log(3.0), 0.0, 0.0, 3.0],      # round: the e -> 0 limit
    [10.0, 8.0, 11.0, np.log(6.0), 0.5, 0.6, 1.8],       # |e| > 0.95: capped
    [1.0, 9.5, 10.5, np.log(2.2), -0.2, 0.1, 6.0],
])
def test_jacobian_matches_finite_differences(params):
    p = np.array(params)
    xs, ys = _subsamples(21)
    model = np.empty(xs.shape[0])
    jac = np.empty((xs.shape[0], 7))
    _moffat_eval(p, xs, ys, model, jac, True)
    assert np.allclose(model, _moffat_pixels(p, xs, ys), rtol=0, atol=1e-15 * p[0])
    for k in range(7):
        h = 1e-6 * max(1.0, abs(p[k]))
        if k in (4, 5) and p[4] == 0 and p[5] == 0:
            # one-sided: the model is smooth in (e1, e2) but |e| is not differentiable at 0
            num = (_moffat_pixels(p + h * np.eye(7)[k], xs, ys) - model) / h
            tol = 1e-4
        else:
            num = (_moffat_pixels(p + h * np.eye(7)[k], xs, ys)
                   - _moffat_pixels(p - h * np.eye(7)[k], xs, ys)) / (2 * h)
            tol = 1e-6
        scale = np.abs(num).max()
        assert scale > 0 or np.abs(jac[:, k]).max() == 0
        assert np.abs(jac[:, k] - num).max() <= tol * max(scale, 1e-12), k


@pytest.mark.parametrize("n,fwhm,beta,e1,e2,x0,y0", [
    (31, 4.9, 3.0, 0.0, 0.0, 15.0, 15.0),
    (31, 4.9, 2.6, 0.04, -0.02, 15.3, 14.8),
    (25, 3.0, 4.0, 0.1, 0.05, 12.0, 12.4),
    (41, 7.6, 2.2, -0.03, 0.08, 20.0, 20.0),
    (21, 2.2, 3.5, 0.0, 0.02, 10.0, 10.0),
])
def test_fit_recovers_noise_free_moffat(n, fwhm, beta, e1, e2, x0, y0):
    truth = np.array([1.0, x0, y0, np.log(fwhm), e1, e2, beta])
    xs, ys = _subsamples(n)
    stamp = _moffat_pixels(truth, xs, ys).reshape(n, n)
    # the fit sees the whole profile only out to the stamp edge, so it is exact when the model
    # is the fitted one: FWHM, ellipticity and centre to ~1e-6
    fit = fit_moffat(stamp)
    assert fit.fwhm == pytest.approx(fwhm, rel=1e-6)
    assert fit.beta == pytest.approx(beta, rel=1e-4)
    assert (fit.e1, fit.e2) == pytest.approx((e1, e2), abs=1e-6)
    assert (fit.x0, fit.y0) == pytest.approx((x0, y0), abs=1e-6)
    assert fit.flux == pytest.approx(1.0, rel=1e-5)


def test_fit_from_a_neighbours_start_reaches_the_same_minimum():
    # a Kolmogorov-like profile is not a Moffat: the fit's minimum is not the truth, and a
    # start from another stamp's fit must land on the same minimum as the default start
    n = 27
    xs, ys = _subsamples(n)
    a = _moffat_pixels(np.array([1.0, 13.0, 13.0, np.log(4.3), 0.02, -0.01, 2.8]), xs, ys)
    b = _moffat_pixels(np.array([1.0, 13.0, 13.0, np.log(4.4), -0.03, 0.02, 2.5]), xs, ys)
    c = _moffat_pixels(np.array([1.0, 13.0, 13.0, np.log(6.0), 0.0, 0.0, 4.5]), xs, ys)
    stamp = (0.6 * a + 0.25 * b + 0.15 * c).reshape(n, n)
    cold = fit_moffat(stamp)
    other = fit_moffat(b.reshape(n, n))
    warm = fit_moffat(stamp, start=other)
    assert warm.fwhm == pytest.approx(cold.fwhm, rel=1e-6)
    assert warm.beta == pytest.approx(cold.beta, rel=1e-4)
    assert (warm.e1, warm.e2) == pytest.approx((cold.e1, cold.e2), abs=1e-6)
    assert abs(cold.fwhm / 4.3 - 1) > 0.01  # not the trivial case of an exact Moffat
