"""Tests of desgw.se.quality: t_eff, sky brightness, QC decisions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from desgw.errors import DesgwInputError
from desgw.se.photocal_synth import make_calibration_field
from desgw.se.quality import (
    DARK_SKY_MAG,
    EXTINCTION,
    FWHM_REF_ARCSEC,
    NOMINAL_ZP,
    PIXEL_SCALE_ARCSEC,
    QC_BANDS,
    QCThresholds,
    assess_quality,
    astrometric_rms_arcsec,
    combine_qc_metrics,
    compute_qc_metrics,
    effective_time_factor,
    median_fwhm_arcsec,
    nominal_zeropoint,
    reference_sky_rate,
    sky_brightness,
)

EXPTIME = 90.0


def _conditions(band, *, airmass=1.0, fwhm=0.9, sky_mag=None, zp_loss=0.0, n_stars=200,
                astro=0.05):
    """Metrics of an exposure with the given conditions (reference ones by default)."""
    zp = nominal_zeropoint(band, airmass) + 2.5 * math.log10(EXPTIME) - zp_loss
    mu = DARK_SKY_MAG[band] if sky_mag is None else sky_mag
    sky_e = PIXEL_SCALE_ARCSEC ** 2 * 10 ** (-0.4 * (mu - zp))
    return compute_qc_metrics(band=band, exptime=EXPTIME, airmass=airmass, fwhm_arcsec=fwhm,
                              sky_level_e=sky_e, zp=zp, astrometric_rms_arcsec=astro,
                              n_stars=n_stars)


@pytest.mark.parametrize("band", QC_BANDS)
def test_teff_is_one_at_reference_conditions(band):
    m = _conditions(band)
    assert m.teff.teff == pytest.approx(1.0, rel=1e-9)
    assert m.teff_seconds == pytest.approx(EXPTIME, rel=1e-9)
    assert m.sky_mag_arcsec2 == pytest.approx(DARK_SKY_MAG[band], abs=1e-9)
    assert m.zp_offset == pytest.approx(0.0, abs=1e-9)
    assert assess_quality(m).passed


def test_teff_scales_with_seeing_sky_and_transparency():
    m = _conditions("r", fwhm=1.8)
    assert m.teff.teff == pytest.approx(0.25, rel=1e-9)
    m = _conditions("r", sky_mag=DARK_SKY_MAG["r"] - 1.0)  # sky 2.512 x brighter
    assert m.teff.teff == pytest.approx(10 ** -0.4, rel=1e-9)
    m = _conditions("r", zp_loss=0.5)  # 0.5 mag of cloud, 0.1 tolerated
    assert m.teff.eta == pytest.approx(10 ** (-0.4 * 0.4), rel=1e-9)
    assert m.teff.teff_transparency == pytest.approx(10 ** (-0.8 * 0.4), rel=1e-9)
    # the clouds dim the sky too (same calibrated surface brightness, 0.5 mag fewer counts):
    # the sky term gains what the stars lose once, so t_eff drops as eta (not eta^2)
    assert m.sky_mag_arcsec2 == pytest.approx(DARK_SKY_MAG["r"], abs=1e-9)
    assert m.teff.teff_sky == pytest.approx(10 ** (0.4 * 0.5), rel=1e-9)
    assert m.teff.teff == pytest.approx(10 ** (-0.8 * 0.4 + 0.2), rel=1e-9)
    # observing at airmass 1.5 in clear dark sky of the same brightness per airmass-1 photons:
    # the ZP is nominal for that airmass (eta = 1), the sky counts drop with extinction
    m = _conditions("g", airmass=1.5)
    assert m.teff.eta == 1.0
    assert m.teff.teff == pytest.approx(10 ** (0.4 * 0.5 * EXTINCTION["g"]), rel=1e-9)
    ref_rate = reference_sky_rate("i")
    t = effective_time_factor("i", fwhm_arcsec=FWHM_REF_ARCSEC, sky_rate_e=ref_rate,
                              zp_offset=-0.5, zp_tolerance=0.0)
    assert t.teff == pytest.approx(10 ** -0.4, rel=1e-9)
    assert effective_time_factor("i", fwhm_arcsec=0.9, sky_rate_e=ref_rate,
                                 zp_offset=+0.3).eta == 1.0
    assert effective_time_factor("i", fwhm_arcsec=0.9, sky_rate_e=2 * ref_rate).teff == \
        pytest.approx(0.5)
    assert math.isnan(effective_time_factor("g", fwhm_arcsec=float("nan"),
                                            sky_rate_e=ref_rate).teff)
    assert math.isnan(effective_time_factor("g", fwhm_arcsec=1.0, sky_rate_e=0.0).teff)


def test_nominal_zeropoints_and_sky_brightness():
    assert nominal_zeropoint("r") == NOMINAL_ZP["r"]
    assert nominal_zeropoint("g", 1.5) == pytest.approx(NOMINAL_ZP["g"] - 0.5 * EXTINCTION["g"])
    with pytest.raises(ValueError):
        nominal_zeropoint("u")
    with pytest.raises(ValueError):
        nominal_zeropoint("r", 0.9)
    # 1000 e- per 0.263" pixel with zp 31.5 -> 31.5 - 2.5 log10(1000 / 0.069169)
    assert sky_brightness(1000.0, 31.5) == pytest.approx(31.5 - 2.5 * math.log10(1000 / 0.069169))
    assert math.isnan(sky_brightness(0.0, 31.5))
    # a typical dark r-band sky in 90 s is ~ 1000 e- per pixel
    zp90 = NOMINAL_ZP["r"] + 2.5 * math.log10(90)
    sky_e = PIXEL_SCALE_ARCSEC ** 2 * 10 ** (-0.4 * (DARK_SKY_MAG["r"] - zp90))
    assert 500 < sky_e < 2000


def test_cloudy_exposure_fails_naming_the_zeropoint():
    m = _conditions("r", zp_loss=1.0)
    res = assess_quality(m)
    assert not res.passed
    assert any("zeropoint" in r and "1.00 mag below nominal" in r for r in res.reasons)
    # t_eff alone (eta^2 = 10^-0.72 times a sky 1 mag darker in counts: 0.48) would pass r
    assert m.teff.teff == pytest.approx(10 ** (-0.72 + 0.4), rel=1e-9)
    assert res.reasons == tuple(r for r in res.reasons if "zeropoint" in r)
    assert res.metrics is m
    # 0.3 mag of cloud is tolerated by the ZP check
    assert assess_quality(_conditions("r", zp_loss=0.3)).passed


def test_too_few_stars_fails_with_reason():
    res = assess_quality(_conditions("i", n_stars=3))
    assert not res.passed
    assert res.reasons == ("too few stars: 3 matched, 10 needed",)
    assert assess_quality(_conditions("i", n_stars=3), thresholds=QCThresholds(min_stars=3)).passed


def test_bad_seeing_astrometry_and_teff_fail():
    res = assess_quality(_conditions("g", fwhm=2.0))
    assert not res.passed and any(r.startswith("FWHM 2.00 arcsec > 1.76") for r in res.reasons)
    res = assess_quality(_conditions("z", astro=0.4))
    assert res.reasons == ("astrometric rms 0.400 arcsec > 0.150",)
    res = assess_quality(_conditions("z", sky_mag=DARK_SKY_MAG["z"] - 1.5))  # bright moon
    assert len(res.reasons) == 1 and res.reasons[0].startswith("t_eff 0.251 < 0.30")
    nan_m = _conditions("r", fwhm=float("nan"))
    reasons = assess_quality(nan_m).reasons
    assert "FWHM not measured" in reasons and "t_eff not measured" in reasons


def test_median_fwhm_and_astrometric_rms_from_synthetic_catalog():
    f = make_calibration_field(band="r", fwhm_arcsec=1.25, seed=5)
    fwhm = median_fwhm_arcsec(f.catalog)
    assert fwhm == pytest.approx(1.25, rel=0.02)
    assert median_fwhm_arcsec(f.catalog, stars=np.zeros(len(f.catalog), bool)) != fwhm
    with pytest.raises(DesgwInputError):
        median_fwhm_arcsec(f.catalog[["CLASS_STAR"]])
    rng = np.random.default_rng(1)
    d = rng.normal(0, 0.05, (2, 20000))  # 0.05" per axis
    assert astrometric_rms_arcsec(np.hypot(*d)) == pytest.approx(0.05 * math.sqrt(2), rel=0.02)
    assert math.isnan(astrometric_rms_arcsec([]))


def test_combine_ccd_metrics():
    ccds = [_conditions("r", fwhm=f, n_stars=n, astro=a)
            for f, n, a in [(0.9, 10, 0.05), (1.0, 30, 0.10), (1.1, 20, 0.05)]]
    e = combine_qc_metrics(ccds)
    assert e.fwhm_arcsec == pytest.approx(1.0)
    assert e.n_stars == 60
    assert e.astrometric_rms_arcsec == pytest.approx(math.sqrt((10 * 0.0025 + 30 * 0.01
                                                                + 20 * 0.0025) / 60))
    assert e.teff.teff == pytest.approx((0.9 / 1.0) ** 2)
    with pytest.raises(ValueError):
        combine_qc_metrics([ccds[0], _conditions("g")])
    with pytest.raises(ValueError):
        combine_qc_metrics([])
