"""Source detection: SExtractor-style thresholding, deblending and windowed centroids.

Detection runs ``sep.extract`` on the background-subtracted image, convolved with a normalised
Gaussian whose FWHM matches the seeing. Two threshold conventions (``DetectConfig.thresh_type``):

- ``"pixel"`` (default, SExtractor's ``DETECT_THRESH`` with ``FILTER_NAME``): the threshold is
  ``thresh_sigma`` times the *unfiltered* per-pixel noise, applied to the filtered image. The
  depth then depends on the seeing: a point source of optimal S/N ``nu`` peaks at about
  ``nu / (sqrt(4 pi) sigma_psf)`` pixel sigmas in the filtered image, so 1.5 detects 98% of
  the stars of S/N 12.6 (1 mag above the 5-sigma limit) for FWHM <= ~4 pix (1") but loses
  depth in worse seeing (95% at 4.5 pix, most of them at 7.6 pix = 2").
- ``"filtered"``: sep's matched filter; the filtered image is divided by its own noise and
  the threshold is in those units (use ~5), which gives the same point-source depth at any
  seeing. Cleaning is off by default in this mode: sep's cleaning, run on the normalised
  filtered image, removes real sources near others of similar brightness.

At least ``minarea`` connected pixels must pass. Blends are split by multi-threshold deblending
(``deblend_nthresh`` levels, minimum
contrast ``deblend_cont``) and spurious detections in the wings of bright objects are removed by
cleaning. Masked pixels are never part of a detection.

Windowed centroids follow SExtractor's ``XWIN_IMAGE``: an iterative Gaussian-weighted centroid
whose window has ``sigma = 2 / 2.35 * FLUX_RADIUS`` (the half-light radius), computed by a
numba kernel (:func:`desgw.se.measure_kernels.winpos_all`; sep's ``winpos`` and
``flux_radius`` took ~10x longer on a full CCD).

Measured and rejected (session 12): a 2 x 2-binned first pass of
:func:`desgw.se.process.process_ccd` (sep on the binned image with the filter FWHM halved,
footprints upsampled, every catalogue column re-measured on the full-resolution pixels of
the footprints). Science unchanged on simulated 880001/28 (FWHM 4.83875 -> 4.83877 px,
zeropoint -0.015 mmag, sky +0.009 e-/px, 863 objects both), but no faster: one core, best of
5, load ~7, the first-pass ``detect_sources`` 0.074 -> 0.075 CPU-s sparse and 0.187 ->
0.191 dense (~4,300 objects). sep on the binned image saves 0.03-0.05 s (the ~0.1 s
measured earlier was under load 15-20), and the binning (numba, 0.013 s) and the
full-resolution footprint pass (0.009-0.021 s) take it back.

The filter of the ``"pixel"`` convention with a noise map (both passes of
:func:`desgw.se.process.process_ccd`) is applied here, not by sep
(``DetectConfig.prefilter``): the Gaussian is separable, so two 1-D passes
(:func:`desgw.se.detect_kernels.separable_filter`, numba) give what sep's 2-D filter gave
(zero outside the image, the same threshold per pixel), and sep gets the filtered image
with no kernel. sep measures positions, moments, shapes, deblending and the isophotal
footprints on the filtered values (its ``cdvalue``) in both cases, but ``flux``, ``peak`` and
its pixel on the pixels it was handed: those are measured again on the unfiltered image over
each detection's segment (:func:`desgw.se.detect_kernels.object_flux_peak`, the same values).
What differs: the filtered values to float32 rounding (positions ~1e-6 px), and sep's
redistribution of a deblended family's faint pixels, whose weights read the unfiltered peak
(now the filtered one). Measured (session 13, simulated 880001/28, one core, best of 5,
load ~7): ``sep.extract`` + filter 0.102 -> 0.062 CPU-s (first pass, 7 x 7 kernel) and
0.194 -> 0.123 (detection, 9 x 9); first pass: the same 592 detections and segmentation map,
``flux``/``peak``/``xpeak``/``ypeak`` bit for bit; detection: the same 864 detections, 3 of
8.4 M segmentation pixels moved between blended neighbours. In process_ccd
(bench/bench_detect_prefilter.json): first pass + detect -133 ms on the sparse CCD, -154 ms
on the dense one (4258 objects); the same objects, zeropoint (+-0.06 mmag dense, same
sparse), PSF FWHM (1e-13 px) and truth completeness on four scenes (sparse, dense,
Kolmogorov 3.7 px, Moffat beta 2.5 5.3 px); 0-5 objects per sparse CCD change FLUX_AUTO by
> 0.1 % (deblended families), 643 of 4258 on the dense one, where the truth figures of the
blended stars stay (FLUX_PSF median |error| 0.44 -> 0.43 %, FLUX_AUTO 3.00 -> 3.06 %,
positions 0.028 px). The ``"filtered"`` convention (sep's matched filter, which also filters
the variance) and a constant noise keep sep's own filter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import sep
from astropy import units as u
from astropy.table import Table

from desgw.errors import DataTypeError
from desgw.se.detect_kernels import (
    NOISE_RMS,
    NOISE_VARIANCE,
    NOISE_WEIGHT,
    object_flux_peak,
    prepare_detection,
    separable_filter,
)
from desgw.se.maskbits import UNUSABLE
from desgw.se.measure_kernels import bad_from_mask, flux_radius_all, winpos_all

__all__ = ["DetectConfig", "DetectionResult", "detect_sources", "gaussian_kernel", "gaussian_rows"]

log = logging.getLogger(__name__)

#: Pixel buffer of sep's extraction (pixels of active objects): tried first at
#: ``_PIXSTACK_START``, then ten times larger up to ``_PIXSTACK_MAX`` when sep reports it full
#: (a full CCD with a bright star's halo can need more than 300000). The buffer does not change
#: what is detected, only whether it fits; but sep allocates and links all of it on every call:
#: ~0.06 CPU-s per 4096 x 2048 CCD at 3000000, ~0.006 at 300000.
_PIXSTACK_START = 300_000
_PIXSTACK_MAX = 3_000_000

_NOISE_KINDS = {"rms": NOISE_RMS, "variance": NOISE_VARIANCE, "weight": NOISE_WEIGHT}


@dataclass(frozen=True)
class DetectConfig:
    """Settings of :func:`detect_sources`.

    Attributes
    ----------
    thresh_sigma : float
        Detection threshold in units of the per-pixel background noise (SExtractor's
        ``DETECT_THRESH``), applied to the filtered image; with ``thresh_type="filtered"``, in
        units of the filtered image's noise.
    thresh_type : {"pixel", "filtered"}
        Threshold convention (see the module docstring).
    minarea : int
        Minimum number of connected pixels above threshold (``DETECT_MINAREA``).
    filter_fwhm : float or None
        FWHM (pixels) of the Gaussian detection filter; match it to the seeing. ``None``
        disables filtering.
    filter_size : int or None
        Side of the filter kernel (pixels, odd); ``None`` picks ``2 * round(0.85 filter_fwhm)
        + 1`` (7 for FWHM 4, as SExtractor's gauss_4.0_7x7), capped at 15.
    deblend_nthresh : int
        Number of deblending sub-thresholds (``DEBLEND_NTHRESH``).
    deblend_cont : float
        Minimum contrast for deblending (``DEBLEND_MINCONT``).
    clean : bool or None
        Remove spurious detections near bright objects (``CLEAN``); ``None``: on for
        ``thresh_type="pixel"``, off for ``"filtered"``.
    clean_param : float
        Cleaning efficiency (``CLEAN_PARAM``).
    mask_bits : int
        Mask bits that exclude a pixel from detection.
    window_min_snr : float or None
        Windowed centroids and half-light radii only for the detections whose isophotal S/N
        (``flux_iso / (rms sqrt(npix))``, as :func:`desgw.se.psf.select_psf_candidates`
        computes it) reaches this; the others keep their barycentre as ``xwin``, ``ywin``,
        ``flux_radius`` NaN and ``win_flag`` 1. For a pass that only looks for bright stars
        (the seeing estimate): on a dense CCD most detections are faint and their centroids
        cost ~0.1 ms each. None: every detection.
    prefilter : bool
        With ``thresh_type="pixel"``, a filter and a noise map: filter the image here (two
        1-D passes of the Gaussian) and give sep the filtered image, instead of sep's 2-D
        filter (see the module docstring). False: sep filters.
    """

    thresh_sigma: float = 1.5
    thresh_type: Literal["pixel", "filtered"] = "pixel"
    minarea: int = 5
    filter_fwhm: float | None = 4.0
    filter_size: int | None = None
    deblend_nthresh: int = 32
    deblend_cont: float = 0.005
    clean: bool | None = None
    clean_param: float = 1.0
    mask_bits: int = UNUSABLE
    window_min_snr: float | None = None
    prefilter: bool = True

    def __post_init__(self) -> None:
        if self.thresh_sigma <= 0:
            raise ValueError(f"DetectConfig.thresh_sigma must be > 0, got {self.thresh_sigma}")
        if self.thresh_type not in ("pixel", "filtered"):
            raise ValueError(f"DetectConfig.thresh_type must be 'pixel' or 'filtered', got "
                             f"{self.thresh_type!r}")
        if self.minarea < 1:
            raise ValueError(f"DetectConfig.minarea must be >= 1, got {self.minarea}")
        if self.filter_fwhm is not None and self.filter_fwhm <= 0:
            raise ValueError(f"DetectConfig.filter_fwhm must be > 0, got {self.filter_fwhm}")
        if self.filter_size is not None and (self.filter_size < 3 or self.filter_size % 2 == 0):
            raise ValueError(f"DetectConfig.filter_size must be odd and >= 3, got {self.filter_size}")


@dataclass(frozen=True)
class DetectionResult:
    """Detections and their segmentation map.

    Attributes
    ----------
    catalog : astropy.table.Table
        One row per detection, 0-based pixel coordinates (x = column, y = row). Columns:
        ``number`` (1-based id, the value of its pixels in ``segmap``), ``x``, ``y``
        (isophotal barycentre), ``x2``, ``y2``, ``xy`` (second moments, pix**2), ``a``,
        ``b`` (pix), ``theta`` (rad, counter-clockwise from +x), ``flux_iso`` (e-),
        ``peak`` (e-), ``npix``, ``xmin``, ``xmax``, ``ymin``, ``ymax``, ``xpeak``,
        ``ypeak``, ``thresh`` (e-), ``sep_flag`` (sep object flags: 1 deblended, 2 touches
        the image edge, 4 deblending overflow, 8 singular moments), ``flux_radius`` (half-light
        radius within ``min(6 a, 25)`` pix), ``xwin``, ``ywin`` (windowed centroid),
        ``win_flag`` (1 = the windowed centroid failed or ran off and the barycentre is used).
    segmap : numpy.ndarray
        Segmentation map (ny, nx) int32: 0 for sky, ``number`` for a detection's pixels.
    config : DetectConfig
        The settings used.
    """

    catalog: Table
    segmap: np.ndarray
    config: DetectConfig


def gaussian_rows(fwhm: float, size: int | None = None) -> np.ndarray:
    """The 1-D Gaussian whose outer product with itself is :func:`gaussian_kernel`.

    Parameters
    ----------
    fwhm : float
        FWHM in pixels.
    size : int or None
        Length (odd); ``None`` as :func:`gaussian_kernel`.

    Returns
    -------
    numpy.ndarray
        (size,) float32, normalised to sum 1 (in float64, then rounded).
    """
    if size is None:
        size = min(2 * int(round(0.85 * fwhm)) + 1, 15)
    sigma = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    r = np.arange(size) - size // 2
    g = np.exp(-0.5 * (r / sigma) ** 2)
    return (g / g.sum()).astype(np.float32)


def gaussian_kernel(fwhm: float, size: int | None = None) -> np.ndarray:
    """A normalised (sum 1) circular Gaussian kernel.

    Parameters
    ----------
    fwhm : float
        FWHM in pixels.
    size : int or None
        Side (odd); ``None`` gives ``2 * round(0.85 fwhm) + 1`` capped at 15.

    Returns
    -------
    numpy.ndarray
        (size, size) float32 kernel.
    """
    if size is None:
        size = min(2 * int(round(0.85 * fwhm)) + 1, 15)
    sigma = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    r = np.arange(size) - size // 2
    g = np.exp(-0.5 * (r / sigma) ** 2)
    k = np.outer(g, g)
    return (k / k.sum()).astype(np.float32)


def detect_sources(image: np.ndarray, noise: np.ndarray | float, mask: np.ndarray | None = None,
                   *, noise_type: Literal["rms", "variance", "weight"] = "rms",
                   config: DetectConfig = DetectConfig()) -> DetectionResult:
    """Detect sources on a background-subtracted image.

    Parameters
    ----------
    image : numpy.ndarray
        Background-subtracted image (ny, nx), e-; not modified.
    noise : numpy.ndarray or float
        Background noise per pixel (ny, nx) or one value for the image: a standard deviation
        (e-) when ``noise_type="rms"`` (e.g. ``Background.rms``), a variance (e-**2) when
        ``noise_type="variance"`` (e.g. ``1 / weight``; infinite values are allowed where the
        mask excludes the pixel), an inverse variance (e-**-2, 0 = unusable) when
        ``noise_type="weight"`` (the same detections as its variance ``1 / weight``).
    mask : numpy.ndarray or None
        Integer mask (ny, nx); pixels with any of ``config.mask_bits`` are not detected.
    noise_type : {"rms", "variance", "weight"}
        What ``noise`` holds.
    config : DetectConfig
        Thresholds, filter and deblending settings.

    Returns
    -------
    DetectionResult
        The catalogue and the segmentation map.

    Raises
    ------
    desgw.errors.DataTypeError
        If an array is not 2-D or the shapes differ.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise DataTypeError(None, None, f"image must be 2-D, got shape {image.shape}")
    data = np.ascontiguousarray(image, dtype=np.float32)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != image.shape:
            raise DataTypeError(None, None, f"mask has shape {mask.shape}, expected {image.shape}")
        if mask.dtype.kind not in "iu":
            raise DataTypeError(None, None, f"mask must be integer, got {mask.dtype}")
    if noise_type not in _NOISE_KINDS:
        raise ValueError(f"noise_type must be 'rms', 'variance' or 'weight', got {noise_type!r}")
    noise_arr = np.asarray(noise, dtype=np.float32)
    if noise_arr.ndim == 0:
        err: np.ndarray | float = float(
            noise_arr if noise_type == "rms" else np.sqrt(noise_arr) if noise_type == "variance"
            else np.sqrt(np.float32(1.0) / noise_arr))
        bad = (np.zeros(image.shape, dtype=bool) if mask is None
               else bad_from_mask(np.ascontiguousarray(mask), np.int64(config.mask_bits)))
        data_for_sep = np.where(bad, np.float32(0), data) if bad.any() else data
    else:
        if noise_arr.shape != image.shape:
            raise DataTypeError(None, None,
                                f"noise has shape {noise_arr.shape}, expected {image.shape}")
        # one fused pass: excluded pixels (mask bits, unusable noise) set to 0 in the data
        # (sep ignores them for detection but its filter still reads their values)
        m = np.zeros((1, 1), np.int32) if mask is None else np.ascontiguousarray(mask)
        data_for_sep, err, bad, _ = prepare_detection(
            data, np.ascontiguousarray(noise_arr), _NOISE_KINDS[noise_type], m,
            np.int64(config.mask_bits), mask is not None)

    kernel = None
    if config.filter_fwhm is not None:
        kernel = gaussian_kernel(config.filter_fwhm, config.filter_size)
    # the filter applied here (module docstring): with a noise map (the excluded pixels'
    # threshold 1e30 sigma), in the "pixel" convention (sep's "conv", the image only)
    fwhm = config.filter_fwhm
    prefilter = (config.prefilter and fwhm is not None and config.thresh_type == "pixel"
                 and not isinstance(err, float))
    to_sep = data_for_sep
    if prefilter and fwhm is not None:
        to_sep = separable_filter(data_for_sep, gaussian_rows(fwhm, config.filter_size))
        kernel = None
    # a noise map is 1e30 on the excluded pixels (prepare_detection), which is what sep
    # makes of a masked pixel: the mask need not be passed (the same detections, bit for bit)
    objs, segmap = _extract(
        to_sep, config.thresh_sigma, err=err,
        mask=bad if isinstance(err, float) else None, minarea=config.minarea,
        filter_kernel=kernel,
        filter_type="matched" if config.thresh_type == "filtered" else "conv",
        deblend_nthresh=config.deblend_nthresh,
        deblend_cont=config.deblend_cont,
        clean=(config.thresh_type == "pixel") if config.clean is None else config.clean,
        clean_param=config.clean_param,
        segmentation_map=True)
    del to_sep
    segmap = np.ascontiguousarray(segmap, dtype=np.int32)
    if prefilter and len(objs):
        # sep measured these on the filtered pixels it was given: the unfiltered ones
        flux, peak, xpeak, ypeak = object_flux_peak(data_for_sep, segmap, objs["xmin"],
                                                    objs["xmax"], objs["ymin"], objs["ymax"])
        objs["flux"] = flux
        objs["peak"] = peak
        objs["xpeak"] = xpeak
        objs["ypeak"] = ypeak
    n = len(objs)
    log.debug("detected %d sources", n)

    x = objs["x"].astype(np.float64)
    y = objs["y"].astype(np.float64)
    rhalf = np.full(n, np.nan)
    xwin, ywin = x.copy(), y.copy()
    wflag = np.ones(n, dtype=np.int16)
    sel = np.arange(n)
    if n and config.window_min_snr is not None:
        # the catalogue's float32 columns, as select_psf_candidates reads them
        rms = objs["thresh"].astype(np.float32).astype(np.float64) / config.thresh_sigma
        with np.errstate(divide="ignore", invalid="ignore"):
            snr = (objs["flux"].astype(np.float32).astype(np.float64)
                   / (rms * np.sqrt(objs["npix"].astype(np.int32))))
        sel = np.flatnonzero(snr >= config.window_min_snr)
    if sel.size:
        xs, ys = x[sel], y[sel]
        # Half-light radius within 6 A (capped: the window only needs the core's size).
        rmax = np.clip(6.0 * objs["a"][sel].astype(np.float64), 3.0, 25.0)
        rh = flux_radius_all(data_for_sep, bad, xs, ys, rmax, np.full(sel.size, np.nan), 0.5)
        rh = np.where(np.isfinite(rh) & (rh > 0.5), rh, 0.5)
        sig = 2.0 / 2.35 * rh
        # data_for_sep is 0 on the bad pixels: the window sums need no test per pixel
        xw, yw, witer = winpos_all(data_for_sep, bad, xs, ys, sig, 16, False)
        # A window centroid that ran away (noise, blends) falls back to the barycentre.
        off = (np.hypot(xw - xs, yw - ys) > np.maximum(2.0 * rh, 1.0)) | (witer == 0)
        rhalf[sel] = rh
        xwin[sel] = np.where(off, xs, xw)
        ywin[sel] = np.where(off, ys, yw)
        wflag[sel] = off.astype(np.int16)

    cat = Table()
    cat["number"] = np.arange(1, n + 1, dtype=np.int32)
    cat["x"] = x
    cat["y"] = y
    for key in ("x2", "y2", "xy"):
        cat[key] = objs[key].astype(np.float64)
        cat[key].unit = u.pix ** 2
    cat["a"] = objs["a"].astype(np.float32)
    cat["b"] = objs["b"].astype(np.float32)
    cat["theta"] = objs["theta"].astype(np.float32)
    cat["flux_iso"] = objs["flux"].astype(np.float32)
    cat["peak"] = objs["peak"].astype(np.float32)
    cat["npix"] = objs["npix"].astype(np.int32)
    for key in ("xmin", "xmax", "ymin", "ymax", "xpeak", "ypeak"):
        cat[key] = objs[key].astype(np.int32)
    cat["thresh"] = objs["thresh"].astype(np.float32)
    cat["sep_flag"] = objs["flag"].astype(np.int16)
    cat["flux_radius"] = rhalf.astype(np.float32)
    cat["xwin"] = np.asarray(xwin, dtype=np.float64)
    cat["ywin"] = np.asarray(ywin, dtype=np.float64)
    cat["win_flag"] = np.asarray(wflag, dtype=np.int16)
    for key in ("x", "y", "a", "b", "flux_radius", "xwin", "ywin", "xmin", "xmax", "ymin",
                "ymax", "xpeak", "ypeak"):
        cat[key].unit = u.pix
    cat["theta"].unit = u.rad
    for key in ("flux_iso", "peak", "thresh"):
        cat[key].unit = u.electron
    return DetectionResult(catalog=cat, segmap=segmap, config=config)


def _extract(data: np.ndarray, thresh: float, **kwargs: object) -> tuple[np.ndarray, np.ndarray]:
    """``sep.extract`` with the smallest pixel buffer that holds the image's active objects.

    Tries ``_PIXSTACK_START`` pixels, and on sep's "pixel buffer full" error retries with a
    buffer ten times larger, up to ``_PIXSTACK_MAX`` (then sep's error propagates). The
    detections do not depend on the buffer size (bit for bit), only the allocation cost does.
    """
    size = _PIXSTACK_START
    while True:
        sep.set_extract_pixstack(size)
        try:
            return sep.extract(data, thresh, **kwargs)
        except Exception as exc:  # sep raises a bare Exception for its C status codes
            if "pixel buffer full" not in str(exc) or size >= _PIXSTACK_MAX:
                raise
            size = min(10 * size, _PIXSTACK_MAX)
            log.debug("sep pixel buffer full; retrying with %d pixels", size)
