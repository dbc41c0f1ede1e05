"""Growing and applying pixel masks: binary dilation by a square in one numba pass, and
flagging pixels in a mask and weight map in one pass.

Object masks (the first pass's detections masked for the second background), the cosmic-ray
mask's faint track ends and similar masks are grown by ``g`` pixels, 8-connected: ``g``
3 x 3 dilations, which equal one dilation by a ``(2 g + 1)``-pixel square. The square is
separable: :func:`grow_mask` reads the map once, row by row, merges the set pixels of a row,
each widened by ``g``, into runs, and writes each run into the ``2 g + 1`` rows around it
(outside the image counts as unset; the same pixels as scipy's iterated dilation). The work
beyond the read scales with the set pixels' runs, so a sparse map costs little more than
its read. Measured (4096 x 2048 px, one core, load 16, two runs, best of 5; before ->
after): a sparse CCD's first-pass segments (0.9 % of the pixels) grown by 4 px 39-48 ->
12-14 ms, a dense CCD's (8.5 %) 46-64 -> 13-16 ms, 30 % random pixels 87-151 -> 35-48 ms,
a cosmic-ray-like map (2e-4 of the pixels) 4-6 -> 6 ms. Before, two sweeps per axis read
and wrote every pixel, and maps under ``size / (16 (2 g + 1)**2)`` set pixels were grown
by painting the square around each set pixel after a scan that counted them.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["flag_pixels", "grow_mask"]


@njit(cache=True)
def _dilate_square(src, h):  # pragma: no cover - numba
    """``out[y, x]`` = some ``src`` pixel within ``h`` along both axes is non-zero.

    One read of ``src``, row by row: the set pixels of a row, each widened to ``x - h .. x +
    h`` and merged where they touch or overlap, make runs, and each run is written into rows
    ``y - h .. y + h`` of ``out`` (the row dilation, then the column dilation of it). The
    work beyond the read is the set pixels' runs times ``2 h + 1``, not the whole map.
    """
    ny, nx = src.shape
    out = np.zeros((ny, nx), np.bool_)
    for y in range(ny):
        y0 = max(y - h, 0)
        y1 = min(y + h, ny - 1)
        a = -1  # current run a..b (columns), none when a < 0
        b = -1
        for x in range(nx):
            if src[y, x] != 0:
                lo = max(x - h, 0)
                hi = min(x + h, nx - 1)
                if a >= 0 and lo <= b + 1:
                    b = hi
                else:
                    if a >= 0:
                        for yy in range(y0, y1 + 1):
                            out[yy, a:b + 1] = True
                    a = lo
                    b = hi
        if a >= 0:
            for yy in range(y0, y1 + 1):
                out[yy, a:b + 1] = True
    return out


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
    return _dilate_square(np.ascontiguousarray(arr), g)


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
