"""Tests for desgw.io.products: immask images and tables."""

from __future__ import annotations

import os

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from desgw.errors import CorruptFileError, DataTypeError, MissingFileError
from desgw.io.products import (ImMask, read_csv, read_fits_table, read_immask, read_parquet,
                               write_csv, write_fits_table, write_immask, write_parquet)


def _tan_wcs(shape):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, -30.0]
    w.wcs.crpix = [shape[1] / 2, shape[0] / 2]
    w.wcs.cd = [[-7.3e-5, 0], [0, 7.3e-5]]
    return w


def _images(shape=(256, 128), sigma=10.0, seed=0):
    rng = np.random.default_rng(seed)
    sci = rng.normal(0.0, sigma, shape).astype(np.float32)
    sci[20:30, 40:50] = 0.0
    msk = np.zeros(shape, np.int32)
    msk[20:30, 40:50] = 1 | 2
    msk[0, 0] = 8192
    wgt = np.full(shape, 1 / sigma**2, np.float32)
    wgt[20:30, 40:50] = 0.0
    return sci, msk, wgt


def test_immask_roundtrip(tmp_path):
    sci, msk, wgt = _images()
    hdr = fits.Header({"EXPNUM": 668439, "CCDNUM": 35, "BAND": "r", "MAGZERO": 31.2})
    wcs = _tan_wcs(sci.shape)
    path = tmp_path / "D00668439_r_35_r1p1_immask.fits.fz"
    write_immask(path, sci, msk, wgt, hdr, wcs)
    assert os.listdir(tmp_path) == [path.name]
    im = read_immask(path)
    assert isinstance(im, ImMask) and im.shape == sci.shape
    assert im.sci.dtype == np.float32 and im.msk.dtype == np.int32 and im.wgt.dtype == np.float32
    np.testing.assert_array_equal(im.msk, msk)          # lossless
    # WGT: step = smallest positive weight / 1024, so every weight within 1/2048 of itself
    good = wgt > 0
    assert np.all(im.wgt[~good] == 0)
    rel = np.abs(im.wgt[good] / wgt[good] - 1)
    assert rel.max() <= 1 / 2048 * 1.001 and rel.max() > 0
    assert np.all(im.sci[20:30, 40:50] == 0.0)          # zeros kept by SUBTRACTIVE_DITHER_2
    d = im.sci - sci
    # quantisation step sigma/16 -> rms error sigma/(16 sqrt 12) = sigma/55, zero mean
    assert 0.01 * 10 < d.std() < 0.03 * 10
    assert abs(d.mean()) < 5 * d.std() / np.sqrt(d.size)
    assert im.header["MAGZERO"] == 31.2 and im.header["EXPNUM"] == 668439
    assert im.wcs is not None
    assert np.allclose(im.wcs.pixel_to_world_values(10, 20), wcs.pixel_to_world_values(10, 20))
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "MSK", "WGT"]
        assert all(isinstance(h, fits.CompImageHDU) for h in hdul[1:])
        assert hdul["MSK"].header["CTYPE1"] == "RA---TAN"   # WCS on every plane
    with fits.open(path, disable_image_compression=True) as hdul:
        assert hdul["SCI"].header["ZCMPTYPE"] == "RICE_1"
        assert hdul["SCI"].header["ZQUANTIZ"] == "SUBTRACTIVE_DITHER_2"
        assert hdul["MSK"].header["ZCMPTYPE"] == "RICE_1"
        assert hdul["WGT"].header["ZCMPTYPE"] == "RICE_1"
        assert hdul["WGT"].header["ZQUANTIZ"] == "SUBTRACTIVE_DITHER_2"
    # fitsio (cfitsio) reads the same pixels and keywords
    import fitsio
    with fitsio.FITS(str(path)) as f:
        np.testing.assert_array_equal(f["SCI"].read(), im.sci)
        np.testing.assert_array_equal(f["MSK"].read(), msk)
        np.testing.assert_array_equal(f["WGT"].read(), im.wgt)
        assert f["SCI"].read_header()["MAGZERO"] == 31.2


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e4])
def test_immask_step_never_coarser_than_the_image_noise(tmp_path, scale):
    """Weights on another scale than the image (relative weights, other units) must not make
    the SCI quantisation coarse: the step is at most the image's own scatter / 16."""
    sci, msk, wgt = _images(shape=(512, 256), sigma=10.0)
    path = tmp_path / "s_immask.fits.fz"
    write_immask(path, sci, msk, wgt * np.float32(scale))
    d = read_immask(path).sci - sci
    # step <= sigma / 16: rms error <= sigma / 55 (= 0.18 here), zero mean
    assert d.std() < 0.2 and abs(d.mean()) < 0.01


def test_immask_crop_reads_only_a_part(tmp_path):
    sci, msk, wgt = _images()
    wcs = _tan_wcs(sci.shape)
    path = tmp_path / "D00668439_r_35_r1p1_immask.fits.fz"
    write_immask(path, sci, msk, wgt, fits.Header({"MAGZERO": 31.2}), wcs)
    full = read_immask(path)
    seen = []

    def crop(w, shape):
        seen.append(shape)
        return slice(100, 180), slice(30, 101)

    im = read_immask(path, crop=crop)
    assert seen == [sci.shape]
    assert im.shape == (80, 71) and im.origin == (30, 100)
    np.testing.assert_array_equal(im.sci, full.sci[100:180, 30:101])
    np.testing.assert_array_equal(im.msk, full.msk[100:180, 30:101])
    np.testing.assert_array_equal(im.wgt, full.wgt[100:180, 30:101])
    assert im.header["MAGZERO"] == 31.2
    # the WCS is the cut-out's: its pixel (x, y) is the full CCD's (x + 30, y + 100)
    assert np.allclose(im.wcs.pixel_to_world_values(5.5, 7.0),
                       full.wcs.pixel_to_world_values(35.5, 107.0), rtol=0, atol=1e-12)
    # a crop that declines reads everything
    whole = read_immask(path, crop=lambda w, shape: None)
    assert whole.origin == (0, 0) and whole.shape == sci.shape


def test_immask_lossless_option_and_header_wcs(tmp_path):
    sci, msk, wgt = _images(shape=(64, 32))
    hdr = _tan_wcs(sci.shape).to_header()
    hdr["EXPNUM"] = 5
    path = tmp_path / "x_immask.fits.fz"
    write_immask(path, sci, msk, wgt, hdr, quantize_level=0)
    im = read_immask(path)
    np.testing.assert_array_equal(im.sci, sci)
    assert im.wcs.wcs.ctype[0] == "RA---TAN"


def test_immask_tpv_wcs_roundtrip(tmp_path):
    real = sorted(__import__("pathlib").Path("/work/shared/realdata/legacypipe/testcase6/images")
                  .rglob("*_ooi_*.fits"))
    if not real:
        pytest.skip("real CP image not available")
    from desgw.io.instcal import read_instcal
    c = read_instcal(real[0])
    path = tmp_path / "tpv_immask.fits.fz"
    write_immask(path, c.image, c.mask, c.weight, fits.Header({"EXPNUM": 1}), c.wcs)
    im = read_immask(path)
    x, y = np.array([0.0, 50.0, 99.0]), np.array([3.0, 60.0, 95.0])
    ra0, dec0 = c.wcs.pixel_to_world_values(x, y)
    ra1, dec1 = im.wcs.pixel_to_world_values(x, y)
    assert np.allclose(ra0, ra1, atol=1e-9) and np.allclose(dec0, dec1, atol=1e-9)


def test_immask_write_errors(tmp_path):
    sci, msk, wgt = _images(shape=(16, 8))
    path = tmp_path / "e_immask.fits.fz"
    with pytest.raises(DataTypeError, match="shapes differ"):
        write_immask(path, sci, msk[:, :4], wgt)
    with pytest.raises(DataTypeError, match="MSK"):
        write_immask(path, sci, msk.astype(np.float32), wgt)
    with pytest.raises(DataTypeError, match="WGT"):
        write_immask(path, sci, msk, -wgt)
    with pytest.raises(DataTypeError, match="negative"):
        write_immask(path, sci, -msk - 1, wgt)
    with pytest.raises(DataTypeError, match="2-D"):
        write_immask(path, sci[0], msk, wgt)
    assert os.listdir(tmp_path) == []


def test_immask_read_errors(tmp_path):
    with pytest.raises(MissingFileError):
        read_immask(tmp_path / "none.fits.fz")
    path = tmp_path / "partial.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((4, 4), np.float32), name="SCI"),
                  fits.ImageHDU(np.zeros((4, 4), np.int16), name="MSK")]).writeto(path)
    with pytest.raises(CorruptFileError, match="no WGT"):
        read_immask(path)
    path = tmp_path / "floatmask.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((4, 4), np.float32), name="SCI"),
                  fits.ImageHDU(np.zeros((4, 4), np.float32), name="MSK"),
                  fits.ImageHDU(np.zeros((4, 4), np.float32), name="WGT")]).writeto(path)
    with pytest.raises(DataTypeError, match="MSK must be integer") as info:
        read_immask(path)
    assert info.value.hdu == "2:MSK"
    sci, msk, wgt = _images(shape=(64, 32))
    good = tmp_path / "t_immask.fits.fz"
    write_immask(good, sci, msk, wgt)
    good.write_bytes(good.read_bytes()[:-3000])
    with pytest.raises(CorruptFileError, match="truncated"):
        read_immask(good)


def test_immask_atomic_on_failure(tmp_path, monkeypatch):
    sci, msk, wgt = _images(shape=(16, 8))
    path = tmp_path / "a_immask.fits.fz"

    import fitsio

    from desgw.io import fitscodec

    def boom(self, *a, **k):
        raise OSError("disk full")

    def half_then_boom(blocks):  # our encoder's bytes: part of the file, then the error
        yield b"SIMPLE  =" + b" " * 100
        raise OSError("disk full")
    monkeypatch.setattr(fitsio.FITS, "write", boom)
    monkeypatch.setattr(fitscodec, "_file_blocks", half_then_boom)
    with pytest.raises(OSError, match="disk full"):
        write_immask(path, sci, msk, wgt)
    assert os.listdir(tmp_path) == []
    # a plane our encoder does not take (NaN) goes to cfitsio, whose failure leaves nothing
    sci[2, 2] = np.nan
    with pytest.raises(OSError, match="disk full"):
        write_immask(path, sci, msk, wgt)
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- tables
def _table():
    t = Table()
    t["NUMBER"] = np.arange(1, 6, dtype=np.int32)
    t["ALPHAWIN_J2000"] = np.linspace(150, 150.01, 5) * u.deg
    t["MAG_PSF"] = np.array([18.1, 19.2, 20.3, 21.4, 99.0], np.float32)
    t["FLAGS"] = np.array([0, 0, 2, 0, 4], np.int16)
    t["NAME"] = ["a", "b", "c", "d", "e"]
    return t


def test_fits_table_roundtrip(tmp_path):
    t = _table()
    path = tmp_path / "D00668439_r_35_r1p1_fullcat.fits"
    write_fits_table(path, t, fits.Header({"MAGZERO": 31.5, "EXPNUM": 668439}))
    back = read_fits_table(path)
    assert back.colnames == t.colnames
    np.testing.assert_array_equal(back["MAG_PSF"], t["MAG_PSF"])
    assert back["ALPHAWIN_J2000"].unit == u.deg
    assert back.meta["MAGZERO"] == 31.5
    assert list(back["NAME"]) == list(t["NAME"])
    assert len(read_fits_table(path, hdu="OBJECTS")) == 5
    # numpy structured array input
    arr = np.zeros(3, dtype=[("ra", "f8"), ("dec", "f8")])
    arr["ra"] = [1, 2, 3]
    write_fits_table(tmp_path / "s.fits", arr)
    assert list(read_fits_table(tmp_path / "s.fits")["ra"]) == [1, 2, 3]


def test_fits_table_errors(tmp_path):
    with pytest.raises(MissingFileError):
        read_fits_table(tmp_path / "none.fits")
    fits.HDUList([fits.PrimaryHDU(np.zeros((2, 2)))]).writeto(tmp_path / "img.fits")
    with pytest.raises(CorruptFileError, match="no table"):
        read_fits_table(tmp_path / "img.fits")
    (tmp_path / "junk.fits").write_text("not fits" * 1000)
    with pytest.raises(CorruptFileError):
        read_fits_table(tmp_path / "junk.fits")


def test_csv_roundtrip(tmp_path):
    t = _table()
    del t["ALPHAWIN_J2000"]
    path = tmp_path / "Zero_D00668439_35_r1p1.csv"
    write_csv(path, t)
    text = path.read_text().splitlines()
    assert text[0] == "NUMBER,MAG_PSF,FLAGS,NAME"
    back = read_csv(path)
    np.testing.assert_allclose(back["MAG_PSF"], t["MAG_PSF"], rtol=1e-6)
    assert list(back["FLAGS"]) == [0, 0, 2, 0, 4]
    with pytest.raises(MissingFileError):
        read_csv(tmp_path / "none.csv")
    (tmp_path / "bad.csv").write_bytes(b"\x00\xff\x00 a,b\n1\n1,2,3,4\n")
    with pytest.raises(CorruptFileError):
        read_csv(tmp_path / "bad.csv")


def test_parquet_roundtrip(tmp_path):
    t = _table()
    t.meta["EXPNUM"] = 668439
    path = tmp_path / "stars.parquet"
    write_parquet(path, t)
    back = read_parquet(path)
    assert back.colnames == t.colnames
    np.testing.assert_array_equal(back["FLAGS"], t["FLAGS"])
    assert back["ALPHAWIN_J2000"].unit == u.deg and back.meta["EXPNUM"] == 668439
    only = read_parquet(path, columns=["MAG_PSF"])
    assert only.colnames == ["MAG_PSF"]
    with pytest.raises(MissingFileError):
        read_parquet(tmp_path / "none.parquet")
    (tmp_path / "bad.parquet").write_text("nope")
    with pytest.raises(CorruptFileError):
        read_parquet(tmp_path / "bad.parquet")
    assert sorted(os.listdir(tmp_path)) == ["bad.parquet", "stars.parquet"]


def test_parquet_masked_and_2d(tmp_path):
    from astropy.table import MaskedColumn
    t = Table()
    t["x"] = MaskedColumn([1.0, 2.0, 3.0], mask=[False, True, False])
    t["s"] = MaskedColumn(["a", "b", "c"], mask=[True, False, False])
    t["v"] = np.arange(6, dtype=np.float32).reshape(3, 2)
    write_parquet(tmp_path / "m.parquet", t)
    back = read_parquet(tmp_path / "m.parquet")
    assert list(back["x"].mask) == [False, True, False] and back["x"][2] == 3.0
    assert list(back["s"].mask) == [True, False, False] and back["s"][1] == "b"
    assert back["v"].shape == (3, 2) and back["v"][2, 1] == 5.0
