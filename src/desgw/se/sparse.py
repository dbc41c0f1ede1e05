"""Sparse fields: models of lower order when a CCD has fewer stars than the full models need.

A CCD image (or a cut-out of one) may hold too few usable stars for the full PSF model, the
clipped zeropoint or the polynomial astrometric fit. Each function here is the degraded
version of one of those steps; each returns, besides its value, a reason (one sentence, with
the numbers) that the caller records as a quality flag, so nothing is silently worse:

* :func:`fit_psf_sparse`: the full :func:`desgw.se.psf.fit_psf` when it works; else a constant
  (position-independent) PSF from the 1-2 usable stars; else, with no usable star, a circular
  pixel-integrated Moffat of a given FWHM (the first-pass seeing or the image header's FWHM).
* :func:`sparse_zeropoint`: the inverse-variance weighted mean of 1 or 2 stars with its
  error (each star's error plus a floor for the reference transformation, in quadrature; for
  two stars scaled up by their disagreement when it exceeds their errors).
* :func:`refine_wcs_shift`: a pure translation of a WCS that already holds the distortion
  (the CP TPV WCS, or desgw's optical-model TAN-SIP) from 1 or more matched reference stars:
  the offset with the most reference - detection pairs agreeing within the match radius,
  then the weighted mean offset of those pairs. Its error is reported per axis.

All functions are pure (arrays in, values out) and log at WARNING when they degrade.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import numpy as np
from astropy.wcs import WCS
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import cKDTree

from desgw.se.astrometry import AstrometryError, AstrometryResult
from desgw.se.photocal import ZeropointResult
from desgw.se.psf import PSFConfig, PSFFitError, PSFModel, fit_psf

__all__ = [
    "MOFFAT_BETA",
    "ShiftRefinement",
    "fit_psf_sparse",
    "moffat_psf_model",
    "refine_wcs_shift",
    "sparse_zeropoint",
]

log = logging.getLogger(__name__)

#: Moffat index of the analytic fallback PSF (DECam stars: beta ~ 2.5-3.5).
MOFFAT_BETA = 3.0
_DEG2AS = 3600.0


# ------------------------------------------------------------------------------------- PSF
def moffat_psf_model(fwhm_px: float, image_shape: tuple[int, int], *, stamp: int = 25,
                     beta: float = MOFFAT_BETA, lanczos_order: int = 4, oversample: int = 7,
                     n_candidates: int = 0) -> PSFModel:
    """A constant circular Moffat PSF model, integrated over the pixels.

    Parameters
    ----------
    fwhm_px : float
        FWHM of the Moffat on the sky (pixels), > 0.
    image_shape : (int, int)
        (ny, nx) of the CCD the model describes.
    stamp : int
        Odd side of the model stamp (pixels); the stamp sums to 1.
    beta : float
        Moffat index (> 1).
    lanczos_order : int
        Sub-pixel shift kernel order recorded in the model.
    oversample : int
        Sub-pixels per pixel side for the pixel integration.
    n_candidates : int
        Candidate stars that were offered (recorded in the model).

    Returns
    -------
    PSFModel
        Degree 0, no stars.
    """
    if not (math.isfinite(fwhm_px) and fwhm_px > 0):
        raise ValueError(f"moffat_psf_model: FWHM must be positive, got {fwhm_px}")
    if stamp < 5 or stamp % 2 == 0:
        raise ValueError(f"moffat_psf_model: stamp must be odd and >= 5, got {stamp}")
    alpha = fwhm_px / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    h = stamp // 2
    sub = (np.arange(stamp * oversample) + 0.5) / oversample - 0.5 - h
    r2 = sub[:, None] ** 2 + sub[None, :] ** 2
    fine = (1.0 + r2 / alpha ** 2) ** (-beta)
    img = fine.reshape(stamp, oversample, stamp, oversample).sum(axis=(1, 3))
    img /= img.sum()
    ny, nx = int(image_shape[0]), int(image_shape[1])
    return PSFModel(coeffs=img[None].astype(np.float64), degree=0, x_zero=(nx - 1) / 2.0,
                    x_scale=float(nx), y_zero=(ny - 1) / 2.0, y_scale=float(ny),
                    image_shape=(ny, nx), lanczos_order=lanczos_order,
                    n_candidates=int(n_candidates))


def fit_psf_sparse(image: np.ndarray, weight: np.ndarray, mask: np.ndarray | None,
                   x: ArrayLike, y: ArrayLike, *, config: PSFConfig = PSFConfig(),
                   fallback_fwhm_px: float, fallback_source: str = "the seeing estimate",
                   segmap: np.ndarray | None = None, neighbour_xy: np.ndarray | None = None
                   ) -> tuple[PSFModel, str | None]:
    """:func:`desgw.se.psf.fit_psf`, degrading to a constant or analytic PSF with few stars.

    Parameters
    ----------
    image, weight, mask, x, y, config
        As for :func:`desgw.se.psf.fit_psf` (image in e-, weight in e-**-2, 0-based pixels).
    fallback_fwhm_px : float
        FWHM (pixels) of the Moffat used when no star is usable.
    fallback_source : str
        Where that FWHM comes from, for the reason text.
    segmap, neighbour_xy : numpy.ndarray, optional
        Passed to :func:`desgw.se.psf.fit_psf`.

    Returns
    -------
    (PSFModel, str or None)
        The model and, when it is a fallback, why (None for the model of ``fit_psf``): a
        constant PSF from fewer stars than ``config.min_stars_per_term``, or the analytic
        Moffat.
    """
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    n_cand = int(x.size)
    try:
        model = fit_psf(image, weight, mask, x, y, segmap=segmap, neighbour_xy=neighbour_xy,
                        config=config)
    except PSFFitError as exc:
        n_usable = int(exc.n_usable)
        if n_usable >= 1:
            low = replace(config, poly_degree=0, min_stars_per_term=float(n_usable))
            try:
                model = fit_psf(image, weight, mask, x, y, segmap=segmap,
                                neighbour_xy=neighbour_xy, config=low)
            except PSFFitError:
                pass
            else:
                reason = (f"PSF constant over the CCD from {model.n_stars} star(s): {n_usable} "
                          f"usable of {n_cand} candidates, {exc.n_required} needed for a "
                          "fitted model")
                log.warning(reason)
                return model, reason
        model = moffat_psf_model(fallback_fwhm_px, np.shape(image), stamp=config.stamp,
                                 lanczos_order=config.lanczos_order, n_candidates=n_cand)
        reason = (f"PSF analytic (circular Moffat beta {MOFFAT_BETA:g}, FWHM "
                  f"{fallback_fwhm_px:.2f} px from {fallback_source}): {n_usable} usable stars "
                  f"of {n_cand} candidates")
        log.warning(reason)
        return model, reason
    # (a polynomial degree lowered by fit_psf itself for 3+ stars is its normal behaviour,
    # logged there, and not a degradation)
    return model, None


# ------------------------------------------------------------------------------- zeropoint
def sparse_zeropoint(delta: ArrayLike, delta_err: ArrayLike, *, error_floor: float = 0.02,
                     n_matched: int | None = None) -> ZeropointResult:
    """Zeropoint from one or two stars, with its error.

    Parameters
    ----------
    delta : array_like, shape (n,)
        ``mag_ref - mag_inst`` per star (mag), n = 1 or 2 (non-finite values are dropped).
    delta_err : array_like, shape (n,)
        1-sigma error of each delta (mag); NaN counts as 0 (the floor remains).
    error_floor : float
        Added in quadrature to each error (mag; the reference transformation's scatter). Must
        be > 0 when some error is 0.
    n_matched : int, optional
        Stars matched before any selection (recorded; default: n).

    Returns
    -------
    ZeropointResult
        ``method = "sparse"``; ``zp_err = 1 / sqrt(sum w)`` with ``w = 1 / (err^2 +
        floor^2)``, times ``max(1, sqrt(chi2))`` for two stars.

    Raises
    ------
    ValueError
        No finite star, more than two stars, or a zero total error.
    """
    d = np.asarray(delta, dtype=np.float64).ravel()
    e = np.broadcast_to(np.asarray(delta_err, dtype=np.float64).ravel(), d.shape)
    good = np.isfinite(d)
    d, e = d[good], np.nan_to_num(e[good], nan=0.0)
    if not 1 <= d.size <= 2:
        raise ValueError(f"sparse_zeropoint takes 1 or 2 stars, got {d.size}")
    var = e * e + error_floor * error_floor
    if not np.all(var > 0):
        raise ValueError("sparse_zeropoint: zero error for a star and no error floor")
    w = 1.0 / var
    zp = float(np.sum(w * d) / np.sum(w))
    err = 1.0 / math.sqrt(float(np.sum(w)))
    if d.size == 2:
        chi2 = float(np.sum(w * (d - zp) ** 2))
        err *= max(1.0, math.sqrt(chi2))
    rms = float(np.std(d))
    return ZeropointResult(zp=zp, zp_err=err, rms=rms, n_used=int(d.size),
                           n_matched=int(d.size if n_matched is None else n_matched),
                           delta=d, delta_err=e, used=np.ones(d.size, dtype=bool),
                           method="sparse")


# ------------------------------------------------------------------------------- astrometry
def _tangent(ra: NDArray, dec: NDArray, ra0: float, dec0: float) -> NDArray:
    """Gnomonic projection about (ra0, dec0): (n, 2) arcsec (xi East, eta North)."""
    a = np.deg2rad(np.asarray(ra) - ra0)
    d = np.deg2rad(np.asarray(dec))
    d0 = math.radians(dec0)
    cosc = math.sin(d0) * np.sin(d) + math.cos(d0) * np.cos(d) * np.cos(a)
    xi = np.cos(d) * np.sin(a) / cosc
    eta = (math.cos(d0) * np.sin(d) - math.sin(d0) * np.cos(d) * np.cos(a)) / cosc
    return np.column_stack([np.rad2deg(xi), np.rad2deg(eta)]) * _DEG2AS


@dataclass(frozen=True)
class ShiftRefinement:
    """The translation :func:`refine_wcs_shift` applied.

    Attributes
    ----------
    result : AstrometryResult
        ``sip_order`` and ``fit_order`` are 0 (translation only; the WCS keeps its distortion
        terms); rms per axis over the matches after the shift (NaN with one star).
    shift_ra_arcsec, shift_dec_arcsec : float
        Reference minus the input WCS's position of the matched detections (RA along
        RA cos(dec)), i.e. the correction applied (arcsec).
    shift_err_arcsec : float
        1-sigma error of the shift per axis (arcsec): the scatter of the matches over
        sqrt(n), never less than ``centroid_err_arcsec / sqrt(n)``.
    """

    result: AstrometryResult
    shift_ra_arcsec: float
    shift_dec_arcsec: float
    shift_err_arcsec: float


def refine_wcs_shift(x: ArrayLike, y: ArrayLike, ref_ra: ArrayLike, ref_dec: ArrayLike,
                     initial_wcs: WCS, *, image_shape: tuple[int, int],
                     max_offset_arcsec: float = 5.0, match_radius_arcsec: float = 1.0,
                     centroid_err_arcsec: float = 0.03) -> ShiftRefinement:
    """Translate a WCS onto the reference stars it matches (for fields with few stars).

    Parameters
    ----------
    x, y : array_like, shape (n,)
        Detection centroids (0-based pixels); non-finite rows are ignored.
    ref_ra, ref_dec : array_like, shape (m,)
        Reference positions at the exposure epoch (deg).
    initial_wcs : astropy.wcs.WCS
        WCS that holds the distortion (CP TPV, desgw optical TAN-SIP); only CRVAL changes.
    image_shape : (int, int)
        (ny, nx) of the image.
    max_offset_arcsec : float
        Largest offset of the WCS that is searched.
    match_radius_arcsec : float
        Pairs whose offsets agree with the chosen offset within this radius are the matches.
    centroid_err_arcsec : float
        Per-axis centroid error assumed for one star (floor of the shift error).

    Returns
    -------
    ShiftRefinement

    Raises
    ------
    AstrometryError
        No detection or reference, or no reference within ``max_offset_arcsec`` of a
        detection.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    ra = np.asarray(ref_ra, dtype=np.float64).ravel()
    dec = np.asarray(ref_dec, dtype=np.float64).ravel()
    det_idx = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    ref_idx = np.flatnonzero(np.isfinite(ra) & np.isfinite(dec))
    ny, nx = int(image_shape[0]), int(image_shape[1])

    def fail(reason: str) -> AstrometryError:
        return AstrometryError(reason, n_detections=det_idx.size, n_refs=ref_idx.size)

    if det_idx.size == 0 or ref_idx.size == 0:
        raise fail("shift-only refinement: no detection or no reference star")
    cx, cy = (nx - 1) / 2.0, (ny - 1) / 2.0
    ra0, dec0 = (float(v) for v in initial_wcs.all_pix2world(cx, cy, 0))
    ref_t = _tangent(ra[ref_idx], dec[ref_idx], ra0, dec0)

    def det_plane(wcs: WCS) -> NDArray:
        rd, dd = wcs.all_pix2world(x[det_idx], y[det_idx], 0)
        return _tangent(rd, dd, ra0, dec0)

    det_t = det_plane(initial_wcs)
    # (detection, reference) pairs closer than max_offset_arcsec, from a k-d tree: a crowded
    # CCD that falls back here has 10^4-10^5 of them, too many for all-pairs arrays
    lists = cKDTree(ref_t).query_ball_point(det_t, r=max_offset_arcsec)
    n_per = np.fromiter((len(v) for v in lists), dtype=np.int64, count=len(lists))
    if n_per.sum() == 0:
        raise fail(f"shift-only refinement: no reference star within {max_offset_arcsec:g} "
                   "arcsec of a detection")
    cand = np.column_stack([np.repeat(np.arange(len(lists)), n_per),
                            np.concatenate([np.asarray(v, dtype=np.int64) for v in lists
                                            if len(v)])])
    offs = ref_t[cand[:, 1]] - det_t[cand[:, 0]]
    # votes: the pairs whose offsets agree with each pair's within match_radius_arcsec
    votes = cKDTree(offs).query_ball_point(offs, r=match_radius_arcsec, return_length=True)
    # most agreeing pairs; among equals the smallest offset (the WCS is close already)
    best = int(np.lexsort((np.hypot(offs[:, 0], offs[:, 1]), -votes))[0])
    agree_best = np.hypot(*(offs - offs[best]).T) <= match_radius_arcsec
    pairs = cand[agree_best]
    # one reference per detection and one detection per reference: the closest to the offset
    resid = np.hypot(*(offs[agree_best] - offs[best]).T)
    order = np.argsort(resid, kind="stable")
    seen_d: set[int] = set()
    seen_r: set[int] = set()
    keep = []
    for k in order:
        d_i, r_i = int(pairs[k, 0]), int(pairs[k, 1])
        if d_i in seen_d or r_i in seen_r:
            continue
        seen_d.add(d_i)
        seen_r.add(r_i)
        keep.append(k)
    pairs = pairs[np.array(keep, dtype=int)]
    n = len(pairs)
    shift = np.mean(ref_t[pairs[:, 1]] - det_t[pairs[:, 0]], axis=0)
    if len(pairs) >= 10:
        # chance pairs fall anywhere in the match disc (a crowded field has many): keep the
        # pairs within 3 sigma of the shift, sigma from the median of the 2-D residual
        # (Rayleigh: median = 1.177 sigma), never tighter than the centroid error
        for _ in range(3):
            r = np.hypot(*(ref_t[pairs[:, 1]] - det_t[pairs[:, 0]] - shift).T)
            lim = max(3.0 * float(np.median(r)) / 1.1774, 3.0 * centroid_err_arcsec)
            if np.count_nonzero(r <= lim) < 10:
                break
            pairs = pairs[r <= lim]
            shift = np.mean(ref_t[pairs[:, 1]] - det_t[pairs[:, 0]], axis=0)

    wcs = initial_wcs.deepcopy()
    total = np.zeros(2)
    for _ in range(3):  # CRVAL shift == sky translation at the centre to << 1 mas after 2 passes
        cra, cdec = (float(v) for v in wcs.wcs.crval)
        wcs.wcs.crval = [cra + shift[0] / _DEG2AS / math.cos(math.radians(cdec)),
                         cdec + shift[1] / _DEG2AS]
        wcs.wcs.set()
        total += shift
        res = ref_t[pairs[:, 1]] - det_plane(wcs)[pairs[:, 0]]
        shift = res.mean(axis=0)
        if np.hypot(*shift) < 1e-5:
            break
    res = ref_t[pairs[:, 1]] - det_plane(wcs)[pairs[:, 0]]
    if n > 1:
        rms_ra, rms_dec = (float(v) for v in np.sqrt(np.sum(res ** 2, axis=0) / (n - 1)))
        scatter = math.hypot(rms_ra, rms_dec) / math.sqrt(2.0)
    else:
        rms_ra = rms_dec = scatter = math.nan
    err = max(centroid_err_arcsec, scatter if math.isfinite(scatter) else 0.0) / math.sqrt(n)
    result = AstrometryResult(
        wcs=wcs, n_detections=int(det_idx.size), n_refs=int(ref_idx.size), n_matched=n,
        n_used=n, rms_ra_arcsec=rms_ra, rms_dec_arcsec=rms_dec,
        rms_arcsec=math.hypot(rms_ra, rms_dec) if n > 1 else math.nan, sip_order=0,
        fit_order=0, wcs_max_error_arcsec=0.0, src_index=det_idx[pairs[:, 0]],
        ref_index=ref_idx[pairs[:, 1]], used=np.ones(n, dtype=bool),
        offset_ra_arcsec=float(total[0]), offset_dec_arcsec=float(total[1]), rotation_deg=0.0,
        scale_ratio=1.0, bic={}, inverse_max_error_pix=0.0)
    log.warning("astrometry: shift-only refinement from %d star(s): (%.3f, %.3f) +- %.3f arcsec",
                n, total[0], total[1], err)
    return ShiftRefinement(result=result, shift_ra_arcsec=float(total[0]),
                           shift_dec_arcsec=float(total[1]), shift_err_arcsec=float(err))
