"""Multi-extension FITS files opened with cfitsio (fitsio) and indexed once per process.

Raw exposures and calibration files hold one HDU per CCD (60-70 HDUs). Opening one with
astropy and walking its headers costs 0.1-0.4 CPU-s before a single pixel is read; a warm
worker that processes many CCDs of one night paid it for every CCD and every file. Here:

* cfitsio locates every HDU (header start, data start and end) when the file is opened;
* each header is parsed by astropy from its bytes (a tile-compressed HDU's binary-table
  header is turned into the image header astropy would show), about 0.3 ms per HDU;
* the CCDNUM / EXTNAME index is built once;
* the open handle and its index are kept in a small per-process cache (at most
  :data:`MAX_OPEN_FILES` files), keyed by the file's resolved path and re-validated on every
  use by its size, modification time, change time and inode: a file rewritten or replaced
  is opened and indexed again. A forked child never reuses its parent's handles.

Pixels are decoded by cfitsio only for the HDU asked for. Decoded planes are not cached
(a CCD's bias, flat and mask are ~70 MB as float32). For a file cfitsio cannot open or index,
:func:`open_indexed` returns None; the readers then fall back to astropy, whose checks give
the error messages (file, HDU, problem) for broken files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from desgw.errors import CorruptFileError, DataTypeError, HeaderError, MissingFileError

from ._fitsutil import header_int

__all__ = [
    "MAX_OPEN_FILES",
    "FileKey",
    "FitsIndex",
    "file_key",
    "open_indexed",
    "clear_cache",
    "cache_info",
]

log = logging.getLogger(__name__)

#: Files kept open per process (a raw exposure, bias, flat, bad-pixel mask, linearity, and
#: room for a second exposure or band).
MAX_OPEN_FILES = 8

# Binary-table and compression keywords of a tile-compressed HDU that the image header of the
# same HDU does not have (the image's own BITPIX/NAXISn come from ZBITPIX/ZNAXISn).
_TABLE_ONLY = frozenset({
    "XTENSION", "BITPIX", "NAXIS", "PCOUNT", "GCOUNT", "TFIELDS", "ZIMAGE", "ZTENSION",
    "ZBITPIX", "ZNAXIS", "ZPCOUNT", "ZGCOUNT", "ZCMPTYPE", "ZQUANTIZ", "ZDITHER0", "ZSIMPLE",
    "ZEXTEND", "ZBLOCKED", "ZHECKSUM", "ZDATASUM", "CHECKSUM", "DATASUM", "ZBLANK",
})
_TABLE_ONLY_PREFIX = ("NAXIS", "TTYPE", "TFORM", "TUNIT", "TSCAL", "TZERO", "TNULL", "TDIM",
                      "TDISP", "ZNAXIS", "ZTILE", "ZNAME", "ZVAL")


@dataclass(frozen=True)
class FileKey:
    """What identifies one version of a file on disk.

    Attributes
    ----------
    path : str
        Resolved absolute path.
    size : int
        Bytes.
    mtime_ns, ctime_ns : int
        Modification and status-change times, nanoseconds.
    inode : int
        Inode number (a file replaced by rename gets a new one).
    """

    path: str
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int


def file_key(path: str | os.PathLike[str]) -> FileKey:
    """The :class:`FileKey` of ``path`` now.

    Raises
    ------
    MissingFileError
        ``path`` does not exist or is not a regular file.
    CorruptFileError
        The file is shorter than one FITS header block (2880 bytes).
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise MissingFileError(p, None, "file does not exist") from None
    except OSError as exc:
        raise MissingFileError(p, None, f"cannot stat the file ({exc})") from exc
    if not p.is_file():
        raise MissingFileError(p, None, "not a regular file")
    if st.st_size < 2880:
        raise CorruptFileError(p, None, f"not a FITS file: only {st.st_size} bytes "
                               "(a FITS header block alone is 2880 bytes)")
    return FileKey(os.path.realpath(p), int(st.st_size), int(st.st_mtime_ns),
                   int(st.st_ctime_ns), int(st.st_ino))


def _image_header(raw: fits.Header) -> fits.Header:
    """The image header of a tile-compressed HDU from its binary-table header."""
    out = fits.Header()
    out["XTENSION"] = ("IMAGE", "Image extension")
    out["BITPIX"] = (int(raw["ZBITPIX"]), "array data type")
    naxis = int(raw["ZNAXIS"])
    out["NAXIS"] = (naxis, "number of array dimensions")
    for k in range(1, naxis + 1):
        out[f"NAXIS{k}"] = int(raw[f"ZNAXIS{k}"])
    out["PCOUNT"] = (int(raw.get("ZPCOUNT", 0)), "number of parameters")
    out["GCOUNT"] = (int(raw.get("ZGCOUNT", 1)), "number of groups")
    for card in raw.cards:
        key = card.keyword
        if key in _TABLE_ONLY or key.startswith(_TABLE_ONLY_PREFIX):
            continue
        out.append(card, end=True)
    return out


def _label(index: int, header: fits.Header) -> str | int:
    """As :func:`desgw.io._fitsutil.hdu_label` (astropy's upper-case HDU name)."""
    name = str(header.get("EXTNAME", "") or "").strip().upper()
    if index == 0 and not name:
        name = "PRIMARY"
    if name and name != "PRIMARY":
        return f"{index}:{name}"
    return index


class FitsIndex:
    """One open FITS file with every header parsed and its CCDs indexed.

    Use :func:`open_indexed` (cached) rather than the constructor. Reads are serialised by a
    lock: one cfitsio handle is not safe to share between threads.

    Attributes
    ----------
    key : FileKey
    path : pathlib.Path
        The path as given.
    primary : astropy.io.fits.Header
        The primary header (do not modify; :meth:`header` returns copies).
    by_ccdnum : dict of int to int
        CCDNUM -> HDU index, for every extension with a CCDNUM keyword.
    by_name : dict of str to int
        Upper-case EXTNAME (or DETPOS) -> HDU index.

    ``usable`` is False (and nothing else is set) when cfitsio cannot open the file, locate
    its HDUs or hand astropy a parseable header; ``why`` then says what failed.

    Raises
    ------
    CorruptFileError
        An HDU's data end past the end of the file (truncated).
    HeaderError
        A malformed CCDNUM, or two HDUs with the same CCDNUM.
    """

    def __init__(self, path: str | os.PathLike[str], key: FileKey) -> None:
        import fitsio

        self.path = Path(path)
        self.key = key
        self.lock = threading.Lock()
        self.usable = False
        self.why = ""
        try:
            self._fits = fitsio.FITS(key.path)
        except Exception as exc:  # noqa: BLE001 - cfitsio raises OSError, ValueError...
            self.why = f"{path}: cfitsio cannot open it ({exc})"
            return
        try:
            self.why = self._build()
        except BaseException:
            self._fits.close()
            raise
        self.usable = not self.why
        if not self.usable:
            self._fits.close()

    def _build(self) -> str:
        """Index the file; an empty string, or why cfitsio cannot (astropy will say more)."""
        headers: list[fits.Header] = []
        infos: list[dict[str, Any]] = []
        try:
            n = len(self._fits)
            for i in range(n):
                infos.append(self._fits[i].get_info())
        except Exception as exc:  # noqa: BLE001 - cfitsio raises assorted types
            return f"{self.path}: cfitsio cannot list its HDUs ({exc})"
        size = self.key.size
        if infos and int(infos[-1]["data_end"]) < size:
            # bytes after the last HDU cfitsio found (a broken header, junk): astropy says what
            return (f"{self.path}: {size - int(infos[-1]['data_end'])} bytes after the last HDU "
                    "cfitsio found")
        with open(self.key.path, "rb") as fh:
            for i, info in enumerate(infos):
                start, data_start = int(info["header_start"]), int(info["data_start"])
                fh.seek(start)
                block = fh.read(data_start - start)
                try:
                    raw = fits.Header.fromstring(block.decode("ascii"))
                except Exception as exc:  # noqa: BLE001 - astropy's reader says what is wrong
                    return f"{self.path}: header {i} does not parse ({exc})"
                hdr = _image_header(raw) if info.get("is_compressed_image") else raw
                end = int(info["data_end"])
                if end > size:
                    raise CorruptFileError(self.path, _label(i, hdr), f"file is truncated: HDU "
                                           f"data end at byte {end} but the file has {size} "
                                           "bytes")
                headers.append(hdr)
        self._headers = headers
        self._infos = infos
        self.labels: list[str | int] = [_label(i, h) for i, h in enumerate(headers)]
        self.primary = headers[0]
        self.by_ccdnum: dict[int, int] = {}
        self.by_name: dict[str, int] = {}
        for i, hdr in enumerate(headers[1:], start=1):
            name = str(hdr.get("EXTNAME", "") or hdr.get("DETPOS", "")).strip().upper()
            if name and name not in self.by_name:
                self.by_name[name] = i
            if "CCDNUM" not in hdr:
                continue
            ccdnum = header_int(hdr, "CCDNUM", path=self.path, hdu=self.labels[i])
            if ccdnum in self.by_ccdnum:
                raise HeaderError(self.path, self.labels[i], f"CCDNUM {ccdnum} appears twice "
                                  f"(also HDU {self.by_ccdnum[ccdnum]})", keyword="CCDNUM")
            self.by_ccdnum[ccdnum] = i
        return ""

    def __len__(self) -> int:
        return len(self._headers)

    def header(self, index: int) -> fits.Header:
        """A copy of HDU ``index``'s header (image form for a tile-compressed HDU)."""
        return self._headers[index].copy()

    def peek_header(self, index: int) -> fits.Header:
        """HDU ``index``'s cached header itself: read it, never modify it."""
        return self._headers[index]

    def is_table(self, index: int) -> bool:
        """True when HDU ``index`` is a binary table (not a tile-compressed image)."""
        info = self._infos[index]
        return int(info["hdutype"]) == 2 and not info.get("is_compressed_image")

    def is_compressed(self, index: int) -> bool:
        """True when HDU ``index`` is a tile-compressed image."""
        return bool(self._infos[index].get("is_compressed_image"))

    def hdu_span(self, index: int) -> tuple[int, int, int]:
        """Byte offsets of HDU ``index`` in the file: (header start, data start, data end);
        for a tile-compressed HDU, the header is its binary table's."""
        info = self._infos[index]
        return int(info["header_start"]), int(info["data_start"]), int(info["data_end"])

    def read_image(self, index: int) -> np.ndarray:
        """Decode the whole image of HDU ``index`` (BZERO/BSCALE applied), native byte order.

        Raises
        ------
        CorruptFileError
            cfitsio cannot read or decompress the data, or their shape is not the header's.
        """
        label = self.labels[index]
        hdr = self._headers[index]
        try:
            with self.lock:
                data = self._fits[index].read()
        except MemoryError:
            raise
        except Exception as exc:  # cfitsio raises OSError, ValueError...
            raise CorruptFileError(self.path, label, f"cannot read pixel data "
                                   f"({type(exc).__name__}: {exc})") from exc
        expected = tuple(int(hdr[f"NAXIS{k}"]) for k in range(int(hdr["NAXIS"]), 0, -1))
        if data is None or tuple(data.shape) != expected:
            shape = None if data is None else data.shape
            raise CorruptFileError(self.path, label, f"pixel data have shape {shape}, header "
                                   f"says {expected}")
        if not data.dtype.isnative:
            data = data.astype(data.dtype.newbyteorder("="))
        return data

    def read_image_2d(self, index: int) -> np.ndarray:
        """:meth:`read_image` of an HDU whose header must say ``NAXIS = 2`` (a CCD plane).

        Raises
        ------
        DataTypeError
            The header's NAXIS is not 2.
        CorruptFileError
            As :meth:`read_image`.
        """
        naxis = self._headers[index].get("NAXIS", 0)
        if naxis != 2:
            raise DataTypeError(self.path, self.labels[index], f"expected a 2-D image, found "
                                f"NAXIS = {naxis}")
        return self.read_image(index)

    def read_table(self, index: int) -> np.ndarray:
        """Read the rows of binary-table HDU ``index`` as a structured array (native order).

        Raises
        ------
        CorruptFileError
            cfitsio cannot read the table.
        """
        try:
            with self.lock:
                data = self._fits[index].read()
        except MemoryError:
            raise
        except Exception as exc:  # cfitsio raises assorted types
            raise CorruptFileError(self.path, self.labels[index], f"cannot read the table "
                                   f"({type(exc).__name__}: {exc})") from exc
        return np.asarray(data)

    def close(self) -> None:
        """Close the cfitsio handle."""
        with contextlib.suppress(Exception):  # closing a broken handle must not raise
            self._fits.close()


_CACHE: OrderedDict[str, FitsIndex] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_PID = os.getpid()
_STATS = {"hits": 0, "misses": 0}


def open_indexed(path: str | os.PathLike[str]) -> FitsIndex | None:
    """The :class:`FitsIndex` of ``path``, from the per-process cache when the file is unchanged.

    None when cfitsio cannot open or index the file: read it with astropy, whose checks name
    the problem (nothing is cached then).

    A cached entry is used only while the file's size, mtime, ctime and inode are those it was
    opened with; otherwise the old handle is closed and the file opened and indexed again.
    At most :data:`MAX_OPEN_FILES` files stay open (least recently used closed first).

    Raises
    ------
    MissingFileError, CorruptFileError, HeaderError
        See :func:`file_key` and :class:`FitsIndex`.
    """
    global _CACHE_PID
    key = file_key(path)
    with _CACHE_LOCK:
        if _CACHE_PID != os.getpid():  # a forked child: the parent's descriptors are shared
            _CACHE.clear()
            _CACHE_PID = os.getpid()
        entry = _CACHE.get(key.path)
        if entry is not None and entry.key == key:
            _CACHE.move_to_end(key.path)
            _STATS["hits"] += 1
            return entry
        if entry is not None:
            del _CACHE[key.path]
            entry.close()
        _STATS["misses"] += 1
        entry = FitsIndex(path, key)
        if not entry.usable:
            log.debug("%s; reading it with astropy", entry.why)
            return None
        _CACHE[key.path] = entry
        while len(_CACHE) > MAX_OPEN_FILES:
            _, old = _CACHE.popitem(last=False)
            old.close()
        log.debug("indexed %s: %d HDUs, %d CCDs", path, len(entry), len(entry.by_ccdnum))
        return entry


def clear_cache() -> None:
    """Close every cached file (tests, benchmarks, or before a fork)."""
    with _CACHE_LOCK:
        while _CACHE:
            _, entry = _CACHE.popitem()
            entry.close()
        _STATS["hits"] = 0
        _STATS["misses"] = 0


def cache_info() -> dict[str, Any]:
    """Paths open in this process's cache and its hit / miss counts (for tests and benches)."""
    with _CACHE_LOCK:
        return {"open": list(_CACHE), "hits": _STATS["hits"], "misses": _STATS["misses"]}
