"""PSF aperture correction (total / PSF-stamp flux) against the exact value of galsim profiles
and on real Community Pipeline PSFEx models."""

from __future__ import annotations

import sys
from pathlib import Path

import galsim
import numpy as np
import pytest

from desgw.se.process_steps import psf_aperture_correction, wing_outside_flux
from desgw.se.psf import PSFConfig, PSFModel, fit_psf


def _stamp_side(fwhm: float) -> int:
    n = max(25, int(np.ceil(6 * fwhm)))
    return n + 1 - n % 2


def _model(stamp: np.ndarray) -> PSFModel:
    return PSFModel(coeffs=(stamp / stamp.sum())[None].astype(np.float64), degree=0,
                    x_zero=1023.5, x_scale=2048.0, y_zero=2047.5, y_scale=4096.0,
                    image_shape=(4096, 2048))


def _exact(prof: galsim.GSObject, n: int) -> tuple[np.ndarray, float]:
    """The pixel-integrated stamp and total / stamp flux (drawn on 2001 x 2001 pix)."""
    big = prof.withFlux(1.0).drawImage(nx=2001, ny=2001, scale=1.0).array.astype(np.float64)
    h = n // 2
    stamp = big[1000 - h:1001 + h, 1000 - h:1001 + h]
    return stamp, 1.0 / stamp.sum()


@pytest.mark.parametrize("beta,fwhm,e1,e2", [(2.5, 3.0, 0.0, 0.0), (2.5, 4.5, 0.05, -0.03),
                                             (3.5, 4.0, 0.0, 0.06), (3.5, 7.0, 0.0, 0.0),
                                             (5.0, 6.0, -0.04, 0.0), (3.5, 2.7, 0.0, 0.0),
                                             (2.5, 2.7, 0.0, 0.0)])
def test_moffat_exact(beta, fwhm, e1, e2):
    n = _stamp_side(fwhm)
    stamp, exact = _exact(galsim.Moffat(beta=beta, fwhm=fwhm).shear(e1=e1, e2=e2), n)
    corr = psf_aperture_correction(_model(stamp))
    # measured: within 1e-4 of the exact value (FWHM 2.7 px: +0.29 % and +0.54 % when the
    # 25-px stamp's last wing ring, its 4 pixels at r = 12 with no scatter, set the chi-squared)
    assert corr >= 1.0
    assert corr == pytest.approx(exact, abs=3e-4)


@pytest.mark.parametrize("fwhm", [3.0, 4.0, 7.0])
def test_kolmogorov_exact(fwhm):
    n = _stamp_side(fwhm)
    stamp, exact = _exact(galsim.Kolmogorov(fwhm=fwhm).shear(e1=0.03, e2=0.02), n)
    corr = psf_aperture_correction(_model(stamp))
    # measured within 0.002 % of the exact 1.007-1.013 with the Kolmogorov wing form; the
    # Moffat wing alone was 0.3-0.6 % low (it extrapolates the slope at 2-3 FWHM, steeper than
    # the r**-11/3 asymptote), the old whole-stamp Moffat fit 0.973-0.977
    assert corr == pytest.approx(exact, abs=3e-4)


@pytest.mark.parametrize("outer_scale", [10.0, 25.0, 50.0, 100.0])
def test_von_karman_close_to_exact(outer_scale):
    vk = galsim.VonKarman(lam=800.0, r0=0.15, L0=outer_scale, scale_unit=galsim.arcsec)
    prof = vk.dilate(5.0 / vk.calculateFWHM())  # FWHM 5 pix
    stamp, exact = _exact(prof, 31)
    corr = psf_aperture_correction(_model(stamp))
    # measured +1.1e-4 to +1.7e-4 (L0 100 to 10 m) with the von Karman wing form; +0.06 to
    # +0.36 % with the Moffat-form and Kolmogorov wings only (the outer scale steepens the far
    # wing below the Kolmogorov form), the Moffat wing alone 0.7 % low at L0 = 25 m
    assert corr == pytest.approx(exact, abs=5e-4)


def test_noisy_stamps_keep_the_right_wing():
    """Fitted models have noisy outer rings; the Kolmogorov wing must not be taken for a Moffat
    PSF by chance (a 60-star Moffat beta 2.5 model on a crowded field got +1.5 % when the form
    with the smaller residual won), and must still be found for a Kolmogorov one. 20 draws of
    Gaussian noise of 2e-5 per pixel of the unit-sum stamp (10 % of the ring means at 10 px)."""
    for prof, tol_max, tol_med in ((galsim.Moffat(beta=2.5, fwhm=4.0), 2e-3, 5e-4),
                                   (galsim.Kolmogorov(fwhm=4.0), 2e-3, 5e-4)):
        stamp, exact = _exact(prof.shear(e1=0.03, e2=-0.02), 25)
        rng = np.random.default_rng(1)
        c = np.array([psf_aperture_correction(_model(stamp + rng.normal(0, 2e-5, stamp.shape)))
                      for _ in range(20)])
        # measured: Moffat 1.0148-1.0165 (exact 1.0157), median 1.0155; Kolmogorov
        # 1.0120-1.0135 (exact 1.0125), median 1.0125. With the hard switch between the wings
        # a few Kolmogorov draws fell back to the Moffat wing, down to 1.0056
        assert np.max(np.abs(c - exact)) < tol_max, (c, exact)
        assert abs(np.median(c) - exact) < tol_med, (np.median(c), exact)


FIELD = (1024, 1024)


def _field_profile(kind: str, fwhm0: float, x: float, y: float) -> galsim.GSObject:
    """The field's PSF at (x, y): FWHM varying by 16 % and ellipticity by 0.05 across it."""
    u, v = x / FIELD[1] - 0.5, y / FIELD[0] - 0.5
    w = fwhm0 * (1 + 0.10 * u - 0.06 * v)
    prof = galsim.Kolmogorov(fwhm=w) if kind == "kolmogorov" else galsim.Moffat(beta=2.5, fwhm=w)
    return prof.shear(e1=0.02 + 0.05 * u, e2=-0.01 + 0.04 * v)


def _sparse_models(kind: str, fwhm0: float, n_stars: int, seed: int, groups: int = 8
                   ) -> tuple[list[PSFModel], float]:
    """PSF models fitted to ``n_stars`` noisy galsim stars of 16.5-19 mag (2.5e4-2.5e5 e-, on a
    1500 e- sky, 64 px apart) and to each of ``groups`` subsets leaving out 1/groups of them,
    and the exact correction of the field's PSF (mean over a 3 x 3 grid of positions)."""
    rng = np.random.default_rng(seed)
    g = np.arange(48, FIELD[0] - 48, 64)
    gx, gy = np.meshgrid(g, g)
    pick = rng.choice(gx.size, n_stars, replace=False)
    xs = gx.ravel()[pick] + rng.uniform(-5, 5, n_stars)
    ys = gy.ravel()[pick] + rng.uniform(-5, 5, n_stars)
    flux = 10 ** (-0.4 * (rng.uniform(16.5, 19.0, n_stars) - 30.0))
    img = np.zeros(FIELD)
    half = 40
    for i in range(n_stars):
        ix, iy = round(xs[i]), round(ys[i])
        img[iy - half:iy + half + 1, ix - half:ix + half + 1] += _field_profile(
            kind, fwhm0, xs[i], ys[i]).withFlux(float(flux[i])).drawImage(
            nx=2 * half + 1, ny=2 * half + 1, scale=1.0, offset=(xs[i] - ix, ys[i] - iy)).array
    sky, rn = 1500.0, 7.0
    img += rng.normal(size=FIELD) * np.sqrt(sky + rn ** 2 + img)
    weight = np.full(FIELD, 1.0 / (sky + rn ** 2), dtype=np.float32)
    n = _stamp_side(fwhm0)
    h = n // 2
    inside = []
    for fx in (0.25, 0.5, 0.75):
        for fy in (0.25, 0.5, 0.75):
            big = _field_profile(kind, fwhm0, fx * FIELD[1], fy * FIELD[0]).drawImage(
                nx=801, ny=801, scale=1.0).array
            inside.append(big[400 - h:401 + h, 400 - h:401 + h].sum())
    label = np.random.default_rng(seed + 1).permutation(n_stars) % groups
    cfg = PSFConfig(stamp=n, poly_degree=1)
    models = [fit_psf(img.astype(np.float32), weight, None, xs[label != k], ys[label != k],
                      config=cfg) for k in range(-1, groups)]
    return models, 1.0 / float(np.mean(inside))


@pytest.mark.parametrize("kind,fwhm0,n_stars,seed", [("kolmogorov", 4.5, 36, 3),
                                                     ("moffat", 4.5, 36, 3),
                                                     ("kolmogorov", 3.0, 30, 5)])
def test_correction_stable_over_psf_star_subsets(kind, fwhm0, n_stars, seed):
    """A model fitted to a few dozen stars has noisy outer rings: the correction must not jump
    when a few stars are left out. Models from all 21-27 accepted stars and from 8 subsets
    each leaving out 1/8 of them (Moffat beta 2.5 and Kolmogorov, FWHM 3-4.5 px, varying
    across the field). Measured over the subsets: Kolmogorov 4.5 px mean -0.012 %, spread
    (std) 0.066 %; Moffat 4.5 px +0.063 %, 0.060 %; Kolmogorov 3 px -0.017 %, 0.030 %. The hard
    switch between the wing forms (chi-squared lower by 4) flipped on a subset of each 4.5 px
    field: Kolmogorov down to 1.0055 (exact 1.0135), Moffat up to 1.0344 (exact 1.0176),
    spreads 0.27 % and 0.63 %."""
    models, exact = _sparse_models(kind, fwhm0, n_stars, seed)
    assert all(15 <= m.n_stars <= 30 for m in models), [m.n_stars for m in models]
    corr = np.array([psf_aperture_correction(m) for m in models])
    sub = corr[1:]
    assert np.std(sub) < 2e-3, (corr, exact)
    assert abs(np.mean(sub) - exact) < 1e-3, (corr, exact)
    assert abs(corr[0] - exact) < 1.5e-3, (corr, exact)


DENSE_FIELD = 2048


def _dense_profile(kind: str, beta: float, fwhm0: float, x: float, y: float) -> galsim.GSObject:
    """A dense field's PSF at (x, y): FWHM varying by 16 % and ellipticity by 0.05 across it."""
    u, v = x / DENSE_FIELD - 0.5, y / DENSE_FIELD - 0.5
    w = fwhm0 * (1 + 0.10 * u - 0.06 * v)
    prof = (galsim.Kolmogorov(fwhm=w) if kind == "kolmogorov"
            else galsim.Moffat(beta=beta, fwhm=w))
    return prof.shear(e1=0.02 + 0.05 * u, e2=-0.01 + 0.04 * v)


def _dense_model_and_exact(kind: str, beta: float, fwhm0: float, seed: int
                           ) -> tuple[PSFModel, float]:
    """A PSF model fitted to 500 noisy galsim stars of 15-17.5 mag (1e5-1e6 e-, the PSF stars of
    the simulated dense CCDs have a median 7e5 e-) on a 1500 e- sky, each drawn with its whole
    wing out to 40 px (light beyond: < 1e-4 of a beta 2.5 star at FWHM 4.5 px), and the exact
    correction of the field's PSF averaged over the grid of positions the correction reads."""
    rng = np.random.default_rng(seed)
    g = np.arange(48, DENSE_FIELD - 48, 64)
    gx, gy = np.meshgrid(g, g)
    n_stars = 500
    pick = rng.choice(gx.size, n_stars, replace=False)
    xs = gx.ravel()[pick] + rng.uniform(-5, 5, n_stars)
    ys = gy.ravel()[pick] + rng.uniform(-5, 5, n_stars)
    flux = 10 ** (-0.4 * (rng.uniform(15.0, 17.5, n_stars) - 30.0))
    img = np.zeros((DENSE_FIELD, DENSE_FIELD))
    half = 40
    for i in range(n_stars):
        ix, iy = round(xs[i]), round(ys[i])
        img[iy - half:iy + half + 1, ix - half:ix + half + 1] += _dense_profile(
            kind, beta, fwhm0, xs[i], ys[i]).withFlux(float(flux[i])).drawImage(
            nx=2 * half + 1, ny=2 * half + 1, scale=1.0, offset=(xs[i] - ix, ys[i] - iy)).array
    sky, rn = 1500.0, 7.0
    img += rng.normal(size=img.shape) * np.sqrt(sky + rn ** 2 + img)
    weight = np.full(img.shape, 1.0 / (sky + rn ** 2), dtype=np.float32)
    n = _stamp_side(fwhm0)
    h = n // 2
    inside = []
    for fx in np.linspace(100.0, DENSE_FIELD - 101.0, 4):
        for fy in np.linspace(100.0, DENSE_FIELD - 101.0, 7):
            big = _dense_profile(kind, beta, fwhm0, fx, fy).drawImage(
                nx=801, ny=801, scale=1.0).array
            inside.append(big[400 - h:401 + h, 400 - h:401 + h].sum())
    model = fit_psf(img.astype(np.float32), weight, None, xs, ys,
                    config=PSFConfig(stamp=n, poly_degree=1))
    return model, 1.0 / float(np.mean(inside))


@pytest.mark.parametrize("kind,beta,fwhm0", [("moffat", 2.5, 4.5), ("moffat", 3.5, 4.5),
                                             ("moffat", 5.0, 4.0), ("kolmogorov", 0.0, 4.5)])
def test_dense_field_models_match_exact(kind, beta, fwhm0):
    """On a model fitted to ~200 bright noisy stars (as on the simulated dense CCDs) the
    correction is the exact one within ~1e-4: the +0.035 % that the dense CCDs of the science
    audit show against the simulator's truth is the simulator's stamp truncation (each star is
    renormalised to its flux inside a stamp of ``moffat_radius``; bench/bench_apcor_truth.py),
    not the wing extrapolation. Measured over 6 fields each (mean +- its error, in 1e-4):
    Moffat beta 2.5 +0.37 +- 0.42, beta 3.5 +0.53 +- 0.17, beta 5 +0.07 +- 0.08, Kolmogorov
    +0.92 +- 0.28, every field within 1.9e-4 (the two seeds here: +0.72, +0.64, +0.17, +1.02);
    with 2.5 mag fainter stars the same means within their errors and ~4x the scatter."""
    d = []
    for seed in (200, 201):
        model, exact = _dense_model_and_exact(kind, beta, fwhm0, seed)
        assert model.n_stars >= 150, model.n_stars
        d.append(psf_aperture_correction(model) / exact - 1.0)
    assert np.max(np.abs(d)) < 3e-4, d
    assert abs(np.mean(d)) < 1.5e-4, d


def test_wing_outside_flux_errors():
    with pytest.raises(ValueError):
        wing_outside_flux(np.ones((24, 24)))
    with pytest.raises(ValueError):
        wing_outside_flux(np.zeros((25, 25)))
    # no positive light in the annulus: nothing to extrapolate
    st = np.zeros((25, 25))
    st[10:15, 10:15] = 1.0
    assert wing_outside_flux(st) == 0.0


def _psfex_models():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "realdata"))
    from realdata_cases import instcal_cases, psfex_for

    try:
        cases = instcal_cases()
    except (FileNotFoundError, LookupError, OSError):
        return []
    out = []
    for c in cases:
        p = psfex_for(c)
        if p is not None:
            out.append((c.label, p))
    return out


PSFEX = _psfex_models()


@pytest.mark.skipif(not PSFEX, reason="real data not available")
@pytest.mark.parametrize("label,psf", PSFEX, ids=[p[0] for p in PSFEX])
def test_real_psfex_stamps(label, psf):
    """On the 63 x 63 Community Pipeline PSFEx models: >= 1 (the old fit gave 0.945-0.99;
    measured 1.0003-1.017), and for the central 25 x 25 crop the extrapolated correction
    matches the light between the 25 and 63 pix boxes that the model shows (measured 0.35 %
    below to 2.2 % above it, the excess being light beyond 63 pix; 10 of the 21 crops fall
    below that lower bound, all with the Moffat wing, 13 when the Moffat wing was the only
    one; the 7 crops that take the Kolmogorov wing are 0.05-1.4 % above it)."""
    st = psf.image_at(50, 50).astype(np.float64)
    full = psf_aperture_correction(_model(st))
    assert 1.0 <= full < 1.03
    crop = st[31 - 12:31 + 13, 31 - 12:31 + 13]
    ratio = st.sum() / crop.sum()
    corr = psf_aperture_correction(_model(crop))
    assert ratio - 0.005 < corr < ratio + 0.025
