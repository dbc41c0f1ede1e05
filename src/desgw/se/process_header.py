"""The FITS header of a processed CCD (the SCI header of the immask product).

:func:`ccd_product_header` collects, in the keywords the original products and
:func:`desgw.io.instcal.read_instcal` use, what single-epoch processing measured: exposure and
CCD identity, units (electrons, so ``GAIN = 1``), saturation, sky, seeing, PSF, astrometric
solution statistics, zeropoint, QC verdict, and the settings hash. The WCS cards of the fitted
solution are appended (TAN-SIP, 1-based CRPIX as FITS wants; pixel coordinates of the
trimmed image).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from astropy.io import fits
from astropy.wcs import WCS

__all__ = ["ccd_product_header"]


def _card_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # FITS has no NaN: an undefined value
    return value


def ccd_product_header(base: fits.Header | None, wcs: WCS,
                       values: Mapping[str, tuple[Any, str]]) -> fits.Header:
    """Header of a processed CCD.

    Parameters
    ----------
    base : astropy.io.fits.Header or None
        Keywords to start from (e.g. a few of the raw CCD header: DETPOS, CCDNUM...).
    wcs : astropy.wcs.WCS
        The fitted WCS (0-based trimmed pixels); written with ``relax=True`` (SIP kept).
    values : mapping of str to (value, comment)
        Keywords to set; a non-finite float is written as an undefined value.

    Returns
    -------
    astropy.io.fits.Header
    """
    h = fits.Header()
    if base is not None:
        for card in base.cards:
            if card.keyword and card.keyword not in ("COMMENT", "HISTORY"):
                h[card.keyword] = (card.value, card.comment)
    for key, (value, comment) in values.items():
        h[key] = (_card_value(value), comment)
    h.extend(wcs.to_header(relax=True), update=True)
    return h
