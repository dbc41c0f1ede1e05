"""DECam's photometric bands as data, and the one check of a band argument."""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["DES_BANDS", "DECAM_BANDS", "validate_band"]

#: The DES survey bands (g, r, i, z, Y), in wavelength order.
DES_BANDS: tuple[str, ...] = ("g", "r", "i", "z", "Y")

#: DECam's broad-band filters used by DES-GW: the DES bands and u (the order of the original
#: DAGMaker configuration's t_eff cuts).
DECAM_BANDS: tuple[str, ...] = (*DES_BANDS, "u")

_FILTER_NAME = re.compile(r"^[A-Za-z]{1,3}$")


def validate_band(band: object, allowed: Sequence[str] | None = DES_BANDS, *,
               what: str = "band") -> str:
    """``band`` if it is one of ``allowed``, else a :class:`ValueError` listing them.

    Parameters
    ----------
    band : object
        The band argument to check (``"r"``).
    allowed : sequence of str or None, optional
        Accepted bands (default the DES bands); None accepts any short filter name (1-3
        letters, as in product file names).
    what : str, optional
        What the band is for, in the message (``"band with quality references"``).

    Returns
    -------
    str
        ``band``.

    Raises
    ------
    ValueError
        ``band`` is not accepted.
    """
    if allowed is None:
        if not isinstance(band, str) or not _FILTER_NAME.match(band):
            raise ValueError(f"{what} must be a short filter name like 'r' or 'Y', got {band!r}")
        return band
    if not isinstance(band, str) or band not in allowed:
        raise ValueError(f"unknown {what} {band!r}; expected one of {', '.join(allowed)}")
    return band
