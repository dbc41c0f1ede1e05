"""Candidate stamps: cut-outs, edge padding, FITS and PNG files."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from astropy.table import Table

from desgw.diff.stamps import (
    cutout_stamps,
    read_stamps_fits,
    write_stamps_fits,
    write_stamps_png,
)
from desgw.diff.stamps_png import encode_png_gray, stretch_to_uint8
from desgw.errors import CorruptFileError

NY, NX = 200, 120


def _images():
    yy, xx = np.mgrid[0:NY, 0:NX].astype(np.float32)
    search = 1000.0 * yy + xx  # encodes the pixel position
    template = -search
    diff = np.zeros((NY, NX), np.float32)
    diff[50, 60] = np.nan
    return {"search": search, "template": template, "diff": diff}


def _decode_png(data: bytes) -> np.ndarray:
    """Minimal decoder of 8-bit grayscale, filter-0 PNGs (what we write)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w, h = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert (depth, ctype) == (8, 0)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, w + 1)
    assert np.all(raw[:, 0] == 0)
    return raw[:, 1:]


def test_cutout_shapes_positions_and_edge_padding():
    imgs = _images()
    x = np.array([60.4, 2.0, 119.0, 60.0, 500.0])
    y = np.array([100.6, 3.0, 199.4, 50.0, 500.0])
    st = cutout_stamps(imgs, x, y, size=11, fill=0.0)
    assert st.data.shape == (5, 3, 11, 11) and st.valid.shape == (5, 3, 11, 11)
    assert st.data.dtype == np.float32 and st.kinds == ("search", "template", "diff")
    np.testing.assert_array_equal(st.x0, [60, 2, 119, 60, 500])
    np.testing.assert_array_equal(st.y0, [101, 3, 199, 50, 500])
    # interior stamp: exact pixels, centre pixel at [5, 5]
    assert st.data[0, 0, 5, 5] == 1000 * 101 + 60
    assert st.data[0, 0, 0, 0] == 1000 * 96 + 55
    assert st.valid[0].all()
    np.testing.assert_array_equal(st.data[0, 1], -st.data[0, 0])
    # corner stamp: x 2 -> columns -3..7, rows -2..8
    v = st.valid[1, 0]
    assert v[:2].sum() == 0 and v[:, :3].sum() == 0 and v[2:, 3:].all()
    assert np.all(st.data[1, 0][~v] == 0.0)
    assert st.data[1, 0, 2, 3] == 0.0 and st.data[1, 0, 3, 3] == 1000.0  # pixel (0, 1)
    # top-right corner
    assert st.valid[2, 0, :6, :6].all() and st.valid[2, 0].sum() == 36
    assert st.data[2, 0, 5, 5] == 1000 * 199 + 119
    # NaN pixel in diff: invalid, replaced by fill; the other kinds there are valid
    assert not st.valid[3, 2, 5, 5] and st.data[3, 2, 5, 5] == 0.0 and st.valid[3, 0, 5, 5]
    assert np.isfinite(st.data).all()
    # fully outside: all invalid
    assert not st.valid[4].any()
    with pytest.raises(ValueError):  # even size
        cutout_stamps(imgs, x, y, size=10)
    with pytest.raises(ValueError):  # NaN fill
        cutout_stamps(imgs, x, y, fill=np.nan)
    with pytest.raises(ValueError):
        cutout_stamps({"search": imgs["search"]}, x, y)


def test_fits_round_trip_atomic(tmp_path):
    imgs = _images()
    st = cutout_stamps(imgs, [10.0, 60.0, 115.0], [10.0, 100.0, 195.0], size=21, fill=-1.0)
    table = Table({"cand_id": [7, 8, 9], "score": [0.1, 0.9, 0.5]})
    p = write_stamps_fits(tmp_path / "stamps.fits", st, table)
    back, tab = read_stamps_fits(p)
    np.testing.assert_array_equal(back.data, st.data)
    np.testing.assert_array_equal(back.valid, st.valid)
    assert back.kinds == st.kinds and back.fill == -1.0
    np.testing.assert_array_equal(tab["cand_id"], [7, 8, 9])
    np.testing.assert_array_equal(tab["STAMP_X0"], st.x0)
    assert [f.name for f in tmp_path.iterdir()] == ["stamps.fits"]
    assert "STAMP_X0" not in table.colnames  # input untouched
    with pytest.raises(ValueError):
        write_stamps_fits(tmp_path / "bad.fits", st, table[:2])
    assert not (tmp_path / "bad.fits").exists()
    (tmp_path / "junk.fits").write_bytes(b"not fits")
    with pytest.raises(CorruptFileError):
        read_stamps_fits(tmp_path / "junk.fits")


def test_fits_bytes_equal_astropys(tmp_path, monkeypatch):
    """The stamps file written from bytes (the candidate table by the direct table encoder)
    is the file astropy writes for the same HDUs, and fitsio reads it."""
    import fitsio
    from astropy.table import MaskedColumn

    import desgw.diff.stamps as stamps_mod

    imgs = _images()
    st = cutout_stamps(imgs, [10.0, 60.0, 115.0, 40.0], [10.0, 100.0, 195.0, 7.0], size=21,
                       fill=0.0)
    table = Table({"cand_id": [7, 8, 9, 10], "score": [0.1, 0.9, 0.5, 0.2],
                   "veto": [True, False, False, True]})
    table["mag"] = MaskedColumn([21.0, 22.0, 23.0, 0.0], mask=[False, False, False, True])
    table.meta["aperture_radius_fwhm"] = 1.5
    fast = (write_stamps_fits(tmp_path / "fast.fits", st, table)).read_bytes()
    monkeypatch.setattr(stamps_mod, "table_hdu_bytes", lambda *a, **k: None)
    slow = (write_stamps_fits(tmp_path / "astropy.fits", st, table)).read_bytes()
    assert fast == slow
    with fitsio.FITS(str(tmp_path / "fast.fits")) as f:
        np.testing.assert_array_equal(f["DIFF"].read(), st.data[:, 2])
        np.testing.assert_array_equal(f["CANDIDATES"].read()["STAMP_Y0"], st.y0)


def test_png_encoder_round_trip():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (17, 33), dtype=np.uint8)
    np.testing.assert_array_equal(_decode_png(encode_png_gray(img)), img)


@pytest.mark.parametrize("stretch", ["zscale", "asinh"])
def test_png_stamps_written_and_readable(tmp_path, stretch):
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:NY, 0:NX]
    star = 5000.0 * np.exp(-((xx - 60) ** 2 + (yy - 100) ** 2) / 8.0)
    imgs = {"search": rng.normal(100, 10, (NY, NX)) + star,
            "template": rng.normal(100, 10, (NY, NX)) + star,
            "diff": rng.normal(0, 14, (NY, NX)) + 0.1 * star}
    st = cutout_stamps(imgs, [60.0, 3.0], [100.0, 100.0], size=25)
    paths = write_stamps_png(tmp_path / "png", st, [11, 12], stretch=stretch, scale=2, gap=2)
    assert [p.name for p in paths] == ["stamp_11.png", "stamp_12.png"]
    assert sorted(f.name for f in (tmp_path / "png").iterdir()) == ["stamp_11.png",
                                                                   "stamp_12.png"]
    pic = _decode_png(paths[0].read_bytes())
    assert pic.shape == (2 * 25, 2 * (3 * 25 + 2 * 2))
    assert np.all(pic[:, 2 * 25:2 * 27] == 255)  # white gap
    # the star is the brightest thing in each panel, at the centre
    for k in range(3):
        panel = pic[:, 2 * k * 27:2 * k * 27 + 50]
        assert panel[24:26, 24:26].mean() >= np.percentile(panel, 99)
    # the second candidate's stamp hangs off the left edge: invalid pixels are black
    pic2 = _decode_png(paths[1].read_bytes())
    assert np.all(pic2[:, :2 * 9] == 0)
    pil = pytest.importorskip("PIL.Image")
    with pil.open(paths[0]) as im:
        np.testing.assert_array_equal(np.asarray(im), pic)


def test_stretch_limits():
    panel = np.linspace(0, 100, 400).reshape(20, 20)
    out = stretch_to_uint8(panel, stretch="zscale")
    assert out.min() == 0 and out.max() == 255 and out.dtype == np.uint8
    assert np.all(np.diff(out.ravel().astype(int)) >= 0)  # monotonic
    flat = stretch_to_uint8(np.full((5, 5), 3.0))
    assert np.all(flat == 128)
    with pytest.raises(ValueError):
        stretch_to_uint8(panel, stretch="log")


def _zscale_panels():
    """Stamps as the PNG writer sees them: noise of several scales, Moffat (beta 2.5 and 4.5)
    and Kolmogorov stars (galsim) from faint to saturating, a step, a flat panel, integer
    counts, float32 values, partly masked panels and tiny ones."""
    galsim = pytest.importorskip("galsim")
    rng = np.random.default_rng(12)
    profiles = [galsim.Moffat(beta=2.5, fwhm=1.0), galsim.Moffat(beta=4.5, fwhm=1.4),
                galsim.Kolmogorov(fwhm=1.1)]
    panels = []
    for i in range(240):
        size = (51, 51, 31, 9, 5)[i % 5]
        noise = float(rng.uniform(0.05, 200.0))
        img = rng.normal(0.0, noise, (size, size))
        kind = i % 8
        if kind in (1, 2, 3):
            star = profiles[kind - 1].withFlux(float(10 ** rng.uniform(1, 6)))
            img += star.drawImage(nx=size, ny=size, scale=0.263).array
        elif kind == 4:
            img[:, : size // 2] += rng.uniform(-50, 50)
        elif kind == 5:
            img = np.full((size, size), rng.uniform(-1, 1))
        elif kind == 6:
            img = np.round(img + 100)
        elif kind == 7:
            img = img.astype(np.float32).astype(np.float64)
        valid = rng.random((size, size)) > rng.uniform(0.0, 0.95)
        panels.append((img, valid))
    return panels


def test_zscale_limits_are_astropys_to_the_bit():
    """The PNG stretch's zscale is astropy's ZScaleInterval (the same floating-point
    operations): equal limits, so equal pictures."""
    from astropy.visualization import ZScaleInterval

    from desgw.diff.stamps_png import zscale_limits

    n_fitted = 0
    for img, valid in _zscale_panels():
        values = img[valid & np.isfinite(img)]
        if values.size == 0:
            continue
        ours = zscale_limits(values.copy())
        ref = ZScaleInterval().get_limits(values.copy())
        assert ours[0] == ref[0] and ours[1] == ref[1], (img.shape, ours, ref)
        n_fitted += (ref[0], ref[1]) != (values.min(), values.max())
    assert n_fitted > 40  # limits from the fitted slope, not only the samples' range
