"""Mask bits of desgw CCD products, with the values DESDM uses (despyfits ``maskbits``).

A pixel's mask value is the OR of the bits that apply. Downstream code tests bits, never values.
"""

from __future__ import annotations

__all__ = [
    "BADPIX", "SAT", "INTERP", "BADAMP", "CRAY", "STAR", "TRAIL", "EDGEBLEED", "SSXTALK", "EDGE",
    "STREAK", "SUSPECT", "NEAREDGE", "BIT_NAMES", "UNUSABLE", "describe",
]

BADPIX = 1  #: known bad pixel (bad-pixel mask / defects)
SAT = 2  #: saturated
INTERP = 4  #: value interpolated over
BADAMP = 8  #: amplifier unusable
CRAY = 16  #: cosmic ray
STAR = 32  #: bright-star halo region
TRAIL = 64  #: bleed trail of a saturated star
EDGEBLEED = 128  #: bleed reaching the serial register edge
SSXTALK = 256  #: crosstalk from a saturated source
EDGE = 512  #: CCD edge region
STREAK = 1024  #: satellite or meteor streak
SUSPECT = 2048  #: suspect (e.g. near saturation, non-linear)
NEAREDGE = 8192  #: near the CCD edge

BIT_NAMES: dict[int, str] = {
    BADPIX: "BADPIX", SAT: "SAT", INTERP: "INTERP", BADAMP: "BADAMP", CRAY: "CRAY", STAR: "STAR",
    TRAIL: "TRAIL", EDGEBLEED: "EDGEBLEED", SSXTALK: "SSXTALK", EDGE: "EDGE", STREAK: "STREAK",
    SUSPECT: "SUSPECT", NEAREDGE: "NEAREDGE",
}

#: Bits that make a pixel unusable for measurement (weight set to 0).
UNUSABLE = BADPIX | SAT | BADAMP | CRAY | TRAIL | EDGEBLEED | EDGE | STREAK


def describe(value: int) -> list[str]:
    """Names of the bits set in a mask value, lowest bit first."""
    return [name for bit, name in sorted(BIT_NAMES.items()) if value & bit]
