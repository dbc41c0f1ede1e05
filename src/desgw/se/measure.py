"""Source measurement with SExtractor's column names and units (the ``*_fullcat.fits`` content).

:func:`measure_sources` takes the image, its weight and mask, the background, the detections
and the PSF model and returns an astropy Table, one row per detection:

- Positions: ``X_IMAGE, Y_IMAGE`` (isophotal barycentre) and ``XWIN_IMAGE, YWIN_IMAGE``
  (windowed centroid), **1-based** as SExtractor (0-based value + 1); ``ERRAWIN_IMAGE,
  ERRBWIN_IMAGE, ERRTHETAWIN_IMAGE`` the windowed-centroid error ellipse;
  ``ALPHAWIN_J2000, DELTAWIN_J2000`` (deg) when a WCS is given.
- ``FLUX_APER`` etc.: circular apertures (diameters in ``MeasureConfig.aper_diameters``, the
  12 DES apertures by default) centred on the windowed centroid. ``MAG_APER[:, 7]`` is
  SExtractor's MAG_APER_8.
- ``FLUX_AUTO`` etc.: Kron aperture: ellipse of the isophotal shape scaled by
  ``max(kron_factor * KRON_RADIUS, kron_min_radius)`` (SExtractor's PHOT_AUTOPARAMS 2.5, 3.5),
  with the pixels of other detections excluded (SExtractor blanks or corrects them).
- ``FLUX_PSF`` etc.: the PSF model at the windowed centroid fitted by weighted linear least
  squares to the pixels within ``fit_radius_fwhm`` PSF FWHM, re-weighted with the source's
  photon noise until converged (``NITER_MODEL`` iterations, position fixed). The model is
  normalised over its stamp, so FLUX_PSF is the flux inside the PSF stamp, as with PSFEx
  models; no aperture correction is applied (as in DES single-epoch catalogues).
  The weights run from ~1/model over the star (photon-noise-dominated, bright) to uniform
  (sky-dominated, faint), so a model whose core/wing balance is off gives a bias that depends
  on magnitude; with the forward-fitted model the two regimes agree within 0.1e-3
  (tests/se/test_psf_flux_bias.py). Centring on the windowed centroid, which follows the
  noise, biases faint fluxes up by ~0.7-1.0 / (S/N)**2 (isolated galsim stars, paired against
  the true positions: +0.13-0.21e-3 at S/N 60-70, +0.9-1.4e-3 at S/N 26-32, +5-8e-3 at S/N
  11-13); this is not corrected.
- ``SPREAD_MODEL, SPREADERR_MODEL`` (Desai et al. 2012, ApJ 757, 83):
  ``(G^T W x) / (P^T W x) - (G^T W P) / (P^T W P)`` with ``P`` the local PSF, ``G`` the PSF
  convolved with a circular exponential disk of scale length FWHM/16, ``x`` the data and ``W``
  the inverse variance (background and source photons); the error propagates ``W^-1`` through
  the ratio. Stars scatter about 0, resolved galaxies are positive.
- ``CLASS_STAR``: SExtractor's neural-network stellarity is **not** reproduced. Ours is the
  product of (a) the probability that the true SPREAD_MODEL is below 0.003 given the
  measurement, ``0.5 erfc((SPREAD_MODEL - 0.003) / (sqrt(2) sigma))`` with ``sigma**2 =
  SPREADERR_MODEL**2 + 0.001**2``, and (b) a FWHM term, 1 for ``FWHM_IMAGE / FWHM_PSF <= 1.3``
  falling linearly to 0 at 2 (``FWHM_PSF``: the rendered PSF's FWHM by the same half-maximum
  area method). Bright stars get ~1, resolved galaxies ~0, faint sources intermediate values.
- Shapes: ``A_IMAGE, B_IMAGE, THETA_IMAGE`` (deg, counter-clockwise from +x, in [-90, 90]),
  ``ELLIPTICITY = 1 - B/A`` from the isophotal moments; ``FWHM_IMAGE = 2 sqrt(A_half / pi)``
  with ``A_half`` the segment's pixels above half its peak; ``FWHM_WORLD`` (deg) with the WCS
  pixel scale; ``FLUX_RADIUS`` the half-light radius within the Kron ellipse.
- ``FLAGS`` (SExtractor bits): 1 more than ``neighbour_fraction`` of the Kron aperture's
  pixels belong to other objects or are unusable; 2 deblended from a blend; 4 a pixel of the
  object or touching it is saturated (mask bit SAT); 8 the object touches the image edge or
  its Kron aperture is truncated by it; 16 the Kron aperture contains unusable pixels; 64 the
  deblending overflowed.
- ``IMAFLAGS_ISO``: OR of the mask bits of the segment's pixels and of the pixels touching
  it (unusable pixels are never part of a segment, so a source on a cosmic ray or bad column
  is caught by its border); ``NIMAFLAGS_ISO`` the number of such pixels.
- ``SNR_WIN``: windowed signal-to-noise ratio.
- Magnitudes: ``MAG = zeropoint - 2.5 log10(FLUX / exptime)`` (``exptime=None``: no
  normalisation), ``MAGERR = 2.5 / ln 10 * FLUXERR / FLUX``; both are 99 where FLUX <= 0,
  as SExtractor writes them.

Errors: the weight map is the inverse variance of background and read noise (e-**-2); the
source's photon noise ``flux / gain`` is added (``gain = 1`` for images in electrons).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import sep
from astropy import units as u
from astropy.table import Table
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from scipy.spatial import cKDTree
from scipy.special import erfc

from desgw.errors import DataTypeError
from desgw.se.background import Background
from desgw.se.detect import DetectionResult
from desgw.se.maskbits import SAT, UNUSABLE
from desgw.se.measure_kernels import (add_psf_sources, add_psf_stamps, circular_apertures,
                                      flux_radius_all, kron_neighbours_all, prepare_measurement,
                                      psf_fit_stamps, render_psf_stamps, segment_stats,
                                      window_errors_all)
from desgw.se.psf import PSFModel

__all__ = ["DES_APERTURE_DIAMETERS", "MeasureConfig", "measure_sources", "flux_to_mag", "close_companions",
           "spread_model_basis", "psf_model_image", "psf_fluxes"]

log = logging.getLogger(__name__)

#: Diameters (pixels) of the 12 DES SExtractor apertures: 0.5, 1, 1.5, 2, 3, 4, 5, 6, 7, 8, 12
#: and 18 arcsec at 0.27"/pix (DES DR1, Abbott et al. 2018, ApJS 239, 18: MAG_APER_1..12).
DES_APERTURE_DIAMETERS: tuple[float, ...] = (1.85, 3.70, 5.55, 7.41, 11.11, 14.81, 18.52, 22.22,
                                             25.93, 29.63, 44.44, 66.67)

#: Largest radius (pix) of the curve of growth behind FLUX_RADIUS (objects larger than this,
#: e.g. satellite streaks, get the half-light radius of their central 200 px).
_FLUX_RADIUS_MAX_PIX = 200.0

# sep aperture flags
_APER_TRUNC = 0x0010
_APER_HASMASKED = 0x0020


@dataclass(frozen=True)
class MeasureConfig:
    """Settings of :func:`measure_sources`.

    Attributes
    ----------
    zeropoint : float
        Magnitude zeropoint (SExtractor's MAG_ZEROPOINT; the original used 25).
    aper_diameters : tuple of float
        Aperture diameters (pixels).
    kron_factor, kron_min_radius : float
        SExtractor's PHOT_AUTOPARAMS (k = 2.5, minimum radius 3.5 in units of A, B).
    gain : float
        e- per image unit for the source photon noise (1 for images in electrons).
    fit_radius_fwhm : float
        Radius of the PSF / SPREAD_MODEL fit in units of the PSF FWHM (at least 3 pix,
        at most half the PSF stamp).
    psf_max_iter : int
        Maximum photon-noise re-weighting iterations of the PSF flux fit.
    neighbour_fraction : float
        FLAGS bit 1 threshold on the fraction of the Kron aperture in other objects.
    neighbour_iter : int
        Refits of the PSF flux (and SPREAD_MODEL) with the PSF models of all other detections,
        at their fluxes of the previous fit, subtracted (0: each source fitted alone, its
        neighbours' light included). Detections within 1 PSF FWHM of another take no part
        (:func:`close_companions`).
    mask_bits : int
        Mask bits of unusable pixels.
    """

    zeropoint: float = 25.0
    aper_diameters: tuple[float, ...] = DES_APERTURE_DIAMETERS
    kron_factor: float = 2.5
    kron_min_radius: float = 3.5
    gain: float = 1.0
    fit_radius_fwhm: float = 2.0
    psf_max_iter: int = 5
    neighbour_fraction: float = 0.1
    neighbour_iter: int = 2
    mask_bits: int = UNUSABLE

    def __post_init__(self) -> None:
        if not self.aper_diameters or min(self.aper_diameters) <= 0:
            raise ValueError("MeasureConfig.aper_diameters must be positive diameters")
        if self.gain <= 0:
            raise ValueError(f"MeasureConfig.gain must be > 0, got {self.gain}")
        if self.neighbour_iter < 0:
            raise ValueError(f"MeasureConfig.neighbour_iter must be >= 0, got {self.neighbour_iter}")


def flux_to_mag(flux: np.ndarray, fluxerr: np.ndarray, zeropoint: float,
                exptime: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """SExtractor magnitudes: ``zp - 2.5 log10(flux / exptime)``; 99 (and error 99) if flux <= 0.

    Parameters
    ----------
    flux, fluxerr : numpy.ndarray
        Flux and its error (e-, any shape).
    zeropoint : float
        Zeropoint (mag).
    exptime : float or None
        Exposure time (s) to normalise by; ``None`` for none.

    Returns
    -------
    mag, magerr : numpy.ndarray (float32)
    """
    flux = np.asarray(flux, dtype=np.float64)
    fluxerr = np.asarray(fluxerr, dtype=np.float64)
    good = np.isfinite(flux) & (flux > 0)
    norm = 1.0 if exptime is None else float(exptime)
    safe = np.where(good, flux, 1.0)
    mag = np.where(good, zeropoint - 2.5 * np.log10(safe / norm), 99.0)
    magerr = np.where(good & np.isfinite(fluxerr), 2.5 / np.log(10.0) * fluxerr / safe, 99.0)
    return mag.astype(np.float32), magerr.astype(np.float32)


def spread_model_basis(psf: PSFModel, fwhm: float) -> np.ndarray:
    """The PSF basis convolved with a circular exponential disk of scale length ``fwhm / 16``.

    Parameters
    ----------
    psf : PSFModel
        The PSF model.
    fwhm : float
        PSF FWHM (pixels).

    Returns
    -------
    numpy.ndarray
        (n_terms, stamp, stamp) float64, the basis of the galaxy model ``G`` of SPREAD_MODEL.
    """
    nt, n, _ = psf.coeffs.shape
    m = 2 * n
    scale = fwhm / 16.0
    k = np.fft.fftfreq(m)
    kr2 = k[:, None] ** 2 + k[None, :] ** 2
    # Fourier transform of a normalised 2-D exponential exp(-r / h) / (2 pi h**2).
    kern = (1.0 + (2.0 * np.pi * scale) ** 2 * kr2) ** -1.5
    pad = np.zeros((nt, m, m))
    pad[:, :n, :n] = psf.coeffs
    conv = np.fft.ifft2(np.fft.fft2(pad) * kern).real
    # The kernel is centred on pixel 0, so the result stays aligned with the basis; the
    # padding keeps the (sub-pixel) wrap-around out of the stamp.
    return conv[:, :n, :n]


def psf_model_image(shape: tuple[int, int], x: np.ndarray, y: np.ndarray, flux: np.ndarray,
                    psf: PSFModel) -> np.ndarray:
    """An image of point sources: ``flux * PSF`` at each position, each over the PSF stamp.

    Parameters
    ----------
    shape : (int, int)
        Image shape (ny, nx).
    x, y : numpy.ndarray
        0-based source positions (pix).
    flux : numpy.ndarray
        Source fluxes (e-); non-finite or negative fluxes are left out.
    psf : PSFModel
        PSF model (normalised over its stamp, so the image holds each flux inside the stamp).

    Returns
    -------
    numpy.ndarray
        (ny, nx) float32, e-.
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    f = np.asarray(flux, dtype=np.float64)
    use = np.isfinite(f) & (f > 0) & np.isfinite(x) & np.isfinite(y)
    out = np.zeros(shape, dtype=np.float32)
    if use.any():
        add_psf_sources(out, 0, 0, x[use], y[use], f[use], psf.terms(x[use], y[use]),
                        psf.coeffs, psf.lanczos_order)
    return out


def close_companions(x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """Boolean (n,): positions with another within ``radius`` (pix)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    out = np.zeros(len(x), dtype=bool)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() > 1:
        counts = cKDTree(np.column_stack([x[ok], y[ok]])).query_ball_point(
            np.column_stack([x[ok], y[ok]]), r=radius, return_length=True)
        out[ok] = np.asarray(counts) > 1
    return out


def _psf_photometry(data: np.ndarray, weight32: np.ndarray, bad: np.ndarray, xw: np.ndarray,
                    yw: np.ndarray, psf: PSFModel, config: MeasureConfig
                    ) -> tuple[np.ndarray, ...]:
    """PSF flux, its error, chi2, iterations, SPREAD_MODEL, its error and the PSF's FWHM per
    source, with ``config.neighbour_iter`` Jacobi steps in which every source is refitted with
    all other sources' models (at their previous fluxes) subtracted."""
    shape = data.shape
    n = len(xw)
    fwhm_c = psf.fwhm_at(0.5 * (shape[1] - 1), 0.5 * (shape[0] - 1))
    gco = spread_model_basis(psf, fwhm_c)
    terms = psf.terms(xw, yw)
    radius = np.clip(config.fit_radius_fwhm * fwhm_c, 3.0, psf.stamp_size // 2) * np.ones(n)
    own = np.zeros(n)
    fit_data = data
    # Detections closer than 1 FWHM to another (a blend whose windowed centroids ran together)
    # neither subtract nor are subtracted: with nearly the same model at nearly the same place
    # the Jacobi steps would swap their fluxes back and forth instead of converging.
    alone = ~close_companions(xw, yw, fwhm_c) if config.neighbour_iter else np.ones(n, bool)
    # every source's PSF rendered once, for all the fits and the neighbours' model images
    stamps, fwhm_stamps = render_psf_stamps(xw, yw, terms, psf.coeffs, psf.lanczos_order)
    for it in range(config.neighbour_iter + 1):
        last = it == config.neighbour_iter
        (fpsf, fpsfe, chi2, niter, spread, spreaderr, fwhm_psf,
         _npx) = psf_fit_stamps(fit_data, weight32, bad, xw, yw, stamps, fwhm_stamps, terms, gco,
                                psf.lanczos_order, radius, float(config.gain),
                                int(config.psf_max_iter), own, last)
        if last:
            break
        own = np.where(alone & np.isfinite(fpsf) & (fpsf > 0), fpsf, 0.0)
        model = np.zeros(shape, dtype=np.float32)
        add_psf_stamps(model, 0, 0, xw, yw, own, stamps)
        fit_data = data - model
    return fpsf, fpsfe, chi2, niter, spread, spreaderr, fwhm_psf


def psf_fluxes(image_minus_bkg: np.ndarray, weight: np.ndarray, mask: np.ndarray | None,
               x: np.ndarray, y: np.ndarray, psf: PSFModel, *,
               config: MeasureConfig = MeasureConfig()
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PSF fluxes and SPREAD_MODEL alone, as :func:`measure_sources` computes them.

    Parameters
    ----------
    image_minus_bkg : numpy.ndarray
        Background-subtracted image (ny, nx), e-.
    weight : numpy.ndarray
        Inverse variance of background + read noise (ny, nx), e-**-2; 0 = unusable.
    mask : numpy.ndarray or None
        Integer mask of :mod:`desgw.se.maskbits` bits (``config.mask_bits`` unusable).
    x, y : numpy.ndarray
        0-based source positions (pix), all the detections (their models are subtracted from
        each other's fits).
    psf : PSFModel
    config : MeasureConfig

    Returns
    -------
    flux, fluxerr, spread, spreaderr : numpy.ndarray
        float64 (n,): FLUX_PSF and FLUXERR_PSF (e-), SPREAD_MODEL and SPREADERR_MODEL.
    """
    img = np.asarray(image_minus_bkg, dtype=np.float32)
    shape = img.shape
    mask_arr = (np.zeros(shape, dtype=np.int32) if mask is None
                else np.ascontiguousarray(mask, dtype=np.int32))
    weight32 = np.asarray(weight, dtype=np.float32)
    if weight32.shape != shape or mask_arr.shape != shape:
        raise DataTypeError(None, None, f"image {shape}, weight {weight32.shape} and mask "
                            f"{mask_arr.shape} must have the same shape")
    data, _err, bad = prepare_measurement(img, np.zeros(shape, dtype=np.float32), weight32,
                                          mask_arr, np.int64(config.mask_bits), False)
    xw = np.ascontiguousarray(x, dtype=np.float64)
    yw = np.ascontiguousarray(y, dtype=np.float64)
    if xw.size == 0:
        z = np.zeros(0)
        return z, z, z, z
    fl, fle, _c2, _ni, sp, spe, _fw = _psf_photometry(data, weight32, bad, xw, yw, psf, config)
    return fl, fle, sp, spe


def _theta_deg(theta: np.ndarray) -> np.ndarray:
    t = np.degrees(theta)
    return np.where(t > 90, t - 180, np.where(t < -90, t + 180, t))


def measure_sources(image: np.ndarray, weight: np.ndarray, mask: np.ndarray | None,
                    background: Background | np.ndarray | float, detections: DetectionResult,
                    psf: PSFModel, wcs: WCS | None = None, *, exptime: float | None = None,
                    config: MeasureConfig = MeasureConfig()) -> Table:
    """Measure detected sources (SExtractor columns, see the module docstring).

    Parameters
    ----------
    image : numpy.ndarray
        Image (ny, nx), e-, *not* background-subtracted; not modified.
    weight : numpy.ndarray
        Inverse variance of background + read noise (ny, nx), e-**-2; 0 = unusable.
    mask : numpy.ndarray or None
        Integer mask (ny, nx) of :mod:`desgw.se.maskbits` bits.
    background : Background, numpy.ndarray or float
        Sky level to subtract (a :class:`Background`, a (ny, nx) map or a constant), e-.
    detections : DetectionResult
        Output of :func:`desgw.se.detect.detect_sources` on the same image.
    psf : PSFModel
        PSF model of the image.
    wcs : astropy.wcs.WCS or None
        Celestial WCS (0-based pixel convention of astropy); adds ALPHAWIN_J2000,
        DELTAWIN_J2000 and gives FWHM_WORLD its scale. Without it FWHM_WORLD is NaN.
    exptime : float or None
        Exposure time (s) to normalise magnitudes by.
    config : MeasureConfig
        Settings.

    Returns
    -------
    astropy.table.Table
        One row per detection, in the order of ``detections.catalog``.

    Raises
    ------
    desgw.errors.DataTypeError
        If array shapes disagree.
    """
    image = np.asarray(image)
    weight = np.asarray(weight)
    shape = image.shape
    if image.ndim != 2 or weight.shape != shape or detections.segmap.shape != shape:
        raise DataTypeError(None, None, f"image {shape}, weight {weight.shape} and segmentation "
                            f"map {detections.segmap.shape} must be 2-D of the same shape")
    if mask is None:
        mask_arr = np.zeros(shape, dtype=np.int32)
    else:
        mask_arr = np.ascontiguousarray(mask, dtype=np.int32)
        if mask_arr.shape != shape:
            raise DataTypeError(None, None, f"mask has shape {mask_arr.shape}, expected {shape}")
    level = background.level if isinstance(background, Background) else background
    level_map = np.broadcast_to(np.asarray(level, dtype=np.float32), shape)
    weight32 = np.asarray(weight, dtype=np.float32)
    data, err, bad = prepare_measurement(np.asarray(image, dtype=np.float32), level_map,
                                         weight32, mask_arr, np.int64(config.mask_bits), True)
    segmap = detections.segmap
    cat = detections.catalog
    n = len(cat)
    ids = np.asarray(cat["number"], dtype=np.int32)
    x = np.asarray(cat["x"], dtype=np.float64)
    y = np.asarray(cat["y"], dtype=np.float64)
    xw = np.asarray(cat["xwin"], dtype=np.float64)
    yw = np.asarray(cat["ywin"], dtype=np.float64)
    a = np.asarray(cat["a"], dtype=np.float64)
    b = np.asarray(cat["b"], dtype=np.float64)
    # sep returns float32 angles; float32(pi/2) exceeds pi/2 in float64 and sep's ellipse
    # functions then reject the aperture ("invalid aperture parameters")
    theta = np.clip(np.asarray(cat["theta"], dtype=np.float64), -np.pi / 2, np.pi / 2)
    sep_flag = np.asarray(cat["sep_flag"], dtype=np.int32)
    if n == 0:
        return _empty_table(config, wcs is not None)
    out = Table()
    out["NUMBER"] = ids
    a_safe = np.maximum(a, 1e-3)
    b_safe = np.clip(b, 1e-3, a_safe)

    # --- fixed apertures (centred on the windowed centroid)
    diam = np.asarray(config.aper_diameters, dtype=np.float64)
    order = np.argsort(diam)
    fa, fae, _ = circular_apertures(data, weight32, bad, xw, yw, 0.5 * diam[order],
                                    float(config.gain), 5)
    undo = np.argsort(order)
    fa, fae = fa[:, undo], fae[:, undo]
    # --- Kron
    kronrad, _kflag = sep.kron_radius(data, xw, yw, a_safe, b_safe, theta, 6.0, mask=bad,
                                     seg_id=ids, segmap=segmap)
    kronrad = np.where(np.isfinite(kronrad), kronrad, 0.0)
    kscale = np.maximum(config.kron_factor * kronrad, config.kron_min_radius)
    fauto, fautoe, fautof = sep.sum_ellipse(data, xw, yw, a_safe, b_safe, theta, kscale, err=err,
                                            mask=bad, gain=config.gain, subpix=1, seg_id=ids,
                                            segmap=segmap)
    # The curve of growth is capped at _FLUX_RADIUS_MAX_PIX: a satellite streak detected as one
    # object has a Kron ellipse thousands of pixels long (1.3 s for that one object otherwise).
    rmax = np.clip(kscale * a_safe, 1.0, _FLUX_RADIUS_MAX_PIX)
    frad = flux_radius_all(data, bad, xw, yw, rmax, np.where(fauto > 0, fauto, np.nan), 0.5)
    # --- PSF fit and SPREAD_MODEL
    (fpsf, fpsfe, chi2, niter, spread, spreaderr,
     fwhm_psf) = _psf_photometry(data, weight32, bad, xw, yw, psf, config)
    # --- windowed errors, segment statistics, neighbours
    sig = 2.0 / 2.35 * np.maximum(np.asarray(cat["flux_radius"], dtype=np.float64), 0.5)
    ex2, ey2, exy, snr_win = window_errors_all(data, weight32, bad, xw, yw, sig, float(config.gain))
    imaflags, nimaflags, fwhm_img = segment_stats(
        data, mask_arr, segmap, n, np.asarray(cat["xmin"], np.int64), np.asarray(cat["xmax"], np.int64),
        np.asarray(cat["ymin"], np.int64), np.asarray(cat["ymax"], np.int64))
    nfrac = kron_neighbours_all(segmap, bad, xw, yw, a_safe, b_safe, theta, kscale)

    # --- flags
    flags = np.zeros(n, dtype=np.int16)
    flags |= np.where(nfrac >= config.neighbour_fraction, 1, 0).astype(np.int16)
    flags |= np.where(sep_flag & 1, 2, 0).astype(np.int16)
    flags |= np.where(imaflags & SAT, 4, 0).astype(np.int16)
    flags |= np.where((sep_flag & 2) | (fautof & _APER_TRUNC), 8, 0).astype(np.int16)
    flags |= np.where(fautof & _APER_HASMASKED, 16, 0).astype(np.int16)
    flags |= np.where(sep_flag & 4, 64, 0).astype(np.int16)

    # --- error ellipse of the windowed centroid
    half_sum = 0.5 * (ex2 + ey2)
    half_diff = np.sqrt(np.maximum((0.5 * (ex2 - ey2)) ** 2 + exy ** 2, 0.0))
    errawin = np.sqrt(np.maximum(half_sum + half_diff, 0.0))
    errbwin = np.sqrt(np.maximum(half_sum - half_diff, 0.0))
    errthetawin = np.degrees(0.5 * np.arctan2(2.0 * exy, ex2 - ey2))

    # --- stellarity
    sigma_sm = np.sqrt(np.where(np.isfinite(spreaderr), spreaderr, 1.0) ** 2 + 0.001 ** 2)
    p_sm = 0.5 * erfc((np.where(np.isfinite(spread), spread, 1.0) - 0.003) / (np.sqrt(2) * sigma_sm))
    ratio = fwhm_img / fwhm_psf
    p_fwhm = np.clip((2.0 - np.where(np.isfinite(ratio), ratio, 2.0)) / 0.7, 0.0, 1.0)
    class_star = (p_sm * p_fwhm).astype(np.float32)

    zp = config.zeropoint
    out["XWIN_IMAGE"] = xw + 1.0
    out["YWIN_IMAGE"] = yw + 1.0
    out["ERRAWIN_IMAGE"] = errawin.astype(np.float32)
    out["ERRBWIN_IMAGE"] = errbwin.astype(np.float32)
    out["ERRTHETAWIN_IMAGE"] = errthetawin.astype(np.float32)
    out["X_IMAGE"] = x + 1.0
    out["Y_IMAGE"] = y + 1.0
    pix_scale_deg = np.nan
    if wcs is not None:
        ra, dec = wcs.all_pix2world(xw, yw, 0)
        out["ALPHAWIN_J2000"] = ra
        out["DELTAWIN_J2000"] = dec
        pix_scale_deg = float(np.sqrt(np.prod(proj_plane_pixel_scales(wcs.celestial))))
    out["FLUX_APER"] = fa.astype(np.float32)
    out["FLUXERR_APER"] = fae.astype(np.float32)
    out["MAG_APER"], out["MAGERR_APER"] = flux_to_mag(fa, fae, zp, exptime)
    out["FLUX_AUTO"] = fauto.astype(np.float32)
    out["FLUXERR_AUTO"] = fautoe.astype(np.float32)
    out["MAG_AUTO"], out["MAGERR_AUTO"] = flux_to_mag(fauto, fautoe, zp, exptime)
    out["KRON_RADIUS"] = kronrad.astype(np.float32)
    out["FLUX_RADIUS"] = frad.astype(np.float32)
    out["FLUX_PSF"] = fpsf.astype(np.float32)
    out["FLUXERR_PSF"] = fpsfe.astype(np.float32)
    out["MAG_PSF"], out["MAGERR_PSF"] = flux_to_mag(fpsf, fpsfe, zp, exptime)
    out["CHI2_PSF"] = chi2.astype(np.float32)
    out["NITER_MODEL"] = niter.astype(np.int16)
    out["SPREAD_MODEL"] = spread.astype(np.float32)
    out["SPREADERR_MODEL"] = spreaderr.astype(np.float32)
    out["CLASS_STAR"] = class_star
    out["FWHM_IMAGE"] = fwhm_img.astype(np.float32)
    out["FWHM_WORLD"] = (fwhm_img * pix_scale_deg).astype(np.float32)
    out["A_IMAGE"] = a.astype(np.float32)
    out["B_IMAGE"] = b.astype(np.float32)
    out["THETA_IMAGE"] = _theta_deg(theta).astype(np.float32)
    out["ELLIPTICITY"] = (1.0 - b / a_safe).astype(np.float32)
    out["ISOAREA_IMAGE"] = np.asarray(cat["npix"], dtype=np.int32)
    out["BACKGROUND"] = np.asarray(level, dtype=np.float32)[
        np.clip(np.round(yw).astype(int), 0, shape[0] - 1),
        np.clip(np.round(xw).astype(int), 0, shape[1] - 1)] if np.ndim(level) == 2 else np.full(
        n, float(level), dtype=np.float32)
    out["SNR_WIN"] = snr_win.astype(np.float32)
    out["FLAGS"] = flags
    out["IMAFLAGS_ISO"] = imaflags.astype(np.int32)
    out["NIMAFLAGS_ISO"] = nimaflags.astype(np.int32)
    _set_units(out)
    return out


_UNITS = {
    "XWIN_IMAGE": u.pix, "YWIN_IMAGE": u.pix, "ERRAWIN_IMAGE": u.pix, "ERRBWIN_IMAGE": u.pix,
    "ERRTHETAWIN_IMAGE": u.deg, "X_IMAGE": u.pix, "Y_IMAGE": u.pix, "ALPHAWIN_J2000": u.deg,
    "DELTAWIN_J2000": u.deg, "FLUX_APER": u.electron, "FLUXERR_APER": u.electron,
    "MAG_APER": u.mag, "MAGERR_APER": u.mag, "FLUX_AUTO": u.electron,
    "FLUXERR_AUTO": u.electron, "MAG_AUTO": u.mag, "MAGERR_AUTO": u.mag, "FLUX_RADIUS": u.pix,
    "FLUX_PSF": u.electron, "FLUXERR_PSF": u.electron, "MAG_PSF": u.mag, "MAGERR_PSF": u.mag,
    "FWHM_IMAGE": u.pix, "FWHM_WORLD": u.deg, "A_IMAGE": u.pix, "B_IMAGE": u.pix,
    "THETA_IMAGE": u.deg, "ISOAREA_IMAGE": u.pix ** 2, "BACKGROUND": u.electron,
}


def _set_units(t: Table) -> None:
    for name, unit in _UNITS.items():
        if name in t.colnames:
            t[name].unit = unit


def _empty_table(config: MeasureConfig, with_wcs: bool) -> Table:
    naper = len(config.aper_diameters)
    cols: list[tuple[str, type, tuple[int, ...]]] = [("NUMBER", np.int32, ())]
    for name in ("XWIN_IMAGE", "YWIN_IMAGE"):
        cols.append((name, np.float64, ()))
    for name in ("ERRAWIN_IMAGE", "ERRBWIN_IMAGE", "ERRTHETAWIN_IMAGE"):
        cols.append((name, np.float32, ()))
    cols += [("X_IMAGE", np.float64, ()), ("Y_IMAGE", np.float64, ())]
    if with_wcs:
        cols += [("ALPHAWIN_J2000", np.float64, ()), ("DELTAWIN_J2000", np.float64, ())]
    for name in ("FLUX_APER", "FLUXERR_APER", "MAG_APER", "MAGERR_APER"):
        cols.append((name, np.float32, (naper,)))
    for name in ("FLUX_AUTO", "FLUXERR_AUTO", "MAG_AUTO", "MAGERR_AUTO", "KRON_RADIUS",
                 "FLUX_RADIUS", "FLUX_PSF", "FLUXERR_PSF", "MAG_PSF", "MAGERR_PSF", "CHI2_PSF"):
        cols.append((name, np.float32, ()))
    cols.append(("NITER_MODEL", np.int16, ()))
    for name in ("SPREAD_MODEL", "SPREADERR_MODEL", "CLASS_STAR", "FWHM_IMAGE", "FWHM_WORLD",
                 "A_IMAGE", "B_IMAGE", "THETA_IMAGE", "ELLIPTICITY"):
        cols.append((name, np.float32, ()))
    cols += [("ISOAREA_IMAGE", np.int32, ()), ("BACKGROUND", np.float32, ()),
             ("SNR_WIN", np.float32, ()), ("FLAGS", np.int16, ()), ("IMAFLAGS_ISO", np.int32, ()),
             ("NIMAFLAGS_ISO", np.int32, ())]
    t = Table()
    for name, dtype, sub in cols:
        t[name] = np.zeros((0, *sub), dtype=dtype)
    _set_units(t)
    return t
