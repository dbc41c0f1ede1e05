"""Tests for desgw.io.instcal on real CP InstCal cut-outs (skipped if absent) and synthetic files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from desgw.errors import DataTypeError, MissingCCDError, MissingFileError
from desgw.io.instcal import instcal_companion_paths, merge_headers, read_instcal

REAL = Path("/work/shared/realdata/legacypipe/testcase6")
REAL_IMAGES = sorted((REAL / "images").rglob("*_ooi_*.fits")) if REAL.exists() else []
needs_real = pytest.mark.skipif(not REAL_IMAGES, reason="real CP InstCal cut-outs not available")


@needs_real
@pytest.mark.parametrize("image", REAL_IMAGES, ids=lambda p: p.name)
def test_real_instcal(image):
    c = read_instcal(image)
    assert c.image.dtype == np.float32 and c.mask.dtype == np.int32 and c.weight.dtype == np.float32
    assert c.image.shape == c.mask.shape == c.weight.shape
    assert 95 <= c.shape[0] <= 101 and 95 <= c.shape[1] <= 101
    assert (c.detpos, c.ccdnum) in (("S4", 28), ("S9", 20))
    assert c.band in ("g", "r", "z") and c.band == image.name.split("_")[4]
    assert c.exptime > 0 and 56000 < c.mjd_obs < 60000
    assert 3.5 < c.gain < 5.0 and 40000 < c.saturate < 50000
    assert c.header["PROCTYPE"] == "InstCal"          # from the primary header
    assert c.header["EXTNAME"].strip() == c.detpos     # from the extension header
    frac = float(np.mean(c.mask != 0))
    assert 0.01 < frac < 0.5
    # CP: masked pixels have zero weight, unmasked pixels positive weight
    assert np.all(c.weight[c.mask != 0] == 0)
    assert np.mean(c.weight[c.mask == 0] > 0) > 0.99
    # the sky level near AVSKY, the CP mean sky of the whole CCD
    good = c.mask == 0
    sky = float(np.median(c.image[good]))
    assert abs(sky - c.sky_adu) < 0.35 * c.sky_adu  # cut-outs hold galaxies too
    # pixel -> sky -> pixel round trip with the TPV WCS
    x, y = np.array([0.0, 50.0, 99.0]), np.array([0.0, 40.0, 90.0])
    ra, dec = c.wcs.pixel_to_world_values(x, y)
    x2, y2 = c.wcs.world_to_pixel_values(ra, dec)
    assert np.allclose(x2, x, atol=1e-3) and np.allclose(y2, y, atol=1e-3)
    # pixel scale from the WCS is DECam's (0.262 arcsec at the centre, ~0.26-0.27 off-axis)
    scale = np.hypot(*np.diff(np.array(c.wcs.pixel_to_world_values([10, 11], [10, 10])), axis=1).ravel()
                     * [np.cos(np.radians(dec[1])), 1]) * 3600
    assert 0.25 < scale < 0.275


@needs_real
def test_real_wcs_puts_gaia_star_on_its_image():
    """The brightest Gaia DR2 star of the cut-outs lands within 1 px of a bright source."""
    stars = [fits.getdata(p) for p in sorted((REAL / "gaia").glob("chunk-*.fits"))]
    ra = np.concatenate([s["ra"] for s in stars])
    dec = np.concatenate([s["dec"] for s in stars])
    g = np.concatenate([s["phot_g_mean_mag"] for s in stars])
    n_checked = 0
    for image in REAL_IMAGES:
        c = read_instcal(image)
        x, y = c.wcs.world_to_pixel_values(ra, dec)
        inside = (x > 4) & (y > 4) & (x < c.shape[1] - 5) & (y < c.shape[0] - 5) & (g < 20)
        sigma = 1 / np.sqrt(np.median(c.weight[c.weight > 0]))
        sky = np.median(c.image[c.mask == 0])
        for X, Y in zip(x[inside], y[inside]):
            xi, yi = int(round(X)), int(round(Y))
            stamp = np.clip(c.image[yi - 3:yi + 4, xi - 3:xi + 4] - sky, 0, None)
            yy, xx = np.mgrid[-3:4, -3:4]
            cx = (stamp * xx).sum() / stamp.sum() + xi
            cy = (stamp * yy).sum() / stamp.sum() + yi
            assert stamp.max() > 100 * sigma
            assert np.hypot(cx - X, cy - Y) < 1.0
            n_checked += 1
    assert n_checked >= len(REAL_IMAGES)


@needs_real
def test_real_explicit_paths_and_ccd_selection(tmp_path):
    image = REAL_IMAGES[0]
    mask, weight = instcal_companion_paths(image)
    c = read_instcal(image, mask, weight, ccd=c_detpos(image))
    c2 = read_instcal(image, ccd=c.ccdnum)
    np.testing.assert_array_equal(c.image, c2.image)
    with pytest.raises(MissingCCDError):
        read_instcal(image, ccd=5)
    # derived companion missing -> MissingFileError naming it
    lone = tmp_path / image.name
    shutil.copy(image, lone)
    with pytest.raises(MissingFileError, match="_ood_"):
        read_instcal(lone)


def c_detpos(image: Path) -> str:
    return image.name.split(".")[-2]


# ----------------------------------------------------------------------------- synthetic
def _write_cp(tmp_path, ccds=((28, "S4"), (20, "S9")), mask_shape=None, weight_dtype=np.float32,
              compress=False):
    suffix = ".fits.fz" if compress else ".fits"
    prim = fits.Header({"EXPNUM": 123, "FILTER": "i DECam SDSS c0003 7835.0 1470.0",
                        "MJD-OBS": 58000.5, "EXPTIME": 90.0, "PROCTYPE": "InstCal"})
    paths = {}
    tmp_path.mkdir(parents=True, exist_ok=True)
    for kind in ("ooi", "ood", "oow"):
        hdus = [fits.PrimaryHDU(header=prim)]
        for ccdnum, detpos in ccds:
            h = fits.Header({"CCDNUM": ccdnum, "DETPOS": detpos, "GAINA": 4.0, "GAINB": 4.2,
                             "SATURATA": 40000.0, "SATURATB": 42000.0, "CTYPE1": "RA---TAN",
                             "CTYPE2": "DEC--TAN", "CRVAL1": 10.0, "CRVAL2": -20.0,
                             "CRPIX1": 16.0, "CRPIX2": 8.0, "CD1_1": -7.3e-5, "CD2_2": 7.3e-5})
            shape = (16, 32)
            if kind == "ooi":
                data = np.full(shape, 100.0 + ccdnum, np.float32)
            elif kind == "ood":
                data = np.zeros(mask_shape or shape, np.int32)
                data[0, :4] = 1
            else:
                data = np.full(shape, 0.01, weight_dtype)
            cls = fits.CompImageHDU if compress else fits.ImageHDU
            hdus.append(cls(data, header=h, name=detpos))
        p = tmp_path / f"c4d_170101_000000_{kind}_i_v1{suffix}"
        fits.HDUList(hdus).writeto(p)
        paths[kind] = p
    return paths


@pytest.mark.parametrize("compress", [False, True])
def test_synthetic_multi_ccd(tmp_path, compress):
    paths = _write_cp(tmp_path, compress=compress)
    c = read_instcal(paths["ooi"], ccd=20)
    assert c.detpos == "S9" and c.ccdnum == 20 and c.band == "i"
    assert c.gain == pytest.approx(4.1) and c.saturate == 40000.0
    assert np.all(c.image == 120.0) and c.mask[0, :4].tolist() == [1, 1, 1, 1]
    assert c.mask_path.endswith(f"_ood_i_v1{'.fits.fz' if compress else '.fits'}")
    ra, dec = c.wcs.pixel_to_world_values(15.0, 7.0)  # CRPIX is 1-based
    assert ra == pytest.approx(10.0) and dec == pytest.approx(-20.0)
    assert read_instcal(paths["ooi"], ccd="s4").ccdnum == 28
    with pytest.raises(MissingCCDError) as info:
        read_instcal(paths["ooi"])
    assert info.value.present == (20, 28)


def test_synthetic_bad_planes(tmp_path):
    paths = _write_cp(tmp_path / "a", ccds=((28, "S4"),), mask_shape=(16, 31))
    with pytest.raises(DataTypeError, match="shape") as info:
        read_instcal(paths["ooi"])
    assert "_ood_" in str(info.value)
    paths = _write_cp(tmp_path / "b", ccds=((28, "S4"),), weight_dtype=np.int32)
    with pytest.raises(DataTypeError, match="weight"):
        read_instcal(paths["ooi"])
    with pytest.raises(MissingFileError):
        read_instcal(tmp_path / "c4d_nothing_ooi_r.fits")


def test_merge_headers_extension_wins():
    p = fits.Header({"EXPNUM": 1, "FILTER": "r", "NEXTEND": 61})
    e = fits.Header({"FILTER": "g", "CCDNUM": 3})
    m = merge_headers(p, e)
    assert m["EXPNUM"] == 1 and m["FILTER"] == "g" and m["CCDNUM"] == 3 and "NEXTEND" not in m
