"""Affine warping of small PSF stamps with the resampling kernel.

A template's PSF model lives in the template's pixel frame. After the template is resampled
onto the search grid, a star's image is the template PSF seen through the local Jacobian
``J = d(x_in, y_in) / d(x_out, y_out)`` of the mapping: ``P_out(r) = |det J| P_in(J r)``. Between
DECam CCDs J is a rotation by the pointing's rotation difference (~0.1 deg) times a scale within
~1 % of unity, so the correction is small, but it is cheap and exact enough to apply.
"""

from __future__ import annotations

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
    h = size // 2
    v, u = np.mgrid[-h:h + 1, -h:h + 1].astype(np.float64)
    u = u - dx
    v = v - dy
    xin = n // 2 + jac[0, 0] * u + jac[0, 1] * v
    yin = n // 2 + jac[1, 0] * u + jac[1, 1] * v
    table = lanczos_table(order).astype(np.float64)
    bins = table.shape[0] - 1
    fx = np.floor(xin).astype(np.int64)
    fy = np.floor(yin).astype(np.int64)
    wx = table[np.rint((xin - fx) * bins).astype(np.int64)]  # (size, size, 2 order)
    wy = table[np.rint((yin - fy) * bins).astype(np.int64)]
    offs = np.arange(-(order - 1), order + 1)
    cols = fx[..., None] + offs  # (size, size, 2 order)
    rows = fy[..., None] + offs
    okc = (cols >= 0) & (cols < n)
    okr = (rows >= 0) & (rows < n)
    vals = stamp[np.clip(rows, 0, n - 1)[..., :, None], np.clip(cols, 0, n - 1)[..., None, :]]
    vals = vals * (okr[..., :, None] & okc[..., None, :])
    out = np.einsum("yxa,yxb,yxab->yx", wy, wx, vals)
    return out * abs(np.linalg.det(jac))
