"""Fast reading of FITS binary tables (desgw's catalogs) with cfitsio.

:func:`read_table` gives the same :class:`~astropy.table.Table` as
:func:`desgw.io.products.read_fits_table` (columns, dtypes, units, header keywords in
``meta``) in about a quarter of the CPU time: astropy builds a ``Column`` object per FITS
column and parses every header card through its configuration machinery, ~29 ms per
single-epoch catalog against ~7 ms here. The exposure calibration reads 60 of them on the
critical path. Any file cfitsio cannot read goes through the astropy reader, so damaged input
still gets its typed error (:class:`~desgw.errors.CorruptFileError`,
:class:`~desgw.errors.MissingFileError`) naming the file and HDU.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

__all__ = ["read_table"]

log = logging.getLogger(__name__)

#: Header keywords that describe the table's layout, not its content (astropy leaves them
#: out of ``Table.meta`` too).
_STRUCTURAL = re.compile(r"^(XTENSION|BITPIX|NAXIS\d*|PCOUNT|GCOUNT|TFIELDS|THEAP|"
                         r"T(TYPE|FORM|UNIT|DIM|NULL|SCAL|ZERO|DISP|TYP|CTYP|CUNI|CRPX|CRVL|"
                         r"CDLT|CROT|LMIN|LMAX|DMIN|DMAX)\d+)$")


@functools.lru_cache(maxsize=256)
def _unit(text: str) -> Any:
    from astropy import units as u

    return u.Unit(text, format="fits", parse_strict="silent")


def read_table(path: str | os.PathLike[str], hdu: int | str | None = None) -> Table:
    """Read a FITS binary table (default: the first table HDU) with its header in ``meta``.

    Parameters
    ----------
    path : path
        FITS file.
    hdu : int, str or None
        HDU index or EXTNAME; None: the first binary-table HDU.

    Returns
    -------
    astropy.table.Table
        Columns as stored (FITS big-endian dtypes, vector columns as 2-D), ``TUNIT`` as units,
        non-structural header keywords in ``meta``.

    Raises
    ------
    MissingFileError, CorruptFileError
        Missing or unreadable file, or no table HDU (from the astropy reader, which takes over
        whenever cfitsio fails).
    """
    import fitsio

    p = Path(path)
    try:
        with fitsio.FITS(str(p)) as f:
            if hdu is None:
                ext = next((h for h in f if h.get_exttype() == "BINARY_TBL"), None)
            else:
                ext = f[hdu]
                if ext.get_exttype() != "BINARY_TBL":
                    ext = None
            if ext is None:
                raise ValueError("no binary table HDU")
            data = ext.read()
            header = ext.read_header()
    except (OSError, ValueError, KeyError, IndexError) as exc:  # the astropy reader says what
        log.debug("%s: cfitsio could not read the table (%s); reading with astropy", p, exc)
        from .products import read_fits_table

        return read_fits_table(p, hdu)
    table = Table(np.asarray(data), copy=False)
    names = list(table.colnames)
    for i, name in enumerate(names, start=1):
        unit = header.get(f"TUNIT{i}")
        if unit:
            table[name].unit = _unit(str(unit).strip())
    for key in header:
        if key in ("", "COMMENT", "HISTORY") or _STRUCTURAL.match(key):
            continue
        table.meta[key] = header[key]
    return table
