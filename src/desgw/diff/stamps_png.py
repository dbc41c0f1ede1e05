"""A small grayscale PNG encoder and the display stretches of candidate stamps.

Pure numpy + zlib (no imaging library needed): 8-bit grayscale, no interlace, filter type 0
on every row. Used by :func:`desgw.diff.stamps.write_stamps_png`.

The zscale limits (:func:`zscale_limits`) are IRAF's zscale with astropy
``ZScaleInterval``'s defaults, computed with the same floating-point operations in the same
order (so the same limits to the bit, tested on noise, stars, steps and flat stamps) but
without its per-iteration wrappers (``np.polyfit``, ``np.poly1d``, ``np.median``): a 51 x 51
panel ~1.1 -> ~0.55 ms of CPU (most of what is left is the five LAPACK solves); three
panels per picture, ~20 pictures per sparse search CCD
(bench/bench_writes_ab.py).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from astropy.visualization import AsinhStretch, PercentileInterval
from numpy.typing import NDArray

__all__ = ["STRETCHES", "encode_png_gray", "stretch_to_uint8", "zscale_limits"]

#: Display stretches of :func:`stretch_to_uint8`.
STRETCHES: tuple[str, ...] = ("zscale", "asinh")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def encode_png_gray(pixels: NDArray[np.uint8], *, level: int = 6) -> bytes:
    """PNG file bytes of an 8-bit grayscale image.

    Parameters
    ----------
    pixels : numpy.ndarray
        (height, width) uint8; row 0 is the top row of the picture.
    level : int
        zlib compression level (0-9).
    """
    img = np.asarray(pixels)
    if img.ndim != 2 or img.dtype != np.uint8 or img.size == 0:
        raise ValueError(f"need a non-empty 2-D uint8 array, got {img.dtype} {img.shape}")
    h, w = img.shape
    raw = np.zeros((h, w + 1), dtype=np.uint8)  # filter byte 0 per row
    raw[:, 1:] = img
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (_PNG_SIGNATURE + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", zlib.compress(raw.tobytes(), level)) + _chunk(b"IEND", b""))


#: zscale parameters (astropy ``ZScaleInterval``'s defaults, IRAF's): samples, contrast,
#: largest rejected fraction, fewest good samples, rejection in sigma, iterations.
_ZS_SAMPLES, _ZS_CONTRAST, _ZS_MAX_REJECT, _ZS_MIN_PIX, _ZS_KREJ, _ZS_ITERATIONS = (
    1000, 0.25, 0.5, 5, 2.5, 5)


def zscale_limits(values: NDArray[np.floating]) -> tuple[float, float]:
    """IRAF zscale display limits of finite values (astropy ``ZScaleInterval().get_limits``).

    Up to 1000 values at a regular stride are sorted and a line is fitted to them against
    their rank, rejecting (and growing by 1 % of the samples) those beyond 2.5 sigma, at most
    5 times; the limits are the median -/+ the fitted slope / 0.25 over the ranks below and
    above the centre, within the samples' range (the range itself when fewer than half the
    samples, or fewer than 5, survive). Each fit is the weighted least-squares solve
    ``np.polyfit`` does (the same column scaling and LAPACK call), so the limits are
    astropy's to the bit.

    Parameters
    ----------
    values : numpy.ndarray
        Finite pixel values (any shape; flattened), units of the image.

    Returns
    -------
    (float, float)
        Lower and upper display limits, units of ``values``.
    """
    v = np.asarray(values).ravel()
    stride = int(max(1.0, v.size / _ZS_SAMPLES))
    samples = np.sort(v[::stride][:_ZS_SAMPLES]).astype(np.float64, copy=False)
    npix = samples.size
    lo, hi = samples[0], samples[-1]
    minpix = max(_ZS_MIN_PIX, int(npix * _ZS_MAX_REJECT))
    if npix < minpix:
        return lo, hi
    ranks = np.arange(npix, dtype=np.float64)
    squares = ranks * ranks
    kernel = np.ones(max(1, int(npix * 0.01)), dtype=bool)
    rcond = npix * np.finfo(np.float64).eps
    design = np.empty((npix, 2))
    good = np.ones(npix, dtype=bool)
    ngood, last_ngood = npix, npix + 1
    slope = 0.0
    for _ in range(_ZS_ITERATIONS):
        if ngood >= last_ngood or ngood < minpix:
            break
        w = good.astype(np.float64)
        # the columns of vander(ranks, 2) weighted, over their norms: sums of integers
        # below 2**53, exact in any order, so the norms polyfit computes
        norm = np.sqrt(np.array([squares[good].sum(), float(ngood)]))
        np.multiply(ranks, w, out=design[:, 0])
        design[:, 1] = w
        design /= norm
        coef = np.linalg.lstsq(design, samples * w, rcond)[0] / norm
        slope = coef[0]
        resid = samples - (coef[0] * ranks + coef[1])
        threshold = _ZS_KREJ * resid[good].std()
        bad = ~good
        bad[(resid < -threshold) | (resid > threshold)] = True
        good = ~np.convolve(bad, kernel, mode="same")
        last_ngood, ngood = ngood, int(np.count_nonzero(good))
    if ngood < minpix:
        return lo, hi
    slope = slope / _ZS_CONTRAST
    centre = (npix - 1) // 2
    half = npix // 2
    median = samples[half] if npix % 2 else (samples[half - 1] + samples[half]) / 2.0
    return max(lo, median - (centre - 1) * slope), min(hi, median + (npix - centre) * slope)


def stretch_to_uint8(panel: NDArray[np.floating], valid: NDArray[np.bool_] | None = None, *,
                     stretch: str = "zscale") -> NDArray[np.uint8]:
    """Map one stamp to 0..255 for display.

    Parameters
    ----------
    panel : numpy.ndarray
        (ny, nx) pixel values.
    valid : numpy.ndarray or None
        (ny, nx) bool; invalid pixels are ignored for the limits and drawn black.
    stretch : {"zscale", "asinh"}
        ``"zscale"``: linear between the IRAF zscale limits (astropy ``ZScaleInterval``);
        ``"asinh"``: the 0.5-99.5 percentile interval then an asinh stretch (a = 0.1), which
        keeps both a faint residual and a bright core visible.

    Returns
    -------
    numpy.ndarray
        (ny, nx) uint8.
    """
    if stretch not in STRETCHES:
        raise ValueError(f"stretch must be one of {STRETCHES}, got {stretch!r}")
    data = np.asarray(panel, dtype=np.float64)
    ok = np.isfinite(data) if valid is None else (np.asarray(valid, bool) & np.isfinite(data))
    out = np.zeros(data.shape, dtype=np.uint8)
    if not ok.any():
        return out
    values = data[ok]
    if stretch == "zscale":
        lo, hi = zscale_limits(values)
    else:
        lo, hi = PercentileInterval(99.0).get_limits(values)
    if not hi > lo:
        lo, hi = float(values.min()), float(values.max())
    if not hi > lo:
        out[ok] = 128
        return out
    scaled = np.clip((data - lo) / (hi - lo), 0.0, 1.0)
    if stretch == "asinh":
        scaled = AsinhStretch(a=0.1)(scaled, clip=True)
    out[ok] = np.round(255.0 * scaled[ok]).astype(np.uint8)
    return out
