"""Writers and readers of desgw products: immask images, FITS / CSV / Parquet tables.

All writers are atomic (:func:`desgw.io.atomic.atomic_write_path`).

The immask file (``D{expnum:08d}_{band}_{ccd:02d}_r{R}p{P}_immask.fits.fz``) holds an empty
primary HDU and three tile-compressed image HDUs:

* ``SCI``: float32 science image, RICE_1 with the absolute quantisation step sigma / 16
  (sigma = 1 / sqrt(median positive weight): the known noise, no per-row estimate; never
  more than the scatter measured on the image itself, should the weights be on another
  scale) and
  ``SUBTRACTIVE_DITHER_2`` (dithered, so the quantisation error has zero mean; exact zeros
  kept exactly), as DESDM writes SCI.
* ``MSK``: integer bit mask, RICE_1 lossless (int16 when every value fits, else int32).
* ``WGT``: float32 inverse variance, RICE_1 with the absolute step (smallest positive
  weight) / 1024 and the same dither: no pixel's weight moves by more than 0.05 %, zeros
  stay zero.

Encoded by :mod:`desgw.io.rice` (numba; the same bytes cfitsio writes, a third of its CPU
time) and assembled by :mod:`desgw.io.fitscodec` (where the codecs and their timings are);
readable by astropy and fitsio. SCI quantisation error rms = sigma / 55 with zero mean:
aperture and PSF fluxes move by ~2 % of their own noise, in either direction, and their
errors by < 0.05 % (``tests/io/test_codec_photometry.py``). ``quantize_level=0`` stores SCI
and WGT losslessly (GZIP_2).
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning

from desgw.errors import CorruptFileError, DataTypeError, HeaderError, MissingFileError
from desgw.util.jsonsafe import json_safe

from ._fitsutil import (
    STRUCTURAL_KEYWORDS,
    clean_header,
    hdu_label,
    iter_hdus_checked,
    open_fits,
    read_hdu_pixels,
)
from .atomic import atomic_write_bytes, atomic_write_path
from .fitscodec import (
    NOISE_QUANTIZE_LEVEL,
    WEIGHT_QUANTIZE_LEVEL,
    Plane,
    noise_step,
    write_planes,
)
from .fitstable import empty_primary_bytes, table_hdu_bytes

__all__ = [
    "IMMASK_QUANTIZE_LEVEL",
    "ImMask",
    "immask_sci_header",
    "write_immask",
    "read_immask",
    "astropy_table_hdu",
    "write_fits_table",
    "read_fits_table",
    "write_csv",
    "read_csv",
    "write_parquet",
    "read_parquet",
]

log = logging.getLogger(__name__)

#: Quantisation level q of SCI (noise / q = quantisation step).
IMMASK_QUANTIZE_LEVEL: float = NOISE_QUANTIZE_LEVEL

_WCS_PREFIXES = ("CTYPE", "CRPIX", "CRVAL", "CD1_", "CD2_", "CDELT", "CUNIT", "PC1_", "PC2_",
                 "PV1_", "PV2_", "A_", "B_", "AP_", "BP_", "LONPOLE", "LATPOLE", "RADESYS",
                 "EQUINOX", "WCSAXES", "MJDREF", "DATEREF")


#: Keywords the SCI header of an immask written with a WCS does not take from its input.
_DROP_PREFIXES = ("TTYPE", "TFORM", *_WCS_PREFIXES)


@dataclass(frozen=True)
class ImMask:
    """A CCD's science, mask and weight images.

    Attributes
    ----------
    sci : numpy.ndarray
        float32 science image, shape (ny, nx) (typically (4096, 2048)).
    msk : numpy.ndarray
        int32 bit mask (``desgw.se.maskbits``), same shape.
    wgt : numpy.ndarray
        float32 inverse variance, same shape; 0 = unusable.
    header : astropy.io.fits.Header
        The SCI extension header (without structural keywords).
    wcs : astropy.wcs.WCS or None
        The celestial WCS from that header, if it has one, for the pixels read (shifted to
        the cut-out when only a part was read).
    origin : tuple[int, int]
        (x0, y0): full-CCD pixel of the first pixel read ((0, 0) unless a part was read).
    """

    sci: np.ndarray = field(repr=False)
    msk: np.ndarray = field(repr=False)
    wgt: np.ndarray = field(repr=False)
    header: fits.Header = field(repr=False)
    wcs: WCS | None = field(repr=False)
    origin: tuple[int, int] = (0, 0)

    @property
    def shape(self) -> tuple[int, int]:
        """Numpy shape of the images."""
        return self.sci.shape


def _wcs_cards(header: fits.Header) -> fits.Header:
    out = fits.Header()
    for card in header.cards:
        if card.keyword.startswith(_WCS_PREFIXES):
            out.append(card, end=True)
    return out


def _float_image(arr: np.ndarray, what: str, path: Path) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 2:
        raise DataTypeError(path, what, f"{what} must be 2-D, got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise DataTypeError(path, what, f"{what} must be numeric, got {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def write_immask(path: str | os.PathLike[str], sci: np.ndarray, msk: np.ndarray,
                 wgt: np.ndarray, header: fits.Header | None = None, wcs: WCS | None = None, *,
                 quantize_level: float = IMMASK_QUANTIZE_LEVEL, seed: int = 1) -> Path:
    """Write an immask file (SCI, MSK, WGT), tile-compressed, atomically.

    Parameters
    ----------
    path : path
        Output file, normally ``..._immask.fits.fz`` (any name is written compressed).
    sci : numpy.ndarray
        Science image (any float, stored float32), shape (ny, nx).
    msk : numpy.ndarray
        Integer bit mask, same shape, values >= 0.
    wgt : numpy.ndarray
        Inverse-variance weight, same shape, >= 0.
    header : astropy.io.fits.Header, optional
        Keywords for the SCI header (exposure, CCD, zeropoint...). WCS keywords in it are also
        copied to MSK and WGT.
    wcs : astropy.wcs.WCS, optional
        If given, its header (``relax=True``, TPV/SIP kept) replaces the WCS keywords.
    quantize_level : float
        q of SCI: RICE_1 with the absolute step sigma / q, sigma = 1 / sqrt(median positive
        weight), SUBTRACTIVE_DITHER_2; WGT then RICE_1 with the step (smallest positive
        weight) / 1024 (:mod:`desgw.io.fitscodec`). ``0`` stores SCI and WGT losslessly
        (GZIP_2). MSK is always lossless (RICE_1).
    seed : int
        Dither seed (ZDITHER0, 1..10000), fixed so that output is reproducible.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    DataTypeError
        Arrays not 2-D, of different shapes, a non-integer or negative mask, or negative or
        non-finite weights.
    """
    final = Path(path)
    s = _float_image(sci, "SCI", final)
    w = _float_image(wgt, "WGT", final)
    m = np.asarray(msk)
    if m.ndim != 2 or not np.issubdtype(m.dtype, np.integer):
        raise DataTypeError(final, "MSK", f"MSK must be a 2-D integer array, got {m.dtype} "
                            f"shape {m.shape}")
    if s.shape != m.shape or s.shape != w.shape:
        raise DataTypeError(final, None, f"SCI {s.shape}, MSK {m.shape} and WGT {w.shape} "
                            "shapes differ")
    if m.size and m.min() < 0:
        raise DataTypeError(final, "MSK", "MSK has negative values")
    from .rice import weight_stats  # numba: imported when first needed

    w_finite, w_min, w_pos_min = weight_stats(w)
    if not w_finite or w_min < 0:
        raise DataTypeError(final, "WGT", "WGT must be finite and >= 0")

    sci_hdr = immask_sci_header(header, wcs)
    wcs_hdr = _wcs_cards(sci_hdr)
    planes = [
        Plane("SCI", s, sci_hdr,
              noise_step(w, quantize_level, image=s) if quantize_level else 0.0, seed),
        Plane("MSK", m, wcs_hdr),
        Plane("WGT", w, wcs_hdr, w_pos_min / WEIGHT_QUANTIZE_LEVEL
              if quantize_level and math.isfinite(w_pos_min) else 0.0, seed),
    ]
    write_planes(final, planes)
    log.debug("wrote immask %s", final)
    return final


def immask_sci_header(header: fits.Header | None, wcs: WCS | None = None) -> fits.Header:
    """The SCI header :func:`write_immask` writes (and :func:`read_immask` gives back):
    ``header`` without structural keywords, its WCS keywords replaced by ``wcs``'s
    (``relax=True``: TPV/SIP kept) when ``wcs`` is given."""
    if wcs is None:
        return clean_header(header)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs_hdr = wcs.to_header(relax=True)
    cards = [] if header is None else [
        c for c in header.cards if c.keyword not in STRUCTURAL_KEYWORDS
        and not c.keyword.startswith(_DROP_PREFIXES)]
    merged = merge_header_cards(cards, wcs_hdr)
    if merged is not None:
        return merged
    sci_hdr = clean_header(header)  # the general case, card by card
    for card in _wcs_cards(sci_hdr).cards:
        del sci_hdr[card.keyword]
    sci_hdr.update(wcs_hdr)
    return sci_hdr


def merge_header_cards(cards: list[fits.Card], update: fits.Header) -> fits.Header | None:
    """``fits.Header(cards)`` updated with ``update``'s cards (``Header.update``: a keyword
    already there gets the new value and comment in place, a new one goes at the end), built
    from the cards' text in one parse instead of card by card (astropy's per-card updates
    cost ~10 ms for a raw CCD header). New keywords go before the commentary cards that end
    ``cards``, as astropy appends them. None in the cases that rule does not cover (commentary
    cards in ``update``, repeated keywords, a blank card at the end of ``cards``): the caller
    then uses ``Header.update``."""
    if cards and cards[-1].keyword == "":
        return None
    commentary = ("", "COMMENT", "HISTORY")
    cut = len(cards)  # new keywords go before the trailing commentary cards, as astropy's
    while cut > 0 and cards[cut - 1].keyword in commentary:
        cut -= 1
    out, tail = list(cards[:cut]), list(cards[cut:])
    where: dict[str, int] = {}
    for i, card in enumerate(out):
        if card.keyword in commentary:
            continue
        if card.keyword in where:
            return None
        where[card.keyword] = i
    for card in update.cards:
        key = card.keyword
        if key in commentary:
            return None
        at = where.get(key)
        if at is None:
            where[key] = len(out)
            out.append(card)
        else:  # as Header._update: value, then comment, set on the card already there
            old = fits.Card.fromstring(out[at].image)
            old.value = card.value
            old.comment = card.comment
            out[at] = old
    return fits.Header.fromstring("".join(c.image for c in out + tail))


def read_immask(path: str | os.PathLike[str], *,
                crop: Callable[[WCS | None, tuple[int, int]], tuple[slice, slice] | None]
                | None = None) -> ImMask:
    """Read an immask file written by :func:`write_immask` (or DESDM).

    Parameters
    ----------
    path : path-like
        The immask file.
    crop : callable or None
        ``crop(wcs, shape)`` -> (rows, columns) slices or None, called with the full CCD's
        WCS and (ny, nx) before any pixel is read: only that part of SCI, MSK and WGT is read
        (for tile-compressed files only the tiles it touches are decompressed) and the
        returned WCS is shifted to it. None (or a None box): the whole CCD.

    Raises
    ------
    MissingFileError, CorruptFileError
        Missing or unreadable file, or no SCI/MSK/WGT HDU.
    DataTypeError
        Wrong pixel types or different shapes.
    HeaderError
        A WCS that cannot be built.
    """
    p = Path(path)
    planes: dict[str, np.ndarray] = {}
    with open_fits(p) as hdul:
        found = {}
        for i, hdu in iter_hdus_checked(hdul, p):
            name = str(hdu.header.get("EXTNAME", "")).strip().upper()
            if name in ("SCI", "MSK", "WGT") and name not in found:
                found[name] = i
        for name in ("SCI", "MSK", "WGT"):
            if name not in found:
                raise CorruptFileError(p, None, f"not an immask file: no {name} HDU")
        sci_hdr = hdul[found["SCI"]].header
        header = clean_header(sci_hdr)
        wcs = product_wcs(header, p)
        box = None
        if crop is not None and sci_hdr.get("NAXIS", 0) == 2:
            box = crop(wcs, (int(sci_hdr["NAXIS2"]), int(sci_hdr["NAXIS1"])))
        for name in ("SCI", "MSK", "WGT"):
            hdu = hdul[found[name]]
            label = hdu_label(found[name], hdu)
            data = read_hdu_pixels(hdu, p, label, box)
            if name == "MSK":
                if not np.issubdtype(data.dtype, np.integer):
                    raise DataTypeError(p, label, f"MSK must be integer, found {data.dtype}")
                planes[name] = data.astype(np.int32, copy=False)
            else:
                if not np.issubdtype(data.dtype, np.floating):
                    raise DataTypeError(p, label, f"{name} must be float, found {data.dtype}")
                planes[name] = data.astype(np.float32, copy=False)
    if not planes["SCI"].shape == planes["MSK"].shape == planes["WGT"].shape:
        raise DataTypeError(p, None, "SCI, MSK and WGT shapes differ: "
                            f"{planes['SCI'].shape}, {planes['MSK'].shape}, {planes['WGT'].shape}")
    origin = (0, 0)
    if box is not None:
        origin = (int(box[1].start or 0), int(box[0].start or 0))
        if wcs is not None:
            wcs = wcs.slice(box)
    return ImMask(planes["SCI"], planes["MSK"], planes["WGT"], header, wcs, origin)


def product_wcs(header: fits.Header, path: str | os.PathLike[str]) -> WCS | None:
    """The WCS of a product's SCI header (None without CTYPE1); HeaderError naming ``path``
    when it cannot be built."""
    if "CTYPE1" not in header:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            return WCS(header, relax=True)
        except Exception as exc:
            raise HeaderError(path, "SCI", f"cannot build a WCS ({exc})",
                              keyword="CTYPE1") from exc


# ----------------------------------------------------------------------------- tables
def _as_table(table: Table | np.ndarray | Mapping[str, Any]) -> Table:
    if isinstance(table, Table):
        return table
    return Table(table)


def astropy_table_hdu(table: Table, header: fits.Header | None = None, *,
                      extname: str = "OBJECTS") -> fits.BinTableHDU:
    """The table HDU as astropy builds it, with ``header``'s cards merged (a keyword already
    in the table header updated, COMMENT/HISTORY and new keywords appended): what
    :func:`write_fits_table` writes for tables its direct encoder does not handle, and the
    reference that encoder's bytes are tested against."""
    hdu = fits.table_to_hdu(table)
    hdu.name = extname
    if header is not None:
        for card in clean_header(header).cards:
            if card.keyword not in hdu.header or card.keyword in ("COMMENT", "HISTORY"):
                hdu.header.append(card, end=True)
            else:
                hdu.header[card.keyword] = (card.value, card.comment)
    return hdu


def write_fits_table(path: str | os.PathLike[str], table: Table | np.ndarray,
                     header: fits.Header | None = None, *, extname: str = "OBJECTS") -> Path:
    """Write a table as a FITS binary table (HDU 1, EXTNAME ``extname``), atomically.

    Parameters
    ----------
    table : astropy.table.Table, numpy structured array or dict of columns
    header : astropy.io.fits.Header, optional
        Extra keywords for the table HDU header.
    """
    final = Path(path)
    t = _as_table(table)
    direct = table_hdu_bytes(t, None if header is None else clean_header(header),
                             extname=extname)
    if direct is not None:  # the bytes astropy writes, without its per-column objects
        atomic_write_bytes(final, empty_primary_bytes() + direct, fsync=False)
        return final
    hdu = astropy_table_hdu(t, header, extname=extname)
    with atomic_write_path(final) as tmp:
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp)
    return final


def read_fits_table(path: str | os.PathLike[str], hdu: int | str | None = None) -> Table:
    """Read a FITS table (default: the first table HDU), with its header in ``table.meta``.

    Raises
    ------
    MissingFileError, CorruptFileError
        Missing or unreadable file, or no table HDU.
    """
    p = Path(path)
    with open_fits(p) as hdul:
        target = None
        for i, h in iter_hdus_checked(hdul, p):
            is_table = isinstance(h, (fits.BinTableHDU, fits.TableHDU))
            if hdu is None and is_table:
                target = h
                break
            if hdu is not None and (i == hdu or (isinstance(hdu, str) and
                                                 h.name.upper() == hdu.upper())):
                if not is_table:
                    raise CorruptFileError(p, hdu, "HDU is not a table")
                target = h
                break
        if target is None:
            raise CorruptFileError(p, hdu, "no table HDU found")
        try:
            return Table.read(target)
        except Exception as exc:
            raise CorruptFileError(p, hdu_label(0, target), f"cannot read table ({exc})") from exc


def write_csv(path: str | os.PathLike[str], table: Table | np.ndarray) -> Path:
    """Write a table as comma-separated values with a header line, atomically."""
    final = Path(path)
    with atomic_write_path(final) as tmp:
        _as_table(table).write(tmp, format="ascii.csv", overwrite=True)
    return final


def read_csv(path: str | os.PathLike[str]) -> Table:
    """Read a CSV table written by :func:`write_csv`.

    Raises
    ------
    MissingFileError, CorruptFileError
    """
    p = Path(path)
    if not p.exists():
        raise MissingFileError(p, None, "file does not exist")
    try:
        return Table.read(p, format="ascii.csv")
    except Exception as exc:
        raise CorruptFileError(p, None, f"not a readable CSV table ({exc})") from exc


_PARQUET_META_KEY = b"desgw.table"


def _arrow_column(col: Any, name: str, path: Path) -> Any:
    import pyarrow as pa

    data = np.asarray(col)
    mask = np.asarray(col.mask) if getattr(col, "mask", None) is not None and \
        np.ndim(col.mask) == data.ndim and np.any(col.mask) else None
    if data.ndim == 1:
        if data.dtype.kind in "US":
            values = data.astype(str).tolist()
            if mask is not None:
                values = [None if m else v for v, m in zip(values, mask)]
            return pa.array(values, type=pa.string())
        return pa.array(data, mask=mask)
    if data.ndim == 2 and data.dtype.kind in "biuf":
        flat = pa.array(np.ascontiguousarray(data).ravel())
        return pa.FixedSizeListArray.from_arrays(flat, data.shape[1])
    raise DataTypeError(path, None, f"column {name!r} of shape {data.shape} and dtype "
                        f"{data.dtype} cannot be stored in Parquet")


def write_parquet(path: str | os.PathLike[str], table: Table | np.ndarray) -> Path:
    """Write a table as Parquet (pyarrow, no pandas needed), atomically.

    Column units and the table's ``meta`` are kept (JSON in the schema metadata). Columns may
    be 1-D numbers, strings (masked values become nulls) or 2-D numeric (fixed-size lists).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    final = Path(path)
    t = _as_table(table)
    arrays = [_arrow_column(t[name], name, final) for name in t.colnames]
    info = {"units": {n: str(t[n].unit) for n in t.colnames if t[n].unit is not None},
            "meta": dict(t.meta)}
    meta_json = json.dumps(json_safe(info, nonfinite_to_none=False, fallback=str))
    schema_meta = {_PARQUET_META_KEY: meta_json.encode()}
    at = pa.Table.from_arrays(arrays, names=list(t.colnames)).replace_schema_metadata(schema_meta)
    sink = pa.BufferOutputStream()  # in memory: its checksum record needs no read back
    pq.write_table(at, sink)
    atomic_write_bytes(final, sink.getvalue().to_pybytes(), fsync=False)
    return final


def read_parquet(path: str | os.PathLike[str], columns: list[str] | None = None) -> Table:
    """Read a Parquet table (optionally only ``columns``) as an astropy Table.

    Nulls become masked values; units and meta written by :func:`write_parquet` are restored.

    Raises
    ------
    MissingFileError, CorruptFileError
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.exists():
        raise MissingFileError(p, None, "file does not exist")
    try:
        at = pq.read_table(p, columns=columns)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError...
        raise CorruptFileError(p, None, f"not a readable Parquet table ({exc})") from exc
    info: dict[str, Any] = {"units": {}, "meta": {}}
    raw_meta = (at.schema.metadata or {}).get(_PARQUET_META_KEY)
    if raw_meta:
        info = json.loads(raw_meta.decode())
    out = Table(meta=info.get("meta", {}))
    for name in at.column_names:
        col = at.column(name).combine_chunks()
        nulls = col.null_count > 0
        if pa.types.is_fixed_size_list(col.type):
            values = col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), -1)
        elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            values = np.array(["" if v is None else v for v in col.to_pylist()], dtype=str)
        else:
            values = col.to_numpy(zero_copy_only=False)
        if nulls:
            mask = col.is_null().to_numpy(zero_copy_only=False)
            if values.dtype == object:
                values = np.array([0 if m else v for v, m in zip(values, mask)])
            out[name] = np.ma.MaskedArray(values, mask=mask)
        else:
            out[name] = values
        unit = info.get("units", {}).get(name)
        if unit:
            out[name].unit = unit
    return out
