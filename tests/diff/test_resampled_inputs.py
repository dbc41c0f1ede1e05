"""Inputs that were already resampled (issue 13 item 6), against truth: their correlated pixel
noise is measured on the blank sky and the score's blank-sky scatter stays 1; without the flag
it is over-confident, as desgw was on the real resampled two-epoch data (1.10)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from desgw.diff.pipeline import DiffConfig, difference_ccd
from desgw.diff.pipeline_steps import measure_noise_acf, subtract_sky
from desgw.diff.register import RegistrationConfig
from desgw.diff.resample import noise_correlation_factor, resample_to_grid

sys.path.insert(0, str(Path(__file__).parent))
from test_register import SHAPE_S, make_scene


def _resampled(p, shift=(0.5, 0.5)):
    """The CCD as a pipeline that resampled it onto a grid offset by ``shift`` px would deliver
    it: Lanczos-3 image and per-pixel weight, the grid's WCS, the same catalog (sky)."""
    w_out = p.wcs.deepcopy()
    w_out.wcs.crpix = [p.wcs.wcs.crpix[0] + shift[0], p.wcs.wcs.crpix[1] + shift[1]]
    r = resample_to_grid(p.image, p.mask, p.weight, p.wcs, w_out, p.shape)
    img = np.where(r.coverage, r.image, 0.0).astype(np.float32)
    return replace(p, image=img, mask=r.mask, weight=r.weight, wcs=w_out)


def _blank_sky_sigma(result, scene) -> float:
    occupied = np.zeros(SHAPE_S, bool)
    xs = np.r_[scene.star_x, scene.transient_x]
    ys = np.r_[scene.star_y, scene.transient_y]
    occupied[np.round(ys).astype(int), np.round(xs).astype(int)] = True
    blank = ~ndimage.binary_dilation(occupied, iterations=20)
    blank &= (result.mask == 0) & np.isfinite(result.diff_var)
    blank[:40] = blank[-40:] = False
    blank[:, :40] = blank[:, -40:] = False
    z = result.score[blank]
    assert z.size > 100_000
    return float(1.4826 * np.median(np.abs(z - np.median(z))))


@pytest.fixture(scope="module")
def runs():
    scene = make_scene((0.0, 0.0), ((0.0, 0.0), (0.0, 0.0)), seed=8, n_stars=80,
                       n_transients=10)
    search, template = _resampled(scene.search), _resampled(scene.template, (0.5, -0.5))
    cfg = DiffConfig(fakes=False, crop_templates=False,
                     registration=RegistrationConfig(enabled=False))
    out = {}
    for flag in (False, True):
        out[flag] = difference_ccd(search, [template], config=replace(cfg,
                                                                      resampled_inputs=flag),
                                   rng=np.random.default_rng(1))
    return scene, search, out


def test_measured_autocorrelation_of_a_resampled_image(runs) -> None:
    """A half-pixel Lanczos-3 shift in x and y: the noise correlation factor (the sum of the
    autocorrelation) is the kernel's, 1.6; lag 0 is 1 (the weight gives the pixel variance)."""
    scene, search, _ = runs
    cfg = DiffConfig()
    acf = measure_noise_acf(subtract_sky(search.image, search.mask, cfg)[0], search.mask,
                            search.weight)
    expected = noise_correlation_factor(0.5, 0.5)
    assert acf[3, 3] == pytest.approx(1.0, abs=0.02)
    assert acf.sum() == pytest.approx(expected, rel=0.04), (acf.sum(), expected)
    # the raw image: independent pixels
    raw = scene.search
    acf_raw = measure_noise_acf(subtract_sky(raw.image, raw.mask, cfg)[0], raw.mask, raw.weight)
    assert acf_raw.sum() == pytest.approx(1.0, abs=0.04)


def test_blank_sky_score_scatter_is_one_on_resampled_inputs(runs) -> None:
    scene, _, out = runs
    off, on = _blank_sky_sigma(out[False], scene), _blank_sky_sigma(out[True], scene)
    # measured: 1.29 without the flag, 1.00 with it (half-pixel Lanczos-3 inputs)
    assert off > 1.08, off
    assert on == pytest.approx(1.0, abs=0.03), on
    assert out[True].meta["search_input_ncf"] > 1.4
