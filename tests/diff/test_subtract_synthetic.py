"""End-to-end subtraction on synthetic pairs with spatially varying Moffat PSFs, sky and Poisson
noise, for a template PSF narrower and broader than the search PSF."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from desgw.diff.detect import detect_transients
from desgw.diff.measure import measure_candidates
from desgw.diff.subtract import SubtractConfig, dilate_mask_bits, subtract
from desgw.diff.zogy_synth import MoffatPSFField, make_image_pair, star_residual_chi2
from desgw.se import maskbits

SHAPE = (1024, 1024)
CFG = SubtractConfig(tile=256, border=48)
CASES = {"template_narrower": (4.4, 3.1), "template_broader": (3.1, 4.6)}


def _psfs(fs: float, ft: float) -> tuple[MoffatPSFField, MoffatPSFField]:
    """PSFs varying over the 1024-px image by 0.2 px FWHM and 0.02 in ellipticity: on a
    4096-px DECam CCD that would be 0.8 px, more than DECam shows (tiles here are 256 px,
    so the within-tile variation matches a 512-px tile of a CCD varying by ~0.4 px)."""
    ps = MoffatPSFField(fs, dfwhm_dx=0.2 / 1024, dfwhm_dy=0.15 / 1024, e1=0.03,
                        de1_dx=0.02 / 1024, image_shape=SHAPE)
    pt = MoffatPSFField(ft, dfwhm_dx=-0.15 / 1024, dfwhm_dy=0.15 / 1024, e2=0.04,
                        de2_dy=-0.02 / 1024, image_shape=SHAPE)
    return ps, pt


def _run(ps, pt, seed: int, **kw) -> dict:
    pair = make_image_pair(SHAPE, ps, pt, seed=seed, **kw)
    mask = np.zeros(SHAPE, np.int32)
    inputs = (pair.search.copy(), pair.template.copy())
    sub = subtract(pair.search, pair.search_var, mask, ps, pair.template, pair.template_var,
                   mask, pt, zp_search=pair.zp_search, zp_template=pair.zp_template, config=CFG)
    det = detect_transients(sub, threshold_sigma=5.0)
    meas = measure_candidates(sub, det, search_image=pair.search, template_image=pair.template)
    return {"pair": pair, "sub": sub, "det": det, "meas": meas, "inputs": inputs}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    """Three independent images per case: stars in both, transients (SNR ~20-90) in the
    search only. Statistics pool the three (600 transients: the median pull then has a
    standard error of ~0.05)."""
    fs, ft = CASES[request.param]
    ps, pt = _psfs(fs, ft)
    runs = [_run(ps, pt, seed, n_stars=120, star_flux_range=(3e3, 3e5), n_transients=200,
                 transient_flux=(5e3, 2.5e4)) for seed in (7, 8, 9)]
    out = dict(runs[0])
    out["runs"] = runs
    out["fwhm"] = max(fs, ft)
    return out


def _blank_sky(pair, radius: float = 22.0) -> np.ndarray:
    shape = pair.search.shape
    pts = np.c_[np.r_[pair.star_x, pair.transient_x], np.r_[pair.star_y, pair.transient_y]]
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    d, _ = cKDTree(pts).query(np.c_[xx.ravel(), yy.ravel()])
    blank = d.reshape(shape) > radius
    blank[:25] = blank[-25:] = False
    blank[:, :25] = blank[:, -25:] = False
    return blank


def test_blank_sky_noise_matches_propagated_variance(case):
    sub, pair = case["sub"], case["pair"]
    blank = _blank_sky(pair)
    assert 0.95 < sub.score[blank].std() < 1.05
    ratio = sub.diff[blank].std() / np.sqrt(sub.diff_var[blank].mean())
    assert 0.95 < ratio < 1.05
    # per-tile too (the PSF and the filters change from tile to tile)
    for j in range(0, 1024, 256):
        for i in range(0, 1024, 256):
            b = blank[j:j + 256, i:i + 256]
            assert 0.9 < sub.score[j:j + 256, i:i + 256][b].std() < 1.1


def test_star_residuals_consistent_with_noise(case):
    sub, pair, fwhm = case["sub"], case["pair"], case["fwhm"]
    chi2 = star_residual_chi2(sub.diff, sub.diff_var, pair, fwhm)
    assert len(chi2) > 40
    assert np.mean(chi2) < 1.15
    assert np.percentile(chi2, 95) < 1.5
    # no detection at any star
    det = case["det"]
    d, _ = cKDTree(np.c_[pair.star_x, pair.star_y]).query(np.c_[det["x"], det["y"]])
    assert np.count_nonzero(d < 3) == 0


def _matched(run):
    pair, meas = run["pair"], run["meas"]
    d, i = cKDTree(np.c_[meas["x"], meas["y"]]).query(np.c_[pair.transient_x,
                                                              pair.transient_y])
    return d < 1.5, i


def test_transients_recovered_with_unbiased_flux_and_position(case):
    cols = {k: [] for k in ("flux", "flux_err", "flux_psf", "flux_psf_err", "snr", "dx", "dy",
                            "truth", "fwhm_ratio")}
    for run in case["runs"]:
        pair, meas = run["pair"], run["meas"]
        ok, idx = _matched(run)
        assert ok.all()  # all have SNR >~ 20
        assert len(meas) <= len(pair.transient_x) + 1  # at most one noise peak
        m = meas[idx]
        assert not np.any(m["negative"]) and not np.any(m["is_dipole"])
        for k in ("flux", "flux_err", "flux_psf", "flux_psf_err", "snr", "fwhm_ratio"):
            cols[k].append(np.asarray(m[k]))
        cols["dx"].append(np.asarray(m["x"]) - pair.transient_x)
        cols["dy"].append(np.asarray(m["y"]) - pair.transient_y)
        cols["truth"].append(pair.transient_flux)
    c = {k: np.concatenate(v) for k, v in cols.items()}
    pull = (c["flux"] - c["truth"]) / c["flux_err"]
    assert 0.9 < pull.std() < 1.1
    assert abs(np.median(pull)) < 0.1
    # the direct PSF fit on diff: unbiased; its error ignores D's pixel correlations
    pull_psf = (c["flux_psf"] - c["truth"]) / c["flux_psf_err"]
    assert 0.85 < pull_psf.std() < 1.3
    assert abs(np.median(pull_psf)) < 0.15
    # position noise ~ FWHM / (1.7 SNR) per axis: at SNR > 50 systematic errors would show
    bright = c["snr"] > 50
    assert bright.sum() > 100
    assert np.sqrt(np.mean(c["dx"][bright] ** 2)) < 0.1
    assert np.sqrt(np.mean(c["dy"][bright] ** 2)) < 0.1
    assert abs(c["dx"].mean()) < 0.02 and abs(c["dy"].mean()) < 0.02
    assert np.all(np.abs(c["fwhm_ratio"][bright] - 1) < 0.15)


def test_inputs_not_modified(case):
    pair = case["pair"]
    assert np.array_equal(case["inputs"][0], pair.search)
    assert np.array_equal(case["inputs"][1], pair.template)


def test_zero_point_scaling_matters():
    """A 5 % zero-point error leaves star residuals; the right one does not."""
    ps, pt = _psfs(3.5, 3.0)
    shape = (512, 512)
    ps = MoffatPSFField(3.5, image_shape=shape)
    pt = MoffatPSFField(3.0, image_shape=shape)
    pair = make_image_pair(shape, ps, pt, seed=8, n_stars=40, star_flux_range=(1e5, 3e5),
                           template_flux_ratio=2.5)
    m = np.zeros(shape, np.int32)
    cfg = SubtractConfig(tile=256, border=48)
    good = subtract(pair.search, pair.search_var, m, ps, pair.template, pair.template_var, m,
                    pt, zp_search=pair.zp_search, zp_template=pair.zp_template, config=cfg)
    assert good.meta["scale"] == pytest.approx(1 / 2.5)
    assert len(detect_transients(good)) == 0
    bad = subtract(pair.search, pair.search_var, m, ps, pair.template, pair.template_var, m,
                   pt, zp_search=pair.zp_search, zp_template=pair.zp_template + 0.05,
                   config=cfg)
    assert len(detect_transients(bad)) > 20


def test_masks_inpainted_without_ringing():
    shape = (768, 768)
    ps = MoffatPSFField(4.0, image_shape=shape)
    pt = MoffatPSFField(3.0, image_shape=shape)
    pair = make_image_pair(shape, ps, pt, seed=9, n_stars=60, star_flux_range=(3e3, 1e5),
                           n_transients=30, transient_flux=8e3)
    search = pair.search.copy()
    smask = np.zeros(shape, np.int32)
    tmask = np.zeros(shape, np.int32)
    # a bleed trail of garbage in the search, a saturated blob in the template,
    # no template coverage in a corner (variance 0)
    search[100:600, 400:404] = 6e4
    smask[100:600, 400:404] = maskbits.TRAIL
    tmp = pair.template.copy()
    tmp[300:320, 150:170] = 8e4
    tmask[300:320, 150:170] = maskbits.SAT
    tvar = pair.template_var.copy()
    tvar[650:, 650:] = 0.0
    sub = subtract(search, pair.search_var, smask, ps, tmp, tvar, tmask, pt,
                   zp_search=pair.zp_search, zp_template=pair.zp_template,
                   config=SubtractConfig(tile=256, border=48))
    r = sub.meta["dilate_radius"]
    assert r == int(np.ceil(sub.meta["fwhm_search"]))
    assert sub.meta["fwhm_search"] == pytest.approx(4.0, abs=0.2)
    # the trail is masked; it hides no source of the template, so it is not grown (subtract's
    # *Mask growth*), and the score right next to it is plain noise (checked below)
    assert np.all(sub.mask[100:600, 400:404] & maskbits.TRAIL)
    assert not np.any(sub.mask[:, :400 - r - 1] & maskbits.TRAIL)
    g = 1 if sub.meta["mask_growth"]["grown_source"] == 0 else r + 1
    assert np.all(sub.mask[300:320, 150:170] & maskbits.SAT)
    assert np.all(sub.mask[650:, 650:] & maskbits.EDGE)
    for a, fill in ((sub.diff, 0), (sub.score, 0), (sub.flux_image, 0),
                    (sub.diff_var, np.inf), (sub.flux_err_image, np.inf)):
        assert np.all(a[100:600, 400:404] == fill)
        assert np.all(a[650:, 650:] == fill)
    # just outside the grown mask the score is plain noise (no ringing)
    blank = _blank_sky(pair, 22.0)
    ring = np.zeros(shape, bool)
    ring[100:600, 400 - g - 12:400 - g] = True
    ring[100:600, 404 + g:404 + g + 12] = True
    ring &= blank
    assert 0.9 < sub.score[ring].std() < 1.1
    assert np.abs(sub.score[ring]).max() < 5
    det = detect_transients(sub)
    assert not np.any(sub.mask[det["y_peak"], det["x_peak"]] & (maskbits.UNUSABLE | maskbits.EDGE))
    d, _ = cKDTree(np.c_[pair.transient_x, pair.transient_y]).query(np.c_[det["x"], det["y"]])
    assert np.all(d < 1.5)


def test_dilate_mask_bits_per_bit():
    m = np.zeros((20, 20), np.int32)
    m[5, 5] = maskbits.SAT
    m[15, 15] = maskbits.CRAY | maskbits.INTERP
    out = dilate_mask_bits(m, maskbits.SAT | maskbits.CRAY, 2)
    assert np.all(out[3:8, 3:8] == maskbits.SAT)
    assert out[2, 5] == 0 and out[5, 8] == 0
    assert np.all(out[13:18, 13:18] & maskbits.CRAY)
    assert out[15, 15] & maskbits.INTERP and out[14, 15] & maskbits.INTERP == 0
    assert m.sum() == maskbits.SAT + maskbits.CRAY + maskbits.INTERP


def test_dilate_mask_bits_equals_a_box_maximum_per_bit():
    """Runs of equal bits (large masked areas, trails, edges) and isolated pixels: the grown
    mask equals each bit's (2r+1)-box maximum filter, OR-ed with the bits not grown."""
    from scipy import ndimage

    rng = np.random.default_rng(3)
    m = np.zeros((300, 200), np.int32)
    m[rng.random(m.shape) < 0.01] = maskbits.CRAY
    m[40:120, 10:90] |= maskbits.SAT
    m[100:180, 80:110] |= maskbits.BADPIX
    m[:, :25] |= maskbits.EDGE
    m[150:152, :] |= maskbits.TRAIL
    m[rng.random(m.shape) < 0.01] |= maskbits.INTERP          # not grown
    bits = maskbits.CRAY | maskbits.SAT | maskbits.BADPIX | maskbits.EDGE | maskbits.TRAIL
    for r in (1, 3, 6):
        out = dilate_mask_bits(m, bits, r)
        want = m.copy()
        for b in range(31):
            plane = (m & (1 << b)) != 0
            if (bits >> b) & 1 and plane.any():
                grown = ndimage.maximum_filter(plane.view(np.uint8), size=2 * r + 1,
                                               mode="constant").view(bool)
                want[grown] |= 1 << b
        np.testing.assert_array_equal(out, want)


def test_bad_input_raises():
    a = np.zeros((64, 64), np.float32)
    v = np.ones((64, 64), np.float32)
    m = np.zeros((64, 64), np.int32)
    psf = MoffatPSFField(3.0, image_shape=(64, 64), stamp=21)
    with pytest.raises(ValueError):
        subtract(a, v, m, psf, a[:32], v, m, psf, zp_search=30, zp_template=30)
    with pytest.raises(ValueError):
        SubtractConfig(search_gain=0)
