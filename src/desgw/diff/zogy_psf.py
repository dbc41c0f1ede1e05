"""PSF helpers of the ZOGY subtraction: constant PSFs, stamp geometry and the tiled PSF of D.

The subtraction asks a PSF for a normalised stamp at a CCD position through a ``render(x, y,
size=None)`` method (as :class:`desgw.se.psf.PSFModel` has). :class:`ConstantPSF` wraps a fixed
stamp in that interface, :class:`TiledPSF` is the PSF of the difference image, one stamp per
subtraction tile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from scipy import fft as sfft

__all__ = [
    "ConstantPSF",
    "PSFSource",
    "TiledPSF",
    "as_psf_source",
    "fit_stamp",
    "fourier_shift",
    "stamp_fwhm",
    "stamp_moments",
]


class PSFSource(Protocol):
    """Anything that renders a normalised PSF stamp at a 0-based CCD position."""

    def render(self, x: float, y: float, *, size: int | None = None, dx: float = 0.0,
               dy: float = 0.0) -> np.ndarray:  # pragma: no cover - protocol
        ...


def fit_stamp(stamp: np.ndarray, size: int) -> np.ndarray:
    """Crop or zero-pad an odd square stamp about its central pixel to ``size`` (odd).

    Returns a float64 copy normalised to sum 1.
    """
    stamp = np.asarray(stamp, dtype=np.float64)
    n = stamp.shape[0]
    if stamp.ndim != 2 or stamp.shape[1] != n or n % 2 == 0:
        raise ValueError(f"PSF stamp must be square with an odd side, got shape {stamp.shape}")
    if size % 2 == 0:
        raise ValueError(f"stamp size must be odd, got {size}")
    out = np.zeros((size, size))
    h, hs = n // 2, size // 2
    r = min(h, hs)
    out[hs - r:hs + r + 1, hs - r:hs + r + 1] = stamp[h - r:h + r + 1, h - r:h + r + 1]
    total = out.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("PSF stamp has non-positive or non-finite sum")
    return out / total


def fourier_shift(stamp: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Shift a stamp by (dx, dy) pixels (x = column) with a Fourier phase ramp.

    The stamp is zero-padded to a fast FFT length first (a 127-pixel side is prime, and its
    FFT ~10x slower than 128's); what moves past the padded edge wraps around (circular).
    """
    ny, nx = stamp.shape
    py, px = sfft.next_fast_len(ny, real=True), sfft.next_fast_len(nx, real=True)
    # the ramp is separable: two 1-D exponentials and an outer product
    ramp = np.exp(-2j * np.pi * dy * np.fft.fftfreq(py))[:, None] \
        * np.exp(-2j * np.pi * dx * np.fft.rfftfreq(px))[None, :]
    hat = sfft.rfft2(stamp, s=(py, px), workers=1)
    hat *= ramp
    return sfft.irfft2(hat, s=(py, px), workers=1, overwrite_x=True)[:ny, :nx]


@dataclass(frozen=True)
class ConstantPSF:
    """A PSF that is the same everywhere: a normalised, odd, square stamp (float64)."""

    stamp: np.ndarray

    def __post_init__(self) -> None:
        s = np.asarray(self.stamp)
        object.__setattr__(self, "stamp", fit_stamp(s, s.shape[0]))

    def render(self, x: float, y: float, *, size: int | None = None, dx: float = 0.0,
               dy: float = 0.0) -> np.ndarray:
        """The stamp (float32, sum 1), optionally cropped/padded to ``size`` and shifted."""
        img = self.stamp
        if dx != 0.0 or dy != 0.0:
            img = fourier_shift(img, dx, dy)
        if size is not None:
            img = fit_stamp(img, size)
        return (img / img.sum()).astype(np.float32)


def as_psf_source(psf: PSFSource | np.ndarray) -> PSFSource:
    """A 2-D array becomes a :class:`ConstantPSF`; an object with ``render`` is returned as is."""
    if isinstance(psf, np.ndarray):
        return ConstantPSF(psf)
    if not hasattr(psf, "render"):
        raise TypeError("a PSF must be a 2-D stamp or have a render(x, y, size=...) method")
    return psf


def stamp_moments(stamp: np.ndarray) -> tuple[float, float, float]:
    """Second moments (Mxx, Myy, Mxy) in pixel^2 of a stamp about its centroid (positive part)."""
    img = np.clip(np.asarray(stamp, dtype=np.float64), 0, None)
    ny, nx = img.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    t = img.sum()
    xc, yc = (img * xx).sum() / t, (img * yy).sum() / t
    mxx = (img * (xx - xc) ** 2).sum() / t
    myy = (img * (yy - yc) ** 2).sum() / t
    mxy = (img * (xx - xc) * (yy - yc)).sum() / t
    return float(mxx), float(myy), float(mxy)


def stamp_fwhm(stamp: np.ndarray) -> float:
    """FWHM (pixels) of a stamp from the area of the pixels above half its maximum.

    ``FWHM = 2 sqrt(A / pi)`` with ``A`` the half-maximum area, the area interpolated linearly
    between the two pixel levels that bracket it; exact to ~0.1 pix for FWHM >= 2.5 pix.
    """
    img = np.asarray(stamp, dtype=np.float64)
    half = 0.5 * img.max()
    v = np.sort(img.ravel())[::-1]
    n_above = int(np.count_nonzero(v >= half))
    if n_above < len(v):
        lo, hi = v[n_above], v[n_above - 1]
        frac = (hi - half) / (hi - lo) if hi > lo else 0.0
        area = n_above - 0.5 + frac
    else:
        area = float(n_above)
    return float(2.0 * np.sqrt(max(area, 0.5) / np.pi))


@dataclass(frozen=True)
class TiledPSF:
    """The PSF of the difference image: one normalised stamp per subtraction tile.

    Attributes
    ----------
    stamps : numpy.ndarray
        (n_tiles_y, n_tiles_x, size, size) float32 stamps, each sum 1, centred on the central
        pixel.
    tile : int
        Side of a tile interior (pixels); tile ``(j, i)`` covers rows ``j*tile:(j+1)*tile``
        and columns ``i*tile:(i+1)*tile`` of the image.
    image_shape : tuple[int, int]
        (ny, nx) of the image.
    """

    stamps: np.ndarray
    tile: int
    image_shape: tuple[int, int]
    _fwhm: dict[tuple[int, int], float] = field(default_factory=dict, init=False, repr=False,
                                                 compare=False)

    @property
    def size(self) -> int:
        """Side of the stamps (pixels)."""
        return int(self.stamps.shape[-1])

    def tile_index(self, x: float, y: float) -> tuple[int, int]:
        """(j, i) of the tile holding 0-based position (x, y), clipped to the grid."""
        j = int(np.clip(int(np.floor(y)) // self.tile, 0, self.stamps.shape[0] - 1))
        i = int(np.clip(int(np.floor(x)) // self.tile, 0, self.stamps.shape[1] - 1))
        return j, i

    def render(self, x: float, y: float, *, size: int | None = None, dx: float = 0.0,
               dy: float = 0.0) -> np.ndarray:
        """The difference-image PSF at (x, y), shifted by (dx, dy) from the central pixel.

        Returns a (size, size) float32 stamp with sum 1 (default size: :attr:`size`).
        """
        j, i = self.tile_index(x, y)
        img = self.stamps[j, i].astype(np.float64)
        if dx != 0.0 or dy != 0.0:
            img = fourier_shift(img, dx, dy)
        if size is not None and size != self.size:
            img = fit_stamp(img, size)
        return (img / img.sum()).astype(np.float32)

    def fwhm_at(self, x: float, y: float) -> float:
        """FWHM (pixels) of the difference-image PSF at (x, y) (half-maximum area)."""
        key = self.tile_index(x, y)
        if key not in self._fwhm:  # one value per tile: measured once
            self._fwhm[key] = stamp_fwhm(self.stamps[key])
        return self._fwhm[key]
