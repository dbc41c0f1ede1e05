"""Fused per-pixel preparation of :func:`desgw.se.detect.detect_sources` (numba; private).

One pass builds what ``sep.extract`` reads: the image with excluded pixels set to 0, the
per-pixel noise (float32, 1e30 where excluded) and the exclusion map, where numpy made eight
full-CCD passes and as many temporaries (~0.1 s per call on a 4096 x 2048 CCD). The values
are the ones the numpy expressions gave, bit for bit: a variance ``v`` gives
``sqrt(float32(v))``, a weight ``w`` gives ``sqrt(float32(1) / w)`` (``w > 0``, else
unusable), all in float32.

The loop has no branch per pixel (selects only; the division by a zero weight gives the
IEEE infinity, ``error_model="numpy"``, which the usability test rejects as the explicit
``w > 0`` test did), so LLVM vectorises it: 0.017-0.021 CPU-s per 4096 x 2048 CCD instead of
0.061-0.068 with the branches, for every noise kind with or without a mask, the same bytes
(one core, synthetic weights with 0, negative, infinite, NaN and denormal values).

The noise is 1e30 on every excluded pixel, masked ones included, as sep sets a masked
pixel's data to 0 and its noise to its ``BIG`` (1e30) before filtering and thresholding
(sep 1.4 ``apply_mask_line``): :func:`desgw.se.detect.detect_sources` then gives sep no
mask, which it would read, convert and apply line by line. The catalogue (every column) and
the segmentation map are the same bit for bit, measured for both passes of
:func:`desgw.se.process.process_ccd`, conv and matched filters (simulated sparse CCD
880001/28); ~10-18 ms less per ``sep.extract`` on a 4096 x 2048 CCD.

:func:`separable_filter` is the detection filter that sep applies itself otherwise (its
``convolve``: the kernel normalised to sum 1, zero outside the image, float32), as two 1-D
passes of the Gaussian's rows, fused row by row (the column pass into one row buffer, then
the row pass): 2 n instead of n**2 taps per pixel, ~0.013-0.015 CPU-s per 4096 x 2048 CCD
for n = 7 or 9, where sep's own 2-D filter took ~0.06 and ~0.10. It is not bit for bit
sep's sum (another order of the float32 terms): the filtered values agree to float32
rounding (~1e-7 relative). :func:`object_flux_peak` then gives the columns that sep
measures on the unfiltered pixels of each detection (``flux``, ``peak`` and its position),
from the segmentation map, when sep was handed the filtered image.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__: list[str] = []

#: Kinds of ``noise`` of :func:`prepare_detection`.
NOISE_RMS, NOISE_VARIANCE, NOISE_WEIGHT = 0, 1, 2


@njit(cache=True, error_model="numpy")
def _prepare_rows(image, noise, kind, mask, bits, has_mask, data, err, bad):  # pragma: no cover
    """Fill ``data``, ``err``, ``bad`` row by row (see :func:`prepare_detection`); the count
    of excluded pixels."""
    ny, nx = image.shape
    big = np.float32(1e30)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    inf = np.float32(np.inf)
    n_bad = 0
    for y in range(ny):
        nrow = noise[y]
        irow = image[y]
        drow = data[y]
        erow = err[y]
        brow = bad[y]
        mrow = mask[y] if has_mask else mask[0]
        for x in range(nx):
            nv = nrow[x]
            if kind == 0:
                e = nv
            elif kind == 1:
                e = np.sqrt(nv)
            else:
                # w <= 0 or NaN gives inf or NaN: unusable below, as the test w > 0 was
                e = np.sqrt(one / nv)
            ok = (e > zero) & (e < inf)  # finite and positive (False for NaN)
            good = ok
            if has_mask:
                good = ok & ((mrow[x] & bits) == 0)
            brow[x] = not good
            n_bad += np.int64(not good)
            drow[x] = irow[x] if good else zero
            erow[x] = e if good else big
    return n_bad


def prepare_detection(image: np.ndarray, noise: np.ndarray, kind: int, mask: np.ndarray,
                      bits: np.int64, has_mask: bool
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``(data, err, bad, n_bad)`` for sep from float32 ``image`` and ``noise`` (ny, nx).

    ``kind``: :data:`NOISE_RMS`, :data:`NOISE_VARIANCE` or :data:`NOISE_WEIGHT`. A pixel is
    excluded (``bad``) when ``mask & bits`` (if ``has_mask``; ``mask`` is read only then) or
    its noise is not finite and positive; there ``data`` is 0 and ``err`` 1e30: what sep
    makes of a masked pixel itself (its ``apply_mask_line``), so that sep needs no mask.
    """
    ny, nx = image.shape
    data = np.empty((ny, nx), np.float32)
    err = np.empty((ny, nx), np.float32)
    bad = np.empty((ny, nx), np.bool_)
    n_bad = _prepare_rows(image, noise, kind, mask, bits, has_mask, data, err, bad)
    return data, err, bad, int(n_bad)


@njit(cache=True)
def _separable_rows(data, g, out):  # pragma: no cover
    """``out = (g g^T) * data`` (correlation, zero outside ``data``), row by row."""
    ny, nx = data.shape
    n = g.size
    r = n // 2
    zero = np.float32(0.0)
    buf = np.zeros(nx + 2 * r, np.float32)  # one column-filtered row, zero margins
    for y in range(ny):
        for x in range(nx):
            buf[r + x] = zero
        for k in range(n):
            yy = y + k - r
            if 0 <= yy < ny:
                c = g[k]
                row = data[yy]
                for x in range(nx):
                    buf[r + x] += c * row[x]
        orow = out[y]
        for x in range(nx):
            orow[x] = zero
        for k in range(n):
            c = g[k]
            for x in range(nx):
                orow[x] += c * buf[x + k]


def separable_filter(data: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``data`` correlated with the separable kernel ``outer(g, g)``, zero outside the image.

    Parameters
    ----------
    data : numpy.ndarray
        Image (ny, nx), float32, C-contiguous (e-).
    g : numpy.ndarray
        1-D kernel of odd length (e.g. a Gaussian normalised to sum 1), float32.

    Returns
    -------
    numpy.ndarray
        Filtered image (ny, nx), float32 (e-): at pixel (y, x) the sum over the kernel of
        ``g[i] g[j] data[y + i - r, x + j - r]`` (``r = len(g) // 2``), pixels outside the
        image counting 0, as sep's ``convolve`` with the kernel ``outer(g, g)``.
    """
    out = np.empty(data.shape, np.float32)
    _separable_rows(data, g, out)
    return out


@njit(cache=True)
def _flux_peak(data, seg, xmin, xmax, ymin, ymax, flux, peak, xpeak, ypeak):  # pragma: no cover
    for i in range(xmin.size):
        lab = i + 1
        s = 0.0
        p = np.float32(-np.inf)
        xp = xmin[i]
        yp = ymin[i]
        for y in range(ymin[i], ymax[i] + 1):
            srow = seg[y]
            drow = data[y]
            for x in range(xmin[i], xmax[i] + 1):
                if srow[x] == lab:
                    v = drow[x]
                    s += v
                    if v > p:
                        p = v
                        xp = x
                        yp = y
        flux[i] = np.float32(s)
        peak[i] = p
        xpeak[i] = xp
        ypeak[i] = yp


def object_flux_peak(data: np.ndarray, segmap: np.ndarray, xmin: np.ndarray, xmax: np.ndarray,
                     ymin: np.ndarray, ymax: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sum, maximum and its pixel of ``data`` over each detection's segment.

    Detection ``i`` owns the pixels of ``segmap`` equal to ``i + 1`` inside its bounding box
    ``xmin[i]..xmax[i]``, ``ymin[i]..ymax[i]`` (inclusive, 0-based), as sep numbers them.

    Returns
    -------
    flux : numpy.ndarray
        float32 sums (e-; as sep's ``flux``: summed in float64, rounded to float32).
    peak : numpy.ndarray
        float32 maxima (e-).
    xpeak, ypeak : numpy.ndarray
        int64 pixel of the maximum (the first in row order when several are equal).
    """
    n = xmin.size
    flux = np.empty(n, np.float32)
    peak = np.empty(n, np.float32)
    xpeak = np.empty(n, np.int64)
    ypeak = np.empty(n, np.int64)
    _flux_peak(data, segmap, xmin.astype(np.int64), xmax.astype(np.int64),
               ymin.astype(np.int64), ymax.astype(np.int64), flux, peak, xpeak, ypeak)
    return flux, peak, xpeak, ypeak
