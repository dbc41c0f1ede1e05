"""Tests for desgw.io.raw: reading and writing raw DECam exposures."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from astropy.io import fits

from desgw.errors import (CorruptFileError, DataTypeError, HeaderError, MissingCCDError,
                             MissingFileError)
from desgw.io.raw import (RawExposure, nite_from_datetime, parse_dec_deg, parse_ra_deg,
                          read_exposure_header, write_raw_exposure)
from io_rawfactory import ccd_header, ccd_pixels, primary_header

SMALL = dict(nx=2 * (6 + 50) + 2 * 40, ny=60)  # 192 x 60 raw CCD: 40-column amps, 60 rows


def small_ccd(ccdnum, detpos, seed=0, **edit):
    h = ccd_header(ccdnum, detpos, **SMALL)
    for k, v in edit.items():
        if v is None:
            del h[k]
        else:
            h[k] = v
    return h, ccd_pixels(ccd_header(ccdnum, detpos, **SMALL), seed, **SMALL)


def write_small(path, ccds=((5, "S25"), (1, "S29"), (35, "N4")), **kw):
    items = [small_ccd(c, d, seed=c) for c, d in ccds]
    write_raw_exposure(path, primary_header(), items, **kw)
    return items


# ----------------------------------------------------------------------------- header parsing
def test_angles_and_nite():
    assert parse_ra_deg("12:34:56.78") == pytest.approx(15 * (12 + 34 / 60 + 56.78 / 3600))
    assert parse_dec_deg("-05:06:07.8") == pytest.approx(-(5 + 6 / 60 + 7.8 / 3600))
    assert parse_dec_deg("-00:30:00") == pytest.approx(-0.5)
    assert parse_ra_deg(188.5) == 188.5 and parse_dec_deg("-12.25") == -12.25
    with pytest.raises(ValueError):
        parse_dec_deg("95:00:00")
    with pytest.raises(ValueError):
        parse_ra_deg("12:75:00")
    # 02:57 UTC on 25 April is the evening of 24 April in Chile; 23:30 UTC is the same day.
    assert nite_from_datetime("2019-04-25T02:57:46") == 20190424
    assert nite_from_datetime("2019-04-25T23:30:00") == 20190425
    assert nite_from_datetime("2019-04-25T14:59:00") == 20190424
    assert nite_from_datetime(58598.0) == 20190424  # MJD 58598.0 = 2019-04-25T00:00 UTC
    assert nite_from_datetime(58598.7) == 20190425  # 16:48 UTC


@pytest.mark.parametrize("suffix", [".fits", ".fits.fz"])
def test_exposure_header(tmp_path, suffix):
    path = tmp_path / f"DECam_00668439{suffix}"
    write_small(path)
    eh = read_exposure_header(path)
    assert eh.expnum == 668439 and eh.band == "r" and eh.obstype == "object"
    assert eh.exptime == 90.0 and eh.mjd_obs == pytest.approx(58598.1234567)
    assert eh.nite == 20190424
    assert eh.ra_deg == pytest.approx(15 * (12 + 34 / 60 + 56.78 / 3600))  # TELRA preferred
    assert eh.dec_deg == pytest.approx(-(5 + 6 / 60 + 7.8 / 3600))
    assert eh.airmass == 1.23 and eh.propid == "2019A-0205" and eh.object == "S190425z hex 12"
    assert eh.header["INSTRUME"] == "DECam"


def test_exposure_header_fallbacks(tmp_path):
    ph = primary_header()
    for k in ("BAND", "TELRA", "TELDEC", "MJD-OBS"):
        del ph[k]
    ph["FILTER"] = "Y DECam c0005 10095.0 1130.0"
    ph["RA"], ph["DEC"] = 150.25, -30.5
    path = tmp_path / "x.fits"
    write_raw_exposure(path, ph, [small_ccd(1, "S29")])
    eh = read_exposure_header(path)
    assert eh.band == "Y" and (eh.ra_deg, eh.dec_deg) == (150.25, -30.5)
    assert eh.mjd_obs == pytest.approx(58598.1234567014, abs=1e-8)  # from DATE-OBS
    assert eh.nite == 20190424


@pytest.mark.parametrize("key,value", [("EXPNUM", None), ("EXPNUM", "abc"), ("EXPTIME", "x"),
                                       ("TELDEC", "-95:00:00"), ("DATE-OBS", "yesterday")])
def test_exposure_header_bad(tmp_path, key, value):
    ph = primary_header()
    if key == "DATE-OBS":
        del ph["MJD-OBS"]
    if value is None:
        del ph[key]
    else:
        ph[key] = value
    path = tmp_path / "bad.fits"
    write_raw_exposure(path, ph, [small_ccd(1, "S29")])
    with pytest.raises(HeaderError) as info:
        read_exposure_header(path)
    assert info.value.keyword == key and str(path) in str(info.value) and "[HDU 0]" in str(info.value)


# ----------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("suffix", [".fits", ".fits.fz"])
def test_roundtrip_small(tmp_path, suffix):
    path = tmp_path / f"raw{suffix}"
    items = write_small(path)
    with RawExposure(path) as raw:
        assert raw.ccdnums == (1, 5, 35)
        assert raw.header.expnum == 668439
        ccd = raw.read_ccd(35)
        assert ccd.ccdnum == 35 and ccd.detpos == "N4" and ccd.hdu == 3
        assert ccd.pixels.dtype == np.float32
        np.testing.assert_array_equal(ccd.pixels, items[2][1].astype(np.float32))
        a, b = ccd.amps["A"], ccd.amps["B"]
        assert a.gain == 4.025 and b.read_noise_e == 5.9 and a.saturation_adu == 44144.0
        assert str(b.data_section) == "[57:96,1:50]"
        assert b.data.shape == (50, 40) and a.overscan.shape == (50, 50)
        assert b.prescan.shape == (50, 6)
        # overscan levels as built by the factory
        assert abs(float(np.median(a.overscan)) - 1000) <= 1
        assert abs(float(np.median(b.overscan)) - 1200) <= 1
        assert ccd.trimmed_shape == (50, 80) and ccd.trimmed.shape == (50, 80)
        # amp positions inside the trimmed image: B left, A right (from DATASECA/B)
        assert b.trimmed_slices == (slice(0, 50), slice(0, 40))
        assert a.trimmed_slices == (slice(0, 50), slice(40, 80))
        np.testing.assert_array_equal(ccd.trimmed[a.trimmed_slices], a.data)
    with pytest.raises(ValueError):  # closed file
        raw.read_ccd(35)


def test_extname_is_detpos_and_uint16(tmp_path):
    path = tmp_path / "raw.fits.fz"
    write_small(path)
    with fits.open(path) as hdul:
        assert [h.name for h in hdul[1:]] == ["S25", "S29", "N4"]
        assert isinstance(hdul[1], fits.CompImageHDU)
        assert hdul[1].header["BITPIX"] == 16 and hdul[1].header["BZERO"] == 32768
        assert hdul[1].data.dtype == np.uint16
    with fits.open(path, disable_image_compression=True) as hdul:
        assert hdul[1].header["ZCMPTYPE"] == "RICE_1"


def test_write_clips_and_rounds(tmp_path):
    h, _ = small_ccd(1, "S29")
    data = np.full((60, 192), 100.4, np.float64)
    data[0, 0], data[0, 1], data[0, 2] = -50.0, 70000.0, 99.6
    path = tmp_path / "clip.fits.fz"
    write_raw_exposure(path, primary_header(), [(h, data)])
    with RawExposure(path) as raw:
        px = raw.read_ccd(1).pixels
    assert px[0, 0] == 0 and px[0, 1] == 65535 and px[0, 2] == 100 and px[5, 5] == 100


def test_compress_flag_overrides_suffix(tmp_path):
    path = tmp_path / "x.fits"
    write_small(path, compress=True)
    with fits.open(path) as hdul:
        assert isinstance(hdul[1], fits.CompImageHDU)
    path = tmp_path / "y.fits.fz"
    write_small(path, compress=False)
    with fits.open(path) as hdul:
        assert type(hdul[1]) is fits.ImageHDU


def test_write_errors(tmp_path):
    h, d = small_ccd(1, "S29")
    with pytest.raises(HeaderError, match="CCDNUM"):
        write_raw_exposure(tmp_path / "a.fits", primary_header(), [(h, d), (h, d)])
    h2 = h.copy()
    del h2["DETPOS"]
    with pytest.raises(HeaderError, match="DETPOS"):
        write_raw_exposure(tmp_path / "a.fits", primary_header(), [(h2, d)])
    bad = d.astype(np.float32)
    bad[3, 3] = np.nan
    with pytest.raises(DataTypeError, match="NaN"):
        write_raw_exposure(tmp_path / "a.fits", primary_header(), [(h, bad)])
    with pytest.raises(DataTypeError, match="2-D"):
        write_raw_exposure(tmp_path / "a.fits", primary_header(), [(h, d[0])])
    assert os.listdir(tmp_path) == []


def test_full_size_ccd_layout_round_trip(tmp_path):
    h = ccd_header(35, "N4")
    d = ccd_pixels(h, 1)
    path = tmp_path / "full.fits.fz"
    write_raw_exposure(path, primary_header(), [(h, d)])
    with RawExposure(path) as raw:
        ccd = raw.read_ccd(35)
    assert ccd.pixels.shape == (4146, 2160)
    assert ccd.trimmed_shape == (4096, 2048)
    assert str(ccd.datasec) == "[57:2104,1:4096]"
    assert ccd.amps["A"].data.shape == (4096, 1024) and ccd.amps["B"].overscan.shape == (4096, 50)
    np.testing.assert_array_equal(ccd.pixels, d)


def test_header_map_does_not_decompress(tmp_path, monkeypatch):
    from desgw.io import fitsindex

    from desgw.io import raw as raw_module

    path = tmp_path / "raw.fits.fz"
    write_small(path)
    calls, ours = [], []
    orig = fitsindex.FitsIndex.read_image
    monkeypatch.setattr(fitsindex.FitsIndex, "read_image",
                        lambda self, i: calls.append(self.labels[i]) or orig(self, i))
    orig_rows = raw_module._rice_row_tiles
    monkeypatch.setattr(raw_module, "_rice_row_tiles",
                        lambda fx, i, h: ours.append(fx.labels[i]) or orig_rows(fx, i, h))
    with RawExposure(path) as raw:
        assert raw.ccdnums == (1, 5, 35)
        assert calls == [] and ours == []
        raw.read_ccd(5)
        assert ours == ["1:S25"] and calls == []   # RICE_1 row tiles: our decoder, not cfitsio


def test_skips_hdus_without_ccdnum_and_finds_any_order(tmp_path):
    path = tmp_path / "raw.fits"
    items = write_small(path, ccds=((62, "N31"), (3, "S31")))
    with fits.open(path) as hdul:
        hdul.append(fits.BinTableHDU.from_columns([fits.Column("a", "J", array=[1, 2])]))
        hdul.writeto(tmp_path / "raw2.fits")
    with RawExposure(tmp_path / "raw2.fits") as raw:
        assert raw.ccdnums == (3, 62)
        np.testing.assert_array_equal(raw.read_ccd(3).pixels, items[1][1])


# ----------------------------------------------------------------------------- bad inputs
def test_missing_file(tmp_path):
    with pytest.raises(MissingFileError) as info:
        RawExposure(tmp_path / "nope.fits.fz")
    assert "nope.fits.fz" in str(info.value)
    with pytest.raises(MissingFileError):
        read_exposure_header(tmp_path / "nope.fits")


@pytest.mark.parametrize("content", [b"", b"SIMPLE", b"hello world " * 1000])
def test_not_fits(tmp_path, content):
    path = tmp_path / "junk.fits"
    path.write_bytes(content)
    with pytest.raises(CorruptFileError) as info:
        RawExposure(path)
    assert str(path) in str(info.value)
    e = pickle.loads(pickle.dumps(info.value))
    assert isinstance(e, CorruptFileError)


@pytest.mark.parametrize("suffix", [".fits", ".fits.fz"])
@pytest.mark.parametrize("fraction", [0.5, 0.97])
def test_truncated(tmp_path, suffix, fraction):
    h = ccd_header(1, "S29")
    path = tmp_path / f"t{suffix}"
    write_raw_exposure(path, primary_header(), [(h, ccd_pixels(h))])
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CorruptFileError) as info:
        with RawExposure(path) as raw:
            raw.read_ccd(1)
    assert "truncated" in str(info.value) and info.value.hdu is not None


def test_truncated_inside_header(tmp_path):
    path = tmp_path / "t.fits"
    write_small(path)
    path.write_bytes(path.read_bytes()[: 2880 + 1000])
    with pytest.raises(CorruptFileError) as info:
        RawExposure(path)
    assert info.value.hdu == 1


def test_corrupt_compressed_data(tmp_path):
    path = tmp_path / "c.fits.fz"
    write_small(path, ccds=((1, "S29"),))
    with fits.open(path, disable_image_compression=True) as hdul:
        start = hdul[1].fileinfo()["datLoc"]
    raw_bytes = bytearray(path.read_bytes())
    # overwrite the tile descriptors and the heap with garbage of the same length
    rng = np.random.default_rng(3)
    raw_bytes[start:start + 3000] = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(raw_bytes))
    with pytest.raises(CorruptFileError) as info:
        with RawExposure(path) as raw:
            raw.read_ccd(1)
    assert info.value.hdu is not None


def test_missing_ccd_lists_present(tmp_path):
    path = tmp_path / "raw.fits"
    write_small(path)
    with RawExposure(path) as raw:
        with pytest.raises(MissingCCDError) as info:
            raw.read_ccd(2)
    assert info.value.present == (1, 5, 35)
    assert "[1, 5, 35]" in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("keyword", ["DATASECA", "DATASECB", "BIASSECA", "BIASSECB", "GAINA",
                                     "RDNOISEB", "SATURATA", "DATASEC"])
@pytest.mark.parametrize("mode", ["missing", "malformed"])
def test_bad_amp_keywords(tmp_path, keyword, mode):
    if mode == "missing" and keyword == "DATASEC":
        pytest.skip("DATASEC is optional (the union of DATASECA/B is used)")
    value = None if mode == "missing" else ("[1:40,1:" if "SEC" in keyword else "fast")
    path = tmp_path / "bad.fits.fz"
    good = small_ccd(1, "S29")
    bad = small_ccd(35, "N4", **{keyword: value})
    write_raw_exposure(path, primary_header(), [good, bad])
    with RawExposure(path) as raw:
        raw.read_ccd(1)  # the good CCD still reads
        with pytest.raises(HeaderError) as info:
            raw.read_ccd(35)
    err = info.value
    assert err.keyword == keyword
    assert keyword in str(err) and "bad.fits.fz[HDU 2:N4]" in str(err)


@pytest.mark.parametrize("keyword,value", [("GAINA", -4.0), ("DATASECA", "[30:70,1:50]"),
                                           ("DATASEC", "[57:100,1:50]")])
def test_inconsistent_keywords(tmp_path, keyword, value):
    path = tmp_path / "bad.fits"
    write_raw_exposure(path, primary_header(), [small_ccd(1, "S29", **{keyword: value})])
    with RawExposure(path) as raw, pytest.raises(HeaderError) as info:
        raw.read_ccd(1)
    assert info.value.keyword in (keyword, "DATASECA", "DATASECB")


def test_section_outside_array(tmp_path):
    path = tmp_path / "bad.fits"
    write_raw_exposure(path, primary_header(), [small_ccd(1, "S29", BIASSECA="[137:300,1:50]")])
    with RawExposure(path) as raw, pytest.raises(DataTypeError) as info:
        raw.read_ccd(1)
    assert "BIASSECA" in str(info.value) and "outside" in str(info.value)
    assert info.value.hdu == "1:S29"


def test_float_raw_data(tmp_path):
    h, d = small_ccd(1, "S29")
    path = tmp_path / "float.fits"
    fits.HDUList([fits.PrimaryHDU(header=primary_header()),
                  fits.ImageHDU(d.astype(np.float32), header=h, name="S29")]).writeto(path)
    with RawExposure(path) as raw, pytest.raises(DataTypeError, match="BITPIX = -32") as info:
        raw.read_ccd(1)
    assert info.value.hdu == "1:S29"


def test_wrong_dimension_raw_data(tmp_path):
    h, d = small_ccd(1, "S29")
    path = tmp_path / "cube.fits"
    fits.HDUList([fits.PrimaryHDU(header=primary_header()),
                  fits.ImageHDU(np.stack([d, d]), header=h, name="S29")]).writeto(path)
    with RawExposure(path) as raw, pytest.raises(DataTypeError, match="2-D"):
        raw.read_ccd(1)


def test_duplicate_ccdnum_in_file(tmp_path):
    h, d = small_ccd(1, "S29")
    path = tmp_path / "dup.fits"
    fits.HDUList([fits.PrimaryHDU(header=primary_header()), fits.ImageHDU(d, header=h),
                  fits.ImageHDU(d, header=h)]).writeto(path)
    with pytest.raises(HeaderError, match="twice") as info:
        RawExposure(path)
    assert info.value.keyword == "CCDNUM"
