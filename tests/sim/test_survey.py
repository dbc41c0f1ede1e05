"""Tests of the simulated observing plan."""

from __future__ import annotations

import numpy as np
import pytest

from desgw.instrument import DECAM_DISTORTION, ccd_corners_sky, sky_to_tangent
from desgw.refcat.geometry import angular_separation_deg
from desgw.sim.model import SimSwitches
from desgw.sim.survey import (
    EXTINCTION_PER_AIRMASS,
    ZEROPOINT_AIRMASS1,
    CCDFootprint,
    ccd_overlap_fraction,
    field_radius_deg,
    overlapping_ccds,
    plan_night,
)
import itertools


def _poly_area(x, y):
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _clip(subject, clipper):
    """Sutherland-Hodgman: the part of convex polygon ``subject`` inside convex ``clipper`` (CCW)."""
    out = list(subject)
    for i in range(len(clipper)):
        a, b = np.asarray(clipper[i]), np.asarray(clipper[(i + 1) % len(clipper)])
        inp, out = out, []

        def inside(p, a=a, b=b):
            return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]) >= 0

        for j in range(len(inp)):
            p, q = np.asarray(inp[j]), np.asarray(inp[(j + 1) % len(inp)])
            if inside(q):
                if not inside(p):
                    out.append(_intersect(p, q, a, b))
                out.append(q)
            elif inside(p):
                out.append(_intersect(p, q, a, b))
        if not out:
            return []
    return out


def _intersect(p, q, a, b):
    d1, d2 = q - p, b - a
    t = ((a[0] - p[0]) * d2[1] - (a[1] - p[1]) * d2[0]) / (d1[0] * d2[1] - d1[1] * d2[0])
    return p + t * d1


def _ccd_poly(ccd, spec, ref):
    ra, dec = ccd_corners_sky(ccd, spec.pointing, spec.distortion)
    xi, eta = sky_to_tangent(ra, dec, ref)
    pts = list(zip(xi, eta))
    area = 0.5 * sum(pts[i][0] * pts[(i + 1) % 4][1] - pts[(i + 1) % 4][0] * pts[i][1] for i in range(4))
    return pts if area > 0 else pts[::-1]


@pytest.fixture(scope="module")
def plan():
    return plan_night(seed=7, band="r", n_templates=4, n_search=2)


def test_epochs_expnums_and_exposure_times(plan):
    temps = [s for s in plan if s.is_template]
    search = [s for s in plan if not s.is_template]
    assert len(temps) == 4 and len(search) == 2
    expnums = [s.expnum for s in plan]
    assert all(b > a for a, b in itertools.pairwise(expnums))
    assert all(600_000 <= e < 900_000 for e in expnums)
    mjd = [s.mjd for s in plan]
    assert all(b > a for a, b in itertools.pairwise(mjd))
    assert len({int(np.floor(s.mjd)) for s in temps}) == 4  # different nights
    assert all(search[0].mjd - t.mjd >= 30 for t in temps)
    assert all(s.exptime == 90.0 for s in plan)
    assert search[1].mjd - search[0].mjd == pytest.approx(120 / 86400)


def test_seeing_airmass_sky_and_zeropoint(plan):
    for s in plan:
        assert 0.8 <= s.psf.fwhm_arcsec <= 2.0
        assert 1.0 <= s.airmass <= 1.6
        assert 19.0 < s.sky_mag_arcsec2 < 21.6
        clear = ZEROPOINT_AIRMASS1["r"] - EXTINCTION_PER_AIRMASS["r"] * (s.airmass - 1.0)
        assert clear - 0.4 <= s.zeropoint <= clear
        assert 0.02 <= s.psf.fwhm_r2 <= 0.06 and 0.02 <= abs(s.psf.e_astig) <= 0.04
        # k2 perturbed by ~1 %, not exactly the instrument model
        assert s.distortion.k2 != DECAM_DISTORTION.k2
        assert abs(s.distortion.k2 / DECAM_DISTORTION.k2 - 1) < 0.05
    search = next(s for s in plan if not s.is_template)
    t_fwhm = [s.psf.fwhm_arcsec for s in plan if s.is_template]
    assert min(t_fwhm) < search.psf.fwhm_arcsec < max(t_fwhm)
    # seeing differs between exposures
    assert len({round(s.psf.fwhm_arcsec, 3) for s in plan}) == len(plan)


def test_band_dependent_sky_and_zeropoint():
    g = plan_night(seed=1, band="g", n_templates=1)
    z = plan_night(seed=1, band="z", n_templates=1)
    assert np.mean([s.zeropoint for s in g]) > np.mean([s.zeropoint for s in z])
    assert min(s.sky_mag_arcsec2 for s in g) > max(s.sky_mag_arcsec2 for s in z) - 1.5


def test_header_pointing_error_bounds(plan):
    for s in plan:
        sep = angular_separation_deg(s.pointing.ra_deg, s.pointing.dec_deg,
                                     s.header_pointing.ra_deg, s.header_pointing.dec_deg) * 3600
        assert 2.0 <= float(sep) <= 10.0 + 1e-6
        drot = abs(s.header_pointing.rotation_deg - s.pointing.rotation_deg)
        assert 0.005 <= drot <= 0.05 + 1e-12
    exact = plan_night(seed=7, band="r", n_templates=4, n_search=2, switches=SimSwitches(wcs_error=False))
    assert all(s.header_pointing == s.pointing for s in exact)


def test_dithers_give_partial_ccd_overlap(plan):
    search = next(s for s in plan if not s.is_template)
    ref = search.pointing
    fracs = []
    for t in (s for s in plan if s.is_template):
        sep = angular_separation_deg(t.pointing.ra_deg, t.pointing.dec_deg, ref.ra_deg, ref.dec_deg) * 60
        assert 10.0 - 1e-6 <= float(sep) <= 25.0 + 1e-6
        a = _ccd_poly(28, search, ref)
        b = _ccd_poly(28, t, ref)
        inter = _clip(a, b)
        frac = _poly_area(*np.array(inter).T) / _poly_area(*np.array(a).T) if inter else 0.0
        assert frac < 0.9
        # the grid estimate agrees with the exact polygon clipping
        assert ccd_overlap_fraction(search, 28, t, [28]) == pytest.approx(frac, abs=0.05)
        fracs.append(frac)
        # but the template's full camera covers the search CCD
        over = overlapping_ccds(search, [28], t)
        assert len(over) >= 2
        assert ccd_overlap_fraction(search, 28, t, over) > 0.8  # less the chip gaps
    assert any(0.0 < f < 0.9 for f in fracs)
    same = plan_night(seed=7, band="r", n_templates=4, n_search=2, switches=SimSwitches(dither=False))
    assert len({s.pointing for s in same}) == 1


def test_determinism_and_seed_dependence(plan):
    again = plan_night(seed=7, band="r", n_templates=4, n_search=2)
    assert again == plan
    other = plan_night(seed=8, band="r", n_templates=4, n_search=2)
    assert other != plan


def test_footprint_and_radius(plan):
    search = [s for s in plan if not s.is_template]
    fp = CCDFootprint(tuple(search), (28, 35))
    ra, dec = ccd_corners_sky(28, search[0].pointing, search[0].distortion)
    cra, cdec = np.mean(ra), np.mean(dec)
    assert fp(np.array([cra]), np.array([cdec]))[0]
    assert not fp(np.array([cra + 1.0]), np.array([cdec]))[0]
    r = field_radius_deg(plan, [[28, 35]] * len(plan), (30.0, -30.0))
    assert 0.3 < r < 1.0
    with pytest.raises(ValueError):
        plan_night(seed=1, band="u")
