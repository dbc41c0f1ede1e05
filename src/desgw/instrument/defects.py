"""DECam bad-pixel boxes from the DES bad-pixel masks (``data/defects/<detpos>/<start>.ecsv``).

Each file lists boxes (x0, y0, width, height), 0-based pixels of the trimmed CCD image, valid from
the date in its name until the next file's date.
"""

from __future__ import annotations

import functools
from datetime import datetime

import numpy as np

from .camera import CCD_SHAPE, _data_file, get_ccd

__all__ = ["defect_boxes", "defect_mask", "defect_epochs"]


def _parse_stamp(stem: str) -> datetime:
    return datetime.strptime(stem.upper(), "%Y%m%dT%H%M")


@functools.cache
def defect_epochs(ccdnum: int) -> tuple[tuple[datetime, str], ...]:
    """Validity start dates and file names of the defect lists of one CCD, oldest first."""
    detpos = get_ccd(ccdnum).detpos.lower()
    folder = _data_file(f"defects/{detpos}")
    entries = [(_parse_stamp(p.name.split(".")[0]), p.name) for p in folder.iterdir()
               if p.name.endswith(".ecsv")]
    return tuple(sorted(entries))


@functools.cache
def _read_boxes(ccdnum: int, name: str) -> np.ndarray:
    from astropy.table import Table

    detpos = get_ccd(ccdnum).detpos.lower()
    with _data_file(f"defects/{detpos}/{name}").open() as fh:
        table = Table.read(fh.read(), format="ascii.ecsv")
    return np.column_stack([np.asarray(table[c], dtype=np.int32) for c in ("x0", "y0", "width", "height")])


def defect_boxes(ccdnum: int, when: datetime | None = None) -> np.ndarray:
    """Bad-pixel boxes of a CCD valid at a date.

    Parameters
    ----------
    ccdnum : int
        CCDNUM 1..62.
    when : datetime, optional
        Observation date (UTC); the newest list is used when omitted.

    Returns
    -------
    ndarray, shape (N, 4), int32
        Columns ``x0, y0, width, height`` in trimmed-image pixels (0-based).
    """
    epochs = defect_epochs(ccdnum)
    chosen = epochs[-1][1]
    if when is not None:
        valid = [name for start, name in epochs if start <= when.replace(tzinfo=None)]
        chosen = valid[-1] if valid else epochs[0][1]
    return _read_boxes(ccdnum, chosen)


def defect_mask(ccdnum: int, when: datetime | None = None) -> np.ndarray:
    """Boolean image (4096, 2048) that is True on the CCD's known bad pixels."""
    mask = np.zeros(CCD_SHAPE, dtype=bool)
    for x0, y0, w, h in defect_boxes(ccdnum, when):
        mask[max(y0, 0):y0 + h, max(x0, 0):x0 + w] = True
    return mask
