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
