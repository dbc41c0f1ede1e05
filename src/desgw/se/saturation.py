"""Bleed trails, edge bleeds and bright-star halos around saturated pixels.

In DECam images (trimmed, not flipped) the charge that overflows a saturated pixel's well
spills along its column, i.e. along y: a bright star becomes a saturated core with vertical
bleed trails above and below, which fade into a tail below saturation. When a trail reaches
the serial register (the first or last row of the CCD) the charge spreads along that row of
the amplifier (``EDGEBLEED``).

:func:`mask_bleed_trails`, for each connected saturated region:

1. ``TRAIL``: in every column that holds saturated pixels of the region, the contiguous run of
   pixels whose ``trail_smooth``-row running mean is above ``sky + trail_nsigma * noise /
   sqrt(trail_smooth)`` *over the star's own light there* that contains them (the trail's
   fading tail: spilled charge stays in its column), plus the saturated pixels themselves,
   padded by ``trail_pad_y`` pixels along y; then up to ``trail_pad_x`` neighbouring columns
   where those pixels are above the same threshold (charge that leaked sideways). Sky and
   noise are the median and 1.4826 x MAD of the full-height strip of columns around the
   region (local, and robust to the trail itself). The star's light at a pixel is its profile
   along the core's own row (which no bleed reaches; the lower of the two sides, so a
   neighbour does not raise it) at the pixel's distance from the core centre
   (``trail_star_profile``; without it, the sky: every pixel of the star's wings above the
   threshold along the column was flagged, on simulated nights 5-7x the bled pixels).
2. ``EDGEBLEED``: if a trail touches the first or last row, the ``edgebleed_rows`` rows at
   that edge across the amplifier(s) (``amp_width`` columns each) the trail lies in.
3. ``STAR``: a disk around the saturated core (the centroid of the saturated pixels in the
   rows where the region is at least half as wide as at its widest, i.e. without the narrow
   trail) of radius ``star_radius_min + star_radius_scale * sqrt(n_sat / pi)``, capped at
   ``star_radius_max``, ``n_sat`` being the region's saturated pixel count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from . import maskbits

__all__ = ["BleedConfig", "BleedMasks", "mask_bleed_trails"]


@dataclass(frozen=True)
class BleedConfig:
    """Settings of :func:`mask_bleed_trails` (pixels unless stated).

    Attributes
    ----------
    trail_nsigma : float
        A trail continues along its column while the column, averaged over ``trail_smooth``
        rows, exceeds sky + this many sigma (of that average).
    trail_smooth : int
        Running-mean length (rows) along the column used for the trail threshold.
    trail_pad_y : int
        Padding of the trail mask along y, beyond the detected tail.
    trail_pad_x : int
        Neighbouring columns added to the trail where above the trail threshold.
    edgebleed_rows : int
        Rows flagged ``EDGEBLEED`` at a CCD edge reached by a trail.
    amp_width : int
        Columns per amplifier (1024 for DECam trimmed images).
    star_radius_scale : float
        Halo radius per unit of the saturated region's equivalent radius ``sqrt(n_sat/pi)``.
    star_radius_min, star_radius_max : float
        Bounds of the halo radius.
    min_pixels : int
        Saturated regions with fewer pixels (e.g. a single hot pixel) get no ``TRAIL`` and no
        ``STAR``; they keep their ``SAT`` bit from detrending.
    trail_star_profile : bool
        The trail's tail is charge above the star's own light (its profile along the core's
        row); False: above the sky.
    """

    trail_nsigma: float = 2.5
    trail_smooth: int = 5
    trail_pad_y: int = 3
    trail_pad_x: int = 1
    edgebleed_rows: int = 30
    amp_width: int = 1024
    star_radius_scale: float = 2.0
    star_radius_min: float = 8.0
    star_radius_max: float = 300.0
    min_pixels: int = 2
    trail_star_profile: bool = True


@dataclass(frozen=True)
class BleedMasks:
    """Result of :func:`mask_bleed_trails`.

    Attributes
    ----------
    mask : ndarray, int32, image shape
        ``TRAIL``, ``EDGEBLEED`` and ``STAR`` bits.
    star_x, star_y : ndarray, float64
        0-based pixel centre of each saturated star core.
    star_npix : ndarray, int64
        Saturated pixels of each region.
    star_radius : ndarray, float64
        ``STAR`` halo radius (pixels) of each region.
    """

    mask: np.ndarray
    star_x: np.ndarray
    star_y: np.ndarray
    star_npix: np.ndarray
    star_radius: np.ndarray


def _column_run(high: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
    """Rows [start, stop) of the run of True in ``high`` around rows lo..hi (inclusive)."""
    below = np.flatnonzero(~high[:lo])
    start = int(below[-1]) + 1 if below.size else 0
    above = np.flatnonzero(~high[hi + 1:])
    stop = hi + 1 + int(above[0]) if above.size else high.size
    return start, stop


def _star_light(image: np.ndarray, sat: np.ndarray, x0: float, y0: float, c0: int, c1: int,
                sky: float) -> np.ndarray:
    """The star's light (e-, sky included) in columns ``c0:c1`` of every row: its profile
    along the core's row at the distance from the core centre ``(x0, y0)``. The profile is
    the median of the three rows through the centre, the lower of the left and right sides
    at each distance (a neighbour on one side does not raise it), made non-increasing
    outwards; unknown (saturated, or off the CCD) near the core: +inf; beyond its reach: the
    sky."""
    ny, nx = image.shape
    iy = int(round(y0))
    rows = slice(max(iy - 1, 0), min(iy + 2, ny))
    reach = int(max(ny, nx))
    ix = int(round(x0))
    dmax = min(max(ix, nx - 1 - ix), reach)
    d = np.arange(dmax + 1)
    band = np.median(image[rows], axis=0)
    bad = np.asarray(sat[rows].any(axis=0), bool)
    prof = np.full(d.size, np.inf)
    for sign in (-1, 1):
        xs = ix + sign * d
        ok = (xs >= 0) & (xs < nx)
        v = np.full(d.size, np.inf)
        v[ok] = np.where(bad[xs[ok]], np.inf, band[xs[ok]])
        prof = np.minimum(prof, np.where(ok, v, np.inf))
    # saturated near the core: unknown (inf) up to the last saturated distance
    known = np.isfinite(prof)
    if known.any():
        first = int(np.flatnonzero(known)[0])
        prof[:first] = np.inf
        # non-increasing outwards from the first known distance (noise and neighbours)
        prof[first:] = np.minimum.accumulate(prof[first:])
    prof = np.maximum(prof, sky)
    out = np.full((ny, c1 - c0), sky, np.float32)
    # only the rows the profile reaches above the sky (the rest: the sky)
    above = np.flatnonzero(prof > sky)
    reach_d = int(above[-1]) + 2 if above.size else 0
    y_lo, y_hi = max(int(np.floor(y0)) - reach_d, 0), min(int(np.ceil(y0)) + reach_d + 1, ny)
    if y_hi <= y_lo:
        return out
    yy = np.arange(y_lo, y_hi, dtype=np.float64)[:, None]
    xx = np.arange(c0, c1, dtype=np.float64)[None, :]
    r = np.hypot(xx - x0, yy - y0)
    k = np.minimum(np.floor(r).astype(np.int64), d.size - 1)
    k1 = np.minimum(k + 1, d.size - 1)
    w = r - np.floor(r)
    lo, hi = prof[k], prof[k1]
    with np.errstate(invalid="ignore"):
        part = np.where(np.isfinite(lo) & np.isfinite(hi), (1 - w) * lo + w * hi, np.inf)
    part[r > d[-1]] = sky
    out[y_lo:y_hi] = part
    return out


def mask_bleed_trails(image_e: np.ndarray, sat_mask: np.ndarray, *,
                      config: BleedConfig = BleedConfig()) -> BleedMasks:
    """Flag bleed trails, edge bleeds and bright-star halos of saturated regions.

    Parameters
    ----------
    image_e : ndarray, shape (ny, nx)
        Detrended image in electrons, sky not subtracted (e.g. ``DetrendedCCD.image``).
    sat_mask : ndarray of bool, same shape
        Saturated pixels (e.g. ``(mask & SAT) != 0``).
    config : BleedConfig

    Returns
    -------
    BleedMasks
    """
    image = np.asarray(image_e)
    sat = np.asarray(sat_mask, dtype=bool)
    if image.shape != sat.shape:
        raise ValueError(f"image shape {image.shape} != sat_mask shape {sat.shape}")
    ny, nx = image.shape
    out = np.zeros((ny, nx), np.int32)
    xs, ys, npx, rads = [], [], [], []
    # regions labelled inside the bounding box of the saturated pixels only (the same
    # regions: nothing outside it is saturated); a sparse CCD has a few small boxes' worth
    sat_rows = np.flatnonzero(sat.any(axis=1))
    if sat_rows.size == 0:
        return BleedMasks(out, np.zeros(0), np.zeros(0), np.zeros(0, np.int64), np.zeros(0))
    by0_, by1_ = int(sat_rows[0]), int(sat_rows[-1]) + 1
    sat_cols = np.flatnonzero(sat[by0_:by1_].any(axis=0))
    bx0_, bx1_ = int(sat_cols[0]), int(sat_cols[-1]) + 1
    labels, _ = ndimage.label(sat[by0_:by1_, bx0_:bx1_], structure=np.ones((3, 3), bool))
    trail = np.zeros((ny, nx), bool)
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        region = labels[sl] == k
        ry = slice(sl[0].start + by0_, sl[0].stop + by0_)
        rx = slice(sl[1].start + bx0_, sl[1].stop + bx0_)
        n_sat = int(region.sum())
        if n_sat < config.min_pixels:
            continue
        # star core: rows at least half as wide as the widest row of the region
        width = region.sum(axis=1)
        core_rows = width >= 0.5 * width.max()
        yy, xx = np.nonzero(region & core_rows[:, None])
        x0, y0 = float(xx.mean() + rx.start), float(yy.mean() + ry.start)
        c0, c1 = max(rx.start - 3, 0), min(rx.stop + 3, nx)
        strip = image[:, c0:c1]
        sample = strip[::2]
        sky = float(np.median(sample))
        noise = 1.4826 * float(np.median(np.abs(sample - sky))) or 1.0
        if config.trail_smooth > 1:  # average along the column: follows faint tails further
            strip = ndimage.uniform_filter1d(strip, config.trail_smooth, axis=0,
                                             output=np.float32)
        level: np.ndarray = np.full(1, sky, np.float32)
        if config.trail_star_profile:
            level = _star_light(image, sat, x0, y0, c0, c1, sky)
        high = strip > level + config.trail_nsigma * noise / np.sqrt(config.trail_smooth)
        for j in range(rx.start, rx.stop):
            rows = np.flatnonzero(region[:, j - rx.start]) + ry.start
            if rows.size == 0:
                continue
            col = high[:, j - c0]
            col[rows] = True
            start, stop = _column_run(col, int(rows[0]), int(rows[-1]))
            trail[max(start - config.trail_pad_y, 0):min(stop + config.trail_pad_y, ny), j] = True
            touched = []
            if start == 0:
                touched.append(slice(0, config.edgebleed_rows))
            if stop == ny:
                touched.append(slice(ny - config.edgebleed_rows, ny))
            for rsl in touched:
                a0 = (j // config.amp_width) * config.amp_width
                out[rsl, a0:min(a0 + config.amp_width, nx)] |= maskbits.EDGEBLEED
        if config.trail_pad_x > 0:  # neighbouring columns, where they are above threshold
            tr = trail[:, c0:c1]
            grown = tr.copy()  # dilation along x by trail_pad_x (no wrap at the strip ends)
            for d in range(1, min(config.trail_pad_x, tr.shape[1] - 1) + 1):
                grown[:, d:] |= tr[:, :-d]
                grown[:, :-d] |= tr[:, d:]
            tr |= grown & high
        r = min(config.star_radius_min + config.star_radius_scale * np.sqrt(n_sat / np.pi),
                config.star_radius_max)
        ri = int(np.ceil(r))
        by0, by1 = max(int(y0) - ri, 0), min(int(y0) + ri + 2, ny)
        bx0, bx1 = max(int(x0) - ri, 0), min(int(x0) + ri + 2, nx)
        gy, gx = np.ogrid[by0:by1, bx0:bx1]
        disk = (gx - x0) ** 2 + (gy - y0) ** 2 <= r * r
        out[by0:by1, bx0:bx1][disk] |= maskbits.STAR
        xs.append(x0)
        ys.append(y0)
        npx.append(n_sat)
        rads.append(r)
    np.bitwise_or(out, np.int32(maskbits.TRAIL), out=out, where=trail)
    return BleedMasks(mask=out, star_x=np.array(xs, float), star_y=np.array(ys, float),
                      star_npix=np.array(npx, np.int64), star_radius=np.array(rads, float))

