"""Efficiency curve fit and the ideal limiting magnitude."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import fftconvolve
from scipy.special import erf

from desgw.diff.efficiency import (
    efficiency_curve,
    efficiency_model,
    ideal_limit_mag,
    noise_equivalent_area,
    wilson_interval,
)

SIG = 2.0 * math.sqrt(2.0 * math.log(2.0))


def test_wilson_interval():
    lo, hi = wilson_interval([0, 5, 10], [10, 10, 10], z=1.96)
    assert lo[0] == 0 and hi[2] == 1
    # textbook value for 5/10 at 95 %: 0.2366 .. 0.7634
    assert lo[1] == pytest.approx(0.2366, abs=1e-4) and hi[1] == pytest.approx(0.7634, abs=1e-4)
    assert 0 < hi[0] < 0.35 and 0.65 < lo[2] < 1


@pytest.mark.parametrize("model", ["logistic", "erf"])
def test_fit_recovers_known_m50(model):
    rng = np.random.default_rng(10)
    m50, width, plateau = 23.3, 0.18, 0.96
    mags = rng.uniform(21.0, 25.0, 4000)
    rec = rng.random(mags.size) < efficiency_model(mags, m50, width, plateau, model=model)
    cur = efficiency_curve(mags, rec, bins=np.arange(21.0, 25.01, 0.25), model=model)
    assert cur.converged
    assert abs(cur.m50 - m50) < 0.05
    assert abs(cur.m50 - m50) < 4 * cur.m50_err
    assert 0.003 < cur.m50_err < 0.03
    assert cur.width == pytest.approx(width, abs=0.05)
    assert cur.plateau == pytest.approx(plateau, abs=0.02)
    t = cur.table
    assert len(t) == 16 and t["n"].sum() == 4000
    assert np.all(t["err_lo"] >= 0) and np.all(t["err_hi"] >= 0)
    # binned points scatter around the model by about their errors
    pull = (t["efficiency"] - t["model"]) / np.maximum(0.5 * (t["err_lo"] + t["err_hi"]), 1e-3)
    assert np.sqrt(np.mean(pull ** 2)) < 2.0
    assert t.meta["M50"] == cur.m50
    assert cur(cur.m50) == pytest.approx(cur.plateau / 2, rel=1e-9)


def test_fit_errors_match_scatter():
    rng = np.random.default_rng(11)
    est, errs = [], []
    for _ in range(30):
        mags = rng.uniform(21.0, 25.0, 600)
        rec = rng.random(mags.size) < efficiency_model(mags, 23.0, 0.2, 1.0)
        cur = efficiency_curve(mags, rec, bins=10, fit_plateau=False)
        est.append(cur.m50)
        errs.append(cur.m50_err)
    ratio = np.std(est) / np.mean(errs)
    assert 0.6 < ratio < 1.5
    assert abs(np.mean(est) - 23.0) < 3 * np.std(est) / np.sqrt(30)


def test_efficiency_rejects_degenerate_input():
    with pytest.raises(ValueError):
        efficiency_curve(np.linspace(20, 25, 50), np.ones(50, bool))
    with pytest.raises(ValueError):
        efficiency_curve(np.linspace(20, 25, 50), np.zeros(49, bool))


def test_nea_formulas():
    # Gaussian: 4 pi (s^2 + 1/12) when the PSF is well sampled
    s = 3.0 / SIG
    assert noise_equivalent_area(3.0) == pytest.approx(4 * math.pi * (s * s + 1 / 12), rel=0.01)
    # Moffat: analytic pi a^2 (2b-1)/(b-1)^2 for a large (pixel-insensitive) FWHM
    beta, fwhm = 3.0, 12.0
    a = fwhm / (2 * math.sqrt(2 ** (1 / beta) - 1))
    analytic = math.pi * a * a * (2 * beta - 1) / (beta - 1) ** 2
    assert noise_equivalent_area(fwhm, profile="moffat", moffat_beta=beta) == pytest.approx(
        analytic, rel=0.01)


def _pixel_gaussian(fwhm: float, half: int) -> np.ndarray:
    s = fwhm / SIG
    e = np.arange(-half - 0.5, half + 1.0)
    p1 = np.diff(0.5 * erf(e / (math.sqrt(2) * s)))
    p = np.outer(p1, p1)
    return p / p.sum()


def _sampled_gaussian(sigma: float, half: int) -> np.ndarray:
    x = np.arange(-half, half + 1.0)
    k1 = np.exp(-0.5 * x * x / sigma ** 2)
    k = np.outer(k1, k1)
    return k / k.sum()


@pytest.mark.parametrize("fs, ft", [(4.5, 3.0), (3.0, 4.0), (4.0, 4.0)])
def test_ideal_limit_matches_brute_force_matched_filter(fs, ft):
    """5-sigma flux from the scatter of PSF-fit fluxes on a synthetic difference image."""
    rng = np.random.default_rng(12)
    n, sig_s, sig_t, zp = 768, 10.0, 7.0, 30.0
    ns = rng.normal(0, sig_s, (n, n))
    nt = rng.normal(0, sig_t, (n, n))
    wide, narrow = max(fs, ft), min(fs, ft)
    sk2 = (wide / SIG) ** 2 - (narrow / SIG) ** 2
    if sk2 > 0:
        kern = _sampled_gaussian(math.sqrt(sk2), 15)
        if fs >= ft:
            nt = fftconvolve(nt, kern, mode="same")
        else:
            ns = fftconvolve(ns, kern, mode="same")
    diff = ns - nt
    psf = _pixel_gaussian(wide, 15)
    flux = fftconvolve(diff, psf[::-1, ::-1], mode="valid") / np.sum(psf ** 2)
    flux = flux[20:-20, 20:-20]
    sigma_f = flux.std()
    mag_bf = -2.5 * math.log10(5 * sigma_f) + zp
    lim = ideal_limit_mag(sig_s, sig_t, fs, zp, template_fwhm=ft)
    assert lim.mag == pytest.approx(mag_bf, abs=0.05)
    assert lim.flux_err_e == pytest.approx(sigma_f, rel=0.04)
    assert lim.difference_fwhm_px == wide
    if fs == ft:
        assert lim.template_noise_factor == pytest.approx(1.0)
    # a noiseless template: search noise only
    lim0 = ideal_limit_mag(sig_s, 0.0, fs, zp, template_fwhm=min(fs, ft) if fs >= ft else fs)
    assert lim0.flux_err_e == pytest.approx(sig_s * math.sqrt(noise_equivalent_area(fs)))


def test_ideal_limit_stamp_and_scaling():
    stamp = _pixel_gaussian(4.0, 20) * 123.0  # any normalisation
    a = ideal_limit_mag(10.0, 0.0, 4.0, 30.0, psf_stamp=stamp)
    b = ideal_limit_mag(10.0, 0.0, 4.0, 30.0)
    assert a.mag == pytest.approx(b.mag, abs=0.005)
    # 4x the noise variance (2x sigma) -> 0.753 mag brighter limit
    c = ideal_limit_mag(20.0, 0.0, 4.0, 30.0)
    assert b.mag - c.mag == pytest.approx(2.5 * math.log10(2), abs=1e-9)
    assert ideal_limit_mag(10.0, 0.0, 4.0, 30.0, nsigma=3).mag - b.mag == pytest.approx(
        2.5 * math.log10(5 / 3), abs=1e-9)


def test_chain_fakes_matched_filter_reaches_ideal_limit():
    """plan -> inject -> matched-filter peaks > 5 sigma -> match -> m50 close to the ideal limit.

    A perfect subtraction (pure search noise) with a peak-finding detector: m50 lies within
    about 0.05 mag of ideal_limit_mag (measured +0.045 +- 0.015 over 4 seeds; the upward
    bias of a local-maximum peak explains the small excess depth).
    """
    import galsim
    from astropy.wcs import WCS
    from scipy.ndimage import maximum_filter

    from desgw.diff.fakes import fake_mag_range, inject_fakes, match_fakes, plan_fakes

    class GaussPSF:
        def __init__(self, fwhm):
            self.profile = galsim.Gaussian(fwhm=fwhm)

        def render(self, x, y, *, size=None, dx=0.0, dy=0.0):
            n = size or 31
            a = self.profile.drawImage(nx=n, ny=n, scale=1.0, offset=(dx, dy)).array
            return a / a.sum()

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [10.0, -5.0]
    wcs.wcs.crpix = [512.0, 512.0]
    wcs.wcs.cd = [[-7.3e-5, 0.0], [0.0, 7.3e-5]]
    rng = np.random.default_rng(2)
    n, fwhm, zp, sigma = 1024, 4.5, 30.0, 10.0
    lim = ideal_limit_mag(sigma, 0.0, fwhm, zp)
    fakes = plan_fakes(wcs, (n, n), None, n=600, mag_range=fake_mag_range(lim.mag), rng=rng,
                       min_separation_px=15, edge_px=20)
    image = rng.normal(0.0, sigma, (n, n)).astype(np.float32)
    psf = GaussPSF(fwhm)
    inj = inject_fakes(image, None, psf, fakes, zp=zp, rng=rng)
    p = psf.render(0, 0, size=31)
    flux = fftconvolve(inj.image.astype(np.float64), p[::-1, ::-1], mode="same") / np.sum(p * p)
    peaks = (flux == maximum_filter(flux, size=5)) & (flux > 5.0 * lim.flux_err_e)
    yy, xx = np.nonzero(peaks)
    match = match_fakes(fakes, (xx.astype(float), yy.astype(float)), radius_px=1.5)
    cur = efficiency_curve(fakes["mag"], match.recovered, bins=14)
    assert cur.m50 == pytest.approx(lim.mag, abs=0.12)
    assert cur.plateau > 0.97
