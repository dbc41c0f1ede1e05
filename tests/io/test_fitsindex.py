"""The per-process cfitsio index of raw and calibration files (desgw.io.fitsindex)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from astropy.io import fits

from desgw.errors import CorruptFileError, DataTypeError, HeaderError, MissingCCDError
from desgw.io import fitsindex
from desgw.io.calib import CalibFile, write_calib
from desgw.io.raw import RawExposure, write_raw_exposure

from io_rawfactory import ccd_header, ccd_pixels, primary_header

SMALL = dict(nx=2 * (6 + 50) + 2 * 40, ny=60)
SHAPE = (40, 24)


@pytest.fixture(autouse=True)
def _fresh_cache():
    fitsindex.clear_cache()
    yield
    fitsindex.clear_cache()


def _raw(path, ccds=((5, "S25"), (1, "S29")), seed=0, expnum=668439):
    items = []
    for k, (c, d) in enumerate(ccds):
        h = ccd_header(c, d, **SMALL)
        items.append((h, ccd_pixels(h, seed + k, **SMALL)))
    write_raw_exposure(path, primary_header(expnum), items)
    return items


def _bump_mtime(path, seconds=5):
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10**9))


@pytest.mark.parametrize("suffix", [".fits", ".fits.fz"])
def test_second_ccd_reuses_the_index_and_matches_astropy(tmp_path, suffix):
    path = tmp_path / f"raw{suffix}"
    items = _raw(path)
    with RawExposure(path) as raw:
        a = raw.read_ccd(5)
    with RawExposure(path) as raw:  # another CCD of the same file: no new open, no re-index
        b = raw.read_ccd(1)
    info = fitsindex.cache_info()
    assert info["misses"] == 1 and info["hits"] == 1
    np.testing.assert_array_equal(a.pixels, items[0][1].astype(np.float32))
    np.testing.assert_array_equal(b.pixels, items[1][1].astype(np.float32))
    # the header (image form, also for a tile-compressed HDU) is astropy's, card for card
    with fits.open(path) as hdul:
        ref = hdul[2].header
        assert b.header["BITPIX"] == ref["BITPIX"] == 16
        assert (b.header["NAXIS1"], b.header["NAXIS2"]) == (ref["NAXIS1"], ref["NAXIS2"])
        skip = fitsindex._TABLE_ONLY | {"BZERO", "BSCALE"}
        mine = [(c.keyword, c.value) for c in b.header.cards if c.keyword not in skip
                and not c.keyword.startswith("NAXIS")]
        theirs = [(c.keyword, c.value) for c in ref.cards if c.keyword not in skip
                  and not c.keyword.startswith("NAXIS")]
        assert mine == theirs


def test_rewritten_file_is_read_again(tmp_path):
    path = tmp_path / "raw.fits.fz"
    _raw(path, seed=0)
    with RawExposure(path) as raw:
        first = raw.read_ccd(5).pixels.copy()
        assert raw.header.expnum == 668439
    # replaced by a new version (atomic rename: new inode) with other pixels and EXPNUM
    items = _raw(path, seed=7, expnum=668440)
    with RawExposure(path) as raw:
        assert raw.header.expnum == 668440
        second = raw.read_ccd(5).pixels
    np.testing.assert_array_equal(second, items[0][1].astype(np.float32))
    assert not np.array_equal(first, second)
    assert fitsindex.cache_info()["misses"] == 2


def test_file_changed_in_place_is_read_again(tmp_path):
    path = tmp_path / "bias.fits"
    imgs = {1: np.full(SHAPE, 1.0), 35: np.full(SHAPE, 2.0)}
    write_calib(path, "bias", imgs, expected_shape=SHAPE)
    with CalibFile(path, "bias", expected_shape=SHAPE) as cal:
        assert float(cal.read(35)[0, 0]) == 2.0
    # same size, same inode, new content: only the modification time tells
    with fits.open(path, mode="update") as hdul:
        hdul[2].data[:] = 3.0
    _bump_mtime(path)
    with CalibFile(path, "bias", expected_shape=SHAPE) as cal:
        assert float(cal.read(35)[0, 0]) == 3.0
    assert fitsindex.cache_info()["misses"] == 2


def test_errors_still_name_file_and_hdu(tmp_path):
    path = tmp_path / "raw.fits"
    h = ccd_header(1, "S29", **SMALL)
    h["GAINA"] = "lots"
    write_raw_exposure(path, primary_header(), [(h, ccd_pixels(h, 0, **SMALL))])
    for _ in range(2):  # cold and from the cache
        with RawExposure(path) as raw, pytest.raises(HeaderError) as info:
            raw.read_ccd(1)
        assert str(path) in str(info.value) and "GAINA" in str(info.value)
        assert info.value.hdu == "1:S29"
        with RawExposure(path) as raw, pytest.raises(MissingCCDError) as miss:
            raw.read_ccd(7)
        assert str(path) in str(miss.value) and "[1]" in str(miss.value)
    cal = tmp_path / "flat.fits"
    write_calib(cal, "bpm", {1: np.zeros(SHAPE, np.int16)}, expected_shape=SHAPE)
    with fits.open(cal, mode="update") as hdul:
        hdul[0].header["CALTYPE"] = "flat"   # a mask labelled as a flat: wrong BITPIX
    with CalibFile(cal, "flat", expected_shape=SHAPE) as f, pytest.raises(DataTypeError) as bad:
        f.read(1)
    assert str(cal) in str(bad.value) and bad.value.hdu == "1:S29" and "BITPIX" in str(bad.value)


def test_truncated_after_caching_is_reported(tmp_path):
    path = tmp_path / "raw.fits.fz"
    _raw(path)
    with RawExposure(path) as raw:
        raw.read_ccd(1)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.9)])
    with pytest.raises(CorruptFileError) as info:
        with RawExposure(path) as raw:
            raw.read_ccd(1)
    assert "truncated" in str(info.value) and str(path) in str(info.value)


def test_cache_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(fitsindex, "MAX_OPEN_FILES", 2)
    paths = []
    for k in range(4):
        p = tmp_path / f"b{k}.fits"
        write_calib(p, "bias", {1: np.full(SHAPE, float(k))}, expected_shape=SHAPE)
        paths.append(p)
        with CalibFile(p, "bias", expected_shape=SHAPE) as cal:
            assert float(cal.read(1)[0, 0]) == float(k)
    open_now = fitsindex.cache_info()["open"]
    assert open_now == [os.path.realpath(p) for p in paths[2:]]
