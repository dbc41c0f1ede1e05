"""Tests of desgw.se.expcalib: the original's CSV files, names and rules, end to end."""

from __future__ import annotations

import csv
import logging
import math

import numpy as np
import pytest
from astropy.table import vstack

from desgw.errors import CorruptFileError, DesgwInputError, MissingCCDError, MissingFileError
from desgw.io.naming import allzp_csv_name, zero_csv_name, zp_csv_name
from desgw.io.zp_tables import ZP_CSV_COLUMNS, match_csv_name, read_expcalib_csv
from desgw.se.expcalib import (
    MAGS_TYPES,
    footprint_corners,
    instrumental_flux,
    run_expcalib,
)
from desgw.se.photocal import FLAG_OUTLIER, FLAG_REPLACED, PhotometricCalibrationError
from desgw.se.photocal_synth import make_calibration_field

ZP = 31.5
EXPNUM, R, P = 812345, 4, 5


def _fields(band="r", n_ccd=6, n_stars=70, seed0=0, zp_of=None):
    out = {}
    for k in range(n_ccd):
        ccd = k + 1
        zp = ZP if zp_of is None else zp_of(ccd)
        out[ccd] = make_calibration_field(band=band, zp=zp, n_stars=n_stars, seed=seed0 + ccd,
                                          ra0=40.0 + 0.2 * (k % 3), dec0=-20.0 + 0.35 * (k // 3))
    return out


def _run(fields, tmp_path, band="r", **kw):
    gaia = vstack([f.gaia for f in fields.values()])
    return run_expcalib(EXPNUM, R, P, sorted(fields), catalogs={c: f.catalog for c, f in
                                                                 fields.items()},
                        refcat=gaia, band=band, outdir=tmp_path, **kw)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_writes_three_kinds_with_original_names_and_columns(tmp_path):
    fields = _fields()
    expo = _run(fields, tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    expected = sorted([allzp_csv_name(EXPNUM, R, P)]
                      + [zero_csv_name(EXPNUM, c, R, P) for c in fields]
                      + [zp_csv_name(EXPNUM, c, R, P) for c in fields])
    assert names == expected  # no temporary or extra files
    assert "allZP_D00812345_r4p5.csv" in names and "Zero_D00812345_03_r4p5.csv" in names
    assert "D00812345_03_r4p5_ZP.csv" in names

    allzp = _rows(tmp_path / allzp_csv_name(EXPNUM, R, P))
    assert len(allzp) == 1
    a = allzp[0]
    assert list(a)[:7] == ["EXPNUM", "REQNUM", "ATTNUM", "NumStarsAll", "NumStarsClipped",
                           "sigclipZP", "stdsigclipzp"]
    assert (int(a["EXPNUM"]), int(a["REQNUM"]), int(a["ATTNUM"])) == (EXPNUM, R, P)
    # original sign: sigclipZP = -MAG_ZERO; desgw zp = AB mag of 1 e-
    assert float(a["sigclipZP"]) == pytest.approx(-expo.zp, abs=2e-6)
    assert float(a["MAG_ZERO"]) == pytest.approx(expo.zp, abs=2e-6)
    assert abs(float(a["MAG_ZERO"]) - ZP) < 0.003
    assert int(a["NumStarsAll"]) == expo.exposure.n_matched
    assert int(a["NumStarsClipped"]) == expo.exposure.n_used
    assert a["COLOR_TERMS"] == "1" and a["magType"] == "mag_psf"

    for ccd in fields:
        z = _rows(tmp_path / zero_csv_name(EXPNUM, ccd, R, P))
        assert len(z) == 1
        z = z[0]
        assert list(z)[:6] == ["FILENAME", "Nall", "Nclipped", "ZP", "ZPrms", "magType"]
        assert z["FILENAME"] == f"D00812345_r_{ccd:02d}_r4p5_fullcat.fits"
        c = expo.ccds[ccd]
        assert float(z["ZP"]) == pytest.approx(-c.measured.zp, abs=2e-6)
        assert float(z["NewZP"]) == pytest.approx(-c.zp, abs=2e-6)
        assert int(z["NewZPFlag"]) == c.flag == 0
        assert abs(float(z["MAG_ZERO"]) - ZP) < 0.006
        assert int(z["Nclipped"]) <= int(z["Nall"])


def test_zp_csv_holds_calibrated_objects(tmp_path):
    fields = _fields(n_ccd=2)
    expo = _run(fields, tmp_path)
    for ccd, f in fields.items():
        t = read_expcalib_csv(tmp_path / zp_csv_name(EXPNUM, ccd, R, P))
        assert tuple(t.colnames) == ZP_CSV_COLUMNS
        assert len(t) == len(f.catalog)
        assert np.all(np.diff(t["ALPHAWIN_J2000"]) >= 0)
        assert t["ID"].tolist() == list(range(1, len(t) + 1))
        assert np.all(t["CCDNUM"] == ccd) and np.all(t["EXPNUM"] == EXPNUM)
        np.testing.assert_allclose(t["ZeroPoint"], -expo.ccds[ccd].zp, atol=2e-6)
        # the original's recipe MAG = -2.5 log10(FLUX) - ZeroPoint gives the MAG_PSF column ...
        np.testing.assert_allclose(t["MAG_PSF"], -2.5 * np.log10(t["FLUX_PSF"]) - t["ZeroPoint"],
                                   atol=2e-5)
        # ... and those are calibrated: stars agree with their true DES magnitude
        num_to_true = dict(zip(np.asarray(f.catalog["NUMBER"]), f.true_mag))
        true = np.array([num_to_true[n] for n in t["NUMBER"]])
        star = np.isfinite(true) & (t["FLAGS"] & 4 == 0)
        d = np.asarray(t["MAG_PSF"])[star] - true[star]
        assert abs(np.median(d)) < 0.01
        # columns the catalog lacks are nan
        assert np.all(np.isnan(np.asarray(t["FWHMPSF_IMAGE"], dtype=float)))


def test_ccd_with_three_stars_gets_exposure_zp_flag_1_in_files(tmp_path):
    fields = _fields(n_ccd=5)
    fields[4] = make_calibration_field(band="r", zp=ZP, n_stars=3, n_saturated=0,
                                       blend_fraction=0.0, seed=44, ra0=40.2, dec0=-19.65)
    expo = _run(fields, tmp_path)
    c4 = expo.ccds[4]
    assert c4.measured.n_used == 3 and c4.replaced and c4.flag == FLAG_REPLACED
    z = _rows(tmp_path / zero_csv_name(EXPNUM, 4, R, P))[0]
    assert int(z["Nclipped"]) == 3 and int(z["NewZPFlag"]) == 1
    assert float(z["NewZP"]) == pytest.approx(-expo.zp, abs=2e-6)
    t = read_expcalib_csv(tmp_path / zp_csv_name(EXPNUM, 4, R, P))
    assert np.all(t["ZeroPoint_FLAGS"] == 1)


def test_ccd_0p2_mag_off_is_flagged(tmp_path):
    fields = _fields(n_ccd=6, zp_of=lambda c: ZP + (0.2 if c == 2 else 0.0))
    expo = _run(fields, tmp_path)
    assert expo.ccds[2].outlier and expo.ccds[2].flag == FLAG_OUTLIER
    assert expo.ccds[2].zp == pytest.approx(ZP + 0.2, abs=0.006)
    z = _rows(tmp_path / zero_csv_name(EXPNUM, 2, R, P))[0]
    assert int(z["NewZPFlag"]) == -1000
    assert all(expo.ccds[c].flag == 0 for c in fields if c != 2)


def test_mags_types_and_sex_mag_zeropoint(tmp_path):
    fields = _fields(n_ccd=3)
    cats = {c: f.catalog for c, f in fields.items()}
    gaia = vstack([f.gaia for f in fields.values()])
    kw = dict(catalogs=cats, refcat=gaia, band="r")
    psf = run_expcalib(EXPNUM, R, P, cats, outdir=tmp_path / "psf", **kw)
    auto = run_expcalib(EXPNUM, R, P, cats, outdir=tmp_path / "auto", mags_type="mag_auto", **kw)
    aper = run_expcalib(EXPNUM, R, P, cats, outdir=tmp_path / "aper", mags_type="mag_aper_8",
                        **kw)
    assert abs(psf.zp - ZP) < 0.003 and abs(auto.zp - ZP) < 0.004
    # FLUX_APER[:, 7] holds 0.95 of the flux in the synthetic catalogs
    assert aper.zp - psf.zp == pytest.approx(2.5 * math.log10(0.95), abs=0.002)
    assert _rows(tmp_path / "aper" / allzp_csv_name(EXPNUM, R, P))[0]["magType"] == "mag_aper_8"
    # a catalog with magnitudes only: fluxes rebuilt with sex_mag_zeropoint
    mag_only = {}
    for c, cat in cats.items():
        t = cat.copy()
        t["MAG_PSF"] = t["MAG_PSF"] + 5.0  # as if SExtractor had used MAG_ZEROPOINT 30
        t.remove_columns(["FLUX_PSF", "FLUXERR_PSF"])
        mag_only[c] = t
    rebuilt = run_expcalib(EXPNUM, R, P, mag_only, catalogs=mag_only, refcat=gaia, band="r",
                           sex_mag_zeropoint=30.0, outdir=tmp_path / "mag")
    assert rebuilt.zp == pytest.approx(psf.zp, abs=2e-4)
    flux, _, fname, _ = instrumental_flux(mag_only[1], "mag_psf", sex_mag_zeropoint=30.0)
    assert fname == "<from MAG_PSF>"
    np.testing.assert_allclose(flux, cats[1]["FLUX_PSF"], rtol=1e-5)
    with pytest.raises(ValueError, match="mags_type"):
        instrumental_flux(cats[1], "mag_model")
    assert MAGS_TYPES == ("mag_psf", "mag_auto", "mag_aper_8")


def test_g_only_option_reproduces_original_bias(tmp_path):
    fields = _fields(band="g", n_ccd=3)
    ct = _run(fields, tmp_path / "ct", band="g")
    g_only = _run(fields, tmp_path / "g", band="g", use_color_terms=False)
    assert abs(ct.zp - ZP) < 0.003
    assert abs(g_only.zp - ZP) > 0.1
    assert _rows(tmp_path / "g" / allzp_csv_name(EXPNUM, R, P))[0]["COLOR_TERMS"] == "0"


def test_y_band_falls_back_to_g_only_with_warning(tmp_path, caplog):
    fields = _fields(band="z", n_ccd=2)
    with caplog.at_level(logging.WARNING, logger="desgw.se.expcalib"):
        expo = _run(fields, tmp_path, band="Y")
    assert "Gaia G" in caplog.text
    assert expo.exposure.valid
    z = _rows(tmp_path / zero_csv_name(EXPNUM, 1, R, P))[0]
    assert z["COLOR_TERMS"] == "0" and z["BAND"] == "Y"


class _Store:
    """A stand-in for RefCatStore that records its queries."""

    def __init__(self, table):
        self.table = table
        self.calls = []

    def query_footprint(self, corners_ra, corners_dec, *, margin_arcsec=0.0, epoch=None):
        self.calls.append((np.asarray(corners_ra), np.asarray(corners_dec), margin_arcsec, epoch))
        ra, dec = np.asarray(self.table["ra"]), np.asarray(self.table["dec"])
        pad = margin_arcsec / 3600.0 / np.cos(np.radians(np.mean(corners_dec)))
        keep = ((ra >= np.min(corners_ra) - pad) & (ra <= np.max(corners_ra) + pad)
                & (dec >= np.min(corners_dec) - margin_arcsec / 3600)
                & (dec <= np.max(corners_dec) + margin_arcsec / 3600))
        return self.table[keep]


def test_refcat_object_callable_corners_and_epoch(tmp_path):
    fields = _fields(n_ccd=2)
    gaia = vstack([f.gaia for f in fields.values()])
    cats = {c: f.catalog for c, f in fields.items()}
    store = _Store(gaia)
    corners = {1: (fields[1].corners_ra, fields[1].corners_dec)}
    e1 = run_expcalib(EXPNUM, R, P, [1, 2], catalogs=cats, refcat=store, band="r",
                      outdir=tmp_path / "a", corners=corners, epoch=2019.6, margin_arcsec=4.0)
    assert len(store.calls) == 2
    np.testing.assert_allclose(store.calls[0][0], fields[1].corners_ra)
    assert store.calls[0][2:] == (4.0, 2019.6)
    # CCD 2: corners from its catalog positions enclose all of them
    cra, _cdec, _, _ = store.calls[1]
    ra2 = np.asarray(cats[2]["ALPHAWIN_J2000"])
    assert cra.min() <= ra2.min() and cra.max() >= ra2.max()
    assert abs(e1.zp - ZP) < 0.004
    seen = []

    def query(cra, cdec, *, margin_arcsec, epoch):
        seen.append(epoch)
        return store.query_footprint(cra, cdec, margin_arcsec=margin_arcsec, epoch=epoch)

    e2 = run_expcalib(EXPNUM, R, P, [1, 2], catalogs=cats, refcat=query, band="r",
                      outdir=tmp_path / "b")
    assert seen == [None, None] and e2.zp == pytest.approx(e1.zp, abs=1e-9)
    with pytest.raises(TypeError):
        run_expcalib(EXPNUM, R, P, [1], catalogs=cats, refcat=42, band="r", outdir=tmp_path)


def test_with_real_refcat_store(tmp_path):
    from desgw.refcat.ingest import ingest_gaia
    from desgw.refcat.store import RefCatStore

    fields = _fields(n_ccd=2)
    gaia = vstack([f.gaia for f in fields.values()])
    gaia["pmra"] = np.zeros(len(gaia))
    gaia["pmdec"] = np.zeros(len(gaia))
    gaia["ref_epoch"] = np.full(len(gaia), 2016.0)
    src = tmp_path / "gaia.fits"
    gaia.write(src)
    ingest_gaia([src], tmp_path / "store", order=6)
    store = RefCatStore(tmp_path / "store")
    expo = run_expcalib(EXPNUM, R, P, [1, 2], catalogs={c: f.catalog for c, f in fields.items()},
                        refcat=store, band="r", outdir=tmp_path / "out", epoch=2019.5)
    plain = _run(fields, tmp_path / "plain")
    # the store (float32 magnitudes, footprint queries) gives the same answer as the table
    assert expo.zp == pytest.approx(plain.zp, abs=1e-5)
    assert expo.exposure.n_matched == plain.exposure.n_matched >= 120
    assert abs(expo.zp - ZP) < 3 * expo.zp_err + 0.001


def test_debug_writes_match_files(tmp_path):
    fields = _fields(n_ccd=2)
    expo = _run(fields, tmp_path, debug=True, verbose=1)
    m = read_expcalib_csv(tmp_path / match_csv_name(EXPNUM, 1, R, P))
    assert match_csv_name(EXPNUM, 1, R, P) == "D00812345_01_r4p5_match.csv"
    assert len(m) == expo.ccds[1].measured.n_matched
    assert int(np.sum(m["USED"])) == expo.ccds[1].measured.n_used
    assert np.all(m["SEP_ARCSEC"] < 1.0)
    np.testing.assert_allclose(m["DELTA"], m["MAG_REF"] - m["MAG_INST"], atol=3e-6)


def test_errors(tmp_path):
    fields = _fields(n_ccd=1)
    cats = {1: fields[1].catalog}
    with pytest.raises(MissingCCDError) as ei:
        run_expcalib(EXPNUM, R, P, [1, 9], catalogs=cats, refcat=fields[1].gaia, band="r",
                     outdir=tmp_path)
    assert ei.value.present == (1,)
    # a reference table far away: no star matches, nothing is written
    far = fields[1].gaia.copy()
    far["dec"] = far["dec"] + 1.0
    with pytest.raises(PhotometricCalibrationError) as ce:
        run_expcalib(EXPNUM, R, P, [1], catalogs=cats, refcat=far, band="r",
                     outdir=tmp_path / "none")
    assert ce.value.n_matched == 0
    assert not (tmp_path / "none").exists() or not any((tmp_path / "none").iterdir())
    bad = cats[1].copy()
    bad.remove_column("CLASS_STAR")
    with pytest.raises(DesgwInputError, match="CLASS_STAR"):
        run_expcalib(EXPNUM, R, P, [1], catalogs={1: bad}, refcat=fields[1].gaia, band="r",
                     outdir=tmp_path)
    with pytest.raises(MissingFileError):
        read_expcalib_csv(tmp_path / "nope.csv")
    junk = tmp_path / "junk.csv"
    junk.write_bytes(b"\x00\x01\x02 not,a\ncsv\x00")
    with pytest.raises(CorruptFileError):
        read_expcalib_csv(junk)


def test_footprint_corners_across_ra_zero():
    ra = np.array([359.95, 0.05, 359.99, 0.02])
    dec = np.array([-10.0, -10.1, -9.9, -10.05])
    cra, cdec = footprint_corners(ra, dec, pad_arcsec=1.0)
    # the box is 0.1 deg wide around RA 0, not 359.9 deg wide
    wrapped = np.where(cra > 180, cra - 360, cra)
    assert wrapped.max() - wrapped.min() < 0.12
    assert cdec.min() < -10.1 and cdec.max() > -9.9
