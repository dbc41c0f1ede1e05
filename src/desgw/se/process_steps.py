"""Small decisions of single-epoch processing that :func:`desgw.se.process.process_ccd` makes
between the steps: the seeing estimate that sizes the cosmic-ray, detection and PSF settings,
the detection filter and threshold for that seeing, and the PSF stamp size.

Seeing estimate (:func:`estimate_seeing`): the PSF FWHM is needed before the PSF is fitted (L.A.Cosmic's
``objlim`` and the detection filter depend on it). It is measured on a first detection pass:
the bright, isolated, point-like, unsaturated detections (:func:`desgw.se.psf.select_psf_candidates`)
are cut out, each normalised to its flux, re-centred to the nearest pixel, and a pixel-integrated
elliptical Moffat is fitted to their median (:func:`desgw.se.psf_shape.fit_moffat`). The
unaligned sub-pixel centres broaden the median by less than 1 % at FWHM >= 3 px, plenty for
settings that only need ~10 %.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
from astropy.table import Table
from scipy.integrate import quad
from scipy.optimize import least_squares
from scipy.special import expit, gamma, j0, j1, kv, roots_legendre

from desgw.se.background import Background, residual_background
from desgw.se.detect import DetectConfig, DetectionResult, gaussian_kernel
from desgw.se.measure import MeasureConfig, close_companions, psf_fluxes, psf_model_image
from desgw.se.psf import PSFConfig, PSFModel, select_psf_candidates
from desgw.se.psf_shape import fit_moffat

__all__ = ["SeeingEstimate", "estimate_seeing", "detect_config_for_seeing", "psf_config_for_seeing",
           "psf_aperture_correction", "wing_outside_flux", "weight_rescale_factor", "cosmics_objlim",
           "cosmic_ray_residuals", "mean_sky_background", "segment_pixels"]

log = logging.getLogger(__name__)

#: FWHM of the Kolmogorov profile whose transfer function is exp(-k**(5/3)).
_KOLMOGOROV_FWHM = 2.9207006
#: Inner radius (in FWHM) of the rings that the two wing forms are fitted to. Both forms are
#: whole profiles (a Moffat, and the Kolmogorov profile itself), so their inner rings, of high
#: signal-to-noise, fix them: measured on models fitted to 25-40 noisy galsim stars (8 subsets
#: of each of 6 fields), starting at 1.0 rather than max(1.5 FWHM, 0.4 half-stamp) halves the
#: subsets' spread of the correction (e.g. Kolmogorov FWHM 6: 0.12 % -> 0.06 %) and separates
#: the forms' chi-squared by 11-1600 instead of 0.4-800 (the right form lost 5 times in 54);
#: on exact profiles (FWHM 3-7 px) within 0.02 % of the exact value either way.
_WING_R_IN_FWHM = 1.0


@dataclass(frozen=True)
class SeeingEstimate:
    """First estimate of the PSF FWHM.

    Attributes
    ----------
    fwhm_px : float
        FWHM in pixels (pixel response removed).
    n_stars : int
        Stars stacked (0: too few stars, ``fwhm_px`` is the default).
    """

    fwhm_px: float
    n_stars: int


def estimate_seeing(detections: DetectionResult, image_minus_bkg: np.ndarray, *,
                    max_peak: float | None, default_fwhm: float = 4.0, max_stars: int = 60,
                    half_size: int = 15) -> SeeingEstimate:
    """PSF FWHM (pixels) from the bright point-like detections of a first pass.

    Parameters
    ----------
    detections : DetectionResult
        First-pass detections on ``image_minus_bkg``.
    image_minus_bkg : ndarray, shape (ny, nx)
        Background-subtracted image (e-).
    max_peak : float or None
        Detections whose (background-subtracted) peak exceeds this are skipped (saturation).
    default_fwhm : float
        Returned (with ``n_stars = 0``) when fewer than 5 stars are usable.
    max_stars : int
        The brightest this many candidates are stacked.
    half_size : int
        Half-size of the cut-outs (pixels); the stack is ``2 half_size + 1`` wide.

    Returns
    -------
    SeeingEstimate
    """
    idx = select_psf_candidates(detections, max_peak=max_peak)
    cat = detections.catalog
    ny, nx = image_minus_bkg.shape
    if idx.size:
        xs = np.round(np.asarray(cat["xwin"])[idx]).astype(int)
        ys = np.round(np.asarray(cat["ywin"])[idx]).astype(int)
        inside = (xs >= half_size) & (xs < nx - half_size) & (ys >= half_size) & (ys < ny - half_size)
        idx, xs, ys = idx[inside], xs[inside], ys[inside]
        order = np.argsort(-np.asarray(cat["flux_iso"])[idx])[:max_stars]
        idx, xs, ys = idx[order], xs[order], ys[order]
    if idx.size < 5:
        log.warning("seeing: only %d stars for the first FWHM estimate; using %.1f px",
                    idx.size, default_fwhm)
        return SeeingEstimate(float(default_fwhm), 0)
    off = np.arange(-half_size, half_size + 1)
    stamps = image_minus_bkg[ys[:, None, None] + off[None, :, None],
                             xs[:, None, None] + off[None, None, :]].astype(np.float64)
    flux = stamps.sum(axis=(1, 2))
    good = np.isfinite(flux) & (flux > 0)
    if good.sum() < 5:
        return SeeingEstimate(float(default_fwhm), 0)
    stack = np.median(stamps[good] / flux[good, None, None], axis=0)
    fwhm = float(fit_moffat(stack).fwhm)
    if not (np.isfinite(fwhm) and 1.0 < fwhm < 2 * half_size):
        log.warning("seeing: Moffat fit of the star stack failed (FWHM %s); using %.1f px",
                    fwhm, default_fwhm)
        return SeeingEstimate(float(default_fwhm), 0)
    return SeeingEstimate(fwhm, int(good.sum()))


def detect_config_for_seeing(base: DetectConfig, fwhm_px: float, *, snr: float = 5.0,
                             minarea: int = 3) -> DetectConfig:
    """The detection settings for a seeing: one rule at every seeing.

    The image is filtered with a Gaussian of the seeing FWHM (the PSF-matched filter, up to
    the profile) and a pixel is significant where the filtered image exceeds ``snr`` times
    *its own* noise, ``sigma sqrt(sum(kernel**2))`` for a kernel normalised to sum 1 (exact
    where the noise is constant over the kernel, which the background noise is to < 1 %);
    ``minarea`` connected pixels must pass, and cleaning is off (it runs on the filtered image
    and removes real sources near others of similar brightness). The threshold is expressed
    in the ``"pixel"`` convention of :mod:`desgw.se.detect` (``snr * sqrt(sum(kernel**2))``
    unfiltered-pixel sigmas), so sep convolves once instead of twice (the image and the
    variance map): 0.65 s instead of 1.5 s on a full CCD, for the same detections.

    A point source's S/N in the matched-filtered image is its optimal (PSF-fit) S/N, so 50 %
    of the point sources at the ``snr``-sigma PSF-fit limit are detected at any seeing.
    Measured on galsim Moffat stars (tests/se/test_detect_depth.py), 50 % completeness minus
    the 5-sigma limit: -0.09, -0.04, -0.05 and -0.10 mag at 0.7, 1.0, 1.4 and 2.0" (the
    Gaussian's mismatch with the Moffat and sub-pixel centring cost a little S/N); the
    previous rule (1.5 pixel sigmas up to 4 px FWHM, the filtered threshold above) was
    -0.42 mag at 0.7" and -0.65 at 1.0": catalogs were shallowest in the best seeing.

    Parameters
    ----------
    base : DetectConfig
        Deblending settings and mask bits to keep.
    fwhm_px : float
        Seeing FWHM (pixels), clipped to 1.5-15.
    snr : float
        Threshold: signal-to-noise of the filtered image.
    minarea : int
        Connected pixels above it.

    Returns
    -------
    DetectConfig
    """
    fw = float(np.clip(fwhm_px, 1.5, 15.0))
    kernel = gaussian_kernel(fw, base.filter_size)
    factor = float(np.sqrt(np.sum(kernel.astype(np.float64) ** 2)))
    return replace(base, filter_fwhm=fw, thresh_type="pixel", thresh_sigma=snr * factor,
                   minarea=minarea, clean=False)


def psf_config_for_seeing(base: PSFConfig, fwhm_px: float, *, stamp_fwhm: float = 6.0
                          ) -> PSFConfig:
    """``base`` with the stamp at least ``stamp_fwhm`` FWHM wide (odd), as the PSF module advises."""
    need = int(math.ceil(stamp_fwhm * float(fwhm_px)))
    need += 1 - need % 2
    return replace(base, stamp=max(base.stamp, need))


def psf_aperture_correction(psf: PSFModel, *, grid: tuple[int, int] = (4, 7),
                            margin: float = 100.0) -> float:
    """Total flux over the flux inside the PSF stamp, from the wing of the model.

    A PSF model is normalised over its stamp (:mod:`desgw.se.psf`), so PSF fluxes measure the
    flux inside the stamp, and the correction is ``1 + (light outside the stamp)``: a property
    of the PSF's *wing* alone. The model is averaged over a ``grid`` of CCD positions (the mean
    stamp sums to 1), its surface brightness in the annulus from 1 FWHM to ``h`` (the stamp's
    half-size) is fitted with a Moffat-form wing ``A (1 + (r / s)**2)**-b`` whose scale ``s``
    is tied to the FWHM, with a Kolmogorov wing and with a von Karman wing
    (:func:`wing_outside_flux`), and their light outside the stamp is averaged with the
    Akaike weights of the three fits. The correction is therefore >= 1 by construction.

    An earlier version fitted an elliptical Moffat to the whole stamp and returned its flux:
    exact for Moffat PSFs, but on profiles whose core is not Moffat-like the core misfit set
    the total, e.g. 0.965-0.977 for Kolmogorov PSFs of FWHM 3-7 px whose true value is
    1.007-1.013, and 0.963 on a Community Pipeline PSFEx model. Measured (galsim, stamp of 25
    pix or 6 FWHM): Moffat beta 2.5-5, FWHM 3-7 px, e <= 0.06, within 0.02 % of the exact value;
    Kolmogorov FWHM 3-7 px within 0.01 % (0.3-0.6 % low with the Moffat-form wing alone: its
    wing flattens towards ``r**(-11/3)`` beyond the stamp); von Karman (r0 0.15 m at 800 nm,
    outer scale 10-100 m, FWHM 5 px) +0.011 to +0.017 % (+0.06 to +0.36 % before the von
    Karman form, the outer scale steepening the far wing below the Kolmogorov form); on PSF models
    fitted to 25-40 noisy galsim stars, over 8 jackknife subsets of each, mean -0.09 to +0.08 %
    and spread 0.01-0.12 % (Moffat beta 2.5-5 and Kolmogorov, FWHM 3-6 px);
    tests/se/test_psf_apcor.py.

    Parameters
    ----------
    psf : PSFModel
    grid : (int, int)
        Number of positions along x and y.
    margin : float
        Distance (pixels) of the outer grid positions from the CCD edges.

    Returns
    -------
    float
        Multiplicative correction (>= 1); 1.0 (with a warning) when the wing cannot be fitted.
    """
    ny, nx = psf.image_shape
    gx, gy = np.meshgrid(np.linspace(margin, nx - 1 - margin, grid[0]),
                         np.linspace(margin, ny - 1 - margin, grid[1]))
    mean = np.mean([psf.centred(x, y) for x, y in zip(gx.ravel(), gy.ravel())], axis=0)
    mean /= mean.sum()
    try:
        corr = 1.0 + wing_outside_flux(mean)
    except ValueError as exc:
        log.warning("PSF aperture correction: %s; using 1", exc)
        return 1.0
    if not (np.isfinite(corr) and corr < 1.2):
        log.warning("PSF aperture correction: wing fit gave %s; using 1", corr)
        return 1.0
    return float(corr)


@functools.lru_cache(maxsize=1)
def _kolmogorov_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The circular Kolmogorov profile whose optical transfer function is ``exp(-k**(5/3))``
    (unit flux; FWHM 2.9207): log radius, log surface brightness and log of the flux outside
    each radius, by Hankel transforms (``I(r) = (1/2 pi) int k J0(k r) T(k) dk``, outside
    ``1 - R int J1(k R) T(k) dk``), tabulated to r = 150 and continued by the exact
    asymptotic power laws ``r**(-11/3)`` and ``R**(-5/3)``."""
    def otf(k: float) -> float:
        return math.exp(-k ** (5.0 / 3.0))

    r = np.geomspace(0.05, 150.0, 160)
    prof = np.array([quad(lambda k, x=x: k * j0(k * x) * otf(k), 0, 14, limit=4000)[0]
                     for x in r]) / (2.0 * np.pi)
    out = np.array([1.0 - x * quad(lambda k, x=x: j1(k * x) * otf(k), 0, 14, limit=4000)[0]
                    for x in r])
    rt = np.geomspace(150.0, 1e6, 40)[1:]
    r_all = np.concatenate([r, rt])
    prof_all = np.concatenate([prof, prof[-1] * (rt / r[-1]) ** (-11.0 / 3.0)])
    out_all = np.concatenate([out, out[-1] * (rt / r[-1]) ** (-5.0 / 3.0)])
    return np.log(r_all), np.log(prof_all), np.log(out_all)


#: Fewest pixels of a wing ring fitted by :func:`wing_outside_flux` (fewer give no error estimate).
_WING_MIN_RING_PIXELS = 8


#: Outer scales of the von Karman wing table: ``kappa`` = 2 pi / L0 in the units of
#: :func:`_kolmogorov_table` (FWHM 2.92 at L0 = infinity); DES-like seeing (r0 0.05-0.3 m at
#: 800 nm) and outer scales of 10-100 m give 0.002-0.1 (kappa ~ 3 r0 / L0).
_VK_KAPPA = np.geomspace(1e-3, 0.1, 9)


#: Weight of the turbulence forms below which the von Karman wing is not fitted.
_VK_MIN_TURBULENCE_WEIGHT = 1e-4


def _von_karman_structure(z: np.ndarray) -> np.ndarray:
    """The von Karman phase structure function over its Kolmogorov limit at the same
    ``r0``, as a function of ``z = 2 pi rho / L0``: ``(1 - c z**(5/6) K_(5/6)(z)) / (C
    z**(5/3))`` with ``c = 2**(1/6) / Gamma(5/6)`` (so that it is 0 at z = 0) and ``C`` the
    coefficient of its leading term (-> 1 as z -> 0, ~ 1 / (C z**(5/3)) once rho >> L0: the
    phase variance saturates)."""
    nu = 5.0 / 6.0
    c = 1.0 / (gamma(nu) * 2.0 ** (nu - 1.0))
    lead = -gamma(-nu) / (gamma(nu) * 2.0 ** (2.0 * nu))
    z = np.asarray(z, np.float64)
    safe = np.where(z > 0, z, 1.0)
    return np.where(z > 0, (1.0 - c * safe ** nu * kv(nu, safe)) / (lead * safe ** (5.0 / 3.0)),
                    1.0)


@functools.lru_cache(maxsize=1)
def _von_karman_table() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Circular von Karman profiles of unit flux, OTF ``exp(-k**(5/3) g(kappa k))`` (``g``:
    :func:`_von_karman_structure`; the Kolmogorov OTF of :func:`_kolmogorov_table` at kappa
    = 0), for the outer scales :data:`_VK_KAPPA`: log radius (0.05-60), log kappa, and per
    kappa the log surface brightness and log flux outside each radius, by the Hankel
    transforms of :func:`_kolmogorov_table` on 2,500 Gauss-Legendre nodes in k <= 14 (the
    OTF is < 1e-9 there for kappa <= 0.1; ~0.3 CPU-s, once)."""
    x, w = roots_legendre(2500)
    kmax = 14.0
    k = (x + 1.0) * kmax / 2.0
    wk = w * kmax / 2.0
    r = np.geomspace(0.05, 60.0, 160)
    arg = np.outer(k, r)
    b0, b1 = j0(arg), j1(arg)
    prof = np.empty((_VK_KAPPA.size, r.size))
    out = np.empty_like(prof)
    for i, kap in enumerate(_VK_KAPPA):
        t = np.exp(-k ** (5.0 / 3.0) * _von_karman_structure(kap * k))
        prof[i] = (wk * k * t) @ b0 / (2.0 * np.pi)
        out[i] = 1.0 - r * ((wk * t) @ b1)
    return np.log(r), np.log(_VK_KAPPA), np.log(np.maximum(prof, 1e-300)), np.log(
        np.maximum(out, 1e-300))


def _vk_interp(table: np.ndarray, lkap: np.ndarray, lk: float, lr: np.ndarray,
               x: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of a :func:`_von_karman_table` plane at log kappa ``lk``
    (clipped to the table) and log radii ``x``."""
    f = float(np.clip(np.interp(lk, lkap, np.arange(lkap.size)), 0, lkap.size - 1))
    i = min(int(f), lkap.size - 2)
    t = f - i
    return (1.0 - t) * np.interp(x, lr, table[i]) + t * np.interp(x, lr, table[i + 1])


class _WingFits(NamedTuple):
    """The two wing fits of :func:`_wing_fits`: light outside the stamp (fraction of the stamp
    sum) and chi-squared over the rings of the Moffat-form and the Kolmogorov wing."""

    out_moffat: float
    chi2_moffat: float
    out_kolmogorov: float
    chi2_kolmogorov: float
    n_rings: int
    out_von_karman: float = float("nan")
    chi2_von_karman: float = float("inf")


def _wing_fits(stamp: np.ndarray, fwhm: float | None) -> _WingFits | None:
    """Both wing forms of :func:`wing_outside_flux` fitted to ``stamp``'s outer rings (None
    when fewer than 3 rings hold positive light)."""
    st = np.asarray(stamp, dtype=np.float64)
    if st.ndim != 2 or st.shape[0] != st.shape[1] or st.shape[0] % 2 == 0:
        raise ValueError(f"PSF stamp must be square with an odd side, got {st.shape}")
    total = st.sum()
    if not total > 0:
        raise ValueError("PSF stamp has no positive flux")
    st = st / total
    n = st.shape[0]
    h = n // 2
    if fwhm is None:
        fwhm = float(fit_moffat(st).fwhm)
    if not (np.isfinite(fwhm) and fwhm > 0):
        raise ValueError(f"PSF FWHM {fwhm} unusable")
    yy, xx = np.mgrid[:n, :n] - h
    r = np.hypot(xx, yy).ravel()
    r1 = _WING_R_IN_FWHM * fwhm
    ring = np.floor(r - r1).astype(int)
    sel = (r >= r1) & (r <= h)
    if np.unique(ring[sel]).size < 3:
        raise ValueError(f"stamp of {n} pix too small for a wing annulus beyond {r1:.1f} pix")
    nb = np.bincount(ring[sel])
    # a ring of a few pixels (the last one, when h - r1 is just above an integer, holds only
    # the 4 pixels at r = h) has no scatter to give its error: floored at 1e-4 it outweighed
    # every other ring in the chi-squared of the Akaike weights and chose the wing form
    # (noiseless Moffat beta 3.5 of FWHM 2.7 px in a 25-px stamp: +0.29 %, 0.00 % without it)
    keep = nb >= _WING_MIN_RING_PIXELS
    rb = np.bincount(ring[sel], weights=r[sel])[keep] / nb[keep]
    ib = np.bincount(ring[sel], weights=st.ravel()[sel])[keep] / nb[keep]
    i2 = np.bincount(ring[sel], weights=st.ravel()[sel] ** 2)[keep] / nb[keep]
    nb = nb[keep]
    ok = ib > 0
    if ok.sum() < 3:
        return None
    rb, ib, nb, i2 = rb[ok], ib[ok], nb[ok], i2[ok]
    sw = np.sqrt(nb)
    # error of each ring's log mean from the scatter of its pixels (noise, and ellipticity)
    sig_log = np.sqrt(np.maximum(i2 - ib ** 2, 0.0) / np.maximum(nb - 1, 1)) / ib
    sig_log = np.maximum(sig_log, 1e-4)
    rc = h + 0.5  # outside the circle of radius h + 0.5, less the box corners beyond it
    sub = 4
    g = (np.arange(n * sub) + 0.5) / sub - 0.5 - h
    gr = np.hypot(g[:, None], g[None, :])
    gr = gr[gr > rc]

    def scale(b: float) -> float:
        return fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / b) - 1.0))

    def resid_m(p: np.ndarray) -> np.ndarray:
        la, b = p
        return (la - b * np.log1p((rb / scale(b)) ** 2) - np.log(ib)) * sw

    p0 = np.array([np.log(ib[0]) + 3.0 * np.log1p((rb[0] / fwhm) ** 2), 2.5])
    sol_m = least_squares(resid_m, p0, bounds=([-np.inf, 1.05], [np.inf, 10.0]))
    la, b = sol_m.x
    a, s = np.exp(la), scale(b)
    out_m = np.pi * a * s ** 2 * (1.0 + (rc / s) ** 2) ** (1.0 - b) / (b - 1.0)
    out_m -= (a * (1.0 + (gr / s) ** 2) ** -b).sum() / sub ** 2

    lr, lp, lo = _kolmogorov_table()

    def resid_k(p: np.ndarray) -> np.ndarray:
        la, ls = p
        return (la + np.interp(np.log(rb) - ls, lr, lp) - np.log(ib)) * sw

    ls0 = math.log(fwhm / _KOLMOGOROV_FWHM)
    p0 = np.array([np.log(ib[0]) - np.interp(np.log(rb[0]) - ls0, lr, lp), ls0])
    sol_k = least_squares(resid_k, p0)
    la, ls = sol_k.x
    out_k = math.exp(la + 2.0 * ls) * math.exp(np.interp(math.log(rc) - ls, lr, lo))
    out_k -= math.exp(la) * np.exp(np.interp(np.log(gr) - ls, lr, lp)).sum() / sub ** 2
    chi_m = float(np.sum((sol_m.fun / sw / sig_log) ** 2))
    chi_k = float(np.sum((sol_k.fun / sw / sig_log) ** 2))
    if expit(0.5 * (chi_m - chi_k)) < _VK_MIN_TURBULENCE_WEIGHT:
        # a Moffat-like wing: the von Karman form could move the result by less than 1e-4
        # of the turbulence forms' difference (:func:`_akaike_weights`); not fitted (~5-10 ms)
        return _WingFits(float(out_m), chi_m, float(out_k), chi_k, int(rb.size))

    vr, vk, vp, vo = _von_karman_table()

    # log kappa = mid + half tanh(t): inside the table, and unbounded for the
    # Levenberg-Marquardt solver (2x faster than the bounded one here)
    mid, half = 0.5 * (vk[0] + vk[-1]), 0.5 * (vk[-1] - vk[0])

    def resid_v(p: np.ndarray) -> np.ndarray:
        la, ls, t = p
        lk = mid + half * math.tanh(t)
        return (la + _vk_interp(vp, vk, lk, vr, np.log(rb) - ls) - np.log(ib)) * sw

    # from the Kolmogorov fit, at the middle outer scale
    sol_v = least_squares(resid_v, np.array([sol_k.x[0], sol_k.x[1], 0.0]), method="lm")
    la, ls, t = sol_v.x
    lk = mid + half * math.tanh(t)
    out_v = math.exp(la + 2.0 * ls) * math.exp(float(_vk_interp(
        vo, vk, lk, vr, np.array([math.log(rc) - ls]))[0]))
    out_v -= math.exp(la) * np.exp(_vk_interp(vp, vk, lk, vr, np.log(gr) - ls)).sum() / sub ** 2
    chi_v = float(np.sum((sol_v.fun / sw / sig_log) ** 2))
    return _WingFits(float(out_m), chi_m, float(out_k), chi_k, int(rb.size), float(out_v),
                     chi_v)


def wing_outside_flux(stamp: np.ndarray, *, fwhm: float | None = None) -> float:
    """Light outside a square PSF stamp extrapolated from its wing (fraction of the stamp sum).

    Three wing forms (below) are fitted to the means of 1-pix annuli between
    ``_WING_R_IN_FWHM`` (1) FWHM and ``h = n // 2`` (in log, weighted by the square root of
    the pixels in each; rings of fewer than 8 pixels left out), each is integrated over the
    plane outside the stamp, and they are averaged with Akaike weights
    (:func:`_akaike_weights`; the chi-squared with the error of each ring's mean from the
    scatter of its pixels): the Moffat form against the turbulence forms ``w_T = 1 / (1 +
    exp(-(chi2_M - chi2_K) / 2))`` (both have two free parameters), and within the turbulence
    forms Kolmogorov against von Karman (which nests it, one more parameter) by the
    small-sample AIC. The estimate thus moves smoothly from one form to the other as the
    evidence changes instead of jumping between them. It replaces a hard switch to the
    Kolmogorov wing when its chi-squared was lower by more than 4 over the rings beyond
    ``max(1.5 FWHM, 0.4 h)``: on the simulated sparse Kolmogorov CCDs (13-32 PSF stars)
    dropping 1/8 of the PSF stars flipped it (1.014 -> 1.006); measured with
    bench/bench_apcor_jackknife.py, the jackknife standard error of the correction there went
    from 0.25-0.87 % to 0.13-0.32 %, the full-sample values moving by -0.06 to +0.04 %.

    - a Moffat wing ``A (1 + (r / s)**2)**-b`` with ``s`` tied to the FWHM as in a Moffat,
      ``s = FWHM / (2 sqrt(2**(1/b) - 1))``: free amplitude and slope, so that the few outer
      rings of a fitted model, whose noise is largest, cannot bend the extrapolation (a free
      ``s`` put it 0.5 % high on a 25-star model);
    - a Kolmogorov wing ``A K(r / s)`` (the profile of atmospheric turbulence, whose wing falls
      as ``r**(-11/3)``; :func:`_kolmogorov_table`): free amplitude and scale. Between 2 and 3
      FWHM a Kolmogorov profile falls faster than its asymptote, so a Moffat wing fitted there
      extrapolates half its light outside a 6-FWHM stamp (0.3-0.6 % of the total missing);
    - a von Karman wing ``A V(r / s; kappa)`` (:func:`_von_karman_table`: turbulence with a
      finite outer scale ``L0``, ``kappa = 2 pi / L0`` in the table's units): free amplitude,
      scale and outer scale. The outer scale saturates the phase structure function at
      separations beyond ``L0``, which takes light from the far wing: on galsim von Karman
      PSFs (outer scale 10-100 m) the Kolmogorov wing put 0.06-0.36 % too much light outside
      a 31-px stamp, this form 0.011-0.017 %.

    Parameters
    ----------
    stamp : numpy.ndarray
        (n, n) PSF image (n odd), centred on the central pixel, pixel-integrated.
    fwhm : float or None
        FWHM of the profile (pixels, pixel response removed); default from a pixel-integrated
        elliptical Moffat fit (:func:`desgw.se.psf_shape.fit_moffat`).

    Returns
    -------
    float
        ``(flux outside the stamp) / stamp.sum()``, the weighted mean of the three wings'; 0
        when the annulus holds no positive light.

    Raises
    ------
    ValueError
        If the stamp is not square and odd, or too small for an annulus.
    """
    fits = _wing_fits(stamp, fwhm)
    if fits is None:
        return 0.0
    w = _akaike_weights(fits)
    out = (w[0] * fits.out_moffat + w[1] * fits.out_kolmogorov
           + (w[2] * fits.out_von_karman if w[2] > 0 else 0.0))
    log.debug("PSF wing: %s, Akaike weights %s", fits, w)
    return float(max(out, 0.0))


def _akaike_weights(fits: _WingFits) -> np.ndarray:
    """Weights of the Moffat-form, Kolmogorov and von Karman wings (:func:`wing_outside_flux`).

    The von Karman form is the Kolmogorov form with one more parameter (the outer scale;
    kappa -> 0 is Kolmogorov), so the weights are nested: the Moffat form against the
    turbulence forms by the Akaike weights of the two-parameter fits, ``w_T = 1 / (1 +
    exp(-(chi2_M - chi2_K) / 2))``; within the turbulence forms, Kolmogorov against von
    Karman by their small-sample Akaike weights ``exp(-AICc / 2)``, ``AICc = chi2 + 2 k + 2 k
    (k + 1) / (n - k - 1)`` for ``k`` = 2, 3 parameters and ``n`` rings. A flat three-way
    average let the flexible von Karman form take weight from the Moffat form on noisy
    fitted models of Moffat PSFs (``tests/se/test_psf_apcor.py``: the jackknife mean of a
    Moffat beta 2.5 field moved from +0.06 % to +0.14 %)."""
    w_t = float(expit(0.5 * (fits.chi2_moffat - fits.chi2_kolmogorov)))
    n = float(fits.n_rings)
    w_v = 0.0
    if np.isfinite(fits.out_von_karman) and n > 4:
        a_k = fits.chi2_kolmogorov + 4.0 + 12.0 / (n - 3.0)
        a_v = fits.chi2_von_karman + 6.0 + 24.0 / (n - 4.0)
        w_v = float(expit(0.5 * (a_k - a_v)))
    return np.array([1.0 - w_t, w_t * (1.0 - w_v), w_t * w_v])


def mean_sky_background(image: np.ndarray, weight: np.ndarray, mask: np.ndarray,
                        background: Background, detections: DetectionResult, psf: PSFModel, *,
                        config: MeasureConfig = MeasureConfig(),
                        extended_spread: float = 0.005) -> Background:
    """The background as the mean of the image less the PSF models of all detections.

    Every detection gets a PSF flux (neighbours' models subtracted, as in
    :func:`desgw.se.measure.measure_sources`) on ``image - background.level``; their models
    are subtracted from the image and :func:`desgw.se.background.residual_background` takes
    the clipped mean of the rest, leaving out the segments of extended detections
    (``SPREAD_MODEL > extended_spread + 3 SPREADERR_MODEL``), whose light a PSF model misses,
    and of detections within 1 FWHM of another (blends whose PSF fluxes each hold both).
    The wings of detected stars then leave the sky, whose clipped mode they lift in crowded
    fields, while the PSF fit of each star subtracts its neighbours' models.

    Parameters
    ----------
    image : numpy.ndarray
        (ny, nx) image, e-, not background-subtracted.
    weight, mask : numpy.ndarray
        Inverse variance (e-**-2) and mask bits.
    background : Background
        The mode background (:func:`desgw.se.background.estimate_background`).
    detections : DetectionResult
        Detections on the background-subtracted image.
    psf : PSFModel
    config : MeasureConfig
        Settings of the PSF flux fit.
    extended_spread : float
        SPREAD_MODEL above which (beyond 3 sigma) a detection counts as extended.

    Returns
    -------
    Background
    """
    cat = detections.catalog
    x = np.asarray(cat["xwin"], dtype=np.float64)
    y = np.asarray(cat["ywin"], dtype=np.float64)
    flux, _err, spread, spreaderr = psf_fluxes(image - background.level, weight, mask, x, y, psf,
                                               config=config)
    # blends within 1 FWHM each hold their companion's light: left out of the model and
    # of the mean, as extended detections are
    ext = np.isfinite(spread) & (spread > extended_spread + 3.0 * np.nan_to_num(spreaderr))
    ext |= close_companions(x, y, psf.fwhm_at(0.5 * (image.shape[1] - 1),
                                              0.5 * (image.shape[0] - 1)))
    model = psf_model_image(image.shape, x, y, np.where(ext, 0.0, flux), psf)
    segmap = detections.segmap
    lut = np.zeros(int(segmap.max()) + 1 if segmap.size else 1, dtype=bool)
    ids = np.asarray(cat["number"], dtype=np.int64)
    lut[ids[ext & (ids < lut.size)]] = True
    return residual_background(background, image - model, mask, exclude=lut[segmap])


def weight_rescale_factor(image_minus_bkg: np.ndarray, weight: np.ndarray, mask: np.ndarray,
                          objects: np.ndarray, *, stride: int = 3) -> float:
    """Ratio of the measured to the predicted background variance (SExtractor's MAP_WEIGHT scaling).

    SExtractor rescales a ``MAP_WEIGHT`` map so that it matches the background noise measured
    on the image; this does the same: the robust variance (1.4826 MAD, squared) of
    ``image_minus_bkg * sqrt(weight)`` over pixels that are usable, unflagged and outside the
    detected objects, sampled every ``stride`` pixels along both axes. Divide the weight by it.
    On the simulator the model variance (sky + read noise) is low by ~6 %: the light of the
    undetected faint galaxies adds to the Poisson noise of the median sky.

    Returns
    -------
    float
        The factor (1.0 when fewer than 1000 pixels are usable or the factor is outside 0.5-2).
    """
    sl = (slice(None, None, stride), slice(None, None, stride))
    w = weight[sl]
    ok = (w > 0) & (mask[sl] == 0) & (objects[sl] == 0)
    if ok.sum() < 1000:
        return 1.0
    z = image_minus_bkg[sl][ok] * np.sqrt(w[ok])
    med = np.median(z)
    s2 = float((1.4826 * np.median(np.abs(z - med))) ** 2)
    if not (np.isfinite(s2) and 0.5 < s2 < 2.0):
        log.warning("weight rescale factor %s out of range; not rescaling", s2)
        return 1.0
    return s2


def cosmics_objlim(fwhm_px: float) -> float:
    """L.A.Cosmic fine-structure limit ``objlim`` for a seeing (FWHM in pixels).

    The cosmic-ray module's measurements (:func:`desgw.se.cosmics.objlim_for_fwhm`): the largest
    ``S'/f`` of a star pixel that passes ``S' > 4.5`` is 2.9 at FWHM 2 px, 2.7 at 2.5 px, 0.9 at
    3 px and below 0.4 from 4 px on. Its own limit (``15 / FWHM`` clipped to 3-8) keeps a
    margin of 5x at 3 px, and at that margin L.A.Cosmic spares the wide, bilinearly deposited
    tracks of DECam's thick CCDs: on a simulated 0.88" CCD (3.35 px) 9 % of the cosmic rays
    were left unflagged or half flagged and became 50 spurious detections (6 % of the catalog).
    Here the limit is interpolated through (2 px, 5.5), (2.5 px, 4.5) and (3 px, 2.0) and is
    2.0 beyond: a margin of >= 1.7x on star cores at every FWHM; the spurious detections drop
    to 1 and no star core is flagged.
    """
    return float(np.interp(float(fwhm_px), [2.0, 2.5, 3.0], [5.5, 4.5, 2.0]))


def cosmic_ray_residuals(catalog: Table, *, cray_bit: int, nsigma: float = 3.0,
                         min_sharpness: float = 0.005) -> np.ndarray:
    """Catalog rows that are leftovers of partly flagged cosmic rays.

    L.A.Cosmic can flag part of a long or wide track and leave the rest, which is then detected.
    Such a leftover touches ``CRAY`` pixels (``IMAFLAGS_ISO``) and is sharper than the PSF:
    ``SPREAD_MODEL < -min_sharpness`` and ``SPREAD_MODEL + nsigma * SPREADERR_MODEL < 0``. Real
    sources hit by a cosmic ray keep ``SPREAD_MODEL >= 0`` within their errors (stars scatter
    about 0, galaxies are positive), since the flagged pixels do not enter the fit.

    Returns
    -------
    ndarray of bool, shape (len(catalog),)
    """
    if len(catalog) == 0:
        return np.zeros(0, dtype=bool)
    ima = np.asarray(catalog["IMAFLAGS_ISO"]).astype(np.int64)
    spread = np.asarray(catalog["SPREAD_MODEL"], dtype=np.float64)
    err = np.asarray(catalog["SPREADERR_MODEL"], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        sharp = (spread < -min_sharpness) & (spread + nsigma * err < 0)
    return ((ima & cray_bit) != 0) & sharp & np.isfinite(spread)


def segment_pixels(detections: DetectionResult, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (rows, columns) of the segments of detections ``ids`` in their segmentation map.

    Each segment is looked for inside its bounding box (the catalogue's ``xmin``..``ymax``),
    not over the whole map: ``np.isin(segmap, ids)`` reads every pixel (~0.03 CPU-s on a
    4096 x 2048 CCD for any number of ids), this reads the boxes. The same pixels.

    Parameters
    ----------
    detections : DetectionResult
        Detections whose ``catalog["number"]`` is ``1..n`` in row order (as
        :func:`desgw.se.detect.detect_sources` numbers them).
    ids : numpy.ndarray
        Detection numbers (1-based).

    Returns
    -------
    rows, cols : numpy.ndarray
        int64 pixel indices (0-based), each segment's in row-major order, segments in the
        order of ``ids``.
    """
    seg = detections.segmap
    cat = detections.catalog
    ids = np.asarray(ids, dtype=np.int64)
    rows: list[np.ndarray] = [np.zeros(0, np.int64)]
    cols: list[np.ndarray] = [np.zeros(0, np.int64)]
    x0s, x1s = np.asarray(cat["xmin"], np.int64), np.asarray(cat["xmax"], np.int64)
    y0s, y1s = np.asarray(cat["ymin"], np.int64), np.asarray(cat["ymax"], np.int64)
    for i in ids:
        k = int(i) - 1
        if not 0 <= k < len(cat):
            continue
        x0, x1, y0, y1 = int(x0s[k]), int(x1s[k]), int(y0s[k]), int(y1s[k])
        yy, xx = np.nonzero(seg[y0:y1 + 1, x0:x1 + 1] == i)
        rows.append(yy.astype(np.int64) + y0)
        cols.append(xx.astype(np.int64) + x0)
    return np.concatenate(rows), np.concatenate(cols)
