"""Calibration images: one multi-extension FITS file per kind, one image HDU per CCD.

Written by the simulator (or built from real calibrations) and read by single-epoch
processing. Each file has an empty primary HDU recording the kind (``CALTYPE``) and one image
HDU per CCD (EXTNAME = DETPOS, keyword CCDNUM) holding the trimmed CCD, 2048 x 4096
(NAXIS1 x NAXIS2), numpy shape (4096, 2048):

========== ========= ==========================================================
kind       dtype     content
========== ========= ==========================================================
bias       float32   bias structure in electrons (after overscan subtraction)
flat       float32   dome flat, normalised to mean 1 over the CCD
starflat   float32   star-flat correction, dimensionless, mean ~1
bpm        int16     bad-pixel bit mask (0 = good); uint16 when a bit >= 2**15
========== ========= ==========================================================

A ``.fits.fz`` name is tile-compressed losslessly (GZIP_2 for floats, RICE_1 for masks).

Linearity lookup tables (:func:`write_linearity`, :func:`read_linearity`) follow DECam's
``linearity_table_v0.4.fits``: one binary-table HDU per CCD (EXTNAME = DETPOS, keyword
CCDNUM) with the columns ``ADU`` (recorded, overscan-subtracted ADU on a strictly increasing
grid, e.g. 0..65535 step 1) and ``ADU_LINEAR_A``, ``ADU_LINEAR_B`` (the linear, i.e. true,
ADU of amplifier A and B for each recorded value; increasing). The primary header carries
``CALTYPE = 'linearity'`` (checked when present: the real DECam file has none). A file
without CCDNUM keywords is indexed by EXTNAME/DETPOS, else by HDU number = CCDNUM (the DECam
layout).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
from astropy.io import fits

from desgw.errors import CorruptFileError, DataTypeError, HeaderError, MissingCCDError

from ._fitsutil import clean_header, hdu_label, index_ccds, open_fits, read_hdu_pixels
from .atomic import atomic_write_path
from .calib_cache import CalibCache
from .fitsindex import FitsIndex, open_indexed

__all__ = ["CALIB_KINDS", "CalibKind", "TRIMMED_SHAPE", "CalibFile", "write_calib", "read_calib",
           "LINEARITY_COLUMNS", "LinearityTable", "linearity_problem", "write_linearity",
           "read_linearity"]

log = logging.getLogger(__name__)

#: numpy shape (NAXIS2, NAXIS1) of a trimmed DECam CCD.
TRIMMED_SHAPE: tuple[int, int] = (4096, 2048)


@dataclass(frozen=True)
class CalibKind:
    """What one calibration kind stores.

    Attributes
    ----------
    name : str
        ``"bias"``, ``"flat"``, ``"starflat"`` or ``"bpm"``.
    is_mask : bool
        True for integer bit masks, False for float32 images.
    obstype : str
        The OBSTYPE written to the primary header.
    unit : str
        BUNIT written to each CCD header.
    """

    name: str
    is_mask: bool
    obstype: str
    unit: str


#: The calibration kinds, by name.
CALIB_KINDS: dict[str, CalibKind] = {
    "bias": CalibKind("bias", False, "zero", "electron"),
    "flat": CalibKind("flat", False, "dome flat", ""),
    "starflat": CalibKind("starflat", False, "star flat", ""),
    "bpm": CalibKind("bpm", True, "bpm", ""),
}


def _kind(kind: str) -> CalibKind:
    try:
        return CALIB_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown calibration kind {kind!r}; known: "
                         f"{sorted(CALIB_KINDS)}") from None


def _detpos(ccdnum: int) -> str:
    from desgw.instrument.camera import get_ccd  # local: io must import without instrument

    return get_ccd(int(ccdnum)).detpos


def _prepare(kind: CalibKind, ccdnum: int, image: np.ndarray, path: Path,
             expected_shape: tuple[int, int] | None) -> np.ndarray:
    arr = np.asarray(image)
    label = f"CCD {ccdnum}"
    if arr.ndim != 2:
        raise DataTypeError(path, label, f"{kind.name} image must be 2-D, got shape {arr.shape}")
    if expected_shape is not None and arr.shape != tuple(expected_shape):
        raise DataTypeError(path, label, f"{kind.name} image has shape {arr.shape}, expected "
                            f"{tuple(expected_shape)}")
    if kind.is_mask:
        if not np.issubdtype(arr.dtype, np.integer):
            raise DataTypeError(path, label, f"bpm must be an integer bit mask, got {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise DataTypeError(path, label, "bpm values must be in 0..65535")
        return arr.astype(np.int16 if (not arr.size or arr.max() < 32768) else np.uint16)
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise DataTypeError(path, label, f"{kind.name} must be numeric, got {arr.dtype}")
    out = arr.astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise DataTypeError(path, label, f"{kind.name} image contains NaN or infinite values")
    return out


def write_calib(path: str | os.PathLike[str], kind: str, images: Mapping[int, np.ndarray],
                header: fits.Header | None = None, *,
                expected_shape: tuple[int, int] | None = TRIMMED_SHAPE,
                detpos: Mapping[int, str] | None = None,
                quantize_level: float | None = None) -> Path:
    """Write a calibration file atomically, one image HDU per CCD.

    Parameters
    ----------
    path : str or os.PathLike
        Output ``.fits`` (or ``.fits.fz``, compressed losslessly).
    kind : str
        One of :data:`CALIB_KINDS` (``"bias"``, ``"flat"``, ``"starflat"``, ``"bpm"``).
    images : mapping of int to numpy.ndarray
        CCDNUM -> trimmed image, shape ``expected_shape`` (default (4096, 2048)). Float kinds
        are stored as float32 (bias in electrons, flats dimensionless); ``bpm`` as int16
        (uint16 if a value is >= 32768).
    header : astropy.io.fits.Header, optional
        Extra primary-header keywords (validity dates, provenance...).
    expected_shape : tuple of int or None
        Required shape of every image; ``None`` accepts any 2-D shape (tests, cut-outs).
    detpos : mapping of int to str, optional
        EXTNAMEs to use; default: the DECam DETPOS of each CCDNUM (``desgw.instrument``).
    quantize_level : float, optional
        For float kinds written to ``.fz``: tile-compress with RICE_1 after quantising to
        ``noise / quantize_level`` per tile (fpack's ``-q``; SUBTRACTIVE_DITHER_2, zeros kept).
        The default ``None`` keeps float images lossless (GZIP_2, about 1 s per CCD). A master
        calibration carries its own noise, so ``quantize_level=4`` adds an error of ~7 % of
        that noise, far below the noise of any science frame, and writes 5x faster and smaller.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        Unknown kind, or an empty ``images``.
    DataTypeError
        An image of the wrong dimension, shape or type, or with NaN/inf values.
    """
    spec = _kind(kind)
    final = Path(path)
    if not images:
        raise ValueError(f"{final}: no CCD images to write")
    compress = final.name.lower().endswith(".fz")
    primary = clean_header(header)
    primary["CALTYPE"] = (spec.name, "desgw calibration kind")
    primary["OBSTYPE"] = (spec.obstype, "type of calibration")
    primary["NCCD"] = (len(images), "number of CCD extensions")
    hdus: list[fits.hdu.base.ExtensionHDU | fits.PrimaryHDU] = [fits.PrimaryHDU(header=primary)]
    for ccdnum in sorted(images):
        data = _prepare(spec, int(ccdnum), images[ccdnum], final, expected_shape)
        name = detpos[ccdnum] if detpos is not None else _detpos(ccdnum)
        hdr = fits.Header()
        hdr["EXTNAME"] = name
        hdr["CCDNUM"] = (int(ccdnum), "CCD number")
        hdr["DETPOS"] = (name, "detector position")
        hdr["CALTYPE"] = spec.name
        if spec.unit:
            hdr["BUNIT"] = spec.unit
        if compress:
            if spec.is_mask:
                hdus.append(fits.CompImageHDU(data, header=hdr, compression_type="RICE_1"))
            elif quantize_level is not None:
                hdus.append(fits.CompImageHDU(data, header=hdr, compression_type="RICE_1",
                                              quantize_level=float(quantize_level),
                                              quantize_method=2, dither_seed=1 + int(ccdnum)))
            else:
                hdus.append(fits.CompImageHDU(data, header=hdr, compression_type="GZIP_2",
                                              quantize_level=0.0))
        else:
            hdus.append(fits.ImageHDU(data, header=hdr))
    with atomic_write_path(final) as tmp:
        fits.HDUList(hdus).writeto(tmp)
    log.debug("wrote %s calibration %s with %d CCDs", spec.name, final, len(images))
    return final


class CalibFile:
    """A calibration file opened once; CCDs read one HDU at a time.

    Parameters
    ----------
    path : str or os.PathLike
    kind : str, optional
        If given, the file's ``CALTYPE`` must equal it.
    expected_shape : tuple of int or None
        Required numpy shape of each CCD image (default (4096, 2048)); ``None`` accepts any.
    cache : CalibCache, path or None
        Decoded planes of tile-compressed HDUs are read from, and after a decode written to,
        this cache (:mod:`desgw.io.calib_cache`; a path is its root). None: decode each time.

    Raises
    ------
    MissingFileError, CorruptFileError
        Missing, truncated or non-FITS file.
    HeaderError
        No (or an unknown) CALTYPE in the primary header, or not the requested kind.
    """

    def __init__(self, path: str | os.PathLike[str], kind: str | None = None, *,
                 expected_shape: tuple[int, int] | None = TRIMMED_SHAPE,
                 cache: CalibCache | str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path)
        self.expected_shape = None if expected_shape is None else tuple(expected_shape)
        self._cache = (cache if isinstance(cache, CalibCache) or cache is None
                       else CalibCache(cache))
        self._hdul: fits.HDUList | None = None
        # cfitsio, indexed once per process and file version (desgw.io.fitsindex)
        self._fx: FitsIndex | None = open_indexed(self.path)
        if self._fx is None:
            self._hdul = open_fits(self.path)
        try:
            if self._fx is not None:
                self.header, self._index = self._fx.header(0), self._fx.by_ccdnum
            else:
                assert self._hdul is not None
                self.header, self._index, _ = index_ccds(self._hdul, self.path)
            found = str(self.header.get("CALTYPE", "")).strip()
            if not found:
                raise HeaderError(self.path, 0, "missing header keyword CALTYPE (not a desgw "
                                  "calibration file)", keyword="CALTYPE")
            if found not in CALIB_KINDS:
                raise HeaderError(self.path, 0, f"unknown CALTYPE {found!r}", keyword="CALTYPE")
            if kind is not None and found != _kind(kind).name:
                raise HeaderError(self.path, 0, f"CALTYPE is {found!r}, expected {kind!r}",
                                  keyword="CALTYPE")
            self.kind: CalibKind = CALIB_KINDS[found]
        except BaseException:
            self.close()
            raise

    @property
    def ccdnums(self) -> tuple[int, ...]:
        """CCDNUMs present, sorted."""
        return tuple(sorted(self._index))

    def read(self, ccdnum: int) -> np.ndarray:
        """Read only the HDU of CCD ``ccdnum``.

        Returns
        -------
        numpy.ndarray
            float32 image (bias, flat, starflat) or int16/uint16 mask (bpm), shape
            ``expected_shape``.

        Raises
        ------
        MissingCCDError
            The CCD is not in the file (the message lists those present).
        DataTypeError
            Wrong BITPIX for the kind, or wrong shape.
        CorruptFileError
            Unreadable data.
        """
        try:
            index = self._index[int(ccdnum)]
        except KeyError:
            raise MissingCCDError(self.path, None, f"CCD {ccdnum} is not in the {self.kind.name} "
                                  f"file; CCDNUMs present: {list(self.ccdnums)}",
                                  present=self.ccdnums) from None
        if self._fx is not None:
            label = self._fx.labels[index]
            header = self._fx.peek_header(index)
        else:
            assert self._hdul is not None
            hdu = self._hdul[index]
            label = hdu_label(index, hdu)
            header = hdu.header
        bitpix = header.get("BITPIX")
        if self.kind.is_mask and bitpix not in (8, 16, 32):
            raise DataTypeError(self.path, label, f"bpm must be an integer image, found "
                                f"BITPIX = {bitpix}")
        if not self.kind.is_mask and bitpix != -32:
            raise DataTypeError(self.path, label, f"{self.kind.name} must be float32 "
                                f"(BITPIX = -32), found BITPIX = {bitpix}")
        if self._fx is not None and self._cache is not None and self._fx.is_compressed(index):
            return self._read_cached(index, int(ccdnum), header)
        if self._fx is not None:
            data = self._fx.read_image_2d(index)
        else:
            data = read_hdu_pixels(hdu, self.path, label)
        return self._finish(data, label)

    def _finish(self, data: np.ndarray, label: str | int) -> np.ndarray:
        """The decoded plane checked for shape and given the kind's dtype."""
        if self.expected_shape is not None and data.shape != self.expected_shape:
            raise DataTypeError(self.path, label, f"{self.kind.name} image has shape "
                                f"{data.shape}, expected {self.expected_shape}")
        if self.kind.is_mask:
            return data if data.dtype in (np.int16, np.uint16, np.int32) else data.astype(np.int32)
        return data.astype(np.float32, copy=False)

    def _read_cached(self, index: int, ccdnum: int, header: fits.Header) -> np.ndarray:
        """HDU ``index`` from the decoded-plane cache, decoding and caching it on a miss."""
        assert self._fx is not None and self._cache is not None
        label = self._fx.labels[index]
        naxis = header.get("NAXIS", 0)
        if naxis != 2:  # read_image_2d names the problem
            return self._finish(self._fx.read_image_2d(index), label)
        shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
        if self.expected_shape is not None and shape != self.expected_shape:
            raise DataTypeError(self.path, label, f"{self.kind.name} image has shape "
                                f"{shape}, expected {self.expected_shape}")
        dtype = _returned_dtype(self.kind, header)
        data = self._cache.load(self._fx.key, ccdnum, dtype, shape)
        if data is not None:
            return data
        data = self._finish(self._fx.read_image_2d(index), label)
        self._cache.store(self._fx.key, ccdnum, data)
        return data

    def close(self) -> None:
        """Close the file (a cfitsio handle stays in the per-process cache for the next CCD)."""
        if self._hdul is not None:
            self._hdul.close()
        self._fx = None

    def __enter__(self) -> CalibFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _returned_dtype(kind: CalibKind, header: fits.Header) -> np.dtype:
    """The dtype :meth:`CalibFile.read` returns for an HDU with this (image) header."""
    if not kind.is_mask:
        return np.dtype(np.float32)
    if int(header.get("BITPIX", 0)) == 16:
        unsigned = (float(header.get("BZERO", 0)) == 32768.0
                    and float(header.get("BSCALE", 1)) == 1.0)
        return np.dtype(np.uint16 if unsigned else np.int16)
    return np.dtype(np.int32)


def read_calib(path: str | os.PathLike[str], kind: str, ccdnum: int, *,
               expected_shape: tuple[int, int] | None = TRIMMED_SHAPE,
               cache: CalibCache | str | os.PathLike[str] | None = None) -> np.ndarray:
    """Open ``path``, check it is a ``kind`` calibration, and read CCD ``ccdnum`` (through the
    decoded-plane ``cache`` when given: see :class:`CalibFile`)."""
    with CalibFile(path, kind, expected_shape=expected_shape, cache=cache) as cal:
        return cal.read(ccdnum)


# ----------------------------------------------------------------------------- linearity
#: Column names of a linearity table HDU (recorded ADU, linear ADU of amp A, of amp B).
LINEARITY_COLUMNS: tuple[str, str, str] = ("ADU", "ADU_LINEAR_A", "ADU_LINEAR_B")


def linearity_problem(adu: np.ndarray, linear_a: np.ndarray, linear_b: np.ndarray) -> str | None:
    """What is wrong with a linearity lookup table, in words (None when it is usable).

    A usable table has three 1-D finite arrays of one length >= 2, ``adu`` strictly
    increasing and both linear columns non-decreasing (monotonic: every recorded value maps to
    one true value and the order of pixel values is kept).
    """
    cols = {"ADU": adu, "ADU_LINEAR_A": linear_a, "ADU_LINEAR_B": linear_b}
    n = None
    for name, arr in cols.items():
        if arr.ndim != 1:
            return f"column {name} must be 1-D, got shape {arr.shape}"
        if n is None:
            n = arr.size
        elif arr.size != n:
            return f"columns have different lengths ({adu.size}, {linear_a.size}, {linear_b.size})"
        if not np.all(np.isfinite(arr)):
            return f"column {name} has {int(np.count_nonzero(~np.isfinite(arr)))} non-finite values"
    if n is None or n < 2:
        return f"a lookup table needs at least 2 rows, got {n}"
    if np.any(np.diff(adu) <= 0):
        k = int(np.flatnonzero(np.diff(adu) <= 0)[0])
        return f"column ADU is not strictly increasing (row {k + 1}: {adu[k + 1]!r} after {adu[k]!r})"
    for name in ("ADU_LINEAR_A", "ADU_LINEAR_B"):
        d = np.diff(cols[name])
        if np.any(d < 0):
            k = int(np.flatnonzero(d < 0)[0])
            return (f"column {name} is not monotonic (row {k + 1}: {cols[name][k + 1]!r} after "
                    f"{cols[name][k]!r})")
    return None


@dataclass(frozen=True, eq=False)
class LinearityTable:
    """The linearity lookup table of one CCD.

    Attributes
    ----------
    adu : ndarray of float64, shape (N,)
        Recorded ADU above the overscan level, strictly increasing.
    linear_a, linear_b : ndarray of float64, shape (N,)
        Linear (true) ADU of amplifier A and B for each ``adu``; non-decreasing.

    Raises
    ------
    ValueError
        If the arrays do not form a usable table (see :func:`linearity_problem`).
    """

    adu: np.ndarray
    linear_a: np.ndarray
    linear_b: np.ndarray

    def __post_init__(self) -> None:
        for name in ("adu", "linear_a", "linear_b"):
            arr = np.array(getattr(self, name), dtype=np.float64)  # a private copy
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        problem = linearity_problem(self.adu, self.linear_a, self.linear_b)
        if problem is not None:
            raise ValueError(f"LinearityTable: {problem}")

    def linear(self, amp: str) -> np.ndarray:
        """The linear-ADU column of amplifier ``amp`` (``"A"`` or ``"B"``)."""
        if amp == "A":
            return self.linear_a
        if amp == "B":
            return self.linear_b
        raise KeyError(f"no linearity column for amplifier {amp!r} (only A and B)")


def write_linearity(path: str | os.PathLike[str], tables: Mapping[int, LinearityTable],
                    header: fits.Header | None = None, *,
                    detpos: Mapping[int, str] | None = None) -> Path:
    """Write a linearity lookup-table file atomically, one binary-table HDU per CCD.

    Parameters
    ----------
    path : str or os.PathLike
        Output ``.fits`` file (binary tables are not tile-compressed).
    tables : mapping of int to LinearityTable
        CCDNUM -> table. Columns are stored as float64 (``ADU`` as float64 too, so coarse or
        non-integer grids survive).
    header : astropy.io.fits.Header, optional
        Extra primary-header keywords (provenance...).
    detpos : mapping of int to str, optional
        EXTNAMEs; default the DECam DETPOS of each CCDNUM.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        No tables.
    DataTypeError
        A value that is not a :class:`LinearityTable`.
    """
    final = Path(path)
    if not tables:
        raise ValueError(f"{final}: no linearity tables to write")
    primary = clean_header(header)
    primary["CALTYPE"] = ("linearity", "desgw calibration kind")
    primary["OBSTYPE"] = ("linearity", "type of calibration")
    primary["NCCD"] = (len(tables), "number of CCD extensions")
    hdus: list[fits.hdu.base.ExtensionHDU | fits.PrimaryHDU] = [fits.PrimaryHDU(header=primary)]
    for ccdnum in sorted(tables):
        table = tables[ccdnum]
        if not isinstance(table, LinearityTable):
            raise DataTypeError(final, f"CCD {ccdnum}", f"expected a LinearityTable, got "
                                f"{type(table).__name__}")
        name = detpos[ccdnum] if detpos is not None else _detpos(ccdnum)
        cols = [fits.Column(name=c, format="D", array=np.asarray(a, dtype=np.float64))
                for c, a in zip(LINEARITY_COLUMNS, (table.adu, table.linear_a, table.linear_b))]
        hdu = fits.BinTableHDU.from_columns(cols)
        hdu.header["EXTNAME"] = name
        hdu.header["CCDNUM"] = (int(ccdnum), "CCD number")
        hdu.header["DETPOS"] = (name, "detector position")
        hdu.header["CALTYPE"] = "linearity"
        hdus.append(hdu)
    with atomic_write_path(final) as tmp:
        fits.HDUList(hdus).writeto(tmp)
    log.debug("wrote linearity tables %s with %d CCDs", final, len(tables))
    return final


def read_linearity(path: str | os.PathLike[str], ccdnum: int) -> LinearityTable:
    """Read the linearity lookup table of CCD ``ccdnum``.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`write_linearity` or DECam's ``linearity_table_v*.fits``.
    ccdnum : int

    Returns
    -------
    LinearityTable

    Raises
    ------
    MissingFileError, CorruptFileError
        Missing, truncated or non-FITS file; unreadable table data.
    HeaderError
        A primary ``CALTYPE`` other than ``linearity``.
    MissingCCDError
        The CCD is not in the file (the message lists those present).
    DataTypeError
        The HDU is not a table with the three columns, or the table is not monotonic.
    """
    p = Path(path)
    ccdnum = int(ccdnum)
    fx = open_indexed(p)  # cfitsio, indexed once per process and file version
    if fx is not None:
        _check_linearity_caltype(p, fx.peek_header(0))
        index = _linearity_hdu(p, ccdnum, fx.by_ccdnum, fx.by_name, len(fx))
        label = fx.labels[index]
        if not fx.is_table(index):
            raise DataTypeError(p, label, f"expected a binary table with columns "
                                f"{', '.join(LINEARITY_COLUMNS)}, found an image HDU")
        rows = fx.read_table(index)
        names = list(rows.dtype.names or ())
        return _linearity_from_columns(p, label, ccdnum, names, lambda n: rows[n])
    with open_fits(p) as hdul:
        primary, by_ccdnum, by_name = index_ccds(hdul, p)
        _check_linearity_caltype(p, primary)
        index = _linearity_hdu(p, ccdnum, by_ccdnum, by_name, len(hdul))
        hdu = hdul[index]
        label = hdu_label(index, hdu)
        if not isinstance(hdu, fits.BinTableHDU):
            raise DataTypeError(p, label, f"expected a binary table with columns "
                                f"{', '.join(LINEARITY_COLUMNS)}, found {type(hdu).__name__}")
        try:
            data = hdu.data
            names = list(data.columns.names)
        except Exception as exc:  # astropy raises assorted types here
            raise CorruptFileError(p, label, f"cannot read the table ({exc})") from exc
        return _linearity_from_columns(p, label, ccdnum, names, lambda n: data[n])


def _check_linearity_caltype(p: Path, primary: fits.Header) -> None:
    found = str(primary.get("CALTYPE", "")).strip()
    if found and found != "linearity":
        raise HeaderError(p, 0, f"CALTYPE is {found!r}, expected 'linearity'",
                          keyword="CALTYPE")


def _linearity_hdu(p: Path, ccdnum: int, by_ccdnum: Mapping[int, int],
                   by_name: Mapping[str, int], n_hdus: int) -> int:
    """HDU index of CCD ``ccdnum`` in a linearity file: by CCDNUM, else EXTNAME, else number."""
    index = by_ccdnum.get(ccdnum)
    present = tuple(sorted(by_ccdnum))
    if index is None and not by_ccdnum:
        try:
            index = by_name.get(_detpos(ccdnum).upper())
        except KeyError:
            index = None
        if index is None and 1 <= ccdnum < n_hdus:
            index = ccdnum  # DECam layout: HDU number = CCDNUM
        present = tuple(range(1, n_hdus))
    if index is None:
        raise MissingCCDError(p, None, f"CCD {ccdnum} is not in the linearity file; "
                              f"CCDNUMs present: {list(present)}", present=present)
    return index


def _linearity_from_columns(p: Path, label: str | int, ccdnum: int, found: list[str],
                            column: Callable[[str], np.ndarray]) -> LinearityTable:
    names = {n.upper(): n for n in found}
    missing = [c for c in LINEARITY_COLUMNS if c not in names]
    if missing:
        raise DataTypeError(p, label, f"missing column(s) {missing}; found {found}")
    arrays = []
    for c in LINEARITY_COLUMNS:
        col = np.asarray(column(names[c]))
        if not (np.issubdtype(col.dtype, np.floating) or np.issubdtype(col.dtype, np.integer)):
            raise DataTypeError(p, label, f"column {c} must be numeric, got {col.dtype}")
        arrays.append(col.astype(np.float64))
    problem = linearity_problem(*arrays)
    if problem is not None:
        raise DataTypeError(p, label, f"CCD {ccdnum}: {problem}")
    return LinearityTable(*arrays)
