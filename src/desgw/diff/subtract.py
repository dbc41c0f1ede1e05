"""PSF-matched subtraction of a template from a search CCD (ZOGY, replaces HOTPANTS).

:func:`subtract` puts the template on the search image's photometric scale, adds the sources'
Poisson noise to both variance maps, in-paints unusable pixels, runs :func:`desgw.diff.zogy.zogy`
tile by tile and masks the outputs. ZOGY is close to optimal whichever image has the broader PSF
(no convolution direction to choose, no deconvolution), and its score ``S_corr`` has unit noise in
blank sky by construction, so a 5-sigma threshold means 5 sigma.

Conventions
-----------
* Both images are **background subtracted** by the caller (e.g. :func:`desgw.se.background.
  estimate_background`), registered on the search CCD's pixel grid (the template resampled onto
  it), and their PSF models are expressed in that grid.
* The search image is in electrons; the template is in units whose zero point is
  ``zp_template``; it is multiplied by ``10 ** (0.4 * (zp_search - zp_template))``. All outputs
  are in search electrons (the flux of a new source in the search image).
* Unusable pixels (mask bits ``config.bad_bits``, or a variance that is not finite and > 0) of
  either image are in-painted with the local background, i.e. 0 after background subtraction,
  with variance 0 (they carry no data, so the noise propagation of the score stays exact) and
  do not ring. In the outputs they are blanked (``diff = score = flux = 0``, ``diff_var =
  flux_err = inf``), and the output mask is the OR of both masks, plus
  :data:`desgw.se.maskbits.EDGE` where either image has no data (e.g. no template coverage),
  with the bits in ``config.dilate_bits`` grown (see *Mask growth*).

Mask growth
-----------
An in-painted pixel carries no data and variance 0, so on blank sky the score and the
difference around it stay exact (noise included): nothing needs growing there. The in-painting
is wrong only where a source lies under the mask: the two images' sources are then cut by the
same hole but convolved with different PSFs, and the difference shows a residual the size of
the PSF. A cluster of masked pixels (8-connected) is therefore grown only as far as the flux
it hides needs: the flux the in-painting removes (the other image's pixels where one image is
unusable, search scale), as far as it belongs to a source in both images (its share is the
other image's light around the cluster over this image's there, clipped to [0, 1]: a
transient cut by a template defect leaves no residual of its own, the difference only lacks
the cut part of it, so the defect is not grown over it), is a source when it exceeds
``config.source_sigma`` times its noise and the point-source flux error ``sigma_F`` of the
difference; the cluster is then grown by
``2 sigma_psf sqrt(ln(F / sigma_F))`` (where a Gaussian core of that flux falls below
``sigma_F``), at most the full radius (``config.dilate_fwhm`` x the larger PSF FWHM, a square
box). A cluster with pixels unusable in both images (nothing is known: a saturated core, a
shared bad column) gets the full radius; every other one ``config.dilate_min_px`` (the faint
wings of a cosmic ray or a hot pixel that the masks miss). The missing flux is summed, and the
growth decided, per piece of a cluster within a square of ``config.growth_block`` growth radii
(at least 8 px): a bad column or a resampled template defect crosses the whole CCD, and summed
over its length it always holds some star, which grew the whole column by the full radius (on
simulated nights with one template per CCD the masked fraction was 2-3x the truly bad
fraction); now it is grown only where a source is cut. The squares are 2 radii (2 FWHM)
wide, the PSF's footprint: light cut farther along the defect leaves little residual at a
pixel, and summed over 4 radii the faint light a crowded field holds along a defect grew it
where the difference is noise (on the audit's crowded night the pixels that 4-radius pieces
grew and 2-radius pieces do not have ``|S_corr| > 5`` in 0.9 % of them, the never-masked
pixels in 5.1 %, the pixels still grown in 38.5 %). A pixel without data whose mask says
why (a bad pixel, a cosmic ray or a saturated core with weight 0, as SE and the resampling
leave them: EDGE together with such a bit) follows that rule; only EDGE alone (no coverage: the edges of
the template footprint, chip gaps) is always grown by the full radius.
``config.dilate_sources_only = False`` grows every masked pixel by the full radius (the former
behaviour: a cosmic ray ~10 px from a transient then hid it). The output ``meta``
gives ``bad_fraction`` (pixels unusable in either input) and ``masked_fraction`` (pixels
masked in the output).

Speed notes (sparse benchmark CCD 28, 11 % masked, template chip gaps; one pinned core,
``bench/bench_diff_masks_ab.py``): the coverage edges' growth is made in the mask scan (row
pass at the end of each run of edge pixels) and one column pass ORed into the mask, 0.029 ->
0.018 CPU-s with the former edge map, ``box_any`` and OR pass; :meth:`MaskPrediction.update`
compares the injection's windows only (0.017 -> 0.009). Measured and left: ``_blank`` with its
counts in a separate branch-free loop per row (0.025 -> 0.030 CPU-s, slower); the remaining
prediction is ~0.10 CPU-s, mostly the clusters' labels and sums over the ~0.8 M masked pixels
(~0.055) and the combined mask (~0.013).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numba import njit

from desgw.diff.zogy import ZogyConfig, zogy
from desgw.diff.zogy_psf import PSFSource, TiledPSF, as_psf_source, stamp_fwhm
from desgw.se import maskbits

__all__ = ["MaskPrediction", "SubtractConfig", "Subtraction", "difference_mask",
           "dilate_mask_bits", "predict_difference_mask", "subtract"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubtractConfig:
    """Configuration of :func:`subtract`.

    Attributes
    ----------
    tile, border : int
        ZOGY tile interior side and overlap (pixels); see :class:`desgw.diff.zogy.ZogyConfig`.
    kernel_size, psf_size : int or None
        Filter grid side and PSF render size (see :class:`~desgw.diff.zogy.ZogyConfig`).
    auto_kernel : bool
        With ``kernel_size`` None, the smallest filter grid (and tile overlap, at most
        ``border``) that gives the science of ``2 * border``
        (:attr:`desgw.diff.zogy.ZogyConfig.auto_kernel`; ``meta["zogy_kernel_size"]``).
    astrometric_sigma : tuple[float, float]
        Registration noise (sigma_x, sigma_y) in pixels for the ZOGY astrometric term.
    add_source_noise : bool
        Add the sources' Poisson variance ``image / gain`` to both variance maps (the SE
        weights hold the background noise only); the pixel value itself is used (unbiased; not
        clipped at 0, which would bias blank sky by sigma / sqrt(2 pi)), the total floored at
        a quarter of the background variance.
    search_gain, template_gain : float
        Electrons per image unit of the search image (1 for images in e-) and of the template
        *before* photometric scaling (1 for a single exposure in e-; a coadd normalised to a
        mean exposure has a larger effective gain).
    bad_bits : int
        Mask bits that make a pixel unusable (in-painted and blanked).
    dilate_bits : int
        Mask bits grown in the output mask.
    dilate_fwhm : float
        Growth radius in units of the larger PSF FWHM (pixels, rounded up).
    dilate_sources_only : bool
        Grow by the full radius only the masked pixels with a source under them (module
        docstring, *Mask growth*); False: every masked pixel.
    source_sigma : float
        Threshold (sigma of a 3 x 3 mean) of the source test.
    dilate_min_px : int
        Growth (pixels) of the masked pixels with no source under them.
    growth_block : float
        Side of the squares, in units of the growth radius (at least 8 px), within which a
        cluster's missing flux is summed and its growth decided (module docstring, *Mask
        growth*; 2: the PSF's footprint); 0: whole clusters, however long (the former
        rule).
    """

    tile: int = 512
    border: int = 64
    kernel_size: int | None = None
    psf_size: int | None = None
    auto_kernel: bool = True
    astrometric_sigma: tuple[float, float] = (0.0, 0.0)
    add_source_noise: bool = True
    search_gain: float = 1.0
    template_gain: float = 1.0
    bad_bits: int = maskbits.UNUSABLE
    dilate_bits: int = maskbits.UNUSABLE
    dilate_fwhm: float = 1.0
    dilate_sources_only: bool = True
    source_sigma: float = 3.0
    dilate_min_px: int = 0
    growth_block: float = 2.0

    def __post_init__(self) -> None:
        if self.search_gain <= 0 or self.template_gain <= 0:
            raise ValueError("gains must be > 0")
        if self.dilate_fwhm < 0:
            raise ValueError("dilate_fwhm must be >= 0")
        if not self.source_sigma > 0:
            raise ValueError("source_sigma must be > 0")
        if self.dilate_min_px < 0:
            raise ValueError("dilate_min_px must be >= 0")
        if not self.growth_block >= 0:
            raise ValueError("growth_block must be >= 0")

    def zogy_config(self) -> ZogyConfig:
        """The :class:`ZogyConfig` these settings give."""
        return ZogyConfig(tile=self.tile, border=self.border, kernel_size=self.kernel_size,
                          psf_size=self.psf_size, astrometric_sigma=self.astrometric_sigma,
                          auto_kernel=self.auto_kernel)


@dataclass(frozen=True)
class Subtraction:
    """Result of :func:`subtract`; images are (ny, nx) on the search grid, search electrons.

    Attributes
    ----------
    diff : numpy.ndarray
        float32 difference image (search - scaled template, PSF :attr:`psf_diff`); a new source
        of flux ``a`` e- has total flux ``a`` in it.
    diff_var : numpy.ndarray
        float32 propagated variance of ``diff`` (e^2; inf where blanked).
    score : numpy.ndarray
        float32 ZOGY ``S_corr`` (sigma units; 0 where blanked).
    flux_image : numpy.ndarray
        float32 PSF flux (e-) of a point source centred on each pixel (``S / F_S``).
    flux_err_image : numpy.ndarray
        float32 1-sigma error of ``flux_image`` (e-; inf where blanked).
    mask : numpy.ndarray
        int32 mask bits: OR of both masks, ``dilate_bits`` grown (module docstring, *Mask
        growth*), EDGE where there is no data.
    psf_diff : TiledPSF
        PSF of ``diff`` (one stamp per tile).
    meta : dict
        ``scale`` (template multiplier), ``zp_search``, ``zp_template``, ``fwhm_search``,
        ``fwhm_template`` (pixels, at the CCD centre), ``dilate_radius`` (pixels),
        ``bad_fraction`` and ``masked_fraction`` (of all pixels: unusable in either input;
        masked in the output), ``f_s``,
        ``f_d``, ``sigma_search`` (e-), ``sigma_template`` (template units),
        ``score_noise_factor``, ``diff_noise_factor`` (per-tile arrays), ``seconds`` and
        ``config``.
    """

    diff: np.ndarray
    diff_var: np.ndarray
    score: np.ndarray
    flux_image: np.ndarray
    flux_err_image: np.ndarray
    mask: np.ndarray
    psf_diff: TiledPSF
    meta: dict[str, Any] = field(default_factory=dict)


@njit(cache=True, nogil=True)
def _or_dilate(mask, bits, radius):  # pragma: no cover - numba
    """Separable OR-dilation by a (2 radius + 1)^2 box. Within a run of pixels with the same
    bits only the run's two ends write their whole window (the union of those windows and
    the run itself is the dilated run), so large masked areas cost one operation per pixel."""
    ny, nx = mask.shape
    rows = np.zeros((ny, nx), np.int32)
    for y in range(ny):
        for x in range(nx):
            v = mask[y, x] & bits
            if v:
                if (x > 0 and (mask[y, x - 1] & bits) == v
                        and x < nx - 1 and (mask[y, x + 1] & bits) == v):
                    rows[y, x] |= v
                    continue
                lo, hi = max(x - radius, 0), min(x + radius + 1, nx)
                for xx in range(lo, hi):
                    rows[y, xx] |= v
    out = mask.copy()
    for y in range(ny):
        for x in range(nx):
            v = rows[y, x]
            if v:
                if y > 0 and rows[y - 1, x] == v and y < ny - 1 and rows[y + 1, x] == v:
                    out[y, x] |= v
                    continue
                lo, hi = max(y - radius, 0), min(y + radius + 1, ny)
                for yy in range(lo, hi):
                    out[yy, x] |= v
    return out


@njit(cache=True, nogil=True)
def _combine_masks(n_img, n_var, n_msk, r_img, r_var, r_msk):  # pragma: no cover - numba
    """OR of both masks, with EDGE where either image has no data (non-finite, variance <= 0)."""
    ny, nx = n_img.shape
    combined = np.empty((ny, nx), np.int32)
    for y in range(ny):
        for x in range(nx):
            va, vb = n_var[y, x], r_var[y, x]
            m = n_msk[y, x] | r_msk[y, x]
            if not (va > 0 and vb > 0 and np.isfinite(va) and np.isfinite(vb)
                    and np.isfinite(n_img[y, x]) and np.isfinite(r_img[y, x])):
                m |= 512  # maskbits.EDGE
            combined[y, x] = m
    return combined


@njit(cache=True, nogil=True)
def _add_source_var(img, var, gain):  # pragma: no cover - numba
    """``max(var + img / gain, var / 4)`` (float32), the source term only where the gain is
    finite and > 0 and the pixel value finite."""
    ny, nx = img.shape
    out = np.empty((ny, nx), np.float32)
    for y in range(ny):
        for x in range(nx):
            v = var[y, x]
            g = gain[y, x]
            a = img[y, x]
            t = v
            if np.isfinite(g) and g > 0 and np.isfinite(a):
                t = v + a * (np.float32(1.0) / g)
            out[y, x] = max(t, np.float32(0.25) * v)
    return out


@njit(cache=True, nogil=True)
def _blank(mask, bits, diff, diff_var, score, flux, flux_err, out_mask,
           out_bits):  # pragma: no cover - numba
    """Blank the outputs at unusable pixels and where the score is undefined; return the
    numbers of pixels with ``bits`` in ``mask`` and with ``out_bits`` in ``out_mask``."""
    ny, nx = mask.shape
    n_bad = 0
    n_out = 0
    for y in range(ny):
        for x in range(nx):
            if (out_mask[y, x] & out_bits) != 0:
                n_out += 1
            bad = (mask[y, x] & bits) != 0
            if bad:
                n_bad += 1
            if bad or flux_err[y, x] == np.inf:
                diff[y, x] = 0.0
                diff_var[y, x] = np.inf
                score[y, x] = 0.0
                flux[y, x] = 0.0
                flux_err[y, x] = np.inf
    return n_bad, n_out


@njit(cache=True, nogil=True)
def _scan_mask(combined, bits, edge_bit, radius):  # pragma: no cover - numba
    """One pass over the combined mask: a copy of it; the uint8 map of the pixels within
    ``radius`` columns (same row, clipped at the ends) of a pixel with ``edge_bit`` and none
    of ``bits`` (no data and no mask bit saying why: coverage edges), i.e. the row pass of
    ``box_any(edge, radius, radius)``, written as each run of such pixels ends (no
    whole-image map of them, no running count over every pixel); whether any pixel has that
    edge; and the sorted flat indices of the pixels with any of ``bits``."""
    ny, nx = combined.shape
    out = np.empty((ny, nx), np.int32)
    rows = np.empty((ny, nx), np.uint8)
    any_edge = False
    n = 0
    for y in range(ny):
        orow = rows[y]
        orow[:] = 0
        start = -1  # first column of the current run of edge pixels
        for x in range(nx):
            m = combined[y, x]
            out[y, x] = m
            if (m & bits) != 0:
                n += 1
            elif (m & edge_bit) != 0:
                if start < 0:
                    start = x
                continue
            if start >= 0:
                orow[max(start - radius, 0):min(x + radius, nx)] = 1
                start = -1
                any_edge = True
        if start >= 0:
            orow[max(start - radius, 0):] = 1
            any_edge = True
    idx = np.empty(n, np.int64)
    j = 0
    for y in range(ny):
        for x in range(nx):
            if (combined[y, x] & bits) != 0:
                idx[j] = y * nx + x
                j += 1
    return out, rows, any_edge, idx


@njit(cache=True, nogil=True)
def _or_columns(out, rows, radius, bit):  # pragma: no cover - numba
    """``out |= bit`` where any of ``rows`` (uint8) in rows y - radius .. y + radius (clipped)
    is set: with :func:`_scan_mask`'s row pass, ``box_any(edge, radius, radius)`` ORed into
    ``out`` (running counts down the rows) without the whole-image boolean result."""
    ny, nx = out.shape
    count = np.zeros(nx, np.int32)
    zero = np.int32(0)
    for y in range(min(radius, ny)):
        for x in range(nx):
            count[x] += rows[y, x]
    for y in range(ny):
        if y + radius < ny:
            add = rows[y + radius]
            for x in range(nx):
                count[x] += add[x]
        if y - radius - 1 >= 0:
            sub = rows[y - radius - 1]
            for x in range(nx):
                count[x] -= sub[x]
        orow = out[y]
        for x in range(nx):
            orow[x] |= bit if count[x] > 0 else zero


def dilate_mask_bits(mask: np.ndarray, bits: int, radius: int) -> np.ndarray:
    """Grow the mask bits ``bits`` by a square box of half-side ``radius`` (pixels).

    Each bit is grown separately (a pixel gets every bit of its neighbours within the box);
    other bits are copied. Returns a new int32 array.
    """
    m = np.ascontiguousarray(mask, dtype=np.int32)
    if radius <= 0 or bits == 0:
        return m.copy()
    return _or_dilate(m, np.int32(bits), int(radius))


def _check(name: str, a: np.ndarray, shape: tuple[int, ...] | None) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {a.shape}")
    if shape is not None and a.shape != shape:
        raise ValueError(f"{name} has shape {a.shape}, expected {shape}")
    return a


@njit(cache=True, nogil=True)
def _find(parent, i):  # pragma: no cover - numba
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@njit(cache=True, nogil=True)
def _label_sparse(idx, nx, block=0):  # pragma: no cover - numba
    """8-connected clusters of the masked pixels ``idx`` (sorted flat indices, rows of
    ``nx`` pixels): the 0-based cluster of each pixel, numbered in raster order of their
    first pixel, and their number. With ``block > 0`` the image is cut into ``block`` x
    ``block`` squares (from pixel 0, 0) and two pixels are neighbours only within one square:
    the clusters are the 8-connected pieces of the masked pixels in each square. Union-find
    over the masked pixels only: the neighbours in the row above are found with a pointer
    that moves forward with the pixel (no full-image array is touched)."""
    m = idx.size
    parent = np.arange(m)
    # the row of each pixel by stepping (idx is sorted) and the block column of each column
    # from a table: no integer division per pixel
    cb = np.empty(nx, np.int64)
    for x in range(nx):
        cb[x] = x // block if block > 0 else 0
    row_start = 0
    y_in_block = 0 if block > 0 else 1  # row 0: no row above
    j = 0
    for i in range(m):
        p = idx[i]
        if p >= row_start + nx:
            y = p // nx
            row_start = y * nx
            y_in_block = y % block if block > 0 else 1
        x = p - row_start
        if i > 0 and x > 0 and idx[i - 1] == p - 1 and (block <= 0 or cb[x] == cb[x - 1]):
            a, b = _find(parent, i), _find(parent, i - 1)
            if a != b:
                parent[max(a, b)] = min(a, b)
        lo = p - nx - 1 if x > 0 else p - nx
        hi = p - nx + 1 if x < nx - 1 else p - nx
        while j < i and idx[j] < lo:
            j += 1
        if y_in_block == 0:
            continue  # the row above lies in other squares
        q = j
        while q < i and idx[q] <= hi:
            # idx[q] is in the row above, column x - 1, x or x + 1
            if block <= 0 or cb[idx[q] - (row_start - nx)] == cb[x]:
                a, b = _find(parent, i), _find(parent, q)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            q += 1
    lab = np.empty(m, np.int64)
    n = 0
    for i in range(m):
        r = _find(parent, i)
        if r == i:
            lab[i] = n
            n += 1
        else:
            lab[i] = lab[r]
    return lab, n


@njit(cache=True, nogil=True)
def _cluster_sums(idx, lab, n, n_img, n_var, n_msk, r_img, r_var, r_msk, scale,
                  bad_bits):  # pragma: no cover - numba
    """Per cluster: the flux (search scale) that the in-painting removes from the search
    (``f_n``, its pixels where only the template is unusable) and from the template (``f_r``,
    where only the search is), their summed variance, whether any pixel is unusable in both
    images, and the sums of both images (search scale) and their variances over the pixels
    usable in both that border the cluster (8-neighbours, once per cluster pixel they
    border)."""
    ny, nx = n_img.shape
    f_n = np.zeros(n)
    f_r = np.zeros(n)
    var = np.zeros(n)
    unknown = np.zeros(n, np.bool_)
    ring = np.zeros((n, 4))  # search, template, their variances
    s2 = scale * scale
    y = 0
    row_start = 0
    for i in range(idx.size):
        k = lab[i]
        if idx[i] >= row_start + nx:  # idx is sorted: the row changes rarely
            y = idx[i] // nx
            row_start = y * nx
        x = idx[i] - row_start
        a, va = n_img[y, x], n_var[y, x]
        b, vb = r_img[y, x], r_var[y, x]
        nb = (n_msk[y, x] & bad_bits) != 0 or not (np.isfinite(va) and va > 0) \
            or not np.isfinite(a)
        rb = (r_msk[y, x] & bad_bits) != 0 or not (np.isfinite(vb) and vb > 0) \
            or not np.isfinite(b)
        if nb and rb:
            unknown[k] = True
        elif nb:
            v, w = float(b) * scale, float(vb) * s2
            if np.isfinite(v):
                f_r[k] += v
            if np.isfinite(w):
                var[k] += w
        elif rb:
            v, w = float(a), float(va)
            if np.isfinite(v):
                f_n[k] += v
            if np.isfinite(w):
                var[k] += w
        for yy in range(max(y - 1, 0), min(y + 2, ny)):
            for xx in range(max(x - 1, 0), min(x + 2, nx)):
                a2, va2 = n_img[yy, xx], n_var[yy, xx]
                b2, vb2 = r_img[yy, xx], r_var[yy, xx]
                if (n_msk[yy, xx] & bad_bits) != 0 or (r_msk[yy, xx] & bad_bits) != 0:
                    continue
                if not (np.isfinite(va2) and va2 > 0 and np.isfinite(vb2) and vb2 > 0
                        and np.isfinite(a2) and np.isfinite(b2)):
                    continue
                ring[k, 0] += a2
                ring[k, 1] += float(b2) * scale
                ring[k, 2] += va2
                ring[k, 3] += float(vb2) * s2
    return f_n, f_r, var, unknown, ring


def _static_flux(f_n: np.ndarray, f_r: np.ndarray, ring: np.ndarray, nsigma: float
                 ) -> np.ndarray:
    """|removed flux| of each cluster that belongs to a source in both images.

    A source in one image only (a transient cut by a defect of the other image, a faded one
    cut by a defect of the search) leaves no residual of its own: both images are in-painted,
    so the difference just lacks the cut part of it. A source in both (a star) leaves the
    mismatch of its two cut profiles. The share of the removed search flux that is static is
    estimated by the template's light around the cluster over the search's there (and the
    other way round), clipped to [0, 1]; where the light around is not significant
    (``nsigma``) all of it counts (nothing is known)."""
    def share(num: np.ndarray, den: np.ndarray, vden: np.ndarray) -> np.ndarray:
        sig = den > nsigma * np.sqrt(np.maximum(vden, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(sig, np.clip(num / np.where(sig, den, 1.0), 0.0, 1.0), 1.0)

    return np.abs(f_n * share(ring[:, 1], ring[:, 0], ring[:, 2])
                  + f_r * share(ring[:, 0], ring[:, 1], ring[:, 3]))


@njit(cache=True, nogil=True)
def _grow_clusters(idx, lab, combined, bits, r_cl, min_px, out,
                   block=0):  # pragma: no cover - numba
    """OR into ``out`` the ``bits`` of each pixel of a cluster ``k`` with ``r_cl[k] >
    min_px``, grown by a (2 r + 1)-square box. Only the pixels on a cluster's boundary write
    their box: a pixel whose 8 neighbours all carry its bits (and lie in its ``block``
    square, so in its cluster: :func:`_label_sparse`) is covered by the boxes of the boundary
    pixels of its cluster between it and any point of its box (Chebyshev distance)."""
    ny, nx = combined.shape
    for i in range(idx.size):
        r = r_cl[lab[i]]
        if r <= min_px:
            continue
        y, x = idx[i] // nx, idx[i] % nx
        v = combined[y, x] & bits
        if v == 0:
            continue
        inner = 0 < y < ny - 1 and 0 < x < nx - 1
        if inner and block > 0:
            inner = 0 < y % block < block - 1 and 0 < x % block < block - 1
        if inner:
            for yy in range(y - 1, y + 2):
                for xx in range(x - 1, x + 2):
                    if (combined[yy, xx] & bits) != v:  # v != 0: also "not masked"
                        inner = False
        if inner:
            continue
        for yy in range(max(y - r, 0), min(y + r + 1, ny)):
            for xx in range(max(x - r, 0), min(x + r + 1, nx)):
                out[yy, xx] |= v


@dataclass(frozen=True, eq=False)
class _Clusters:
    """The per-cluster state of the mask growth (:func:`_grow_masks`): the mask before the
    clusters are grown (``base``), the masked pixels (sorted flat ``idx``) and their clusters
    (``lab``, ``n``), each cluster's sums (:func:`_cluster_sums`) and growth ``r_cl`` (px),
    and what the growth rule needs to decide it again (:func:`_cluster_radii`)."""

    base: np.ndarray
    idx: np.ndarray
    lab: np.ndarray
    n: int
    sums: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    r_cl: np.ndarray
    bits: int
    block: int
    sigma_flux: float
    s: float
    radius: int


def _cluster_radii(sums: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                   sigma_flux: float, s: float, radius: int, config: SubtractConfig
                   ) -> tuple[np.ndarray, dict[str, int]]:
    """Each cluster's growth (px, int64; module docstring, *Mask growth*) from its sums
    (:func:`_cluster_sums`), and the numbers of clusters grown by each rule."""
    f_n, f_r, var, unknown, ring = sums
    flux = _static_flux(f_n, f_r, ring, config.source_sigma)
    source = (flux > config.source_sigma * np.sqrt(np.maximum(var, 0.0))) \
        & (flux > sigma_flux)
    with np.errstate(divide="ignore", invalid="ignore"):
        need = np.where(source, 2.0 * s * np.sqrt(np.log(np.maximum(flux / sigma_flux, 1.0))),
                        0.0)
    r_cl = np.where(unknown, radius, np.minimum(np.ceil(need), radius)).astype(np.int64)
    stats = {"clusters": int(f_n.size),
             "grown_source": int(np.sum(source & ~unknown & (r_cl > config.dilate_min_px))),
             "grown_unknown": int(np.sum(unknown))}
    return r_cl, stats


def _grow_masks(combined: np.ndarray, n_img: np.ndarray, n_var: np.ndarray, n_msk: np.ndarray,
                r_img: np.ndarray, r_var: np.ndarray, r_msk: np.ndarray, scale: float,
                bad_bits: int, radius: int, fwhm: float, config: SubtractConfig,
                keep: bool = False) -> tuple[np.ndarray, dict[str, int], _Clusters | None]:
    """The output mask: ``combined`` with EDGE grown by ``radius``, each cluster of masked
    pixels grown by the radius its missing flux needs (module docstring, *Mask growth*), at
    least ``config.dilate_min_px``; also the numbers of clusters grown by each rule and, with
    ``keep``, the clusters' state (:meth:`MaskPrediction.update`; None without clusters to
    grow or without ``keep``)."""
    bits = int(config.dilate_bits) & ~maskbits.EDGE
    out, rows, any_edge, idx = _scan_mask(combined, np.int32(bits), np.int32(maskbits.EDGE),
                                          max(int(radius), 0))
    if radius > 0 and any_edge:
        # one bit: a box dilation (O(1) per pixel), its column pass ORed into the mask
        _or_columns(out, rows, int(radius), np.int32(maskbits.EDGE))
    del rows
    if config.dilate_min_px > 0:
        out |= dilate_mask_bits(combined & bits, bits, int(config.dilate_min_px))
    stats = {"clusters": 0, "grown_source": 0, "grown_unknown": 0}
    if idx.size == 0 or radius <= 0:
        return out, stats, None
    block = max(8, int(np.ceil(config.growth_block * radius))) if config.growth_block > 0 else 0
    lab, n = _label_sparse(idx, int(combined.shape[1]), block)
    sums = _cluster_sums(idx, lab, n, n_img, n_var, n_msk, r_img, r_var, r_msk, float(scale),
                         int(bad_bits))
    # point-source flux error of the difference: background sigma (median of a pixel grid)
    # x sqrt(NEA)
    s = fwhm / 2.3548
    step = (slice(None, None, 8), slice(None, None, 8))
    nv_s = np.asarray(n_var[step], np.float64)
    rv_s = np.asarray(r_var[step], np.float64)
    ok = np.isfinite(nv_s) & (nv_s > 0) & np.isfinite(rv_s) & (rv_s > 0)
    sig = float(np.sqrt(np.median(nv_s[ok]) + np.median(rv_s[ok]) * scale ** 2)) \
        if ok.any() else np.inf
    sigma_flux = float(sig * np.sqrt(4.0 * np.pi) * s)
    r_cl, stats = _cluster_radii(sums, sigma_flux, s, radius, config)
    state = _Clusters(base=out.copy(), idx=idx, lab=lab, n=int(n), sums=sums, r_cl=r_cl,
                      bits=bits, block=block, sigma_flux=sigma_flux, s=s,
                      radius=radius) if keep else None
    _grow_clusters(idx, lab, combined, np.int32(bits), r_cl, int(config.dilate_min_px), out,
                   block)
    return out, stats, state


def _mask_inputs(search_image: np.ndarray, search_var: np.ndarray, search_mask: np.ndarray,
                 template_image: np.ndarray, template_var: np.ndarray,
                 template_mask: np.ndarray, zp_search: float, zp_template: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                            np.ndarray, float, np.ndarray]:
    """The inputs checked (2-D, one shape), the template's scale and the combined mask (OR of
    both masks, EDGE where either image has no data)."""
    n_img = _check("search_image", search_image, None)
    shape = n_img.shape
    n_var = _check("search_var", search_var, shape)
    n_msk = _check("search_mask", search_mask, shape)
    r_img = _check("template_image", template_image, shape)
    r_var = _check("template_var", template_var, shape)
    r_msk = _check("template_mask", template_mask, shape)
    scale = float(10.0 ** (0.4 * (zp_search - zp_template)))
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"bad zero points: {zp_search}, {zp_template}")
    combined = _combine_masks(
        np.ascontiguousarray(n_img, dtype=np.float32), np.ascontiguousarray(n_var, np.float32),
        np.ascontiguousarray(n_msk, dtype=np.int32), np.ascontiguousarray(r_img, np.float32),
        np.ascontiguousarray(r_var, dtype=np.float32), np.ascontiguousarray(r_msk, np.int32))
    return n_img, n_var, n_msk, r_img, r_var, r_msk, scale, combined


def _output_mask(combined: np.ndarray, n_img: np.ndarray, n_var: np.ndarray,
                 n_msk: np.ndarray, r_img: np.ndarray, r_var: np.ndarray, r_msk: np.ndarray,
                 scale: float, psf_n: PSFSource, psf_r: PSFSource, config: SubtractConfig,
                 keep: bool = False
                 ) -> tuple[np.ndarray, dict[str, int], int, float, float, _Clusters | None]:
    """The output mask of :func:`subtract` (module docstring, *Mask growth*), the growth
    statistics, the full growth radius (px), the two PSF FWHMs (px, CCD centre) and, with
    ``keep``, the clusters' state (:func:`_grow_masks`)."""
    ny, nx = combined.shape
    xc, yc = 0.5 * (nx - 1), 0.5 * (ny - 1)
    fwhm_n = stamp_fwhm(psf_n.render(xc, yc))
    fwhm_r = stamp_fwhm(psf_r.render(xc, yc))
    radius = int(np.ceil(config.dilate_fwhm * max(fwhm_n, fwhm_r)))
    bad_bits = int(config.bad_bits) | maskbits.EDGE
    growth: dict[str, int] = {}
    state = None
    if config.dilate_sources_only:
        mask, growth, state = _grow_masks(combined, n_img, n_var, n_msk, r_img, r_var, r_msk,
                                          scale, bad_bits, radius, max(fwhm_n, fwhm_r),
                                          config, keep)
    else:
        mask = dilate_mask_bits(combined, int(config.dilate_bits) | maskbits.EDGE, radius)
    return mask, growth, radius, fwhm_n, fwhm_r, state


@njit(cache=True, nogil=True)
def _changed_near(old, new, windows):  # pragma: no cover - numba
    """uint8 map of the pixels with a changed pixel (``new`` differs from ``old``, two NaNs
    equal) in their 3x3 neighbourhood (clipped at the borders: ``box_any(changed, 1, 1)``,
    made in the same pass), the number of changed pixels, and whether any pixel became
    finite or not finite. Only the pixels in the rows ``y0:y1``, columns ``x0:x1`` of each
    row ``(y0, y1, x0, x1)`` of the (n, 4) int64 ``windows`` are compared (the others are
    known to be equal; a changed pixel in several windows is counted in each); all of them
    when ``windows`` has -1 as its first value."""
    ny, nx = old.shape
    out = np.zeros((ny, nx), np.uint8)
    n = 0
    finite_changed = False
    whole = windows.shape[0] > 0 and windows[0, 0] < 0
    nw = 1 if whole else windows.shape[0]
    for k in range(nw):
        if whole:
            y0, y1, x0, x1 = 0, ny, 0, nx
        else:
            y0, y1 = max(windows[k, 0], 0), min(windows[k, 1], ny)
            x0, x1 = max(windows[k, 2], 0), min(windows[k, 3], nx)
        for y in range(y0, y1):
            for x in range(x0, x1):
                a, b = old[y, x], new[y, x]
                if a != b and not (np.isnan(a) and np.isnan(b)):
                    n += 1
                    if np.isfinite(a) != np.isfinite(b):
                        finite_changed = True
                    for yy in range(max(y - 1, 0), min(y + 2, ny)):
                        for xx in range(max(x - 1, 0), min(x + 2, nx)):
                            out[yy, xx] = 1
    return out, n, finite_changed


#: :func:`_changed_near`'s ``windows`` that compare every pixel.
_WHOLE = np.full((1, 4), -1, np.int64)


_Used = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True, eq=False)
class _Inputs:
    """The arguments a :class:`MaskPrediction` was made from (arrays and PSFs by identity)."""

    search_image: np.ndarray
    search_var: np.ndarray
    search_mask: np.ndarray
    search_psf: Any
    template_image: np.ndarray
    template_var: np.ndarray
    template_mask: np.ndarray
    template_psf: Any
    zp_search: float
    zp_template: float
    config: SubtractConfig
    template_gain_map: np.ndarray | None
    # the checked arrays the growth used (the template variance with its source noise);
    # empty in the inputs subtract() compares with a prediction's
    used: _Used | tuple[()]
    scale: float

    def same(self, other: _Inputs) -> bool:
        """Whether ``other`` holds the same arrays and PSFs (identity) and numbers."""
        names = ("search_image", "search_var", "search_mask", "search_psf", "template_image",
                 "template_var", "template_mask", "template_psf", "template_gain_map")
        return (all(getattr(self, k) is getattr(other, k) for k in names)
                and self.zp_search == other.zp_search
                and self.zp_template == other.zp_template and self.config == other.config)


@dataclass(frozen=True, eq=False)
class MaskPrediction:
    """The mask :func:`subtract` gives some inputs, made before subtracting
    (:func:`predict_difference_mask`); given to :func:`subtract` (``mask_prediction``) with
    the same inputs it is used instead of computing the mask again.

    :meth:`update` gives the prediction for a search image that differs from the one it was
    made for in a few places (fakes injected) by deciding again the growth of the clusters of
    masked pixels whose sums those places touch, and growing them again only in the boxes
    where a cluster's growth changed: exactly the mask of the new inputs.

    Attributes
    ----------
    mask : numpy.ndarray
        (ny, nx) int32 mask bits, :attr:`Subtraction.mask` of these inputs.
    combined : numpy.ndarray
        (ny, nx) int32 OR of both input masks, EDGE where either image has no data.
    growth : dict[str, int]
        Numbers of clusters grown by each rule (``meta["mask_growth"]`` of :func:`subtract`).
    radius : int
        Full growth radius (px).
    fwhm_search, fwhm_template : float
        PSF FWHMs (px) at the CCD centre.
    """

    mask: np.ndarray
    combined: np.ndarray
    growth: dict[str, int]
    radius: int
    fwhm_search: float
    fwhm_template: float
    _inputs: _Inputs
    _clusters: _Clusters | None

    def update(self, search_image: np.ndarray,
               windows: np.ndarray | None = None) -> MaskPrediction:
        """The prediction for the same inputs with ``search_image`` instead.

        Parameters
        ----------
        search_image : numpy.ndarray
            (ny, nx) search image (e-), e.g. with fakes added.
        windows : numpy.ndarray or None
            (n, 4) integer rows ``(y0, y1, x0, x1)``: the image differs from the one this
            prediction was made for in these windows only (rows ``y0:y1``, columns
            ``x0:x1``; :attr:`desgw.diff.fakes.FakeInjection.windows`), so only they are
            compared (~12 ms per DECam CCD for the whole image). None: every pixel.

        Returns
        -------
        MaskPrediction
            Its mask is exactly :func:`predict_difference_mask`'s for the new image; a pixel
            that became finite or not finite (no data) makes it computed again in full.
        """
        inp = self._inputs
        assert inp.used
        old = inp.used[0]
        new = _check("search_image", search_image, old.shape)
        if windows is None:
            win = _WHOLE
        else:
            win = np.asarray(windows, np.int64).reshape(-1, 4)
            if win.size and int(win.min()) < 0:
                raise ValueError("windows must be >= 0")
        near_map, n_changed, finite_changed = _changed_near(
            np.ascontiguousarray(old, np.float32), np.ascontiguousarray(new, np.float32),
            np.ascontiguousarray(win))
        if finite_changed:
            return predict_difference_mask(
                new, inp.search_var, inp.search_mask, inp.search_psf, inp.template_image,
                inp.template_var, inp.template_mask, inp.template_psf,
                zp_search=inp.zp_search, zp_template=inp.zp_template, config=inp.config,
                template_gain_map=inp.template_gain_map)
        used: _Used = (new, *inp.used[1:])
        new_inputs = replace(inp, search_image=search_image, used=used)
        cl = self._clusters
        if n_changed == 0 or cl is None:
            # the growth depends on the search image through the clusters' sums only
            return replace(self, _inputs=new_inputs)
        # the clusters whose pixels or 8-neighbours changed: their sums again (same pixels,
        # same order: the same floating-point sums as a full computation)
        near = near_map.reshape(-1)[cl.idx] != 0
        touched = np.unique(cl.lab[near])
        if touched.size == 0:
            return replace(self, _inputs=new_inputs)
        hit = np.zeros(max(int(cl.n), int(touched[-1]) + 1), bool)
        hit[touched] = True
        sel = hit[cl.lab]
        _, n_var, n_msk, r_img, r_var, r_msk = used
        bad_bits = int(inp.config.bad_bits) | maskbits.EDGE
        part = _cluster_sums(cl.idx[sel], cl.lab[sel], cl.n, new, n_var, n_msk, r_img, r_var,
                             r_msk, float(inp.scale), bad_bits)
        f_n, f_r, var, unknown, ring = (a.copy() for a in cl.sums)
        sums = (f_n, f_r, var, unknown, ring)
        for a, b in zip(sums, part):
            a[touched] = b[touched]
        r_cl, growth = _cluster_radii(sums, cl.sigma_flux, cl.s, cl.radius, inp.config)
        new_cl = replace(cl, sums=sums, r_cl=r_cl)
        moved = np.flatnonzero(r_cl != cl.r_cl)
        if moved.size == 0:
            return replace(self, growth=growth, _inputs=new_inputs, _clusters=new_cl)
        # every box a moved cluster wrote before or writes now lies in its pixels' bounding
        # box widened by its larger growth: there the mask is the base again, then every
        # cluster that can reach it (pixels within the full radius) is grown again
        ny, nx = self.mask.shape
        ys, xs = cl.idx // nx, cl.idx % nx
        mask = self.mask.copy()
        rects = []
        for k in moved:
            on = cl.lab == k
            r = int(max(r_cl[k], cl.r_cl[k]))
            y0, y1 = max(int(ys[on].min()) - r, 0), min(int(ys[on].max()) + r + 1, ny)
            x0, x1 = max(int(xs[on].min()) - r, 0), min(int(xs[on].max()) + r + 1, nx)
            mask[y0:y1, x0:x1] = cl.base[y0:y1, x0:x1]
            rects.append((y0, y1, x0, x1))
        reach = np.zeros(cl.idx.size, bool)
        big = cl.radius
        for y0, y1, x0, x1 in rects:
            reach |= ((ys >= y0 - big) & (ys < y1 + big) & (xs >= x0 - big) & (xs < x1 + big))
        _grow_clusters(cl.idx[reach], cl.lab[reach], self.combined, np.int32(cl.bits), r_cl,
                       int(inp.config.dilate_min_px), mask, cl.block)
        return replace(self, mask=mask, growth=growth, _inputs=new_inputs, _clusters=new_cl)


def _prepared(search_image: np.ndarray, search_var: np.ndarray, search_mask: np.ndarray,
              template_image: np.ndarray, template_var: np.ndarray, template_mask: np.ndarray,
              zp_search: float, zp_template: float, config: SubtractConfig,
              template_gain_map: np.ndarray | None
              ) -> tuple[_Used, float, np.ndarray]:
    """The checked inputs (search image, variance, mask, template image, variance with the
    source noise of ``template_gain_map`` where given, mask), the template's scale and the
    combined mask."""
    n_img, n_var, n_msk, r_img, r_var, r_msk, scale, combined = _mask_inputs(
        search_image, search_var, search_mask, template_image, template_var, template_mask,
        zp_search, zp_template)
    if template_gain_map is not None and config.add_source_noise:
        # the template's source noise per pixel, added as zogy would with a scalar gain
        g = _check("template_gain_map", template_gain_map, n_img.shape)
        r_var = _add_source_var(np.ascontiguousarray(r_img, np.float32),
                                np.ascontiguousarray(r_var, np.float32),
                                np.ascontiguousarray(g, np.float32))
    return (n_img, n_var, n_msk, r_img, r_var, r_msk), scale, combined


def predict_difference_mask(search_image: np.ndarray, search_var: np.ndarray,
                            search_mask: np.ndarray, search_psf: PSFSource | np.ndarray,
                            template_image: np.ndarray, template_var: np.ndarray,
                            template_mask: np.ndarray, template_psf: PSFSource | np.ndarray,
                            *, zp_search: float, zp_template: float,
                            config: SubtractConfig = SubtractConfig(),
                            template_gain_map: np.ndarray | None = None) -> MaskPrediction:
    """The mask :func:`subtract` would give these inputs, without subtracting, kept with what
    :meth:`MaskPrediction.update` and :func:`subtract` (``mask_prediction``) reuse.

    The same arguments as :func:`subtract` (units there). It costs the mask combination and
    growth only (~0.2 s per DECam CCD, one core), e.g. to place fakes on the pixels that will
    be usable in the difference before they are injected (:mod:`desgw.diff.pipeline`); the
    arrays are kept by reference and must not be modified afterwards.

    Returns
    -------
    MaskPrediction
    """
    used, scale, combined = _prepared(search_image, search_var, search_mask, template_image,
                                      template_var, template_mask, zp_search, zp_template,
                                      config, template_gain_map)
    n_img, n_var, n_msk, r_img, r_var, r_msk = used
    mask, growth, radius, fwhm_n, fwhm_r, state = _output_mask(
        combined, n_img, n_var, n_msk, r_img, r_var, r_msk, scale, as_psf_source(search_psf),
        as_psf_source(template_psf), config, keep=True)
    inputs = _Inputs(search_image=search_image, search_var=search_var, search_mask=search_mask,
                     search_psf=search_psf, template_image=template_image,
                     template_var=template_var, template_mask=template_mask,
                     template_psf=template_psf, zp_search=float(zp_search),
                     zp_template=float(zp_template), config=config,
                     template_gain_map=template_gain_map, used=used, scale=scale)
    return MaskPrediction(mask=mask, combined=combined, growth=growth, radius=radius,
                          fwhm_search=fwhm_n, fwhm_template=fwhm_r, _inputs=inputs,
                          _clusters=state)


def difference_mask(search_image: np.ndarray, search_var: np.ndarray, search_mask: np.ndarray,
                    search_psf: PSFSource | np.ndarray, template_image: np.ndarray,
                    template_var: np.ndarray, template_mask: np.ndarray,
                    template_psf: PSFSource | np.ndarray, *, zp_search: float,
                    zp_template: float, config: SubtractConfig = SubtractConfig(),
                    template_gain_map: np.ndarray | None = None) -> np.ndarray:
    """The mask :func:`subtract` would give these inputs, without subtracting.

    The same arguments as :func:`subtract` (units there); :func:`predict_difference_mask`
    keeps what reusing it needs.

    Returns
    -------
    numpy.ndarray
        (ny, nx) int32 mask bits, :attr:`Subtraction.mask` of the same inputs.
    """
    used, scale, combined = _prepared(search_image, search_var, search_mask, template_image,
                                      template_var, template_mask, zp_search, zp_template,
                                      config, template_gain_map)
    n_img, n_var, n_msk, r_img, r_var, r_msk = used
    return _output_mask(combined, n_img, n_var, n_msk, r_img, r_var, r_msk, scale,
                        as_psf_source(search_psf), as_psf_source(template_psf), config)[0]


def subtract(search_image: np.ndarray, search_var: np.ndarray, search_mask: np.ndarray,
             search_psf: PSFSource | np.ndarray, template_image: np.ndarray,
             template_var: np.ndarray, template_mask: np.ndarray,
             template_psf: PSFSource | np.ndarray, *, zp_search: float, zp_template: float,
             config: SubtractConfig = SubtractConfig(),
             template_gain_map: np.ndarray | None = None,
             search_noise_acf: np.ndarray | None = None,
             template_noise_acf: np.ndarray | None = None,
             mask_prediction: MaskPrediction | None = None) -> Subtraction:
    """ZOGY subtraction of a registered template from a search CCD.

    Parameters
    ----------
    search_image : numpy.ndarray
        (ny, nx) background-subtracted search image (e-).
    search_var : numpy.ndarray
        (ny, nx) background variance of the search image (e^2; ``1 / weight``); non-finite or
        <= 0 means no data.
    search_mask : numpy.ndarray
        (ny, nx) int mask bits (:mod:`desgw.se.maskbits`).
    search_psf : PSFSource or numpy.ndarray
        Search PSF (``render(x, y, size=None)`` at 0-based positions, or a constant stamp).
    template_image, template_var, template_mask : numpy.ndarray
        The template resampled onto the search grid, background subtracted, in units with zero
        point ``zp_template``; its background variance (same units squared) and mask bits.
    template_psf : PSFSource or numpy.ndarray
        Template PSF in the search pixel grid.
    zp_search, zp_template : float
        AB zero points (``m = -2.5 log10(flux) + zp``) of the two images.
    config : SubtractConfig
    template_gain_map : numpy.ndarray or None
        (ny, nx) electrons per template unit of the template's sources' Poisson noise, per
        pixel (a coadd's :attr:`~desgw.diff.coadd.Coadd.gain`); replaces
        ``config.template_gain``. Pixels with a gain <= 0 or not finite get no source noise.
    search_noise_acf, template_noise_acf : numpy.ndarray or None
        Autocorrelations of correlated pixel noise (e.g. the template's from resampling;
        :func:`desgw.diff.zogy.zogy`): the variances of the score and the difference are
        scaled per tile (factors in ``meta["score_noise_factor"]``,
        ``meta["diff_noise_factor"]``).
    mask_prediction : MaskPrediction or None
        :func:`predict_difference_mask` (or :meth:`MaskPrediction.update`) of these very
        inputs (the same arrays and PSF objects, zero points, configuration and gain map):
        its mask is used instead of computing it again (the result's ``mask`` is that
        array). Made for other inputs: ValueError.

    Returns
    -------
    Subtraction
    """
    t0 = time.perf_counter()
    if mask_prediction is not None:
        if not isinstance(mask_prediction, MaskPrediction):
            raise TypeError("mask_prediction must be a MaskPrediction")
        asked = _Inputs(search_image=search_image, search_var=search_var,
                        search_mask=search_mask, search_psf=search_psf,
                        template_image=template_image, template_var=template_var,
                        template_mask=template_mask, template_psf=template_psf,
                        zp_search=float(zp_search), zp_template=float(zp_template),
                        config=config, template_gain_map=template_gain_map, used=(),
                        scale=0.0)
        if not mask_prediction._inputs.same(asked):
            raise ValueError("mask_prediction was made for other inputs (arrays, PSFs, zero "
                             "points, config or gain map): predict it for these")
        kept, scale = mask_prediction._inputs.used, mask_prediction._inputs.scale
        assert kept
        n_img, n_var, n_msk, r_img, r_var, r_msk = kept
        combined = mask_prediction.combined
    else:
        used, scale, combined = _prepared(search_image, search_var, search_mask,
                                          template_image, template_var, template_mask,
                                          zp_search, zp_template, config, template_gain_map)
        n_img, n_var, n_msk, r_img, r_var, r_msk = used
    shape = n_img.shape
    psf_n, psf_r = as_psf_source(search_psf), as_psf_source(template_psf)
    bad_bits = int(config.bad_bits) | maskbits.EDGE
    gain_n: float | None = config.search_gain if config.add_source_noise else None
    gain_r: float | None = config.template_gain if config.add_source_noise else None
    if template_gain_map is not None and config.add_source_noise:
        gain_r = None  # the template's source noise per pixel is in r_var (_prepared)
    # The template stays in its units: F_r = 1 / scale puts it on the search scale inside ZOGY.
    res = zogy(n_img, r_img, n_var, r_var, psf_n, psf_r, f_new=1.0, f_ref=1.0 / scale,
               mask=combined, mask_bits=bad_bits, gain_new=gain_n, gain_ref=gain_r,
               noise_acf_new=search_noise_acf, noise_acf_ref=template_noise_acf,
               config=config.zogy_config())

    ny, nx = shape
    grow = int(config.dilate_bits) | maskbits.EDGE
    if mask_prediction is not None:
        mask, growth = mask_prediction.mask, dict(mask_prediction.growth)
        radius = mask_prediction.radius
        fwhm_n, fwhm_r = mask_prediction.fwhm_search, mask_prediction.fwhm_template
    else:
        mask, growth, radius, fwhm_n, fwhm_r, _ = _output_mask(
            combined, n_img, n_var, n_msk, r_img, r_var, r_msk, scale, psf_n, psf_r, config)
    # zogy's output arrays are ours: blank in place.
    diff, diff_var, score = res.diff, res.diff_var, res.score
    flux, flux_err = res.flux, res.flux_err
    n_bad, n_masked = _blank(combined, np.int32(bad_bits), diff, diff_var, score, flux,
                             flux_err, mask, np.int32(bad_bits | grow))
    bad_fraction = n_bad / combined.size
    masked_fraction = n_masked / combined.size
    seconds = time.perf_counter() - t0
    meta: dict[str, Any] = {
        "scale": scale, "zp_search": float(zp_search), "zp_template": float(zp_template),
        "fwhm_search": fwhm_n, "fwhm_template": fwhm_r, "dilate_radius": radius,
        "bad_fraction": bad_fraction, "masked_fraction": masked_fraction, "mask_growth": growth,
        "f_s": res.f_s, "f_d": res.f_d, "sigma_search": res.sigma_new,
        "sigma_template": res.sigma_ref, "score_noise_factor": res.score_noise_factor,
        "diff_noise_factor": res.diff_noise_factor, "zogy_kernel_size": res.kernel_size,
        "zogy_border": res.border, "seconds": seconds, "config": config,
    }
    log.info("subtract: %dx%d, scale %.4f, FWHM search %.2f template %.2f px, %.2f s",
             ny, nx, scale, fwhm_n, fwhm_r, seconds)
    return Subtraction(diff=diff, diff_var=diff_var, score=score, flux_image=flux,
                       flux_err_image=flux_err, mask=mask, psf_diff=res.psf_diff, meta=meta)
