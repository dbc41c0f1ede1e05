"""The difference's propagated noise on a crowded field (issue 13: the crowded night's blank-sky
noise over sigma was 0.95): SE rescales its model weight to the sky noise it measures outside
the detected objects, and on a crowded field that scatter holds the static light of the
undetected sources, which the subtraction removes. The difference imaging uses the model
weight (``DiffConfig.model_weights``, ``CCDProducts.weight_scale``).

Truth: a search and a twice-as-deep template of one static field, Moffat beta 2.5 PSFs of
different seeing: 300 listed stars and 300,000 unresolved ones (23.8-25.2 mag at zeropoint
30, ~0.15 per pixel: a confusion scatter of ~10 % of the sky variance), Poisson sky and
read noise; SE's weight rescale (:func:`desgw.se.process_steps.weight_rescale_factor`, outside
sep's detections) measured on each. Blank sky: far from every listed star
(:func:`desgw.sim.accuracy.blank_sky`).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import sep
from astropy.table import Table
from scipy.signal import fftconvolve

from desgw.diff.pipeline import CCDProducts, DiffConfig, difference_ccd
from desgw.diff.pipeline_steps import model_weight
from desgw.diff.register import RegistrationConfig
from desgw.diff.zogy_synth import MoffatPSFField
from desgw.se.process_steps import weight_rescale_factor
from desgw.sim.accuracy import blank_sky

sys.path.insert(0, str(Path(__file__).parent))
from test_register import tan_wcs

SHAPE = (1536, 1024)
ZP = 30.0
READ_NOISE = 10.0  # e-


def _robust_sigma(a: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(a - np.median(a))))


def _observe(rng, psf: MoffatPSFField, deltas: np.ndarray, sky: float):
    """Noisy image (e-), SE's rescaled weight and its rescale factor."""
    model = fftconvolve(deltas, psf.render(0.0, 0.0, size=121), mode="same")
    model = np.clip(model, 0.0, None).astype(np.float32)
    img = (rng.poisson(model + sky) + rng.normal(0.0, READ_NOISE, SHAPE)).astype(np.float32)
    # SE's model weight: its smooth sky (the median holds the unresolved light) and read noise
    level = float(np.median(img))
    w = np.full(SHAPE, 1.0 / (level + READ_NOISE ** 2), np.float32)
    bkg = sep.Background(img)
    _, seg = sep.extract(img - bkg.back(), 1.5, err=bkg.globalrms, minarea=5,
                         segmentation_map=True)
    f = weight_rescale_factor(img - np.float32(level), w, np.zeros(SHAPE, np.int32), seg)
    return img, w / np.float32(f), f


@pytest.fixture(scope="module")
def crowded():
    rng = np.random.default_rng(13)
    ny, nx = SHAPE
    # listed stars: 2e3-1e6 e- (mag 15-21.7); unresolved: 80-300 e- (mag 23.8-25.2)
    n_list, n_faint = 300, 300_000
    xl, yl = rng.integers(0, nx, n_list), rng.integers(0, ny, n_list)
    fl = np.exp(rng.uniform(np.log(2e3), np.log(1e6), n_list))
    xf, yf = rng.integers(0, nx, n_faint), rng.integers(0, ny, n_faint)
    ff = rng.uniform(80.0, 300.0, n_faint)
    deltas = np.zeros(SHAPE)
    np.add.at(deltas, (yl, xl), fl)
    np.add.at(deltas, (yf, xf), ff)
    psf_s = MoffatPSFField(4.6, beta=2.5, image_shape=SHAPE, stamp=61)
    psf_t = MoffatPSFField(3.6, beta=2.5, image_shape=SHAPE, stamp=61)
    ratio = 2.0  # template e- per search e-
    s_img, s_w, s_f = _observe(rng, psf_s, deltas, 800.0)
    t_img, t_w, t_f = _observe(rng, psf_t, deltas * ratio, 1600.0)
    wcs = tan_wcs(SHAPE)

    def ccd(img, w, f, psf, zp, expnum):
        return CCDProducts(image=img, mask=np.zeros(SHAPE, np.int32), weight=w, wcs=wcs,
                           psf=psf, zp=zp, exptime=90.0, band="r", expnum=expnum, ccdnum=28,
                           fwhm=psf.fwhm * 0.263, weight_scale=f)

    search = ccd(s_img, s_w, s_f, psf_s, ZP, 1)
    template = ccd(t_img, t_w, t_f, psf_t, ZP + 2.5 * np.log10(ratio), 2)
    blank = blank_sky(Table({"x": xl.astype(float), "y": yl.astype(float),
                             "mag": ZP - 2.5 * np.log10(fl)}), SHAPE)
    blank[:64] = blank[-64:] = False
    blank[:, :64] = blank[:, -64:] = False
    out = {}
    for flag in (False, True):
        cfg = DiffConfig(fakes=False, crop_templates=False, model_weights=flag,
                         registration=RegistrationConfig(enabled=False))
        out[flag] = difference_ccd(search, [template], config=cfg,
                                   rng=np.random.default_rng(1))
    return search, template, blank, out


def _noise_ratio(result, blank) -> float:
    good = blank & (result.mask == 0) & np.isfinite(result.diff_var)
    assert good.sum() > 200_000
    return _robust_sigma(result.diff[good] / np.sqrt(result.diff_var[good]))


def test_se_rescale_counts_the_unresolved_light(crowded):
    search, template, _, _ = crowded
    # the confusion scatter of the unresolved stars: ~10 % of the sky variance
    assert search.weight_scale > 1.06 and template.weight_scale > 1.06


def test_blank_sky_noise_over_sigma_with_model_weights(crowded):
    _, _, blank, out = crowded
    old, new = _noise_ratio(out[False], blank), _noise_ratio(out[True], blank)
    assert 0.97 <= new <= 1.03, (old, new)
    assert old < 0.97, (old, new)  # the rescaled weights: sigma too large by the scatter


def test_model_weight_undoes_the_rescale_only():
    w = np.full((4, 4), 0.01, np.float32)
    ccd = CCDProducts(image=np.zeros((4, 4), np.float32), mask=np.zeros((4, 4), np.int32),
                      weight=w, wcs=None, psf=None, zp=30.0, exptime=90.0, band="r", expnum=1,
                      ccdnum=1, weight_scale=1.1)
    got = model_weight(ccd)
    np.testing.assert_allclose(got.weight, 0.011, rtol=1e-6)
    assert got.weight_scale == 1.0 and ccd.weight[0, 0] == np.float32(0.01)  # not in place
    for f in (1.0, float("nan"), 0.0):
        same = replace(ccd, weight_scale=f)
        assert model_weight(same) is same
