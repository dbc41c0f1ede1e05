"""Fused per-pixel loops of :func:`desgw.se.detrend.detrend_ccd` (numba; private).

Each function makes one pass over the pixels where numpy would make five to ten, which is
what keeps detrending at a few tens of milliseconds per CCD on one core. The arithmetic is
the one documented in :mod:`desgw.se.detrend`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__: list[str] = []


@njit(cache=True)
def amp_to_electrons(data, level, gain, sat_adu, sat_bit, image, mask):
    """``image = (data - level[row]) * gain``; ``SAT`` where ``data - level >= sat_adu``.

    Returns (number of non-finite pixels, min, max of ``data``, number saturated).
    """
    ny, nx = data.shape
    nbad = 0
    nsat = 0
    dmin = np.inf
    dmax = -np.inf
    g = np.float32(gain)
    for y in range(ny):
        lv = level[y]
        for x in range(nx):
            v = np.float32(data[y, x])
            if not np.isfinite(v):
                nbad += 1
                image[y, x] = 0.0
                continue
            if v < dmin:
                dmin = v
            if v > dmax:
                dmax = v
            a = v - lv
            if a >= sat_adu:
                mask[y, x] |= sat_bit
                nsat += 1
            image[y, x] = a * g
    return nbad, dmin, dmax, nsat


@njit(cache=True)
def apply_calibrations(image, mask, bias, has_bias, flat, has_flat, bpm, has_bpm, bpm_bits,
                       extra, has_extra, edge, badpix_bit, edge_bit):
    """Bias subtraction, flat division (bad flat -> BADPIX, value 0), BPM, EDGE, extra bits.

    Returns the numbers of pixels with a non-positive or non-finite flat, with a non-finite
    bias and with a non-finite flat (the calibrations' checks, made in the same pass).
    """
    ny, nx = image.shape
    nbadflat = 0
    nanbias = 0
    nanflat = 0
    for y in range(ny):
        yedge = y < edge or y >= ny - edge
        for x in range(nx):
            v = image[y, x]
            m = mask[y, x]
            if has_bias:
                b = bias[y, x]
                if not np.isfinite(b):
                    nanbias += 1
                v -= b
            if has_flat:
                f = flat[y, x]
                if not np.isfinite(f):
                    nanflat += 1
                if f > 0:
                    v /= f
                else:  # also catches NaN
                    v = 0.0
                    m |= badpix_bit
                    nbadflat += 1
            if has_bpm and (np.int64(bpm[y, x]) & bpm_bits) != 0:
                m |= badpix_bit
            if yedge or x < edge or x >= nx - edge:
                m |= edge_bit
            if has_extra:
                m |= extra[y, x]
            image[y, x] = v
            mask[y, x] = m
    return nbadflat, nanbias, nanflat


@njit(cache=True)
def inverse_variance(sky, flat, has_flat, rn_col, mask, unusable, weight):
    """``weight = F^2 / (max(S, 0) * F + rn^2)``, 0 where ``mask & unusable``."""
    ny, nx = sky.shape
    for y in range(ny):
        for x in range(nx):
            if mask[y, x] & unusable:
                weight[y, x] = 0.0
                continue
            s = sky[y, x]
            if s < 0:
                s = 0.0
            rn = rn_col[x]
            if has_flat:
                f = flat[y, x]
                if not f > 0:
                    weight[y, x] = 0.0
                    continue
                var = (s * f + rn * rn) / (f * f)
            else:
                var = s + rn * rn
            weight[y, x] = 1.0 / var if var > 0 else 0.0
