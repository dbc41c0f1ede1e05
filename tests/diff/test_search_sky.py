"""The search CCD's sky (desgw.diff.pipeline_steps.search_sky): a CCD straight from SE has SE's
sky subtracted (exactly that level map) when the relative sky follows; without the relative
sky, or without SE's estimate, or with one of another shape, the difference imaging's own
two-pass estimate (subtract_sky), bit for bit."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from desgw.diff.pipeline_steps import search_sky, subtract_sky
from desgw.diff.pipeline_types import CCDProducts, DiffConfig
from desgw.se.background import estimate_background


@pytest.fixture(scope="module")
def ccd():
    rng = np.random.default_rng(11)
    ny, nx = 320, 256
    yy, xx = np.mgrid[0:ny, 0:nx]
    sky = 500.0 + 0.05 * xx + 0.02 * yy
    image = rng.normal(sky, 20.0).astype(np.float32)
    for x, y in rng.uniform(10, 240, (30, 2)):  # some stars
        image += (2000.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 4.0)).astype(np.float32)
    mask = np.zeros((ny, nx), np.int32)
    mask[100:104, :] = 1  # a bad row block
    weight = np.full((ny, nx), 1.0 / 400.0, np.float32)
    return CCDProducts(image=image, mask=mask, weight=weight, wcs=None, psf=None, zp=30.0,
                       exptime=90.0, band="r", expnum=1, ccdnum=28)


def test_se_background_is_subtracted_as_is(ccd):
    cfg = DiffConfig(background=replace(DiffConfig().background, mesh=64))
    bkg = estimate_background(ccd.image, ccd.mask, config=cfg.background)
    sub, sky, rms = search_sky(replace(ccd, background=bkg), cfg)
    assert sub.dtype == np.float32
    np.testing.assert_array_equal(sub, np.subtract(ccd.image, bkg.level, dtype=np.float32))
    assert (sky, rms) == (bkg.global_level, bkg.global_rms)
    # the sky it removes is the sky: blank pixels average ~0 (rms 20 e-)
    assert abs(float(np.median(sub[ccd.mask == 0]))) < 2.0


@pytest.mark.parametrize("case", ["no_background", "no_relative_sky", "other_shape"])
def test_own_estimate_otherwise(ccd, case):
    cfg = DiffConfig(background=replace(DiffConfig().background, mesh=64))
    bkg = estimate_background(ccd.image, ccd.mask, config=cfg.background)
    search = replace(ccd, background=bkg)
    if case == "no_background":
        search = ccd
    elif case == "no_relative_sky":
        cfg = replace(cfg, relative_sky=False)
    else:
        search = replace(ccd, background=replace(bkg, level=bkg.level[:-1]))
    sub, sky, rms = search_sky(search, cfg)
    want, wsky, wrms = subtract_sky(ccd.image, ccd.mask, cfg)
    np.testing.assert_array_equal(sub, want)
    assert (sky, rms) == (wsky, wrms)
