"""The prepared template file (desgw.io.prepared_template) and its loader
(desgw.diff.pipeline_products.load_template_products): the same sky-subtracted pixels as the
per-search computation to within the quantisation, partial reads, and a stale file (template
reprocessed, other settings, other r{R}p{P}) never used."""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import replace

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from desgw.diff.pipeline_products import (
    load_template_products,
    prepare_template_from_memory,
    template_settings_hash,
)
from desgw.diff.pipeline_steps import subtract_sky
from desgw.diff.pipeline_types import DiffConfig
from desgw.io.prepared_template import (
    _read_meta,
    prepared_path,
    read_prepared,
    source_stamp,
    write_prepared,
)
from desgw.io.products import immask_sci_header, read_immask, write_immask

SHAPE = (700, 300)
SIGMA = 15.0


def _wcs():
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [40.0, -10.0]
    w.wcs.crpix = [150.0, 350.0]
    w.wcs.cd = [[-7.3e-5, 0], [0, 7.3e-5]]
    return w


def _immask(path, seed=0, sky=800.0):
    img, msk, wgt, hdr = _planes(seed, sky)
    write_immask(path, img, msk, wgt, hdr, _wcs())
    return path


def _planes(seed=0, sky=800.0):
    rng = np.random.default_rng(seed)
    ny, nx = SHAPE
    yy, xx = np.mgrid[:ny, :nx]
    img = sky + 0.05 * yy + 0.1 * xx + rng.normal(0, SIGMA, SHAPE)
    for _ in range(40):
        x, y, f = rng.uniform(10, nx - 10), rng.uniform(10, ny - 10), 10 ** rng.uniform(3, 5.5)
        img += f * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.6**2)) / (2 * np.pi * 1.6**2)
    msk = np.zeros(SHAPE, np.int32)
    msk[rng.random(SHAPE) < 0.005] = 16
    msk[:, 100] = 1
    wgt = np.full(SHAPE, 1 / SIGMA**2, np.float32) * (1 + 0.1 * xx / nx).astype(np.float32)
    wgt[msk != 0] = 0
    hdr = fits.Header({"EXPNUM": 700001, "CCDNUM": 5, "BAND": "r", "MAGZERO": 31.5,
                       "EXPTIME": 90.0, "PSFAPCOR": 1.05})
    return img.astype(np.float32), msk, wgt, hdr


def _load(path, **kw):
    return load_template_products(path, psfmodel=path.with_name("none_psfmodel.fits"), **kw)


def test_prepared_equals_sky_subtracted_immask_and_is_reused(tmp_path):
    path = _immask(tmp_path / "D00700001_r_05_r1p1_immask.fits.fz")
    cfg = DiffConfig()
    t = _load(path, band="r", expnum=700001, ccdnum=5, config=cfg)
    prep = prepared_path(path, template_settings_hash(cfg))
    assert prep.is_file() and prep.name.startswith("D00700001_r_05_r1p1_tmplprep-")
    assert t.sky_subtracted and t.zp == 31.5 and t.psf_apcor == 1.05 and t.expnum == 700001
    im = read_immask(path)
    sub = subtract_sky(im.sci, im.msk, cfg)[0]
    step = SIGMA / 16 / np.sqrt(1.05)          # sigma of the median weight / 16
    d = t.image - sub
    assert np.max(np.abs(d)) <= step / 2 * 1.01 and abs(d.mean()) < 0.01 * step
    np.testing.assert_array_equal(t.mask, im.msk)
    good = im.wgt > 0
    assert np.all(t.weight[~good] == 0)
    assert np.max(np.abs(t.weight[good] / im.wgt[good] - 1)) <= 1 / 2048 * 1.001
    # the sky is gone (the immask has ~800 e- of it)
    assert abs(np.median(t.image[good])) < 0.2 * SIGMA
    # a second load reads the file, it does not make it again
    mtime = prep.stat().st_mtime_ns
    t2 = _load(path, config=cfg)
    assert prep.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(t2.image, t.image)


def test_prepared_from_memory_equals_prepared_from_the_immask(tmp_path):
    img, msk, wgt, hdr = _planes()
    path = tmp_path / "D00700001_r_05_r1p1_immask.fits.fz"
    write_immask(path, img, msk, wgt, hdr, _wcs())
    cfg = DiffConfig()
    made = prepare_template_from_memory(path, img, msk, wgt, immask_sci_header(hdr, _wcs()),
                                        config=cfg)
    assert made == prepared_path(path, template_settings_hash(cfg))
    mtime = made.stat().st_mtime_ns
    mem = _load(path, band="r", expnum=700001, ccdnum=5, config=cfg)
    assert made.stat().st_mtime_ns == mtime  # its key matches the immask: used, not remade
    made.unlink()
    disk = _load(path, band="r", expnum=700001, ccdnum=5, config=cfg)  # from the immask
    assert made.is_file()
    np.testing.assert_array_equal(mem.mask, disk.mask)
    assert (mem.zp, mem.exptime, mem.psf_apcor) == (disk.zp, disk.exptime, disk.psf_apcor)
    assert mem.zp == 31.5 and mem.sky_subtracted
    for x, y in ((0.0, 0.0), (299.0, 699.0), (150.5, 20.25)):
        np.testing.assert_allclose(mem.wcs.pixel_to_world_values(x, y),
                                   disk.wcs.pixel_to_world_values(x, y), rtol=0, atol=1e-12)
    step = SIGMA / 16 / np.sqrt(1.05)          # sigma of the median weight / 16
    good = disk.weight > 0
    np.testing.assert_array_equal(mem.weight > 0, good)
    # the in-memory planes are quantised once (the prepared file's step), not twice
    sub = subtract_sky(img, msk, cfg)[0]
    assert np.max(np.abs(mem.image - sub)) <= step / 2 * 1.01
    assert np.max(np.abs(mem.weight[good] / wgt[good] - 1)) <= 1 / 2048 * 1.001
    # and agree with the immask's preparation to within the immask's own quantisation
    d = (mem.image - disk.image)[good]
    assert abs(d.mean()) < 0.02 * step and d.std() < 0.55 * step
    assert np.max(np.abs(mem.weight[good] / disk.weight[good] - 1)) <= 2 / 1024


def test_partial_read_matches_whole(tmp_path):
    path = _immask(tmp_path / "D00700001_r_05_r1p1_immask.fits.fz")
    whole = _load(path)
    # rows across block borders (256-row blocks), a column range
    part = _load(path, crop=lambda w, shape: (slice(200, 530), slice(40, 260)))
    assert part.shape == (330, 220)
    np.testing.assert_array_equal(part.image, whole.image[200:530, 40:260])
    np.testing.assert_array_equal(part.mask, whole.mask[200:530, 40:260])
    np.testing.assert_array_equal(part.weight, whole.weight[200:530, 40:260])
    assert np.allclose(part.wcs.pixel_to_world_values(3.0, 4.0),
                       whole.wcs.pixel_to_world_values(43.0, 204.0), atol=1e-12, rtol=0)


def test_stale_file_never_used(tmp_path):
    path = _immask(tmp_path / "D00700001_r_05_r1p1_immask.fits.fz")
    cfg = DiffConfig()
    first = _load(path, config=cfg)
    key = template_settings_hash(cfg)
    prep = prepared_path(path, key)
    # the template is reprocessed: other pixels (here, other stars and sky)
    _immask(path, seed=5, sky=300.0)
    assert read_prepared(prep, source=source_stamp(path), settings_hash=key) is None
    again = _load(path, config=cfg)
    fresh = subtract_sky(read_immask(path).sci, read_immask(path).msk, cfg)[0]
    assert np.max(np.abs(again.image - fresh)) < SIGMA / 16
    assert np.max(np.abs(again.image - first.image)) > 10 * SIGMA
    # other sky settings: another key (and file); the old one is not read with the new key
    other = replace(cfg, object_sigma=cfg.object_sigma + 1.0)
    assert template_settings_hash(other) != key
    assert read_prepared(prep, source=source_stamp(path),
                         settings_hash=template_settings_hash(other)) is None
    _load(path, config=other)
    assert prepared_path(path, template_settings_hash(other)).is_file()
    # another processing version (r1p2): a prepared file copied under its name is not used
    r1p2 = tmp_path / "D00700001_r_05_r1p2_immask.fits.fz"
    os.link(path, r1p2)                          # same bytes, other name
    prep2 = prepared_path(r1p2, key)
    prep2.write_bytes(prep.read_bytes())
    assert read_prepared(prep2, source=source_stamp(r1p2), settings_hash=key) is None


def test_corrupt_or_foreign_prepared_file_is_made_again(tmp_path, caplog):
    path = _immask(tmp_path / "D00700001_r_05_r1p1_immask.fits.fz")
    good = _load(path)
    prep = prepared_path(path, template_settings_hash(DiffConfig()))
    data = prep.read_bytes()
    prep.write_bytes(data[: len(data) // 2])     # truncated
    again = _load(path)
    np.testing.assert_array_equal(again.image, good.image)
    assert "preparing the template CCD again" in caplog.text
    prep.write_bytes(b"SIMPLE  = T" + b" " * 3000)  # not ours at all
    np.testing.assert_array_equal(_load(path).image, good.image)


def test_concurrent_preparation_is_safe_and_done_once(tmp_path, monkeypatch):
    import desgw.io.prepared_template as mod

    path = _immask(tmp_path / "D00700001_r_05_r1p1_immask.fits.fz")
    writes = []
    real_write = mod.write_prepared

    def counting_write(*a, **k):
        writes.append(1)
        return real_write(*a, **k)
    monkeypatch.setattr(mod, "write_prepared", counting_write)
    out: list = []
    threads = [threading.Thread(target=lambda: out.append(_load(path))) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(out) == 3
    for t in out[1:]:
        np.testing.assert_array_equal(t.image, out[0].image)
    assert len(writes) == 1                      # the others waited on the lock and read it
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []  # no temp left
    np.testing.assert_array_equal(_load(path).image, out[0].image)
    # without the lock (e.g. a file system without flock) concurrent writers stay safe
    monkeypatch.setattr(mod, "preparation_lock", lambda p, **k: contextlib.nullcontext(False))
    prepared_path(path, template_settings_hash(DiffConfig())).unlink()
    out.clear()
    threads = [threading.Thread(target=lambda: out.append(_load(path))) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for t in out:
        np.testing.assert_array_equal(t.image, out[0].image)
    np.testing.assert_array_equal(_load(path).image, out[0].image)


def test_read_only_folder_still_works(tmp_path, monkeypatch):
    path = _immask(tmp_path / "D00700001_r_05_r1p1_immask.fits.fz")

    def refuse(*a, **k):
        raise PermissionError("read-only")
    monkeypatch.setattr("desgw.io.prepared_template.write_prepared", refuse)
    t = _load(path, crop=lambda w, shape: (slice(10, 90), slice(0, 50)))
    im = read_immask(path)
    sub = subtract_sky(im.sci, im.msk, DiffConfig())[0]
    np.testing.assert_array_equal(t.image, sub[10:90, 0:50])
    assert t.sky_subtracted and not prepared_path(path, template_settings_hash(
        DiffConfig())).exists()


def test_write_prepared_errors(tmp_path):
    a = np.zeros((4, 4), np.float32)
    with pytest.raises(Exception, match="one shape"):
        write_prepared(tmp_path / "x.dgt", a, np.zeros((4, 3), np.int32), a, None,
                       source={}, settings_hash="k")
    with pytest.raises(Exception, match="integer"):
        write_prepared(tmp_path / "x.dgt", a, a, a, None, source={}, settings_hash="k")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("n_bright", [0, 37, 3000])
def test_int16_plane_with_bright_pixels_apart_reads_exactly(tmp_path, n_bright):
    """SCI integers beyond int16 (bright star cores) are stored apart and written back:
    whole and partial reads give rint(image / step) * step exactly, whichever layout the
    writer chose (int16 with 37 pixels apart; int32 when 3000 of 12000 pixels, > 1 %,
    would be)."""
    rng = np.random.default_rng(n_bright)
    shape = (600, 20)
    img = rng.normal(0, SIGMA, shape).astype(np.float32)
    wgt = np.full(shape, 1 / SIGMA**2, np.float32)
    flat = rng.choice(img.size, n_bright, replace=False)
    img.ravel()[flat] = rng.choice([-1, 1], n_bright) * rng.uniform(4e4, 3e6, n_bright)
    img[599, 19] = 5e5                        # the last pixel of the plane
    msk = np.zeros(shape, np.int32)
    path = write_prepared(tmp_path / "x.dgt", img, msk, wgt, fits.Header(), source={"a": 1},
                          settings_hash="k")
    got = read_prepared(path, source={"a": 1}, settings_hash="k")
    with open(path, "rb") as fh:
        info = _read_meta(fh, path)[0]["planes"]["SCI"]
    step = np.float32(info["step"])
    assert abs(step / (SIGMA / 16) - 1) < 0.03  # the image's noise, not the bright pixels
    want = np.rint(img / step).astype(np.float64) * np.float64(step)
    np.testing.assert_array_equal(got.image, want.astype(np.float32))
    assert info["dtype"] == ("<i4" if n_bright == 3000 else "<i2")
    assert ("overflow" in info) == (n_bright != 3000)
    if n_bright != 3000:
        assert info["overflow"][2] == n_bright + 1
    part = read_prepared(path, source={"a": 1}, settings_hash="k",
                         crop=lambda w, s: (slice(250, 600), slice(3, 20)))
    np.testing.assert_array_equal(part.image, got.image[250:600, 3:20])
    np.testing.assert_array_equal(part.weight, got.weight[250:600, 3:20])
