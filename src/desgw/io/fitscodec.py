"""Tile-compressed FITS image planes, written atomically.

Every product image of a CCD (the SE immask, the difference image, the template coadd) is a
set of named 2-D planes in tile-compressed image HDUs (the FITS tiled-image convention: one
tile per image row), readable by astropy, fitsio, funpack and DS9. The codec of a plane
follows from its kind, as DESDM writes its products (DarkEnergySurvey/imsupport,
``compression_hdu.h``):

* float planes with a quantisation step ``step > 0`` (science, weight, score): ``RICE_1``
  with that *absolute* step (cfitsio's negative quantize level) and ``SUBTRACTIVE_DITHER_2``
  (dithered, so the quantisation error is uniform in +-step/2 with zero mean; exact zeros kept
  exactly). The step comes from the known noise (:func:`noise_step`) or the weight's own
  scale (:func:`weight_step`), never from cfitsio's per-row noise estimate (which costs a
  pass over every row and misjudges a row that is constant apart from zeros);
* float planes with ``step == 0``: ``GZIP_2`` lossless;
* integer planes (masks): ``RICE_1`` lossless. Not ``PLIO_1`` (DES's mask codec): cfitsio
  1.4.x (fitsio) corrupts its heap (``free(): invalid next size``, the process aborts) when
  writing PLIO of a mask whose rows do not compress (e.g. many different bit values), and
  PLIO saved only ~1 MB per CCD here.

The RICE_1 planes are encoded by :mod:`desgw.io.rice` (numba) and the file assembled here:
the same compressed bytes, tile scales and zero points as cfitsio writes (tested), in about a
quarter of its CPU time (one 4096 x 2048 plane, one core: SCI ~0.06-0.09 against 0.28-0.40
CPU-s, ``bench/bench_codecs.py``, ``bench/bench_codec_planes.py``). A file with a plane that
encoder does not take (lossless float, NaN or infinite values, a row whose range does not
fit 32-bit integers at its step, rows of one pixel) is written whole by cfitsio
(``fitsio``) with the same codecs.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from desgw.errors import DataTypeError

from ._fitsutil import STRUCTURAL_KEYWORDS, card_image, header_bytes
from .atomic import atomic_write_blocks, atomic_write_path

__all__ = [
    "NOISE_QUANTIZE_LEVEL",
    "WEIGHT_QUANTIZE_LEVEL",
    "Plane",
    "noise_step",
    "weight_step",
    "write_planes",
]

log = logging.getLogger(__name__)

#: q of noise-dominated planes: step = noise sigma / q (DES: 16).
NOISE_QUANTIZE_LEVEL: float = 16.0
#: q of weight planes: step = smallest positive weight / q, so that no pixel's weight (hence
#: variance) moves by more than 1 / (2 q) = 0.05 %.
WEIGHT_QUANTIZE_LEVEL: float = 1024.0

_SAMPLE = 7  # every 7th pixel for the median weight (coprime with row lengths of 2**k)


@dataclass(frozen=True)
class Plane:
    """One image plane of a product file.

    Attributes
    ----------
    name : str
        EXTNAME (``SCI``, ``MSK``, ``WGT``...).
    data : numpy.ndarray
        2-D float (stored float32) or integer image.
    header : astropy.io.fits.Header or None
        Keywords of the HDU (structural keywords are dropped).
    step : float
        Float planes: the absolute quantisation step in the plane's units (0: lossless).
        Ignored for integer planes (always lossless).
    dither_seed : int
        ZDITHER0 (1 .. 10000) of a quantised plane, fixed so that output is reproducible.
    """

    name: str
    data: np.ndarray = field(repr=False)
    header: fits.Header | None = field(default=None, repr=False)
    step: float = 0.0
    dither_seed: int = 1


def noise_step(weight: np.ndarray, q: float = NOISE_QUANTIZE_LEVEL, *,
               image: np.ndarray | None = None) -> float:
    """Quantisation step of an image whose pixel noise is ``1 / sqrt(weight)``.

    Parameters
    ----------
    weight : numpy.ndarray
        Inverse variance (units of the image**-2); 0 = unusable.
    q : float
        Steps per noise sigma (16 as DES: quantisation noise sigma / (q sqrt 12) = sigma / 55).
    image : numpy.ndarray or None
        The image itself: when given, sigma is also measured on it (robust scatter of
        neighbouring-pixel differences on every 16th row, where the weight is positive) and
        the smaller of the two is used, so that a weight map on another scale than the
        image (e.g. relative weights) can never make the step coarser than its noise.

    Returns
    -------
    float
        ``sigma / q`` with sigma from the median positive weight (every 7th pixel); 0 (store
        losslessly) when no weight is positive or finite.
    """
    from .rice import positive_sample  # numba: imported when first needed

    w = positive_sample(np.asarray(weight), _SAMPLE)
    if w.size == 0:
        return 0.0
    sigma = 1.0 / math.sqrt(float(np.median(w)))
    if image is not None:
        sigma = min(sigma, _image_sigma(np.asarray(image), np.asarray(weight)))
    return sigma / float(q) if math.isfinite(sigma) and sigma > 0 else 0.0


def _image_sigma(image: np.ndarray, weight: np.ndarray) -> float:
    """Robust pixel noise of an image from neighbouring-pixel differences (inf if unknown)."""
    if image.ndim != 2 or image.shape[1] < 2:
        return math.inf
    from .rice import row_differences

    d = row_differences(image, weight, 16)
    if d.size < 100:
        return math.inf
    mad = float(np.median(np.abs(d - np.median(d))))
    return 1.4826 * mad / math.sqrt(2.0) if mad > 0 else math.inf


def weight_step(weight: np.ndarray, q: float = WEIGHT_QUANTIZE_LEVEL) -> float:
    """Quantisation step of a weight (inverse-variance) plane: smallest positive weight / q.

    Every pixel's weight then moves by at most ``step / 2``, i.e. by a fraction ``<= 1 / (2 q)``
    of itself; with dithering the errors average to zero. Zeros stay exactly zero.

    Returns
    -------
    float
        The step (weight units); 0 (lossless) when no weight is positive.
    """
    from .rice import weight_stats

    wmin = weight_stats(weight)[2]
    return wmin / float(q) if math.isfinite(wmin) else 0.0


def _records(header: fits.Header | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if header is None:
        return out
    for card in header.cards:
        key = card.keyword
        if key in STRUCTURAL_KEYWORDS or key == "EXTNAME" or key.startswith(("TTYPE", "TFORM")):
            continue
        value = card.value
        if isinstance(value, fits.card.Undefined):
            value = None
        if key in ("COMMENT", "HISTORY", ""):
            out.append({"name": key or "COMMENT", "value": str(value)})
            continue
        if isinstance(value, (float, np.floating)) and not math.isfinite(float(value)):
            value = str(value)  # FITS has no NaN/inf numbers
        out.append({"name": key, "value": value, "comment": card.comment})
    return out


def _compression(plane: Plane, data: np.ndarray, path: Path) -> dict[str, Any]:
    if np.issubdtype(data.dtype, np.integer):
        return {"compress": "RICE"}
    step = float(plane.step)
    if not math.isfinite(step) or step < 0:
        raise DataTypeError(path, plane.name, f"quantisation step must be >= 0, got {step}")
    if step == 0:
        return {"compress": "GZIP_2", "qlevel": 0.0}
    if not 1 <= int(plane.dither_seed) <= 10000:
        raise DataTypeError(path, plane.name, f"dither seed must be 1..10000, got "
                            f"{plane.dither_seed}")
    return {"compress": "RICE", "qlevel": -step, "qmethod": "SUBTRACTIVE_DITHER_2",
            "dither_seed": int(plane.dither_seed)}


def _pixels(plane: Plane, path: Path) -> np.ndarray:
    a = np.asarray(plane.data)
    if a.ndim != 2:
        raise DataTypeError(path, plane.name, f"{plane.name} must be 2-D, got shape {a.shape}")
    if np.issubdtype(a.dtype, np.bool_):
        a = a.astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if hi > np.iinfo(np.int32).max or lo < np.iinfo(np.int32).min:
            raise DataTypeError(path, plane.name, f"{plane.name} values do not fit in int32")
        small = lo >= -32768 and hi <= 32767
        return np.ascontiguousarray(a, dtype=np.int16 if small else np.int32)
    if not np.issubdtype(a.dtype, np.floating):
        raise DataTypeError(path, plane.name, f"{plane.name} must be numeric, got {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


_TABLE_KEYS = ("TTYPE", "TFORM", "TUNIT", "TDIM", "TNULL", "TSCAL", "TZERO", "THEAP")


def _user_cards(header: fits.Header | None) -> list[fits.Card]:
    if header is None:
        return []
    return [card for card in header.cards
            if card.keyword not in STRUCTURAL_KEYWORDS and card.keyword != "EXTNAME"
            and not card.keyword.startswith(_TABLE_KEYS)]


def _rice_hdu(plane: Plane, data: np.ndarray) -> list[Any] | None:
    """The byte blocks of ``plane`` as a RICE_1 tile-compressed HDU encoded by
    :mod:`desgw.io.rice` (header, tile table, heap, padding); None when that encoder does not
    take it (a lossless float plane, non-finite values, a row whose range at this step
    exceeds 32-bit integers): the file is then written by cfitsio."""
    from . import rice

    ny, nx = data.shape
    if nx < 2 or ny < 1:  # cfitsio does not quantise one-pixel tiles
        return None
    float_plane = np.issubdtype(data.dtype, np.floating)
    if float_plane:
        if not plane.step > 0:
            return None
        enc = rice.encode_float_tiles(data, plane.step, int(plane.dither_seed))
        if enc is None:
            return None
        heap, offsets, nbytes, zzero = enc
        table = np.empty(ny, dtype=[("n", ">i4"), ("o", ">i4"), ("s", ">f8"), ("z", ">f8")])
        table["s"] = float(np.float32(plane.step))
        table["z"] = zzero
        bytepix, zbitpix = 4, -32
    else:
        heap, offsets, nbytes, bytepix = rice.encode_int_tiles(data)
        table = np.empty(ny, dtype=[("n", ">i4"), ("o", ">i4")])
        zbitpix = 8 * bytepix
    if heap.size >= 2**31:
        return None
    table["n"] = nbytes
    table["o"] = offsets
    cards = [
        ("XTENSION", "BINTABLE", "binary table extension"),
        ("BITPIX", 8, "8-bit bytes"),
        ("NAXIS", 2, "2-dimensional binary table"),
        ("NAXIS1", table.itemsize, "width of table in bytes"),
        ("NAXIS2", ny, "number of rows in table"),
        ("PCOUNT", int(heap.size), "size of special data area"),
        ("GCOUNT", 1, "one data group (required keyword)"),
        ("TFIELDS", 3 if float_plane else 1, "number of fields in each row"),
        ("TTYPE1", "COMPRESSED_DATA", "label for field 1"),
        ("TFORM1", f"1PB({int(nbytes.max())})", "data format of field: variable length array")]
    if float_plane:
        cards += [("TTYPE2", "ZSCALE", "label for field 2"),
                  ("TFORM2", "1D", "data format of field: 8-byte DOUBLE"),
                  ("TTYPE3", "ZZERO", "label for field 3"),
                  ("TFORM3", "1D", "data format of field: 8-byte DOUBLE")]
    cards += [("ZIMAGE", True, "extension contains compressed image"),
              ("ZBITPIX", zbitpix, "data type of original image"),
              ("ZNAXIS", 2, "dimension of original image"),
              ("ZNAXIS1", nx, "length of original image axis"),
              ("ZNAXIS2", ny, "length of original image axis"),
              ("ZTILE1", nx, "size of tiles to be compressed"),
              ("ZTILE2", 1, "size of tiles to be compressed")]
    if float_plane:
        cards += [("ZQUANTIZ", "SUBTRACTIVE_DITHER_2", "Pixel Quantization Algorithm"),
                  ("ZDITHER0", int(plane.dither_seed), "dithering offset when quantizing floats")]
    cards += [("ZCMPTYPE", "RICE_1", "compression algorithm"),
              ("ZNAME1", "BLOCKSIZE", "compression block size"),
              ("ZVAL1", 32, "pixels per block"),
              ("ZNAME2", "BYTEPIX", "bytes per pixel (1, 2, 4, or 8)"),
              ("ZVAL2", int(bytepix), "bytes per pixel (1, 2, 4, or 8)"),
              ("EXTNAME", plane.name, "extension name")]
    images = [card_image(*card) for card in cards]
    images += [card.image for card in _user_cards(plane.header)]
    size = table.nbytes + heap.size
    return [header_bytes(images), table.tobytes(), heap, bytes(-size % _FITS_BLOCK)]


_FITS_BLOCK = 2880


@functools.lru_cache(maxsize=1)
def _primary_bytes() -> bytes:
    """The empty primary HDU of a product file."""
    return header_bytes([card_image("SIMPLE", True, "file does conform to FITS standard"),
                         card_image("BITPIX", 8, "number of bits per data pixel"),
                         card_image("NAXIS", 0, "number of data axes"),
                         card_image("EXTEND", True, "FITS dataset may contain extensions")])


def _file_blocks(blocks: list[list[Any]]) -> Iterator[Any]:
    """The file's bytes in order: an empty primary HDU, then each plane's blocks."""
    yield _primary_bytes()
    for parts in blocks:
        yield from parts


def write_planes(path: str | os.PathLike[str], planes: Sequence[Plane]) -> Path:
    """Write image planes as tile-compressed HDUs after an empty primary HDU, atomically.

    Parameters
    ----------
    path : path-like
        Output file (normally ``*.fits.fz``).
    planes : sequence of Plane
        In HDU order; codecs in the module docstring.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    DataTypeError
        A plane that is not 2-D or not numeric, or a negative or non-finite step.
    """
    import fitsio

    final = Path(path)
    prepared = []
    for plane in planes:
        data = _pixels(plane, final)
        prepared.append((plane, data, _compression(plane, data, final)))
    ours: list[list[Any]] = []
    for plane, data, _ in prepared:
        hdu = _rice_hdu(plane, data)
        if hdu is None:
            break
        ours.append(hdu)
    if len(ours) == len(prepared):  # the bytes hashed as written (checksums.file_record)
        atomic_write_blocks(final, _file_blocks(ours), fsync=False)
    else:
        with atomic_write_path(final) as tmp, fitsio.FITS(str(tmp), "rw", clobber=True) as out:
            for plane, data, kw in prepared:
                out.write(data, extname=plane.name, header=_records(plane.header), **kw)
    log.debug("wrote %s (%s)", final, ", ".join(p.name for p in planes))
    return final
