"""Geometry: epochs, tangent plane, footprints, proper motion."""

from __future__ import annotations

import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.time import Time

from desgw.refcat.geometry import (
    angular_separation_deg,
    convex_footprint,
    gnomonic_forward,
    gnomonic_inverse,
    mjd_to_jyear,
    propagate_proper_motion,
)


def test_mjd_to_jyear_matches_astropy():
    for mjd in (51544.5, 58849.0, 60310.25):
        assert mjd_to_jyear(mjd) == pytest.approx(Time(mjd, format="mjd", scale="tt").jyear,
                                                  abs=1e-9)
    assert mjd_to_jyear(51544.5) == 2000.0
    arr = mjd_to_jyear(np.array([51544.5, 51544.5 + 365.25]))
    np.testing.assert_allclose(arr, [2000.0, 2001.0])


def test_gnomonic_round_trip_and_wrap():
    rng = np.random.default_rng(1)
    for ra0, dec0 in ((0.1, 0.0), (359.9, -30.0), (45.0, -89.5), (200.0, 75.0)):
        xi = rng.uniform(-2, 2, 100)
        eta = rng.uniform(-2, 2, 100)
        ra, dec = gnomonic_inverse(xi, eta, ra0, dec0)
        x2, y2, front = gnomonic_forward(ra, dec, ra0, dec0)
        assert front.all()
        np.testing.assert_allclose(x2, xi, atol=1e-10)
        np.testing.assert_allclose(y2, eta, atol=1e-10)
        assert np.all((ra >= 0) & (ra < 360))


def test_separation_against_astropy():
    rng = np.random.default_rng(2)
    ra1, dec1 = rng.uniform(0, 360, 50), rng.uniform(-90, 90, 50)
    ra2, dec2 = rng.uniform(0, 360, 50), rng.uniform(-90, 90, 50)
    ref = SkyCoord(ra1 * u.deg, dec1 * u.deg).separation(SkyCoord(ra2 * u.deg, dec2 * u.deg)).deg
    np.testing.assert_allclose(angular_separation_deg(ra1, dec1, ra2, dec2), ref, atol=1e-10)


def test_proper_motion_hand_computation():
    # 1 arcsec/yr east (mu_alpha*) for 10 yr at the equator: +10 arcsec in RA
    ra, dec = propagate_proper_motion([10.0], [0.0], [1000.0], [0.0], 10.0)
    assert ra[0] == pytest.approx(10.0 + np.degrees(np.arctan(np.radians(10 / 3600))), abs=1e-12)
    assert dec[0] == pytest.approx(0.0, abs=1e-12)
    # at dec 60 the same mu_alpha* moves RA by twice as much (1/cos 60)
    ra, dec = propagate_proper_motion([359.999], [60.0], [1000.0], [0.0], 10.0)
    assert (ra[0] - 359.999 + 360) % 360 == pytest.approx(2 * 10 / 3600, rel=1e-6)
    assert angular_separation_deg(359.999, 60.0, ra[0], dec[0]) == pytest.approx(
        10 / 3600, rel=1e-9)
    # pure north motion: dec increases by mu_delta * dt
    ra, dec = propagate_proper_motion([123.0], [-75.0], [0.0], [-500.0], 4.0)
    assert ra[0] == pytest.approx(123.0, abs=1e-12)
    assert dec[0] == pytest.approx(-75.0 - 2.0 / 3600, abs=1e-10)
    # backwards in time and zero motion
    ra, dec = propagate_proper_motion([5.0, 5.0], [5.0, 5.0], [0.0, 300.0], [0.0, 400.0], -2.0)
    assert ra[0] == 5.0 and dec[0] == 5.0
    assert angular_separation_deg(5.0, 5.0, ra[1], dec[1]) == pytest.approx(1.0 / 3600, rel=1e-6)


def test_proper_motion_against_astropy_space_motion():
    rng = np.random.default_rng(3)
    n = 200
    ra, dec = rng.uniform(0, 360, n), rng.uniform(-85, 85, n)
    pmra, pmdec = rng.normal(0, 200, n), rng.normal(0, 200, n)
    r2, d2 = propagate_proper_motion(ra, dec, pmra, pmdec, 5.0)
    c = SkyCoord(ra * u.deg, dec * u.deg, pm_ra_cosdec=pmra * u.mas / u.yr,
                 pm_dec=pmdec * u.mas / u.yr, obstime=Time(2016.0, format="jyear"))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ERFA: "distance overridden" (no parallax given)
        moved = c.apply_space_motion(new_obstime=Time(2021.0, format="jyear"))
    sep = angular_separation_deg(r2, d2, moved.ra.deg, moved.dec.deg) * 3.6e6  # mas
    assert np.max(sep) < 0.01  # second-order differences only (motions ~1 arcsec)


def test_footprint_contains_square_and_order_independence():
    ra = np.array([10.0, 10.2, 10.2, 10.0])
    dec = np.array([-5.0, -5.0, -4.8, -4.8])
    fp1 = convex_footprint(ra, dec)
    fp2 = convex_footprint(ra[[2, 0, 3, 1]], dec[[2, 0, 3, 1]])  # scrambled order
    pts_ra = np.array([10.1, 10.25, 10.1, 9.99])
    pts_dec = np.array([-4.9, -4.9, -5.01, -4.9])
    np.testing.assert_array_equal(fp1.contains(pts_ra, pts_dec), [True, False, False, False])
    np.testing.assert_array_equal(fp2.contains(pts_ra, pts_dec), [True, False, False, False])
    # margin of 40 arcsec catches the point 0.01 deg = 36 arcsec outside, not 0.05 deg
    fpm = convex_footprint(ra, dec, margin_arcsec=40)
    np.testing.assert_array_equal(fpm.contains(pts_ra, pts_dec), [True, False, True, True])
    assert fpm.radius_deg > fp1.radius_deg


def test_footprint_hemisphere_guard():
    fp = convex_footprint([0, 1, 1, 0], [0, 0, 1, 1])
    assert not fp.contains(np.array([180.5]), np.array([-0.5]))[0]  # antipode excluded


@pytest.mark.parametrize("ra,dec,match", [
    ([0, 1], [0, 0], "at least 3"),
    ([0, 1, 2], [0, 0, 0], "collinear"),
    ([0, 1, np.nan], [0, 0, 1], "finite"),
    ([0, 1, 2], [0, 1], "corners_dec"),
    ([0, 120, 240], [0, 0, 0], "spread|too much"),
])
def test_footprint_bad_input(ra, dec, match):
    with pytest.raises(ValueError, match=match):
        convex_footprint(ra, dec)


def test_negative_margin_rejected():
    with pytest.raises(ValueError, match="margin"):
        convex_footprint([0, 1, 1], [0, 0, 1], margin_arcsec=-1)
