"""Resampling of a template CCD onto the search CCD's pixel grid (the SWarp step of DiffImg).

Method
------
For every output pixel centre the input position is found through both WCS (output pixel ->
sky -> input pixel, SIP included), tabulated on a coarse grid and interpolated
(:mod:`desgw.diff.resample_mapping`; interpolation error < 1e-5 px for a 32 px grid). The input
image is interpolated there with a separable Lanczos kernel (``lanczos3`` by default: 6 x 6
taps ``w(dx) w(dy)`` in input pixel coordinates). The 1-D taps are the Lanczos weights with a
small correction that makes them sum to 1 and reproduce polynomials up to cubic exactly
(:func:`desgw.diff.resample_kernels.lanczos_table`): plain Lanczos-3 shifts star centroids by up
to 0.01-0.02 px depending on the sub-pixel phase, the corrected kernel by < 0.002 px at 1"
seeing. Interpolation conserves surface brightness; the result is multiplied by the local
pixel-area ratio ``A = |det J|``
(input pixels per output pixel, ``J = d(x_in, y_in)/d(x_out, y_out)``) so that total flux is
conserved: a star keeps its flux in electrons.

Masks and weights
-----------------
An input pixel is *bad* if it has an unusable mask bit (:data:`desgw.se.maskbits.UNUSABLE`), a
weight <= 0 or a non-finite value or weight; a bad pixel with no unusable bit is given BADPIX.
Bad pixels are never read: their taps are dropped and the remaining taps renormalised, so NaN
or huge values never leak. An output pixel ORs the mask bits of every input pixel whose 2-D tap
weight ``|w|`` exceeds ``ResampleConfig.mask_threshold`` (default 0.01: a dropped tap changes
the value by less than 1 % of the local contrast); it is unusable (weight 0) if any of those bits
is unusable. Taps that fall outside the input count as EDGE. Output pixels whose centre maps
outside the input image have no data: value 0, mask EDGE, weight 0, ``coverage`` False.

Noise
-----
The output variance is ``A**2 sum(w_i**2 var_i) / (sum w_i)**2`` over the used taps, and the
output weight is its inverse. With Lanczos-3 (other orders keep every tap's own variance),
where the 6 x 6 tap box holds no flagged pixel (the fast path), the outer ring of 20 taps,
whose squared weights are 0.13 % of the sum on average (0.3 % at most), takes the variance
of the output pixel's nearest input pixel instead of its own (16 variance reads, not 36):
exact on a smooth variance, within 0.3 % on a bright star's Poisson variance (Moffat beta
2.5 and 4.5, Kolmogorov; 3.5 px FWHM, peak 50 times the sky), and the variances summed over
the star within 1e-5 (tested against the exact propagation).
Resampled noise is *correlated*: neighbouring output pixels share input pixels. The
per-pixel variance is exact (up to that ring), but it underestimates the variance of a sum over
many pixels (an aperture flux, a PSF fit on a large stamp): summing over a large area, each input
pixel contributes once with total weight ~1, so the sum's variance is ``A * var_in`` per output
pixel, while the per-pixel variances add up to ``A**2 var_in S`` with ``S = sum w_i**2 <= 1``.
The ratio, ``noise_correlation_factor`` = Var(sum) / sum(per-pixel variances) ~ ``1 / (A S)``,
is returned with each resampled image (measured from the taps actually used) and is available
from the kernel alone via :func:`noise_correlation_factor` (1.0 for integer shifts, up to 1.6
for a half-pixel shift in x and y, 1.26 on average for Lanczos-3 with random sub-pixel offsets,
as for any rotated or rescaled grid). The subtraction's noise model should scale
large-area variances by it.

Speed (one core, numba, measured as CPU time on the 2-core development machine under load from
other jobs): a 4096 x 2048 CCD takes ~0.45 s in all: ~0.005 s for the WCS mapping grid, ~0.12 s
to clean the input and find the pixels whose tap box holds a flagged pixel, ~0.3 s for the
interpolation itself (72 multiply-adds per output pixel for image and variance; the variance
is ~a quarter of it: 0.43 -> 0.33 s without it for CCD 28's four template CCDs).

The input is no longer cleaned into copies (session 11): the kernel reads an input pixel only
where it is usable, so the image is used as it is and the mask bits are rebuilt in the careful
path; the one input pass writes the variance and two uint8 maps (6 bytes per pixel instead of
14). The mapping of each output row is evaluated run by run (columns sharing their four
nodes) in a loop of its own before the pixel loop. Outputs bit for bit the same as before
both; on CCD 28's four cropped templates of the 3-CCD sparse folder (9.27 Mpix in, 7.29 Mpix
covered; ``bench/bench_resample_ab.py``, pinned, best of 7, load 15-16): 0.473 -> 0.403
CPU-s, of which the kernel with its output planes 0.371, the input pass 0.017, the tap-box
map 0.013. Measured and rejected in the interpolation (8.4 M output pixels, ~0.40 s): taps
read straight from a float32 table instead of copied per pixel (same bits, no gain), column
sums first (vertical then horizontal, 6 or 8 columns: 0.60-0.68 s, numba keeps them
scalar). Without any tap sum the kernel still takes ~0.20 s (table look-ups, four output
planes of which ~0.05 s are first-touch page faults of fresh planes, the row mapping);
without the variance ~0.28 s.

The outer ring's variance from the nearest pixel (session 12, resample15): CCD 28's four
cropped templates 0.3895 -> 0.365 and 0.3874 -> 0.359 CPU-s (``bench/bench_resample_ab.py
--keep-freed-memory``, pinned, best of 7 and 9, load 4-6). In the difference of CCDs 27, 28,
29 of the 3-CCD sparse folder (old and new kernel, same inputs and rng): the coadd weights
move by <= 1.3e-4 (median <= 1e-5), the difference image by <= 1.6e-4 of its sigma, its pull
width (1.0028-1.0050) and noise factors in the 6th-7th digit; candidates 155, 138, 119 and
fakes recovered 126, 126, 105 unchanged, candidate S/N within 8e-5, PSF fluxes within 0.07 e-.

Measured and rejected (session 12, resample15): folding the coadd into the resampling. Each
template was resampled band by band (32 output rows into small buffers, by this kernel with
a row offset and its running sums carried over, so bit for bit the same) and each band
combined at once with the coadd's one-pass arithmetic, where the outlier rejection cannot
apply; no full resampled plane written or read back. Outputs bit-identical to
``resample_to_grid`` + ``coadd_templates`` (coadd image, weight, gain, mask, counts, noise
correlation factor, PSF weight maps; tested on 1-4 template CCDs with every kind of bad
pixel), but CCD 28's 4 cropped templates (``bench/bench_resample_ab.py``, pinned, best of
5-7, three runs, load 4-9): 0.520 -> 0.512, 0.545 -> 0.538 (``--keep-freed-memory``),
0.504 -> 0.501 CPU-s: 3-8 ms. The planes are written only inside each template's output box
(the zeroed ones are lazily mapped) and read back once: ~0.02 s of traffic, which the band
bookkeeping eats; the coadd's ~0.11 s is its per-pixel arithmetic (float64 divisions that
bit-identical outputs need). It would lower a worker's peak memory by the resampled planes
(13 bytes per search pixel per template, ~0.44 GB for 4 templates), not its CPU time.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS

from desgw.diff.resample_kernels import (
    box_any,
    lanczos_table,
    prepare_kernel,
    resample_kernel,
)
from desgw.diff.resample_mapping import GridMapping, mapping_grid
from desgw.errors import DataTypeError
from desgw.se.maskbits import BADPIX, EDGE, UNUSABLE

__all__ = [
    "ResampleConfig",
    "Resampled",
    "kernel_order",
    "noise_correlation_factor",
    "output_box",
    "prepare_input",
    "resample_to_grid",
    "third_cumulant_factor",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResampleConfig:
    """Settings of :func:`resample_to_grid`.

    Attributes
    ----------
    grid_step : int
        Spacing of the coarse grid on which the WCS mapping is computed exactly (output pixels).
    mask_threshold : float
        An input pixel's mask bits reach an output pixel when its 2-D tap weight exceeds this
        (dimensionless; taps sum to 1).
    wcs_tolerance : float
        Convergence tolerance of the iterative inverse of the input WCS (pixels).
    """

    grid_step: int = 32
    mask_threshold: float = 0.01
    wcs_tolerance: float = 1e-8

    def __post_init__(self) -> None:
        if not 4 <= self.grid_step <= 256:
            raise ValueError(f"ResampleConfig.grid_step must be in 4..256 px, got {self.grid_step}")
        if not 0.0 <= self.mask_threshold < 0.3:
            raise ValueError(f"ResampleConfig.mask_threshold must be in [0, 0.3), got "
                             f"{self.mask_threshold}")
        if not 0.0 < self.wcs_tolerance <= 1e-4:
            raise ValueError(f"ResampleConfig.wcs_tolerance must be in (0, 1e-4] px, got "
                             f"{self.wcs_tolerance}")


@dataclass(frozen=True)
class Resampled:
    """An image resampled onto an output grid.

    Attributes
    ----------
    image : numpy.ndarray
        (ny, nx) float32, same units as the input per pixel (e-): flux conserved.
    mask : numpy.ndarray
        (ny, nx) int32 mask bits (EDGE where no input data).
    weight : numpy.ndarray
        (ny, nx) float32 inverse per-pixel variance (units of image**-2); 0 where unusable.
    coverage : numpy.ndarray
        (ny, nx) bool, True where the output pixel centre lies on the input image.
    mapping : GridMapping
        The output -> input pixel mapping used (also gives the local Jacobian).
    noise_correlation_factor : float
        Var(sum over a large area) / sum of the per-pixel variances, from the taps used
        (1.0 if no usable pixel).
    kernel : str
        Interpolation kernel name.
    """

    image: np.ndarray
    mask: np.ndarray
    weight: np.ndarray
    coverage: np.ndarray
    mapping: GridMapping
    noise_correlation_factor: float
    kernel: str = "lanczos3"

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx) of the output grid."""
        return (int(self.image.shape[0]), int(self.image.shape[1]))


def kernel_order(kernel: str) -> int:
    """Lanczos order of a kernel name ``"lanczosN"`` (N in 2..5)."""
    m = re.fullmatch(r"lanczos([2-5])", str(kernel).lower())
    if m is None:
        raise ValueError(f"unknown resampling kernel {kernel!r}; use 'lanczos2'..'lanczos5'")
    return int(m.group(1))


def noise_correlation_factor(frac_x: np.ndarray | float | None = None,
                             frac_y: np.ndarray | float | None = None, *,
                             kernel: str = "lanczos3", area: float = 1.0) -> float:
    """Factor by which the variance of a large-area sum exceeds the summed per-pixel variances.

    For output pixels whose input positions have fractional parts ``frac_x``, ``frac_y`` the
    per-pixel variance is ``area**2 var S(tx) S(ty)`` with ``S = sum of squared 1-D taps``,
    while a sum over a large area has variance ``area * var`` per pixel; the factor is
    ``1 / (area * mean(S(tx) S(ty)))``.

    Parameters
    ----------
    frac_x, frac_y : float or numpy.ndarray or None
        Fractional input offsets in [0, 1) (same shape). ``None`` (both): average over
        uniformly distributed offsets, the case of any rotated or rescaled mapping.
    kernel : str
        Kernel name (``"lanczos3"``).
    area : float
        Pixel-area ratio ``|det J|`` (input pixels per output pixel).

    Returns
    -------
    float
    """
    order = kernel_order(kernel)
    table = lanczos_table(order)
    s_table = (table ** 2).sum(axis=1)
    bins = table.shape[0] - 1
    if frac_x is None and frac_y is None:
        t = (np.arange(bins) + 0.5) / bins
        s = np.interp(t, np.arange(bins + 1) / bins, s_table)
        return float(1.0 / (area * s.mean() ** 2))
    if frac_x is None or frac_y is None:
        raise ValueError("give both frac_x and frac_y, or neither")
    fx, fy = np.broadcast_arrays(np.asarray(frac_x, float), np.asarray(frac_y, float))
    grid = np.arange(bins + 1) / bins
    sx = np.interp(np.mod(fx, 1.0), grid, s_table)
    sy = np.interp(np.mod(fy, 1.0), grid, s_table)
    return float(1.0 / (area * np.mean(sx * sy)))


def third_cumulant_factor(kernel: str = "lanczos3") -> float:
    """Third cumulant over variance of a resampled pixel, relative to the input pixel's ratio.

    An output pixel ``sum_i w_i v_i`` of independent input pixels has the variance ``var
    sum w_i**2`` and the third cumulant ``kappa3 sum w_i**3``: interpolation between pixels
    averages their skewness away faster than their variance. Over uniformly distributed
    fractional offsets in x and y (any rotated or rescaled mapping) the mean third cumulant
    over the mean variance is ``(mean S3 / mean S2)**2`` times the input's ``kappa3 / var``,
    with ``S2``, ``S3`` the sums of the squared and cubed 1-D taps (Lanczos-3: 0.68; 1 for a
    whole-pixel shift). A pixel-area ratio other than 1 scales it by that ratio.

    Returns
    -------
    float
    """
    table = lanczos_table(kernel_order(kernel)).astype(np.float64)
    bins = table.shape[0] - 1
    t = (np.arange(bins) + 0.5) / bins
    grid = np.arange(bins + 1) / bins
    s2 = np.interp(t, grid, (table ** 2).sum(axis=1)).mean()
    s3 = np.interp(t, grid, (table ** 3).sum(axis=1)).mean()
    return float((s3 / s2) ** 2)


def _check(name: str, arr: np.ndarray, shape: tuple[int, ...] | None) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise DataTypeError(None, None, f"{name} must be 2-D, got shape {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise DataTypeError(None, None, f"{name} has shape {arr.shape}, expected {shape}")
    return arr


def prepare_input(image: np.ndarray, mask: np.ndarray | None, weight: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate the input arrays and derive what the resampling kernel reads.

    Returns
    -------
    img, var, mask, good, flagged : numpy.ndarray
        The float32 image (the input itself when it is float32 and C-contiguous: the kernel
        reads only usable pixels, so bad ones need not be cleaned), the float32 variance (0 at
        bad pixels), the integer mask bits (zeros when ``mask`` is None), uint8 1 for usable
        pixels, uint8 1 where the pixel is bad or has any mask bit.
    """
    image = _check("image", image, None)
    weight = _check("weight", weight, image.shape)
    if mask is None:
        mask = np.zeros(image.shape, dtype=np.int32)
    mask = _check("mask", mask, image.shape)
    if not np.issubdtype(mask.dtype, np.integer):
        raise DataTypeError(None, None, f"mask must be integer, got {mask.dtype}")
    if not (np.issubdtype(image.dtype, np.floating) and np.issubdtype(weight.dtype, np.floating)):
        raise DataTypeError(None, None, f"image and weight must be floating point, got "
                            f"{image.dtype} and {weight.dtype}")
    var, good, flagged = prepare_kernel(image, mask, weight, int(UNUSABLE))
    return np.ascontiguousarray(image, dtype=np.float32), var, mask, good, flagged


def output_box(mapping: GridMapping, shape_in: tuple[int, int], order: int
               ) -> tuple[int, int, int, int]:
    """Output rows ``oy0:oy1`` and columns ``ox0:ox1`` outside which no pixel maps into the input.

    From the mapping nodes that land within the input grown by the kernel support and a
    node spacing (the mapping is smooth between nodes); the box is grown by two node
    spacings. Output pixels outside it are uncovered and need no kernel evaluation.
    """
    ny_in, nx_in = shape_in
    ny, nx = mapping.shape_out
    pad = order + 1 + mapping.step
    with np.errstate(invalid="ignore"):
        hit = ((mapping.xin >= -pad) & (mapping.xin <= nx_in - 1 + pad)
               & (mapping.yin >= -pad) & (mapping.yin <= ny_in - 1 + pad))
    if not hit.any():
        return 0, 0, 0, 0
    jj, ii = np.nonzero(hit)
    s = mapping.step
    oy0 = int(np.floor(mapping.y0 + s * (jj.min() - 2)))
    oy1 = int(np.ceil(mapping.y0 + s * (jj.max() + 2))) + 1
    ox0 = int(np.floor(mapping.x0 + s * (ii.min() - 2)))
    ox1 = int(np.ceil(mapping.x0 + s * (ii.max() + 2))) + 1
    return max(oy0, 0), min(oy1, ny), max(ox0, 0), min(ox1, nx)


def resample_to_grid(image: np.ndarray, mask: np.ndarray | None, weight: np.ndarray,
                     wcs_in: WCS, wcs_out: WCS, shape_out: tuple[int, int], *,
                     kernel: str = "lanczos3", config: ResampleConfig = ResampleConfig(),
                     mapping: GridMapping | None = None) -> Resampled:
    """Resample an image with its mask and weight onto another WCS's pixel grid.

    Parameters
    ----------
    image : numpy.ndarray
        (ny_in, nx_in) input image (e- per pixel, background included or not).
    mask : numpy.ndarray or None
        (ny_in, nx_in) integer mask bits (desgw.se.maskbits).
    weight : numpy.ndarray
        (ny_in, nx_in) inverse variance (e-**-2); 0 where unusable.
    wcs_in, wcs_out : astropy.wcs.WCS
        WCS of the input image and of the output grid (TAN, TAN-SIP, TPV: anything astropy's
        ``all_pix2world``/``all_world2pix`` handle).
    shape_out : tuple[int, int]
        (ny, nx) of the output grid, e.g. (4096, 2048) for the search CCD.
    kernel : str
        ``"lanczos3"`` (default) or another ``"lanczosN"``, N in 2..5 (moment-corrected;
        ``lanczos2`` is then cubic Lagrange interpolation).
    config : ResampleConfig
        Mapping grid, mask threshold, WCS tolerance.
    mapping : GridMapping or None
        A precomputed mapping for this WCS pair and output shape (skips the WCS evaluation).

    Returns
    -------
    Resampled
        Output image, mask, weight, coverage, the mapping and the noise correlation factor.
    """
    order = kernel_order(kernel)
    ny, nx = (int(s) for s in shape_out)
    img, var, mask_in, good, flagged = prepare_input(image, mask, weight)
    if mapping is None:
        mapping = mapping_grid(wcs_in, wcs_out, (ny, nx), step=config.grid_step,
                               tolerance=config.wcs_tolerance)
    elif mapping.shape_out != (ny, nx):
        raise ValueError(f"mapping is for shape {mapping.shape_out}, not {(ny, nx)}")
    near = box_any(flagged, order - 1, order)
    oy0, oy1, ox0, ox1 = output_box(mapping, img.shape, order)
    out_img = np.zeros((ny, nx), dtype=np.float32)
    out_mask = np.full((ny, nx), int(EDGE), dtype=np.int32)
    out_w = np.zeros((ny, nx), dtype=np.float32)
    out_cov = np.zeros((ny, nx), dtype=np.uint8)
    sum_unc, sum_var = resample_kernel(
        img, var, mask_in, good, near, mapping.xin, mapping.yin, mapping.area, mapping.x0,
        mapping.y0, float(mapping.step), lanczos_table(order), order,
        float(config.mask_threshold), int(EDGE), int(UNUSABLE), int(BADPIX), out_img,
        out_mask, out_w, out_cov, oy0, oy1, ox0, ox1)
    ncf = float(sum_unc / sum_var) if sum_var > 0 else 1.0
    coverage = out_cov.view(np.bool_)
    if log.isEnabledFor(logging.DEBUG):  # two full-plane passes: only when shown
        log.debug("resampled %s -> %s: %.1f%% covered, %.1f%% usable, noise factor %.3f",
                  image.shape, (ny, nx), 100 * coverage.mean(), 100 * (out_w > 0).mean(), ncf)
    return Resampled(image=out_img, mask=out_mask, weight=out_w, coverage=coverage,
                     mapping=mapping, noise_correlation_factor=ncf, kernel=f"lanczos{order}")
