"""The "prepared template" file of a template CCD: what every later search needs, fast to read.

Every search CCD that a template CCD overlaps used to decompress the template's immask
(~0.45-1.0 CPU-s per CCD) and re-estimate its sky (~0.4 s). The prepared file keeps the result
once, next to the immask (``D{expnum:08d}_{band}_{ccd:02d}_r{R}p{P}_tmplprep-{settings}.dgt``):

* ``SCI``: the sky-subtracted image (e-), quantised with the step sigma / 16 of the noise
  (sigma from the median weight, as the immask SCI: quantisation noise sigma / 55, a
  0.03 % variance; rounding without dither is unbiased for values whose noise is 16 steps
  wide), stored as int16 when at most 1 % of the integers fall outside int16 (those, star
  cores brighter than ~2000 sigma, are stored apart as flat pixel indices and int32 values,
  one zstd block, and written over the int16 plane's zeros on reading), else int32. int16
  halves what zstd decompresses: a whole CCD's SCI reads in ~0.035 instead of ~0.075 CPU-s
  (compressed ~10 % smaller, format 2);
* ``WGT``: the inverse variance (e-**-2), quantised with the step (smallest positive weight) /
  1024 (every weight within 0.05 % of itself, zeros exact), int16 when it fits, else int32;
* ``MSK``: the mask bits, lossless (int16 when they fit, else int32);
* the immask's SCI header (WCS, zeropoint, exposure keywords) and the global sky level and
  rms that were subtracted.

Each plane is cut in blocks of 256 rows, each compressed with zstd level 1 (pyarrow's codec:
no new dependency; a byte shuffle made the quantised planes larger and slower to decode), so a
read of only the rows a search CCD needs decompresses only their blocks. Measured on a
simulated 4096 x 2048 template CCD, one core: the whole CCD reads in ~0.1 CPU-s (a 1500-row
part in 0.05 s) against 1.0 s to decompress its immask (written by the former codecs) and
0.4 s to estimate its sky; the file takes ~20 MB.

The file is a cache, not an archival product: its header records the key it was made from
(the immask's name, size, modification time and inode, and a hash of the settings that made
the sky, given by the caller); :func:`read_prepared` returns None for a missing file or one whose
key differs (template reprocessed, other ``r{R}p{P}``, other settings), and the caller makes it
again. It is written atomically, so concurrent writers of the same template CCD are safe (the
last complete file wins; both are identical).

Layout: 8 bytes magic ``DGWTPL01``, an 8-byte little-endian length, that many bytes of JSON
(shape, block rows, planes with dtype, step, block offsets and the overflow block's offset,
length and count, key, header text), then the compressed blocks.
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from desgw.errors import CorruptFileError, MissingFileError

from ._fitsutil import clean_header
from .products import product_wcs
from .atomic import atomic_write_path
from .fitscodec import noise_step, weight_step

__all__ = [
    "PREPARED_FORMAT",
    "PreparedTemplate",
    "prepared_path",
    "preparation_lock",
    "read_prepared",
    "source_stamp",
    "write_prepared",
]

log = logging.getLogger(__name__)

#: Version of the file layout (part of the key: a new layout never reads an old file).
PREPARED_FORMAT = 2
_MAGIC = b"DGWTPL01"
_BLOCK_ROWS = 256
_ZSTD_LEVEL = 1
#: Largest fraction of a quantised plane's integers outside int16 for which the plane is
#: stored as int16 with those integers apart (beyond it, int32).
_OVERFLOW_FRACTION = 0.01


@dataclass(frozen=True)
class PreparedTemplate:
    """A prepared template CCD (or the rows and columns of it that were asked for).

    Attributes
    ----------
    image : numpy.ndarray
        float32 sky-subtracted image (e-).
    mask : numpy.ndarray
        int32 mask bits.
    weight : numpy.ndarray
        float32 inverse variance (e-**-2); 0 = unusable.
    header : astropy.io.fits.Header
        The immask's SCI header (without structural keywords).
    wcs : astropy.wcs.WCS or None
        The WCS of the pixels returned (shifted to the cut-out when a part was read).
    origin : tuple[int, int]
        (x0, y0): full-CCD pixel of the first pixel returned.
    sky, sky_rms : float
        Global sky level and rms (e-) that were subtracted.
    """

    image: np.ndarray = field(repr=False)
    mask: np.ndarray = field(repr=False)
    weight: np.ndarray = field(repr=False)
    header: fits.Header = field(repr=False)
    wcs: WCS | None = field(repr=False)
    origin: tuple[int, int] = (0, 0)
    sky: float = math.nan
    sky_rms: float = math.nan


def source_stamp(immask: str | os.PathLike[str]) -> dict[str, Any]:
    """The identity of an immask file for the key: name, size, mtime (ns) and inode.

    A reprocessed template is written anew (atomically: a new inode and time), so its stamp
    changes. Costs one ``stat``.

    Raises
    ------
    MissingFileError
        No such file.
    """
    p = Path(immask)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise MissingFileError(p, None, "file does not exist") from None
    return {"name": p.name, "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns),
            "inode": int(st.st_ino)}


def prepared_path(immask: str | os.PathLike[str], settings_hash: str) -> Path:
    """Where the prepared form of ``immask`` made with settings ``settings_hash`` lives."""
    p = Path(immask)
    name = p.name
    for suffix in ("_immask.fits.fz", "_immask.fits", ".fits.fz", ".fits"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return p.with_name(f"{name}_tmplprep-{settings_hash}.dgt")


@contextmanager
def preparation_lock(path: str | os.PathLike[str], *, timeout_s: float = 300.0,
                     poll_s: float = 0.05) -> Iterator[bool]:
    """Hold an advisory lock (``flock``) on ``.{name}.lock`` next to a prepared file while it
    is made, so that concurrent diffs of search CCDs that share a template CCD make it once:
    the second waits, then reads what the first wrote.

    Yields True when the lock is held, False when it could not be taken (a folder that cannot
    be written, a file system without locks, or ``timeout_s`` passed): the caller then simply
    makes the file itself (atomic writes keep that safe). The empty lock file is left in place
    (removing it would race with a waiting process).
    """
    p = Path(path)
    lock = p.with_name(f".{p.name}.lock")
    try:
        import fcntl

        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except (ImportError, OSError) as exc:
        log.debug("%s: no lock (%s)", lock, exc)
        yield False
        return
    held = False
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    log.warning("%s: still locked after %.0f s; preparing without it", lock,
                                timeout_s)
                    break
                time.sleep(poll_s)
            except OSError as exc:  # no locking on this file system
                log.debug("%s: no lock (%s)", lock, exc)
                break
        yield held
    finally:
        if held:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _key(source: dict[str, Any], settings_hash: str) -> dict[str, Any]:
    return {"format": PREPARED_FORMAT, "source": dict(source), "settings": str(settings_hash)}


def _small_int(a: np.ndarray) -> np.ndarray:
    if a.size == 0 or (int(a.min()) >= -32768 and int(a.max()) <= 32767):
        return a.astype(np.int16)
    return a.astype(np.int32)


def _quantise(a: np.ndarray, step: float) -> tuple[np.ndarray, float | None]:
    """Integers ``rint(a / step)`` and the step; the float32 plane itself (step None) when it
    cannot be quantised (no step, non-finite values, or a range beyond int32)."""
    a = np.asarray(a, dtype=np.float32)
    if step > 0 and np.isfinite(a).all():
        q = np.rint(a / np.float32(step))
        if q.size == 0 or float(np.abs(q).max()) < 2**31 - 1:
            return _small_int(q), float(step)
    return a, None


def _split_overflow(q: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """An int32 plane as int16 with the integers outside int16 set to 0, and those integers'
    flat indices (int64) and values (int32) packed in one byte array; the plane unchanged
    (and None) when more than ``_OVERFLOW_FRACTION`` of it is outside int16."""
    if q.dtype != np.int32:
        return q, None
    out = (q < -32768) | (q > 32767)
    idx = np.flatnonzero(out)
    if idx.size > _OVERFLOW_FRACTION * q.size:
        return q, None
    small = q.astype(np.int16)
    if idx.size == 0:
        return small, None
    small.ravel()[idx] = 0
    vals = q.ravel()[idx]
    packed = np.concatenate([idx.astype("<i8").view(np.uint8),
                             vals.astype("<i4").view(np.uint8)])
    return small, packed


def _encode(a: np.ndarray, codec: Any) -> list[bytes]:
    blocks = []
    for r0 in range(0, a.shape[0], _BLOCK_ROWS):
        blocks.append(codec.compress(np.ascontiguousarray(a[r0:r0 + _BLOCK_ROWS]),
                                     asbytes=True))
    return blocks


def write_prepared(path: str | os.PathLike[str], image: np.ndarray, mask: np.ndarray,
                   weight: np.ndarray, header: fits.Header | None, *, source: dict[str, Any],
                   settings_hash: str, sky: float = math.nan,
                   sky_rms: float = math.nan) -> Path:
    """Write a prepared template file atomically (module docstring).

    Parameters
    ----------
    path : path-like
        Normally :func:`prepared_path` of the immask.
    image : numpy.ndarray
        Sky-subtracted image (e-), 2-D.
    mask : numpy.ndarray
        Integer mask bits, same shape, >= 0.
    weight : numpy.ndarray
        Inverse variance (e-**-2), same shape, >= 0.
    header : astropy.io.fits.Header or None
        The immask SCI header (WCS and keywords).
    source : dict
        :func:`source_stamp` of the immask the planes come from.
    settings_hash : str
        Hash of the settings that made the sky (the caller's; part of the key).
    sky, sky_rms : float
        Global sky level and rms that were subtracted (e-).

    Raises
    ------
    CorruptFileError
        Planes of different shapes or not 2-D, or a non-integer mask.
    """
    import pyarrow as pa

    final = Path(path)
    img = np.asarray(image)
    msk = np.asarray(mask)
    wgt = np.asarray(weight, dtype=np.float32)
    if img.ndim != 2 or img.shape != msk.shape or img.shape != wgt.shape:
        raise CorruptFileError(final, None, f"image {img.shape}, mask {msk.shape} and weight "
                               f"{wgt.shape} must be 2-D of one shape")
    if not np.issubdtype(msk.dtype, np.integer):
        raise CorruptFileError(final, "MSK", f"mask must be integer, got {msk.dtype}")
    codec = pa.Codec("zstd", compression_level=_ZSTD_LEVEL)
    planes: dict[str, tuple[np.ndarray, float | None]] = {
        "SCI": _quantise(img, noise_step(wgt, image=img)),
        "WGT": _quantise(wgt, weight_step(wgt)),
        "MSK": (_small_int(msk), None),
    }
    meta: dict[str, Any] = {"key": _key(source, settings_hash), "shape": list(img.shape),
                            "block_rows": _BLOCK_ROWS, "sky": float(sky),
                            "sky_rms": float(sky_rms),
                            "header": clean_header(header).tostring(sep="\n"), "planes": {}}
    chunks: list[bytes] = []
    offset = 0
    for name, (data, step) in planes.items():
        data, overflow = _split_overflow(data) if step is not None else (data, None)
        blocks = _encode(data, codec)
        spans = []
        for b in blocks:
            spans.append([offset, len(b)])
            offset += len(b)
        chunks.extend(blocks)
        meta["planes"][name] = {"dtype": data.dtype.str, "step": step, "blocks": spans}
        if overflow is not None:
            blob = codec.compress(overflow, asbytes=True)
            meta["planes"][name]["overflow"] = [offset, len(blob), int(overflow.size // 12)]
            chunks.append(blob)
            offset += len(blob)
    text = json.dumps(meta, allow_nan=True).encode()
    with atomic_write_path(final) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(_MAGIC)
            fh.write(struct.pack("<Q", len(text)))
            fh.write(text)
            for c in chunks:
                fh.write(c)
    log.debug("wrote prepared template %s (%.1f MB)", final, (offset + len(text)) / 1e6)
    return final


def _read_meta(fh: Any, path: Path) -> tuple[dict[str, Any], int]:
    head = fh.read(16)
    if len(head) < 16 or head[:8] != _MAGIC:
        raise CorruptFileError(path, None, "not a prepared template file (bad magic)")
    (n,) = struct.unpack("<Q", head[8:])
    if n > 64 * 2**20:
        raise CorruptFileError(path, None, f"implausible header length {n}")
    text = fh.read(n)
    if len(text) != n:
        raise CorruptFileError(path, None, "file is truncated in its header")
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise CorruptFileError(path, None, f"unreadable header ({exc})") from None
    return meta, 16 + n


def _decode_plane(fh: Any, path: Path, name: str, info: dict[str, Any], data_start: int,
                  shape: tuple[int, int], block_rows: int, rows: slice, cols: slice,
                  out_dtype: Any, codec: Any, size: int) -> np.ndarray:
    dtype = np.dtype(info["dtype"])
    ny, nx = shape
    r0, r1 = rows.start, rows.stop
    out = np.empty((r1 - r0, cols.stop - cols.start), dtype=out_dtype)
    blocks = info["blocks"]
    step = info["step"]
    for k in range(r0 // block_rows, (r1 - 1) // block_rows + 1 if r1 > r0 else 0):
        b0 = k * block_rows
        nrows = min(block_rows, ny - b0)
        off, length = blocks[k]
        if data_start + off + length > size:
            raise CorruptFileError(path, name, "file is truncated")
        fh.seek(data_start + off)
        raw = fh.read(length)
        try:
            buf = codec.decompress(raw, decompressed_size=nrows * nx * dtype.itemsize,
                                   asbytes=False)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises OSError / ArrowException
            raise CorruptFileError(path, name, f"block {k} cannot be decompressed ({exc})"
                                   ) from None
        vals = np.frombuffer(buf, dtype).reshape(nrows, nx)
        lo, hi = max(r0, b0), min(r1, b0 + nrows)
        part = vals[lo - b0:hi - b0, cols]
        dst = out[lo - r0:hi - r0]
        if step is None:
            dst[...] = part
        else:
            np.multiply(part, np.float32(step), out=dst, dtype=np.float32, casting="unsafe")
    if "overflow" in info and r1 > r0:
        _apply_overflow(fh, path, name, info, data_start, nx, rows, cols, out, codec, size)
    return out


def _apply_overflow(fh: Any, path: Path, name: str, info: dict[str, Any], data_start: int,
                    nx: int, rows: slice, cols: slice, out: np.ndarray, codec: Any,
                    size: int) -> None:
    """Write the integers stored apart from an int16 plane (times its step) into ``out``,
    the decoded ``rows`` x ``cols`` part of the plane."""
    try:
        off, length, count = (int(v) for v in info["overflow"])
    except (TypeError, ValueError) as exc:
        raise CorruptFileError(path, name, f"bad overflow entry ({exc})") from None
    if data_start + off + length > size:
        raise CorruptFileError(path, name, "file is truncated")
    fh.seek(data_start + off)
    raw = fh.read(length)
    try:
        buf = codec.decompress(raw, decompressed_size=12 * count, asbytes=False)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises OSError / ArrowException
        raise CorruptFileError(path, name, f"overflow block cannot be decompressed ({exc})"
                               ) from None
    packed = np.frombuffer(buf, np.uint8)
    idx = packed[:8 * count].view("<i8")
    vals = packed[8 * count:].view("<i4")
    y, x = np.divmod(idx, nx)
    keep = (y >= rows.start) & (y < rows.stop) & (x >= cols.start) & (x < cols.stop)
    step = info["step"]
    out[y[keep] - rows.start, x[keep] - cols.start] = np.multiply(
        vals[keep], np.float32(step), dtype=np.float32, casting="unsafe")


def read_prepared(path: str | os.PathLike[str], *, source: dict[str, Any],
                  settings_hash: str,
                  crop: Callable[[WCS | None, tuple[int, int]], tuple[slice, slice] | None]
                  | None = None) -> PreparedTemplate | None:
    """Read a prepared template file if it exists and was made from ``source`` with
    ``settings_hash``; else None (the caller prepares the template again).

    Parameters
    ----------
    path : path-like
    source : dict
        :func:`source_stamp` of the template's immask now.
    settings_hash : str
        Hash of the settings the caller would make the sky with.
    crop : callable or None
        ``crop(wcs, shape)`` -> (rows, columns) slices or None, as
        :func:`desgw.io.products.read_immask`: only those pixels are decoded (whole blocks of
        256 rows are decompressed) and the WCS is shifted to them.

    Raises
    ------
    CorruptFileError
        An existing file that cannot be read (bad magic, truncated, undecodable).
    HeaderError
        Its WCS cannot be built.
    """
    import pyarrow as pa

    p = Path(path)
    if not p.is_file():
        return None
    size = p.stat().st_size
    with open(p, "rb") as fh:
        meta, data_start = _read_meta(fh, p)
        if meta.get("key") != _key(source, settings_hash):
            log.info("%s: made from another immask or with other settings; not used", p.name)
            return None
        try:
            ny, nx = (int(v) for v in meta["shape"])
            block_rows = int(meta["block_rows"])
            header = fits.Header.fromstring(meta["header"], sep="\n")
            planes = meta["planes"]
            for name in ("SCI", "MSK", "WGT"):
                if len(planes[name]["blocks"]) != -(-ny // block_rows):
                    raise ValueError(f"{name} has the wrong number of blocks")
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptFileError(p, None, f"incomplete header ({exc})") from None
        wcs = product_wcs(header, p)
        box = crop(wcs, (ny, nx)) if crop is not None else None
        rows, cols = box if box is not None else (slice(0, ny), slice(0, nx))
        rows = slice(*rows.indices(ny)[:2])
        cols = slice(*cols.indices(nx)[:2])
        codec = pa.Codec("zstd")
        args = (data_start, (ny, nx), block_rows, rows, cols)
        sci = _decode_plane(fh, p, "SCI", planes["SCI"], *args, np.float32, codec, size)
        wgt = _decode_plane(fh, p, "WGT", planes["WGT"], *args, np.float32, codec, size)
        msk = _decode_plane(fh, p, "MSK", planes["MSK"], *args, np.int32, codec, size)
    origin = (0, 0)
    if box is not None:
        origin = (int(cols.start), int(rows.start))
        if wcs is not None:
            wcs = wcs.slice((rows, cols))
    return PreparedTemplate(sci, msk, wgt, header, wcs, origin, float(meta.get("sky", math.nan)),
                            float(meta.get("sky_rms", math.nan)))
