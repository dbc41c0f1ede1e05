"""The lossy immask codecs (desgw.io.fitscodec) leave photometry alone.

Simulated stars of known flux on a noisy sky, two PSF widths, sparse and crowded scenes with
bright stars: aperture and PSF fluxes and their errors measured before and after a write/read
round trip. SCI is quantised with the step sigma/16 (dithered) and WGT with the step
(smallest positive weight)/1024: flux errors must move by < 0.1 %, fluxes of bright stars by
< 0.1 %, every flux by < 0.1 of its own noise, with no mean shift; the mask must come back
bit-exact, through astropy and fitsio alike.
"""

from __future__ import annotations

import fitsio
import numpy as np
import pytest
from astropy.io import fits

from desgw.io.products import read_immask, write_immask

SHAPE = (1024, 512)
SKY_SIGMA = 20.0  # e-


def _moffat(size: int, fwhm: float, dx: float, dy: float, beta: float = 3.0) -> np.ndarray:
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    y, x = np.mgrid[:size, :size] - size // 2
    r2 = (x - dx) ** 2 + (y - dy) ** 2
    p = (1 + r2 / alpha**2) ** (-beta)
    return p / p.sum()


def _scene(n_stars: int, fwhm: float, seed: int):
    rng = np.random.default_rng(seed)
    ny, nx = SHAPE
    yy, xx = np.mgrid[:ny, :nx]
    # a sky noise that varies over the CCD (as the SE weight map does), and masked pixels
    var = (SKY_SIGMA**2 * (1 + 0.3 * np.sin(yy / 300.0) + 0.2 * xx / nx)).astype(np.float32)
    img = rng.normal(0.0, np.sqrt(var)).astype(np.float32)
    msk = np.zeros(SHAPE, np.int32)
    msk[rng.random(SHAPE) < 0.01] = 16         # cosmic rays
    msk[:, 200:202] = 1 | 512                   # a bad column
    msk[5, 7] = 8192
    size = 31
    h = size // 2
    x = rng.uniform(h + 2, nx - h - 2, n_stars)
    y = rng.uniform(h + 2, ny - h - 2, n_stars)
    flux = 10 ** rng.uniform(2.5, 6.0, n_stars)
    for k in range(n_stars):
        ix, iy = int(round(x[k])), int(round(y[k]))
        p = _moffat(size, fwhm, x[k] - ix, y[k] - iy)
        img[iy - h:iy + h + 1, ix - h:ix + h + 1] += (flux[k] * p).astype(np.float32)
    wgt = (1.0 / var).astype(np.float32)
    wgt[msk != 0] = 0.0
    return img, msk, wgt, x, y, flux


def _photometry(img, wgt, x, y, fwhm):
    """Aperture (r = 2 FWHM) and PSF-fit fluxes and errors (e-) from inverse-variance weights."""
    size, r = 31, 2.0 * fwhm
    h = size // 2
    out = np.zeros((len(x), 4))
    gy, gx = np.mgrid[:size, :size] - h
    for k in range(len(x)):
        ix, iy = int(round(x[k])), int(round(y[k]))
        d = img[iy - h:iy + h + 1, ix - h:ix + h + 1].astype(np.float64)
        w = wgt[iy - h:iy + h + 1, ix - h:ix + h + 1].astype(np.float64)
        good = w > 0
        var = np.where(good, 1.0 / np.where(good, w, 1.0), 0.0)
        ap = ((gx - (x[k] - ix)) ** 2 + (gy - (y[k] - iy)) ** 2 <= r * r) & good
        p = _moffat(size, fwhm, x[k] - ix, y[k] - iy)
        out[k, 0] = d[ap].sum()
        out[k, 1] = np.sqrt(var[ap].sum())
        den = np.sum(p * p * w)
        out[k, 2] = np.sum(p * d * w) / den
        out[k, 3] = 1.0 / np.sqrt(den)
    return out


@pytest.mark.parametrize("n_stars,fwhm,seed", [(60, 3.0, 1), (60, 7.0, 2), (400, 4.5, 3)])
def test_quantised_planes_keep_fluxes_and_errors(tmp_path, n_stars, fwhm, seed):
    img, msk, wgt, x, y, flux = _scene(n_stars, fwhm, seed)
    path = tmp_path / "q_immask.fits.fz"
    write_immask(path, img, msk, wgt, fits.Header({"EXPNUM": 1}))
    im = read_immask(path)
    np.testing.assert_array_equal(im.msk, msk)
    assert np.array_equal(im.wgt == 0, wgt == 0)
    before = _photometry(img, wgt, x, y, fwhm)
    after = _photometry(im.sci, im.wgt, x, y, fwhm)
    for f, e in ((0, 1), (2, 3)):               # aperture, PSF
        # flux errors (from the quantised weights) move by < 0.1 % (bound: 0.05 %)
        assert np.max(np.abs(after[:, e] / before[:, e] - 1)) < 1e-3
        # each flux moves by a small part of its own noise (quantisation sigma/55 per pixel)
        dz = (after[:, f] - before[:, f]) / before[:, e]
        assert np.max(np.abs(dz)) < 0.1
        assert 0.005 < np.std(dz) < 0.04
        assert abs(np.mean(dz)) < 5 * 0.03 / np.sqrt(len(dz))        # no bias
        # bright stars (S/N > 100): flux within 0.1 %
        bright = before[:, f] / before[:, e] > 100
        assert bright.sum() >= 5
        assert np.max(np.abs(after[bright, f] / before[bright, f] - 1)) < 1e-3
        # against the truth: the scatter of the measured fluxes about the true ones is that
        # of the original pixels (it contains the neighbours' light: the same in both)
        pull0 = (before[:, f] - flux) / before[:, e]
        pull1 = (after[:, f] - flux) / after[:, e]
        assert abs(np.std(pull1) / np.std(pull0) - 1) < 0.01
        assert abs(np.median(pull1) - np.median(pull0)) < 0.05


def test_mask_bit_exact_and_readers_agree(tmp_path):
    img, msk, wgt, *_ = _scene(20, 4.0, 4)
    msk = msk.copy()
    msk[100:110, 50:60] = (1 << 20) | 3           # bits beyond int16: an int32 plane
    path = tmp_path / "m_immask.fits.fz"
    write_immask(path, img, msk, wgt)
    im = read_immask(path)
    np.testing.assert_array_equal(im.msk, msk)
    with fitsio.FITS(str(path)) as f:
        np.testing.assert_array_equal(f["MSK"].read(), msk)
        np.testing.assert_array_equal(f["SCI"].read(), im.sci)
        np.testing.assert_array_equal(f["WGT"].read(), im.wgt)
    with fits.open(path, disable_image_compression=True) as hdul:
        assert hdul["MSK"].header["ZCMPTYPE"] == "RICE_1"
