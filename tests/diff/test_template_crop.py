"""Tests of desgw.diff.template_crop: the cut-out keeps every template pixel that reaches the
search grid, its WCS and PSF are those of the full CCD shifted, and resampling the cut-out
gives the same search-grid image as resampling the whole CCD."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np

from desgw.diff.pipeline_types import CCDProducts
from desgw.diff.resample import resample_to_grid
from desgw.diff.template_crop import OffsetPSF, crop_box, crop_to_search

sys.path.insert(0, str(Path(__file__).parent))
from test_resample_support import SHAPE, decam_wcs

RA0, DEC0 = 150.0, -30.0


class LinearPSF:
    """A Gaussian whose width grows with x and y: position errors show up in the stamps."""

    def render(self, x, y, *, size=None, dx=0.0, dy=0.0):
        n = size or 21
        s = 1.5 + 1e-4 * x + 2e-4 * y
        yy, xx = np.mgrid[:n, :n] - n // 2
        g = np.exp(-0.5 * ((xx - dx) ** 2 + (yy - dy) ** 2) / s**2)
        return (g / g.sum()).astype(np.float32)

    def fwhm_at(self, x, y):
        return 2.3548 * (1.5 + 1e-4 * x + 2e-4 * y)


def products(wcs, image, expnum, psf=None) -> CCDProducts:
    return CCDProducts(image=image, mask=np.zeros(SHAPE, np.int32),
                       weight=np.full(SHAPE, 0.01, np.float32), wcs=wcs, psf=psf, zp=31.0,
                       exptime=90.0, band="r", expnum=expnum, ccdnum=28)


def test_crop_keeps_what_reaches_the_search_grid_and_shifts_wcs_and_psf() -> None:
    # template shifted by ~1/3 of a CCD in Dec and ~1/4 in RA: a corner overlaps
    w_s = decam_wcs(28, RA0, DEC0, 0.0)
    w_t = decam_wcs(28, RA0 + 0.035, DEC0 - 0.1, 0.05)
    rng = np.random.default_rng(1)
    img = rng.normal(100.0, 5.0, SHAPE).astype(np.float32)
    search = products(w_s, np.zeros(SHAPE, np.float32), 1, LinearPSF())
    template = products(w_t, img, 2, LinearPSF())
    box = crop_box(template, search)
    assert box is not None
    ys, xs = box
    area = (ys.stop - ys.start) * (xs.stop - xs.start)
    assert area < 0.6 * SHAPE[0] * SHAPE[1]
    # every template pixel landing on the search CCD is inside the box
    ty, tx = np.mgrid[0:SHAPE[0]:16, 0:SHAPE[1]:16]
    ra, dec = w_t.all_pix2world(tx.ravel(), ty.ravel(), 0)
    sx, sy = w_s.all_world2pix(ra, dec, 0)
    on = (sx >= 0) & (sx <= SHAPE[1] - 1) & (sy >= 0) & (sy <= SHAPE[0] - 1)
    assert on.sum() > 1000
    assert np.all((tx.ravel()[on] >= xs.start) & (tx.ravel()[on] < xs.stop))
    assert np.all((ty.ravel()[on] >= ys.start) & (ty.ravel()[on] < ys.stop))

    cut = crop_to_search(template, search)
    assert cut.shape == (ys.stop - ys.start, xs.stop - xs.start)
    np.testing.assert_array_equal(cut.image, img[box])
    assert cut.image.flags.c_contiguous
    # WCS: cut-out pixel (x, y) is the full CCD's (x + x0, y + y0)
    x = np.array([0.0, 100.5, cut.shape[1] - 1.0])
    y = np.array([0.0, 333.25, cut.shape[0] - 1.0])
    a = np.array(cut.wcs.all_pix2world(x, y, 0))
    b = np.array(w_t.all_pix2world(x + xs.start, y + ys.start, 0))
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)
    # PSF and FWHM at the shifted position; picklable for the Dask workers
    psf = pickle.loads(pickle.dumps(cut.psf))
    assert isinstance(psf, OffsetPSF)
    np.testing.assert_array_equal(psf.render(10.0, 20.0, dx=0.2),
                                  template.psf.render(10.0 + xs.start, 20.0 + ys.start, dx=0.2))
    assert psf.fwhm_at(5.0, 7.0) == template.psf.fwhm_at(5.0 + xs.start, 7.0 + ys.start)

    # resampled onto the search grid: the same image from the cut-out as from the full CCD
    full = resample_to_grid(template.image, template.mask, template.weight, w_t, w_s, SHAPE)
    part = resample_to_grid(cut.image, cut.mask, cut.weight, cut.wcs, w_s, SHAPE)
    np.testing.assert_array_equal(full.coverage, part.coverage)
    cov = full.coverage & (full.weight > 0)
    assert cov.mean() > 0.1
    np.testing.assert_allclose(part.image[cov], full.image[cov], rtol=0, atol=1e-3)
    np.testing.assert_allclose(part.weight[cov], full.weight[cov], rtol=1e-4)


def test_no_crop_when_the_template_covers_the_search_ccd_or_misses_it() -> None:
    w_s = decam_wcs(28, RA0, DEC0, 0.0)
    search = products(w_s, np.zeros(SHAPE, np.float32), 1)
    same = products(decam_wcs(28, RA0 + 1e-4, DEC0, 0.0), np.zeros(SHAPE, np.float32), 2)
    assert crop_box(same, search) is None
    assert crop_to_search(same, search) is same
    far = products(decam_wcs(28, RA0 + 3.0, DEC0, 0.0), np.zeros(SHAPE, np.float32), 3)
    assert crop_box(far, search) is None
