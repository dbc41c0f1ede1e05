"""Small spherical helpers for positional queries (degrees throughout)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from desgw.util.sphere import angular_separation_deg, mean_position

__all__ = ["angular_separation_deg", "mean_position", "radec_box"]


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
