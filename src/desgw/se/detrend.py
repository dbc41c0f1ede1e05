"""Instrumental signature removal of one raw DECam CCD: raw ADU -> electrons, mask, weight.

Steps, per amplifier then per CCD (:func:`detrend_ccd`):

1. **Overscan**: row-by-row level of the serial overscan, robust to hot columns and cosmic
   rays, smoothed along rows (:func:`desgw.se.detrend_overscan.overscan_profile`), subtracted.
2. **Saturation**: pixels at or above the amplifier's saturation level (``SATURATA/B``, ADU
   above the overscan level, tested on the *recorded* ADU, before linearity and gain) get
   ``SAT``.
3. **Linearity** (when a :class:`desgw.io.calib.LinearityTable` is given): the overscan-
   subtracted recorded ADU of each amplifier are replaced by the linear ADU of the lookup
   table (:func:`desgw.se.linearity.apply_linearity`), as the original pipeline applied
   DECam's ``linearity_table`` between overscan and gain. Without a table the step is skipped.
4. **Gain**: ADU -> electrons with the amplifier's gain (``GAINA/B``).
5. **Trim** to the data section (4096 x 2048 for DECam).
6. **Bias**: subtract the bias image (electrons).
7. **Flat**: divide by the normalised dome flat. Non-positive or non-finite flat pixels
   get ``BADPIX`` and image value 0.
8. **Masks**: bad-pixel mask (any of ``config.bpm_bad_bits``) -> ``BADPIX``; the outer
   ``config.edge_px`` pixels -> ``EDGE``; extra bits passed in ``mask`` (e.g. ``SSXTALK`` from
   :func:`desgw.se.crosstalk.correct_crosstalk`) are OR-ed in.
9. **Weight** (inverse variance, e^-2): the flat-fielded image is ``I = (R - B) / F`` with
   ``R`` the raw electrons (Poisson, plus read noise ``rn``), ``B`` the (noise-free) bias and
   ``F`` the flat. Its variance is ``Var(I) = (S * F + rn**2) / F**2`` where ``S`` is the
   *smooth sky* of the flat-fielded image (so ``S * F`` is the sky electrons the pixel
   collected). A smooth sky estimate rather than the pixel value is used on purpose: the
   weight is the background noise (as SExtractor's ``MAP_WEIGHT`` expects; the objects' own
   Poisson noise is added by the photometry from the gain), and a pixel-value based weight
   would down-weight positive noise fluctuations and bias fluxes low. ``S`` is a median on a
   mesh of ``config.sky_mesh`` pixels (on a subsampled grid, masked pixels excluded),
   bilinearly interpolated; it is clipped at 0. Weight = ``1 / Var(I)``, 0 where any
   :data:`desgw.se.maskbits.UNUSABLE` bit is set.

Unusable input raises :class:`DetrendError` (a :class:`desgw.errors.DesgwInputError`:
picklable, names the file, HDU, CCD and problem): non-finite raw pixels, an amplifier whose
data pixels are all equal (e.g. all zero), an amplifier that is entirely saturated,
calibration images of the wrong shape or with non-finite values.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from desgw.errors import DesgwInputError

from . import detrend_kernels as _kern
from . import maskbits
from .detrend_amps import AmpLayout, resolve_layouts
from .detrend_overscan import overscan_profile
from .linearity import apply_linearity, linearise_values

if TYPE_CHECKING:  # pragma: no cover
    from desgw.io.calib import LinearityTable

__all__ = ["DetrendConfig", "AmpDetrend", "DetrendedCCD", "DetrendError", "detrend_ccd",
           "smooth_sky"]

log = logging.getLogger(__name__)


class DetrendError(DesgwInputError):
    """A raw CCD or its calibrations cannot be detrended.

    Attributes ``path``, ``hdu``, ``problem`` (see :class:`DesgwInputError`) and ``ccdnum``.
    """

    def __init__(self, path: str | os.PathLike[str] | None, hdu: str | int | None, problem: str,
                 *, ccdnum: int | None = None, **extra: object) -> None:
        super().__init__(path, hdu, f"CCD {ccdnum}: {problem}" if ccdnum is not None
                         and not str(problem).startswith("CCD ") else problem,
                         ccdnum=ccdnum, **extra)


@dataclass(frozen=True)
class DetrendConfig:
    """Settings of :func:`detrend_ccd`.

    Attributes
    ----------
    overscan_skip_cols : int
        Overscan columns dropped at each end before the row-wise estimate.
    overscan_clip_sigma : float
        Per-row clipping of overscan pixels, in units of the overscan noise.
    overscan_window : int
        Running-median length (rows, odd) smoothing the overscan level; 1 = no smoothing.
    edge_px : int
        Width (pixels) of the ``EDGE`` border on all four sides. 15 matches the original
        pipeline, which treated pixels 16..2033 x 16..4081 (1-based) as the usable CCD.
    bpm_bad_bits : int
        Bad-pixel-mask bits that make a pixel ``BADPIX`` (default: any bit).
    sky_mesh : int
        Mesh size (pixels) of the smooth sky used in the weight.
    sky_subsample : int
        Pixel stride when sampling the image for the sky mesh medians (speed).
    """

    overscan_skip_cols: int = 4
    overscan_clip_sigma: float = 3.0
    overscan_window: int = 31
    edge_px: int = 15
    bpm_bad_bits: int = 0xFFFF
    sky_mesh: int = 256
    sky_subsample: int = 4

    def __post_init__(self) -> None:
        if self.overscan_window < 1 or self.overscan_window % 2 == 0:
            raise ValueError(f"overscan_window must be a positive odd number, got "
                             f"{self.overscan_window}")
        if self.edge_px < 0 or self.overscan_skip_cols < 0:
            raise ValueError("edge_px and overscan_skip_cols must be >= 0")
        if self.sky_mesh < 8 or self.sky_subsample < 1 or self.sky_mesh % self.sky_subsample:
            raise ValueError("sky_mesh must be >= 8 and a multiple of sky_subsample")


@dataclass(frozen=True)
class AmpDetrend:
    """What detrending measured and used for one amplifier.

    Attributes
    ----------
    name : str
        ``"A"`` or ``"B"``.
    overscan_adu : float
        Median overscan level (ADU).
    overscan_noise_adu : float
        Robust rms of single overscan pixels (ADU): the measured read noise in ADU.
    gain : float
        Gain used (e-/ADU).
    read_noise_e : float
        Read noise used in the weight (e-, from the header / instrument model).
    measured_read_noise_e : float
        ``overscan_noise_adu * gain`` (e-).
    saturation_e : float
        Saturation level in electrons before bias subtraction and flat fielding
        (``saturation_adu * gain``; with a linearity table, the linear value of
        ``saturation_adu`` times the gain).
    sky_e : float
        Median of the smooth sky over the amplifier (e-, flat-fielded image).
    n_saturated : int
        Number of ``SAT`` pixels.
    """

    name: str
    overscan_adu: float
    overscan_noise_adu: float
    gain: float
    read_noise_e: float
    measured_read_noise_e: float
    saturation_e: float
    sky_e: float
    n_saturated: int


@dataclass(frozen=True)
class DetrendedCCD:
    """A detrended CCD.

    Attributes
    ----------
    ccdnum : int or None
    image : ndarray, float32, shape (4096, 2048)
        Electrons (bias-subtracted, flat-fielded; sky not subtracted).
    mask : ndarray, int32, same shape
        :mod:`desgw.se.maskbits` bits.
    weight : ndarray, float32, same shape
        Inverse variance (e^-2) of the background noise; 0 where unusable.
    sky : ndarray, float32, same shape
        The smooth sky (e-) used in the weight.
    amps : tuple of AmpDetrend
        Per-amplifier values, in layout order (A, B).
    """

    ccdnum: int | None
    image: np.ndarray
    mask: np.ndarray
    weight: np.ndarray
    sky: np.ndarray
    amps: tuple[AmpDetrend, ...]

    def amp(self, name: str) -> AmpDetrend:
        """The :class:`AmpDetrend` of amplifier ``name``."""
        for a in self.amps:
            if a.name == name:
                return a
        raise KeyError(name)


def _interp_matrix(n_out: int, n_cells: int, cell: float) -> np.ndarray:
    """(n_out, n_cells) bilinear weights from cell centres to pixel centres (clamped ends)."""
    centres = (np.arange(n_cells) + 0.5) * cell - 0.5
    x = np.clip(np.arange(n_out, dtype=np.float64), centres[0], centres[-1])
    m = np.zeros((n_out, n_cells), np.float32)
    if n_cells == 1:
        m[:, 0] = 1.0
        return m
    i = np.clip(np.searchsorted(centres, x, side="right") - 1, 0, n_cells - 2)
    t = (x - centres[i]) / (centres[i + 1] - centres[i])
    m[np.arange(n_out), i] = 1.0 - t
    m[np.arange(n_out), i + 1] = t
    return m


def smooth_sky(image: np.ndarray, bad: np.ndarray | None = None, *, mesh: int = 256,
               subsample: int = 4, bad_bits: int | None = None) -> np.ndarray:
    """Smooth background: mesh medians of a subsampled image, bilinearly interpolated.

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        Image (any units); ``ny`` and ``nx`` need not be multiples of ``mesh`` (the last
        partial cells are merged into their neighbours).
    bad : ndarray of bool, optional
        Pixels to ignore; with ``bad_bits``, an integer mask whose pixels with any of those
        bits set are ignored.
    mesh : int
        Cell size in pixels.
    subsample : int
        Stride of the pixels sampled inside each cell.
    bad_bits : int, optional
        Bits of an integer ``bad`` mask that make a pixel bad. Only the sampled pixels are
        tested (1/16 of them at ``subsample=4``), instead of the whole CCD's boolean map the
        caller would otherwise build (~13 ms per CCD on one core, two full-CCD passes).

    Returns
    -------
    ndarray, float32, shape (ny, nx)
        A cell with no good sample takes the median of all good cells.

    Notes
    -----
    The interpolation's matrices and product are float32, and the product is returned as
    it is (a ``.astype(np.float32)`` copy of it cost ~9 ms per CCD).
    """
    ny, nx = image.shape
    cy, cx = max(ny // mesh, 1), max(nx // mesh, 1)
    step = mesh // subsample if mesh >= subsample else 1
    sub = image[: cy * mesh: subsample, : cx * mesh: subsample].astype(np.float32)
    if bad is not None:
        sub_bad = bad[: cy * mesh: subsample, : cx * mesh: subsample]
        if bad_bits is not None:
            sub_bad = (sub_bad & bad_bits) != 0
        sub = np.where(sub_bad, np.nan, sub)
    cells = sub.reshape(cy, step, cx, step).transpose(0, 2, 1, 3).reshape(cy, cx, step * step)
    if bad is None:
        grid = np.median(cells, axis=2)
    else:
        # median of the non-NaN values of each cell (NaN sorts last); faster than nanmedian
        ordered = np.sort(cells, axis=2)
        ngood = np.count_nonzero(~np.isnan(cells), axis=2)
        lo = np.take_along_axis(ordered, np.maximum((ngood - 1) // 2, 0)[..., None], 2)[..., 0]
        hi = np.take_along_axis(ordered, np.maximum(ngood // 2, 0)[..., None], 2)[..., 0]
        grid = np.where(ngood > 0, 0.5 * (lo + hi), np.nan)
        if np.all(np.isnan(grid)):
            grid = np.zeros_like(grid)
        grid = np.where(np.isnan(grid), np.nanmedian(grid), grid)
    my = _interp_matrix(ny, cy, mesh)
    mx = _interp_matrix(nx, cx, mesh)
    return (my @ grid.astype(np.float32) @ mx.T).astype(np.float32, copy=False)


def _calib_err(name: str, err: dict, calib_paths: Mapping[str, str] | None) -> dict:
    """The error location of a calibration image: its file when known, else the raw CCD's."""
    path = (calib_paths or {}).get(name)
    if path is None:
        return err
    return {**err, "path": path, "hdu": None}


def _check_calib(name: str, arr: np.ndarray | None, shape: tuple[int, int], err: dict, *,
                 finite: bool = True) -> None:
    """Shape of a calibration image, and (``finite``) that its values are finite."""
    if arr is None:
        return
    if arr.shape != shape:
        raise DetrendError(problem=f"{name} has shape {arr.shape}, expected {shape}", **err)
    if finite and np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        n = int(np.count_nonzero(~np.isfinite(arr)))
        raise DetrendError(problem=f"{name} has {n} non-finite pixels", **err)


def detrend_ccd(raw: object, *, bias: np.ndarray | None = None, flat: np.ndarray | None = None,
                bpm: np.ndarray | None = None, mask: np.ndarray | None = None,
                amps: Sequence[AmpLayout] | None = None, ccdnum: int | None = None,
                config: DetrendConfig = DetrendConfig(),
                linearity: LinearityTable | None = None,
                calib_paths: Mapping[str, str] | None = None) -> DetrendedCCD:
    """Overscan, linearity, gain, bias, flat, masks and weight of one raw CCD.

    Parameters
    ----------
    raw : RawCCD or ndarray, shape (NAXIS2, NAXIS1), e.g. (4146, 2160)
        Raw ADU (crosstalk-corrected or not). A :class:`desgw.io.raw.RawCCD` brings its header
        sections, gains, read noise and saturation; for a bare array (e.g.
        ``CrosstalkCorrected.pixels``) pass ``amps`` (e.g. ``CrosstalkCorrected.amps``) or
        ``ccdnum`` (instrument model values).
    bias : ndarray, shape (4096, 2048), optional
        Bias image in electrons (after overscan subtraction and gain).
    flat : ndarray, shape (4096, 2048), optional
        Normalised dome flat (dimensionless, ~1).
    bpm : ndarray of int, shape (4096, 2048), optional
        Bad-pixel bit mask (0 = good).
    mask : ndarray of int, shape (4096, 2048), optional
        Mask bits to OR into the output (e.g. ``SSXTALK`` from the crosstalk step).
    amps : sequence of AmpLayout, optional
        Amplifier layouts (default: from the RawCCD header, else the instrument model).
    ccdnum : int, optional
        CCDNUM, for the instrument model and messages (default ``raw.ccdnum``).
    config : DetrendConfig
    linearity : LinearityTable, optional
        The CCD's linearity lookup table (recorded -> linear overscan-subtracted ADU per
        amplifier), applied after overscan subtraction and before the gain; None skips it.
    calib_paths : mapping of str to str, optional
        Files the ``bias``, ``flat`` and ``bpm`` arrays came from: an error about one of them
        names its file (and the CCD) instead of the raw file.

    Returns
    -------
    DetrendedCCD

    Raises
    ------
    DetrendError
        Non-finite raw pixels; an amplifier whose data are constant (e.g. all zero) or entirely
        saturated; calibration images of the wrong shape or with non-finite values.
    """
    if ccdnum is None:
        ccdnum = getattr(raw, "ccdnum", None)
    err: dict[str, Any] = dict(path=getattr(raw, "path", None), hdu=getattr(raw, "hdu", None),
                               ccdnum=ccdnum)
    layouts = resolve_layouts(raw, amps, ccdnum)
    pix = np.asarray(raw.pixels if hasattr(raw, "pixels") else raw)
    if pix.ndim != 2:
        raise DetrendError(problem=f"raw pixels must be 2-D, got shape {pix.shape}", **err)
    shape = (max(a.trimmed.y1 for a in layouts), max(a.trimmed.x1 for a in layouts))
    for name, arr in (("bias", bias), ("flat", flat), ("bpm", bpm), ("mask", mask)):
        # bias and flat values are checked in the calibration pass below
        _check_calib(name, None if arr is None else np.asarray(arr), shape,
                     _calib_err(name, err, calib_paths), finite=name not in ("bias", "flat"))

    image = np.empty(shape, np.float32)
    out_mask = np.zeros(shape, np.int32)
    rn_col = np.zeros(shape[1], np.float32)
    per_amp = []
    for a in layouts:
        over = np.asarray(pix[a.overscan.slices], dtype=np.float32)
        if not np.all(np.isfinite(over)):
            n = int(np.count_nonzero(~np.isfinite(over)))
            raise DetrendError(problem=f"amp {a.name} has {n} non-finite overscan pixels", **err)
        level, noise = overscan_profile(over, readout_left=a.readout_left,
                                        skip_cols=config.overscan_skip_cols,
                                        clip_sigma=config.overscan_clip_sigma,
                                        window=config.overscan_window)
        # with a linearity table: overscan-subtracted ADU now, the gain after the correction
        nbad, dmin, dmax, nsat = _kern.amp_to_electrons(
            pix[a.data.slices], level, 1.0 if linearity is not None else float(a.gain),
            float(a.saturation_adu), maskbits.SAT,
            image[a.trimmed.slices], out_mask[a.trimmed.slices])
        if nbad:
            raise DetrendError(problem=f"amp {a.name} has {nbad} non-finite raw pixels", **err)
        if dmin == dmax:
            raise DetrendError(problem=f"amp {a.name} data pixels are all {dmin:g} ADU", **err)
        if nsat == a.data.shape[0] * a.data.shape[1]:
            raise DetrendError(problem=f"amp {a.name} is entirely saturated (>= "
                               f"{a.saturation_adu:g} ADU above overscan)", **err)
        rn_col[a.trimmed.x0:a.trimmed.x1] = a.read_noise_e
        per_amp.append((a, float(np.median(level)), noise, nsat))
    if linearity is not None:
        image = apply_linearity(image, layouts, linearity)
        for a in layouts:
            image[a.trimmed.slices] *= np.float32(a.gain)

    dummy_f = np.zeros((1, 1), np.float32)
    f = None if flat is None else np.ascontiguousarray(flat, dtype=np.float32)
    nbadflat, nanbias, nanflat = _kern.apply_calibrations(
        image, out_mask,
        dummy_f if bias is None else np.ascontiguousarray(bias, dtype=np.float32), bias is not None,
        dummy_f if f is None else f, f is not None,
        np.zeros((1, 1), np.int32) if bpm is None else np.asarray(bpm), bpm is not None,
        int(config.bpm_bad_bits),
        np.zeros((1, 1), np.int32) if mask is None else np.asarray(mask, dtype=np.int32),
        mask is not None, int(config.edge_px), maskbits.BADPIX, maskbits.EDGE)
    for name, nbad in (("bias", nanbias), ("flat", nanflat)):
        if nbad:
            raise DetrendError(problem=f"{name} has {nbad} non-finite pixels",
                               **_calib_err(name, err, calib_paths))
    if f is not None and nbadflat == f.size:
        raise DetrendError(problem="flat has no positive pixel",
                           **_calib_err("flat", err, calib_paths))

    sky = smooth_sky(image, out_mask, mesh=config.sky_mesh, subsample=config.sky_subsample,
                     bad_bits=maskbits.UNUSABLE)
    # Var(I) = (S * F + rn^2) / F^2 with S the smooth sky of the flat-fielded image.
    weight = np.empty(shape, np.float32)
    _kern.inverse_variance(sky, dummy_f if f is None else f, f is not None, rn_col, out_mask,
                           maskbits.UNUSABLE, weight)

    amp_out = []
    for a, os_level, noise, nsat in per_amp:
        amp_out.append(AmpDetrend(
            name=a.name, overscan_adu=os_level, overscan_noise_adu=noise, gain=a.gain,
            read_noise_e=a.read_noise_e, measured_read_noise_e=noise * a.gain,
            saturation_e=(a.saturation_adu if linearity is None else float(
                linearise_values(a.saturation_adu, linearity, a.name))) * a.gain,
            sky_e=float(np.median(sky[a.trimmed.slices][::16, ::16])), n_saturated=nsat))
    log.debug("detrended CCD %s: sky %s e-%s", ccdnum, [round(x.sky_e, 1) for x in amp_out],
              "" if linearity is not None else " (no linearity correction)")
    return DetrendedCCD(ccdnum=None if ccdnum is None else int(ccdnum), image=image,
                        mask=out_mask, weight=weight, sky=sky, amps=tuple(amp_out))
