"""Satellite and aircraft trails: straight lines found by a Hough transform and masked.

A trail crosses a CCD as a straight line a few FWHM wide: on a search image it is the
commonest source of bogus linear detections, and nothing else masks it (L.A.Cosmic spares it,
the bleed-trail mask only follows saturated columns). :func:`find_trails`:

1. **Significance image**: the background-subtracted image is summed in ``bin x bin`` blocks
   (4 by default) and divided by the noise of each block sum (from the inverse-variance
   weight), unusable pixels left out; a trail of surface brightness ``s`` per pixel then has a
   block S/N of about ``bin s / sigma``, four times its per-pixel S/N.
2. **Candidate pixels**: blocks above ``block_snr`` (2.5). Connected groups of blocks smaller
   than ``max_blob`` blocks whose bounding box is shorter than ``min_length_px`` are stars and
   galaxies and are left out, so that the transform sees the line, not the sources it crosses.
3. **Hough transform** of the candidate blocks on a ``(theta, rho)`` grid (0.5 deg, 1 block).
   In a crowded field the sources merge into large groups of candidate blocks (8-12 % of the
   blocks at ~11,000 objects per CCD), so any line through a dense patch collects votes. A
   line's votes are therefore counted **above the local background**: the candidate fraction
   of the parallel lines ``bg_inner``-``bg_outer`` blocks away on both sides (their median;
   the CCD's mean candidate fraction where too few of them lie on the CCD) is what a line
   without a trail gets, and the line's excess fraction ``(f - f_bg) / (1 - f_bg)`` of its
   chord through the CCD must reach ``min_vote_fraction`` (and ``min_length_px / bin`` blocks).
   On a sparse field ``f_bg`` is ~0 and this is the plain vote fraction.
4. **Line fit**: the strongest line is refined by a straight-line fit (principal axis) to the
   candidate blocks within 3 blocks of it, weighted by their S/N (capped at its 90th
   percentile), iterated: a bright trail's candidate blocks form a plateau several blocks
   wide and the Hough peak may be any bin of it, and the grid's 0.5 deg steps put the line
   up to 9 px off at the end of a 4,000 px chord, more than a trail's FWHM.
5. **Ridge test**: a trail stands above the bands 2.5-4 FWHM beside it along its whole
   length; a line the transform drew through a chain of sources in a crowded field does so
   in some stretches only. The line is cut into 128 px segments, and in three quarters of
   them the median within 0.5 FWHM of the line must exceed the larger median of the two side
   bands by ``min_peak_sigma`` pixel sigmas; a line that fails is dropped (its blocks are
   removed and the search goes on).
6. **Width and mask**: the median profile across the line (unbinned, 1-px bins of distance,
   median along the line) is measured **above its own baseline** (the median profile 90-180
   px from the line: in a crowded field the median of a background-subtracted image is
   0.3-0.5 sigma above zero, and a profile compared with zero never ended, which masked
   60 px on each side); the half-width is where it falls below ``edge_sigma`` pixel sigmas
   (at least 2 FWHM); pixels within that distance of the line, along its whole chord through
   the CCD, get ``STREAK`` (a satellite trail crosses the whole CCD). The line's blocks are
   removed and the search repeated (up to ``max_trails``).

Measured on a galsim CCD (4096 x 2048 px, 580 stars and galaxies, FWHM 4 px) with the
simulator's own trail renderer (tests/se/test_trails.py): no trail found without one; trails
of 6000 and 1200 e- per arcsec (peak ~2 pixel sigmas) found, every pixel where the trail adds
> 0.2 sigma masked, no star farther than ~80 px from the line masked, < 2 % of the CCD
masked. On crowded CCDs (~11,000 objects, Moffat beta 2.5 and Kolmogorov PSFs; the same test
file, and the crowded simulated night of the science audit) no line is found without a trail,
and a trail of peak ~3 pixel sigmas is found and masked to where it adds 0.2 sigma. Trails
much fainter than ~2 pixel sigmas at their peak break into fragments shorter than
``min_length_px`` in the block image and are not found.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy import ndimage

from desgw.errors import DataTypeError
from desgw.se.maskbits import UNUSABLE

__all__ = ["Trail", "TrailConfig", "TrailResult", "find_trails"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrailConfig:
    """Settings of :func:`find_trails`.

    Attributes
    ----------
    bin : int
        Side of the blocks of the significance image (pixels).
    block_snr : float
        S/N of a block for it to be a candidate.
    min_length_px : float
        Groups of candidate blocks shorter than this (pixels) are sources, not trails; a
        trail must also have this many pixels' worth of blocks on its line.
    max_blob : int
        Groups of more blocks than this are kept whatever their extent (a trail through a
        bright star joins it).
    min_vote_fraction : float
        Fraction of the line's chord through the CCD that must be candidate blocks above the
        local background fraction: ``(f - f_bg) / (1 - f_bg)`` (module docstring, step 3).
    bg_inner, bg_outer : int
        The local background fraction of a line is the median candidate fraction of the
        parallel lines this many blocks (inner to outer) away on both sides.
    max_trails : int
        Most trails per CCD.
    edge_sigma : float
        The mask reaches out to where the trail's median profile falls below this many
        pixel sigmas above its baseline.
    min_peak_sigma : float
        A line that does not stand this many pixel sigmas above its sides along three
        quarters of its length is not a trail (:func:`_ridge_contrast`).
    mask_bits : int
        Mask bits of pixels left out of the significance image.
    """

    bin: int = 4
    block_snr: float = 2.5
    min_length_px: float = 200.0
    max_blob: int = 400
    min_vote_fraction: float = 0.25
    bg_inner: int = 8
    bg_outer: int = 40
    max_trails: int = 4
    edge_sigma: float = 0.2
    min_peak_sigma: float = 0.3
    mask_bits: int = UNUSABLE

    def __post_init__(self) -> None:
        if self.bin < 1:
            raise ValueError(f"TrailConfig.bin must be >= 1, got {self.bin}")
        if not 0 < self.min_vote_fraction <= 1:
            raise ValueError(f"TrailConfig.min_vote_fraction must be in (0, 1], got "
                             f"{self.min_vote_fraction}")
        if not 0 < self.bg_inner < self.bg_outer:
            raise ValueError(f"TrailConfig needs 0 < bg_inner < bg_outer, got {self.bg_inner}, "
                             f"{self.bg_outer}")


@dataclass(frozen=True)
class Trail:
    """One trail: the line ``x cos(theta) + y sin(theta) = rho`` (0-based pixels).

    Attributes
    ----------
    theta_deg : float
        Angle of the line's normal from the +x axis (deg, 0-180).
    rho : float
        Distance of the line from pixel (0, 0) (pixels).
    half_width : float
        Half-width of the masked band (pixels).
    votes : int
        Candidate blocks within 1.5 blocks of the line.
    background_fraction : float
        Candidate fraction of the parallel lines beside it (module docstring, step 3).
    peak_sigma : float
        How far the line stands above its sides along three quarters of its length (pixel
        sigmas; :func:`_ridge_contrast`).
    """

    theta_deg: float
    rho: float
    half_width: float
    votes: int
    background_fraction: float = 0.0
    peak_sigma: float = math.nan


@dataclass(frozen=True)
class TrailResult:
    """Trails found on a CCD and their mask.

    Attributes
    ----------
    trails : tuple of Trail
    mask : numpy.ndarray
        (ny, nx) bool, the pixels within a trail's band.
    """

    trails: tuple[Trail, ...]
    mask: np.ndarray


@njit(cache=True)
def _block_sums(image, weight, mask, bits, b):  # pragma: no cover - numba
    """Sums of the usable pixels' values and variances (``1 / weight``) in ``b x b`` blocks.

    One pass over the CCD and no full-size temporaries (building float64 copies of the image
    and the variance first cost ~0.2 s per CCD). A pixel is usable when its weight is > 0,
    its value finite and ``mask & bits == 0``; ``mask`` may be a (1, 1) zero array for none.
    Returns float64 ``(sums, variances)`` of shape ``(ny // b, nx // b)``.
    """
    ny, nx = image.shape
    my, mx = ny // b, nx // b
    full_mask = mask.shape[0] == ny and mask.shape[1] == nx
    s = np.zeros((my, mx))
    v = np.zeros((my, mx))
    for y in range(my * b):
        by = y // b
        for x in range(mx * b):
            w = weight[y, x]
            d = image[y, x]
            if not (w > 0) or not np.isfinite(d):
                continue
            if full_mask and (mask[y, x] & bits) != 0:
                continue
            bx = x // b
            s[by, bx] += d
            v[by, bx] += 1.0 / np.float64(w)
    return s, v


def _block_snr(image: np.ndarray, weight: np.ndarray, mask: np.ndarray | None, bits: int,
               b: int) -> tuple[np.ndarray, np.ndarray]:
    """S/N of the ``b x b`` block sums of the usable pixels (0 where a block has none), and
    whether a block has any usable pixel."""
    m = np.zeros((1, 1), dtype=np.int32) if mask is None else np.ascontiguousarray(mask)
    s, v = _block_sums(np.ascontiguousarray(image), np.ascontiguousarray(weight), m,
                       np.int64(bits), int(b))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(v > 0, s / np.sqrt(v), 0.0), v > 0


def _chord_length(shape: tuple[int, int], theta: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Length of the line x cos t + y sin t = rho inside [0, nx] x [0, ny] (same units)."""
    ny, nx = shape
    c, s = np.cos(theta), np.sin(theta)
    out = np.zeros(np.broadcast(theta, rho).shape)
    pts = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for xb in (0.0, float(nx)):
            y = (rho - xb * c) / s
            pts.append((np.full_like(out, xb), y))
        for yb in (0.0, float(ny)):
            x = (rho - yb * s) / c
            pts.append((x, np.full_like(out, yb)))
    xs = np.stack([p[0] for p in pts])
    ys = np.stack([p[1] for p in pts])
    ok = (xs >= -1e-6) & (xs <= nx + 1e-6) & (ys >= -1e-6) & (ys <= ny + 1e-6) & np.isfinite(xs) \
        & np.isfinite(ys)
    xs = np.where(ok, xs, np.nan)
    ys = np.where(ok, ys, np.nan)
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # lines that miss the CCD: all NaN
        dx = np.nanmax(xs, axis=0) - np.nanmin(xs, axis=0)
        dy = np.nanmax(ys, axis=0) - np.nanmin(ys, axis=0)
    out = np.hypot(dx, dy)
    return np.where(np.isfinite(out), out, 0.0)


@functools.lru_cache(maxsize=8)
def _hough_grid(my: int, mx: int, min_vote_fraction: float, min_votes: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(thetas, rho_edges, chord, need)`` of the Hough transform of a ``(my, mx)`` block grid.

    ``chord`` (theta, rho bin) is the length of the bin's central line through the grid
    (blocks): the number of blocks in its 1-block-wide strip. ``need`` is the least number of
    votes of a line: ``min_vote_fraction`` of its chord, at least ``min_votes``. They depend
    only on the grid, so they are computed once per process (0.1 s for a 4 x 4-binned CCD)
    and shared read-only.
    """
    thetas = np.deg2rad(np.arange(0.0, 180.0, 0.5))
    diag = float(np.hypot(my, mx))
    rho_edges = np.arange(-diag, diag + 1.0, 1.0)
    chord = _chord_length((my, mx), thetas[:, None],
                          0.5 * (rho_edges[1:] + rho_edges[:-1])[None, :])
    need = np.maximum(min_vote_fraction * chord, min_votes)
    for a in (thetas, rho_edges, chord, need):
        a.setflags(write=False)
    return thetas, rho_edges, chord, need


@njit(cache=True)
def _hough_votes(xc, yc, cos_t, sin_t, rho0, nrho):  # pragma: no cover - numba
    """Votes of the points ``(xc, yc)`` in the ``(theta, rho)`` bins: bin ``j`` of angle
    ``k`` holds ``rho0 + j <= x cos + y sin < rho0 + j + 1`` (clipped to the grid)."""
    nt = cos_t.size
    acc = np.zeros((nt, nrho))
    for i in range(xc.size):
        x, y = xc[i], yc[i]
        for k in range(nt):
            j = int(np.floor(x * cos_t[k] + y * sin_t[k] - rho0))
            j = min(max(j, 0), nrho - 1)
            acc[k, j] += 1.0
    return acc


def _background_fraction(acc: np.ndarray, chord: np.ndarray, ks: np.ndarray, js: np.ndarray,
                         inner: int, outer: int, fallback: float) -> np.ndarray:
    """Candidate fraction of the lines parallel to the bins ``(ks, js)``, ``inner``-``outer``
    bins away on both sides (median over those with at least half the bin's chord;
    ``fallback`` where fewer than 8 of them do)."""
    nrho = acc.shape[1]
    offs = np.concatenate([np.arange(-outer, -inner + 1), np.arange(inner, outer + 1)])
    jj = js[:, None] + offs[None, :]
    valid = (jj >= 0) & (jj < nrho)
    jj = np.clip(jj, 0, nrho - 1)
    a = acc[ks[:, None], jj]
    c = chord[ks[:, None], jj]
    valid &= c >= 0.5 * chord[ks, js][:, None]
    frac = np.where(valid, a / np.where(c > 0, c, 1.0), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows without a valid neighbour
        p = np.nanmedian(frac, axis=1)
    p = np.where(valid.sum(axis=1) >= 8, p, fallback)
    return np.clip(np.nan_to_num(p, nan=fallback), 0.0, 0.95)


def _fit_line(xc: np.ndarray, yc: np.ndarray, wt: np.ndarray, theta: float, rho: float
              ) -> tuple[float, float]:
    """The line ``(theta, rho)`` refitted to the points within 3 of it: their principal axis,
    each point weighted by ``wt`` (its block S/N), iterated (block units). A bright trail's
    candidate blocks form a plateau several blocks wide, and the Hough peak may be any bin of
    it; the S/N weighting (capped at its 90th percentile, so that a bright star beside the
    line does not pull it) pulls the line onto the trail's ridge. The line is left as it is
    where fewer than 10 points are near it or a fit would turn it by more than 2 deg (pulled
    off by other sources)."""
    for _ in range(8):
        on = np.abs(xc * math.cos(theta) + yc * math.sin(theta) - rho) < 3.0
        if on.sum() < 10:
            break
        x, y, w = xc[on], yc[on], wt[on]
        w = np.minimum(w, np.percentile(w, 90.0))  # a bright star beside the line
        sw = float(w.sum())
        mx, my = float((w * x).sum() / sw), float((w * y).sum() / sw)
        dx, dy = x - mx, y - my
        cov = np.array([[np.sum(w * dx * dx), np.sum(w * dx * dy)],
                        [np.sum(w * dx * dy), np.sum(w * dy * dy)]]) / sw
        _, v = np.linalg.eigh(cov)
        nx_, ny_ = -v[1, 1], v[0, 1]  # normal to the principal axis
        if ny_ < 0 or (ny_ == 0 and nx_ < 0):
            nx_, ny_ = -nx_, -ny_
        t_new = math.atan2(ny_, nx_) % math.pi
        turn = abs((t_new - theta + 0.5 * math.pi) % math.pi - 0.5 * math.pi)
        if turn > math.radians(2.0):
            break
        r_new = mx * math.cos(t_new) + my * math.sin(t_new)
        done = turn < 1e-4 and abs(r_new - rho) < 0.02
        theta, rho = t_new, r_new
        if done:
            break
    return theta, rho


def find_trails(image: np.ndarray, weight: np.ndarray, mask: np.ndarray | None, *,
                fwhm_px: float, config: TrailConfig = TrailConfig()) -> TrailResult:
    """Find satellite/aircraft trails (see the module docstring).

    Parameters
    ----------
    image : numpy.ndarray
        Background-subtracted image (ny, nx), e-; not modified.
    weight : numpy.ndarray
        Inverse variance (ny, nx), e-**-2; 0 = unusable.
    mask : numpy.ndarray or None
        Integer mask (ny, nx); pixels with ``config.mask_bits`` are left out.
    fwhm_px : float
        PSF FWHM (pixels); the least half-width of a trail's mask is 2 FWHM.
    config : TrailConfig

    Returns
    -------
    TrailResult

    Raises
    ------
    desgw.errors.DataTypeError
        If the arrays are not 2-D of one shape.
    """
    image = np.asarray(image)
    weight = np.asarray(weight)
    if image.ndim != 2 or weight.shape != image.shape or (
            mask is not None and np.shape(mask) != image.shape):
        raise DataTypeError(None, None, f"image {image.shape}, weight {weight.shape} and mask "
                            f"{None if mask is None else np.shape(mask)} must be 2-D of one shape")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype.kind not in "iu":
            raise DataTypeError(None, None, f"mask must be integer, got {mask.dtype}")
    b = config.bin
    snr, usable = _block_snr(image, weight, mask, config.mask_bits, b)
    cand = snr > config.block_snr
    lab, nlab = ndimage.label(cand, structure=np.ones((3, 3)))
    if nlab:
        objs = ndimage.find_objects(lab)
        sizes = ndimage.sum(cand, lab, index=np.arange(1, nlab + 1))
        min_len = config.min_length_px / b
        small = np.array([max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start) < min_len
                          and sizes[k] <= config.max_blob for k, sl in enumerate(objs)])
        cand &= ~np.concatenate([[False], small])[lab]
    my, mx = snr.shape
    thetas, rho_edges, chord, need = _hough_grid(my, mx, float(config.min_vote_fraction),
                                                 float(config.min_length_px / b))
    cos_t, sin_t = np.cos(thetas), np.sin(thetas)
    nrho = len(rho_edges) - 1
    trails: list[Trail] = []
    out = np.zeros(image.shape, dtype=bool)
    ny, nx = image.shape
    yy_b, xx_b = np.nonzero(cand)
    xc, yc = xx_b + 0.5, yy_b + 0.5
    wt = snr[yy_b, xx_b]
    # the CCD's candidate fraction: the background of lines with too few parallel neighbours
    fallback = float(xc.size / max(int(usable.sum()), 1))
    for _ in range(2 * config.max_trails):
        if len(trails) >= config.max_trails or xc.size < config.min_length_px / b:
            break
        acc = _hough_votes(xc, yc, cos_t, sin_t, float(rho_edges[0]), nrho)
        ks, js = np.nonzero(acc >= need)
        if ks.size == 0:
            break
        f_bg = _background_fraction(acc, chord, ks, js, int(config.bg_inner),
                                    int(config.bg_outer), fallback)
        excess = (acc[ks, js] - f_bg * chord[ks, js]) / (1.0 - f_bg)
        score = excess / need[ks, js]
        best = int(np.argmax(score))
        if score[best] < 1.0:
            break
        k, j = int(ks[best]), int(js[best])
        theta, rho_b = _fit_line(xc, yc, wt, float(thetas[k]), float(rho_edges[j]) + 0.5)
        r = xc * math.cos(theta) + yc * math.sin(theta)
        votes = int(np.count_nonzero(np.abs(r - rho_b) < 1.5))
        rho = rho_b * b - 0.5 * (math.cos(theta) + math.sin(theta))  # block -> pixel centres
        ridge = _ridge_contrast(image, weight, mask, config.mask_bits, theta, rho, fwhm_px)
        if not ridge >= config.min_peak_sigma:
            log.debug("trails: line theta %.1f deg, rho %.0f px dropped: ridge %.2f sigma",
                      math.degrees(theta), rho, ridge)
            keep = np.abs(r - rho_b) >= 1.5
        else:
            half = _half_width(image, weight, mask, config.mask_bits, theta, rho, fwhm_px,
                               config.edge_sigma)
            dist = np.abs(np.arange(nx)[None, :] * math.cos(theta)
                          + np.arange(ny)[:, None] * math.sin(theta) - rho)
            out |= dist <= half
            trails.append(Trail(theta_deg=float(math.degrees(theta)), rho=float(rho),
                                half_width=float(half), votes=votes,
                                background_fraction=float(f_bg[best]), peak_sigma=float(ridge)))
            keep = np.abs(r - rho_b) > half / b + 1.5
        xc, yc, wt = xc[keep], yc[keep], wt[keep]
    if trails:
        log.info("trails: %d found (%s); %.2f %% of the CCD masked", len(trails),
                 ", ".join(f"theta {t.theta_deg:.1f} deg, half-width {t.half_width:.0f} px"
                           for t in trails), 100.0 * out.mean())
    return TrailResult(trails=tuple(trails), mask=out)


def _half_width(image: np.ndarray, weight: np.ndarray, mask: np.ndarray | None, bits: int,
                theta: float, rho: float, fwhm_px: float, edge_sigma: float,
                max_half: int = 60) -> float:
    """Half-width (px) where the trail's median cross profile falls below ``edge_sigma``
    pixel sigmas above its baseline (the median profile 1.5-3 ``max_half`` from the line).
    Usable pixels only, as in :func:`_block_sums`."""
    ny, nx = image.shape
    c, s = math.cos(theta), math.sin(theta)
    # points along the line every 8 pixels, offsets across it every pixel
    t = np.arange(-math.hypot(nx, ny), math.hypot(nx, ny), 8.0)
    x0, y0 = rho * c - t * s, rho * s + t * c
    inside = (x0 >= 0) & (x0 < nx) & (y0 >= 0) & (y0 < ny)
    x0, y0 = x0[inside], y0[inside]
    if x0.size < 5:
        return 2.0 * fwhm_px
    near = np.arange(0, max_half + 1)
    far = np.arange(int(1.5 * max_half), 3 * max_half + 1, 5)
    d = np.concatenate([near, far])
    prof = np.full(len(d), np.nan)
    sig = np.full(len(d), np.nan)
    for i, dd in enumerate(d):
        vals, vv = [], []
        for sign in (1.0, -1.0):
            xs = np.round(x0 + sign * dd * c).astype(int)
            ys = np.round(y0 + sign * dd * s).astype(int)
            ok = (xs >= 0) & (xs < nx) & (ys >= 0) & (ys < ny)
            xs, ys = xs[ok], ys[ok]
            pv = np.asarray(image[ys, xs], dtype=np.float64)
            w = np.asarray(weight[ys, xs], dtype=np.float64)
            use = (w > 0) & np.isfinite(pv)
            if mask is not None:
                use &= (mask[ys, xs] & bits) == 0
            vals.append(pv[use])
            vv.append(1.0 / w[use])
        v = np.concatenate(vals)
        if v.size:
            prof[i] = np.median(v)
            sig[i] = math.sqrt(float(np.median(np.concatenate(vv))))
    n_near = len(near)
    outer = prof[n_near:]
    if np.isfinite(outer).sum() >= 3:
        baseline = float(np.nanmedian(outer))
    else:  # the line runs along the CCD's edge: the CCD's median
        sub = np.asarray(image[::4, ::4], dtype=np.float64)
        ok = (np.asarray(weight[::4, ::4]) > 0) & np.isfinite(sub)
        if mask is not None:
            ok &= (np.asarray(mask[::4, ::4]) & bits) == 0
        baseline = float(np.median(sub[ok])) if ok.any() else 0.0
    sigma = float(np.nanmedian(sig[:n_near])) if np.isfinite(sig[:n_near]).any() else math.inf
    above = (prof[:n_near] - baseline) / sigma
    below = np.flatnonzero(~(above >= edge_sigma))
    edge = float(near[below[0]]) if below.size else float(max_half)
    return max(edge + 1.0, 2.0 * fwhm_px)


def _ridge_contrast(image: np.ndarray, weight: np.ndarray, mask: np.ndarray | None, bits: int,
                    theta: float, rho: float, fwhm_px: float, seg_px: float = 128.0) -> float:
    """How far a line stands above its sides, consistently along it (pixel sigmas).

    The line is cut into ``seg_px`` segments; in each, the median of the usable pixels within
    0.5 FWHM of the line less the larger of the medians of the two bands 2.5-4 FWHM away on
    either side, in pixel sigmas. Returns the lower quartile over the segments (NaN without
    one): three quarters of the line must stand out. A trail is a ridge along its whole
    length (its own light 2.5 FWHM out is a few % of its peak); a line that the Hough
    transform drew through a chain of sources in a crowded field crosses them in some
    segments only (on the crowded simulated night such lines had segment contrasts from -3
    to +3 sigma, median up to 0.5, lower quartile <= 0), and where it does their light reaches
    the sides as well.
    """
    ny, nx = image.shape
    c, s = math.cos(theta), math.sin(theta)
    t = np.arange(-math.hypot(nx, ny), math.hypot(nx, ny), 1.0)
    x0, y0 = rho * c - t * s, rho * s + t * c
    inside = (x0 >= 0) & (x0 < nx) & (y0 >= 0) & (y0 < ny)
    if inside.sum() < seg_px:
        return math.nan
    t, x0, y0 = t[inside], x0[inside], y0[inside]
    seg = ((t - t[0]) // seg_px).astype(np.int64)
    nseg = int(seg[-1]) + 1

    def band(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        xs = np.round(x0[None, :] + offsets[:, None] * c).astype(np.int64).ravel()
        ys = np.round(y0[None, :] + offsets[:, None] * s).astype(np.int64).ravel()
        sg = np.broadcast_to(seg, (offsets.size, seg.size)).ravel()
        ok = (xs >= 0) & (xs < nx) & (ys >= 0) & (ys < ny)
        xs, ys, sg = xs[ok], ys[ok], sg[ok]
        v = np.asarray(image[ys, xs], dtype=np.float64)
        w = np.asarray(weight[ys, xs], dtype=np.float64)
        use = (w > 0) & np.isfinite(v)
        if mask is not None:
            use &= (mask[ys, xs] & bits) == 0
        return v[use], sg[use], w[use]

    h = max(1, int(round(0.5 * fwhm_px)))
    side = np.arange(int(math.ceil(2.5 * fwhm_px)), int(math.floor(4.0 * fwhm_px)) + 1,
                     dtype=np.float64)
    on_v, on_s, on_w = band(np.arange(-h, h + 1, dtype=np.float64))
    if on_v.size == 0:
        return math.nan
    sigma = math.sqrt(float(np.median(1.0 / on_w)))
    left_v, left_s, _ = band(side)
    right_v, right_s, _ = band(-side)
    contrast = []
    for k in range(nseg):
        a, lv, rv = on_v[on_s == k], left_v[left_s == k], right_v[right_s == k]
        if a.size < 0.25 * seg_px * (2 * h + 1) or lv.size < 20 or rv.size < 20:
            continue
        contrast.append((np.median(a) - max(np.median(lv), np.median(rv))) / sigma)
    return float(np.percentile(contrast, 25.0)) if contrast else math.nan
