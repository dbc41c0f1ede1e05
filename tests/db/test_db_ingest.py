"""desgw.db.ingest: science exposures registered, the rest rejected with the reason."""

from __future__ import annotations

import pytest
from astropy.io import fits

from desgw.db import get_exposure, ingest_raw, non_science_reason


def write_primary(path, **overrides):
    h = fits.Header()
    values = {"EXPNUM": 500, "OBSTYPE": "object", "FILTER": "r DECam SDSS c0002 6415.0 1480.0",
              "EXPTIME": 90.0, "MJD-OBS": 58598.1234567, "TELRA": "01:00:00.0",
              "TELDEC": "-05:00:00", "AIRMASS": 1.2, "PROPID": "2019A-0205",
              "OBJECT": "S190425z hex 12"}
    values.update(overrides)
    for key, value in values.items():
        if value is not None:
            h[key] = value
    fits.PrimaryHDU(header=h).writeto(path)
    return str(path)


@pytest.mark.parametrize("obstype, object_name, propid, expected", [
    ("object", "S190425z hex 12", "2019A-0205", None),
    ("OBJECT", "DESGW: LIGO event S190814bv: 3 of 12", None, None),
    ("zero", "bias", None, "calibration/engineering exposure (OBSTYPE='zero')"),
    ("dome flat", "", None, "calibration"),
    ("Dome  Flat", "", None, "calibration"),
    ("flat", None, None, "calibration"),
    ("focus", None, None, "calibration"),
    ("pointing", None, None, "calibration"),
    ("junk", None, None, "calibration"),
    ("test", None, None, "calibration"),
    ("standard", None, None, "not a science exposure (OBSTYPE='standard'"),
    (None, None, None, "no OBSTYPE"),
    ("object", "pointing check", None, "OBJECT 'pointing check' marks"),
    ("object", "Focus sequence", None, "(focus)"),
    ("object", "junk", None, "(junk)"),
    ("object", "hex 12 test exposure", None, "(test)"),
    ("object", "donut", None, "(donut)"),
    ("object", "contest field", None, None),  # 'test' inside a word does not count
    ("object", "hex 1", "2013B-test", "PROPID '2013B-test' marks"),
])
def test_non_science_reason(obstype, object_name, propid, expected):
    reason = non_science_reason(obstype, object_name, propid)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason


def test_reject_propids():
    assert non_science_reason("object", "hex", "2012B-0001") is None
    assert "rejected proposal" in non_science_reason("object", "hex", "2012B-0001",
                                                     reject_propids=["2012B-0001"])


def test_ingest_raw(db, tmp_path):
    good = write_primary(tmp_path / "good.fits", EXPNUM=501)
    good2 = write_primary(tmp_path / "good2.fits", EXPNUM=502, FILTER="z DECam SDSS c0004")
    bias = write_primary(tmp_path / "bias.fits", EXPNUM=503, OBSTYPE="zero", EXPTIME=0.0)
    flat = write_primary(tmp_path / "flat.fits", EXPNUM=504, OBSTYPE="dome flat")
    junk = write_primary(tmp_path / "junk.fits", EXPNUM=505, OBJECT="junk")
    nopoint = write_primary(tmp_path / "nopoint.fits", EXPNUM=506, TELRA=None, TELDEC=None)
    corrupt = tmp_path / "corrupt.fits"
    corrupt.write_bytes(b"SIMPLE  =                    T" + b"\0" * 500)
    missing = tmp_path / "missing.fits.fz"
    badhdr = write_primary(tmp_path / "badhdr.fits", EXPNUM=507, TELRA="not an angle")

    report = ingest_raw(db, [good, bias, flat, junk, corrupt, nopoint, missing, good2, badhdr])
    assert report.registered == (501, 502)
    reasons = dict(report.rejected)
    assert list(reasons) == [bias, flat, junk, str(corrupt), nopoint, str(missing), badhdr]
    assert "exposure 503" in reasons[bias] and "OBSTYPE='zero'" in reasons[bias]
    assert "OBSTYPE='dome flat'" in reasons[flat]
    assert "OBJECT 'junk'" in reasons[junk]
    assert "no telescope pointing" in reasons[nopoint]
    assert reasons[str(corrupt)].startswith(str(corrupt))   # the io error text
    assert str(missing) in reasons[str(missing)]
    assert "TELRA" in reasons[badhdr]
    assert get_exposure(db, 501).band == "r" and get_exposure(db, 502).band == "z"
    assert get_exposure(db, 501).raw_path == good
    assert get_exposure(db, 503) is None
    # ingesting the same files again registers them again (idempotent) and rejects the same
    again = ingest_raw(db, [good, bias])
    assert again.registered == (501,) and len(again.rejected) == 1


def test_ingest_records_the_kind_and_refuses_cp_companions(db, tmp_path):
    """A raw exposure is kind 'raw', a CP InstCal image (PROCTYPE InstCal) kind 'instcal'; its
    mask and weight (same EXPNUM, the image's primary header as in cut-outs) and a CP master
    calibration are refused with the reason, not registered in the image's place."""
    raw = write_primary(tmp_path / "DECam_00000501.fits", EXPNUM=501)
    cp = {k: write_primary(tmp_path / f"c4d_190425_031245_{k}_r_v1.fits", EXPNUM=502,
                           PROCTYPE="InstCal", PRODTYPE="image")
          for k in ("ood", "ooi", "oow")}  # the mask first: it must not win the EXPNUM
    master = write_primary(tmp_path / "c4d_190425_zci_v1.fits", EXPNUM=503,
                           PROCTYPE="MasterCal", OBSTYPE="zero")
    report = ingest_raw(db, [raw, cp["ood"], cp["ooi"], cp["oow"], master])
    assert report.registered == (501, 502)
    assert get_exposure(db, 501).kind == "raw"
    rec = get_exposure(db, 502)
    assert rec.kind == "instcal" and rec.raw_path == cp["ooi"]
    why = dict(report.rejected)
    assert "CP InstCal mask, read with its image" in why[cp["ood"]]
    assert "CP InstCal weight, read with its image" in why[cp["oow"]]
    assert "CP master calibration" in why[master]
