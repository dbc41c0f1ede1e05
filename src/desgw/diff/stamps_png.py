"""A small grayscale PNG encoder and the display stretches of candidate stamps.

Pure numpy + zlib (no imaging library needed): 8-bit grayscale, no interlace, filter type 0
on every row. Used by :func:`desgw.diff.stamps.write_stamps_png`.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from astropy.visualization import AsinhStretch, PercentileInterval, ZScaleInterval
from numpy.typing import NDArray

__all__ = ["STRETCHES", "encode_png_gray", "stretch_to_uint8"]

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
        lo, hi = ZScaleInterval().get_limits(values)
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
