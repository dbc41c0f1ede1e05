"""Linearity lookup-table files (desgw.io.calib.write_linearity / read_linearity)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from astropy.io import fits

from desgw.errors import (
    CorruptFileError,
    DataTypeError,
    HeaderError,
    MissingCCDError,
    MissingFileError,
)
from desgw.io.calib import LinearityTable, read_linearity, write_linearity


def _table(a: float, b: float, step: float = 1.0) -> LinearityTable:
    adu = np.arange(0.0, 65535.0 + step / 2, step)
    return LinearityTable(adu, adu * (1 + a * (adu / 4e4) ** 2), adu * (1 + b * (adu / 4e4) ** 2))


def test_round_trip_keeps_values_names_and_header(tmp_path):
    path = tmp_path / "linearity.fits"
    tables = {35: _table(0.01, 0.012), 1: _table(0.005, 0.006, step=16.0)}
    out = write_linearity(path, tables, fits.Header({"ORIGIN": "test"}))
    assert out == path and path.is_file()
    assert not list(tmp_path.glob("*.tmp*"))  # atomic: no temporary left
    for c, t in tables.items():
        got = read_linearity(path, c)
        np.testing.assert_array_equal(got.adu, t.adu)
        np.testing.assert_array_equal(got.linear_a, t.linear_a)
        np.testing.assert_array_equal(got.linear_b, t.linear_b)
    with fits.open(path) as hdul:
        assert hdul[0].header["CALTYPE"] == "linearity" and hdul[0].header["ORIGIN"] == "test"
        assert [h.name for h in hdul[1:]] == ["S29", "N4"]
        assert hdul[2].header["CCDNUM"] == 35
        assert hdul[2].columns.names == ["ADU", "ADU_LINEAR_A", "ADU_LINEAR_B"]
        assert len(hdul[1].data) == 65536 // 16 + 1


def test_decam_layout_without_ccdnum_keywords(tmp_path):
    """DECam's file: HDU n is CCD n, no CALTYPE; integer ADU and float32 columns accepted."""
    path = tmp_path / "linearity_table_v0.4.fits"
    adu = np.arange(0, 100, dtype=np.int32)
    hdus = [fits.PrimaryHDU()]
    for c in (1, 2, 3):
        hdus.append(fits.BinTableHDU.from_columns([
            fits.Column(name="ADU", format="J", array=adu),
            fits.Column(name="ADU_LINEAR_A", format="E", array=(adu * (1 + 0.01 * c)).astype(np.float32)),
            fits.Column(name="ADU_LINEAR_B", format="E", array=adu.astype(np.float32))]))
    fits.HDUList(hdus).writeto(path)
    t = read_linearity(path, 2)
    assert t.adu.dtype == np.float64
    np.testing.assert_allclose(t.linear_a, adu * 1.02, rtol=1e-6)
    with pytest.raises(MissingCCDError) as err:
        read_linearity(path, 5)
    assert err.value.present == (1, 2, 3)


def test_missing_ccd_lists_those_present(tmp_path):
    path = write_linearity(tmp_path / "linearity.fits", {28: _table(0.01, 0.01, 64.0)})
    with pytest.raises(MissingCCDError) as err:
        read_linearity(path, 29)
    assert err.value.present == (28,) and "CCD 29" in str(err.value) and str(path) in str(err.value)
    # picklable for worker processes
    again = pickle.loads(pickle.dumps(err.value))
    assert str(again) == str(err.value) and again.present == (28,)


def _write_raw_table(path, adu, lin_a, lin_b, extname="S29", ccdnum=28):
    hdu = fits.BinTableHDU.from_columns([
        fits.Column(name="ADU", format="D", array=adu),
        fits.Column(name="ADU_LINEAR_A", format="D", array=lin_a),
        fits.Column(name="ADU_LINEAR_B", format="D", array=lin_b)])
    hdu.header["EXTNAME"] = extname
    hdu.header["CCDNUM"] = ccdnum
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)


def test_non_monotonic_table_names_file_and_hdu(tmp_path):
    adu = np.arange(10.0)
    lin = adu.copy()
    lin[6] = 3.0  # goes backwards
    path = tmp_path / "bad.fits"
    _write_raw_table(path, adu, adu, lin)
    with pytest.raises(DataTypeError) as err:
        read_linearity(path, 28)
    msg = str(err.value)
    assert str(path) in msg and "S29" in msg and "ADU_LINEAR_B" in msg and "monotonic" in msg
    path2 = tmp_path / "bad_adu.fits"
    _write_raw_table(path2, adu[::-1].copy(), adu, adu)
    with pytest.raises(DataTypeError, match="ADU is not strictly increasing"):
        read_linearity(path2, 28)


def test_missing_column_wrong_kind_and_bad_files(tmp_path):
    path = tmp_path / "cols.fits"
    hdu = fits.BinTableHDU.from_columns([fits.Column(name="ADU", format="D", array=np.arange(5.0))])
    hdu.header["CCDNUM"] = 28
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    with pytest.raises(DataTypeError, match="ADU_LINEAR_A"):
        read_linearity(path, 28)
    img = tmp_path / "image.fits"
    ext = fits.ImageHDU(np.zeros((4, 4), np.float32))
    ext.header["CCDNUM"] = 28
    fits.HDUList([fits.PrimaryHDU(), ext]).writeto(img)
    with pytest.raises(DataTypeError, match="binary table"):
        read_linearity(img, 28)
    other = tmp_path / "flat.fits"
    fits.HDUList([fits.PrimaryHDU(header=fits.Header({"CALTYPE": "flat"}))]).writeto(other)
    with pytest.raises(HeaderError, match="CALTYPE"):
        read_linearity(other, 28)
    with pytest.raises(MissingFileError):
        read_linearity(tmp_path / "nope.fits", 28)
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"not fits" * 1000)
    with pytest.raises(CorruptFileError):
        read_linearity(junk, 28)


def test_table_validation_and_writer_errors(tmp_path):
    with pytest.raises(ValueError, match="at least 2 rows"):
        LinearityTable(np.array([1.0]), np.array([1.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="non-finite"):
        LinearityTable(np.arange(3.0), np.array([0.0, np.nan, 2.0]), np.arange(3.0))
    with pytest.raises(ValueError, match="different lengths"):
        LinearityTable(np.arange(3.0), np.arange(4.0), np.arange(3.0))
    t = _table(0.01, 0.02, 1024.0)
    assert t.linear("B") is t.linear_b
    with pytest.raises(KeyError):
        t.linear("C")
    with pytest.raises(ValueError):
        t.adu[0] = 5.0  # read-only
    with pytest.raises(ValueError, match="no linearity tables"):
        write_linearity(tmp_path / "x.fits", {})
    with pytest.raises(DataTypeError, match="LinearityTable"):
        write_linearity(tmp_path / "x.fits", {28: np.arange(3.0)})
    assert not (tmp_path / "x.fits").exists()
