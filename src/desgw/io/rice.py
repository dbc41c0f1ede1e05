"""RICE_1 tile-compressed FITS image HDUs encoded with numba (quantise, dither and Rice code).

The FITS tiled-image compression convention (Pence, White & Seaman; FITS standard 4.0,
section 10) stores an image as a binary table with one row per tile: the tile's
Rice-coded integers in a variable-length byte array (``COMPRESSED_DATA``) and, for a
quantised float image, the tile's scale and zero point (``ZSCALE``, ``ZZERO``). This module
writes such HDUs itself, one tile per image row, for:

* float images quantised with a fixed absolute step ``delta`` and ``SUBTRACTIVE_DITHER_2``:
  per tile, ``ZZERO = min - delta * (-2147483647 + 10)`` (the tile's minimum lands just above
  the reserved integers, as cfitsio places it) and each pixel
  ``q = nint((f - ZZERO) / delta + r - 0.5)`` with ``r`` the convention's dither sequence
  (10000 Park-Miller values; tile ``i`` (0-based) starts at sequence entry
  ``(i + ZDITHER0 - 1) mod 10000`` and pixel index ``int(500 r)`` of it); exact zeros become
  the reserved integer -2147483646 and decode to 0 exactly. ``nint`` rounds halves away from
  zero. Readers restore ``(q - r + 0.5) * delta + ZZERO``;
* integer images (masks), losslessly.

The Rice coder takes 32-pixel blocks of first differences (``BLOCKSIZE`` 32, ``BYTEPIX`` 4
for 32-bit integers, 2 for 16-bit), folded to unsigned (``2d`` or ``-2d - 1``); each block
stores its split level ``fs`` (chosen from the block's mean folded difference) in 5 (4) bits,
then per pixel ``v >> fs`` in unary and the low ``fs`` bits verbatim; a block of zeros costs
the level code alone, and a block with ``fs`` at the maximum stores the values verbatim.

Why our own encoder: cfitsio (through fitsio) spends ~0.3 CPU-s on each 4096 x 2048 float
plane (quantise, Rice code, and its buffered heap writes tile by tile); this does the same in
~0.06-0.09 CPU-s (``bench/bench_codecs.py``, ``bench/bench_codec_planes.py``). The output is
checked against cfitsio in ``tests/io/test_rice.py``: astropy and fitsio decode it to
exactly the values the rule above gives, and those equal what cfitsio's own write decodes
to.

The module also decodes integer images stored as RICE_1 row tiles (:func:`decode_int_tiles`:
raw DECam CCDs, fpack's layout; ~0.09 against cfitsio's ~0.23 CPU-s per CCD, the same
values), and holds the one-pass scans the quantisation steps come from
(:func:`weight_stats`, :func:`positive_sample`, :func:`row_differences`) and the
difference image's weight plane (:func:`inverse_variance`).
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np

__all__ = [
    "ZERO_VALUE",
    "dither_sequence",
    "weight_stats",
    "encode_float_tiles",
    "encode_int_tiles",
    "decode_int_tiles",
    "quantise_reference",
    "positive_sample",
    "row_differences",
]

#: Integer that stands for an exact 0.0 under SUBTRACTIVE_DITHER_2.
ZERO_VALUE: int = -2147483646
_NULL_VALUE = -2147483647
_N_RESERVED = 10
_N_RANDOM = 10000
_BLOCK = 32


@functools.lru_cache(maxsize=1)
def dither_sequence() -> np.ndarray:
    """The tiled-image convention's 10000 dither values in [0, 1) (float32).

    Park-Miller minimal standard generator (a = 16807, m = 2**31 - 1, seed 1), evaluated in
    double precision as the convention prescribes; the 10000th seed must be 1043618065.
    """
    a, m = 16807.0, 2147483647.0
    seed = 1.0
    out = np.empty(_N_RANDOM, np.float32)
    for i in range(_N_RANDOM):
        t = a * seed
        seed = t - m * int(t / m)
        out[i] = seed / m
    if int(seed) != 1043618065:  # pragma: no cover - arithmetic guard
        raise RuntimeError("dither sequence generator is wrong")
    return out


# ----------------------------------------------------------------------------- bit writer
# Bits accumulate in a 64-bit integer (``acc``, of which the low ``nacc`` < 32 bits are
# pending); every field appended is at most 32 bits wide, and once 32 bits are pending they
# go to the heap as four big-endian bytes. Each Rice-coded value (its unary high part, the
# stop bit and its ``fs`` low bits) is appended as one field when it fits in 32 bits.
@numba.njit(cache=True, inline="always")
def _flush(buf, pos, acc, nacc):
    """Write the 32 oldest pending bits of ``acc`` (``nacc`` >= 32 pending) to ``buf``."""
    nacc -= 32
    w = acc >> np.uint64(nacc)
    buf[pos] = np.uint8((w >> np.uint64(24)) & np.uint64(0xFF))
    buf[pos + 1] = np.uint8((w >> np.uint64(16)) & np.uint64(0xFF))
    buf[pos + 2] = np.uint8((w >> np.uint64(8)) & np.uint64(0xFF))
    buf[pos + 3] = np.uint8(w & np.uint64(0xFF))
    return pos + 4, nacc


@numba.njit(cache=True)
def _rice_row(vals, buf, pos, fsbits, fsmax, bbits, diff):
    """Rice-code one tile of integers (``bbits``-bit values in any integer array) into
    ``buf`` at ``pos``; return the new position (the last byte padded with zero bits).
    ``diff`` is scratch space of ``_BLOCK`` int64."""
    n = vals.shape[0]
    mask = (np.int64(1) << bbits) - 1
    half = np.int64(1) << (bbits - 1)
    acc = np.uint64(0)
    nacc = 0
    last = np.int64(vals[0])
    acc = (acc << np.uint64(bbits)) | np.uint64(last & mask)
    nacc += bbits
    if nacc >= 32:
        pos, nacc = _flush(buf, pos, acc, nacc)
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        nb = stop - start
        total = 0.0
        for j in range(nb):
            v = np.int64(vals[start + j])
            d = ((v - last + half) & mask) - half  # difference wrapped to bbits, signed
            last = v
            z = (d << 1) if d >= 0 else ((-d) << 1) - 1
            diff[j] = z
            total += z
        # split level from the block's mean folded difference (as cfitsio chooses it)
        dpsum = (total - (nb // 2) - 1) / nb
        if dpsum < 0:
            dpsum = 0.0
        psum = np.int64(dpsum) >> 1
        fs = 0
        while psum > 0:
            psum >>= 1
            fs += 1
        if fs >= fsmax:
            acc = (acc << np.uint64(fsbits)) | np.uint64(fsmax + 1)
            nacc += fsbits
            if nacc >= 32:
                pos, nacc = _flush(buf, pos, acc, nacc)
            for j in range(nb):
                acc = (acc << np.uint64(bbits)) | np.uint64(diff[j] & mask)
                nacc += bbits
                if nacc >= 32:
                    pos, nacc = _flush(buf, pos, acc, nacc)
        elif fs == 0 and total == 0:
            acc = acc << np.uint64(fsbits)
            nacc += fsbits
            if nacc >= 32:
                pos, nacc = _flush(buf, pos, acc, nacc)
        else:
            acc = (acc << np.uint64(fsbits)) | np.uint64(fs + 1)
            nacc += fsbits
            if nacc >= 32:
                pos, nacc = _flush(buf, pos, acc, nacc)
            low = (np.int64(1) << fs) - 1
            stop_bit = np.int64(1) << fs
            for j in range(nb):
                z = diff[j]
                top = z >> fs
                if top + 1 + fs <= 32:  # unary part, stop bit and low bits in one field
                    acc = (acc << np.uint64(top + 1 + fs)) | np.uint64(stop_bit | (z & low))
                    nacc += top + 1 + fs
                    if nacc >= 32:
                        pos, nacc = _flush(buf, pos, acc, nacc)
                    continue
                while top >= 24:  # long runs of zeros: 24 at a time
                    acc = acc << np.uint64(24)
                    nacc += 24
                    if nacc >= 32:
                        pos, nacc = _flush(buf, pos, acc, nacc)
                    top -= 24
                acc = (acc << np.uint64(top + 1)) | np.uint64(1)
                nacc += top + 1
                if nacc >= 32:
                    pos, nacc = _flush(buf, pos, acc, nacc)
                acc = (acc << np.uint64(fs)) | np.uint64(z & low)
                nacc += fs
                if nacc >= 32:
                    pos, nacc = _flush(buf, pos, acc, nacc)
    while nacc >= 8:
        nacc -= 8
        buf[pos] = np.uint8((acc >> np.uint64(nacc)) & np.uint64(0xFF))
        pos += 1
    if nacc > 0:
        buf[pos] = np.uint8((acc << np.uint64(8 - nacc)) & np.uint64(0xFF))
        pos += 1
    return pos


@numba.njit(cache=True)
def _row_dither(rand, row, dither0, r):
    """The dither values of tile ``row`` (0-based) less 0.5, one per pixel, into ``r``."""
    nx = r.shape[0]
    iseed = (row + dither0 - 1) % _N_RANDOM
    nxt = int(rand[iseed] * 500.0)
    i = 0
    while i < nx:  # runs of the sequence until it wraps
        take = min(nx - i, _N_RANDOM - nxt)
        for j in range(take):
            r[i + j] = np.float64(rand[nxt + j]) - 0.5
        i += take
        nxt += take
        if nxt == _N_RANDOM:
            iseed += 1
            if iseed == _N_RANDOM:
                iseed = 0
            nxt = int(rand[iseed] * 500.0)


@numba.njit(cache=True)
def _row_range(bits, row, pair):
    """Smallest and largest value of a float32 row given as its int32 bit patterns, and
    whether all are finite. Integer keys ordered as the floats (sign-magnitude folded to
    two's complement) so that the loop vectorises, which a float min/max loop does not
    without fast-math; ``pair`` (int32[2]) is scratch space for the conversion back."""
    lo = np.int32(2147483647)
    hi = np.int32(-2147483648)
    bad = np.int32(0)
    for i in range(bits.shape[1]):
        u = bits[row, i]
        bad |= np.int32((u & np.int32(0x7F800000)) == np.int32(0x7F800000))
        k = u ^ ((u >> np.int32(31)) & np.int32(0x7FFFFFFF))
        lo = min(lo, k)
        hi = max(hi, k)
    pair[0] = lo ^ ((lo >> np.int32(31)) & np.int32(0x7FFFFFFF))
    pair[1] = hi ^ ((hi >> np.int32(31)) & np.int32(0x7FFFFFFF))
    f = pair.view(np.float32)
    return f[0], f[1], bad == 0


@numba.njit(cache=True)
def _encode_float(data, bits, delta, dither0, rand, buf, offsets, nbytes, zzero):
    """Quantise (SUBTRACTIVE_DITHER_2) and Rice-code every row of ``data`` (``bits``: the
    same pixels viewed as int32); return the heap length, or ``-1 - row`` for the first row
    with a non-finite value or whose range does not fit in 32-bit integers at this step.

    Per row: one pass for the range and finiteness, one for the quantised integers (both
    vectorised by the compiler), one to Rice-code them."""
    ny, nx = data.shape
    q = np.empty(nx, np.int64)
    r = np.empty(nx, np.float64)
    diff = np.empty(_BLOCK, np.int64)
    pair = np.empty(2, np.int32)
    pos = 0
    for row in range(ny):
        lo, hi, finite = _row_range(bits, row, pair)
        if not finite:
            return -1 - row
        if (np.float64(hi) - np.float64(lo)) / delta > 2.0 * 2147483647.0 - _N_RESERVED:
            return -1 - row
        zero = np.float64(lo) - delta * (_NULL_VALUE + _N_RESERVED)
        _row_dither(rand, row, dither0, r)
        for i in range(nx):
            v = data[row, i]
            x = (np.float64(v) - zero) / delta + r[i]
            k = np.int64(x + 0.5) if x >= 0.0 else np.int64(x - 0.5)
            q[i] = ZERO_VALUE if v == 0.0 else k
        offsets[row] = pos
        zzero[row] = zero
        pos = _rice_row(q, buf, pos, 5, 25, 32, diff)
        nbytes[row] = pos - offsets[row]
    return pos


@numba.njit(cache=True)
def _encode_int(data, fsbits, fsmax, bbits, buf, offsets, nbytes):
    """Rice-code every row of an integer image losslessly; return the heap length."""
    ny = data.shape[0]
    diff = np.empty(_BLOCK, np.int64)
    pos = 0
    for row in range(ny):
        offsets[row] = pos
        pos = _rice_row(data[row], buf, pos, fsbits, fsmax, bbits, diff)
        nbytes[row] = pos - offsets[row]
    return pos


@numba.njit(cache=True)
def _weight_stats(bits):
    """(all finite, smallest value, smallest positive value or +inf) of float32 values given
    as their int32 bit patterns: integer keys ordered as the floats, so that the loop
    vectorises (a float min/max loop does not without fast-math). Positive floats, +inf
    included, are the patterns in (0, 0x7F800000]."""
    lo = np.int32(2147483647)
    pos_min = np.int32(2147483647)
    bad = np.int32(0)
    for i in range(bits.shape[0]):
        u = bits[i]
        bad |= np.int32((u & np.int32(0x7F800000)) == np.int32(0x7F800000))
        lo = min(lo, u ^ ((u >> np.int32(31)) & np.int32(0x7FFFFFFF)))
        pos_min = min(pos_min, u if (u > 0) & (u <= np.int32(0x7F800000))
                      else np.int32(2147483647))
    pair = np.empty(2, np.int32)
    pair[0] = lo ^ ((lo >> np.int32(31)) & np.int32(0x7FFFFFFF))
    pair[1] = pos_min if pos_min != np.int32(2147483647) else np.int32(0x7F800000)
    f = pair.view(np.float32)
    return bad == 0, f[0], f[1]


def weight_stats(weight: np.ndarray) -> tuple[bool, float, float]:
    """One pass over a weight plane: (all values finite, smallest finite value, smallest
    positive value) -- the last ``inf`` when none is positive. float32 values, as stored."""
    w = np.ascontiguousarray(weight, dtype=np.float32)
    if w.size == 0:
        return True, math.inf, math.inf
    finite, lo, pos = _weight_stats(w.ravel().view(np.int32))
    if not finite:  # the minimum of the finite values
        fin = w[np.isfinite(w)]
        lo = float(fin.min()) if fin.size else math.inf
    return bool(finite), float(lo), float(pos)


@numba.njit(cache=True)
def _inverse_positive(v, out):
    one = np.float32(1.0)
    for i in range(v.shape[0]):
        x = v[i]
        out[i] = one / x if (x > 0) & (x < np.inf) else np.float32(0.0)


def inverse_variance(variance: np.ndarray) -> np.ndarray:
    """The weight plane of a variance plane in one pass: float32 ``1 / variance`` where the
    variance is finite and positive, 0 elsewhere (NaN, infinite, zero or negative): the
    values ``np.divide(1, variance, where=finite & > 0)`` gives into zeros (IEEE float32
    division), without its three temporary masks (~18 -> ~4 ms for 4096 x 2048)."""
    v = np.ascontiguousarray(variance, dtype=np.float32)
    out = np.empty(v.shape, np.float32)
    _inverse_positive(v.ravel(), out.ravel())
    return out


@numba.njit(cache=True)
def _positive_every(w, every):
    """The finite positive values of ``w[::every]`` (1-D), in order."""
    out = np.empty((w.shape[0] + every - 1) // every, w.dtype)
    n = 0
    for i in range(0, w.shape[0], every):
        v = w[i]
        out[n] = v
        n += np.isfinite(v) and v > 0
    return out[:n]


@numba.njit(cache=True)
def _row_differences(image, weight, every):
    """``image[r, i + 1] - image[r, i]`` (float64) on every ``every``-th row ``r`` where both
    pixels are finite and have positive weight, in row-major order."""
    ny, nx = image.shape
    out = np.empty(((ny + every - 1) // every) * (nx - 1), np.float64)
    n = 0
    for r in range(0, ny, every):
        for i in range(nx - 1):
            a = np.float64(image[r, i])
            b = np.float64(image[r, i + 1])
            d = b - a
            out[n] = d
            n += (weight[r, i + 1] > 0) and (weight[r, i] > 0) and np.isfinite(a) \
                and np.isfinite(b)
    return out[:n]


def positive_sample(weight: np.ndarray, every: int) -> np.ndarray:
    """The finite positive values among every ``every``-th value of ``weight`` (flattened in
    C order), in order, in ``weight``'s dtype: ``w[::every][isfinite & (w > 0)]`` in one
    pass."""
    w = np.ascontiguousarray(weight).ravel()
    if w.dtype not in (np.float32, np.float64):
        w = w.astype(np.float64)
    if w.size == 0:
        return w
    return _positive_every(w, int(every))


def row_differences(image: np.ndarray, weight: np.ndarray, every: int) -> np.ndarray:
    """Differences of horizontally neighbouring pixels (float64) on every ``every``-th row,
    where both are finite with positive weight, in row-major order: the same values as
    ``np.diff(image[::every].astype(float64), axis=1)[good]``, in one pass."""
    img = np.ascontiguousarray(image)
    if img.dtype not in (np.float32, np.float64):
        img = img.astype(np.float64)
    wgt = np.ascontiguousarray(weight)
    if img.ndim != 2 or wgt.shape != img.shape:
        raise ValueError(f"image {img.shape} and weight {wgt.shape} must be 2-D of one shape")
    if img.shape[1] < 2 or img.shape[0] == 0:
        return np.empty(0, np.float64)
    return _row_differences(img, wgt, int(every))


#: Number of significant bits of each byte value (0 for 0): the unary decoder's table.
_NONZERO = np.array([0] + [int(v).bit_length() for v in range(1, 256)], np.int64)


@numba.njit(cache=True)
def _decode_rows(heap, nbytes, offsets, out, bbits, fsbits, fsmax, nonzero, offset):
    """Decode Rice-coded row tiles (as :func:`_rice_row` writes them) into ``out`` (one row
    per tile), adding ``offset`` (BZERO) to each signed ``bbits``-bit value. Every read is
    checked against the tile's bytes and the heap; return 0, or ``-1 - row`` for the first
    tile that is inconsistent (overruns its bytes or ends before them, an impossible split
    level)."""
    ny, nx = out.shape
    mask = (np.int64(1) << bbits) - 1
    half = np.int64(1) << (bbits - 1)
    nheap = heap.shape[0]
    for row in range(ny):
        p = offsets[row]
        end = p + nbytes[row]
        if p < 0 or end > nheap or nbytes[row] < bbits // 8:
            return -1 - row
        lastpix = np.int64(0)
        for _ in range(bbits // 8):
            lastpix = (lastpix << 8) | np.int64(heap[p])
            p += 1
        b = np.int64(0)  # pending bits (fewer than 8 between values), and their number
        nbits = 0
        i = 0
        while i < nx:
            while nbits < fsbits:
                if p >= end:
                    return -1 - row
                b = (b << 8) | np.int64(heap[p])
                p += 1
                nbits += 8
            nbits -= fsbits
            fs = (b >> nbits) - 1
            b &= (np.int64(1) << nbits) - 1
            imax = min(i + _BLOCK, nx)
            if fs < 0:  # a block of zero differences
                v = ((lastpix + half) & mask) - half + offset
                for j in range(i, imax):
                    out[row, j] = v
            elif fs == fsmax:  # differences stored verbatim
                for j in range(i, imax):
                    while nbits < bbits:
                        if p >= end:
                            return -1 - row
                        b = (b << 8) | np.int64(heap[p])
                        p += 1
                        nbits += 8
                    nbits -= bbits
                    diff = b >> nbits
                    b &= (np.int64(1) << nbits) - 1
                    diff = ~(diff >> 1) if diff & 1 else diff >> 1
                    lastpix = (lastpix + diff) & mask
                    out[row, j] = ((lastpix + half) & mask) - half + offset
            elif fs > fsmax:
                return -1 - row
            else:
                for j in range(i, imax):
                    while b == 0:  # the unary part: leading zeros up to a one bit
                        if p >= end:
                            return -1 - row
                        nbits += 8
                        b = np.int64(heap[p])
                        p += 1
                    nzero = nbits - nonzero[b]
                    nbits -= nzero + 1
                    b ^= np.int64(1) << nbits
                    nbits -= fs
                    while nbits < 0:
                        if p >= end:
                            return -1 - row
                        b = (b << 8) | np.int64(heap[p])
                        p += 1
                        nbits += 8
                    diff = (np.int64(nzero) << fs) | (b >> nbits)
                    b &= (np.int64(1) << nbits) - 1
                    diff = ~(diff >> 1) if diff & 1 else diff >> 1
                    lastpix = (lastpix + diff) & mask
                    out[row, j] = ((lastpix + half) & mask) - half + offset
            i = imax
        if p != end:  # a tile that does not end where its bytes do
            return -1 - row
    return 0


def decode_int_tiles(heap: np.ndarray, nbytes: np.ndarray, offsets: np.ndarray,
                     shape: tuple[int, int], bytepix: int, offset: int,
                     dtype: np.dtype | type) -> np.ndarray | None:
    """Decode a RICE_1 integer image stored one tile per row (``BLOCKSIZE`` 32).

    Parameters
    ----------
    heap : numpy.ndarray
        The HDU's heap (uint8).
    nbytes, offsets : numpy.ndarray
        Each tile's byte count and offset in the heap (the ``COMPRESSED_DATA`` descriptors).
    shape : tuple of int
        (rows, columns) of the image; one tile per row.
    bytepix : int
        ``BYTEPIX``: 2 (16-bit values) or 4 (32-bit).
    offset : int
        Added to every signed value (``BZERO``, with ``BSCALE`` 1).
    dtype : numpy dtype
        Of the result; must hold every value plus ``offset``.

    Returns
    -------
    numpy.ndarray or None
        The pixels; None when a tile is inconsistent (overruns its bytes or the heap, ends
        before them, an impossible split level): the caller reads the image another way, whose error
        describes the damage.
    """
    if bytepix == 2:
        bbits, fsbits, fsmax = 16, 4, 14
    elif bytepix == 4:
        bbits, fsbits, fsmax = 32, 5, 25
    else:
        raise ValueError(f"BYTEPIX must be 2 or 4, got {bytepix}")
    ny, nx = shape
    if len(nbytes) != ny or len(offsets) != ny:
        raise ValueError(f"{len(nbytes)} tiles for {ny} rows")
    out = np.empty((ny, nx), dtype)
    status = _decode_rows(np.ascontiguousarray(heap, np.uint8),
                          np.asarray(nbytes, np.int64), np.asarray(offsets, np.int64), out,
                          bbits, fsbits, fsmax, _NONZERO, int(offset))
    return out if status == 0 else None


def _heap_buffer(ny: int, nx: int, bytepix: int) -> np.ndarray:
    # worst case per tile: first value, a level code per block, every value verbatim, and
    # the unary stop bit of every value; plus the padding byte
    per_row = bytepix + math.ceil(nx / _BLOCK) + nx * bytepix + nx // 8 + 8
    return np.empty(ny * per_row, np.uint8)


def encode_float_tiles(data: np.ndarray, delta: float, dither_seed: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Quantise a finite float image row by row (absolute step, SUBTRACTIVE_DITHER_2) and
    Rice-code each row (``BYTEPIX`` 4).

    Parameters
    ----------
    data : numpy.ndarray
        2-D float32 image, every value finite (image units).
    delta : float
        Quantisation step (image units, > 0); it is stored, and used, as a float32 number
        (as cfitsio takes its quantisation level).
    dither_seed : int
        ZDITHER0, 1 .. 10000.

    Returns
    -------
    (heap, offsets, nbytes, zzero) or None
        The heap bytes (uint8), each tile's byte offset and length in it (int64) and ZZERO
        (float64; ZSCALE is ``delta`` for every tile); None when a row holds a NaN or an
        infinity or its range exceeds what 32-bit integers hold at this step (the caller
        stores the image another way).
    """
    a = np.ascontiguousarray(data, dtype=np.float32)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"need a non-empty 2-D image, got shape {a.shape}")
    step = float(np.float32(delta))
    if not step > 0 or not math.isfinite(step):
        raise ValueError(f"quantisation step must be finite and > 0, got {delta}")
    if not 1 <= int(dither_seed) <= _N_RANDOM:
        raise ValueError(f"dither seed must be 1..10000, got {dither_seed}")
    ny, nx = a.shape
    buf = _heap_buffer(ny, nx, 4)
    offsets = np.empty(ny, np.int64)
    nbytes = np.empty(ny, np.int64)
    zzero = np.empty(ny, np.float64)
    n = _encode_float(a, a.view(np.int32), step, int(dither_seed), dither_sequence(), buf,
                      offsets, nbytes, zzero)
    if n < 0:
        return None
    return buf[:n], offsets, nbytes, zzero


def encode_int_tiles(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Rice-code an int16 or int32 image losslessly, one tile per row.

    Returns
    -------
    (heap, offsets, nbytes, bytepix)
        Heap bytes, each tile's offset and length in it, and ``BYTEPIX`` (2 for int16, 4 for
        int32).
    """
    a = np.asarray(data)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"need a non-empty 2-D image, got shape {a.shape}")
    if a.dtype == np.int16:
        bytepix, fsbits, fsmax = 2, 4, 14
    elif a.dtype == np.int32:
        bytepix, fsbits, fsmax = 4, 5, 25
    else:
        raise ValueError(f"need int16 or int32 pixels, got {a.dtype}")
    a = np.ascontiguousarray(a)
    ny, nx = a.shape
    buf = _heap_buffer(ny, nx, bytepix)
    offsets = np.empty(ny, np.int64)
    nbytes = np.empty(ny, np.int64)
    n = _encode_int(a, fsbits, fsmax, 8 * bytepix, buf, offsets, nbytes)
    return buf[:n], offsets, nbytes, bytepix


def quantise_reference(data: np.ndarray, delta: float, dither_seed: int) -> np.ndarray:
    """What a reader decodes from :func:`encode_float_tiles`'s output, computed directly from
    the convention's rule in numpy (float32): the reference the encoder is tested against.

    Parameters and units as :func:`encode_float_tiles`.
    """
    a = np.asarray(data, dtype=np.float32)
    d = float(np.float32(delta))
    rand = dither_sequence().astype(np.float64)
    ny, nx = a.shape
    out = np.empty((ny, nx), np.float32)
    for row in range(ny):
        f = a[row].astype(np.float64)
        zero = float(a[row].min()) - d * (_NULL_VALUE + _N_RESERVED)
        r = np.empty(nx, np.float64)
        iseed = (row + int(dither_seed) - 1) % _N_RANDOM
        nxt = int(rand[iseed] * 500.0)
        i = 0
        while i < nx:  # runs of the sequence until it wraps
            take = min(nx - i, _N_RANDOM - nxt)
            r[i:i + take] = rand[nxt:nxt + take]
            i += take
            nxt += take
            if nxt == _N_RANDOM:
                iseed = (iseed + 1) % _N_RANDOM
                nxt = int(rand[iseed] * 500.0)
        x = (f - zero) / d + r - 0.5
        q = np.where(x >= 0, np.floor(x + 0.5), np.ceil(x - 0.5))
        dec = ((q - r + 0.5) * d + zero).astype(np.float32)
        dec[a[row] == 0] = 0.0
        out[row] = dec
    return out
