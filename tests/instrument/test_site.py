"""Airmass from the pointing and the time at CTIO, against astropy's full AltAz transformation,
and the SE's use of it when a raw header lacks AIRMASS."""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pytest

from desgw.instrument.site import (
    CTIO_LATITUDE_DEG,
    CTIO_LONGITUDE_DEG,
    airmass_at,
    zenith_distance_deg,
)


def test_zenith_distance_and_airmass_match_astropy():
    import astropy.units as u
    from astropy.coordinates import AltAz, EarthLocation, SkyCoord
    from astropy.time import Time
    from astropy.utils import iers

    loc = EarthLocation(lat=CTIO_LATITUDE_DEG * u.deg, lon=CTIO_LONGITUDE_DEG * u.deg,
                        height=2207 * u.m)
    rng = np.random.default_rng(3)
    ra, dec, mjd = rng.uniform(0, 360, 40), rng.uniform(-89, 30, 40), rng.uniform(57000, 60000, 40)
    with iers.conf.set_temp("auto_download", False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aa = SkyCoord(ra * u.deg, dec * u.deg).transform_to(
            AltAz(obstime=Time(mjd, format="mjd", scale="utc"), location=loc))
    z_true = 90.0 - np.asarray(aa.alt.deg)
    n_checked = 0
    for r, d, m, zt in zip(ra, dec, mjd, z_true):
        # precession from J2000 to the date (< 0.35 deg by 2023) is the only neglected term
        assert zenith_distance_deg(r, d, m) == pytest.approx(zt, abs=0.4)
        if zt < 60:
            n_checked += 1
            assert airmass_at(r, d, m) == pytest.approx(1.0 / math.cos(math.radians(zt)),
                                                        rel=0.012)
        if zt > 90.5:
            assert math.isnan(airmass_at(r, d, m))
    assert n_checked >= 8


def test_zenith_gives_airmass_one_and_the_formula_is_below_sec_z():
    # a star at the site's latitude crossing the meridian: the sidereal time equals its RA
    mjd = 59000.25
    from desgw.instrument.site import _gmst_deg

    ra = (_gmst_deg(mjd) + CTIO_LONGITUDE_DEG) % 360.0
    assert airmass_at(ra, CTIO_LATITUDE_DEG, mjd) == pytest.approx(1.0, abs=1e-9)
    x = airmass_at(ra, CTIO_LATITUDE_DEG + 60.0, mjd)  # z = 60 deg on the meridian
    assert 1.98 < x < 2.0  # Hardie: sec z = 2 less the curvature terms (~0.01)


def test_se_recomputes_a_missing_airmass_from_the_pointing(caplog):
    from types import SimpleNamespace

    from desgw.se.process import _exposure_airmass

    mjd = 59000.25
    from desgw.instrument.site import _gmst_deg

    ra = (_gmst_deg(mjd) + CTIO_LONGITUDE_DEG) % 360.0
    exp = SimpleNamespace(expnum=7, airmass=None, ra_deg=ra, dec_deg=CTIO_LATITUDE_DEG + 60.0,
                          mjd_obs=mjd, exptime=0.0)
    with caplog.at_level(logging.WARNING):
        assert _exposure_airmass(exp) == pytest.approx(airmass_at(ra, exp.dec_deg, mjd))
    assert "from the pointing" in caplog.text
    assert _exposure_airmass(SimpleNamespace(**{**vars(exp), "airmass": 1.31})) == 1.31
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert _exposure_airmass(SimpleNamespace(**{**vars(exp), "ra_deg": None})) == 1.0
    assert "1.0 assumed" in caplog.text
