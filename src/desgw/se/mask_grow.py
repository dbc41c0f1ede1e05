"""Growing and applying pixel masks: binary dilation by a square, in one numba pass per
axis, and flagging pixels in a mask and weight map in one pass.

Object masks (the first pass's detections masked for the second background), the cosmic-ray
mask's faint track ends and similar masks are grown by ``g`` pixels, 8-connected: ``g``
3 x 3 dilations, which equal one dilation by a ``(2 g + 1)``-pixel square. The square is
separable, and along each axis a pixel is set when the nearest set pixel before or after it
lies within ``g``; :func:`grow_mask` computes that with two sweeps per axis, 4-5x faster than
``scipy.ndimage.maximum_filter`` on a full CCD (25-50 ms instead of 130-190 ms for 4096 x 2048
pixels, one core) and with the same result (outside the image counts as unset). A sparse
map (e.g. a CCD's ~2000 cosmic-ray pixels) is instead grown by painting the square around
each set pixel (6 instead of 24 ms, one core, loaded machine), with the same result.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["flag_pixels", "grow_mask"]

_FAR = 1 << 30


@njit(cache=True)
def _dilate_square(src, h):  # pragma: no cover - numba
    """``out[y, x]`` = some ``src`` pixel within ``h`` along both axes is non-zero."""
    ny, nx = src.shape
    tmp = np.zeros((ny, nx), np.bool_)
    for y in range(ny):
        last = -_FAR
        for x in range(nx):
            if src[y, x] != 0:
                last = x
            if x - last <= h:
                tmp[y, x] = True
        if last == -_FAR:  # an empty row
            continue
        nxt = _FAR
        for x in range(nx - 1, -1, -1):
            if src[y, x] != 0:
                nxt = x
            if nxt - x <= h:
                tmp[y, x] = True
    out = np.zeros((ny, nx), np.bool_)
    last_a = np.full(nx, -_FAR, np.int64)
    for y in range(ny):
        for x in range(nx):
            if tmp[y, x]:
                last_a[x] = y
            if y - last_a[x] <= h:
                out[y, x] = True
    nxt_a = np.full(nx, _FAR, np.int64)
    for y in range(ny - 1, -1, -1):
        for x in range(nx):
            if tmp[y, x]:
                nxt_a[x] = y
            if nxt_a[x] - y <= h:
                out[y, x] = True
    return out


@njit(cache=True)
def _set_pixels(src, limit):  # pragma: no cover - numba
    """(ys, xs, n) of the non-zero pixels of ``src``, row-major; ``n = -1`` (and the lists
    incomplete) when there are more than ``limit``."""
    ny, nx = src.shape
    ys = np.empty(limit, np.int64)
    xs = np.empty(limit, np.int64)
    n = 0
    for y in range(ny):
        for x in range(nx):
            if src[y, x] != 0:
                if n == limit:
                    return ys, xs, -1
                ys[n] = y
                xs[n] = x
                n += 1
    return ys, xs, n


@njit(cache=True)
def _paint_squares(ys, xs, n, shape, h):  # pragma: no cover - numba
    """bool map with the ``2 h + 1`` square around each (ys[i], xs[i]), i < n, set."""
    ny, nx = shape
    out = np.zeros((ny, nx), np.bool_)
    for i in range(n):
        y0 = max(ys[i] - h, 0)
        y1 = min(ys[i] + h + 1, ny)
        x0 = max(xs[i] - h, 0)
        x1 = min(xs[i] + h + 1, nx)
        for y in range(y0, y1):
            for x in range(x0, x1):
                out[y, x] = True
    return out


#: A map with fewer set pixels than ``size / (_SPARSE_FACTOR (2 g + 1)**2)`` is grown by
#: painting squares (each set pixel costs ``(2 g + 1)**2`` writes, the separable sweeps ~8
#: reads and writes per pixel of the map).
_SPARSE_FACTOR = 16


def grow_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Grow the non-zero pixels of a 2-D map by ``pixels`` in every direction (8-connected).

    Parameters
    ----------
    mask : numpy.ndarray
        (ny, nx) map; bool, or integer such as a segmentation map (non-zero = set).
    pixels : int
        Growth (pixels, >= 0): a pixel is set when a set pixel lies within ``pixels`` of it
        along both axes (a ``2 pixels + 1`` square; ``pixels`` 3 x 3 dilations).

    Returns
    -------
    numpy.ndarray
        bool (ny, nx), a new array.

    Raises
    ------
    ValueError
        ``mask`` is not 2-D, or ``pixels`` is negative.
    """
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"grow_mask: mask must be 2-D, got shape {arr.shape}")
    g = int(pixels)
    if g < 0:
        raise ValueError(f"grow_mask: pixels must be >= 0, got {pixels}")
    if arr.dtype.kind not in "biu":
        raise ValueError(f"grow_mask: mask must be bool or integer, got {arr.dtype}")
    if g == 0:
        return arr != 0
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    arr = np.ascontiguousarray(arr)
    limit = arr.size // (_SPARSE_FACTOR * (2 * g + 1) ** 2)
    if limit > 0:
        ys, xs, n = _set_pixels(arr, limit)
        if n >= 0:
            return _paint_squares(ys, xs, n, arr.shape, g)
    return _dilate_square(arr, g)


@njit(cache=True)
def _flag(mask, weight, sel, bits, unusable):  # pragma: no cover - numba
    ny, nx = mask.shape
    full = sel.shape[0] == ny and sel.shape[1] == nx
    n = 0
    for y in range(ny):
        for x in range(nx):
            if full and sel[y, x]:
                mask[y, x] |= bits
                n += 1
            if (mask[y, x] & unusable) != 0:
                weight[y, x] = 0
    return n


def flag_pixels(mask: np.ndarray, weight: np.ndarray, pixels: np.ndarray | None, bits: int,
                unusable: int | None = None) -> int:
    """Set ``bits`` in ``mask`` on ``pixels`` and zero ``weight`` where the mask is unusable,
    in place, in one pass over the CCD.

    ``mask[pixels] |= bits; weight[(mask & unusable) != 0] = 0`` (numpy: three to five passes
    and a boolean-indexed write each, ~15 ms apiece on a full CCD).

    Parameters
    ----------
    mask : numpy.ndarray
        Integer mask (ny, nx), C-contiguous; modified.
    weight : numpy.ndarray
        Weight map (ny, nx), C-contiguous; modified.
    pixels : numpy.ndarray or None
        bool (ny, nx), the pixels to flag; None flags none (only the weights are zeroed).
    bits : int
        Bits to set.
    unusable : int or None
        Mask bits whose pixels get weight 0 (default ``bits``: only the flagged pixels and
        those already carrying ``bits``).

    Returns
    -------
    int
        Pixels flagged.

    Raises
    ------
    ValueError
        Shapes differ or an array is not C-contiguous (a copy would not be modified).
    """
    if mask.shape != weight.shape or (pixels is not None and pixels.shape != mask.shape):
        raise ValueError(f"flag_pixels: mask {mask.shape}, weight {weight.shape} and pixels "
                         f"{None if pixels is None else pixels.shape} must have one shape")
    if not (mask.flags.c_contiguous and weight.flags.c_contiguous):
        raise ValueError("flag_pixels: mask and weight must be C-contiguous (modified in place)")
    sel = np.zeros((1, 1), dtype=np.bool_) if pixels is None else np.ascontiguousarray(
        pixels, dtype=np.bool_)
    return int(_flag(mask, weight, sel, mask.dtype.type(bits),
                     mask.dtype.type(bits if unusable is None else unusable)))
