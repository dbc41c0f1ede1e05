"""The ``{expnum}.out`` file: the sky corners of every CCD of an exposure.


``{expnum}.out`` format (version 1, text, written by :func:`format_corners_out`)::

    # desgw CCD corners, format 1
    # expnum ccdnum band ra1 dec1 ra2 dec2 ra3 dec3 ra4 dec4
    # corners (deg, ICRS) at 1-based pixels (16,16) (2033,16) (2033,4081) (16,4081)
    668439 1 i 36.8127421 -4.5678192 36.9063017 -4.5681113 ...
    668439 3 i ...

One line per CCD, whitespace-separated: exposure number, CCD number, band (``-`` when not
known), then the RA, Dec pairs of the four corners in the order above (degrees, 7 decimals).
Lines starting with ``#`` and blank lines are ignored. As in the original, the corners are 15
pixels inside the trimmed 2048 x 4096 CCD (pixels 16 and 2033 in x, 16 and 4081 in y).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from desgw.errors import DesgwInputError, MissingFileError
from desgw.instrument.camera import CORNER_PIXELS_1BASED
from desgw.io.atomic import atomic_write_text

__all__ = [
    "CORNER_PIXELS",
    "CCDCorners",
    "CornersOut",
    "corners_array",
    "format_corners_out",
    "read_corners_out",
    "write_corners_out",
]

#: 1-based (x, y) pixels of the CCD corners in ``{expnum}.out``, in file order.
CORNER_PIXELS: tuple[tuple[int, int], ...] = CORNER_PIXELS_1BASED

#: Corners of one CCD: (ra[4], dec[4]) in degrees.
CCDCorners = tuple[tuple[float, float, float, float], tuple[float, float, float, float]]


def corners_array(value: Any, label: str) -> NDArray[np.float64]:
    """Corners as a (2, 4) float64 array ``[ra[4], dec[4]]`` (deg); ValueError naming ``label``
    when the shape is wrong or a value is not finite."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (2, 4) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{label}: corners must be (ra[4], dec[4]) of finite degrees, "
                         f"got shape {arr.shape}")
    return arr


@dataclass(frozen=True)
class CornersOut:
    """Contents of an ``{expnum}.out`` file.

    Attributes
    ----------
    expnum : int
        Exposure number.
    band : str or None
        Band (None when the file says ``-``).
    corners : dict of int to (ra[4], dec[4])
        CCD number -> corner coordinates (deg), in :data:`CORNER_PIXELS` order.
    """

    expnum: int
    band: str | None
    corners: dict[int, CCDCorners]


_HEADER = ("# desgw CCD corners, format 1\n"
           "# expnum ccdnum band ra1 dec1 ra2 dec2 ra3 dec3 ra4 dec4\n"
           "# corners (deg, ICRS) at 1-based pixels (16,16) (2033,16) (2033,4081) (16,4081)\n")


def format_corners_out(expnum: int, corners: Mapping[int, Any], *, band: str | None = None
                       ) -> str:
    """Text of the ``{expnum}.out`` file (format in the module docstring), CCDs in order."""
    tag = band if band else "-"
    if any(ch.isspace() for ch in tag):
        raise ValueError(f"band {band!r} contains white space")
    lines = [_HEADER.rstrip("\n")]
    for ccd in sorted(int(k) for k in corners):
        c = corners_array(corners[ccd], f"CCD {ccd}")
        values = " ".join(f"{c[0, i] % 360.0:.7f} {c[1, i]:.7f}" for i in range(4))
        lines.append(f"{int(expnum)} {ccd} {tag} {values}")
    return "\n".join(lines) + "\n"


def write_corners_out(path: str | os.PathLike[str], expnum: int, corners: Mapping[int, Any], *,
                      band: str | None = None) -> Path:
    """Write ``{expnum}.out`` atomically; return the path."""
    return atomic_write_text(path, format_corners_out(expnum, corners, band=band))


def read_corners_out(path: str | os.PathLike[str]) -> CornersOut:
    """Read an ``{expnum}.out`` file (format in the module docstring).

    Raises
    ------
    MissingFileError
        If the file does not exist.
    DesgwInputError
        For a malformed line, a CCD listed twice, lines of different exposures or bands,
        or a file with no CCD (names the file and the line).
    """
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(p, None, "CCD corners file not found")
    expnum: int | None = None
    band: str | None = None
    corners: dict[int, CCDCorners] = {}
    for number, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split()
        if len(parts) != 11:
            raise DesgwInputError(p, None, f"line {number}: expected 11 columns (expnum ccdnum "
                                  f"band and 4 RA/Dec pairs), got {len(parts)}")
        try:
            e, ccd = int(parts[0]), int(parts[1])
            values = [float(v) for v in parts[3:]]
        except ValueError:
            raise DesgwInputError(p, None, f"line {number}: not numbers: {text!r}") from None
        ra, dec = values[0::2], values[1::2]
        if not all(math.isfinite(v) for v in values) or not all(-90 <= d <= 90 for d in dec):
            raise DesgwInputError(p, None, f"line {number}: corner coordinates out of range")
        this_band = None if parts[2] == "-" else parts[2]
        if expnum is None:
            expnum, band = e, this_band
        elif e != expnum or this_band != band:
            raise DesgwInputError(p, None, f"line {number}: exposure {e} band {parts[2]} differs "
                                  f"from the first line's {expnum} {band or '-'}")
        if ccd in corners:
            raise DesgwInputError(p, None, f"line {number}: CCD {ccd} listed twice")
        corners[ccd] = (tuple(v % 360.0 for v in ra), tuple(dec))  # type: ignore[assignment]
    if expnum is None:
        raise DesgwInputError(p, None, "no CCD lines")
    return CornersOut(expnum, band, corners)
