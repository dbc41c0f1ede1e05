"""Detections' magnitudes put on the exposure calibration's zeropoints (schema 5), whichever of
the fused CCD task and the exposure calibration writes first."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from desgw.db import (
    ZP_SOURCE_EXPCALIB,
    NewDetection,
    Zeropoint,
    connect,
    get_detections,
    recalibrate_detections,
    record_zeropoints,
    register_exposure,
    replace_ccd_results,
)

EXPNUM = 880001
ZP_SE = {28: 31.520, 29: 31.470}
ZP_CAL = {28: 31.5123, 29: 31.4811}


@pytest.fixture
def db(tmp_path):
    with connect(f"sqlite:///{tmp_path / 'desgw.db'}") as database:
        register_exposure(database, SimpleNamespace(
            expnum=EXPNUM, nite=20190901, mjd_obs=58727.1, band="r", exptime=90.0, ra_deg=10.0,
            dec_deg=-43.0, object=None, propid=None, obstype="object", airmass=1.1,
            kind="raw"), "/raw/DECam_00880001.fits.fz")
        yield database


def _detections(ccd: int) -> list[NewDetection]:
    """Three detections on the SE zeropoint (a PSF-stamp aperture correction of 0.01 mag in
    the magnitude, which a recalibration keeps) and one of non-positive flux (no magnitude)."""
    out = []
    for k, flux in enumerate((250.0, 1200.0, 40.0, -30.0)):
        mag = -2.5 * math.log10(flux) + ZP_SE[ccd] - 0.01 if flux > 0 else None
        out.append(NewDetection(ra=10.0 + 0.01 * k + 0.1 * ccd, dec=-43.0, flux=flux,
                                fluxerr=10.0, snr=flux / 10.0, mag=mag,
                                magerr=None if mag is None else 1.0857 * 10.0 / flux,
                                zp=ZP_SE[ccd], zp_source="se"))
    return out


def _record_calibration(db) -> None:
    record_zeropoints(db, [Zeropoint(expnum=EXPNUM, ccdnum=c, rnum=1, pnum=1, zp=z,
                                     zp_err=0.002, n_stars=35) for c, z in ZP_CAL.items()])


def _check_calibrated(db, ccds=(28, 29)) -> None:
    for d in get_detections(db, expnum=EXPNUM):
        if d.ccdnum not in ccds:
            continue
        assert d.zp == pytest.approx(ZP_CAL[d.ccdnum], abs=1e-9)
        assert d.zp_source == ZP_SOURCE_EXPCALIB
        if d.flux > 0:
            expected = -2.5 * math.log10(d.flux) + ZP_CAL[d.ccdnum] - 0.01
            assert d.mag == pytest.approx(expected, abs=1e-9)
            assert d.magerr == pytest.approx(1.0857 * 10.0 / d.flux)
        else:
            assert d.mag is None


def test_calibration_after_the_ccd_tasks(db):
    for ccd in ZP_SE:
        replace_ccd_results(db, EXPNUM, ccd, detections=_detections(ccd),
                            zeropoint_version=(1, 1))
    assert {d.zp_source for d in get_detections(db, expnum=EXPNUM)} == {"se"}
    _record_calibration(db)
    assert recalibrate_detections(db, EXPNUM, ZP_CAL) == 8
    _check_calibrated(db)
    # idempotent: the calibration run again leaves the same magnitudes
    recalibrate_detections(db, EXPNUM, ZP_CAL)
    _check_calibrated(db)


def test_ccd_task_after_the_calibration(db):
    """A CCD done again (or late) after its exposure's calibration: its detections go straight
    onto the recorded zeropoint of the same processing version; another version's is not
    used."""
    _record_calibration(db)
    replace_ccd_results(db, EXPNUM, 28, detections=_detections(28), zeropoint_version=(1, 1))
    replace_ccd_results(db, EXPNUM, 29, detections=_detections(29), zeropoint_version=(1, 2))
    _check_calibrated(db, ccds=(28,))
    other = [d for d in get_detections(db, expnum=EXPNUM) if d.ccdnum == 29]
    assert {d.zp_source for d in other} == {"se"}
    assert all(d.zp == ZP_SE[29] for d in other)


def test_refuses_non_finite_zeropoint(db):
    replace_ccd_results(db, EXPNUM, 28, detections=_detections(28))
    with pytest.raises(ValueError):
        recalibrate_detections(db, EXPNUM, {28: math.nan})
    assert recalibrate_detections(db, EXPNUM, {}) == 0
