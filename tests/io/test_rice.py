"""desgw.io.rice (through write_planes): our RICE_1 HDUs decode, with astropy and fitsio, to
exactly the values of the tiled-image convention's quantisation rule, and match cfitsio's own
compressed bytes."""

from __future__ import annotations

import fitsio
import numpy as np
import pytest
from astropy.io import fits

from desgw.io import rice
from desgw.io.fitscodec import Plane, write_planes


def _float_scene(rng: np.random.Generator, ny: int, nx: int) -> np.ndarray:
    img = rng.normal(100.0, 20.0, (ny, nx)).astype(np.float32)
    img[3, :7] = 0.0            # exact zeros inside a row
    img[4] = 0.0                # a row of zeros only
    img[5] = -17.25             # a constant row
    img[6, 10 % nx] = 3e6       # bright pixel: long unary codes
    img[7, 1] = -4e5            # a large negative one
    img[8] = rng.normal(0, 1e4, nx)  # rows of high entropy
    return img


def _cfitsio_write(path, arrays) -> None:
    with fitsio.FITS(str(path), "rw", clobber=True) as f:
        for name, a, step, seed in arrays:
            if step:
                f.write(a, extname=name, compress="RICE", qlevel=-step,
                        qmethod="SUBTRACTIVE_DITHER_2", dither_seed=seed)
            else:
                f.write(a, extname=name, compress="RICE")


def test_dither_sequence_is_the_conventions():
    r = rice.dither_sequence()
    assert r.shape == (10000,) and r.dtype == np.float32
    assert r[0] == np.float32(16807 / 2147483647)
    assert 0 < r.min() and r.max() < 1


@pytest.mark.parametrize("shape,step,seed", [((40, 300), 20 / 16, 1), ((33, 64), 0.3, 9999),
                                             ((20, 45), 7.7, 4321), ((12, 2), 1e-3, 17)])
def test_float_planes_decode_exactly_and_match_cfitsio(tmp_path, shape, step, seed):
    rng = np.random.default_rng(seed)
    img = _float_scene(rng, *shape) if shape[1] > 10 else \
        rng.normal(0, 1, shape).astype(np.float32)
    wgt = rng.uniform(1e-3, 2.5e-3, shape).astype(np.float32)
    wgt[rng.random(shape) < 0.1] = 0.0
    wstep = 1e-3 / 1024
    ours, theirs = tmp_path / "ours.fits.fz", tmp_path / "cfitsio.fits.fz"
    write_planes(ours, [Plane("SCI", img, None, step, seed), Plane("WGT", wgt, None, wstep, seed)])
    _cfitsio_write(theirs, [("SCI", img, step, seed), ("WGT", wgt, wstep, seed)])
    with fits.open(ours) as a, fitsio.FITS(str(ours)) as b, fitsio.FITS(str(theirs)) as c:
        for name, arr, st in (("SCI", img, step), ("WGT", wgt, wstep)):
            ref = rice.quantise_reference(arr, st, seed)
            got_astropy, got_fitsio = np.asarray(a[name].data), b[name].read()
            assert got_astropy.dtype == np.float32
            np.testing.assert_array_equal(got_astropy, ref)
            np.testing.assert_array_equal(got_fitsio, ref)
            np.testing.assert_array_equal(c[name].read(), ref)   # cfitsio's own write
            assert np.all(got_astropy[arr == 0] == 0)            # zeros kept exactly
            err = (got_astropy - arr)[arr != 0] / np.float32(st)
            assert np.abs(err).max() <= 0.5 + 1e-3 * max(1.0, float(np.abs(arr).max()) * 1e-7
                                                          / st)
    with fits.open(ours, disable_image_compression=True) as a, \
            fits.open(theirs, disable_image_compression=True) as c:
        for name in ("SCI", "WGT"):
            assert a[name].header["ZQUANTIZ"] == "SUBTRACTIVE_DITHER_2"
            assert a[name].header["ZDITHER0"] == seed
            np.testing.assert_array_equal(a[name].data["ZZERO"], c[name].data["ZZERO"])
            np.testing.assert_array_equal(a[name].data["ZSCALE"], c[name].data["ZSCALE"])
            for x, y in zip(a[name].data["COMPRESSED_DATA"], c[name].data["COMPRESSED_DATA"]):
                np.testing.assert_array_equal(x, y)


def test_dither_is_uniform_and_unbiased(tmp_path):
    rng = np.random.default_rng(2)
    img = rng.normal(0, 10.0, (256, 512)).astype(np.float32)
    step = 10.0 / 16
    p = tmp_path / "d.fits.fz"
    write_planes(p, [Plane("SCI", img, None, step, 3)])
    with fits.open(p) as h:
        err = (h["SCI"].data.astype(np.float64) - img) / np.float32(step)
    # uniform in +-1/2: mean 0 (n = 131072: sigma of the mean 8e-4), variance 1/12
    assert abs(err.mean()) < 4e-3
    assert err.var() * 12 == pytest.approx(1.0, abs=0.02)
    hist, _ = np.histogram(err, bins=10, range=(-0.5, 0.5))
    assert hist.min() > 0.9 * hist.mean()


def test_integer_planes_lossless_with_wraparound(tmp_path):
    rng = np.random.default_rng(4)
    m16 = rng.integers(0, 5, (30, 70)).astype(np.int16)
    m16[:10] = 0                                      # all-zero blocks
    m16[11, 3], m16[11, 4], m16[11, 5] = 32767, -32768, 32767   # 16-bit wrap of differences
    m16[12] = rng.integers(-32768, 32767, 70)         # verbatim blocks
    m32 = rng.integers(-(1 << 31), (1 << 31) - 1, (30, 70), dtype=np.int64).astype(np.int32)
    m32[:5] = 0
    m32[6, :4] = [2**31 - 1, -2**31, 2**31 - 1, 0]
    ours, theirs = tmp_path / "ours.fits.fz", tmp_path / "cfitsio.fits.fz"
    write_planes(ours, [Plane("M16", m16), Plane("M32", m32)])
    _cfitsio_write(theirs, [("M16", m16, 0, 0), ("M32", m32, 0, 0)])
    with fits.open(ours) as a, fitsio.FITS(str(ours)) as b, fitsio.FITS(str(theirs)) as c:
        for name, arr in (("M16", m16), ("M32", m32)):
            np.testing.assert_array_equal(a[name].data, arr)
            np.testing.assert_array_equal(b[name].read(), arr)
            assert a[name].data.dtype == arr.dtype
            np.testing.assert_array_equal(c[name].read(), arr)


def test_what_the_encoder_does_not_take_goes_to_cfitsio(tmp_path):
    rng = np.random.default_rng(5)
    img = rng.normal(0, 1, (20, 30)).astype(np.float32)
    nan = img.copy()
    nan[2, 3] = np.nan
    huge = img.copy()
    huge[1, 1] = 1e30                                  # range / step beyond 32-bit integers
    assert rice.encode_float_tiles(huge, 0.1, 1) is None
    assert rice.encode_float_tiles(nan, 0.1, 1) is None
    for arr in (nan, huge):
        p = tmp_path / "f.fits.fz"
        write_planes(p, [Plane("SCI", arr, None, 0.1, 1), Plane("MSK", np.zeros((20, 30),
                                                                              np.int16))])
        with fits.open(p) as a, fitsio.FITS(str(p)) as b:
            np.testing.assert_array_equal(np.asarray(a["SCI"].data), b["SCI"].read())
            assert np.isnan(a["SCI"].data[2, 3]) == bool(np.isnan(arr[2, 3]))
            good = np.isfinite(arr) & (np.abs(arr) < 1e29)
            assert np.abs(a["SCI"].data[good] - arr[good]).max() <= 0.05 * 1.001 or \
                not np.isfinite(arr).all()


def test_weight_stats_and_steps_from_one_pass():
    from desgw.io.fitscodec import weight_step

    rng = np.random.default_rng(8)
    w = rng.uniform(0.5, 2.0, (37, 29)).astype(np.float32)
    w[3, 4] = 0.0
    w[5, 6] = np.float32(0.125)
    assert rice.weight_stats(w) == (True, 0.0, 0.125)
    assert weight_step(w) == pytest.approx(0.125 / 1024)
    w[1, 1] = -1.0
    assert rice.weight_stats(w)[1] == -1.0
    w[2, 2] = np.nan
    assert rice.weight_stats(w)[0] is False
    assert rice.weight_stats(np.zeros((4, 4), np.float32)) == (True, 0.0, np.inf)
    assert weight_step(np.zeros((4, 4))) == 0.0


def _int_scene(rng, shape, dtype):
    info = np.iinfo(dtype)
    a = rng.normal(0, 30, shape).round()
    a[1] = 7                                            # a constant row: zero blocks
    a[2] = rng.integers(info.min, info.max, shape[1], endpoint=True)  # verbatim blocks
    a[3, ::5] = info.max                                # long unary codes, wrap-around
    a[3, 1::5] = info.min
    a[4, 40:] = rng.normal(0, 3000, shape[1] - 40).round()
    return np.clip(a, info.min, info.max).astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_row_tile_decoder_matches_cfitsio(tmp_path, dtype):
    """decode_int_tiles (raw CCDs) gives exactly what cfitsio decodes from cfitsio's own
    RICE_1 row tiles (16-bit with BZERO 32768 as DECam raws, 32-bit with BZERO 0; each output
    dtype is one more numba compilation, so two), and round-trips our encoder; a tile table
    it does not take (2-row tiles) or a damaged tile goes back to the caller as None."""
    from desgw.io.fitsindex import open_indexed
    from desgw.io.raw import _rice_row_tiles

    rng = np.random.default_rng(4)
    shape = (9, 203)
    data = _int_scene(rng, shape, dtype)
    path = tmp_path / "x.fits.fz"
    with fitsio.FITS(str(path), "rw", clobber=True) as f:
        f.write(data, extname="A", compress="RICE", tile_dims=[1, shape[1]])
        f.write(data, extname="B", compress="RICE", tile_dims=[2, shape[1]])
        f.write(data, extname="C", compress="GZIP", tile_dims=[1, shape[1]])
    fx = open_indexed(path)
    got = _rice_row_tiles(fx, 1, fx.header(1))
    assert got is not None and got.dtype == dtype
    np.testing.assert_array_equal(got, fx.read_image_2d(1))
    np.testing.assert_array_equal(got, data)
    assert _rice_row_tiles(fx, 2, fx.header(2)) is None
    assert _rice_row_tiles(fx, 3, fx.header(3)) is None
    if dtype == np.int32:               # our encoder's tiles decode to the image
        heap, offsets, nbytes, bytepix = rice.encode_int_tiles(data)
        np.testing.assert_array_equal(
            rice.decode_int_tiles(heap, nbytes, offsets, shape, bytepix, 0, dtype), data)
        short = nbytes.copy()
        short[4] -= 1                   # a tile that overruns its bytes
        assert rice.decode_int_tiles(heap, short, offsets, shape, bytepix, 0, dtype) is None
        long = nbytes.copy()
        long[8] += 1                    # one that ends before them
        assert rice.decode_int_tiles(np.append(heap, np.uint8(0)), long, offsets, shape,
                                     bytepix, 0, dtype) is None


def test_inverse_variance_is_numpys_division():
    """The difference image's weight plane: float32 1 / variance bit for bit where the
    variance is finite and positive (subnormals overflowing to inf included), 0 where it is
    NaN, infinite, zero or negative."""
    from desgw.io.rice import inverse_variance

    rng = np.random.default_rng(4)
    v = rng.uniform(0.5, 2.0, (64, 50)).astype(np.float32)
    specials = [np.inf, -np.inf, np.nan, 0.0, -0.0, -1.0, 1e-45, 1e-39, 3e38, 1e-30]
    for k, value in enumerate(specials):
        v[k, ::3] = value
    ref = np.zeros(v.shape, np.float32)
    with np.errstate(over="ignore"):
        np.divide(np.float32(1.0), v, out=ref, where=np.isfinite(v) & (v > 0))
    out = inverse_variance(v)
    assert out.dtype == np.float32 and out.shape == v.shape
    np.testing.assert_array_equal(out.view(np.int32), ref.view(np.int32))
    assert np.all(out[2, ::3] == 0) and np.all(out[5, ::3] == 0)
    assert np.all(np.isinf(out[6, ::3]))  # 1 / 1e-45 overflows float32, as numpy's
    # a float64 or strided variance gives the float32 plane of its float32 values
    np.testing.assert_array_equal(inverse_variance(v.astype(np.float64)[:, ::2]),
                                  inverse_variance(np.ascontiguousarray(v[:, ::2])))
