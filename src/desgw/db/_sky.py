"""Small spherical helpers for positional queries (degrees throughout)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ..refcat.geometry import angular_separation_deg

__all__ = ["angular_separation_deg", "mean_position", "radec_box"]


def mean_position(ra: ArrayLike, dec: ArrayLike) -> tuple[float, float]:
    """Mean direction (deg) of positions, averaged as unit vectors (safe across RA = 0)."""
    ra_a, dec_a = np.atleast_1d(np.asarray(ra, float)), np.atleast_1d(np.asarray(dec, float))
    if ra_a.size == 1:
        return float(ra_a[0]) % 360.0, float(dec_a[0])
    r, d = np.radians(ra_a), np.radians(dec_a)
    v = np.stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)]).sum(axis=1)
    ra_m = float(np.degrees(np.arctan2(v[1], v[0])) % 360.0)
    dec_m = float(np.degrees(np.arctan2(v[2], np.hypot(v[0], v[1]))))
    return ra_m, dec_m


def radec_box(ra: ArrayLike, dec: ArrayLike, pad_deg: float
              ) -> tuple[float, float, list[tuple[float, float]] | None]:
    """A Dec range and RA windows that contain every point within ``pad_deg`` of the input.

    Returns
    -------
    dec_lo, dec_hi : float
        Dec range (deg).
    ra_windows : list of (lo, hi) or None
        RA intervals in [0, 360] (two when the box crosses RA = 0), or None when every RA
        must be searched (near a pole or for a batch spread around the sky).
    """
    ra = np.atleast_1d(np.asarray(ra, float)) % 360.0
    dec = np.atleast_1d(np.asarray(dec, float))
    dec_lo, dec_hi = float(dec.min() - pad_deg), float(dec.max() + pad_deg)
    extreme = max(abs(dec_lo), abs(dec_hi))
    if extreme >= 89.0:
        return dec_lo, dec_hi, None
    pad_ra = pad_deg / np.cos(np.radians(extreme))
    ref = float(ra[0])
    offset = (ra - ref + 180.0) % 360.0 - 180.0
    lo = ref + float(offset.min()) - pad_ra
    hi = ref + float(offset.max()) + pad_ra
    width = hi - lo
    if width >= 180.0:
        return dec_lo, dec_hi, None
    lo %= 360.0
    hi = lo + width
    if hi <= 360.0:
        return dec_lo, dec_hi, [(lo, hi)]
    return dec_lo, dec_hi, [(lo, 360.0), (0.0, hi - 360.0)]
