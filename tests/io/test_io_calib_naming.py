"""Tests for desgw.io.calib and desgw.io.naming."""

from __future__ import annotations

import os
from typing import Any
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from desgw.io.calib import TRIMMED_SHAPE, CalibFile, read_calib, write_calib
from desgw.errors import (CorruptFileError, DataTypeError, HeaderError, MissingCCDError,
                             MissingFileError)
from desgw.io.naming import (allzp_csv_name, corners_out_name, exposure_dir, fullcat_name,
                             immask_name, parse_product_name, psf_model_name, qc_ccd_name,
                             qc_exposure_name, raw_name, zero_csv_name, zp_csv_name)

SHAPE = (40, 24)


def images(kind, ccds=(1, 35, 62), shape=SHAPE):
    rng = np.random.default_rng(0)
    if kind == "bpm":
        out = {c: np.zeros(shape, np.int32) for c in ccds}
        for c in ccds:
            out[c][c % shape[0], 3] = 1 | 512
        return out
    return {c: rng.normal(1.0 if kind != "bias" else 3.0, 0.01, shape).astype(np.float64)
            for c in ccds}


@pytest.mark.parametrize("suffix", [".fits", ".fits.fz"])
@pytest.mark.parametrize("kind", ["bias", "flat", "starflat", "bpm"])
def test_calib_roundtrip(tmp_path, kind, suffix):
    path = tmp_path / f"{kind}{suffix}"
    imgs = images(kind)
    write_calib(path, kind, imgs, fits.Header({"VALIDFRM": "2019-01-01"}), expected_shape=SHAPE)
    with CalibFile(path, kind, expected_shape=SHAPE) as cal:
        assert cal.ccdnums == (1, 35, 62) and cal.kind.name == kind
        assert cal.header["VALIDFRM"] == "2019-01-01"
        for c in (62, 1):
            got = cal.read(c)
            if kind == "bpm":
                assert got.dtype == np.int16
                np.testing.assert_array_equal(got, imgs[c])
            else:
                assert got.dtype == np.float32
                # stored losslessly as float32 (also when compressed)
                np.testing.assert_array_equal(got, imgs[c].astype(np.float32))
    with fits.open(path) as hdul:
        assert [h.name for h in hdul[1:]] == ["S29", "N4", "N31"]
        assert hdul[2].header["CCDNUM"] == 35
        assert hdul[0].header["CALTYPE"] == kind


def test_calib_full_size(tmp_path):
    path = tmp_path / "bias.fits"
    img = np.full(TRIMMED_SHAPE, 2.5, np.float32)
    write_calib(path, "bias", {28: img})
    with fits.open(path) as hdul:
        assert (hdul[1].header["NAXIS1"], hdul[1].header["NAXIS2"]) == (2048, 4096)
    assert read_calib(path, "bias", 28).shape == (4096, 2048)


def test_calib_bpm_high_bit_is_uint16(tmp_path):
    m = np.zeros(SHAPE, np.int64)
    m[0, 0] = 1 << 15
    write_calib(tmp_path / "b.fits", "bpm", {1: m}, expected_shape=None)
    got = read_calib(tmp_path / "b.fits", "bpm", 1, expected_shape=None)
    assert got.dtype == np.uint16 and got[0, 0] == 32768


def test_calib_errors(tmp_path):
    path = tmp_path / "flat.fits"
    write_calib(path, "flat", images("flat"), expected_shape=SHAPE)
    with pytest.raises(HeaderError, match="CALTYPE") as info:
        CalibFile(path, "bias", expected_shape=SHAPE)
    assert info.value.keyword == "CALTYPE"
    with CalibFile(path, expected_shape=SHAPE) as cal, pytest.raises(MissingCCDError) as info:
        cal.read(2)
    assert info.value.present == (1, 35, 62) and "flat.fits" in str(info.value)
    with CalibFile(path) as cal, pytest.raises(DataTypeError, match="shape") as info:
        cal.read(35)  # default expected shape is the full trimmed CCD
    assert info.value.hdu == "2:N4"
    with pytest.raises(MissingFileError):
        CalibFile(tmp_path / "none.fits")
    (tmp_path / "junk.fits").write_bytes(b"x" * 5000)
    with pytest.raises(CorruptFileError):
        CalibFile(tmp_path / "junk.fits")


def test_calib_wrong_dtype_and_missing_caltype(tmp_path):
    path = tmp_path / "flat.fits"
    hdr = fits.Header({"CALTYPE": "flat"})
    fits.HDUList([fits.PrimaryHDU(header=hdr),
                  fits.ImageHDU(np.ones(SHAPE, np.int16), header=fits.Header({"CCDNUM": 1}),
                                name="S29")]).writeto(path)
    with CalibFile(path, "flat", expected_shape=SHAPE) as cal, \
            pytest.raises(DataTypeError, match="BITPIX = 16"):
        cal.read(1)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones(SHAPE, np.float32))]).writeto(
        tmp_path / "nocal.fits")
    with pytest.raises(HeaderError, match="CALTYPE"):
        CalibFile(tmp_path / "nocal.fits")
    path = tmp_path / "bpm.fits"
    fits.HDUList([fits.PrimaryHDU(header=fits.Header({"CALTYPE": "bpm"})),
                  fits.ImageHDU(np.ones(SHAPE, np.float32), header=fits.Header({"CCDNUM": 1}))
                  ]).writeto(path)
    with CalibFile(path, "bpm", expected_shape=SHAPE) as cal, pytest.raises(DataTypeError):
        cal.read(1)


def test_calib_write_rejects_bad_images(tmp_path):
    path = tmp_path / "x.fits"
    with pytest.raises(DataTypeError, match="shape"):
        write_calib(path, "bias", {1: np.zeros((10, 10), np.float32)})
    bad = np.ones(SHAPE)
    bad[0, 0] = np.nan
    with pytest.raises(DataTypeError, match="NaN"):
        write_calib(path, "flat", {1: bad}, expected_shape=SHAPE)
    with pytest.raises(DataTypeError, match="integer"):
        write_calib(path, "bpm", {1: np.ones(SHAPE)}, expected_shape=SHAPE)
    with pytest.raises(DataTypeError, match=r"0\.\.65535"):
        write_calib(path, "bpm", {1: -np.ones(SHAPE, np.int32)}, expected_shape=SHAPE)
    with pytest.raises(ValueError, match="unknown calibration kind"):
        write_calib(path, "dark", {1: np.ones(SHAPE)}, expected_shape=SHAPE)
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- naming
def test_names():
    assert immask_name(668439, "r", 5, 4, 5) == "D00668439_r_05_r4p5_immask.fits.fz"
    assert fullcat_name(668439, "Y", 35, 12, 1) == "D00668439_Y_35_r12p1_fullcat.fits"
    assert psf_model_name(1, "g", 1, 1, 1) == "D00000001_g_01_r1p1_psfmodel.fits"
    assert qc_ccd_name(1, "g", 10, 1, 2) == "D00000001_g_10_r1p2_qc.json"
    assert qc_exposure_name(1, "g", 1, 2) == "D00000001_g_r1p2_qc.json"
    assert zero_csv_name(668439, 5, 4, 5) == "Zero_D00668439_05_r4p5.csv"
    assert allzp_csv_name(668439, 4, 5) == "allZP_D00668439_r4p5.csv"
    assert zp_csv_name(668439, 5, 4, 5) == "D00668439_05_r4p5_ZP.csv"
    assert corners_out_name(668439) == "668439.out"
    assert raw_name(668439) == "DECam_00668439.fits.fz"
    assert immask_name(np.int64(7), "i", np.int32(3), 1, 1) == "D00000007_i_03_r1p1_immask.fits.fz"


NOT_AN_INT: Any = 1.5


@pytest.mark.parametrize("call", [
    lambda: immask_name(1, "r", 0, 1, 1), lambda: immask_name(1, "r", 100, 1, 1),
    lambda: immask_name(-1, "r", 1, 1, 1), lambda: immask_name(1, "r band", 1, 1, 1),
    lambda: immask_name(NOT_AN_INT, "r", 1, 1, 1), lambda: zero_csv_name(1, True, 1, 1),
    lambda: allzp_csv_name(1, -1, 1),
])
def test_names_validate(call):
    with pytest.raises(ValueError):
        call()


@pytest.mark.parametrize("name", [
    immask_name(668439, "r", 5, 4, 5), fullcat_name(668439, "z", 62, 4, 5),
    psf_model_name(668439, "i", 1, 4, 5), qc_ccd_name(668439, "g", 3, 4, 5),
    qc_exposure_name(668439, "g", 4, 5), zero_csv_name(668439, 5, 4, 5),
    allzp_csv_name(668439, 4, 5), zp_csv_name(668439, 5, 4, 5), corners_out_name(668439),
    raw_name(668439)])
def test_parse_roundtrip(name):
    p = parse_product_name(Path("/some/dir") / name)
    assert p.expnum == 668439
    rebuilt = {
        "immask": lambda: immask_name(p.expnum, p.band, p.ccd, p.rnum, p.pnum),
        "fullcat": lambda: fullcat_name(p.expnum, p.band, p.ccd, p.rnum, p.pnum),
        "psfmodel": lambda: psf_model_name(p.expnum, p.band, p.ccd, p.rnum, p.pnum),
        "qc_ccd": lambda: qc_ccd_name(p.expnum, p.band, p.ccd, p.rnum, p.pnum),
        "qc_exposure": lambda: qc_exposure_name(p.expnum, p.band, p.rnum, p.pnum),
        "zero": lambda: zero_csv_name(p.expnum, p.ccd, p.rnum, p.pnum),
        "allzp": lambda: allzp_csv_name(p.expnum, p.rnum, p.pnum),
        "zp": lambda: zp_csv_name(p.expnum, p.ccd, p.rnum, p.pnum),
        "corners": lambda: corners_out_name(p.expnum),
        "raw": lambda: raw_name(p.expnum),
    }[p.kind]()
    assert rebuilt == name


def test_parse_rejects():
    with pytest.raises(ValueError):
        parse_product_name("D0066843_r_05_r4p5_immask.fits.fz")
    with pytest.raises(ValueError):
        parse_product_name("notes.txt")


def test_exposure_dir(tmp_path):
    d = exposure_dir(tmp_path, "persistent", "wsdiff", 20190425, 668439)
    assert d == tmp_path / "persistent" / "wsdiff" / "exp" / "20190425" / "668439"
    assert exposure_dir("/r", "scratch", "gw", "20190425", 1) == Path("/r/scratch/gw/exp/20190425/1")
    assert not d.exists()
    for bad in [("tmp", "gw", 20190425, 1), ("scratch", "sn", 20190425, 1),
                ("scratch", "gw", 2019042, 1), ("scratch", "gw", 20191325, 1),
                ("scratch", "gw", 20190425, -3)]:
        with pytest.raises(ValueError):
            exposure_dir(tmp_path, *bad)
