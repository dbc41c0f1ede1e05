"""Steps of :func:`desgw.diff.pipeline.difference_ccd` that are not a call of another module:
template quality cuts, the two-pass sky subtraction, the footprint pre-check of a template
CCD, the ideal limit from the measured noise, and the assembly of the candidate and fake
tables."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import sep
from astropy.table import Table, vstack
from numba import njit

from desgw.diff.efficiency import IdealLimit, ideal_limit_mag
from desgw.diff.measure import MEASURE_COLUMNS
from desgw.diff.resample_kernels import box_any
from desgw.diff.zogy_psf import stamp_fwhm
from desgw.se.background import BackgroundConfig, estimate_background
from desgw.se.maskbits import UNUSABLE

from .pipeline_types import CCDProducts, DiffConfig, RejectedTemplateCCD

__all__ = [
    "CANDIDATE_EXTRA_COLUMNS",
    "FAKE_EXTRA_COLUMNS",
    "as_rejected",
    "candidate_flags",
    "combine_catalogs",
    "empty_candidates",
    "empty_fakes",
    "footprint_overlaps",
    "forced_flux",
    "grow_objects",
    "ideal_limit",
    "measure_noise_acf",
    "model_weight",
    "relative_sky",
    "relative_sky_skew_shift",
    "resampling_noise_acf",
    "search_sky",
    "subtract_sky",
    "template_cut_reasons",
    "usable_pixels",
]

#: Columns :func:`desgw.diff.pipeline.difference_ccd` adds to the measured ones.
CANDIDATE_EXTRA_COLUMNS: tuple[str, ...] = ("expnum", "ccdnum", "mag", "magerr", "veto",
                                            "is_fake", "fake_id", "real_bogus")
#: Columns added to the planned fakes.
FAKE_EXTRA_COLUMNS: tuple[str, ...] = ("flux_e", "recovered", "cand_id", "separation_px",
                                       "flux_forced", "flux_forced_err", "masked")

_FAKE_PLAN_COLUMNS = (("fake_id", np.int64), ("x", np.float64), ("y", np.float64),
                      ("ra", np.float64), ("dec", np.float64), ("mag", np.float64),
                      ("hosted", bool), ("host_id", np.int64), ("host_offset_re", np.float64))


def template_cut_reasons(t: CCDProducts, search: CCDProducts, config: DiffConfig
                         ) -> tuple[str, ...]:
    """Why a template CCD cannot be used (empty when it can)."""
    reasons = []
    if t.band != search.band:
        reasons.append(f"band {t.band!r} is not the search band {search.band!r}")
    if t.psf is None:
        reasons.append("no PSF model")
    if t.wcs is None:
        reasons.append("no WCS")
    if not np.isfinite(t.zp):
        reasons.append("no zeropoint")
    if config.require_template_qc and not t.qc_passed:
        reasons.append("single-epoch QC failed")
    if config.max_template_fwhm_arcsec is not None and np.isfinite(t.fwhm) \
            and t.fwhm > config.max_template_fwhm_arcsec:
        reasons.append(f"FWHM {t.fwhm:.2f}\" > {config.max_template_fwhm_arcsec:.2f}\"")
    if config.min_template_teff is not None and np.isfinite(t.t_eff) \
            and t.t_eff < config.min_template_teff:
        reasons.append(f"t_eff {t.t_eff:.2f} < {config.min_template_teff:.2f}")
    if t.image.shape != t.mask.shape or t.image.shape != t.weight.shape:
        reasons.append(f"image/mask/weight shapes differ: {t.image.shape}, {t.mask.shape}, "
                       f"{t.weight.shape}")
    return tuple(reasons)


def model_weight(ccd: CCDProducts) -> CCDProducts:
    """``ccd`` with SE's model weight (``weight * weight_scale``) and ``weight_scale`` 1.

    SE divides its model weight (sky and read noise) by the ratio of the sky variance it
    measures on the image outside the detected objects (header ``WGTSCALE``), which is right
    for one epoch's photometry: that scatter also holds the static light of star wings and
    undetected sources. A difference subtracts the static scene, so its noise is the model's
    (the sources' Poisson noise is added from the pixel values). Returns ``ccd`` itself when
    the scale is 1 or not a finite positive number; otherwise a new weight array (the input's
    is not modified).
    """
    f = float(ccd.weight_scale)
    if not (math.isfinite(f) and f > 0) or f == 1.0:
        return ccd
    return replace(ccd, weight=np.multiply(ccd.weight, np.float32(f), dtype=np.float32),
                   weight_scale=1.0)


def subtract_sky(image: np.ndarray, mask: np.ndarray, config: DiffConfig
                 ) -> tuple[np.ndarray, float, float]:
    """Background-subtracted float32 copy of ``image`` (two passes) and the global sky and rms.

    The second pass masks pixels more than ``config.object_sigma`` background sigma above the
    first-pass sky (grown by ``background.object_grow``): the sources' light would otherwise
    bias the sky up by an amount that depends on the seeing, i.e. differently in the search and
    the template, and leave a constant in the difference.
    """
    first = estimate_background(image, mask, config=config.background)
    objects = _above(np.asarray(image), first.level, first.rms,
                     np.float32(config.object_sigma))
    second = estimate_background(image, mask, objects=grow_objects(
        objects, config.background.object_grow), config=_no_grow(config.background))
    sub = np.subtract(image, second.level, dtype=np.float32)
    return sub, float(second.global_level), float(second.global_rms)


def search_sky(search: CCDProducts, config: DiffConfig) -> tuple[np.ndarray, float, float]:
    """The search image with its sky subtracted (float32, e-) and the global sky and rms (e-).

    A CCD straight from SE (``search.background``, the fused search CCD) has SE's sky
    subtracted when ``config.relative_sky`` is set: SE estimated it a moment ago on the same
    pixels (two passes too, its second with the first pass's detections and their wings
    masked, :func:`desgw.se.process.process_ccd`), and the relative sky removed after the
    coadd (:func:`relative_sky`) sets the search's mesh-scale sky to the template's whatever
    the search's own estimate, so estimating it again (two background passes, ~0.2 CPU-s per
    CCD) would change the difference only below the mesh scale. Without the relative sky,
    or for a CCD read from its files, :func:`subtract_sky` (the estimate the prepared
    templates get).
    """
    bkg = search.background
    if bkg is not None and config.relative_sky and np.shape(bkg.level) == search.shape:
        sub = np.subtract(search.image, bkg.level, dtype=np.float32)
        return sub, float(bkg.global_level), float(bkg.global_rms)
    return subtract_sky(search.image, search.mask, config)


@njit(cache=True, nogil=True)
def _above(image, level, rms, nsigma):  # pragma: no cover - numba
    """bool ``float32(image) - level > nsigma * rms`` (float32, as numpy computes it), one
    pass without the two full-size temporaries of the numpy expression."""
    ny, nx = image.shape
    out = np.empty((ny, nx), np.bool_)
    for y in range(ny):
        for x in range(nx):
            out[y, x] = (np.float32(image[y, x]) - level[y, x]) > nsigma * rms[y, x]
    return out


@njit(cache=True, nogil=True)
def _relative_inputs(search, template, good, thr):  # pragma: no cover - numba
    """``search - template`` (float32), the uint8 map of pixels above ``thr`` in either
    image and the uint8 map of the pixels not ``good`` (bit 1), in one pass."""
    ny, nx = search.shape
    rel = np.empty((ny, nx), np.float32)
    objects = np.empty((ny, nx), np.uint8)
    bad = np.empty((ny, nx), np.uint8)
    for y in range(ny):
        for x in range(nx):
            a = search[y, x]
            b = template[y, x]
            rel[y, x] = np.float32(a) - np.float32(b)
            objects[y, x] = np.uint8(a > thr) | np.uint8(b > thr)
            bad[y, x] = np.uint8(1) - np.uint8(good[y, x])
    return rel, objects, bad


def grow_objects(objects: np.ndarray, grow: int) -> np.ndarray:
    """A boolean object map grown by a ``(2 grow + 1)``-square box (pixels).

    The same pixels as ``grow`` 3 x 3 dilations or a maximum filter of that size, in one
    O(1)-per-pixel pass per axis (:func:`desgw.diff.resample_kernels.box_any`): ~10x faster
    than ``scipy.ndimage.maximum_filter`` on a CCD.
    """
    obj = np.ascontiguousarray(objects, dtype=bool)
    if grow <= 0:
        return obj.copy()
    return box_any(obj.view(np.uint8), int(grow), int(grow)).view(bool)


def _no_grow(config: BackgroundConfig) -> BackgroundConfig:
    """The background settings with an object map that is already grown."""
    return replace(config, object_grow=0)


def footprint_overlaps(t: CCDProducts, search: CCDProducts, *, margin_px: float = 8.0) -> bool:
    """Whether a template CCD's footprint can reach the search grid (a cheap pre-check).

    The template's border (sampled every 256 px) is mapped to the search pixels; it overlaps
    when the bounding box of the mapped points intersects the search CCD grown by
    ``margin_px``.
    """
    ny, nx = t.shape
    xs = np.r_[np.arange(0, nx, 256.0), nx - 1.0]
    ys = np.r_[np.arange(0, ny, 256.0), ny - 1.0]
    bx = np.r_[xs, np.full(ys.size, nx - 1.0), xs[::-1], np.zeros(ys.size)]
    by = np.r_[np.zeros(xs.size), ys, np.full(xs.size, ny - 1.0), ys[::-1]]
    ra, dec = t.wcs.all_pix2world(bx, by, 0)
    with np.errstate(all="ignore"):
        try:
            sx, sy = search.wcs.all_world2pix(ra, dec, 0, quiet=True)
        except TypeError:  # a WCS whose all_world2pix has no quiet argument
            sx, sy = search.wcs.all_world2pix(ra, dec, 0)
    ok = np.isfinite(sx) & np.isfinite(sy)
    if not ok.any():
        return False
    sny, snx = search.shape
    return bool(sx[ok].max() >= -margin_px and sx[ok].min() <= snx - 1 + margin_px
                and sy[ok].max() >= -margin_px and sy[ok].min() <= sny - 1 + margin_px)


def _median_sigma(var: np.ndarray, good: np.ndarray, stride: int = 4) -> float:
    sl = (slice(None, None, stride), slice(None, None, stride))
    v = var[sl][good[sl]]
    v = v[np.isfinite(v) & (v > 0)]
    return float(np.sqrt(np.median(v))) if v.size else math.nan


def ideal_limit(search: CCDProducts, search_var: np.ndarray, template_var: np.ndarray,
                good: np.ndarray, template_psf: Any, noise_correlation_factor: float, *,
                zp: float, nsigma: float) -> IdealLimit | None:
    """The ``nsigma`` PSF-fit limit of the difference from the measured noise.

    Search noise: median background sigma of the usable pixels; template noise: median sigma
    of the coadd (search scale) times ``sqrt(noise_correlation_factor)`` (the white noise that
    has the resampled noise's large-area variance); the noise-equivalent area is that of the
    broader of the two PSFs rendered at the CCD centre (:func:`ideal_limit_mag`).
    """
    s_noise = _median_sigma(search_var, good)
    t_noise = _median_sigma(template_var, good) * math.sqrt(max(noise_correlation_factor, 1.0))
    if not (np.isfinite(s_noise) and np.isfinite(t_noise)):
        return None
    ny, nx = search.shape
    xc, yc = 0.5 * (nx - 1), 0.5 * (ny - 1)
    ps = np.asarray(search.psf.render(xc, yc), np.float64)
    pt = np.asarray(template_psf.render(xc, yc), np.float64)
    fs, ft = stamp_fwhm(ps), stamp_fwhm(pt)
    return ideal_limit_mag(s_noise, t_noise, fs, zp, template_fwhm=ft, nsigma=nsigma,
                           psf_stamp=ps if fs >= ft else pt)


def combine_catalogs(catalogs: Sequence[Table | None]) -> Table | None:
    """One table of the sky positions and star/galaxy columns of several SE catalogs."""
    keep = ("ALPHAWIN_J2000", "DELTAWIN_J2000", "SPREAD_MODEL", "CLASS_STAR")
    parts = []
    for cat in catalogs:
        if cat is None or len(cat) == 0:
            continue
        if not {"ALPHAWIN_J2000", "DELTAWIN_J2000"} <= set(cat.colnames):
            continue
        parts.append(Table({k: np.asarray(cat[k], np.float64) for k in keep
                            if k in cat.colnames}))
    if not parts:
        return None
    common = set.intersection(*(set(p.colnames) for p in parts))
    return vstack([p[[c for c in keep if c in common]] for p in parts])


def empty_candidates() -> Table:
    """The candidate table with no rows (all columns)."""
    t = Table()
    for name in MEASURE_COLUMNS + CANDIDATE_EXTRA_COLUMNS:
        dtype = (bool if name in ("negative", "is_dipole", "veto", "is_fake")
                 else np.int64 if name in ("id", "expnum", "ccdnum", "fake_id") else np.float64)
        t[name] = np.zeros(0, dtype=dtype)
    return t


def empty_fakes() -> Table:
    """The fakes table with no rows (all columns)."""
    t = Table({name: np.zeros(0, dtype=dt) for name, dt in _FAKE_PLAN_COLUMNS})
    t["flux_e"] = np.zeros(0)
    t["recovered"] = np.zeros(0, bool)
    t["cand_id"] = np.zeros(0, np.int64)
    t["separation_px"] = np.zeros(0)
    t["flux_forced"] = np.zeros(0)
    t["flux_forced_err"] = np.zeros(0)
    t["masked"] = np.zeros(0, bool)
    return t


def candidate_flags(candidates: Table) -> np.ndarray:
    """Detection flag bits of each candidate: 1 veto, 2 negative, 4 dipole, 8 masked pixels
    within 2 FWHM, 16 fake (the ``flags`` of :class:`desgw.db.NewDetection`)."""
    n = len(candidates)
    flags = np.zeros(n, dtype=np.int64)
    if n == 0:
        return flags
    flags |= np.where(np.asarray(candidates["veto"], bool), 1, 0)
    flags |= np.where(np.asarray(candidates["negative"], bool), 2, 0)
    flags |= np.where(np.asarray(candidates["is_dipole"], bool), 4, 0)
    flags |= np.where(np.asarray(candidates["masked_frac"], float) > 0, 8, 0)
    flags |= np.where(np.asarray(candidates["is_fake"], bool), 16, 0)
    return flags


@njit(cache=True, nogil=True)
def _usable(sm, sw, tm, tw, bits):  # pragma: no cover - numba
    ny, nx = sm.shape
    out = np.empty((ny, nx), np.bool_)
    for y in range(ny):
        for x in range(nx):
            out[y, x] = sw[y, x] > 0 and tw[y, x] > 0 and ((sm[y, x] | tm[y, x]) & bits) == 0
    return out


def usable_pixels(search_mask: np.ndarray, search_weight: np.ndarray,
                  template_mask: np.ndarray, template_weight: np.ndarray) -> np.ndarray:
    """bool (ny, nx): both images have data and no unusable bit (one pass)."""
    shapes = [np.shape(a) for a in (search_mask, search_weight, template_mask, template_weight)]
    if len(set(shapes)) != 1 or len(shapes[0]) != 2:
        raise ValueError(f"masks and weights must share one 2-D shape, got {shapes}")
    return _usable(np.asarray(search_mask), np.asarray(search_weight),
                   np.asarray(template_mask), np.asarray(template_weight), int(UNUSABLE))


def as_rejected(t: CCDProducts, reasons: Sequence[str]) -> RejectedTemplateCCD:
    """A :class:`RejectedTemplateCCD` of ``t``."""
    return RejectedTemplateCCD(int(t.expnum), int(t.ccdnum), tuple(reasons))


# ----------------------------------------------------------------------------- correlated noise
def resampling_noise_acf(noise_correlation_factor: float, *, order: int = 3,
                         phases: int = 64) -> np.ndarray:
    """Autocorrelation (unit centre) of the noise of an image resampled with Lanczos-``order``.

    Neighbouring output pixels share input pixels: with 1-D taps ``l_p(t)`` at sub-pixel phase
    ``p`` the covariance at lag ``D`` is ``sum_t l_p(t) l_p(t + D)`` times the input variance.
    The phase varies slowly over a CCD; the phase-averaged covariance, separable in x and y and
    normalised to 1 at lag 0, is returned, its off-centre part scaled so that its sum equals the
    measured ``noise_correlation_factor`` (the ratio of a large-area sum's variance to the sum
    of the per-pixel variances, which is exactly the sum of the autocorrelation).

    Returns
    -------
    numpy.ndarray
        Square float64 stamp of side ``4 order - 1``, lag 0 at the centre.
    """
    m = np.arange(-(order - 1), order + 1, dtype=np.float64)
    cov = np.zeros(2 * len(m) - 1)
    for p in (np.arange(phases) + 0.5) / phases:
        d = p - m
        w = np.sinc(d) * np.sinc(d / order)
        w /= w.sum()
        cov += np.correlate(w, w, mode="full")
    rho1 = cov / cov[len(m) - 1]
    rho = np.outer(rho1, rho1)
    c = rho.shape[0] // 2
    total = rho.sum()
    if noise_correlation_factor > 1.0 and total > 1.0:
        off = rho.copy()
        off[c, c] = 0.0
        rho = off * ((noise_correlation_factor - 1.0) / (total - 1.0))
        rho[c, c] = 1.0
    elif noise_correlation_factor <= 1.0:
        rho = np.zeros_like(rho)
        rho[c, c] = 1.0
    return rho


def measure_noise_acf(image: np.ndarray, mask: np.ndarray, weight: np.ndarray, *,
                      half: int = 3, object_sigma: float = 4.0, grow: int = 10,
                      box: int = 1024) -> np.ndarray:
    """Autocorrelation of an image's pixel noise measured on its blank sky.

    For an input that was already resampled (its noise correlated over a few pixels), the
    covariance of the normalised residual ``image * sqrt(weight)`` at lags up to ``half``
    pixels, over pixel pairs both usable (no unusable mask bit, weight > 0, not within
    ``grow`` px of a pixel whose 3 x 3 mean exceeds ``object_sigma`` times that mean's robust
    noise, i.e. away from sources; noise alone hardly ever reaches 4 sigma there): a stamp
    whose centre is the measured variance over the one the weight gives (1 when the weight is
    right) and whose sum is the noise correlation factor. Measured in up to four ``box`` x
    ``box`` regions spread over the image (enough for a 1 % centre: ~10^6 pixels).

    Parameters
    ----------
    image : numpy.ndarray
        (ny, nx) background-subtracted image (e-).
    mask : numpy.ndarray
        (ny, nx) int mask bits.
    weight : numpy.ndarray
        (ny, nx) inverse variance (e^-2).

    Returns
    -------
    numpy.ndarray
        (2 half + 1, 2 half + 1) float64, lag 0 at the centre.
    """
    from scipy import ndimage

    ny, nx = image.shape
    ys = sorted({0, max(ny - box, 0)} if ny > box else {0})
    xs = sorted({0, max(nx - box, 0)} if nx > box else {0})
    n = 2 * half + 1
    num = np.zeros((n, n))
    cnt = np.zeros((n, n))
    for y0 in ys:
        for x0 in xs:
            sl = (slice(y0, min(y0 + box, ny)), slice(x0, min(x0 + box, nx)))
            w = np.asarray(weight[sl], np.float64)
            img = np.asarray(image[sl], np.float64)
            ok = (w > 0) & np.isfinite(img) & ((np.asarray(mask[sl]) & UNUSABLE) == 0)
            r = np.where(ok, img * np.sqrt(np.where(ok, w, 0.0)), 0.0)
            # sources: the 3 x 3 mean above object_sigma times its (robust) noise, grown
            sm = ndimage.uniform_filter(r, 3)
            good_sm = sm[ok]
            if good_sm.size == 0:
                continue
            s_sm = 1.4826 * float(np.median(np.abs(good_sm - np.median(good_sm))))
            ok &= ~ndimage.binary_dilation(np.abs(sm) > object_sigma * s_sm, iterations=grow)
            if ok.sum() < 100:
                continue
            r = np.where(ok, r - float(np.mean(r[ok])), 0.0)
            m = ok.astype(np.float64)
            for dy in range(-half, half + 1):
                for dx in range(-half, half + 1):
                    a = (slice(max(dy, 0), r.shape[0] + min(dy, 0)),
                         slice(max(dx, 0), r.shape[1] + min(dx, 0)))
                    b = (slice(max(-dy, 0), r.shape[0] + min(-dy, 0)),
                         slice(max(-dx, 0), r.shape[1] + min(-dx, 0)))
                    num[dy + half, dx + half] += float(np.sum(r[a] * r[b]))
                    cnt[dy + half, dx + half] += float(np.sum(m[a] * m[b]))
    if cnt[half, half] < 1000:
        raise ValueError(f"too few blank-sky pixels ({int(cnt[half, half])}) to measure the "
                         "noise autocorrelation")
    return num / np.maximum(cnt, 1.0)


def forced_flux(subtraction: Any, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ZOGY PSF flux and error of point sources at known positions (forced photometry).

    The flux image (the PSF flux of a source centred on each pixel) is interpolated at the
    sub-pixel position with a cubic B-spline fitted to the surrounding 9 x 9 pixels (mirror
    boundary; all windows filtered at once, then evaluated on their 4 x 4 spline nodes); the
    error is the error image at the nearest pixel. Positions off the image give NaN.
    """
    from scipy.ndimage import spline_filter1d

    fimg, ferr = subtraction.flux_image, subtraction.flux_err_image
    ny, nx = fimg.shape
    x = np.asarray(x, np.float64).reshape(-1)
    y = np.asarray(y, np.float64).reshape(-1)
    flux = np.full(x.shape, np.nan)
    err = np.full(x.shape, np.nan)
    cx = np.floor(x + 0.5)
    cy = np.floor(y + 0.5)
    ok = np.isfinite(cx) & np.isfinite(cy) & (cx >= 4) & (cx < nx - 4) & (cy >= 4) & (cy < ny - 4)
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return flux, err
    cxi, cyi = cx[idx].astype(np.int64), cy[idx].astype(np.int64)
    off = np.arange(-4, 5)
    wins = np.asarray(fimg[(cyi[:, None, None] + off[None, :, None]),
                          (cxi[:, None, None] + off[None, None, :])], np.float64)
    coef = spline_filter1d(spline_filter1d(wins, 3, axis=1, mode="mirror"), 3, axis=2,
                           mode="mirror")
    u = y[idx] - cyi + 4.0  # window coordinates, in [3.5, 4.5]
    v = x[idx] - cxi + 4.0

    def basis(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = np.floor(t)
        a = t - f
        w = np.stack([(1 - a) ** 3, 3 * a**3 - 6 * a**2 + 4, -3 * a**3 + 3 * a**2 + 3 * a + 1,
                      a**3], axis=1) / 6.0
        return f.astype(np.int64)[:, None] - 1 + np.arange(4)[None, :], w

    ri, wy = basis(u)
    ci, wx = basis(v)
    n = np.arange(idx.size)[:, None, None]
    c = coef[n, ri[:, :, None], ci[:, None, :]]
    flux[idx] = np.einsum("nab,na,nb->n", c, wy, wx)
    e = np.asarray(ferr[cyi, cxi], np.float64)
    err[idx] = np.where(np.isfinite(e), e, np.nan)
    return flux, err


def relative_sky(search_image: np.ndarray, template_image: np.ndarray, good: np.ndarray,
                 search_rms: float, config: DiffConfig, *, skew_shift: float = 0.0
                 ) -> np.ndarray:
    """Smooth sky of ``search - template`` (both already sky subtracted), float32 (ny, nx).

    A background mismatch of 1 % of the pixel noise biases the PSF flux of a difference-image
    source by ~0.1 sigma (the flux filter sums ~100 pixels), more than either sky estimate
    can promise: faint sources below the object threshold bias each sky by an amount that
    depends on the seeing. On the mesh scale the two images' PSFs do not matter, so the mesh
    sky of the plain difference, with the pixels above ``object_sigma`` (search noise) in
    either image and the unusable ones left out, is the relative offset; the caller removes it
    from the search image.

    The mesh level is sep's clipped mode, which lies below the mean of a skewed distribution:
    ``skew_shift`` (e-, :func:`relative_sky_skew_shift`) is added to it so that the level is
    the difference's mean (0 gives the mode).
    """
    thr = np.float32(config.object_sigma * search_rms)
    # one pass: the plain difference, the pixels above thr in either image, the unusable ones
    rel, objects, bad = _relative_inputs(np.asarray(search_image), np.asarray(template_image),
                                         np.ascontiguousarray(good, np.bool_), thr)
    grow = int(config.background.object_grow)
    excluded = box_any(objects, grow, grow) if grow > 0 else objects
    np.bitwise_or(excluded, bad, out=excluded)
    del objects, bad
    level = _mesh_level(rel, excluded.view(np.bool_), config.background)
    if skew_shift != 0.0:
        level += np.float32(skew_shift)
    return level


def relative_sky_skew_shift(search_sky: float, search_var: np.ndarray,
                            template_var: np.ndarray, template_gain: np.ndarray | None,
                            good: np.ndarray, *, resample_kernel: str = "lanczos3",
                            stride: int = 8) -> float:
    """How far the clipped mesh mode of ``search - template`` lies below its mean (e-).

    The Poisson noise of both skies is skewed, the search's up and the subtracted template's
    down: the plain difference has the third cumulant ``kappa3 = kappa3_S - kappa3_T`` and its
    clipped mode lies :data:`desgw.se.background.SKEW_MODE_RESPONSE` ``* kappa3 / var`` below
    its mean (the shift :func:`desgw.se.background.poisson_skew_shift` corrects in the SE sky;
    ~0.25 / 0.34 e- for a template 3x / 10x deeper than the search, ~1 % of the pixel noise).

    - ``kappa3_S``: the search image is in electrons, so its sky's third cumulant is its sky
      level ``search_sky`` (the light of the sky and of the unresolved sources).
    - ``kappa3_T``: the coadd's Poisson variance over its gain (``C / gain`` is the Poisson
      variance of a value ``C``, so ``var / gain`` is the third cumulant for one template or
      n equal ones), times :func:`desgw.diff.resample.third_cumulant_factor` of the kernel
      (the resampling averages skewness away faster than variance). Its Poisson share of the
      variance (the rest is read noise and the rescaling of the SE weights) is taken as the
      search's, ``search_sky / var_S``.
    - ``var``: ``var_S + var_T``, the medians of the per-pixel variances over the ``good``
      pixels (every ``stride``-th row and column).

    Not modelled: the mesh mode's own noise (~0.03 e- per CCD at ~1000 e- of sky), the lift
    of the mode by the object exclusion (pixels above ``object_sigma`` in the search: ~+0.03
    e- on pure Poisson skies) and the skew of the faint sources' plain difference when the
    seeing differs. On the audit nights (CCD 28, in process, fakes off) the blank-sky mean
    of the difference went +0.21 -> +0.04 e- (crowded), +0.20 -> +0.02 (dense), +0.15 ->
    -0.07 (sparse, a template of 0.75" for a 0.98" search) and +0.26 -> +0.06 (sparse, a
    1.62" template for a 1.25" search): the sign of the rest follows the seeing difference.

    Parameters
    ----------
    search_sky : float
        Sky level of the search image (e-, before it was subtracted).
    search_var, template_var : numpy.ndarray
        (ny, nx) per-pixel background variances of the search and of the coadd on the search
        scale (e^2; not finite where unusable).
    template_gain : numpy.ndarray or None
        (ny, nx) electrons per coadd unit of the coadd's Poisson noise
        (:attr:`desgw.diff.coadd.Coadd.gain`); None: no template term.
    good : numpy.ndarray
        (ny, nx) bool, the pixels usable in both.

    Returns
    -------
    float
        The shift (e-): add it to the mode to get the mean; 0 when the inputs give none.
    """
    from desgw.diff.resample import third_cumulant_factor
    from desgw.se.background import SKEW_MODE_RESPONSE

    sl = (slice(None, None, stride), slice(None, None, stride))
    g = np.asarray(good)[sl]

    def median(a: np.ndarray) -> float:
        v = np.asarray(a)[sl][g]
        v = v[np.isfinite(v) & (v > 0)]
        return float(np.median(v)) if v.size else math.nan

    var_s, var_t = median(search_var), median(template_var)
    if not (math.isfinite(search_sky) and search_sky > 0 and math.isfinite(var_s)
            and math.isfinite(var_t)):
        return 0.0
    k3 = float(search_sky)
    if template_gain is not None:
        gain = median(template_gain)
        if math.isfinite(gain):
            poisson = min(search_sky / var_s, 1.0)
            k3 -= poisson * var_t / gain * third_cumulant_factor(resample_kernel)
    return float(SKEW_MODE_RESPONSE * k3 / (var_s + var_t))


def _mesh_level(data: np.ndarray, excluded: np.ndarray, config: BackgroundConfig
                ) -> np.ndarray:
    """The sky level map (float32) of ``data`` with the ``excluded`` pixels left out: what
    :func:`desgw.se.background.estimate_background` gives with ``excluded`` as its objects
    (no mask bits, no growth, ``fthresh`` 0) and ``config``'s mesh and filter, without the rms
    map it also interpolates (a full-image pass nobody here reads)."""
    bkg = sep.Background(np.ascontiguousarray(data, np.float32),
                         mask=np.ascontiguousarray(excluded, np.bool_), bw=config.mesh,
                         bh=config.mesh, fw=config.filter, fh=config.filter, fthresh=0.0)
    return bkg.back(dtype=np.float32)
