"""desgw.diff.relscale: the search/template flux ratio from the sources of both catalogs."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from astropy.table import Table

from desgw.diff.relscale import RelativeScaleError, relative_flux_scale
from desgw.se import maskbits


def _catalogs(rng, *, n=40, dmag=0.7, bkg_e=400.0, n_var=2, jitter_arcsec=0.1):
    """Template and search catalogs of the same sky: n sources (fluxes 2e3-5e5 e- in the
    template, search = template * 10**(0.4 dmag)), Poisson + background errors; n_var of them
    vary by a factor 3; one saturated source with a clipped flux, one with a masked pixel, and
    5 sources in each catalog only."""
    ra0, dec0 = 30.0, -20.0
    ra = ra0 + rng.uniform(-0.1, 0.1, n)
    dec = dec0 + rng.uniform(-0.1, 0.1, n)
    true_t = 10 ** rng.uniform(np.log10(2e3), np.log10(5e5), n)
    true_s = true_t * 10 ** (0.4 * dmag)
    true_s[:n_var] *= 3.0

    def cat(flux, ra, dec, extra):
        err = np.sqrt(flux + (10 * bkg_e) ** 2 / 4)  # ~ PSF-fit noise of a 25-pixel footprint
        meas = flux + rng.normal(0.0, err)
        jit = jitter_arcsec / 3600.0
        t = Table({"ALPHAWIN_J2000": ra + rng.normal(0, jit, ra.size) / np.cos(np.radians(dec)),
                   "DELTAWIN_J2000": dec + rng.normal(0, jit, ra.size),
                   "FLUX_PSF": meas, "FLUXERR_PSF": err,
                   "FLAGS": np.zeros(ra.size, np.int16),
                   "IMAFLAGS_ISO": np.zeros(ra.size, np.int32)})
        k = n_var  # a saturated star: flux clipped, SExtractor flag 4
        t["FLUX_PSF"][k] *= 0.5
        t["FLAGS"][k] = 4
        t["IMAFLAGS_ISO"][k + 1] = maskbits.CRAY  # a cosmic ray on the next one
        t["FLUX_PSF"][k + 1] *= extra
        lone_ra = ra0 + rng.uniform(-0.1, 0.1, 5)
        lone = Table({"ALPHAWIN_J2000": lone_ra, "DELTAWIN_J2000": dec0 + rng.uniform(
            -0.1, 0.1, 5), "FLUX_PSF": np.full(5, 1e5), "FLUXERR_PSF": np.full(5, 300.0),
            "FLAGS": np.zeros(5, np.int16), "IMAFLAGS_ISO": np.zeros(5, np.int32)})
        from astropy.table import vstack

        return vstack([t, lone])

    return cat(true_s, ra, dec, 2.0), cat(true_t, ra, dec, 1.0)


def test_ratio_recovered_with_honest_errors():
    """Over 200 skies (dmag 0.7, 2 variables, a saturated and a cosmic-ray source, lone
    sources) the measured dmag has pulls ~ N(0, 1): the clipping removes the variables and
    the flags the bad measurements (without them the mean is biased by >> its error)."""
    rng = np.random.default_rng(11)
    pulls = []
    for _ in range(200):
        s, t = _catalogs(rng)
        r = relative_flux_scale(s, t)
        # the clean ones: S/N >= 5 in both, not the saturated nor the cosmic-ray source
        assert r.n_matched >= 40 and 15 <= r.n_clean <= 38
        assert r.n_clean - 3 <= r.n_used <= r.n_clean
        pulls.append((r.dmag - 0.7) / r.dmag_err)
    pulls = np.asarray(pulls)
    assert abs(np.mean(pulls)) < 0.25 and 0.8 < np.std(pulls) < 1.25
    s, t = _catalogs(rng)
    r = relative_flux_scale(s, t)
    assert r.ratio == pytest.approx(10 ** 0.28, rel=5 * r.dmag_err)
    assert r.dmag_err < 0.01


def test_one_source_and_none():
    """One clean common source gives its own ratio and error; none raises with the counts,
    and the error survives pickling (it crosses process boundaries in the engine)."""
    base = {"ALPHAWIN_J2000": [10.0, 10.001], "DELTAWIN_J2000": [5.0, 5.0],
            "FLAGS": [0, 4], "IMAFLAGS_ISO": [0, 0]}
    s = Table({**base, "FLUX_PSF": [2000.0, 9e5], "FLUXERR_PSF": [100.0, 900.0]})
    t = Table({**base, "FLUX_PSF": [1000.0, 8e5], "FLUXERR_PSF": [50.0, 900.0]})
    r = relative_flux_scale(s, t)
    assert r.n_used == 1 and r.n_matched == 2
    assert r.dmag == pytest.approx(2.5 * np.log10(2.0))
    assert r.dmag_err == pytest.approx(1.0857 * np.hypot(0.05, 0.05), rel=1e-3)
    t["IMAFLAGS_ISO"][0] = maskbits.SAT
    with pytest.raises(RelativeScaleError, match="2 matched") as info:
        relative_flux_scale(s, t)
    again = pickle.loads(pickle.dumps(info.value))
    assert again.n_matched == 2 and str(again) == str(info.value)
