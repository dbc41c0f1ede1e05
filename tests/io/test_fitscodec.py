"""desgw.io.fitscodec.write_planes: codecs chosen per plane, headers kept, both readers agree."""

from __future__ import annotations

import fitsio
import numpy as np
import pytest
from astropy.io import fits

from desgw.errors import DataTypeError
from desgw.io.fitscodec import Plane, noise_step, weight_step, write_planes


def test_planes_codecs_headers_and_readers(tmp_path):
    rng = np.random.default_rng(3)
    img = rng.normal(0, 5.0, (64, 40)).astype(np.float32)
    score = rng.normal(0, 1.0, (64, 40)).astype(np.float32)
    neg = rng.integers(-5, 5, (64, 40)).astype(np.int32)       # negative values
    # bits beyond int16, incompressible (cfitsio aborted writing these as PLIO_1)
    bits = rng.integers(0, 1 << 20, (64, 40)).astype(np.int32)
    h = fits.Header()
    h["EXPNUM"] = (12345, "exposure")
    h["LONGTXT"] = "x" * 150
    h["MAGZERO"] = 31.123456789012
    h["COMMENT"] = "a comment"
    h["HIERARCH ESO LONG KEY"] = 2
    path = tmp_path / "p.fits.fz"
    write_planes(path, [Plane("SCI", img, h, 5.0 / 16), Plane("LOSSLESS", img),
                        Plane("SCORE", score, None, 1 / 16), Plane("NEG", neg),
                        Plane("BITS", bits)])
    with fits.open(path, disable_image_compression=True) as raw:
        z = {x.name: x.header.get("ZCMPTYPE") for x in raw[1:]}
    assert z == {"SCI": "RICE_1", "LOSSLESS": "GZIP_2", "SCORE": "RICE_1", "NEG": "RICE_1",
                 "BITS": "RICE_1"}
    with fits.open(path) as hd, fitsio.FITS(str(path)) as ff:
        for name in ("SCI", "LOSSLESS", "SCORE", "NEG", "BITS"):
            np.testing.assert_array_equal(np.asarray(hd[name].data), ff[name].read())
        hs = hd["SCI"].header
        assert hs["EXPNUM"] == 12345 and hs["LONGTXT"] == "x" * 150
        assert hs["MAGZERO"] == pytest.approx(31.123456789012, abs=1e-12)
        assert hs["ESO LONG KEY"] == 2 and "a comment" in str(hs["COMMENT"])
        np.testing.assert_array_equal(hd["LOSSLESS"].data, img)
        np.testing.assert_array_equal(hd["NEG"].data, neg)
        np.testing.assert_array_equal(hd["BITS"].data, bits)
        d = hd["SCI"].data - img
        # uniform error within +-step/2: rms step / sqrt(12)
        assert np.abs(d).max() <= 5.0 / 32 * 1.001
        assert 0.8 < d.std() * 12**0.5 / (5.0 / 16) < 1.2
        assert np.abs(hd["SCORE"].data - score).max() <= 1 / 32 * 1.001


def test_steps():
    w = np.full((100, 50), 0.01, np.float32)   # sigma = 10
    w[:, :3] = 0
    assert noise_step(w) == pytest.approx(10 / 16)
    assert noise_step(np.zeros((4, 4))) == 0.0
    w[5, 5] = 0.001
    assert weight_step(w) == pytest.approx(0.001 / 1024)
    assert weight_step(np.zeros((4, 4))) == 0.0


def test_errors(tmp_path):
    a = np.zeros((4, 4), np.float32)
    with pytest.raises(DataTypeError, match="2-D"):
        write_planes(tmp_path / "x.fits.fz", [Plane("SCI", a[0])])
    with pytest.raises(DataTypeError, match="step"):
        write_planes(tmp_path / "x.fits.fz", [Plane("SCI", a, step=-1.0)])
    with pytest.raises(DataTypeError, match="numeric"):
        write_planes(tmp_path / "x.fits.fz", [Plane("SCI", np.array([["a"]]))])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_noise_samples_are_the_numpy_selections(dtype):
    """The one-pass samples behind noise_step hold exactly the values, in the order, of the
    numpy selections they replace (so the medians, hence the steps, are unchanged)."""
    from desgw.io.rice import positive_sample, row_differences

    rng = np.random.default_rng(3)
    img = rng.normal(0, 10, (70, 41)).astype(np.float32)
    img[rng.random(img.shape) < 0.05] = np.nan
    img[2, 7] = np.inf
    w = (rng.uniform(-0.2, 1, img.shape) * 100).astype(dtype)
    if dtype != np.int32:
        w[rng.random(w.shape) < 0.05] = np.nan
        w[3, :5] = np.inf
    for a, b in ((img, w), (img[:, ::2], w[:, ::2])):      # and non-contiguous views
        flat = np.asarray(b).ravel()[::7]
        want = flat[np.isfinite(flat) & (flat > 0)]
        got = positive_sample(b, 7)
        assert got.dtype == (want.dtype if dtype != np.int32 else np.float64)
        np.testing.assert_array_equal(got, want)
        rows = a[::16].astype(np.float64)
        good = (b[::16, 1:] > 0) & (b[::16, :-1] > 0)
        want_d = np.diff(rows, axis=1)[good & np.isfinite(rows[:, 1:])
                                       & np.isfinite(rows[:, :-1])]
        np.testing.assert_array_equal(row_differences(a, b, 16), want_d)
    with pytest.raises(ValueError, match="one shape"):
        row_differences(img, w[:, :3], 16)


def test_rice_file_headers_are_astropys_text(tmp_path):
    """Files our RICE encoder writes whole (every plane quantised or integer): each header
    block is the text astropy writes for its cards (card images, END, blank padding), the
    user's cards come back in order (long strings as CONTINUE cards, HIERARCH, COMMENT,
    HISTORY), and both readers decode the planes."""
    rng = np.random.default_rng(5)
    img = rng.normal(0, 5.0, (48, 30)).astype(np.float32)
    msk = rng.integers(0, 1 << 20, (48, 30)).astype(np.int32)
    h = fits.Header()
    h["EXPNUM"] = (12345, "exposure")
    h["LONGTXT"] = ("y" * 150, "a string longer than one card")
    h["MAGZERO"] = (31.123456789012, "zeropoint")
    h["QCPASS"] = (True, "a logical")
    h["HIERARCH ESO LONG KEY"] = 2
    h["COMMENT"] = "a comment"
    h["HISTORY"] = "a history line"
    path = tmp_path / "r.fits.fz"
    write_planes(path, [Plane("SCI", img, h, 5.0 / 16, 7), Plane("MSK", msk, h),
                        Plane("WGT", np.abs(img) + 1, None, 1.0 / 1024)])
    data = path.read_bytes()
    assert len(data) % 2880 == 0
    with fits.open(path, disable_image_compression=True) as raw:
        assert [x.header.get("ZCMPTYPE") for x in raw[1:]] == ["RICE_1"] * 3
        assert raw["SCI"].header["ZDITHER0"] == 7
        for hdu in raw:
            info = hdu.fileinfo()
            block = data[info["hdrLoc"]:info["datLoc"]].decode("ascii")
            assert block == fits.Header.fromstring(block).tostring()
    want = [(c.keyword, c.value, c.comment) for c in h.cards]
    with fits.open(path) as hd, fitsio.FITS(str(path)) as ff:
        for name in ("SCI", "MSK"):
            got = [(c.keyword, c.value, c.comment) for c in hd[name].header.cards
                   if c.keyword not in ("XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2",
                                        "PCOUNT", "GCOUNT", "EXTNAME")]
            assert got == want
        np.testing.assert_array_equal(hd["MSK"].data, msk)
        np.testing.assert_array_equal(ff["MSK"].read(), msk)
        np.testing.assert_array_equal(hd["SCI"].data, ff["SCI"].read())
        assert np.abs(hd["SCI"].data - img).max() <= 5.0 / 32 * 1.001
