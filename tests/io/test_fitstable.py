"""io.fitstable.read_table: the same table as the astropy reader, and the same typed errors."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.table import Table

from desgw.errors import CorruptFileError, MissingFileError
from desgw.io.fitstable import read_table
from desgw.io.products import read_fits_table, write_fits_table


def _catalog(n: int = 50) -> Table:
    rng = np.random.default_rng(3)
    t = Table()
    t["NUMBER"] = np.arange(1, n + 1, dtype=np.int32)
    t["ALPHAWIN_J2000"] = rng.uniform(10, 11, n)
    t["ALPHAWIN_J2000"].unit = u.deg
    t["FLUX_APER"] = rng.normal(size=(n, 12)).astype(np.float32)
    t["MAG_PSF"] = rng.normal(20, 1, n).astype(np.float32)
    t["MAG_PSF"].unit = u.mag
    t["FLAGS"] = rng.integers(0, 4, n).astype(np.int16)
    t["ISOAREA_IMAGE"] = rng.integers(1, 40, n).astype(np.int32)
    t["ISOAREA_IMAGE"].unit = u.pix ** 2
    t.meta.update({"EXPNUM": 880001, "CCDNUM": 28, "BAND": "r", "MJD-OBS": 58710.1})
    return t


def test_same_table_as_the_astropy_reader(tmp_path):
    path = write_fits_table(tmp_path / "cat.fits", _catalog())
    ref, got = read_fits_table(path), read_table(path)
    assert got.colnames == ref.colnames
    assert got.meta == ref.meta
    for name in ref.colnames:
        assert got[name].dtype == ref[name].dtype, name
        assert got[name].unit == ref[name].unit, name
        np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(ref[name]))


def test_named_hdu_and_errors(tmp_path):
    t = _catalog(5)
    path = tmp_path / "two.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((3, 3), np.float32), name="IMG"),
                  fits.BinTableHDU(t, name="OBJECTS")]).writeto(path)
    assert len(read_table(path, "OBJECTS")) == 5
    assert len(read_table(path)) == 5  # the first table HDU, past the image
    with pytest.raises(CorruptFileError, match="not a table"):
        read_table(path, "IMG")
    with pytest.raises(MissingFileError):
        read_table(tmp_path / "absent.fits")
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"SIMPLE  =   garbage" + b" " * 3000)
    with pytest.raises(CorruptFileError) as err:
        read_table(bad)
    assert "bad.fits" in str(err.value)


def test_csv_column_formatting_matches_the_per_value_rule():
    from desgw.io.zp_tables import format_csv_column, format_csv_value

    values = [np.array([1.5, np.nan, np.inf, -2.25e-7, 3.0], np.float32),
              np.array([1.123456789123, -np.inf, 0.0]), np.array([3, -7], np.int16),
              np.array([True, False]), np.array(["a", "b"])]
    for col in values:
        for digits in (6, 9):
            assert format_csv_column(col, digits) == [format_csv_value(v, digits) for v in col]


def test_csv_columns_writer_matches_the_row_writer(tmp_path):
    """write_csv_columns (one %-format per row) writes the same bytes as the csv module on
    the per-value text, with float32/float64 extremes, non-finite values, ints, booleans,
    text, and text the csv module must quote (then it takes the csv module's path)."""
    from desgw.io.zp_tables import format_csv_column, write_csv_columns, write_csv_rows

    rng = np.random.default_rng(3)
    n = 257
    f32 = rng.normal(0, 1e4, n).astype(np.float32)
    f32[::17] = np.nan
    f32[5] = np.inf
    f32[6] = -0.0
    f64 = rng.lognormal(0, 8, n) * rng.choice([-1.0, 1.0], n)
    f64[7] = -np.inf
    base = [np.arange(1, n + 1), f32, f64, rng.integers(-2**40, 2**40, n),
            rng.random(n) > 0.5, np.full(n, "-31.123457"), np.full(n, "50%")]
    for extra in ([], [np.array(["a,b", 'q"'] * (n // 2) + ["x"])]):
        cols = base + extra
        header = [f"C{i}" for i in range(len(cols))]
        digits = [6, 6, 9, 6, 6, 6, 6] + [6] * len(extra)
        a = write_csv_columns(tmp_path / "a.csv", header, cols, digits)
        text = [format_csv_column(c, d) for c, d in zip(cols, digits)]
        b = write_csv_rows(tmp_path / "b.csv", header, zip(*text))
        assert a.read_bytes() == b.read_bytes()
        assert len(a.read_bytes().splitlines()) == n + 1
    with pytest.raises(ValueError, match="2 header names"):
        write_csv_columns(tmp_path / "c.csv", ["A", "B"], [np.arange(3)], [6])
