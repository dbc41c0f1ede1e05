"""Exposure-level calibration of desgw.se.expcalib: empirical-Bayes CCD zeropoints against truth.

A simulated exposure of 60 CCDs, each a catalogue-level field of ~35 Gaia stars
(:func:`desgw.se.photocal_synth.make_calibration_field`: Gaia G/BP/RP with Gaia-like errors,
true DES magnitudes from the real Gaia -> DES transformation plus 0.01 mag intrinsic scatter,
Poisson and sky noise, blends and saturated stars), so that each CCD's own zeropoint carries
the 2-3 mmag of reference noise of a sparse DECam CCD. The true zeropoint of every CCD is
known: identical over the exposure, or with real per-CCD offsets (throughput and flat-field
residuals, a wrong gain).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.table import vstack

from desgw.io.naming import allzp_csv_name, zero_csv_name
from desgw.io.zp_tables import read_expcalib_csv
from desgw.se.expcalib import run_expcalib
from desgw.se.photocal import (
    FLAG_OUTLIER,
    MIN_CCDS_FOR_SHRINKAGE,
    ZeropointRules,
    shrink_ccd_zeropoints,
)
from desgw.se.photocal_synth import make_calibration_field

ZP = 31.5
N_CCD = 60


def _exposure(seed: int, offsets_mag: np.ndarray, n_stars: int = 35) -> dict:
    """One exposure: CCD k + 1 has true zeropoint ZP + offsets_mag[k]."""
    return {k + 1: make_calibration_field(zp=ZP + float(offsets_mag[k]), n_stars=n_stars,
                                          gaia_errors="gaia", intrinsic_scatter=0.01,
                                          ra0=150.0 + 0.4 * k, dec0=-30.0,
                                          seed=1000 * seed + k)
            for k in range(len(offsets_mag))}


def _calibrate(fields: dict, tmp_path, **kw):
    gaia = vstack([f.gaia for f in fields.values()])
    expo = run_expcalib(1, 1, 1, sorted(fields), catalogs={c: f.catalog for c, f in
                                                           fields.items()},
                        refcat=gaia, band="r", outdir=tmp_path, **kw)
    ccds = sorted(fields)
    truth = np.array([fields[c].zp for c in ccds])
    own = np.array([expo.ccds[c].measured.zp for c in ccds])
    own_err = np.array([expo.ccds[c].measured.zp_err for c in ccds])
    final = np.array([expo.ccds[c].zp for c in ccds])
    final_err = np.array([expo.ccds[c].zp_err for c in ccds])
    return expo, truth, own, own_err, final, final_err


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def test_identical_true_zeropoints_give_exposure_level_errors(tmp_path):
    """(a) Every CCD has the same true zeropoint: the real scatter tau is found ~0 and each
    CCD's zeropoint error falls from its own 2-3 mmag to about the exposure's error."""
    own_dev, fin_dev, sig_expo = [], [], []
    for seed in (1, 2, 3):
        fields = _exposure(seed, np.zeros(N_CCD))
        expo, truth, own, own_err, final, _ = _calibrate(fields, tmp_path / str(seed))
        shr = expo.shrinkage
        assert shr is not None and shr.n_ccds == N_CCD
        assert all(z.source == "shrinkage" for z in expo.ccds.values())
        # no real scatter: tau well under the CCDs' own errors
        assert shr.tau < 0.5 * float(np.median(own_err))
        # the exposure zeropoint is right within its error
        assert abs(shr.mean_zp - ZP) < 3.5 * shr.mean_zp_err
        own_dev.append(own - truth)
        fin_dev.append(final - truth)
        sig_expo.append(shr.mean_zp_err)
    own_rms = _rms(np.concatenate(own_dev))
    fin_rms = _rms(np.concatenate(fin_dev))
    assert 0.0015 < own_rms < 0.004  # the per-CCD reference noise of a sparse CCD
    assert fin_rms < 0.35 * own_rms
    assert fin_rms < 2.5 * float(np.median(sig_expo))  # ~ sigma of the exposure zeropoint


def test_real_per_ccd_offsets_are_kept(tmp_path):
    """(b) True per-CCD offsets of 10 mmag rms: tau is estimated near the offsets' scatter and
    each CCD's zeropoint stays on its own truth within its stated error (the estimator does not
    erase real structure)."""
    pulls, own_dev, fin_dev = [], [], []
    for seed in (4, 5, 6):
        offsets = np.random.default_rng(seed).normal(0.0, 0.010, N_CCD)
        fields = _exposure(seed, offsets)
        expo, truth, own, _own_err, final, final_err = _calibrate(fields, tmp_path / str(seed))
        shr = expo.shrinkage
        assert shr is not None
        true_tau = float(np.std(truth, ddof=1))
        assert abs(shr.tau - true_tau) < 0.0025
        # each CCD keeps ~90 % of its offset (tau^2 / (tau^2 + s^2) with s ~ 2.7 mmag)
        assert 0.8 < float(np.median(shr.weight)) < 0.98
        # the recovered structure follows the truth
        rec = final - shr.mean_zp
        assert np.corrcoef(rec, truth - truth.mean())[0, 1] > 0.95
        pulls.append((final - truth) / final_err)
        own_dev.append(own - truth)
        fin_dev.append(final - truth)
    pull = np.concatenate(pulls)
    assert 0.7 < float(np.std(pull)) < 1.3
    assert float(np.max(np.abs(pull))) < 4.5
    fin_rms = _rms(np.concatenate(fin_dev))
    assert fin_rms < 0.35 * 0.010  # far from erasing the 10 mmag structure
    assert fin_rms <= 1.05 * _rms(np.concatenate(own_dev))  # and never worse than the own


def test_outlier_ccd_keeps_its_own_zeropoint_and_flag(tmp_path):
    """A CCD 0.3 mag off (a wrong gain) is the original's outlier (flag -1000), keeps its own
    zeropoint and does not inflate tau for the others."""
    offsets = np.zeros(20)
    offsets[7] = 0.3
    fields = _exposure(7, offsets)
    expo, truth, own, own_err, final, _final_err = _calibrate(fields, tmp_path)
    bad = expo.ccds[8]
    assert bad.outlier and bad.flag == FLAG_OUTLIER and bad.source == "own"
    assert bad.zp == bad.measured.zp
    assert abs(bad.zp - truth[7]) < 4.0 * bad.zp_err
    shr = expo.shrinkage
    assert shr is not None and shr.n_ccds == 19
    assert shr.tau < 0.5 * float(np.median(own_err))
    others = np.arange(20) != 7
    assert _rms((final - truth)[others]) < 0.5 * _rms((own - truth)[others])


def test_csv_columns_and_few_ccds(tmp_path):
    """The CSV files carry the source, weight and tau; with fewer than
    MIN_CCDS_FOR_SHRINKAGE CCDs (the science audit's 1-2 per exposure) each CCD keeps its own
    zeropoint; ccd_zp='own' gives the CCDs' own."""
    fields = _exposure(8, np.zeros(6))
    expo, *_ = _calibrate(fields, tmp_path / "six")
    allzp = read_expcalib_csv(tmp_path / "six" / allzp_csv_name(1, 1, 1))
    assert allzp["CCD_ZP"][0] == "shrinkage" and int(allzp["N_CCD_SHRINKAGE"][0]) == 6
    assert allzp["ZP_METHOD"][0] == "weighted"
    assert expo.shrinkage is not None
    assert float(allzp["ZP_TAU"][0]) == pytest.approx(expo.shrinkage.tau, abs=2e-6)
    assert float(allzp["CCD_MEAN_MAG_ZERO"][0]) == pytest.approx(expo.shrinkage.mean_zp, abs=2e-6)
    for c, z in expo.ccds.items():
        row = read_expcalib_csv(tmp_path / "six" / zero_csv_name(1, c, 1, 1))
        assert row["ZP_SOURCE"][0] == "shrinkage"
        assert float(row["MAG_ZERO"][0]) == pytest.approx(z.zp, abs=2e-6)
        assert float(row["ZP"][0]) == pytest.approx(-z.measured.zp, abs=2e-6)  # own, original
        assert 0.0 <= float(row["ZP_SHRINK_WEIGHT"][0]) <= 1.0

    few = {c: fields[c] for c in range(1, MIN_CCDS_FOR_SHRINKAGE)}
    expo, _, own, _, final, _ = _calibrate(few, tmp_path / "few")
    assert expo.shrinkage is None
    assert np.array_equal(final, own)
    row = read_expcalib_csv(tmp_path / "few" / zero_csv_name(1, 1, 1, 1))
    assert row["ZP_SOURCE"][0] == "own" and math.isnan(float(row["ZP_TAU"][0]))

    expo, _, own, _, final, _ = _calibrate(fields, tmp_path / "own",
                                           rules=ZeropointRules(method="weighted",
                                                                error_floor=0.01, ccd_zp="own"))
    assert expo.shrinkage is None and np.array_equal(final, own)


def test_shrink_ccd_zeropoints_moments_and_errors():
    """The estimator alone, on drawn zeropoints with known tau and errors: tau near the truth,
    weights tau^2/(tau^2+s^2), pulls of unit rms; bad input refused."""
    rng = np.random.default_rng(11)
    pulls, taus = [], []
    for _ in range(200):
        s = rng.uniform(0.002, 0.0035, 60)
        theta = 31.0 + rng.normal(0.0, 0.005, 60)
        y = theta + rng.normal(0.0, 1.0, 60) * s
        r = shrink_ccd_zeropoints(y, s)
        taus.append(r.tau)
        np.testing.assert_allclose(r.weight, r.tau ** 2 / (r.tau ** 2 + s ** 2))
        pulls.append((r.zp - theta) / r.zp_err)
    assert abs(float(np.median(taus)) - 0.005) < 0.0006
    assert 0.85 < float(np.std(np.concatenate(pulls))) < 1.15
    # no scatter beyond the errors: everything goes to the weighted mean
    r = shrink_ccd_zeropoints(np.full(10, 31.0), np.full(10, 0.003))
    assert r.tau == 0.0 and np.all(r.weight == 0.0)
    np.testing.assert_allclose(r.zp, 31.0)
    np.testing.assert_allclose(r.zp_err, 0.003 / math.sqrt(10))
    with pytest.raises(ValueError):
        shrink_ccd_zeropoints([31.0, 31.1, 31.2], [0.01, 0.01, 0.01])
    with pytest.raises(ValueError):
        shrink_ccd_zeropoints([31.0, 31.1, 31.2, math.nan], [0.01] * 4)
    with pytest.raises(ValueError):
        shrink_ccd_zeropoints([31.0] * 4, [0.01, 0.01, 0.0, 0.01])
    with pytest.raises(ValueError):
        ZeropointRules(ccd_zp="median")


def test_expcalib_uses_the_se_estimator(tmp_path):
    """expcalib's own CCD zeropoint is the SE's (same estimator and floor as SEConfig), so on
    the same catalog and Gaia stars the two agree exactly; the original's plain mean is an
    option."""
    from desgw.se.expcalib import DEFAULT_ERROR_FLOOR, DEFAULT_ZP_METHOD, measure_ccd_zeropoint
    from desgw.se.process import SEConfig

    cfg = SEConfig()
    assert (DEFAULT_ZP_METHOD, DEFAULT_ERROR_FLOOR) == (cfg.zp_method, cfg.zp_error_floor)
    fields = _exposure(9, np.zeros(3))
    expo, *_ = _calibrate(fields, tmp_path / "default")
    for c, f in fields.items():
        se = measure_ccd_zeropoint(f.catalog, f.gaia, "r", mags_type=cfg.mags_type,
                                   method=cfg.zp_method, error_floor=cfg.zp_error_floor).result
        assert expo.ccds[c].measured.zp == se.zp and expo.ccds[c].measured.method == "weighted"
    orig, *_ = _calibrate(fields, tmp_path / "orig", method="mean", error_floor=0.02)
    assert all(z.measured.method == "mean" for z in orig.ccds.values())


def test_zeropoint_method_names_agree():
    """The CLI's --zp-method choices, the workflow's check and photocal's estimators are one
    list; an unknown name is refused before any catalogue is read."""
    from desgw.cli import main
    from desgw.se.photocal import ZP_METHODS
    from desgw.workflow.se_calib import calibrate_exposure

    opt = next(p for p in main.commands["expcalib"].params if p.name == "zp_method")
    assert sorted(opt.type.choices) == sorted(ZP_METHODS)
    with pytest.raises(ValueError, match="zp_method"):
        calibrate_exposure(1, 1, 1, directory=".", refcat_dir=".", zp_method="mode")
