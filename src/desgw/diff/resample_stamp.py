"""Affine warping of small PSF stamps with the resampling kernel.

A template's PSF model lives in the template's pixel frame. After the template is resampled
onto the search grid, a star's image is the template PSF seen through the local Jacobian
``J = d(x_in, y_in) / d(x_out, y_out)`` of the mapping: ``P_out(r) = |det J| P_in(J r)``. Between
DECam CCDs J is a rotation by the pointing's rotation difference (~0.1 deg) times a scale within
~1 % of unity, so the correction is small, but it is cheap and exact enough to apply.
"""

from __future__ import annotations

import numba
import numpy as np

from desgw.diff.resample_kernels import lanczos_table

__all__ = ["warp_stamp"]


def warp_stamp(stamp: np.ndarray, jacobian: np.ndarray, size: int, *, dx: float = 0.0,
               dy: float = 0.0, order: int = 3) -> np.ndarray:
    """Sample a centred PSF stamp through a local affine map onto a new stamp.

    Parameters
    ----------
    stamp : numpy.ndarray
        (n, n) input stamp (n odd), PSF centred on the central pixel ``n // 2``.
    jacobian : numpy.ndarray
        (2, 2) ``d(x_in, y_in) / d(x_out, y_out)`` (rows x_in, y_in; columns x_out, y_out).
    size : int
        Side of the output stamp (odd, pixels).
    dx, dy : float
        Offset of the PSF centre from the output stamp's central pixel (output pixels).
    order : int
        Lanczos order of the (moment-corrected) interpolation kernel.

    Returns
    -------
    numpy.ndarray
        (size, size) float64 stamp holding ``|det J| P_in(J (r - d))``; flux is conserved up to
        what falls outside either stamp.
    """
    stamp = np.asarray(stamp, dtype=np.float64)
    n = stamp.shape[0]
    if stamp.shape != (n, n) or n % 2 == 0:
        raise ValueError(f"stamp must be square with an odd side, got {stamp.shape}")
    if size % 2 == 0 or size < 1:
        raise ValueError(f"size must be a positive odd number, got {size}")
    jac = np.asarray(jacobian, dtype=np.float64).reshape(2, 2)
    table = lanczos_table(order).astype(np.float64)
    out = _warp(stamp, jac, int(size), float(dx), float(dy), table, int(order))
    return out * abs(np.linalg.det(jac))


@numba.njit(cache=True)
def _warp(stamp, jac, size, dx, dy, table, order):  # pragma: no cover - numba
    """``sum_ab wy[a] wx[b] stamp[row_a, col_b]`` at each output pixel (taps off the stamp
    count 0), the 2 order taps from the Lanczos table at the nearest of its phases."""
    n = stamp.shape[0]
    h = size // 2
    bins = table.shape[0] - 1
    ntap = 2 * order
    out = np.zeros((size, size))
    c = n // 2
    for j in range(size):
        v = (j - h) - dy
        for i in range(size):
            u = (i - h) - dx
            xin = c + jac[0, 0] * u + jac[0, 1] * v
            yin = c + jac[1, 0] * u + jac[1, 1] * v
            fx = int(np.floor(xin))
            fy = int(np.floor(yin))
            kx = int(np.rint((xin - fx) * bins))
            ky = int(np.rint((yin - fy) * bins))
            acc = 0.0
            for a in range(ntap):
                r = fy - (order - 1) + a
                if r < 0 or r >= n:
                    continue
                row = 0.0
                for b in range(ntap):
                    col = fx - (order - 1) + b
                    if 0 <= col < n:
                        row += table[kx, b] * stamp[r, col]
                acc += table[ky, a] * row
            out[j, i] = acc
    return out
