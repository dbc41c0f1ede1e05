"""Shared helpers for opening FITS files and turning astropy failures into desgw errors."""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from desgw.errors import CorruptFileError, DataTypeError, HeaderError, MissingFileError

__all__ = [
    "open_fits",
    "iter_hdus_checked",
    "hdu_label",
    "header_int",
    "header_float",
    "header_str",
    "read_hdu_pixels",
    "index_ccds",
    "STRUCTURAL_KEYWORDS",
    "clean_header",
    "card_image",
    "header_bytes",
]

log = logging.getLogger(__name__)

#: Keywords that describe the FITS data layout; astropy writes them itself.
STRUCTURAL_KEYWORDS = frozenset({
    "SIMPLE", "XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "PCOUNT",
    "GCOUNT", "BZERO", "BSCALE", "BLANK", "TFIELDS", "CHECKSUM", "DATASUM", "ZIMAGE", "ZBITPIX",
    "ZNAXIS", "ZNAXIS1", "ZNAXIS2", "ZTILE1", "ZTILE2", "ZCMPTYPE", "ZNAME1", "ZVAL1", "ZNAME2",
    "ZVAL2", "ZQUANTIZ", "ZDITHER0", "ZSIMPLE", "ZTENSION", "ZEXTEND", "ZPCOUNT", "ZGCOUNT",
    "ZBLANK", "ZHECKSUM", "ZDATASUM",
})


def clean_header(header: fits.Header | None) -> fits.Header:
    """Copy ``header`` without structural keywords (BITPIX, NAXISn, BZERO, Z*, ...)."""
    out = fits.Header()
    if header is None:
        return out
    for card in header.cards:
        if card.keyword in STRUCTURAL_KEYWORDS or card.keyword.startswith("TTYPE") \
                or card.keyword.startswith("TFORM"):
            continue
        out.append(card, end=True)
    return out


_FITS_BLOCK = 2880
_END_CARD = "END".ljust(80)


@functools.lru_cache(maxsize=1024, typed=True)
def card_image(keyword: str, value: Any, comment: str | None = None) -> str:
    """The image astropy gives the card ``(keyword, value, comment)`` (80 characters, or a
    multiple for a long string's CONTINUE cards); cached per process, since the structural
    and provenance cards of the products repeat from file to file (typed: ``True`` and ``1``
    are different cards)."""
    return str(fits.Card(keyword, value, comment).image)


def header_bytes(images: list[str]) -> bytes:
    """A header's bytes from its card images, as ``fits.Header(cards).tostring()`` writes
    them: the images, END, then blanks to a whole 2880-byte block. Astropy's Header instead
    updates its keyword index and reads a few configuration items per card (~30 us each)."""
    text = "".join(images) + _END_CARD
    return (text + " " * (-len(text) % _FITS_BLOCK)).encode("ascii")


def hdu_label(index: int, hdu: Any) -> str | int:
    """A readable HDU label for messages: the EXTNAME when there is one, else the index."""
    try:
        name = hdu.name
    except Exception:  # noqa: BLE001 - a broken header must not hide the real error
        name = ""
    if name and name != "PRIMARY":
        return f"{index}:{name}"
    return index


def open_fits(path: str | os.PathLike[str]) -> fits.HDUList:
    """Open a FITS file lazily (headers read on demand), raising desgw errors.

    Raises
    ------
    MissingFileError
        If ``path`` does not exist.
    CorruptFileError
        If the file is empty, not FITS, or its first header cannot be parsed.
    """
    p = Path(path)
    if not p.exists():
        raise MissingFileError(p, None, "file does not exist")
    if not p.is_file():
        raise MissingFileError(p, None, "not a regular file")
    if p.stat().st_size < 2880:
        raise CorruptFileError(p, None, f"not a FITS file: only {p.stat().st_size} bytes "
                               "(a FITS header block alone is 2880 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", AstropyUserWarning)
            return fits.open(p, lazy_load_hdus=True, memmap=False)
    except (OSError, ValueError, TypeError, IndexError, AstropyUserWarning) as exc:
        raise CorruptFileError(p, None, f"not a readable FITS file ({exc})") from exc


def iter_hdus_checked(hdul: fits.HDUList, path: str | os.PathLike[str]) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, hdu)`` for every HDU, reading headers only, checking for truncation.

    Raises
    ------
    CorruptFileError
        If a header cannot be parsed, or an HDU's data extend past the end of the file.
    """
    size = os.path.getsize(path)
    index = 0
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", AstropyUserWarning)
                hdu = hdul[index]
        except IndexError:
            return
        except (OSError, ValueError, TypeError, KeyError, AstropyUserWarning) as exc:
            raise CorruptFileError(path, index, f"corrupt or truncated header ({exc})") from exc
        try:
            info = hdu.fileinfo()
        except Exception as exc:  # astropy raises assorted types here
            raise CorruptFileError(path, index, f"cannot locate HDU data ({exc})") from exc
        if info is not None:
            end = int(info["datLoc"]) + int(info["datSpan"])
            if end > size:
                raise CorruptFileError(path, hdu_label(index, hdu),
                                       f"file is truncated: HDU data end at byte {end} but "
                                       f"the file has {size} bytes")
        yield index, hdu
        index += 1


def _lookup(header: fits.Header, keyword: str, path: Any, hdu: Any, required: bool) -> Any:
    if keyword not in header:
        if required:
            raise HeaderError(path, hdu, f"missing header keyword {keyword}", keyword=keyword)
        return None
    value = header[keyword]
    if value is None or (isinstance(value, str) and not value.strip()) \
            or isinstance(value, fits.card.Undefined):
        if required:
            raise HeaderError(path, hdu, f"header keyword {keyword} is empty", keyword=keyword)
        return None
    return value


@overload
def header_int(header: fits.Header, keyword: str, *, path: Any = None, hdu: Any = None,
               required: Literal[True] = ...) -> int: ...
@overload
def header_int(header: fits.Header, keyword: str, *, path: Any = None, hdu: Any = None,
               required: bool) -> int | None: ...
def header_int(header: fits.Header, keyword: str, *, path: Any = None, hdu: Any = None,
               required: bool = True) -> int | None:
    """Read an integer keyword (an integral float or numeric string is accepted)."""
    value = _lookup(header, keyword, path, hdu, required)
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        fval = float(value)
        if not np.isfinite(fval) or fval != int(fval):
            raise ValueError
        return int(fval)
    except (TypeError, ValueError):
        raise HeaderError(path, hdu, f"header keyword {keyword} is not an integer: {value!r}",
                          keyword=keyword) from None


@overload
def header_float(header: fits.Header, keyword: str, *, path: Any = None, hdu: Any = None,
                 required: Literal[True] = ..., positive: bool = False) -> float: ...
@overload
def header_float(header: fits.Header, keyword: str, *, path: Any = None, hdu: Any = None,
                 required: bool, positive: bool = False) -> float | None: ...
def header_float(header: fits.Header, keyword: str, *, path: Any = None, hdu: Any = None,
                 required: bool = True, positive: bool = False) -> float | None:
    """Read a finite float keyword (a numeric string is accepted)."""
    value = _lookup(header, keyword, path, hdu, required)
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        fval = float(value)
    except (TypeError, ValueError):
        raise HeaderError(path, hdu, f"header keyword {keyword} is not a number: {value!r}",
                          keyword=keyword) from None
    if not np.isfinite(fval):
        raise HeaderError(path, hdu, f"header keyword {keyword} is not finite: {value!r}",
                          keyword=keyword)
    if positive and fval <= 0:
        raise HeaderError(path, hdu, f"header keyword {keyword} must be positive: {value!r}",
                          keyword=keyword)
    return fval


@overload
def header_str(header: fits.Header, keyword: str, *, path: Any = None, hdu: Any = None,
               required: Literal[True] = ...) -> str: ...
@overload
def header_str(header: fits.Header, keyword: str, *, path: Any = None, hdu: Any = None,
               required: bool) -> str | None: ...
def header_str(header: fits.Header, keyword: str, *, path: Any = None, hdu: Any = None,
               required: bool = True) -> str | None:
    """Read a keyword as a stripped string."""
    value = _lookup(header, keyword, path, hdu, required)
    if value is None:
        return None
    return str(value).strip()


def read_hdu_pixels(hdu: Any, path: Any, label: Any,
                    box: tuple[slice, slice] | None = None) -> np.ndarray:
    """Read (decompress) the pixel array of one image HDU without caching it on the HDU.

    The result is in native byte order, with BZERO/BSCALE applied by astropy. ``box`` (rows,
    columns; unit steps within the image) reads only that part: for a tile-compressed HDU
    only the tiles it touches are decompressed.

    Raises
    ------
    DataTypeError
        If the HDU holds no 2-D image.
    CorruptFileError
        If the data cannot be read or decompressed.
    """
    header = hdu.header
    naxis = header.get("NAXIS", 0)
    if naxis != 2:
        raise DataTypeError(path, label, f"expected a 2-D image, found NAXIS = {naxis}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", AstropyUserWarning)
            data = hdu.section[:, :] if box is None else hdu.section[box[0], box[1]]
    except MemoryError:
        raise
    except Exception as exc:  # decoders raise their own exception types
        raise CorruptFileError(path, label, f"cannot read pixel data "
                               f"({type(exc).__name__}: {exc})") from exc
    expected: tuple[int, ...] = (int(header["NAXIS2"]), int(header["NAXIS1"]))
    if box is not None:
        expected = tuple(len(range(*sl.indices(n))) for sl, n in zip(box, expected))
    if data.shape != expected:
        raise CorruptFileError(path, label, f"pixel data have shape {data.shape}, header says "
                               f"{expected}")
    data = np.asarray(data)
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))
    return data


def index_ccds(hdul: fits.HDUList, path: str | os.PathLike[str]
               ) -> tuple[fits.Header, dict[int, int], dict[str, int]]:
    """Read all headers (not the data) and map CCDNUM and EXTNAME to HDU indices.

    Returns
    -------
    primary : astropy.io.fits.Header
        The primary header.
    by_ccdnum : dict of int to int
        CCDNUM -> HDU index, for every extension with a CCDNUM keyword.
    by_name : dict of str to int
        Upper-case EXTNAME (or DETPOS) -> HDU index, for every extension that has one.

    Raises
    ------
    CorruptFileError
        Unreadable or truncated file.
    HeaderError
        A malformed CCDNUM, or two HDUs with the same CCDNUM.
    """
    primary: fits.Header | None = None
    by_ccdnum: dict[int, int] = {}
    by_name: dict[str, int] = {}
    for i, hdu in iter_hdus_checked(hdul, path):
        hdr = hdu.header
        if i == 0:
            primary = hdr
            continue
        name = str(hdr.get("EXTNAME", "") or hdr.get("DETPOS", "")).strip().upper()
        if name and name not in by_name:
            by_name[name] = i
        if "CCDNUM" not in hdr:
            continue
        ccdnum = header_int(hdr, "CCDNUM", path=path, hdu=hdu_label(i, hdu))
        if ccdnum in by_ccdnum:
            raise HeaderError(path, hdu_label(i, hdu), f"CCDNUM {ccdnum} appears twice (also "
                              f"HDU {by_ccdnum[ccdnum]})", keyword="CCDNUM")
        by_ccdnum[ccdnum] = i
    if primary is None:  # pragma: no cover - open_fits guarantees a primary HDU
        raise CorruptFileError(path, None, "no primary HDU")
    return primary, by_ccdnum, by_name
