"""Sparse fields: constant / analytic PSF, 1-2 star zeropoint, shift-only WCS refinement."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.wcs import WCS

from desgw.se.astrometry import AstrometryError
from desgw.se.photocal import zeropoint
from desgw.se.psf import PSFConfig, PSFFitError, fit_psf
from desgw.se.sparse import (
    fit_psf_sparse,
    moffat_psf_model,
    refine_wcs_shift,
    sparse_zeropoint,
)


def _moffat_image(shape, xs, ys, fluxes, fwhm, beta, rng, sky_sigma=5.0):
    alpha = fwhm / (2 * math.sqrt(2 ** (1 / beta) - 1))
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    img = np.zeros(shape)
    for x, y, f in zip(xs, ys, fluxes):
        # 5x5 sub-pixel sampling: pixel-integrated Moffat
        prof = np.zeros(shape)
        for dy in np.linspace(-0.4, 0.4, 5):
            for dx in np.linspace(-0.4, 0.4, 5):
                r2 = (xx + dx - x) ** 2 + (yy + dy - y) ** 2
                prof += (1 + r2 / alpha ** 2) ** (-beta)
        img += f * prof / prof.sum()
    noise = np.sqrt(sky_sigma ** 2 + np.maximum(img, 0))
    img = img + rng.normal(size=shape) * noise
    weight = np.full(shape, 1.0 / sky_sigma ** 2, dtype=np.float32)
    return img.astype(np.float32), weight


@pytest.mark.parametrize("fwhm,beta", [(4.5, 3.0), (3.2, 2.5)])
def test_constant_psf_from_two_stars(fwhm, beta):
    rng = np.random.default_rng(4)
    xs, ys = np.array([40.3, 120.7]), np.array([60.6, 90.2])
    img, w = _moffat_image((150, 170), xs, ys, [2e5, 1.2e5], fwhm, beta, rng)
    cfg = PSFConfig(stamp=25)
    with pytest.raises(PSFFitError, match="2 usable stars of 2 candidates, need 3"):
        fit_psf(img, w, None, xs, ys, config=cfg)
    psf, why = fit_psf_sparse(img, w, None, xs, ys, config=cfg, fallback_fwhm_px=9.0)
    assert psf.degree == 0 and psf.n_stars == 2
    assert "constant" in why and "2 usable of 2 candidates" in why
    assert psf.fwhm_at(85, 75) == pytest.approx(fwhm, rel=0.03)


def test_analytic_psf_without_stars():
    rng = np.random.default_rng(5)
    img, w = _moffat_image((120, 120), [], [], [], 4.0, 3.0, rng)
    psf, why = fit_psf_sparse(img, w, None, np.zeros(0), np.zeros(0),
                              config=PSFConfig(stamp=27), fallback_fwhm_px=5.2,
                              fallback_source="the CP header FWHM")
    assert psf.degree == 0 and psf.n_stars == 0 and psf.stamp_size == 27
    assert "analytic" in why and "5.20 px from the CP header FWHM" in why
    assert psf.fwhm_at(60, 60) == pytest.approx(5.2, rel=0.02)
    assert psf.render(60.0, 60.0).sum() == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError, match="FWHM must be positive"):
        moffat_psf_model(0.0, (10, 10))


def test_full_fit_unchanged_with_enough_stars():
    rng = np.random.default_rng(6)
    n = 12
    xs, ys = rng.uniform(30, 270, n), rng.uniform(30, 270, n)
    img, w = _moffat_image((300, 300), xs, ys, np.full(n, 2e5), 4.0, 3.0, rng)
    cfg = PSFConfig(stamp=25, poly_degree=0)
    psf, why = fit_psf_sparse(img, w, None, xs, ys, config=cfg, fallback_fwhm_px=9.0)
    assert why is None and psf.n_stars >= 6
    ref = fit_psf(img, w, None, xs, ys, config=cfg)
    np.testing.assert_allclose(psf.coeffs, ref.coeffs)


def test_sparse_zeropoint_values_and_errors():
    one = sparse_zeropoint([30.1], [0.03], error_floor=0.02)
    assert one.zp == pytest.approx(30.1) and one.n_used == 1
    assert one.zp_err == pytest.approx(math.hypot(0.03, 0.02))
    # the clipped estimator gives no zeropoint for the same star
    assert not zeropoint([0.0], [30.1], mag_err=[0.03], method="weighted").valid
    agree = sparse_zeropoint([30.0, 30.01], [0.02, 0.02], error_floor=0.0)
    assert agree.zp == pytest.approx(30.005) and agree.zp_err == pytest.approx(0.02 / math.sqrt(2))
    disagree = sparse_zeropoint([30.0, 30.4], [0.02, 0.02], error_floor=0.0)
    assert disagree.zp_err == pytest.approx(0.2, rel=1e-6)  # scaled by sqrt(chi2)
    with pytest.raises(ValueError, match="1 or 2 stars"):
        sparse_zeropoint([1.0, 2.0, 3.0], [0.1] * 3)


def test_sparse_zeropoint_errors_are_calibrated():
    rng = np.random.default_rng(7)
    pulls = []
    for _ in range(2000):
        n = rng.integers(1, 3)
        err = rng.uniform(0.01, 0.05, n)
        d = 30.0 + rng.normal(size=n) * np.hypot(err, 0.02)
        r = sparse_zeropoint(d, err, error_floor=0.02)
        pulls.append((r.zp - 30.0) / r.zp_err)
    pulls = np.asarray(pulls)
    assert abs(pulls.mean()) < 0.1 and 0.75 < pulls.std() < 1.1


def _sip_wcs(ra0=150.0, dec0=-30.0, shape=(400, 300)):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    w.wcs.crval = [ra0, dec0]
    w.wcs.crpix = [shape[1] / 2 + 0.5, shape[0] / 2 + 0.5]
    s = 0.263 / 3600
    w.wcs.cd = [[-s * 0.9998, s * 0.02], [s * 0.02, s * 0.9998]]
    from astropy.wcs import Sip
    a = np.zeros((4, 4))
    b = np.zeros((4, 4))
    a[2, 0], a[0, 2], b[1, 1], a[3, 0] = 2e-6, -1e-6, 1.5e-6, 3e-10
    w.sip = Sip(a, b, None, None, w.wcs.crpix)
    w.wcs.set()
    return w


@pytest.mark.parametrize("n_stars", [1, 2, 5])
def test_shift_only_refinement_recovers_offset(n_stars):
    rng = np.random.default_rng(8 + n_stars)
    shape = (400, 300)
    true = _sip_wcs(shape=shape)
    header = true.deepcopy()
    # the header WCS is off by (+0.8, -0.45) arcsec on the sky
    header.wcs.crval = [true.wcs.crval[0] - 0.8 / 3600 / math.cos(math.radians(-30.0)),
                        true.wcs.crval[1] + 0.45 / 3600]
    header.wcs.set()
    x, y = rng.uniform(10, 290, n_stars), rng.uniform(10, 390, n_stars)
    ra, dec = true.all_pix2world(x, y, 0)
    # centroid noise 0.02" and unmatched detections and references (galaxies, faint stars)
    xd = np.concatenate([x + rng.normal(size=n_stars) * 0.02 / 0.263, rng.uniform(0, 300, 6)])
    yd = np.concatenate([y + rng.normal(size=n_stars) * 0.02 / 0.263, rng.uniform(0, 400, 6)])
    rx, ry = rng.uniform(0, 300, 4), rng.uniform(0, 400, 4)
    far_ra, far_dec = true.all_pix2world(rx, ry, 0)
    out = refine_wcs_shift(xd, yd, np.concatenate([ra, far_ra]), np.concatenate([dec, far_dec]),
                           header, image_shape=shape)
    assert out.result.n_used == n_stars and out.result.sip_order == 0
    assert out.shift_ra_arcsec == pytest.approx(0.8, abs=0.04)
    assert out.shift_dec_arcsec == pytest.approx(-0.45, abs=0.04)
    # the refined WCS agrees with the truth over the whole image to the centroid noise
    gx, gy = np.meshgrid(np.linspace(0, 299, 5), np.linspace(0, 399, 5))
    r1, d1 = out.result.wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)
    r0, d0 = true.all_pix2world(gx.ravel(), gy.ravel(), 0)
    sep = np.hypot((r1 - r0) * math.cos(math.radians(-30)), d1 - d0) * 3600
    assert sep.max() < 0.05
    assert out.shift_err_arcsec == pytest.approx(0.03 / math.sqrt(n_stars), rel=0.6)
    if n_stars == 1:
        assert math.isnan(out.result.rms_arcsec)


def test_shift_only_refinement_fails_without_nearby_reference():
    w = _sip_wcs()
    ra, dec = w.all_pix2world([100.0], [100.0], 0)
    with pytest.raises(AstrometryError, match="no reference star within 5 arcsec"):
        refine_wcs_shift([100.0], [100.0], ra + 0.01, dec, w, image_shape=(400, 300))
    with pytest.raises(AstrometryError, match="no detection or no reference"):
        refine_wcs_shift([], [], ra, dec, w, image_shape=(400, 300))


def test_shift_only_refinement_in_a_crowded_field():
    """A crowded CCD that falls back to the shift-only refinement (tens of thousands of
    detection-reference pairs within 5"): the shift is found among the chance pairs and no
    all-pairs array is built (the old one needed ~47 GiB for this field)."""
    rng = np.random.default_rng(31)
    shape = (4096, 2048)
    true = _sip_wcs(shape=shape)
    header = true.deepcopy()
    header.wcs.crval = [true.wcs.crval[0] + 1.1 / 3600 / math.cos(math.radians(-30.0)),
                        true.wcs.crval[1] - 0.6 / 3600]
    header.wcs.set()
    n_star = 4000
    x, y = rng.uniform(5, 2043, n_star), rng.uniform(5, 4091, n_star)
    ra, dec = true.all_pix2world(x, y, 0)
    # two thirds of the references are detected; 40,000 detections have no reference
    seen = rng.random(n_star) < 2 / 3
    xd = np.concatenate([x[seen] + rng.normal(size=seen.sum()) * 0.1, rng.uniform(0, 2048, 40000)])
    yd = np.concatenate([y[seen] + rng.normal(size=seen.sum()) * 0.1, rng.uniform(0, 4096, 40000)])
    out = refine_wcs_shift(xd, yd, ra, dec, header, image_shape=shape)
    assert out.shift_ra_arcsec == pytest.approx(-1.1, abs=0.02)
    assert out.shift_dec_arcsec == pytest.approx(0.6, abs=0.02)
    assert out.result.n_used >= 0.9 * seen.sum()
