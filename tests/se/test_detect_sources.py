"""detect_sources: completeness near the limit, segmentation map, masks, windowed centroids."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from desgw.errors import DataTypeError
from desgw.se import maskbits
from desgw.se.detect import DetectConfig, detect_sources, gaussian_kernel
from test_psf_synth import make_field


def _limit_mag(fwhm, sky, read_noise):
    """Magnitude (zp 30) of a star one magnitude brighter than the 5-sigma PSF-fit limit."""
    import galsim
    p = galsim.Moffat(beta=3.0, fwhm=fwhm).drawImage(nx=61, ny=61, scale=1.0).array
    sigma_flux = np.sqrt(sky + read_noise ** 2) / np.sqrt((p ** 2).sum())
    return 30 - 2.5 * np.log10(5 * sigma_flux) - 1.0


@pytest.mark.parametrize("fwhm, config", [
    (3.0, DetectConfig(filter_fwhm=3.0)),
    (3.8, DetectConfig(filter_fwhm=3.8)),
    (4.5, DetectConfig(filter_fwhm=4.5, thresh_type="filtered", thresh_sigma=5.0)),
    (7.6, DetectConfig(filter_fwhm=7.6, thresh_type="filtered", thresh_sigma=5.0)),
], ids=["fwhm3-pixel1.5", "fwhm3.8-pixel1.5", "fwhm4.5-filtered5", "fwhm7.6-filtered5"])
def test_completeness_one_mag_above_limit(fwhm, config):
    mag = _limit_mag(fwhm, 1200.0, 7.0)
    f = make_field(shape=(1024, 1024), n_stars=300, n_gal=0, fwhm0=fwhm, gx=0.0, gy=0.0,
                   mag_range=(mag, mag + 1e-6), seed=4, n_masked_stars=0)
    det = detect_sources(f.image - f.sky, 1.0 / np.sqrt(np.where(f.weight > 0, f.weight, 1)), f.mask,
                         config=config)
    c = det.catalog
    tree = cKDTree(np.column_stack([c["xwin"], c["ywin"]]))
    d, _ = tree.query(np.column_stack([f.stars["x"], f.stars["y"]]))
    usable = ~f.stars["masked"]
    completeness = np.mean(d[usable] < 1.5)
    assert completeness >= 0.98, completeness
    # Few spurious detections at 1.5 sigma with a matched filter.
    d2, _ = cKDTree(np.column_stack([f.stars["x"], f.stars["y"]])).query(
        np.column_stack([c["xwin"], c["ywin"]]))
    assert np.sum(d2 > 3) < 0.05 * len(f.stars["x"])


def test_segmentation_and_catalog_consistent():
    f = make_field(shape=(1024, 1024), n_stars=150, n_gal=30, seed=6)
    det = detect_sources(f.image - f.sky, np.sqrt(f.sky + 49.0), f.mask,
                         config=DetectConfig(filter_fwhm=4.0))
    c = det.catalog
    seg = det.segmap
    assert seg.dtype == np.int32 and seg.shape == f.image.shape
    assert np.array_equal(c["number"], np.arange(1, len(c) + 1))
    assert np.all(seg[c["ypeak"], c["xpeak"]] == c["number"])
    # Masked pixels (bad columns, cosmic rays with garbage values) are never detected.
    assert np.all(seg[(f.mask & maskbits.UNUSABLE) != 0] == 0)
    ids, counts = np.unique(seg[seg > 0], return_counts=True)
    assert np.array_equal(ids, c["number"])
    assert np.all(counts >= 5)  # minarea
    assert np.all((c["xmin"] <= c["x"]) & (c["x"] <= c["xmax"]))
    # Windowed centroids of bright stars are far better than barycentres... and < 0.02 pix.
    tree = cKDTree(np.column_stack([c["xwin"], c["ywin"]]))
    d, i = tree.query(np.column_stack([f.stars["x"], f.stars["y"]]))
    bright = (f.stars["mag"] < 18.5) & f.stars["isolated"] & ~f.stars["masked"] & (d < 1)
    assert bright.sum() > 20
    assert np.sqrt(np.mean(d[bright] ** 2)) < 0.02
    assert np.all(c["win_flag"][i[bright]] == 0)
    assert np.all(c["flux_radius"][i[bright]] > 1.0)


def test_pixel_threshold_loses_depth_in_wide_seeing():
    """The documented SExtractor behaviour: at FWHM 7.6 pix a 1.5 pixel-sigma threshold misses
    stars that a 5 filtered-sigma threshold finds."""
    mag = _limit_mag(7.6, 1200.0, 7.0)
    f = make_field(shape=(1024, 1024), n_stars=300, n_gal=0, fwhm0=7.6, gx=0.0, gy=0.0,
                   mag_range=(mag, mag + 1e-6), seed=4, n_masked_stars=0)
    det = detect_sources(f.image - f.sky, np.sqrt(f.sky + 49.0), f.mask,
                         config=DetectConfig(filter_fwhm=7.6))
    assert len(det.catalog) < 0.5 * len(f.stars["x"])


def test_variance_input_and_constant_noise_agree():
    f = make_field(shape=(512, 512), n_stars=40, n_gal=5, seed=8)
    rms = np.sqrt(f.sky + 49.0).astype(np.float32)
    a = detect_sources(f.image - f.sky, rms, f.mask)
    b = detect_sources(f.image - f.sky, rms ** 2, f.mask, noise_type="variance")
    assert len(a.catalog) == len(b.catalog)
    np.testing.assert_allclose(a.catalog["xwin"], b.catalog["xwin"], atol=1e-4)
    # Zero-weight (infinite variance) pixels are treated as masked.
    var = (rms ** 2).copy()
    var[:, 100] = np.inf
    c = detect_sources(f.image - f.sky, var, None, noise_type="variance")
    assert np.all(c.segmap[:, 100] == 0)


def test_weight_input_is_its_variance():
    """``noise_type="weight"`` detects exactly what the variance ``1 / weight`` does: zero and
    non-finite weights excluded like masked pixels, the rest bit for bit."""
    f = make_field(shape=(512, 512), n_stars=60, n_gal=10, seed=9)
    rng = np.random.default_rng(2)
    weight = (1.0 / (f.sky + 49.0) * rng.uniform(0.8, 1.2, f.image.shape)).astype(np.float32)
    weight[:, 200] = 0.0
    weight[300, 100:140] = np.nan
    with np.errstate(divide="ignore"):
        var = np.where(weight > 0, 1.0 / weight, np.inf).astype(np.float32)
    a = detect_sources(f.image - f.sky, var, f.mask, noise_type="variance")
    b = detect_sources(f.image - f.sky, weight, f.mask, noise_type="weight")
    assert len(a.catalog) > 40
    assert np.array_equal(a.segmap, b.segmap)
    for name in a.catalog.colnames:
        assert np.array_equal(a.catalog[name], b.catalog[name]), name
    assert np.all(b.segmap[:, 200] == 0) and np.all(b.segmap[300, 100:140] == 0)
    # a constant weight is the constant variance's inverse
    w0 = np.float32(1.0 / (np.median(f.sky) + 49.0))
    c = detect_sources(f.image - f.sky, w0, f.mask, noise_type="weight")
    d = detect_sources(f.image - f.sky, np.float32(1.0) / w0, f.mask, noise_type="variance")
    assert len(c.catalog) == len(d.catalog) > 40


def test_bad_input():
    with pytest.raises(DataTypeError):
        detect_sources(np.zeros((10, 10, 2)), 1.0)
    with pytest.raises(DataTypeError):
        detect_sources(np.zeros((10, 10)), np.ones((5, 5)))
    with pytest.raises(DataTypeError):
        detect_sources(np.zeros((10, 10)), 1.0, np.zeros((3, 3), np.int32))
    with pytest.raises(ValueError):
        DetectConfig(thresh_sigma=0)
    with pytest.raises(ValueError):
        DetectConfig(thresh_type="peak")
    with pytest.raises(ValueError):
        detect_sources(np.zeros((10, 10)), 1.0, noise_type="sigma")


def test_gaussian_kernel():
    k = gaussian_kernel(4.0)
    assert k.shape == (7, 7) and k.sum() == pytest.approx(1.0)
    assert gaussian_kernel(7.6).shape == (13, 13)
    assert gaussian_kernel(10.0).shape == (15, 15)
    assert gaussian_kernel(3.0).shape == (7, 7)


def test_window_min_snr_centroids_only_bright_detections():
    """``window_min_snr``: the bright detections get the same windowed centroids and radii as
    with every detection measured, the faint ones their barycentre, NaN radius, win_flag 1;
    the PSF candidates (which need S/N >= 50) are the same."""
    from desgw.se.psf import select_psf_candidates

    f = make_field(shape=(1024, 1024), n_stars=300, n_gal=40, seed=12)
    args = (f.image - f.sky, np.sqrt(f.sky + 49.0), f.mask)
    full = detect_sources(*args, config=DetectConfig(filter_fwhm=4.0))
    part = detect_sources(*args, config=DetectConfig(filter_fwhm=4.0, window_min_snr=50.0))
    a, b = full.catalog, part.catalog
    assert np.array_equal(full.segmap, part.segmap) and len(a) == len(b)
    snr = (np.asarray(a["flux_iso"], np.float64)
           / (np.asarray(a["thresh"], np.float64) / 1.5 * np.sqrt(np.asarray(a["npix"]))))
    bright = snr >= 50.0
    assert 20 < bright.sum() < 0.8 * len(a)
    for name in ("xwin", "ywin", "flux_radius", "win_flag"):
        assert np.array_equal(a[name][bright], b[name][bright]), name
    assert np.array_equal(b["xwin"][~bright], b["x"][~bright])
    assert np.all(np.isnan(b["flux_radius"][~bright])) and np.all(b["win_flag"][~bright] == 1)
    assert np.array_equal(select_psf_candidates(full), select_psf_candidates(part))


@pytest.mark.parametrize("fwhm", [3.0, 5.5])
def test_first_pass_without_deblending_same_seeing_and_footprints(fwhm):
    """process_ccd's first pass (seeing and object mask) runs without deblending or cleaning:
    on a crowded field with blends the seeing is the deblended pass's within 1 % (and the
    truth's within 3 %), and the footprints are the same pixels plus < 1 %."""
    from desgw.se.process import SEConfig, first_pass_config
    from desgw.se.process_steps import estimate_seeing

    f = make_field(shape=(768, 768), n_stars=500, n_gal=30, fwhm0=fwhm, gx=0.0, gy=0.0,
                   min_sep=4.0, mag_range=(16.0, 22.0), seed=31, n_masked_stars=0)
    sub = f.image - f.sky
    rms = np.sqrt(f.sky + 49.0)
    cheap, full = (detect_sources(sub, rms, f.mask, config=first_pass_config(cfg))
                   for cfg in (SEConfig(), SEConfig(first_pass_deblend=True)))
    assert full.config.deblend_nthresh == 32 and cheap.config.deblend_nthresh == 1
    assert len(full.catalog) > 330
    s_cheap = estimate_seeing(cheap, sub, max_peak=None)
    s_full = estimate_seeing(full, sub, max_peak=None)
    assert s_cheap.n_stars >= 30 and s_full.n_stars >= 30
    assert s_cheap.fwhm_px == pytest.approx(s_full.fwhm_px, rel=0.01)
    assert s_cheap.fwhm_px == pytest.approx(fwhm, rel=0.03)
    a, b = full.segmap > 0, cheap.segmap > 0
    assert not np.any(a & ~b)
    assert np.count_nonzero(b & ~a) < 0.01 * a.sum()


@pytest.mark.parametrize("config", [DetectConfig(filter_fwhm=4.0),  # deblended and cleaned
                                    DetectConfig(filter_fwhm=4.0, deblend_nthresh=1,
                                                 clean=False)])
def test_segment_pixels_are_the_segments(config):
    from desgw.se.process_steps import segment_pixels

    f = make_field(shape=(512, 512), n_stars=120, n_gal=40, seed=6)
    det = detect_sources(f.image - f.sky, np.sqrt(f.sky + 49.0), f.mask, config=config)
    n = len(det.catalog)
    assert n > 100 and np.any(det.catalog["sep_flag"] & 1) == (config.deblend_nthresh > 1)
    rng = np.random.default_rng(3)
    for ids in (np.arange(1, n + 1), rng.choice(np.arange(1, n + 1), 7, replace=False),
                np.array([n + 5], dtype=np.int64), np.zeros(0, dtype=np.int64)):
        rows, cols = segment_pixels(det, ids)
        got = np.zeros(det.segmap.shape, bool)
        got[rows, cols] = True
        assert rows.size == got.sum()  # no pixel twice
        np.testing.assert_array_equal(got, np.isin(det.segmap, ids))


def test_pixel_buffer_grows_when_full(monkeypatch):
    """A footprint larger than the first pixel buffer: sep's "buffer full" is retried with a
    larger buffer and gives the same detections as a buffer big enough from the start; past
    the largest buffer sep's error propagates."""
    import desgw.se.detect as detect_mod

    rng = np.random.default_rng(12)
    img = rng.normal(0.0, 10.0, (600, 600)).astype(np.float32)
    yy, xx = np.mgrid[:600, :600]
    img += (2e4 * np.exp(-0.5 * ((xx - 300.0) ** 2 + (yy - 280.0) ** 2) / 60.0 ** 2)
            ).astype(np.float32)  # ~40,000 pixels above threshold in one object
    img[50:60, 50:60] += 300.0
    cfg = DetectConfig(filter_fwhm=3.0)
    ref = detect_sources(img, 10.0, config=cfg)
    big = ref.catalog["npix"].max()
    assert big > 20_000
    monkeypatch.setattr(detect_mod, "_PIXSTACK_START", 1_000)
    got = detect_sources(img, 10.0, config=cfg)
    assert np.array_equal(got.segmap, ref.segmap)
    assert np.array_equal(np.asarray(got.catalog["flux_iso"]), np.asarray(ref.catalog["flux_iso"]))
    monkeypatch.setattr(detect_mod, "_PIXSTACK_MAX", 10_000)
    with pytest.raises(Exception, match="pixel buffer full"):
        detect_sources(img, 10.0, config=cfg)


@pytest.mark.parametrize("kind, beta", [("moffat", 2.5), ("moffat", 5.0), ("kolmogorov", 3.0)])
def test_prefilter_detects_what_sep_filter_detects(kind, beta):
    """The filter applied before sep (DetectConfig.prefilter, the default) against sep's own
    2-D filter, with the production rule (S/N 5, deblending) on stars near the limit and
    galaxies: the same detections and footprints (a few faint pixels of blends may change
    owner), the isophotal fluxes and peaks to float32 rounding, positions to 1e-4 px, and
    the same truth completeness."""
    from dataclasses import replace

    from desgw.se.process_steps import detect_config_for_seeing

    fwhm = 4.2
    f = make_field(shape=(1024, 1024), n_stars=400, n_gal=60, fwhm0=fwhm, beta=beta,
                   kind=kind, mag_range=(20.5, 23.5), seed=12, min_sep=14.0)
    cfg = detect_config_for_seeing(DetectConfig(), fwhm)
    assert cfg.prefilter and cfg.thresh_type == "pixel" and cfg.deblend_nthresh > 1
    noise = 1.0 / np.sqrt(np.where(f.weight > 0, f.weight, 1.0))
    new = detect_sources(f.image - f.sky, noise, f.mask, config=cfg)
    old = detect_sources(f.image - f.sky, noise, f.mask, config=replace(cfg, prefilter=False))
    a, b = old.catalog, new.catalog
    assert len(a) == len(b) > 250
    moved = np.sum(old.segmap != new.segmap)
    assert moved <= 20, moved
    same = np.array([np.array_equal(old.segmap[r["ymin"]:r["ymax"] + 1, r["xmin"]:r["xmax"] + 1]
                                    == r["number"],
                                    new.segmap[r["ymin"]:r["ymax"] + 1, r["xmin"]:r["xmax"] + 1]
                                    == r["number"]) for r in a])
    assert same.mean() > 0.98
    np.testing.assert_allclose(b["flux_iso"][same], a["flux_iso"][same], rtol=1e-6)
    assert np.array_equal(b["peak"][same], a["peak"][same])
    assert np.array_equal(b["npix"][same], a["npix"][same])
    for key in ("x", "y", "xwin", "ywin"):
        np.testing.assert_allclose(b[key][same], a[key][same], atol=1e-4)
    # truth: completeness of the stars and the centroid errors are the same
    truth = np.column_stack([f.stars["x"], f.stars["y"]])
    usable = ~f.stars["masked"]
    found = []
    for c in (a, b):
        d, _ = cKDTree(np.column_stack([c["xwin"], c["ywin"]])).query(truth)
        found.append(d[usable] < 1.5)
    assert 0.2 < found[0].mean() < 0.98  # the magnitudes span the limit
    assert abs(int(found[0].sum()) - int(found[1].sum())) <= 1
