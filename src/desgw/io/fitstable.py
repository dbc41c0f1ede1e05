"""Fast reading of FITS binary tables (desgw's catalogs) with cfitsio, and fast writing of
their bytes (:func:`table_hdu_bytes`).

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

__all__ = ["empty_primary_bytes", "read_table", "table_hdu_bytes"]

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


# ----------------------------------------------------------------------------- writing
#: Column dtypes the direct encoder takes (anything else is written by astropy).
_DIRECT_KINDS = {"b": (1,), "i": (2, 4, 8), "f": (4, 8)}
_FITS_BLOCK = 2880
#: FITS logical values as astropy writes them.
_TRUE, _FALSE = np.uint8(ord("T")), np.uint8(ord("F"))


def _schema_key(table: Table) -> tuple[Any, ...] | None:
    """What the column cards of ``table``'s binary-table header depend on (None: a table
    the direct encoder does not take: mixin columns, TDISP formats, coordinate meta, columns
    of other dtypes)."""
    from astropy.table import Column, MaskedColumn

    if table.has_mixin_columns or "__coordinate_columns__" in table.meta:
        return None
    key: list[Any] = []
    for name in table.colnames:
        col = table[name]
        if type(col) not in (Column, MaskedColumn) or col.info.format is not None:
            return None
        dt = col.dtype
        if dt.kind not in _DIRECT_KINDS or dt.itemsize not in _DIRECT_KINDS[dt.kind]:
            return None
        masked = isinstance(col, MaskedColumn)
        fill = None
        if masked:
            fill = repr(col.fill_value)  # a string: NaN never equals itself
        key.append((name, dt.str, col.shape[1:], None if col.unit is None else str(col.unit),
                    masked, fill))
    return tuple(key)


#: Column cards by schema (:func:`_schema_key`), built once per process.
_COLUMN_CARDS: dict[tuple[Any, ...], tuple[str, int]] = {}
_COLUMN_CARDS_MAX = 64


def _column_cards(key: tuple[Any, ...], table: Table) -> tuple[str, int]:
    """The header (80-character cards, no END) of an empty table of ``table``'s schema as
    :func:`astropy.io.fits.table_to_hdu` writes it (NAXIS1, TTYPE/TFORM/TDIM/TUNIT/TNULL), and
    its row size in bytes; ``key`` is the schema."""
    found = _COLUMN_CARDS.get(key)
    if found is None:
        from astropy.io import fits

        empty = table[:0]
        empty.meta.clear()
        hdu = fits.table_to_hdu(empty)
        found = (hdu.header.tostring(padding=False, endcard=False), int(hdu.header["NAXIS1"]))
        if len(_COLUMN_CARDS) >= _COLUMN_CARDS_MAX:
            _COLUMN_CARDS.pop(next(iter(_COLUMN_CARDS)))
        _COLUMN_CARDS[key] = found
    return found


def _filled_array(table: Table) -> np.ndarray:
    """The table's rows as one structured array, masked values filled as
    :func:`astropy.io.fits.table_to_hdu` fills them (NaN for floats whose fill value is the
    numpy default, the column's fill value otherwise: TNULL of an integer column)."""
    arr = table.as_array()
    if not isinstance(arr, np.ma.MaskedArray):
        return np.asarray(arr)
    default = np.ma.default_fill_value(arr.dtype)
    for name in arr.dtype.names or ():
        base = arr.dtype[name].subdtype[0] if arr.dtype[name].subdtype else arr.dtype[name]
        if np.all(arr.fill_value[name] == default[name]) and base.kind == "f":
            arr.fill_value[name] = np.nan
    return np.asarray(arr.filled())


def _rows_bytes(arr: np.ndarray, row_bytes: int) -> bytes:
    """The binary-table rows of a structured array: big-endian, packed, logicals as T/F."""
    assert arr.dtype.names is not None
    fields = []
    for name in arr.dtype.names:
        dt = arr.dtype[name]
        base, shape = (dt.subdtype if dt.subdtype else (dt, ()))
        out_base = np.dtype(np.uint8) if base.kind == "b" else base.newbyteorder(">")
        fields.append((name, out_base, shape))
    out = np.empty(len(arr), dtype=np.dtype(fields))
    if out.dtype.itemsize != row_bytes:
        raise ValueError(f"row of {out.dtype.itemsize} bytes, the header says {row_bytes}")
    for name in arr.dtype.names:
        col = arr[name]
        if col.dtype.kind == "b":
            out[name] = np.where(col, _TRUE, _FALSE)
        else:
            out[name] = col
    return out.tobytes()


def table_hdu_bytes(table: Table, header: Any = None, *, extname: str = "OBJECTS"
                    ) -> bytes | None:
    """A binary-table extension HDU (header, rows, padding) as bytes, the same bytes astropy
    writes for ``fits.table_to_hdu(table)`` named ``extname`` with ``header``'s cards (cards
    already in the table header replaced in place, others appended); None for a table this
    encoder does not take (the caller writes it with astropy).

    Taken: plain and masked columns of bool, int16/32/64 and float32/64 values, scalar or
    fixed-shape, with units, and ``meta`` that astropy stores as header cards. The column
    cards of a schema are built once per process by astropy (from an empty table) and reused,
    the rows are packed with numpy: ~5 ms against ~40 ms for a 43-column catalog of 800 rows.

    Parameters
    ----------
    table : astropy.table.Table
    header : astropy.io.fits.Header or None
        Extra keywords (no structural ones: pass it through
        :func:`desgw.io._fitsutil.clean_header`).
    extname : str
        EXTNAME of the HDU.
    """
    from astropy.io import fits
    from astropy.io.fits.connect import REMOVE_KEYWORDS, is_column_keyword

    key = _schema_key(table)
    if key is None:
        return None
    cards, row_bytes = _column_cards(key, table)
    h = fits.Header.fromstring(cards)
    h["NAXIS2"] = len(table)
    for name, value in table.meta.items():  # as fits.table_to_hdu stores meta
        if is_column_keyword(name.upper()) or name.upper() in REMOVE_KEYWORDS:
            return None  # astropy warns and skips it: leave such a table to astropy
        name = "comment" if name == "comments" else name
        try:
            if isinstance(value, list):
                for item in value:
                    h.append((name, item))
            else:
                h[name] = value
        except ValueError:
            return None
    name = extname if fits.conf.extension_name_case_sensitive else extname.upper()
    if "EXTNAME" in h:  # as astropy's HDU name setter does
        h["EXTNAME"] = name
    else:
        h["EXTNAME"] = (name, "extension name")
    if header is not None:
        for card in header.cards:
            if card.keyword not in h or card.keyword in ("COMMENT", "HISTORY"):
                h.append(card, end=True)
            else:
                h[card.keyword] = (card.value, card.comment)
    rows = _rows_bytes(_filled_array(table), row_bytes)
    return b"".join((h.tostring().encode("ascii"), rows,
                     bytes(-len(rows) % _FITS_BLOCK)))


@functools.lru_cache(maxsize=1)
def empty_primary_bytes() -> bytes:
    """An empty primary HDU as astropy writes ``fits.PrimaryHDU()`` before extensions."""
    import io

    from astropy.io import fits

    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU()]).writeto(buf)
    text = buf.getvalue()
    return text
