"""Tests of desgw.diff.coadd: photometric scaling, weights, masks, coverage and the coadd PSF."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import galsim
import numpy as np
import pytest
from astropy.wcs import WCS

from desgw.diff.coadd import coadd_templates
from desgw.diff.resample import Resampled, resample_to_grid
from desgw.diff.resample_stamp import warp_stamp
from desgw.se.maskbits import CRAY, EDGE, SAT, SUSPECT, TRAIL, UNUSABLE

sys.path.insert(0, str(Path(__file__).parent))
from test_resample_support import (SHAPE, box_sum, decam_wcs, local_jacobian,
                                   psf_profile, render_stars)

RA0, DEC0 = 150.0, -30.0
ZPS = (30.0, 30.6)
ZP_TARGET = 31.2
SIGMAS = (5.0, 9.0)      # template noise (e-)
FWHMS = (0.9, 1.3)       # template seeing (arcsec)
MAG = 19.0


class GalsimPSF:
    """Stand-in PSF model in a template's pixel frame (PSFModel.render interface)."""

    def __init__(self, wcs: WCS, fwhm_arcsec: float, size: int = 41) -> None:
        self.wcs, self.fwhm, self.size = wcs, fwhm_arcsec, size

    def render(self, x: float, y: float, *, size: int | None = None, dx: float = 0.0,
               dy: float = 0.0) -> np.ndarray:
        n = size or self.size
        img = galsim.ImageF(n, n, wcs=local_jacobian(self.wcs, x, y))
        psf_profile(self.fwhm).drawImage(image=img, offset=(dx, dy))
        return (img.array / img.array.sum()).astype(np.float32)


@pytest.fixture(scope="module")
def scene():
    """Search grid + two templates (different pointings, seeing, zps, noise) of one sky."""
    w_out = decam_wcs(28, RA0 + 0.02, DEC0 - 0.03, 0.1)
    w_t = (decam_wcs(28, RA0, DEC0, 0.0), decam_wcs(28, RA0 + 0.035, DEC0 - 0.015, -0.05))
    rng = np.random.default_rng(4)
    xo = 250 + (np.arange(16) % 4) * 300 + rng.uniform(0, 1, 16)
    yo = 600 + (np.arange(16) // 4) * 700 + rng.uniform(0, 1, 16)
    ra, dec = w_out.all_pix2world(xo, yo, 0)
    resampled, psfs = [], []
    for wcs, zp, fwhm in zip(w_t, ZPS, FWHMS):
        flux = np.full(len(xo), 10 ** (-0.4 * (MAG - zp)))
        img = render_stars(wcs, ra, dec, flux, fwhm_arcsec=fwhm).astype(np.float32)
        resampled.append(resample_to_grid(img, None, np.ones(SHAPE, np.float32), wcs, w_out,
                                          SHAPE))
        psfs.append(GalsimPSF(wcs, fwhm))
    return w_out, w_t, resampled, psfs, xo, yo


def with_weight(r: Resampled, sigma: float, image: np.ndarray | None = None,
                mask: np.ndarray | None = None) -> Resampled:
    """A copy of a resampled template with a constant noise level (and new image/mask)."""
    m = r.mask if mask is None else mask
    w = np.where(r.coverage & ((m & UNUSABLE) == 0), sigma ** -2, 0).astype(np.float32)
    return Resampled(image=r.image if image is None else image, mask=m, weight=w,
                     coverage=r.coverage, mapping=r.mapping,
                     noise_correlation_factor=r.noise_correlation_factor, kernel=r.kernel)


def test_star_flux_on_target_zeropoint(scene) -> None:
    _, _, resampled, _, xo, yo = scene
    temps = [with_weight(r, s) for r, s in zip(resampled, SIGMAS)]
    co = coadd_templates(temps, ZPS, ZP_TARGET)
    target = 10 ** (-0.4 * (MAG - ZP_TARGET))
    inside = [(x, y) for x, y in zip(xo, yo) if co.n_contrib[int(y), int(x)] == 2]
    assert len(inside) >= 8
    ratios = np.array([box_sum(co.image, x, y, 30) / target for x, y in inside])
    assert np.abs(ratios - 1).max() < 2e-3, ratios
    np.testing.assert_allclose(co.scales, [10 ** (0.4 * (ZP_TARGET - z)) for z in ZPS])
    assert co.zp == ZP_TARGET


def test_weights_and_noise(scene) -> None:
    _, _, resampled, _, _, _ = scene
    rng = np.random.default_rng(8)
    temps = []
    for r, s in zip(resampled, SIGMAS):
        noise = rng.normal(0, s, SHAPE).astype(np.float32)
        temps.append(with_weight(r, s, image=np.where(r.coverage, noise, 0).astype(np.float32)))
    co = coadd_templates(temps, ZPS, ZP_TARGET)
    f = np.array(co.scales)
    both = co.n_contrib == 2
    expected = sum(s ** -2 / fi ** 2 for s, fi in zip(SIGMAS, f))
    assert abs(np.median(co.weight[both]) / expected - 1) < 0.02
    z = co.image[both] * np.sqrt(co.weight[both])
    assert abs(np.mean(z ** 2) - 1) < 0.02
    one = co.n_contrib == 1
    assert one.sum() > 10000
    z1 = co.image[one] * np.sqrt(co.weight[one])
    assert abs(np.mean(z1 ** 2) - 1) < 0.02
    # plain mean: variance (var1 + var2) / 4
    cm = coadd_templates(temps, ZPS, ZP_TARGET, method="mean")
    exp_var = sum((s * fi) ** 2 for s, fi in zip(SIGMAS, f)) / 4
    assert abs(np.median(1 / cm.weight[both]) / exp_var - 1) < 0.02
    zm = cm.image[both] * np.sqrt(cm.weight[both])
    assert abs(np.mean(zm ** 2) - 1) < 0.02
    assert 1.0 < co.noise_correlation_factor < 1.6


def test_masks_coverage_and_contributors(scene) -> None:
    _, _, resampled, _, _, _ = scene
    r1, r2 = resampled
    m1 = r1.mask.copy()
    m2 = r2.mask.copy()
    m1[2000:2100, 500:600] |= CRAY     # bad only in template 1
    m1[3000:3100, 500:600] |= TRAIL    # bad in both
    m2[3000:3100, 500:600] |= CRAY
    m2[1000:1010, 700:710] |= SUSPECT  # informational, good
    m2[1500:1510, 800:810] |= SAT      # saturated in template 2 only: unusable in the coadd
    m1[1600:1610, 800:810] |= TRAIL    # a bleed trail in template 1 only: filled by template 2
    assert r1.coverage[2000:2100, 500:600].all() and r2.coverage[2000:2100, 500:600].all()
    assert r1.coverage[3000:3100, 500:600].all() and r2.coverage[3000:3100, 500:600].all()
    t1 = with_weight(r1, SIGMAS[0], mask=m1)
    t2 = with_weight(r2, SIGMAS[1], mask=m2)
    co = coadd_templates([t1, t2], ZPS, ZP_TARGET)
    f2 = co.scales[1]
    one = (slice(2000, 2100), slice(500, 600))
    assert np.all(co.n_contrib[one] == 1)
    np.testing.assert_allclose(co.weight[one], SIGMAS[1] ** -2 / f2 ** 2, rtol=1e-5)
    np.testing.assert_allclose(co.image[one], t2.image[one] * f2, rtol=1e-5, atol=1e-6)
    assert np.all((co.mask[one] & UNUSABLE) == 0)
    bad = (slice(3000, 3100), slice(500, 600))
    assert np.all(co.n_contrib[bad] == 0) and np.all(co.weight[bad] == 0)
    assert np.all(co.mask[bad] & CRAY) and np.all(co.mask[bad] & TRAIL)
    assert np.all(co.image[bad] == 0)
    assert np.all(co.mask[1000:1010, 700:710] & SUSPECT)
    assert np.all(co.weight[1000:1010, 700:710] > 0)
    sat = (slice(1500, 1510), slice(800, 810))
    assert np.all(co.weight[sat] == 0) and np.all(co.n_contrib[sat] == 0)
    assert np.all(co.mask[sat] & SAT) and np.all(co.image[sat] == 0)
    trail = (slice(1600, 1610), slice(800, 810))
    assert np.all(co.n_contrib[trail] == 1) and np.all(co.weight[trail] > 0)
    np.testing.assert_allclose(co.image[trail], t2.image[trail] * f2, rtol=1e-5, atol=1e-6)
    # veto_bits=0: the saturated pixels are filled from template 1 (the former behaviour)
    co0 = coadd_templates([t1, t2], ZPS, ZP_TARGET, veto_bits=0)
    assert np.all(co0.n_contrib[sat] == 1) and np.all(co0.weight[sat] > 0)
    none = ~(r1.coverage | r2.coverage)
    assert none.any()
    assert np.all(co.mask[none] == EDGE) and np.all(co.weight[none] == 0)
    assert np.all(co.n_contrib[none] == 0)
    assert np.all(np.isfinite(co.image)) and co.image.dtype == np.float32
    assert co.weight.dtype == np.float32 and co.mask.dtype == np.int32
    # everywhere: usable <=> some good contributor
    assert np.array_equal(co.weight > 0, co.n_contrib > 0)


def test_coadd_psf_matches_coadd_stars(scene) -> None:
    _, _, resampled, psfs, xo, yo = scene
    temps = [with_weight(r, s) for r, s in zip(resampled, SIGMAS)]
    co = coadd_templates(temps, ZPS, ZP_TARGET, psfs=psfs)
    assert co.psf is not None
    target = 10 ** (-0.4 * (MAG - ZP_TARGET))
    worst = {1: 0.0, 2: 0.0}
    for x, y in zip(xo, yo):
        n = int(co.n_contrib[int(y), int(x)])
        if n == 0:
            continue
        ix, iy = int(round(x)), int(round(y))
        model = target * co.psf.render(x, y, size=41, dx=x - ix, dy=y - iy)
        data = co.image[iy - 20:iy + 21, ix - 20:ix + 21]
        worst[n] = max(worst[n], np.abs(data - model).max() / data.max())
    assert 0 < worst[2] < 0.01 and worst[1] < 0.01, worst
    # the weights follow the noise: template 1 (sigma 5 e-, f1 = 3.0) vs 2 (9 e-, f2 = 1.74)
    f = np.array(co.scales)
    w = np.array(SIGMAS) ** -2 / f ** 2
    both = [(x, y) for x, y in zip(xo, yo) if co.n_contrib[int(y), int(x)] == 2]
    np.testing.assert_allclose(co.psf.weights_at(*both[0]), w / w.sum(), rtol=1e-3)
    stamp = co.psf.render(*both[0])
    assert stamp.shape == (41, 41) and abs(stamp.sum() - 1) < 1e-5
    pickle.loads(pickle.dumps(co.psf.weight_maps))


def test_warp_stamp_rotation_and_scale() -> None:
    # a sheared Gaussian drawn analytically in both frames
    def gauss(size, jac, dx=0.0, dy=0.0):
        h = size // 2
        v, u = np.mgrid[-h:h + 1, -h:h + 1].astype(float)
        p = jac @ np.stack([u.ravel() - dx, v.ravel() - dy])
        q = (p[0] ** 2 / 2.0 ** 2 + p[1] ** 2 / 1.6 ** 2) / 2
        return (np.exp(-q) * abs(np.linalg.det(jac))).reshape(size, size) / (2 * np.pi * 2 * 1.6)
    t = np.deg2rad(5.0)
    jac = 1.05 * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    src = gauss(41, np.eye(2))
    out = warp_stamp(src, jac, 31, dx=0.3, dy=-0.2)
    ref = gauss(31, jac, 0.3, -0.2)
    assert np.abs(out - ref).max() < 5e-3 * ref.max()
    assert abs(out.sum() / ref.sum() - 1) < 1e-4
    # without the Jacobian the stamp would be off by far more
    plain = warp_stamp(src, np.eye(2), 31, dx=0.3, dy=-0.2)
    assert np.abs(plain - ref).max() > 5e-2 * ref.max()


def test_bad_arguments(scene) -> None:
    _, _, resampled, _, _, _ = scene
    with pytest.raises(ValueError):
        coadd_templates(resampled, ZPS[:1], ZP_TARGET)
    with pytest.raises(ValueError):
        coadd_templates(resampled, ZPS, ZP_TARGET, method="median")
    with pytest.raises(ValueError):
        coadd_templates([], [], ZP_TARGET)


@pytest.mark.parametrize("method", ["weighted", "mean"])
def test_single_template_fast_path_equals_general_path(scene, method) -> None:
    """One template takes a one-pass path; adding a template that covers nothing sends the
    same data through the general accumulator path: both must agree exactly."""
    _, _, resampled, psfs, _, _ = scene
    r = resampled[0]
    mask = r.mask.copy()
    mask[100:140, 300:305] |= CRAY          # unusable: weight 0, kept in the mask
    mask[500:520, 700:760] |= SUSPECT       # usable bit carried through
    t = with_weight(r, SIGMAS[0], mask=mask)
    nothing = Resampled(image=np.zeros_like(r.image), mask=np.zeros_like(r.mask),
                        weight=np.zeros_like(r.weight), coverage=np.zeros_like(r.coverage),
                        mapping=r.mapping, noise_correlation_factor=1.0, kernel=r.kernel)
    one = coadd_templates([t], ZPS[:1], ZP_TARGET, psfs[:1], method=method)
    two = coadd_templates([t, nothing], ZPS, ZP_TARGET, psfs, method=method)
    assert one.psf is not None and two.psf is not None
    np.testing.assert_allclose(one.image, two.image, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(one.weight, two.weight, rtol=1e-6)
    np.testing.assert_array_equal(one.mask, two.mask)
    np.testing.assert_array_equal(one.n_contrib, two.n_contrib)
    assert one.noise_correlation_factor == pytest.approx(two.noise_correlation_factor, rel=1e-12)
    np.testing.assert_allclose(one.psf.weight_maps[0], two.psf.weight_maps[0], atol=1e-12)
    assert np.all(one.mask[~r.coverage] & EDGE)
    assert np.all(one.weight[100:140, 300:305] == 0)
    assert np.all(one.mask[500:520, 700:760] & SUSPECT)


@pytest.mark.parametrize("method", ["weighted", "mean"])
def test_fused_path_equals_accumulator_path(scene, method) -> None:
    """Templates that cannot reach the rejection's minimum take one fused pass; a third
    template covering everything with no usable pixel sends the same data through the
    accumulator path (rejection tried, nothing to reject): every output must agree
    exactly, masks, PSF weight maps and noise correlation factor included."""
    _, _, resampled, psfs, _, _ = scene
    mask = resampled[0].mask.copy()
    mask[100:140, 300:305] |= CRAY
    mask[500:520, 700:760] |= SUSPECT
    mask[2000:2012, 600:610] |= SAT  # a saturated core (vetoes the other template there)
    assert resampled[1].coverage[2000:2012, 600:610].all()
    pair = [with_weight(resampled[0], SIGMAS[0], mask=mask),
            with_weight(resampled[1], SIGMAS[1])]
    r = resampled[0]
    empty = Resampled(image=np.zeros_like(r.image), mask=np.zeros_like(r.mask),
                      weight=np.zeros_like(r.weight), coverage=np.ones_like(r.coverage),
                      mapping=r.mapping, noise_correlation_factor=1.0, kernel=r.kernel)
    fused = coadd_templates(pair, ZPS, ZP_TARGET, psfs, method=method)
    general = coadd_templates([*pair, empty], (*ZPS, ZPS[0]), ZP_TARGET, [*psfs, psfs[0]],
                              method=method)
    assert fused.n_rejected is None and general.n_rejected is not None
    assert int(general.n_rejected.sum()) == 0
    assert np.count_nonzero(fused.n_contrib == 2) > 1000  # the templates overlap
    assert np.all(fused.weight[2000:2012, 600:610] == 0)
    assert np.all(fused.mask[2000:2012, 600:610] & SAT)
    for name in ("image", "weight", "gain", "mask", "n_contrib"):
        np.testing.assert_array_equal(getattr(fused, name), getattr(general, name))
    assert fused.noise_correlation_factor == general.noise_correlation_factor
    assert fused.psf is not None and general.psf is not None
    np.testing.assert_array_equal(fused.psf.weight_maps, general.psf.weight_maps[:2])
