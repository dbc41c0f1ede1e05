"""Numba kernels of the Lanczos resampling (see :mod:`desgw.diff.resample`).

Why our own kernel: SWarp is an external C program fed through FITS files; scipy's
``map_coordinates`` has no Lanczos kernel, no variance propagation and no mask propagation,
and would need the 8 M-pixel coordinate arrays in memory. Here the mapping is interpolated row
by row from the coarse grid, the Lanczos taps come from a table (linear interpolation in the
fractional offset, nearest of 8192 bins) and image, variance and mask are produced in one
pass. Pixels whose tap box holds no flagged input pixel take a fast path without per-tap
tests; the others take a careful path that drops bad taps, renormalises and ORs mask bits.
"""

from __future__ import annotations


import numba
import numpy as np

# The moment-corrected Lanczos taps and their table live in desgw.util.lanczos. Taps are
# taken from the nearest of TABLE_BINS bins: the interpolation point is quantised to
# 1/(2 * 8192) = 6e-5 px at most (rms 3.5e-5 px), 16 times below the 1e-3 px budget of the
# mapping, and this is ~25 % faster than interpolating between bins.
from desgw.util.lanczos import TABLE_BINS, lanczos_table

__all__ = ["TABLE_BINS", "box_any", "lanczos_table", "prepare_kernel", "resample_kernel"]

_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}  # no nnan/ninf: NaN tests must survive


@numba.njit(cache=True)
def box_any(flagged: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``out[r, c]`` = any ``flagged`` in rows ``r-lo..r+hi`` and columns ``c-lo..c+hi``.

    ``flagged`` is a (ny, nx) uint8 array; the box is clipped at the image borders. Running
    counts along each row, then down the rows (row-major passes only): O(1) per pixel
    whatever the box.
    """
    ny, nx = flagged.shape
    tmp = np.zeros((ny, nx), dtype=np.uint8)
    for r in range(ny):
        row = flagged[r]
        cnt = 0
        for c in range(min(hi, nx)):  # columns 0..hi-1 of the first window
            cnt += row[c] != 0
        for c in range(nx):
            if c + hi < nx:
                cnt += row[c + hi] != 0
            if c - lo - 1 >= 0:
                cnt -= row[c - lo - 1] != 0
            tmp[r, c] = cnt > 0
    out = np.zeros((ny, nx), dtype=np.uint8)
    count = np.zeros(nx, dtype=np.int32)
    for r in range(min(hi, ny)):
        for c in range(nx):
            count[c] += tmp[r, c]
    for r in range(ny):
        if r + hi < ny:
            add = tmp[r + hi]
            for c in range(nx):
                count[c] += add[c]
        if r - lo - 1 >= 0:
            sub = tmp[r - lo - 1]
            for c in range(nx):
                count[c] -= sub[c]
        orow = out[r]
        for c in range(nx):
            orow[c] = count[c] > 0
    return out


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _taps6(img, var, r0, c0, wx, wy, vnear):
    """Weighted sums of a 6 x 6 box of ``img`` and ``var`` (written out for speed).

    The variance reads only the inner 4 x 4 pixels; the outer ring of 20 taps, whose squared
    weights hold 0.13 % of the sum on average (0.3 % at most), takes the variance ``vnear``
    of the output pixel's nearest input pixel (see :mod:`desgw.diff.resample`, Noise).
    """
    w0, w1, w2, w3, w4, w5 = wx[0], wx[1], wx[2], wx[3], wx[4], wx[5]
    q1, q2, q3, q4 = w1 * w1, w2 * w2, w3 * w3, w4 * w4
    qin = (q1 + q2) + (q3 + q4)
    qx = qin + (w0 * w0 + w5 * w5)
    acc = np.float32(0.0)
    accv = np.float32(0.0)
    qy = np.float32(0.0)
    qyin = np.float32(0.0)
    for a in range(6):
        r = r0 + a
        s = ((w0 * img[r, c0] + w1 * img[r, c0 + 1]) + (w2 * img[r, c0 + 2] + w3 * img[r, c0 + 3])
             + (w4 * img[r, c0 + 4] + w5 * img[r, c0 + 5]))
        acc += wy[a] * s
        p = wy[a] * wy[a]
        qy += p
        if 1 <= a <= 4:
            sv = ((q1 * var[r, c0 + 1] + q2 * var[r, c0 + 2])
                  + (q3 * var[r, c0 + 3] + q4 * var[r, c0 + 4]))
            accv += p * sv
            qyin += p
    accv += vnear * (qx * qy - qin * qyin)
    return acc, accv


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _taps(img, var, r0, c0, wx, wy, ntap):
    """Weighted sums of an ``ntap`` x ``ntap`` box of ``img`` and ``var``."""
    acc = 0.0
    accv = 0.0
    for a in range(ntap):
        s = 0.0
        sv = 0.0
        for b in range(ntap):
            s += wx[b] * img[r0 + a, c0 + b]
            sv += wx[b] * wx[b] * var[r0 + a, c0 + b]
        acc += wy[a] * s
        accv += wy[a] * wy[a] * sv
    return acc, accv



@numba.njit(cache=True, fastmath=_FASTMATH)
def resample_kernel(img: np.ndarray, var: np.ndarray, mask: np.ndarray, good: np.ndarray,
                    near: np.ndarray, gxin: np.ndarray, gyin: np.ndarray, garea: np.ndarray,
                    x0: float, y0: float, step: float, table: np.ndarray, order: int,
                    threshold: float, edge_bit: int, unusable: int, badpix: int,
                    out_img: np.ndarray, out_mask: np.ndarray, out_w: np.ndarray,
                    out_cov: np.ndarray, oy0: int, oy1: int, ox0: int,
                    ox1: int) -> tuple[float, float]:
    """Resample ``img`` (with variance ``var``) onto the output grid; fills the ``out_*`` arrays.

    Only output rows ``oy0:oy1`` and columns ``ox0:ox1`` are computed (the box that can map
    inside the input); the caller fills the rest as uncovered.

    ``img`` is the float32 input image (read only where ``good``: any value at bad pixels),
    ``var`` its float32 variance, ``good`` uint8 (1 = usable input pixel), ``mask`` the input
    mask bits (integer; ``badpix`` is added to a bad pixel without an ``unusable`` bit),
    ``near`` uint8 from :func:`box_any` (1 = the tap box anchored at this pixel holds a
    flagged or bad pixel), all from :func:`prepare_kernel`. Returns the sums
    over usable output pixels of ``area * var(nearest input pixel)`` and of the output variance,
    whose ratio is the large-area noise correlation factor.
    """
    ny_in, nx_in = img.shape
    _ny, nx = out_img.shape
    nyg, nxg = gxin.shape
    ntap = 2 * order
    bins = table.shape[0] - 1
    # per-column Lagrange weights of the mapping interpolation
    icol = np.empty(nx, dtype=np.int64)
    lc0 = np.empty(nx)
    lc1 = np.empty(nx)
    lc2 = np.empty(nx)
    lc3 = np.empty(nx)
    for x in range(nx):
        g = (x - x0) / step
        i = int(np.floor(g))
        i = max(i, 1)
        i = min(i, nxg - 3)
        u = g - i
        icol[x] = i
        lc0[x] = -u * (u - 1.0) * (u - 2.0) / 6.0
        lc1[x] = (u + 1.0) * (u - 1.0) * (u - 2.0) / 2.0
        lc2[x] = -(u + 1.0) * u * (u - 2.0) / 2.0
        lc3[x] = (u + 1.0) * u * (u - 1.0) / 6.0
    # runs of columns sharing their four mapping nodes: per output row the mapping of a run
    # is evaluated in a loop of its own (the same operations per pixel as before, in a loop
    # that LLVM vectorises), then read back by the pixel loop
    nrun = 0
    rstart = np.empty(nx + 1, dtype=np.int64)
    for x in range(nx):
        if x == 0 or icol[x] != icol[x - 1]:
            rstart[nrun] = x
            nrun += 1
    rstart[nrun] = nx
    rowx = np.empty(nx)
    rowy = np.empty(nx)
    rowa = np.empty(nx)
    rx = np.empty(nxg)
    ry = np.empty(nxg)
    ra = np.empty(nxg)
    wx = np.empty(ntap, dtype=np.float32)  # float32 taps: no conversions in the tap sums
    wy = np.empty(ntap, dtype=np.float32)
    sum_unc = 0.0
    sum_var = 0.0
    for y in range(oy0, oy1):
        g = (y - y0) / step
        iy = int(np.floor(g))
        iy = max(iy, 1)
        iy = min(iy, nyg - 3)
        u = g - iy
        l0 = -u * (u - 1.0) * (u - 2.0) / 6.0
        l1 = (u + 1.0) * (u - 1.0) * (u - 2.0) / 2.0
        l2 = -(u + 1.0) * u * (u - 2.0) / 2.0
        l3 = (u + 1.0) * u * (u - 1.0) / 6.0
        for k in range(nxg):
            rx[k] = (l0 * gxin[iy - 1, k] + l1 * gxin[iy, k] + l2 * gxin[iy + 1, k]
                     + l3 * gxin[iy + 2, k])
            ry[k] = (l0 * gyin[iy - 1, k] + l1 * gyin[iy, k] + l2 * gyin[iy + 1, k]
                     + l3 * gyin[iy + 2, k])
            ra[k] = (l0 * garea[iy - 1, k] + l1 * garea[iy, k] + l2 * garea[iy + 1, k]
                     + l3 * garea[iy + 2, k])
        for run in range(nrun):
            xa = max(rstart[run], ox0)
            xb = min(rstart[run + 1], ox1)
            if xa >= xb:
                continue
            i = icol[xa]
            p0, p1, p2, p3 = rx[i - 1], rx[i], rx[i + 1], rx[i + 2]
            s0, s1, s2, s3 = ry[i - 1], ry[i], ry[i + 1], ry[i + 2]
            e0, e1, e2, e3 = ra[i - 1], ra[i], ra[i + 1], ra[i + 2]
            for x in range(xa, xb):
                rowx[x] = lc0[x] * p0 + lc1[x] * p1 + lc2[x] * p2 + lc3[x] * p3
                rowy[x] = lc0[x] * s0 + lc1[x] * s1 + lc2[x] * s2 + lc3[x] * s3
                rowa[x] = lc0[x] * e0 + lc1[x] * e1 + lc2[x] * e2 + lc3[x] * e3
        for x in range(ox0, ox1):
            X = rowx[x]
            Y = rowy[x]
            A = rowa[x]
            if not (X >= -0.5 and X < nx_in - 0.5 and Y >= -0.5 and Y < ny_in - 0.5
                    and A > 0.0):
                out_img[y, x] = 0.0
                out_mask[y, x] = edge_bit
                out_w[y, x] = 0.0
                out_cov[y, x] = 0
                continue
            out_cov[y, x] = 1
            fx = int(np.floor(X))
            fy = int(np.floor(Y))
            kx = int((X - fx) * bins + 0.5)
            ky = int((Y - fy) * bins + 0.5)
            for m in range(ntap):
                wx[m] = table[kx, m]
                wy[m] = table[ky, m]
            c0 = fx - (order - 1)
            r0 = fy - (order - 1)
            xn = int(np.floor(X + 0.5))
            yn = int(np.floor(Y + 0.5))
            inside = c0 >= 0 and c0 + ntap <= nx_in and r0 >= 0 and r0 + ntap <= ny_in
            if inside and near[fy, fx] == 0:
                if ntap == 6:
                    acc, accv = _taps6(img, var, r0, c0, wx, wy, var[yn, xn])
                else:
                    acc, accv = _taps(img, var, r0, c0, wx, wy, ntap)
                vout = A * A * accv
                out_img[y, x] = A * acc
                out_mask[y, x] = 0
                if vout > 0.0:
                    out_w[y, x] = 1.0 / vout
                    sum_unc += A * var[yn, xn]
                    sum_var += vout
                else:
                    out_w[y, x] = 0.0
                continue
            # careful path: drop bad/outside taps, OR the bits of significant taps
            acc = 0.0
            accv = 0.0
            accg = 0.0
            bits = 0
            for a in range(ntap):
                r = r0 + a
                for b in range(ntap):
                    c = c0 + b
                    w = float(wy[a]) * float(wx[b])
                    big = abs(w) > threshold
                    if r < 0 or r >= ny_in or c < 0 or c >= nx_in:
                        if big:
                            bits |= edge_bit
                        continue
                    if big:
                        mb = np.int32(mask[r, c])
                        if good[r, c] == 0 and (mb & unusable) == 0:
                            mb |= badpix
                        bits |= int(mb)
                    if good[r, c]:
                        acc += w * img[r, c]
                        accv += w * w * var[r, c]
                        accg += w
            if accg > 0.0:
                out_img[y, x] = A * acc / accg
                vout = A * A * accv / (accg * accg)
            else:
                out_img[y, x] = 0.0
                vout = 0.0
            out_mask[y, x] = bits
            if (bits & unusable) == 0 and vout > 0.0:
                out_w[y, x] = 1.0 / vout
                if 0 <= yn < ny_in and 0 <= xn < nx_in and good[yn, xn]:
                    sum_unc += A * var[yn, xn]
                    sum_var += vout
            else:
                out_w[y, x] = 0.0
    return sum_unc, sum_var


@numba.njit(cache=True)
def prepare_kernel(image: np.ndarray, mask: np.ndarray, weight: np.ndarray, unusable: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass over the input: variance, usable pixels, pixels a tap box must not hide.

    Returns ``var`` (float32 ``1/weight``, 0 at bad pixels), ``good`` (uint8: finite value
    and weight, weight > 0, no unusable mask bit) and ``flagged`` (uint8: any mask bit set or
    not good). The image itself is not copied: :func:`resample_kernel` reads a pixel only
    where ``good`` is set (a tap box without a flagged pixel holds only good ones), so a bad
    pixel's NaN or huge value never enters a sum, and the flags are rebuilt from ``mask`` and
    ``good`` where the careful path needs them (``BADPIX`` added to a bad pixel that has no
    unusable bit).
    """
    ny, nx = image.shape
    var = np.empty((ny, nx), dtype=np.float32)
    good = np.empty((ny, nx), dtype=np.uint8)
    flagged = np.empty((ny, nx), dtype=np.uint8)
    for r in range(ny):
        for c in range(nx):
            v = image[r, c]
            w = weight[r, c]
            m = np.int32(mask[r, c])
            ok = np.isfinite(v) and np.isfinite(w) and w > 0 and (m & unusable) == 0
            if ok:
                var[r, c] = 1.0 / w
                good[r, c] = 1
            else:
                var[r, c] = 0.0
                good[r, c] = 0
            flagged[r, c] = 1 if (m != 0 or not ok) else 0
    return var, good, flagged
