"""Detection of transients on a ZOGY subtraction: peaks of ``S_corr`` (replaces SExtractor on
the difference image).

``S_corr`` is already the matched-filtered image in sigma units (unit noise in blank sky, the
sources' own noise and the registration noise included), so detection is a threshold on it:
every local extremum (maximum for brightenings, minimum for fadings) with ``|S_corr| >=
threshold_sigma``, at least ``min_separation`` pixels from a stronger extremum of the same sign,
outside masked pixels, with at least ``min_area`` connected pixels above threshold.

Positions are those of the matched filter ``S`` (``flux_image``, ``S / F_S``), not of
``S_corr``: for a point source in the PSF-matched difference the maximum-likelihood position
is the peak of ``S``, while ``S_corr = S / sqrt(V(S) + V_ast)`` divides it by a noise that
rises towards a brighter neighbour (its Poisson noise, the registration noise of its
gradient), which pushes the ``S_corr`` peak away from the neighbour: 1.3-1.4 px for a
transient 2-6 px from a star 5-30 times brighter (galsim Kolmogorov and Moffat PSFs,
``tests/diff/test_candidate_positions.py``: rms position errors 5.8-8.0 times the
statistical error per axis with the ``S_corr`` peak, 1.0-1.1 with the ``S`` peak; on host
nuclei 1.7-2.6 and 0.9-1.3; isolated transients 0.9-1.3 with either). From the ``S_corr``
peak pixel the position climbs ``sign * S`` (steepest ascent over the 8 neighbours, unmasked
pixels) to its local maximum within ``position_reach`` pixels (2: the climbs of those tests
stay within 2 px; on the audit's crowded night a reach of 3 let a few fakes' positions climb
2-3 px onto a neighbour's residual, which ``S`` does not down-weight as ``S_corr`` does), and
is refined to sub-pixel by a least-squares quadratic fit to its logarithm on the 3 x 3 pixels
there (exact for a Gaussian peak; the linear values are used when a pixel is <= 0). Where
``S`` has no local maximum within that reach (the shoulder of a brighter source), the
``S_corr`` peak's own sub-pixel position is kept. On the audit's five nights (4 fake draws,
``bench/bench_positions_nights_ab.py``) the median error of S/N > 10 fakes within 6 px of a
brighter source drops by 2-33 % per night, the fakes kept are the same (1837 / 1866) and the
transients kept rise from 348 to 352 of 360 (draw-counts); on the crowded night two fakes
already rejected by real/bogus move beyond the 1.5 px match radius (a neighbour's residual in
``S``).

The subtraction grows its defects over the residual that the light they cut from a static
source (a host galaxy, a star) may leave; a transient a few pixels from a bad column or a
cosmic ray on its host was hidden by that growth. :func:`release_grown_mask` (applied by
:mod:`desgw.diff.pipeline` before detection, ``DiffDetectConfig.release_grown``) clears the
growth where the PSF flux exceeds the most that cut light can leave there.

Output table columns (one row per detection):

==============  =======================================================================
``id``          running number (1-based)
``x``, ``y``    0-based sub-pixel position (x = column): the peak of ``S``
``x_peak``,     0-based integer position of the ``S_corr`` peak pixel
``y_peak``
``score``       ``S_corr`` of the peak pixel (signed)
``score_peak``  ``S_corr`` at its sub-pixel peak (quadratic fit on 3 x 3 pixels, signed)
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
from desgw.diff.zogy_psf import TiledPSF
from desgw.se import maskbits

__all__ = ["DETECT_COLUMNS", "DiffDetectConfig", "detect_transients", "matched_filter_peaks",
           "quadratic_peak", "quadratic_peaks", "release_grown_mask"]

#: Mask bits under which the light is unknown in that image whatever its neighbours hold
#: (saturated cores and their bleed): :func:`release_grown_mask` keeps the growth near them.
OPAQUE_BITS = maskbits.SAT | maskbits.TRAIL | maskbits.EDGEBLEED

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
    release_grown : bool
        Before detecting, clear the mask growth where a source outshines the light the
        in-painting cut (:func:`release_grown_mask`; :mod:`desgw.diff.pipeline` applies it).
    position_reach : int
        Half-side (pixels) of the square around the ``S_corr`` peak pixel within which the
        position climbs to the peak of ``S`` (0: the ``S_corr`` peak; module docstring).
    """

    min_separation: int = 3
    min_area: int = 3
    negative: bool = True
    mask_bits: int = maskbits.UNUSABLE | maskbits.EDGE
    edge: int = 2
    release_grown: bool = True
    position_reach: int = 2

    def __post_init__(self) -> None:
        if self.min_separation < 1 or self.min_area < 1 or self.edge < 1:
            raise ValueError("min_separation, min_area and edge must be >= 1")
        if self.position_reach < 0:
            raise ValueError("position_reach must be >= 0")


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


def quadratic_peaks(patches: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-pixel peaks of (n, 3, 3) patches whose centres are local maxima, all at once.

    Fits a quadratic to ``log(patch)`` (a patch whose values are all > 0) or to ``patch`` by
    least squares; an offset beyond 1 pixel, or a fit with no maximum, gives the centre.

    Returns
    -------
    dx, dy, value : numpy.ndarray
        float64, shape (n,): offsets of the peaks from the central pixels (pixels, |d| <= 1)
        and the fitted peak values.
    """
    p = np.asarray(patches, dtype=np.float64).reshape(-1, 9)
    use_log = np.all(p > 0, axis=1)
    z = np.where(use_log[:, None], np.log(np.where(p > 0, p, 1.0)), p)
    a, b, c, d, e, f = (z @ _PINV.T).T
    det = 4 * d * f - e * e
    good = (d < 0) & (det > 0)
    safe = np.where(good, det, 1.0)
    dx = np.where(good, (-2 * f * b + e * c) / safe, 0.0)
    dy = np.where(good, (-2 * d * c + e * b) / safe, 0.0)
    far = (np.abs(dx) > 1) | (np.abs(dy) > 1)
    dx, dy = np.where(far, 0.0, dx), np.where(far, 0.0, dy)
    val = a + b * dx + c * dy + d * dx * dx + e * dx * dy + f * dy * dy
    return dx, dy, np.where(use_log, np.exp(np.where(use_log, val, 0.0)), val)


def quadratic_peak(patch: np.ndarray) -> tuple[float, float, float]:
    """Sub-pixel peak of one 3 x 3 patch whose centre is a local maximum
    (:func:`quadratic_peaks`).

    Returns
    -------
    dx, dy, value : float
        Offset of the peak from the central pixel (pixels, |d| <= 1) and the fitted peak value.
    """
    dx, dy, val = quadratic_peaks(np.asarray(patch)[None])
    return float(dx[0]), float(dy[0]), float(val[0])


@njit(cache=True, nogil=True)
def _climb(flux, mask, bits, sign, py, px, reach, edge):  # pragma: no cover - numba
    """Per peak (py, px): the pixel where steepest ascent of ``sign * flux`` over the 8
    neighbours (pixels without ``bits``, at least ``edge`` from the border) ends, and whether
    it ends on a local maximum within ``reach`` pixels of the start (False: it would go
    farther) and at least 1 px from the border."""
    ny, nx = flux.shape
    n = py.size
    oy = np.empty(n, np.int64)
    ox = np.empty(n, np.int64)
    ok = np.ones(n, np.bool_)
    for k in range(n):
        cy, cx = py[k], px[k]
        while True:
            best = sign * flux[cy, cx]
            by, bx = cy, cx
            for yy in range(max(cy - 1, edge), min(cy + 2, ny - edge)):
                for xx in range(max(cx - 1, edge), min(cx + 2, nx - edge)):
                    if (mask[yy, xx] & bits) == 0 and sign * flux[yy, xx] > best:
                        best = sign * flux[yy, xx]
                        by, bx = yy, xx
            if by == cy and bx == cx:
                break
            if abs(by - py[k]) > reach or abs(bx - px[k]) > reach:
                ok[k] = False
                break
            cy, cx = by, bx
        if not (1 <= cy < ny - 1 and 1 <= cx < nx - 1):
            ok[k] = False
        oy[k], ox[k] = cy, cx
    return oy, ox, ok


def matched_filter_peaks(flux: np.ndarray, mask: np.ndarray, bits: int, sign: float,
                         py: np.ndarray, px: np.ndarray, reach: int, edge: int
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-pixel peaks of ``sign * flux`` (the matched filter ``S / F_S``) reached from the
    pixels (py, px) (module docstring).

    Returns
    -------
    x, y : numpy.ndarray
        0-based sub-pixel positions (float64; meaningful where ``ok``).
    ok : numpy.ndarray
        bool, False where the ascent ends on no local maximum within ``reach`` pixels.
    """
    f32 = np.ascontiguousarray(flux, dtype=np.float32)
    cy, cx, ok = _climb(f32, np.ascontiguousarray(mask, dtype=np.int32), np.int32(bits),
                        np.float32(sign), np.asarray(py, np.int64), np.asarray(px, np.int64),
                        int(reach), int(edge))
    yy = np.clip(cy, 1, f32.shape[0] - 2)[:, None, None] + np.arange(-1, 2)[None, :, None]
    xx = np.clip(cx, 1, f32.shape[1] - 2)[:, None, None] + np.arange(-1, 2)[None, None, :]
    dx, dy, _ = quadratic_peaks(sign * f32[yy, xx])
    return cx + dx, cy + dy, ok


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
    flux = np.asarray(subtraction.flux_image)
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
        keep = areas >= config.min_area
        py, px, areas = py[keep], px[keep], areas[keep]
        mx, my, mok = matched_filter_peaks(flux, mask, config.mask_bits, sign, py, px,
                                           config.position_reach, config.edge)
        win = np.arange(-1, 2)
        sdx, sdy, sval = quadratic_peaks(
            sign * score[py[:, None, None] + win[None, :, None], px[:, None, None] + win])
        xs = np.where(mok, mx, px + sdx).tolist()
        ys = np.where(mok, my, py + sdy).tolist()
        for k, (y, x, area) in enumerate(zip(py.tolist(), px.tolist(), areas.tolist())):
            rows.append((xs[k], ys[k], int(x), int(y), float(score[y, x]),
                         float(sign * sval[k]), sign < 0, area))
    rows.sort(key=lambda r: -abs(r[5]))
    cols: list[Sequence[Any]] = list(zip(*rows)) if rows else [[] for _ in range(8)]
    dtypes = (np.float64, np.float64, np.int64, np.int64, np.float32, np.float32, bool, np.int64)
    t = Table()
    t["id"] = np.arange(1, len(rows) + 1, dtype=np.int64)
    for name, col, dt in zip(DETECT_COLUMNS[1:], cols, dtypes):
        t[name] = np.asarray(col, dtype=dt)
    t.meta["threshold_sigma"] = float(threshold_sigma)
    return t


#: :func:`_code_at`'s mark of a pixel whose code is not computed yet.
_UNKNOWN_CODE = 255


@njit(cache=True, nogil=True, inline='always')
def _code_at(code, y, x, s_img, s_var, s_msk, t_img, t_var, t_msk, bad_bits,
             opaque):  # pragma: no cover - numba
    """The code of pixel (y, x), computed on the first call and kept in the uint8 map
    ``code`` (:data:`_UNKNOWN_CODE` where not computed yet): bit 1 the search pixel is
    unusable (a ``bad_bits`` mask bit or no data: image or variance not finite, variance <= 0;
    what :func:`desgw.diff.subtract.subtract` in-paints), bit 2 the template's, bit 4 the
    light under it is unknown in both (unusable in both, an ``opaque`` bit: a saturated core
    or its bleed, or no data with no mask bit saying why: a coverage edge)."""
    k = code[y, x]
    if k != _UNKNOWN_CODE:
        return k
    vs, vt = s_var[y, x], t_var[y, x]
    sb = (s_msk[y, x] & bad_bits) != 0 or not (np.isfinite(vs) and vs > 0) \
        or not np.isfinite(s_img[y, x])
    tb = (t_msk[y, x] & bad_bits) != 0 or not (np.isfinite(vt) and vt > 0) \
        or not np.isfinite(t_img[y, x])
    k = 0
    if sb or tb:
        c = s_msk[y, x] | t_msk[y, x]
        k = (1 if sb else 0) | (2 if tb else 0)
        if (sb and tb) or (c & opaque) != 0 or (c & bad_bits) == 0:
            k |= 4
    code[y, x] = k
    return k


@njit(cache=True, nogil=True, inline='always')
def _near_max(img, code, bit, y, x, r, own, g, cy, cx, s_img, s_var, s_msk, t_img, t_var,
              t_msk, bad_bits, opaque):  # pragma: no cover - numba
    """Largest value of ``img`` over the pixels within ``r`` of (y, x) without ``bit`` in
    their code (:func:`_code_at`: usable in that image), less ``own g[|yy - cy|, |xx -
    cx|]`` (a candidate's own light, :func:`_unit_gauss`); NaN if none."""
    ny, nx = img.shape
    best = -np.inf
    for yy in range(max(y - r, 0), min(y + r + 1, ny)):
        for xx in range(max(x - r, 0), min(x + r + 1, nx)):
            if (_code_at(code, yy, xx, s_img, s_var, s_msk, t_img, t_var, t_msk, bad_bits,
                         opaque) & bit) == 0:
                v = float(img[yy, xx])
                if own != 0.0:
                    v -= own * g[abs(yy - cy), abs(xx - cx)]
                if v > best:
                    best = v
    return best if best > -np.inf else np.nan


def _unit_gauss(fwhm: Any, m: int) -> np.ndarray:
    """(m, m) float64 table: a circular Gaussian of flux 1 and that FWHM (px) at the offsets
    (|dy|, |dx|) px from its centre; zeros where the FWHM is missing or not positive (no
    light is then taken off)."""
    f = float(fwhm) if fwhm is not None else np.nan
    if not (np.isfinite(f) and f > 0):
        return np.zeros((m, m))
    a = 4.0 * np.log(2.0) / f ** 2
    d2 = np.arange(m, dtype=np.float64) ** 2
    return a / np.pi * np.exp(-a * (d2[:, None] + d2[None, :]))


@njit(cache=True, nogil=True, inline='always')
def _cached_max(img, cache, deep, known, hole, code, bit, yy, xx, near, s_img, s_var, s_msk,
                t_img, t_var, t_msk, bad_bits, opaque):  # pragma: no cover - numba
    """:func:`_near_max` of ``img`` at (yy, xx) without a candidate's light (``own`` 0),
    computed once per pixel and kept in ``cache`` (flag ``known`` in ``deep``); NaN (and
    flag ``hole`` in ``deep``) where no usable pixel lies within ``near``."""
    if deep[yy, xx] & known:
        return float(cache[yy, xx])
    v = _near_max(img, code, bit, yy, xx, near, 0.0, img[:1, :1], 0, 0, s_img, s_var, s_msk,
                  t_img, t_var, t_msk, bad_bits, opaque)
    cache[yy, xx] = v
    deep[yy, xx] |= known
    if np.isnan(v):
        deep[yy, xx] |= hole
    return v


@njit(cache=True, nogil=True, inline='always')
def _candidate_stamp(stamps, reach, tile, y, x, f):  # pragma: no cover - numba
    """Candidate (y, x) of flux ``f``: the stamp's half size ``h``, its PSF tile (j, i), its
    reach ``r`` (px) and its own light in the search and the template (``own_n``,
    ``own_r``, e-). The candidate's own light is new light, not static: a Gaussian of flux
    ``|F|`` and the image's FWHM is taken off the image it is in (the search for F > 0, the
    template for F < 0)."""
    j = min(y // tile, stamps.shape[0] - 1)
    i = min(x // tile, stamps.shape[1] - 1)
    own_n = f if f > 0 else 0.0
    own_r = -f if f < 0 else 0.0
    return stamps.shape[2] // 2, j, i, reach[j, i], own_n, own_r


@njit(cache=True, nogil=True)
def _bounds(s_img, s_var, s_msk, t_img, t_var, t_msk, bad_bits, opaque, scale, stamps, inv,
            reach, tile, near, g_n, g_r, code, deep, max_s, max_t, y, x,
            f):  # pragma: no cover - numba
    """Bounds on :func:`_release`'s two cut-light sums of candidate (y, x) of flux ``f``,
    without the per-candidate window searches: ``(lo_n, hi_n, lo_r, hi_r, s_abs, state, qy,
    qx)``.

    The unusable image's light at q is ``max_v (I(v) - own g(v - p))`` over the usable
    pixels v within ``near`` of q (:func:`_near_max`). With ``M(q) = max_v I(v)`` (cached
    per pixel, :func:`_cached_max`) and ``g`` decreasing away from the candidate p, it lies in
    ``[M - own g_max, M]``, ``g_max`` the table's value at the window's nearest offset to p.
    Every other term is the exact one. ``s_abs`` bounds the sum of the terms' magnitudes
    (for the rounding slack); ``state`` is 0 (bounds valid), 1 (a pixel of unknown light at
    (qy, qx): the candidate keeps its growth) or 2 (a value not finite: decide exactly)."""
    ny, nx = s_img.shape
    h, j, i, r, own_n, own_r = _candidate_stamp(stamps, reach, tile, y, x, f)
    lo_n = 0.0
    hi_n = 0.0
    lo_r = 0.0
    hi_r = 0.0
    s_abs = 0.0
    for yy in range(max(y - r, 0), min(y + r + 1, ny)):
        for xx in range(max(x - r, 0), min(x + r + 1, nx)):
            k = _code_at(code, yy, xx, s_img, s_var, s_msk, t_img, t_var, t_msk, bad_bits,
                         opaque)
            if k == 0:
                continue
            if k & 4:
                return lo_n, hi_n, lo_r, hi_r, s_abs, 1, yy, xx
            w = float(stamps[j, i, yy - y + h, xx - x + h]) * inv[j, i]
            dy, dx = abs(yy - y), abs(xx - x)
            gy, gx = max(dy - near, 0), max(dx - near, 0)
            if k & 2:  # template unusable: the search's light is known
                vn = float(s_img[yy, xx]) - own_n * g_n[dy, dx]
                a_n = w * vn
                m = _cached_max(t_img, max_t, deep, 8, 2, code, 2, yy, xx, near, s_img,
                                s_var, s_msk, t_img, t_var, t_msk, bad_bits, opaque)
                if np.isnan(m):
                    vr = float(s_img[yy, xx]) - own_r * g_r[dy, dx]
                    a_lo = w * vr
                    a_hi = a_lo
                else:
                    a_lo = w * ((m - own_r / scale * g_r[gy, gx]) * scale)
                    a_hi = w * (m * scale)
                b_n_lo = a_n
                b_n_hi = a_n
                b_r_lo = min(a_lo, a_hi)
                b_r_hi = max(a_lo, a_hi)
            else:
                vr = float(t_img[yy, xx]) * scale - own_r * g_r[dy, dx]
                a_r = w * vr
                m = _cached_max(s_img, max_s, deep, 4, 1, code, 1, yy, xx, near, s_img,
                                s_var, s_msk, t_img, t_var, t_msk, bad_bits, opaque)
                if np.isnan(m):
                    vn = float(t_img[yy, xx]) * scale - own_n * g_n[dy, dx]
                    a_lo = w * vn
                    a_hi = a_lo
                else:
                    a_lo = w * (m - own_n * g_n[gy, gx])
                    a_hi = w * m
                b_r_lo = a_r
                b_r_hi = a_r
                b_n_lo = min(a_lo, a_hi)
                b_n_hi = max(a_lo, a_hi)
            if not (np.isfinite(b_n_lo) and np.isfinite(b_n_hi) and np.isfinite(b_r_lo)
                    and np.isfinite(b_r_hi)):
                return lo_n, hi_n, lo_r, hi_r, s_abs, 2, -1, -1
            lo_n += b_n_lo
            hi_n += b_n_hi
            lo_r += b_r_lo
            hi_r += b_r_hi
            s_abs += max(abs(b_n_lo), abs(b_n_hi)) + max(abs(b_r_lo), abs(b_r_hi))
    return lo_n, hi_n, lo_r, hi_r, s_abs, 0, -1, -1


@njit(cache=True, nogil=True)
def _abs_range(lo, hi):  # pragma: no cover - numba
    """Least and largest ``|c|`` for ``c`` in ``[lo, hi]``."""
    big = max(abs(lo), abs(hi))
    if lo <= 0.0 <= hi:
        return 0.0, big
    return min(abs(lo), abs(hi)), big


@njit(cache=True, nogil=True)
def _release(score, flux, flux_err, out_mask, bits, s_img, s_var, s_msk, t_img, t_var, t_msk,
             bad_bits, opaque, scale, stamps, reach, tile, thr, nsigma, near, g_n, g_r,
             factor, use_bounds=True):  # pragma: no cover - numba
    """Clear the grown ``bits`` of the pixels that hold more flux than the in-painting's cut
    light can put there (:func:`release_grown_mask`); returns the number released.

    The pixels' codes (:func:`_code_at`) are computed where a masked pixel with a
    significant score needs them only (its stamp and the pixels next to it), not over the
    whole image: a whole-image map read the six input planes (~25 ms per DECam CCD).

    Each candidate is first decided from bounds on its two sums (:func:`_bounds`: the
    unusable image's largest usable neighbour per pixel cached, the candidate's own light
    taken off it as a range); only when the bounds straddle the threshold (with a relative
    slack of 1e-9 of the terms' magnitudes against rounding) are the sums computed exactly,
    with a window search per pixel and candidate. Deciding every candidate exactly cost
    0.84 CPU-s on a dense CCD (49,000 masked significant pixels next to wide holes, the
    same window searched once per candidate whose stamp reaches it); the decisions are the
    same (``use_bounds=False`` decides every candidate exactly, for the tests)."""
    ny, nx = score.shape
    code = np.full((ny, nx), _UNKNOWN_CODE, np.uint8)
    nty, ntx, size = stamps.shape[0], stamps.shape[1], stamps.shape[2]
    # 1 / sum(P^2) per tile: the PSF-fit flux at p of a unit pixel at q is P(q - p) / sum P^2
    inv = np.empty((nty, ntx))
    for j in range(nty):
        for i in range(ntx):
            s2 = 0.0
            for a in range(size):
                for b in range(size):
                    s2 += float(stamps[j, i, a, b]) ** 2
            inv[j, i] = 1.0 / s2 if s2 > 0 else 0.0
    # per pixel, bits 1 / 2: no usable pixel of the search / the template within ``near``
    # (deep inside a wide hole the search fails); 4 / 8: ``max_s`` / ``max_t`` hold that
    # image's largest usable value within ``near`` (written only where computed)
    deep = np.zeros((ny, nx), np.uint8)
    max_s = np.empty((ny, nx), np.float32)
    max_t = np.empty((ny, nx), np.float32)
    # the last pixels of unknown light found (code bit 4, the same for every candidate): a
    # candidate whose stamp holds one keeps its growth without a scan (the candidates of a
    # residual cluster share them)
    n_memo = 16
    memo_y = np.full(n_memo, -(1 << 30), np.int64)
    memo_x = np.full(n_memo, -(1 << 30), np.int64)
    i_memo = 0
    n = 0
    for y in range(ny):
        for x in range(nx):
            if (out_mask[y, x] & bits) == 0 or abs(score[y, x]) < thr:
                continue  # not masked or no source
            if _code_at(code, y, x, s_img, s_var, s_msk, t_img, t_var, t_msk, bad_bits,
                        opaque) != 0:
                continue  # a defect itself (no data there)
            f, e = flux[y, x], flux_err[y, x]
            if not (np.isfinite(f) and np.isfinite(e)):
                continue
            r = reach[min(y // tile, nty - 1), min(x // tile, ntx - 1)]
            hit = False
            for m in range(n_memo if use_bounds else 0):
                if abs(memo_y[m] - y) <= r and abs(memo_x[m] - x) <= r:
                    hit = True
                    break
            if hit:
                continue  # a pixel of unknown light in the stamp: keeps its growth
            lhs = abs(f) - nsigma * e
            if use_bounds and scale > 0:
                lo_n, hi_n, lo_r, hi_r, s_abs, state, qy, qx = _bounds(
                    s_img, s_var, s_msk, t_img, t_var, t_msk, bad_bits, opaque, scale, stamps,
                    inv, reach, tile, near, g_n, g_r, code, deep, max_s, max_t, y, x, f)
                if state == 1:
                    memo_y[i_memo] = qy
                    memo_x[i_memo] = qx
                    i_memo = (i_memo + 1) % n_memo
                    continue  # a pixel of unknown light in the stamp: keeps its growth
                if state == 0:
                    ln, un = _abs_range(lo_n, hi_n)
                    lr, ur = _abs_range(lo_r, hi_r)
                    slack = 1e-9 * (factor * s_abs + abs(lhs))
                    if lhs > factor * max(un, ur) + slack:
                        out_mask[y, x] = s_msk[y, x] | t_msk[y, x]
                        n += 1
                        continue
                    if lhs <= factor * max(ln, lr) - slack:
                        continue
            if _release_exact(s_img, s_var, s_msk, t_img, t_var, t_msk, bad_bits, opaque,
                              scale, stamps, inv, reach, tile, near, g_n, g_r, code, deep,
                              y, x, f, lhs, factor):
                out_mask[y, x] = s_msk[y, x] | t_msk[y, x]
                n += 1
    return n


@njit(cache=True, nogil=True)
def _release_exact(s_img, s_var, s_msk, t_img, t_var, t_msk, bad_bits, opaque, scale, stamps,
                   inv, reach, tile, near, g_n, g_r, code, deep, y, x, f, lhs,
                   factor):  # pragma: no cover - numba
    """Whether candidate (y, x) of flux ``f`` is released (:func:`_release`), its two cut
    sums computed exactly; ``lhs`` is ``|f| - nsigma sigma_f``."""
    ny, nx = s_img.shape
    h, j, i, r, own_n, own_r = _candidate_stamp(stamps, reach, tile, y, x, f)
    cut_n = 0.0  # search light cut (e-), weighted
    cut_r = 0.0  # template light cut (search scale), weighted
    for yy in range(max(y - r, 0), min(y + r + 1, ny)):
        for xx in range(max(x - r, 0), min(x + r + 1, nx)):
            k = _code_at(code, yy, xx, s_img, s_var, s_msk, t_img, t_var, t_msk, bad_bits,
                         opaque)
            if k == 0:
                continue
            if k & 4:
                return False
            w = float(stamps[j, i, yy - y + h, xx - x + h]) * inv[j, i]
            dy, dx = abs(yy - y), abs(xx - x)
            # the unusable image's light: its largest within ``near`` px; deeper inside a
            # wide hole (a coverage edge, a bad-pixel box) the known image's own static
            # light there (the same source, search scale)
            if k & 2:  # template unusable: the search's light is known
                vn = float(s_img[yy, xx]) - own_n * g_n[dy, dx]
                vr = np.nan
                if (deep[yy, xx] & 2) == 0:
                    vr = _near_max(t_img, code, 2, yy, xx, near, own_r / scale, g_r, y, x,
                                   s_img, s_var, s_msk, t_img, t_var, t_msk, bad_bits,
                                   opaque) * scale
                    if np.isnan(vr):
                        deep[yy, xx] |= 2
                if np.isnan(vr):
                    vr = float(s_img[yy, xx]) - own_r * g_r[dy, dx]
            else:
                vr = float(t_img[yy, xx]) * scale - own_r * g_r[dy, dx]
                vn = np.nan
                if (deep[yy, xx] & 1) == 0:
                    vn = _near_max(s_img, code, 1, yy, xx, near, own_n, g_n, y, x, s_img,
                                   s_var, s_msk, t_img, t_var, t_msk, bad_bits, opaque)
                    if np.isnan(vn):
                        deep[yy, xx] |= 1
                if np.isnan(vn):
                    vn = float(t_img[yy, xx]) * scale - own_n * g_n[dy, dx]
            if not (np.isfinite(vn) and np.isfinite(vr)):
                return False
            cut_n += w * vn
            cut_r += w * vr
    return lhs > factor * max(abs(cut_n), abs(cut_r))


def release_grown_mask(subtraction: Subtraction, search_image: np.ndarray,
                       search_var: np.ndarray, search_mask: np.ndarray,
                       template_image: np.ndarray, template_var: np.ndarray,
                       template_mask: np.ndarray, *, threshold_sigma: float = 5.0,
                       bits: int = maskbits.UNUSABLE | maskbits.EDGE,
                       bound_factor: float = 1.0) -> tuple[np.ndarray, int]:
    """The subtraction's mask with its growth cleared where a source outshines the cut light.

    :func:`desgw.diff.subtract.subtract` in-paints the pixels unusable in either image (0 in
    both) and grows a cluster of them over the residual that the light it cut from a static
    source may leave (its *Mask growth*). That residual is linear in the cut light: in the PSF
    flux image ``F`` (``flux_image``, a PSF fit of the difference at each pixel) a cut pixel
    ``q`` of light ``c_q`` (e-) adds about ``c_q P(q - p) / sum P^2`` at ``p`` (``P`` the
    difference PSF); the light the unusable image would have had there is unknown but, for a
    static source, of the same size and sign, so the two cuts partly cancel. Hence
    ``|F_res(p)| <= |sum_q w_q c_q|`` summed over the stamp around ``p``, once for the search
    light cut where the template is unusable and once for the template's (search scale)
    where the search is. The unusable image's light at ``q`` is estimated by its largest
    usable pixel within 2 px; deeper inside a wide hole (a coverage edge that the resampling
    marks EDGE | BADPIX, a bad-pixel box) by the other image's light at ``q``, the same
    static source (before, such a pixel counted as unknown and kept the growth of every
    pixel whose stamp reached it: a transient 6 px from a template's coverage edge was lost
    on the audit's crowded night). Only static light counts: the candidate's own light at ``p`` is new
    light, in one image only, and cutting it leaves no residual (the difference just lacks
    that part of it), so a circular Gaussian of flux ``|F(p)|`` and that image's FWHM
    (``meta["fwhm_search"]`` for ``F > 0``, ``meta["fwhm_template"]`` for a fading ``F < 0``)
    centred on ``p`` is taken off the light of that image before it is summed. Without it
    the bound grew with the candidate's own flux, and a transient next to a template defect
    (or a fake injected there) stayed under the growth (the audit lost a fake this way);
    for a residual it lowers the bound by ``|F|`` times the share of the PSF the cut
    pixels hold, which the 5-sigma margin and the bound's slack cover (the tests: no star
    residual gets through). A grown (not itself unusable) pixel whose ``|F| - threshold_sigma
    sigma_F`` exceeds that bound holds a source the residual cannot make: its grown bits are
    cleared (its mask becomes the OR of the input masks there), so a transient a few pixels
    from a bad column or a cosmic ray on its host is detected where the growth hid it (issue
    13 item 3). Pixels whose stamp holds a pixel unusable in both images (its light unknown:
    a shared defect, a saturated core) or without data and without a bit saying why (a
    coverage edge) keep their growth.

    Parameters
    ----------
    subtraction : Subtraction
        :func:`desgw.diff.subtract.subtract` of these inputs (its ``mask``, ``score``,
        ``flux_image``, ``flux_err_image``, ``psf_diff`` and ``meta["scale"]``).
    search_image, search_var, search_mask : numpy.ndarray
        (ny, nx) the search image (e-, background subtracted), its variance (e^2; not finite
        or <= 0: no data) and mask bits, as given to ``subtract``.
    template_image, template_var, template_mask : numpy.ndarray
        The same for the registered template (template units, scaled by ``meta["scale"]``).
    threshold_sigma : float
        Detection threshold (sigma): the margin by which ``|F|`` must exceed the bound.
    bits : int
        Mask bits that mark an unusable pixel (in the inputs) and that the growth sets.
    bound_factor : float
        Multiplier of the bound on the residual's flux (1: the bound above; 0 clears the
        growth wherever ``|F|`` is significant, which lets the residuals through).

    Returns
    -------
    mask : numpy.ndarray
        (ny, nx) int32 new mask (the subtraction's is not modified).
    n_released : int
        Number of pixels whose growth was cleared.
    """
    if not threshold_sigma > 0:
        raise ValueError(f"threshold_sigma must be > 0, got {threshold_sigma}")
    if not bound_factor >= 0:
        raise ValueError(f"bound_factor must be >= 0, got {bound_factor}")
    mask = np.array(subtraction.mask, dtype=np.int32, copy=True)
    n = _release(*_release_args(subtraction, mask, search_image, search_var, search_mask,
                                template_image, template_var, template_mask, threshold_sigma,
                                bits, bound_factor))
    return mask, int(n)


def _release_args(subtraction: Subtraction, mask: np.ndarray, search_image: np.ndarray,
                  search_var: np.ndarray, search_mask: np.ndarray, template_image: np.ndarray,
                  template_var: np.ndarray, template_mask: np.ndarray, threshold_sigma: float,
                  bits: int, bound_factor: float) -> tuple[Any, ...]:
    """The arguments of :func:`_release` for :func:`release_grown_mask` (``mask``: the int32
    mask it writes)."""
    shape = mask.shape
    arrays = (search_image, search_var, search_mask, template_image, template_var,
              template_mask)
    for name, a in zip(("search_image", "search_var", "search_mask", "template_image",
                        "template_var", "template_mask"), arrays):
        if np.shape(a) != shape:
            raise ValueError(f"{name} has shape {np.shape(a)}, expected {shape}")
    psf = subtraction.psf_diff
    if not isinstance(psf, TiledPSF):
        raise TypeError("subtraction.psf_diff must be a TiledPSF")
    f32 = np.float32
    s_img = np.ascontiguousarray(search_image, f32)
    t_img = np.ascontiguousarray(template_image, f32)
    s_msk = np.ascontiguousarray(search_mask, np.int32)
    t_msk = np.ascontiguousarray(template_mask, np.int32)
    # the cut light counts within 3 FWHM of the difference PSF (its wings beyond hold
    # < 0.2 % of the peak for a Moffat beta 2.5), at most the stamp
    stamps = np.ascontiguousarray(psf.stamps, f32)
    nty, ntx = stamps.shape[:2]
    reach = np.array([[min(stamps.shape[-1] // 2,
                           int(np.ceil(3.0 * psf.fwhm_at(i * psf.tile, j * psf.tile))))
                       for i in range(ntx)] for j in range(nty)], np.int64)
    m = int(reach.max()) + 3  # the offsets _release reaches: its stamp and _near_max's 2 px
    return (np.ascontiguousarray(subtraction.score, f32),
            np.ascontiguousarray(subtraction.flux_image, f32),
            np.ascontiguousarray(subtraction.flux_err_image, f32), mask, np.int32(bits),
            s_img, np.ascontiguousarray(search_var, f32), s_msk, t_img,
            np.ascontiguousarray(template_var, f32), t_msk,
            np.int32(int(bits) & ~maskbits.EDGE), np.int32(OPAQUE_BITS),
            float(subtraction.meta.get("scale", 1.0)),
            stamps, reach, int(psf.tile), f32(threshold_sigma), float(threshold_sigma), 2,
            _unit_gauss(subtraction.meta.get("fwhm_search"), m),
            _unit_gauss(subtraction.meta.get("fwhm_template"), m), float(bound_factor))
