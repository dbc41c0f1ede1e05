"""Postage stamps of difference-image candidates: cut-outs, a FITS file and PNG pictures.

:func:`cutout_stamps` cuts square stamps centred on each candidate from the search,
template and difference images (all on the search CCD's pixel grid). Stamps reaching past
the CCD edge are padded with ``fill`` and those pixels are marked invalid; non-finite image
pixels are replaced by ``fill`` and marked invalid too.

FITS layout (:func:`write_stamps_fits`, read back with :func:`read_stamps_fits`):

* HDU 0: no data; header ``NSTAMP`` (candidates), ``STAMPSZ`` (side, px), ``NKIND`` and
  ``KIND1..KINDn`` (the stamp kinds in order), ``FILL`` (the padding value).
* One image HDU per kind, ``EXTNAME`` the kind in upper case (``SEARCH``, ``TEMPLATE``,
  ``DIFF``): a float32 cube (n, size, size); stamp ``i`` is ``data[i]``, row 0 at the bottom
  as usual in FITS.
* ``VALID``: uint8 cube (n, size, size), bit ``k`` set where kind ``k`` is a real pixel.
* ``CANDIDATES``: binary table, one row per stamp (the caller's table) plus ``STAMP_X0``,
  ``STAMP_Y0`` (0-based CCD pixel of each stamp's centre pixel).

PNG (:func:`write_stamps_png`): one 8-bit grayscale picture per candidate,
``{prefix}{id}.png``, with the panels side by side in kind order (search, template, diff)
separated by white gaps, each panel stretched on its own (zscale or asinh), optionally
enlarged by an integer factor; north/up is CCD +y (the image is flipped so that row 0 of the
array is at the bottom, as in a FITS viewer).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from numba import njit
from numpy.typing import ArrayLike, NDArray

from desgw.errors import CorruptFileError, MissingFileError
from desgw.io.atomic import atomic_write_bytes, atomic_write_path, fsync_directory
from desgw.io.fitstable import table_hdu_bytes

from .stamps_png import encode_png_gray, stretch_to_uint8

__all__ = [
    "STAMP_KINDS",
    "Stamps",
    "cutout_stamps",
    "inpaint_stamps",
    "read_stamps_fits",
    "write_stamps_fits",
    "write_stamps_png",
]

log = logging.getLogger(__name__)

_FITS_BLOCK = 2880

#: Default stamp kinds, in order.
STAMP_KINDS: tuple[str, ...] = ("search", "template", "diff")


@dataclass(frozen=True)
class Stamps:
    """Candidate stamps.

    Attributes
    ----------
    data : numpy.ndarray
        (n, k, size, size) float32 pixel values; ``fill`` where not valid.
    valid : numpy.ndarray
        (n, k, size, size) bool, True for real, finite image pixels.
    kinds : tuple of str
        The ``k`` kinds, in axis-1 order.
    x0, y0 : numpy.ndarray
        (n,) int64 0-based CCD pixel at each stamp's centre pixel ``[size // 2, size // 2]``.
    fill : float
        Value of invalid pixels.
    """

    data: np.ndarray
    valid: np.ndarray
    kinds: tuple[str, ...]
    x0: np.ndarray
    y0: np.ndarray
    fill: float = 0.0

    @property
    def size(self) -> int:
        """Stamp side (px)."""
        return int(self.data.shape[-1])

    def __len__(self) -> int:
        return int(self.data.shape[0])


def cutout_stamps(images: Mapping[str, NDArray[np.floating]], x: ArrayLike, y: ArrayLike, *,
                  size: int = 51, kinds: Sequence[str] = STAMP_KINDS,
                  fill: float = 0.0) -> Stamps:
    """Cut square stamps centred on candidates.

    Parameters
    ----------
    images : mapping of str to numpy.ndarray
        The images by kind (each (ny, nx), same shape), e.g. ``{"search": ..., "template":
        ..., "diff": ...}``.
    x, y : array_like
        (n,) 0-based candidate positions (px); the stamp centre pixel is
        ``floor(x + 0.5), floor(y + 0.5)``.
    size : int
        Stamp side (odd, px).
    kinds : sequence of str
        Which images, in order.
    fill : float
        Value of pixels outside the CCD or non-finite (must be finite).

    Returns
    -------
    Stamps
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size must be a positive odd integer, got {size}")
    if not np.isfinite(fill):
        raise ValueError("fill must be finite")
    kinds = tuple(kinds)
    missing = [k for k in kinds if k not in images]
    if missing:
        raise ValueError(f"images lack the kinds {missing} (have {sorted(images)})")
    arrays = [np.asarray(images[k]) for k in kinds]
    shape = arrays[0].shape
    if len(shape) != 2 or any(a.shape != shape for a in arrays):
        raise ValueError(f"images must be 2-D and of one shape, got "
                         f"{[a.shape for a in arrays]}")
    xs = np.atleast_1d(np.asarray(x, dtype=np.float64)).ravel()
    ys = np.atleast_1d(np.asarray(y, dtype=np.float64)).ravel()
    if xs.shape != ys.shape or not np.all(np.isfinite(xs) & np.isfinite(ys)):
        raise ValueError("x and y must be finite and of one length")
    n, h = xs.size, size // 2
    ny, nx = shape
    x0 = np.floor(xs + 0.5).astype(np.int64)
    y0 = np.floor(ys + 0.5).astype(np.int64)
    data = np.full((n, len(kinds), size, size), fill, dtype=np.float32)
    valid = np.zeros((n, len(kinds), size, size), dtype=bool)
    for i in range(n):
        ya, yb = max(y0[i] - h, 0), min(y0[i] + h + 1, ny)
        xa, xb = max(x0[i] - h, 0), min(x0[i] + h + 1, nx)
        if ya >= yb or xa >= xb:
            continue
        sy = slice(ya - (y0[i] - h), yb - (y0[i] - h))
        sx = slice(xa - (x0[i] - h), xb - (x0[i] - h))
        for k, arr in enumerate(arrays):
            cut = arr[ya:yb, xa:xb].astype(np.float32)
            ok = np.isfinite(cut)
            data[i, k, sy, sx] = np.where(ok, cut, np.float32(fill))
            valid[i, k, sy, sx] = ok
    return Stamps(data=data, valid=valid, kinds=kinds, x0=x0, y0=y0, fill=float(fill))


@njit(cache=True, nogil=True)
def _inpaint(data, valid, k, mask, bits, x0, y0, value):  # pragma: no cover - numba
    """Set ``data[i, k]`` to ``value`` where the stamp's pixel of ``mask`` has ``bits``."""
    n, size = data.shape[0], data.shape[-1]
    h = size // 2
    ny, nx = mask.shape
    for i in range(n):
        for a in range(size):
            y = y0[i] - h + a
            if y < 0 or y >= ny:
                continue
            for b in range(size):
                x = x0[i] - h + b
                if 0 <= x < nx and (mask[y, x] & bits) != 0 and valid[i, k, a, b]:
                    data[i, k, a, b] = value


def inpaint_stamps(stamps: Stamps, masks: Mapping[str, NDArray[np.integer]], bits: int, *,
                   value: float = 0.0) -> Stamps:
    """A copy of ``stamps`` with the pixels that carry ``bits`` in their image's mask set to
    ``value``.

    The difference image is blanked where either input is unusable, and the subtraction used
    the inputs in-painted with their background there (0 after background subtraction); a
    known bad column or hot pixel left in a search or template stamp would otherwise enter
    the real/bogus features of a candidate beside it (a cold column within 1.5 FWHM made the
    new image's light sum negative, its ``new_sharpness`` 20, and an S/N 14 fake 3 px away
    score as bogus). The pixels stay valid (they are on the CCD); the stamps written as
    products keep the images as they are.

    Parameters
    ----------
    stamps : Stamps
        :func:`cutout_stamps` output.
    masks : mapping of str to numpy.ndarray
        (ny, nx) integer mask bits of the image of each kind to in-paint (others untouched).
    bits : int
        Mask bits of an unusable pixel.
    value : float
        Value given to them (the image's background level).

    Returns
    -------
    Stamps
    """
    unknown = [k for k in masks if k not in stamps.kinds]
    if unknown:
        raise ValueError(f"stamps lack the kinds {unknown} (have {stamps.kinds})")
    data = stamps.data.copy()
    for kind, m in masks.items():
        arr = np.asarray(m)
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"mask of {kind!r} must be 2-D integer bits, got {arr.dtype} "
                             f"{arr.shape}")
        _inpaint(data, stamps.valid, stamps.kinds.index(kind), np.ascontiguousarray(arr),
                 int(bits),
                 np.asarray(stamps.x0, np.int64), np.asarray(stamps.y0, np.int64),
                 np.float32(value))
    return Stamps(data=data, valid=stamps.valid, kinds=stamps.kinds, x0=stamps.x0,
                  y0=stamps.y0, fill=stamps.fill)


def write_stamps_fits(path: str | os.PathLike[str], stamps: Stamps,
                      table: Table | None = None) -> Path:
    """Write stamps (and their candidate table) to one FITS file, atomically.

    Parameters
    ----------
    path : path-like
        Output ``.fits`` file.
    stamps : Stamps
        From :func:`cutout_stamps`.
    table : astropy.table.Table or None
        One row per stamp (e.g. the candidates); ``STAMP_X0``/``STAMP_Y0`` are added.

    Returns
    -------
    pathlib.Path
    """
    n = len(stamps)
    if table is not None and len(table) != n:
        raise ValueError(f"table has {len(table)} rows for {n} stamps")
    if len(stamps.kinds) > 8:
        raise ValueError("at most 8 stamp kinds fit the VALID bit mask")
    primary = fits.PrimaryHDU()
    hdr = primary.header
    hdr["NSTAMP"] = (n, "number of stamps")
    hdr["STAMPSZ"] = (stamps.size, "stamp side (pixels)")
    hdr["NKIND"] = (len(stamps.kinds), "stamp kinds")
    for k, kind in enumerate(stamps.kinds, start=1):
        hdr[f"KIND{k}"] = kind
    hdr["FILL"] = (stamps.fill, "value of invalid pixels")
    hdus: list[fits.hdu.base.ExtensionHDU] = []
    for k, kind in enumerate(stamps.kinds):
        hdus.append(fits.ImageHDU(np.ascontiguousarray(stamps.data[:, k]), name=kind.upper()))
    bits = np.zeros((n, stamps.size, stamps.size), dtype=np.uint8)
    for k in range(len(stamps.kinds)):
        bits |= (stamps.valid[:, k].astype(np.uint8) << k)
    hdus.append(fits.ImageHDU(bits, name="VALID"))
    tab = Table() if table is None else Table(table, copy=True)
    tab["STAMP_X0"] = stamps.x0
    tab["STAMP_Y0"] = stamps.y0
    final = Path(path)
    table_bytes = table_hdu_bytes(tab, extname="CANDIDATES")
    if table_bytes is not None:  # the bytes astropy writes (tested), a tenth of its CPU
        parts = [primary.header.tostring().encode("ascii")]
        for hdu in hdus:
            parts.append(hdu.header.tostring().encode("ascii"))
            pixels = np.ascontiguousarray(hdu.data, dtype=hdu.data.dtype.newbyteorder(">"))
            parts += [pixels.tobytes(), bytes(-pixels.nbytes % _FITS_BLOCK)]
        parts.append(table_bytes)
        atomic_write_bytes(final, b"".join(parts), fsync=False)
        return final
    thdu = fits.table_to_hdu(tab)
    thdu.name = "CANDIDATES"
    hdus.append(thdu)
    with atomic_write_path(final) as tmp:
        fits.HDUList([primary, *hdus]).writeto(tmp)
    return final


def read_stamps_fits(path: str | os.PathLike[str]) -> tuple[Stamps, Table]:
    """Read a file written by :func:`write_stamps_fits`.

    Returns
    -------
    (Stamps, astropy.table.Table)
        The stamps and the candidate table (with ``STAMP_X0``, ``STAMP_Y0``).

    Raises
    ------
    MissingFileError, CorruptFileError
    """
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(p, None, "stamps file does not exist")
    try:
        with fits.open(p, memmap=False) as hdul:
            hdr = hdul[0].header
            kinds = tuple(str(hdr[f"KIND{k}"]) for k in range(1, int(hdr["NKIND"]) + 1))
            data = np.stack([np.asarray(hdul[kind.upper()].data, dtype=np.float32)
                             for kind in kinds], axis=1)
            bits = np.asarray(hdul["VALID"].data)
            valid = np.stack([(bits >> k) & 1 for k in range(len(kinds))], axis=1).astype(bool)
            table = Table(hdul["CANDIDATES"].data)
            fill = float(hdr["FILL"])
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise CorruptFileError(p, None, f"not a desgw stamps file: {exc}") from None
    stamps = Stamps(data=data, valid=valid, kinds=kinds,
                    x0=np.asarray(table["STAMP_X0"], np.int64),
                    y0=np.asarray(table["STAMP_Y0"], np.int64), fill=fill)
    return stamps, table


def write_stamps_png(directory: str | os.PathLike[str], stamps: Stamps,
                     ids: Sequence[int | str] | NDArray[np.integer], *,
                     stretch: str = "zscale", scale: int = 2, gap: int = 2,
                     prefix: str = "stamp_") -> list[Path]:
    """Write one PNG per candidate, panels side by side (layout in the module docstring).

    Parameters
    ----------
    directory : path-like
        Output directory (created).
    stamps : Stamps
        From :func:`cutout_stamps`.
    ids : sequence
        (n,) candidate identifiers used in the file names.
    stretch : {"zscale", "asinh"}
        Per-panel display stretch (see :func:`desgw.diff.stamps_png.stretch_to_uint8`).
    scale : int
        Integer enlargement (nearest neighbour).
    gap : int
        White separator between panels (px, before enlargement).
    prefix : str
        File name prefix.

    Returns
    -------
    list of pathlib.Path
        The files written (atomically), in stamp order.
    """
    n = len(stamps)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} stamps")
    if scale < 1 or gap < 0:
        raise ValueError("scale must be >= 1 and gap >= 0")
    out_dir = Path(directory)
    size, nk = stamps.size, len(stamps.kinds)
    width = nk * size + (nk - 1) * gap
    paths = []
    for i in range(n):
        canvas = np.full((size, width), 255, dtype=np.uint8)
        for k in range(nk):
            panel = stretch_to_uint8(stamps.data[i, k], stamps.valid[i, k], stretch=stretch)
            c0 = k * (size + gap)
            canvas[:, c0:c0 + size] = panel
        canvas = canvas[::-1]  # CCD +y up
        if scale > 1:
            canvas = np.repeat(np.repeat(canvas, scale, axis=0), scale, axis=1)
        # one fsync of the folder at the end, not one per picture (~8 ms of wall time each)
        paths.append(atomic_write_bytes(out_dir / f"{prefix}{ids[i]}.png",
                                        encode_png_gray(canvas), fsync=False))
    if paths:
        fsync_directory(out_dir)
    log.debug("wrote %d stamp pictures to %s", n, out_dir)
    return paths
