"""Satellite trails on crowded CCDs: no false trail through the crowd, a faint trail found.

At ~11,000 objects per CCD (the science audit's crowded night) the sources merge into large
groups of significant blocks and the median of the background-subtracted image sits 0.3-0.5
pixel sigmas above zero; :func:`desgw.se.trails.find_trails` then drew 2-3 false trails
through the crowd per CCD and masked 60 px on each side of every line (7.4 % of a CCD where
the true trail covers 1.4 %). The fields here are crowded the same way (a star count rising
x1.35 per magnitude from r = 12 to 24, 10,000 stars and 1,600 galaxies per CCD, on half a
CCD; zero point 31.4, sky 830 e-, bright cores above full well masked SAT), with two
PSF profiles (Moffat beta 2.5 with its broad wings, and Kolmogorov), background subtracted
by the pipeline's own first-pass estimate. A trail is drawn as a line of point sources
convolved with the same PSF, so that its truth (where it adds light) is exact.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from scipy.signal import fftconvolve

from desgw.se import maskbits
from desgw.se.background import estimate_background
from desgw.se.trails import find_trails

SHAPE = (2048, 2048)  # half a CCD (the object counts are halved too)
SKY, READ_NOISE, ZP = 830.0, 6.0, 31.4
N_STARS = 5000
N_GALAXIES = 800
FULL_WELL = 130000.0


def _moffat(fwhm: float, beta: float, half: int) -> np.ndarray:
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    k = (1.0 + (xx ** 2 + yy ** 2) / alpha ** 2) ** (-beta)
    return k / k.sum()


def _kolmogorov(fwhm: float, half: int) -> np.ndarray:
    import galsim

    img = galsim.Kolmogorov(fwhm=fwhm).drawImage(nx=2 * half + 1, ny=2 * half + 1, scale=1.0)
    k = np.asarray(img.array, dtype=np.float64)
    return k / k.sum()


KERNELS = {"moffat2.5": lambda: (_moffat(5.2, 2.5, 64), 5.2),
           "kolmogorov": lambda: (_kolmogorov(4.4, 64), 4.4)}


def _exp_kernel(hlr: float, half: int) -> np.ndarray:
    r_s = hlr / 1.678  # exponential scale length of a half-light radius
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    k = np.exp(-np.hypot(xx, yy) / r_s)
    return k / k.sum()


@functools.lru_cache(maxsize=2)
def _field(profile: str, seed: int = 7) -> tuple[np.ndarray, np.ndarray, float]:
    """A crowded CCD's noiseless stars and galaxies (e-), the PSF kernel and its FWHM (px).
    Cached: treat as read-only."""
    kernel, fwhm = KERNELS[profile]()
    rng = np.random.default_rng(seed)
    ny, nx = SHAPE
    # stars: dN/dm ~ 10^(0.13 m) between 12 and 24 (the crowded night's counts)
    a = 0.13 * math.log(10.0)
    u = rng.random(N_STARS)
    mag = np.log(np.exp(a * 12.0) + u * (np.exp(a * 24.0) - np.exp(a * 12.0))) / a
    delta = np.zeros(SHAPE)
    np.add.at(delta, (rng.integers(0, ny, N_STARS), rng.integers(0, nx, N_STARS)),
              10.0 ** (-0.4 * (mag - ZP)))
    # galaxies: r = 20-24, exponential discs of two sizes
    for hlr in (2.5, 6.0):
        g = np.zeros(SHAPE)
        n = N_GALAXIES // 2
        np.add.at(g, (rng.integers(0, ny, n), rng.integers(0, nx, n)),
                  10.0 ** (-0.4 * (rng.uniform(20.0, 24.0, n) - ZP)))
        delta += fftconvolve(g, _exp_kernel(hlr, 40), mode="same")
    return fftconvolve(delta, kernel, mode="same"), kernel, fwhm


def _trail_light(kernel: np.ndarray, theta_deg: float, rho: float, e_per_px: float
                 ) -> np.ndarray:
    """A trail ``x cos(theta) + y sin(theta) = rho`` of ``e_per_px`` e- per pixel of length,
    drawn through the PSF ``kernel`` (bilinear deposits every 0.25 px along the line)."""
    ny, nx = SHAPE
    t = math.radians(theta_deg)
    c, s = math.cos(t), math.sin(t)
    u = np.arange(-math.hypot(nx, ny) - 100, math.hypot(nx, ny) + 100, 0.25)
    x, y = rho * c - u * s, rho * s + u * c
    ok = (x > -70) & (x < nx + 69) & (y > -70) & (y < ny + 69)
    x, y = x[ok] + 70, y[ok] + 70  # on a padded grid: light from beyond the edges
    big = np.zeros((ny + 140, nx + 140))
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    w = 0.25 * e_per_px
    for dy, dx, ww in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)),
                       (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(big, (y0 + dy, x0 + dx), w * ww)
    return fftconvolve(big, kernel, mode="same")[70:70 + ny, 70:70 + nx]


def _observe(noiseless: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                        float]:
    """Noisy image, background-subtracted the way SE's first pass does it; weight, mask and
    the pixel sigma of the sky."""
    rng = np.random.default_rng(seed)
    var = SKY + READ_NOISE ** 2 + np.maximum(noiseless, 0.0)
    image = (SKY + noiseless + rng.standard_normal(SHAPE) * np.sqrt(var)).astype(np.float32)
    mask = np.zeros(SHAPE, dtype=np.int32)
    mask[:, [700, 1400]] |= maskbits.BADPIX  # two bad columns
    mask[image > FULL_WELL] |= maskbits.SAT  # saturated cores, as SE leaves them
    weight = np.full(SHAPE, 1.0 / (SKY + READ_NOISE ** 2), dtype=np.float32)
    weight[mask != 0] = 0.0
    bkg = estimate_background(image, mask)
    return image - bkg.level, weight, mask, math.sqrt(SKY + READ_NOISE ** 2)


@pytest.mark.parametrize("profile", sorted(KERNELS))
def test_crowded_field_no_false_trail(profile):
    stars, _, fwhm = _field(profile)
    sub, weight, mask, sigma = _observe(stars, seed=1)
    # the field is as crowded as the audit's: its median sits well above the background
    assert np.median(sub[weight > 0]) > 0.15 * sigma
    res = find_trails(sub, weight, mask, fwhm_px=fwhm)
    assert res.trails == ()
    assert not res.mask.any()


@pytest.mark.parametrize("profile,theta,rho,peak_sigma",
                         [("moffat2.5", 147.5, -300.0, 2.5), ("kolmogorov", 101.0, 300.0, 2.5)])
def test_crowded_field_faint_trail(profile, theta, rho, peak_sigma):
    stars, kernel, fwhm = _field(profile)
    sigma = math.sqrt(SKY + READ_NOISE ** 2)
    unit = _trail_light(kernel, theta, rho, 1.0)
    light = unit * (peak_sigma * sigma / unit.max())
    sub, weight, mask, _ = _observe(stars + light, seed=2)
    res = find_trails(sub, weight, mask, fwhm_px=fwhm)
    assert len(res.trails) == 1
    tr = res.trails[0]
    assert abs(tr.theta_deg - theta) < 0.1
    # the trail's light is masked wherever it adds 0.2 pixel sigma
    reach = light > 0.2 * sigma
    assert res.mask[reach].mean() > 0.99
    # and the band is no wider than that reach plus one FWHM (at least the 2 FWHM minimum)
    yy, xx = np.nonzero(reach)
    t = math.radians(theta)
    d_reach = float(np.max(np.abs(xx * math.cos(t) + yy * math.sin(t) - rho)))
    assert tr.half_width <= max(d_reach, 2.0 * fwhm) + fwhm
