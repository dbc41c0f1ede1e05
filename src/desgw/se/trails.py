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
   blocks (the block centres in its 1-block-wide strip, counted on the grid: at 45 deg
   alternate strips hold 1.4x and 0.7x their length) must reach ``min_vote_fraction`` (and
   ``min_length_px / bin`` blocks). On a sparse field ``f_bg`` is ~0 and this is the plain
   vote fraction.
4. **Line fit**: the strongest line is moved onto the trail's ridge in the image
   (:func:`_refine_line`: the peak of the median cross profile in 128 px segments, a
   straight line through them): the grid's 0.5 deg steps put a line up to 9 px off at the
   end of a 4,000 px chord, more than a trail's FWHM, and a bright trail's candidate blocks
   form a plateau several blocks wide whose any bin may win the vote.
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
        Fraction of the line's blocks (its strip through the CCD) that must be candidate
        blocks above the local background fraction: ``(f - f_bg) / (1 - f_bg)`` (module docstring, step 3).
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


@functools.lru_cache(maxsize=8)
def _hough_grid(my: int, mx: int, min_vote_fraction: float, min_votes: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(thetas, rho_edges, blocks, need)`` of the Hough transform of a ``(my, mx)`` block
    grid.

    ``blocks`` (theta, rho bin) is the number of block centres in the bin's 1-block-wide
    strip: its chord through the grid on average, but at angles where the strips alias
    with the grid (0, 26.6, 45 deg ...) alternate bins hold up to ~1.4x and ~0.7x that, which
    in a crowded field made lines at 45 and 135 deg pass on the grid alone. ``need`` is the
    least number of votes of a line: ``min_vote_fraction`` of its blocks, at least
    ``min_votes``. They depend only on the grid, so they are computed once per process
    (:func:`_grid_votes`, ~0.25 CPU-s for a 4 x 4-binned CCD) and shared read-only.
    """
    thetas = np.deg2rad(np.arange(0.0, 180.0, 0.5))
    diag = float(np.hypot(my, mx))
    rho_edges = np.arange(-diag, diag + 1.0, 1.0)
    blocks = _grid_votes(int(my), int(mx), np.cos(thetas), np.sin(thetas),
                         float(rho_edges[0]), len(rho_edges) - 1)
    need = np.maximum(min_vote_fraction * blocks, min_votes)
    for a in (thetas, rho_edges, blocks, need):
        a.setflags(write=False)
    return thetas, rho_edges, blocks, need


@njit(cache=True)
def _grid_votes(my, mx, cos_t, sin_t, rho0, nrho):  # pragma: no cover - numba
    """:func:`_hough_votes` of the ``my x mx`` block centres ``(i + 0.5, l + 0.5)``, the same
    values bit for bit (each centre's ``x cos + y sin - rho0`` in the same operations; the
    counts are integers): one angle at a time, its row of bins in cache, and each grid row's
    bin numbers computed in a loop of their own (vectorised) before they are counted, ~3x
    faster than the general kernel on the 1024 x 512 grid of a full CCD."""
    nt = cos_t.size
    acc = np.zeros((nt, nrho))
    js = np.empty(mx, np.int64)
    xs = np.empty(mx)
    for i in range(mx):
        xs[i] = i + 0.5
    for k in range(nt):
        c = cos_t[k]
        s = sin_t[k]
        row = acc[k]
        for lr in range(my):
            ys = (lr + 0.5) * s
            for i in range(mx):
                js[i] = int(np.floor(xs[i] * c + ys - rho0))
            for i in range(mx):
                row[min(max(js[i], 0), nrho - 1)] += 1.0
    return acc


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


def _background_fraction(acc: np.ndarray, blocks: np.ndarray, ks: np.ndarray,
                         js: np.ndarray, inner: int, outer: int, fallback: float
                         ) -> np.ndarray:
    """Candidate fraction of the lines parallel to the bins ``(ks, js)``, ``inner``-``outer``
    bins away on both sides (median over those with at least half the bin's blocks;
    ``fallback`` where fewer than 8 of them do)."""
    nrho = acc.shape[1]
    offs = np.concatenate([np.arange(-outer, -inner + 1), np.arange(inner, outer + 1)])
    jj = js[:, None] + offs[None, :]
    valid = (jj >= 0) & (jj < nrho)
    jj = np.clip(jj, 0, nrho - 1)
    a = acc[ks[:, None], jj]
    c = blocks[ks[:, None], jj]
    valid &= c >= 0.5 * blocks[ks, js][:, None]
    frac = np.where(valid, a / np.where(c > 0, c, 1.0), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows without a valid neighbour
        p = np.nanmedian(frac, axis=1)
    p = np.where(valid.sum(axis=1) >= 8, p, fallback)
    return np.clip(np.nan_to_num(p, nan=fallback), 0.0, 0.95)


def _refine_line(image: np.ndarray, weight: np.ndarray, mask: np.ndarray | None, bits: int,
                 theta: float, rho: float, fwhm_px: float, seg_px: float = 128.0,
                 window: int = 20) -> tuple[float, float]:
    """The line ``(theta, rho)`` (pixels) moved onto the trail's ridge in the image.

    In each ``seg_px`` segment along the line, the median of the usable pixels at each
    offset -``window``..``window`` px across it gives a cross profile; where its peak stands
    5 noise sigmas above the profile's median, the peak's centroid (within 0.5 FWHM) is the
    ridge's offset there. A straight line fitted to those offsets (least squares, then again
    without those more than 2 px off) replaces the line; repeated while it moves by more
    than half the window. The line is left as it is unless the ridge is seen, on one straight
    line, in 3 and in three quarters of the segments with data. The Hough grid's steps
    (0.5 deg, 1 block) leave a line up to ~9 px
    off at the end of a CCD, and a bright trail's blocks form a plateau several blocks wide
    whose any bin may win; fitted to the candidate blocks instead, a faint trail's line was
    pulled 0.2-0.4 deg off by the sources of a crowded field.
    """
    ny, nx = image.shape
    offs = np.arange(-window, window + 1, dtype=np.float64)
    h = max(1, int(round(0.5 * fwhm_px)))
    for _ in range(3):
        c, s = math.cos(theta), math.sin(theta)
        t = np.arange(-math.hypot(nx, ny), math.hypot(nx, ny), 1.0)
        x0, y0 = rho * c - t * s, rho * s + t * c
        inside = (x0 >= 0) & (x0 < nx) & (y0 >= 0) & (y0 < ny)
        if inside.sum() < 3 * seg_px:
            break
        t, x0, y0 = t[inside], x0[inside], y0[inside]
        seg = ((t - t[0]) // seg_px).astype(np.int64)
        xs = np.round(x0[None, :] + offs[:, None] * c).astype(np.int64)
        ys = np.round(y0[None, :] + offs[:, None] * s).astype(np.int64)
        ok = (xs >= 0) & (xs < nx) & (ys >= 0) & (ys < ny)
        xs, ys = np.where(ok, xs, 0), np.where(ok, ys, 0)
        v = np.asarray(image[ys, xs], dtype=np.float64)
        w = np.asarray(weight[ys, xs], dtype=np.float64)
        use = ok & (w > 0) & np.isfinite(v)
        if mask is not None:
            use &= (mask[ys, xs] & bits) == 0
        v = np.where(use, v, np.nan)
        sig_px = math.sqrt(float(np.median(1.0 / w[use]))) if use.any() else math.inf
        us, ds = [], []
        n_seg = 0
        for k in range(int(seg[-1]) + 1):
            cols = seg == k
            n_ok = use[:, cols].sum(axis=1)
            if n_ok.min() < 0.5 * seg_px:
                continue
            n_seg += 1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                prof = np.nanmedian(v[:, cols], axis=1)
            base = float(np.median(prof))
            i = int(np.argmax(prof))
            noise = 1.2533 * sig_px / math.sqrt(float(n_ok.min()))
            if not prof[i] - base >= 5.0 * noise or i < h or i > len(offs) - 1 - h:
                continue
            ww = np.maximum(prof[i - h:i + h + 1] - base, 0.0)
            us.append(float(np.mean(t[cols])))
            ds.append(float(np.sum(ww * offs[i - h:i + h + 1]) / np.sum(ww)))
        if len(us) < 3:
            break
        u, d = np.asarray(us), np.asarray(ds)
        coef = np.polyfit(u, d, 1)
        good = np.abs(d - np.polyval(coef, u)) <= 2.0
        if good.sum() < max(3.0, 0.75 * n_seg):
            break
        coef = np.polyfit(u[good], d[good], 1)
        # two points of the refitted ridge -> (theta, rho)
        pts = []
        for uu in (float(u.min()), float(u.max())):
            dd = float(np.polyval(coef, uu))
            pts.append((rho * c - uu * s + dd * c, rho * s + uu * c + dd * s))
        (xa, ya), (xb, yb) = pts
        t_new = (math.atan2(yb - ya, xb - xa) + 0.5 * math.pi) % math.pi
        r_new = xa * math.cos(t_new) + ya * math.sin(t_new)
        moved = max(abs(float(np.polyval(coef, uu))) for uu in (float(u.min()), float(u.max())))
        theta, rho = t_new, r_new
        if moved <= 0.5 * window:
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
    thetas, rho_edges, blocks, need = _hough_grid(my, mx, float(config.min_vote_fraction),
                                                 float(config.min_length_px / b))
    cos_t, sin_t = np.cos(thetas), np.sin(thetas)
    nrho = len(rho_edges) - 1
    trails: list[Trail] = []
    out = np.zeros(image.shape, dtype=bool)
    ny, nx = image.shape
    yy_b, xx_b = np.nonzero(cand)
    xc, yc = xx_b + 0.5, yy_b + 0.5
    # the CCD's candidate fraction: the background of lines with too few parallel neighbours
    fallback = float(xc.size / max(int(usable.sum()), 1))
    for _ in range(2 * config.max_trails):
        if len(trails) >= config.max_trails or xc.size < config.min_length_px / b:
            break
        acc = _hough_votes(xc, yc, cos_t, sin_t, float(rho_edges[0]), nrho)
        ks, js = np.nonzero(acc >= need)
        if ks.size == 0:
            break
        f_bg = _background_fraction(acc, blocks, ks, js, int(config.bg_inner),
                                    int(config.bg_outer), fallback)
        excess = (acc[ks, js] - f_bg * blocks[ks, js]) / (1.0 - f_bg)
        score = excess / need[ks, js]
        best = int(np.argmax(score))
        if score[best] < 1.0:
            break
        k, j = int(ks[best]), int(js[best])
        theta = float(thetas[k])
        rho = (float(rho_edges[j]) + 0.5) * b - 0.5 * (math.cos(theta) + math.sin(theta))
        theta, rho = _refine_line(image, weight, mask, config.mask_bits, theta, rho, fwhm_px)
        rho_b = (rho + 0.5 * (math.cos(theta) + math.sin(theta))) / b  # pixel -> block units
        r = xc * math.cos(theta) + yc * math.sin(theta)
        votes = int(np.count_nonzero(np.abs(r - rho_b) < 1.5))
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
        xc, yc = xc[keep], yc[keep]
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

    The line is cut into ``seg_px`` segments (at least 4, of at least 32 px); in each, the
    median of the usable pixels within
    0.5 FWHM of the line less the larger of the medians of the two bands 2.5-4 FWHM away on
    either side, in pixel sigmas. Returns the lower quartile over the segments, or the
    median less 2.5 standard errors (from the segments' own scatter) where that is lower
    (NaN with fewer than 3 segments with data): three quarters of the line must stand out,
    consistently. A trail is a ridge along its whole
    length (its own light 2.5 FWHM out is a few % of its peak); a line that the Hough
    transform drew through a chain of sources in a crowded field crosses them in some
    segments only (on the crowded simulated night such lines had segment contrasts from -5
    to +3 sigma, lower quartiles up to 0.5 on short lines of 5 segments, but their scatter
    puts the median's lower bound below 0), and where it does their light reaches the sides
    as well.
    """
    ny, nx = image.shape
    c, s = math.cos(theta), math.sin(theta)
    t = np.arange(-math.hypot(nx, ny), math.hypot(nx, ny), 1.0)
    x0, y0 = rho * c - t * s, rho * s + t * c
    inside = (x0 >= 0) & (x0 < nx) & (y0 >= 0) & (y0 < ny)
    seg_px = max(min(seg_px, 0.25 * float(inside.sum())), 32.0)  # >= 4 segments on short lines
    if inside.sum() < 3 * seg_px:
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
    if len(contrast) < 3:
        return math.nan
    cv = np.asarray(contrast)
    med = float(np.median(cv))
    # the median's standard error from the segments' own scatter (robust)
    se = 1.2533 * 1.4826 * float(np.median(np.abs(cv - med))) / math.sqrt(cv.size)
    return min(float(np.percentile(cv, 25.0)), med - 2.5 * se)
