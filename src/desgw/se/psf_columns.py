"""Catalog columns from the PSF model: ``FWHMPSF_IMAGE`` and ``FWHMPSF_WORLD``.

SExtractor writes the FWHM of the PSF model at each object's position (``FWHMPSF_IMAGE``,
pixels; ``FWHMPSF_WORLD``, degrees); the original's ``_ZP.csv`` tables carry both. The model's
FWHM (:meth:`desgw.se.psf.PSFModel.fwhm_at`, a pixel-integrated Moffat fit) is evaluated on a
coarse grid over the CCD (once for a constant model) and interpolated linearly to the objects:
the PSF varies smoothly (polynomial of degree <= 2), so a 3 x 5 grid on a 2048 x 4096 CCD
reproduces it to < 0.5 % (the variation itself is a few per cent). The grid's fits start
from their neighbours' (:meth:`desgw.se.psf.PSFModel.fwhm_grid`).
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import RegularGridInterpolator

from desgw.se.psf import PSFModel

__all__ = ["psf_fwhm_at"]


def psf_fwhm_at(psf: PSFModel, x: np.ndarray, y: np.ndarray, *,
                grid: tuple[int, int] = (3, 5)) -> np.ndarray:
    """FWHM of the PSF model (pixels) at 0-based positions.

    Parameters
    ----------
    psf : PSFModel
    x, y : numpy.ndarray
        0-based pixel positions (n,).
    grid : (int, int)
        Grid nodes along x and y over the model's image (degree > 0 only).

    Returns
    -------
    numpy.ndarray
        float32 (n,), pixels; positions outside the image take the nearest edge value.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ny, nx = psf.image_shape
    if psf.degree == 0:
        return np.full(x.shape, psf.fwhm_at((nx - 1) / 2.0, (ny - 1) / 2.0), dtype=np.float32)
    gx = np.linspace(0.0, nx - 1.0, max(int(grid[0]), 2))
    gy = np.linspace(0.0, ny - 1.0, max(int(grid[1]), 2))
    values = psf.fwhm_grid(gx, gy)
    interp = RegularGridInterpolator((gy, gx), values, method="linear")
    pts = np.column_stack([np.clip(y, 0, ny - 1), np.clip(x, 0, nx - 1)])
    return interp(pts).astype(np.float32)
