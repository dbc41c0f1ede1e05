"""Decoded calibration planes cached on disk (desgw.io.calib_cache) behind CalibFile.read."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from desgw.errors import CorruptFileError
from desgw.io import fitsindex
from desgw.io.calib import CalibFile, read_calib, write_calib
from desgw.io.calib_cache import CalibCache

SHAPE = (40, 24)
DETPOS = {1: "S29", 35: "N4"}


@pytest.fixture(autouse=True)
def _fresh_index():
    fitsindex.clear_cache()
    yield
    fitsindex.clear_cache()


def _images(seed, kind="bias"):
    rng = np.random.default_rng(seed)
    if kind == "bpm":
        return {c: rng.integers(0, 40000, SHAPE).astype(np.uint16) for c in DETPOS}
    return {c: rng.normal(100.0, 3.0, SHAPE).astype(np.float32) for c in DETPOS}


def _write(path, kind, seed):
    imgs = _images(seed, kind)
    write_calib(path, kind, imgs, expected_shape=SHAPE, detpos=DETPOS)
    return imgs


def _decodes(monkeypatch):
    """Count the pixel decodes, by cfitsio (FitsIndex.read_image) or by desgw's RICE_1
    row-tile decoder (raw CCDs, desgw.io.rice.decode_int_tiles)."""
    from desgw.io import rice

    calls = []
    real = fitsindex.FitsIndex.read_image
    real_rice = rice.decode_int_tiles

    def counting(self, index):
        calls.append(index)
        return real(self, index)

    def counting_rice(*args, **kwargs):
        calls.append("rice")
        return real_rice(*args, **kwargs)

    monkeypatch.setattr(fitsindex.FitsIndex, "read_image", counting)
    monkeypatch.setattr(rice, "decode_int_tiles", counting_rice)
    return calls


@pytest.mark.parametrize("kind", ["bias", "flat", "bpm"])
def test_cached_plane_is_the_decoded_one_and_is_used(tmp_path, monkeypatch, kind):
    src = tmp_path / f"{kind}.fits.fz"
    imgs = _write(src, kind, 1)
    root = tmp_path / "cache"
    plain = read_calib(src, kind, 35, expected_shape=SHAPE)
    calls = _decodes(monkeypatch)
    first = read_calib(src, kind, 35, expected_shape=SHAPE, cache=root)
    assert len(calls) == 1  # decoded once, then kept
    files = list(root.rglob("*.npy"))
    assert [f.name for f in files] == ["ccd35.npy"]
    second = read_calib(src, kind, 35, expected_shape=SHAPE, cache=root)
    assert len(calls) == 1  # from the cache, no decode
    for got in (first, second):
        assert got.dtype == plain.dtype and got.shape == SHAPE
        np.testing.assert_array_equal(got, plain)  # bit for bit what the source decodes to
    if kind == "bpm":
        np.testing.assert_array_equal(second, imgs[35])
        assert second.dtype == np.uint16
    else:  # lossless GZIP_2 source
        np.testing.assert_array_equal(second, imgs[35])


def test_new_source_version_is_decoded_and_old_planes_removed(tmp_path):
    src = tmp_path / "flat_r.fits.fz"
    _write(src, "flat", 1)
    root = tmp_path / "cache"
    read_calib(src, "flat", 1, expected_shape=SHAPE, cache=root)
    old_dirs = {p.parent for p in root.rglob("*.npy")}
    new = _write(src, "flat", 2)  # replaced (atomic rename: another inode)
    got = read_calib(src, "flat", 1, expected_shape=SHAPE, cache=root)
    np.testing.assert_array_equal(got, new[1])
    now = {p.parent for p in root.rglob("*.npy")}
    assert len(now) == 1 and not (now & old_dirs)
    assert not any(d.exists() for d in old_dirs)


def test_source_changed_in_place_is_not_served_stale(tmp_path):
    src = tmp_path / "bias.fits.fz"
    imgs = _write(src, "bias", 1)
    root = tmp_path / "cache"
    read_calib(src, "bias", 1, expected_shape=SHAPE, cache=root)
    st = os.stat(src)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))  # same bytes, new mtime
    cache = CalibCache(root)
    key = fitsindex.file_key(src)
    assert not cache.plane_path(key, 1).exists()
    np.testing.assert_array_equal(read_calib(src, "bias", 1, expected_shape=SHAPE, cache=root),
                                  imgs[1])
    assert cache.plane_path(key, 1).exists()


def test_unusable_cache_files_are_replaced_by_a_decode(tmp_path, caplog):
    src = tmp_path / "bias.fits.fz"
    imgs = _write(src, "bias", 3)
    root = tmp_path / "cache"
    cache = CalibCache(root)
    key = fitsindex.file_key(src)
    read_calib(src, "bias", 1, expected_shape=SHAPE, cache=root)
    plane = cache.plane_path(key, 1)
    for damage in (lambda: plane.write_bytes(plane.read_bytes()[:200]),          # truncated
                   lambda: np.save(plane, np.zeros((4, 4), np.float32)),           # wrong shape
                   lambda: np.save(plane, np.zeros(SHAPE, np.float64))):          # wrong dtype
        damage()
        with caplog.at_level(logging.WARNING, logger="desgw.io.calib_cache"):
            caplog.clear()
            got = read_calib(src, "bias", 1, expected_shape=SHAPE, cache=root)
        np.testing.assert_array_equal(got, imgs[1])
        assert got.dtype == np.float32
        assert "removed" in caplog.text and str(plane) in caplog.text
        np.testing.assert_array_equal(np.load(plane), imgs[1])  # written again, whole


def test_truncated_source_is_reported_even_with_its_planes_cached(tmp_path):
    src = tmp_path / "bias.fits.fz"
    _write(src, "bias", 1)
    root = tmp_path / "cache"
    read_calib(src, "bias", 35, expected_shape=SHAPE, cache=root)
    data = src.read_bytes()
    src.write_bytes(data[: int(len(data) * 0.8)])
    with pytest.raises(CorruptFileError) as info:
        read_calib(src, "bias", 35, expected_shape=SHAPE, cache=root)
    assert str(src) in str(info.value) and "truncated" in str(info.value)


def test_uncompressed_source_and_unwritable_cache(tmp_path, caplog):
    plain = tmp_path / "bias.fits"
    imgs = _write(plain, "bias", 1)
    root = tmp_path / "cache"
    got = read_calib(plain, "bias", 1, expected_shape=SHAPE, cache=root)
    np.testing.assert_array_equal(got, imgs[1])
    assert not root.exists()  # an uncompressed plane reads as fast as a .npy: not copied
    src = tmp_path / "flat.fits.fz"
    flats = _write(src, "flat", 2)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="desgw.io.calib_cache"):
        with CalibFile(src, "flat", expected_shape=SHAPE, cache=blocked) as f:
            np.testing.assert_array_equal(f.read(35), flats[35])
    assert "cannot write" in caplog.text


# ----------------------------------------------------------------------------- raw CCDs
def _raw_file(path, seed=0, expnum=668439):
    from desgw.io.raw import write_raw_exposure
    from io_rawfactory import ccd_header, ccd_pixels, primary_header

    small = dict(nx=2 * (6 + 50) + 2 * 40, ny=60)
    items = []
    for k, (c, d) in enumerate(((5, "S25"), (1, "S29"))):
        h = ccd_header(c, d, **small)
        items.append((h, ccd_pixels(h, seed + k, **small)))
    write_raw_exposure(path, primary_header(expnum), items)
    return {5: items[0][1], 1: items[1][1]}


def test_raw_ccds_kept_for_the_next_task_bit_for_bit(tmp_path, monkeypatch):
    from desgw.io.raw import RawExposure

    src = tmp_path / "DECam_00668439.fits.fz"
    pix = _raw_file(src)
    cache = CalibCache(tmp_path / "raw", max_sources=2)
    with RawExposure(src) as raw:
        plain = raw.read_ccd(5)
    calls = _decodes(monkeypatch)
    with RawExposure(src, cache=cache) as raw:
        raw.read_ccd(1)                       # keep=False: decoded, not kept
        first = raw.read_ccd(5, keep=True)    # decoded and kept
    assert len(calls) == 2
    assert [p.name for p in (tmp_path / "raw").rglob("*.npy")] == ["ccd05.npy"]
    with RawExposure(src, cache=cache) as raw:  # another task of the exposure
        again = raw.read_ccd(5)
    assert len(calls) == 2  # from the cache
    for got in (first, again):
        np.testing.assert_array_equal(got.pixels, plain.pixels)
        np.testing.assert_array_equal(got.pixels, pix[5].astype(np.float32))
        assert got.amps["A"].gain == plain.amps["A"].gain and got.header == plain.header
    _raw_file(src, seed=9)  # replaced: decoded again, never the old pixels
    with RawExposure(src, cache=cache) as raw:
        new = raw.read_ccd(5, keep=True)
    assert len(calls) == 3 and not np.array_equal(new.pixels, plain.pixels)


def test_raw_cache_keeps_only_the_most_recent_files(tmp_path):
    from desgw.io.raw import RawExposure

    root = tmp_path / "raw"
    cache = CalibCache(root, max_sources=2)
    files = [tmp_path / f"DECam_0066843{k}.fits.fz" for k in range(3)]
    for k, f in enumerate(files):
        _raw_file(f, seed=k, expnum=668430 + k)
        with RawExposure(f, cache=cache) as raw:
            raw.read_ccd(5, keep=True)
        os.utime(next(root.glob(f"{f.name}-*")), ns=(k * 10**9, k * 10**9 + 1))  # ordered
    kept = sorted(p.name.split("-")[0] for p in root.iterdir())
    assert kept == [files[1].name, files[2].name]


def test_a_killed_writers_temporary_file_is_removed(tmp_path):
    src = tmp_path / "bias.fits.fz"
    _write(src, "bias", 1)
    root = tmp_path / "cache"
    read_calib(src, "bias", 1, expected_shape=SHAPE, cache=root)
    plane = CalibCache(root).plane_path(fitsindex.file_key(src), 35)
    # beside the version folders (which a new version removes anyway)
    stale = plane.parent.parent / ".ccd35.tmp4194303deadbeef.npy"  # no such process
    stale.write_bytes(b"half a plane")
    os.utime(stale, (1e9, 1e9))
    _write(src, "bias", 2)  # a new version: its first plane tidies the cache
    read_calib(src, "bias", 1, expected_shape=SHAPE, cache=root)
    assert not stale.exists()
    assert len(list(root.rglob("*.npy"))) == 1
