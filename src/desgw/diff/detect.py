"""Detection of transients on a ZOGY subtraction: peaks of ``S_corr`` (replaces SExtractor on
the difference image).

``S_corr`` is already the matched-filtered image in sigma units (unit noise in blank sky, the
sources' own noise and the registration noise included), so detection is a threshold on it:
every local extremum (maximum for brightenings, minimum for fadings) with ``|S_corr| >=
threshold_sigma``, at least ``min_separation`` pixels from a stronger extremum of the same sign,
outside masked pixels, with at least ``min_area`` connected pixels above threshold. Positions
are refined to sub-pixel by a least-squares quadratic fit to ``log |S_corr|`` on the 3 x 3
pixels around the peak (exact for a Gaussian peak; the linear values are used when a pixel is
<= 0).

Output table columns (one row per detection):

==============  =======================================================================
``id``          running number (1-based)
``x``, ``y``    0-based sub-pixel position (x = column)
``x_peak``,     0-based integer position of the peak pixel
``y_peak``
``score``       ``S_corr`` of the peak pixel (signed)
``score_peak``  interpolated ``S_corr`` at ``(x, y)`` (signed)
``negative``    True for a flux decrease (``S_corr`` minimum)
``area``        pixels of the 8-connected footprint with ``|S_corr| >= threshold`` (same sign)
==============  =======================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.table import Table
from numba import njit

from desgw.diff.subtract import Subtraction
from desgw.se import maskbits

__all__ = ["DETECT_COLUMNS", "DiffDetectConfig", "detect_transients", "quadratic_peak"]

DETECT_COLUMNS = ("id", "x", "y", "x_peak", "y_peak", "score", "score_peak", "negative", "area")


@dataclass(frozen=True)
class DiffDetectConfig:
    """Configuration of :func:`detect_transients`.

    Attributes
    ----------
    min_separation : int
        Half-side (pixels) of the square in which a peak must be the extremum.
    min_area : int
        Minimum footprint (pixels above threshold).
    negative : bool
        Also detect negative peaks (flux decreases).
    mask_bits : int
        Output-mask bits that exclude a peak pixel (the subtraction mask is already grown).
    edge : int
        Peaks closer than this to the image border (pixels) are dropped.
    """

    min_separation: int = 3
    min_area: int = 3
    negative: bool = True
    mask_bits: int = maskbits.UNUSABLE | maskbits.EDGE
    edge: int = 2

    def __post_init__(self) -> None:
        if self.min_separation < 1 or self.min_area < 1 or self.edge < 1:
            raise ValueError("min_separation, min_area and edge must be >= 1")


@njit(cache=True, nogil=True)
def _find_peaks(score, mask, bits, thr, sign, r, edge):  # pragma: no cover - numba
    ny, nx = score.shape
    ys = []
    xs = []
    for y in range(edge, ny - edge):
        for x in range(edge, nx - edge):
            v = sign * score[y, x]
            if v < thr or (mask[y, x] & bits) != 0:
                continue
            ok = True
            for yy in range(max(y - r, 0), min(y + r + 1, ny)):
                for xx in range(max(x - r, 0), min(x + r + 1, nx)):
                    w = sign * score[yy, xx]
                    # strict maximum; ties go to the first pixel in raster order
                    if w > v or (w == v and (yy < y or (yy == y and xx < x))):
                        ok = False
                        break
                if not ok:
                    break
            if ok:
                ys.append(y)
                xs.append(x)
    return np.array(ys, np.int64), np.array(xs, np.int64)


@njit(cache=True, nogil=True)
def _region_areas(score, thr, sign, py, px):  # pragma: no cover - numba
    """Pixels in the 8-connected region of ``sign * score >= thr`` that holds each peak.

    A flood fill from each peak (regions are small; a region holding several peaks is
    filled once per peak): the same areas as labelling the whole image, without touching
    the pixels far from a peak.
    """
    ny, nx = score.shape
    seen = np.zeros((ny, nx), np.uint8)
    areas = np.zeros(py.size, np.int64)
    stack = np.empty(1024, np.int64)
    visited = np.empty(1024, np.int64)
    for k in range(py.size):
        top = 0
        nvis = 0
        stack[top] = py[k] * nx + px[k]
        top += 1
        seen[py[k], px[k]] = 1
        while top > 0:
            top -= 1
            i = stack[top]
            if nvis == visited.size:
                grown = np.empty(2 * visited.size, np.int64)
                grown[:nvis] = visited
                visited = grown
            visited[nvis] = i
            nvis += 1
            y, x = i // nx, i % nx
            for yy in range(max(y - 1, 0), min(y + 2, ny)):
                for xx in range(max(x - 1, 0), min(x + 2, nx)):
                    if seen[yy, xx] == 0 and sign * score[yy, xx] >= thr:
                        seen[yy, xx] = 1
                        if top == stack.size:
                            bigger = np.empty(2 * stack.size, np.int64)
                            bigger[:top] = stack
                            stack = bigger
                        stack[top] = yy * nx + xx
                        top += 1
        areas[k] = nvis
        for j in range(nvis):
            i = visited[j]
            seen[i // nx, i % nx] = 0
    return areas


# Least-squares quadratic z = a + b x + c y + d x^2 + e x y + f y^2 on the 3x3 grid.
_gy, _gx = np.mgrid[-1:2, -1:2]
_A = np.stack([np.ones(9), _gx.ravel(), _gy.ravel(), _gx.ravel() ** 2,
               (_gx * _gy).ravel(), _gy.ravel() ** 2], axis=1)
_PINV = np.linalg.pinv(_A)


def quadratic_peak(patch: np.ndarray) -> tuple[float, float, float]:
    """Sub-pixel peak of a 3 x 3 patch whose centre is a local maximum.

    Fits a quadratic to ``log(patch)`` (all values > 0) or to ``patch`` by least squares.

    Returns
    -------
    dx, dy, value : float
        Offset of the peak from the central pixel (pixels, |d| <= 1) and the fitted peak value.
    """
    p = np.asarray(patch, dtype=np.float64).ravel()
    use_log = bool(np.all(p > 0))
    z = np.log(p) if use_log else p
    a, b, c, d, e, f = _PINV @ z
    det = 4 * d * f - e * e
    if d < 0 and det > 0:
        dx = (-2 * f * b + e * c) / det
        dy = (-2 * d * c + e * b) / det
        if abs(dx) > 1 or abs(dy) > 1:
            dx = dy = 0.0
    else:
        dx = dy = 0.0
    val = a + b * dx + c * dy + d * dx * dx + e * dx * dy + f * dy * dy
    return float(dx), float(dy), float(np.exp(val) if use_log else val)


def detect_transients(subtraction: Subtraction, *, threshold_sigma: float = 5.0,
                      config: DiffDetectConfig = DiffDetectConfig()) -> Table:
    """Peaks of ``S_corr`` above ``threshold_sigma`` (positive and, optionally, negative).

    Parameters
    ----------
    subtraction : Subtraction
        Result of :func:`desgw.diff.subtract.subtract`.
    threshold_sigma : float
        Detection threshold on ``|S_corr|`` (sigma).
    config : DiffDetectConfig

    Returns
    -------
    astropy.table.Table
        Columns :data:`DETECT_COLUMNS` (see the module docstring), sorted by decreasing
        ``|score_peak|``.
    """
    if not threshold_sigma > 0:
        raise ValueError(f"threshold_sigma must be > 0, got {threshold_sigma}")
    score = np.ascontiguousarray(subtraction.score, dtype=np.float32)
    mask = np.ascontiguousarray(subtraction.mask, dtype=np.int32)
    rows: list[tuple] = []
    signs = (1.0, -1.0) if config.negative else (1.0,)
    for sign in signs:
        py, px = _find_peaks(score, mask, np.int32(config.mask_bits),
                             np.float32(threshold_sigma), np.float32(sign),
                             int(config.min_separation), int(config.edge))
        if len(py) == 0:
            continue
        areas = _region_areas(score, np.float32(threshold_sigma), np.float32(sign), py, px)
        for y, x, area in zip(py, px, areas.tolist()):
            if area < config.min_area:
                continue
            dx, dy, val = quadratic_peak(sign * score[y - 1:y + 2, x - 1:x + 2])
            rows.append((float(x + dx), float(y + dy), int(x), int(y), float(score[y, x]),
                         float(sign * val), sign < 0, area))
    rows.sort(key=lambda r: -abs(r[5]))
    cols: list[Sequence[Any]] = list(zip(*rows)) if rows else [[] for _ in range(8)]
    dtypes = (np.float64, np.float64, np.int64, np.int64, np.float32, np.float32, bool, np.int64)
    t = Table()
    t["id"] = np.arange(1, len(rows) + 1, dtype=np.int64)
    for name, col, dt in zip(DETECT_COLUMNS[1:], cols, dtypes):
        t[name] = np.asarray(col, dtype=dt)
    t.meta["threshold_sigma"] = float(threshold_sigma)
    return t
