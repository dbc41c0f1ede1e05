"""write_fits_table's direct encoder (desgw.io.fitstable.table_hdu_bytes): the same bytes as
astropy's table_to_hdu + writeto for the column kinds it takes (plain and masked bool, int,
float, scalar and fixed-shape, units FITS knows and does not know, meta, extra cards), tables
it does not take still written by astropy, and every file readable by astropy and fitsio."""

from __future__ import annotations

import io
import warnings

import fitsio
import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.table import MaskedColumn, Table

from desgw.io._fitsutil import clean_header
from desgw.io.fitstable import read_table, table_hdu_bytes
from desgw.io.products import astropy_table_hdu, read_fits_table, write_fits_table


def _astropy_bytes(table, header, extname):
    """What write_fits_table wrote before the direct encoder (astropy all the way)."""
    hdu = astropy_table_hdu(table, header, extname=extname)
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buf)
    return buf.getvalue()


def _catalog(n, seed):
    rng = np.random.default_rng(seed)
    t = Table()
    t["NUMBER"] = np.arange(1, n + 1, dtype=np.int32)
    t["X_IMAGE"] = rng.uniform(0, 2048, n).astype(np.float32) * u.pix
    t["ALPHAWIN_J2000"] = rng.uniform(0, 360, n) * u.deg
    t["FLUX_APER"] = rng.normal(100, 5, (n, 12)).astype(np.float32) * u.electron
    t["VIGNET"] = rng.normal(0, 1, (n, 3, 5)).astype(np.float32)
    t["FLAGS"] = rng.integers(0, 300, n).astype(np.int16)
    t["ID64"] = rng.integers(-2**40, 2**40, n)
    t["is_fake"] = rng.random(n) < 0.3
    t["mag"] = MaskedColumn(rng.normal(21, 1, n), mask=rng.random(n) < 0.2, unit=u.mag)
    t["mag32"] = MaskedColumn(rng.normal(21, 1, n).astype(np.float32), mask=rng.random(n) < 0.5)
    t["host_id"] = MaskedColumn(rng.integers(0, 99, n), mask=rng.random(n) < 0.4)
    t["host16"] = MaskedColumn(rng.integers(0, 99, n).astype(np.int16),
                               mask=rng.random(n) < 0.4, fill_value=-1)
    t["flagged"] = MaskedColumn(rng.random(n) < 0.5, mask=rng.random(n) < 0.3)
    t.meta["aperture_radius_fwhm"] = 1.5
    t.meta["SEEING"] = 1.02
    t.meta["comments"] = ["made by a test", "second line"]
    t.meta["HISTORY"] = ["one"]
    return t


@pytest.mark.parametrize("n", [0, 1, 37, 800])
def test_direct_bytes_equal_astropy(tmp_path, n):
    t = _catalog(n, n)
    extra = fits.Header([("EXPNUM", 880001, "exposure number"), ("MAGZERO", 31.49),
                         ("SEEING", 0.9, "replaces the meta value in place"),
                         ("COMMENT", "an extra comment")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "electron" is no FITS unit: kept as text
        want = _astropy_bytes(t, extra, "CANDIDATES")
        assert table_hdu_bytes(t, clean_header(extra), extname="CANDIDATES") is not None
        for _ in range(2):  # the second time from the cached column cards
            write_fits_table(tmp_path / "t.fits", t, header=extra, extname="CANDIDATES")
            assert (tmp_path / "t.fits").read_bytes() == want


def test_round_trip_through_astropy_and_fitsio(tmp_path):
    t = _catalog(50, 3)
    path = tmp_path / "cands.fits"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_fits_table(path, t, header=fits.Header([("EXPNUM", 880001)]), extname="SNFAKE")
    back = read_fits_table(path)
    fast = read_table(path)
    raw = fitsio.read(str(path), ext="SNFAKE")
    hdr = fitsio.read_header(str(path), ext=1)
    assert back.colnames == fast.colnames == list(raw.dtype.names) == t.colnames
    assert hdr["EXTNAME"].strip() == "SNFAKE" and hdr["EXPNUM"] == 880001
    assert hdr["TUNIT3"].strip() == "deg" and hdr["TDIM5"].strip() == "(5,3)"
    for name in ("NUMBER", "X_IMAGE", "ALPHAWIN_J2000", "FLUX_APER", "VIGNET", "FLAGS", "ID64",
                 "is_fake"):
        np.testing.assert_array_equal(np.asarray(back[name]), np.asarray(t[name]))
        np.testing.assert_array_equal(raw[name], np.asarray(t[name]))
    assert back["ALPHAWIN_J2000"].unit == u.deg and back["X_IMAGE"].unit == u.pix
    # masked floats are NaN, masked integers the column's TNULL
    mag = np.asarray(raw["mag"])
    np.testing.assert_array_equal(np.isnan(mag), np.asarray(t["mag"].mask))
    np.testing.assert_array_equal(mag[~t["mag"].mask], np.asarray(t["mag"])[~t["mag"].mask])
    assert hdr["TNULL12"] == -1
    np.testing.assert_array_equal(raw["host16"][t["host16"].mask], -1)
    np.testing.assert_array_equal(np.ma.getmaskarray(back["host_id"]),
                                  np.asarray(t["host_id"].mask))
    assert back.meta["EXPNUM"] == 880001 and back.meta["SEEING"] == 1.02


def test_tables_the_encoder_leaves_to_astropy(tmp_path):
    t = Table({"NAME": ["a", "bb"], "x": [1.0, 2.0]})
    assert table_hdu_bytes(t) is None  # strings: astropy writes them
    write_fits_table(tmp_path / "s.fits", t)
    assert list(read_fits_table(tmp_path / "s.fits")["NAME"]) == ["a", "bb"]
    u8 = Table({"b": np.array([1, 2], np.uint16)})
    assert table_hdu_bytes(u8) is None  # unsigned: TZERO offsets, astropy's business
    write_fits_table(tmp_path / "u.fits", u8)
    assert read_fits_table(tmp_path / "u.fits")["b"].dtype.kind == "u"
    fmt = Table({"x": [1.0]})
    fmt["x"].info.format = ".3f"
    assert table_hdu_bytes(fmt) is None  # TDISP
