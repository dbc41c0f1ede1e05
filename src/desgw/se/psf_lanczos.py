"""Lanczos sub-pixel shifts of small stamps (used by the PSF model and its fitting).

A shift by a fraction of a pixel is applied as two small matrix products (rows, then
columns) with a Lanczos-``order`` kernel whose taps are normalised to sum 1, so a constant
image stays constant and flux is conserved away from the stamp edges.
"""

from __future__ import annotations

import numpy as np

__all__ = ["lanczos_kernel", "lanczos_taps", "shift_matrix", "extract_matrix", "shift_stamp"]


def lanczos_kernel(t: np.ndarray, order: int) -> np.ndarray:
    """Lanczos kernel ``sinc(t) sinc(t / order)`` for ``|t| < order``, else 0."""
    t = np.asarray(t, dtype=np.float64)
    out = np.sinc(t) * np.sinc(t / order)
    out[np.abs(t) >= order] = 0.0
    return out


def _normalise_rows(m: np.ndarray) -> np.ndarray:
    s = m.sum(axis=-1, keepdims=True)
    return m / np.where(s == 0, 1.0, s)


def lanczos_taps(shift: float, order: int) -> np.ndarray:
    """Normalised weights ``w[m + order] = L(m - shift) / sum`` for ``m = -order..order``.

    Moving content by ``+shift``: ``out[i] = sum_m w[m + order] in[i - m]``. Valid for
    ``|shift| <= 1``.
    """
    m = np.arange(-order, order + 1)
    w = lanczos_kernel(m - shift, order)
    return w / w.sum()


def shift_matrix(n: int, shift: float, order: int) -> np.ndarray:
    """Matrix (n, n) that moves the content of a length-``n`` vector by ``+shift`` pixels.

    ``out[i] = sum_j M[i, j] in[j]`` samples the Lanczos interpolant of ``in`` at ``i - shift``
    (taps normalised as :func:`lanczos_taps`); content beyond the ends is taken as 0.
    """
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    m = np.arange(-order - 1, order + 2)
    norm = lanczos_kernel(m - (shift - np.floor(shift)), order).sum()
    return lanczos_kernel(i - shift - j, order) / norm


def extract_matrix(n: int, offset: float, order: int) -> np.ndarray:
    """Matrix (n, n + 2 order) that re-centres a padded cut-out on a sub-pixel position.

    Given a vector of length ``n + 2 order`` whose source sits at index
    ``n // 2 + order + offset``, ``M @ v`` is a length-``n`` vector with the source at index
    ``n // 2`` (``out[i]`` = interpolant at ``i + order + offset``).
    """
    i = np.arange(n)[:, None]
    j = np.arange(n + 2 * order)[None, :]
    return _normalise_rows(lanczos_kernel(i + order + offset - j, order))


def shift_stamp(stamp: np.ndarray, dx: float, dy: float, order: int) -> np.ndarray:
    """Move the content of a square or rectangular stamp by (dx, dy) pixels (x = column)."""
    ny, nx = stamp.shape
    my = shift_matrix(ny, dy, order)
    mx = shift_matrix(nx, dx, order)
    return my @ stamp @ mx.T
