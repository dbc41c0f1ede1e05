"""desgw.workflow.diff_relzp: missing zeropoints filled from relative flux scales, flagged."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.table import Table

from desgw.diff.pipeline_types import CCDProducts
from desgw.se.nominal_zp import NOMINAL_ZP_ERROR
from desgw.se.quality import EXTINCTION, NOMINAL_ZP
from desgw.workflow.diff_relzp import INSTRUMENTAL_ZEROPOINT, resolve_zeropoints

DMAG = 0.35  # search brighter than the template by this much (e.g. a longer exposure)


def _catalog(scale: float, rng: np.random.Generator) -> Table:
    n = 30
    ra = 40.0 + np.linspace(0, 0.05, n)
    dec = np.full(n, -10.0) + np.linspace(0, 0.02, n)
    flux = np.geomspace(5e3, 5e5, n) * scale
    err = np.sqrt(flux + 200.0 ** 2)
    return Table({"ALPHAWIN_J2000": ra, "DELTAWIN_J2000": dec,
                  "FLUX_PSF": flux + rng.normal(0, err), "FLUXERR_PSF": err,
                  "FLAGS": np.zeros(n, np.int16), "IMAFLAGS_ISO": np.zeros(n, np.int32)})


def _ccd(expnum, ccdnum, zp, catalog, qc_passed=True, airmass=math.nan, exptime=90.0):
    z = np.zeros((4, 4), np.float32)
    return CCDProducts(image=z, mask=z.astype(np.int32), weight=z + 1, wcs=None, psf=None,
                       zp=zp, exptime=exptime, band="r", expnum=expnum, ccdnum=ccdnum,
                       catalog=catalog, qc_passed=qc_passed, airmass=airmass)


CALIB_ONLY = ["too few stars: 0 matched, 10 needed", "zeropoint not measured"]


def test_template_without_zeropoint_gets_the_search_one_minus_dmag():
    rng = np.random.default_rng(3)
    search = _ccd(1, 10, 31.20, _catalog(10 ** (0.4 * DMAG), rng))
    t_ok = _ccd(2, 10, math.nan, _catalog(1.0, rng), qc_passed=False)
    t_bad = _ccd(3, 11, math.nan, _catalog(1.0, rng), qc_passed=False)
    qc = {(2, 10): CALIB_ONLY, (3, 11): [*CALIB_ONLY, "FWHM 2.5\" > 2.0\""]}
    s2, (a, b), res = resolve_zeropoints(search, [t_ok, t_bad], qc=qc)
    assert s2 is search and res.mode == "relative" and res.flags == ["zeropoint_relative"]
    assert [e["expnum"] for e in res.templates] == [2, 3]
    for t, e in ((a, res.templates[0]), (b, res.templates[1])):
        assert t.zp == pytest.approx(31.20 - e["dmag"])
        assert abs(e["dmag"] - DMAG) < 4 * e["dmag_err"] and e["dmag_err"] < 0.01
    # a QC failure for lack of calibration stars only is lifted; one for seeing is not
    assert a.qc_passed and not b.qc_passed
    assert math.isnan(t_ok.zp)  # the inputs are not modified


def test_search_without_zeropoint_calibrated_through_a_template_or_instrumental():
    rng = np.random.default_rng(4)
    search = _ccd(1, 10, math.nan, _catalog(10 ** (0.4 * DMAG), rng), qc_passed=False)
    cal = _ccd(2, 10, 30.00, _catalog(1.0, rng))
    uncal = _ccd(3, 10, math.nan, _catalog(1.0, rng))
    s2, (a, b), res = resolve_zeropoints(search, [cal, uncal], qc={(1, 10): CALIB_ONLY})
    assert res.mode == "relative" and res.search_source == "template 2/10"
    assert abs(s2.zp - (30.00 + DMAG)) < 0.02 and s2.qc_passed
    assert a is cal and abs(b.zp - 30.00) < 0.03  # the same sky as the calibrated template

    s3, (c,), res = resolve_zeropoints(search, [uncal])
    assert res.mode == "instrumental" and s3.zp == INSTRUMENTAL_ZEROPOINT
    assert res.flags == ["zeropoint_relative", "magnitudes_uncalibrated"]
    assert abs(c.zp - (INSTRUMENTAL_ZEROPOINT - DMAG)) < 0.02


def test_nothing_in_common_leaves_the_zeropoint_missing_with_the_reason():
    rng = np.random.default_rng(5)
    other = _catalog(1.0, rng)
    other["DELTAWIN_J2000"] += 1.0  # another part of the sky
    search = _ccd(1, 10, math.nan, _catalog(1.0, rng))
    s2, (t,), res = resolve_zeropoints(search, [_ccd(2, 10, math.nan, other)])
    assert math.isnan(s2.zp) and math.isnan(t.zp)
    assert res.flags == ["zeropoint_relative_failed"]
    assert "0 matched" in res.templates[0]["reason"]


def _far(rng):
    other = _catalog(1.0, rng)
    other["DELTAWIN_J2000"] += 1.0  # another part of the sky: no source in common
    return other


def test_no_absolute_zeropoint_anywhere_the_search_gets_its_nominal_one():
    """A measurable flux ratio still sets the template's scale; the absolute level is the
    search's nominal zeropoint (r, CCD 10, 90 s, airmass 1.3), flagged, with its error."""
    rng = np.random.default_rng(6)
    search = _ccd(1, 10, math.nan, _catalog(10 ** (0.4 * DMAG), rng), airmass=1.3)
    tmpl = _ccd(2, 10, math.nan, _catalog(1.0, rng), airmass=1.1)
    s2, (t,), res = resolve_zeropoints(search, [tmpl])
    expected = NOMINAL_ZP["r"] - EXTINCTION["r"] * 0.3 + 2.5 * math.log10(90.0)
    assert abs(s2.zp - expected) < 0.02  # the CCD's throughput offset is within +-1.5 %
    assert res.mode == "nominal" and res.search_source == "nominal"
    assert res.search_zp_err == NOMINAL_ZP_ERROR
    assert res.flags == ["zeropoint_relative", "zeropoint_nominal"]
    (e,) = res.templates
    assert e["source"] == "relative" and t.zp == pytest.approx(s2.zp - e["dmag"])
    assert abs(e["dmag"] - DMAG) < 4 * e["dmag_err"]


def test_without_a_flux_ratio_each_epoch_gets_its_nominal_zeropoint():
    """testcase6 g/r: nothing measured in common. The nominal zeropoints differ by the
    exposure-time ratio and the extinction between the airmasses (same CCD: same
    throughput); a search with its own zeropoint keeps it."""
    rng = np.random.default_rng(7)
    search = _ccd(1, 10, math.nan, _catalog(1.0, rng), airmass=1.2, exptime=90.0)
    tmpl = _ccd(2, 10, math.nan, _far(rng), airmass=1.5, exptime=45.0, qc_passed=False)
    s2, (t,), res = resolve_zeropoints(search, [tmpl], qc={(2, 10): CALIB_ONLY})
    assert res.mode == "nominal" and res.flags == ["zeropoint_nominal"]
    assert s2.zp - t.zp == pytest.approx(2.5 * math.log10(2.0) + EXTINCTION["r"] * 0.3,
                                         abs=1e-9)
    (e,) = res.templates
    assert e["source"] == "nominal" and e["zp_err"] == NOMINAL_ZP_ERROR
    assert "0 matched" in e["reason"] and t.qc_passed

    s3, (t3,), res3 = resolve_zeropoints(_ccd(1, 10, 31.0, _catalog(1.0, rng)), [tmpl])
    assert s3.zp == 31.0 and res3.search_source == "se" and res3.mode == "nominal"
    assert t3.zp == pytest.approx(t.zp)


def test_no_nominal_zeropoint_without_an_airmass_says_so():
    rng = np.random.default_rng(8)
    search = _ccd(1, 10, math.nan, _catalog(1.0, rng))
    s2, _, res = resolve_zeropoints(search, [_ccd(2, 10, math.nan, _far(rng))])
    assert math.isnan(s2.zp) and res.flags == ["zeropoint_relative_failed"]
    assert "no nominal zeropoint: airmass must be finite" in res.templates[-1]["reason"]
