"""Shared builders for the resampling and coadd tests (this module holds no tests).

- `decam_wcs`: a TAN-SIP WCS fitted to the DECam optical model (desgw.instrument.optics) of one
  CCD for a pointing: realistic DECam geometry and distortion.
- `render_stars`: point sources drawn with galsim at given sky positions through the local
  Jacobian of a WCS, so the same sky scene can be drawn on any pixel grid.
- `windowed_centroid`: an iterated Gaussian-weighted centroid (unbiased for symmetric profiles).
"""

from __future__ import annotations

import functools

import galsim
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS
from astropy.wcs.utils import fit_wcs_from_points

from desgw.instrument import optics

SHAPE = (4096, 2048)
PSF_FWHM_ARCSEC = 1.0
PSF_BETA = 3.5


@functools.lru_cache(maxsize=16)
def decam_wcs(ccdnum: int, ra: float, dec: float, rotation_deg: float = 0.0) -> WCS:
    """TAN-SIP (order 3) WCS of CCD ``ccdnum`` for a pointing, fitted to the optics model."""
    xs, ys = np.meshgrid(np.linspace(-60, SHAPE[1] + 60, 12), np.linspace(-60, SHAPE[0] + 60, 20))
    pointing = optics.Pointing(ra, dec, rotation_deg)
    r, d = optics.pixel_to_sky(ccdnum, xs.ravel(), ys.ravel(), pointing)
    return fit_wcs_from_points((xs.ravel(), ys.ravel()), SkyCoord(r, d, unit="deg"),
                               projection="TAN", sip_degree=3)


def local_jacobian(wcs: WCS, x: float, y: float) -> galsim.JacobianWCS:
    """galsim JacobianWCS (arcsec/px; u = East offset, v = North) of ``wcs`` at pixel (x, y)."""
    h = 0.5
    ra, dec = wcs.all_pix2world([x + h, x - h, x, x], [y, y, y + h, y - h], 0)
    cosd = np.cos(np.deg2rad(dec.mean()))
    du = (ra - ra.mean()) * cosd * 3600.0
    dv = (dec - dec.mean()) * 3600.0
    return galsim.JacobianWCS((du[0] - du[1]) / (2 * h), (du[2] - du[3]) / (2 * h),
                              (dv[0] - dv[1]) / (2 * h), (dv[2] - dv[3]) / (2 * h))


def psf_profile(fwhm_arcsec: float = PSF_FWHM_ARCSEC, g1: float = 0.03, g2: float = -0.02,
                flux: float = 1.0) -> galsim.GSObject:
    """Sheared Moffat PSF in sky coordinates (arcsec)."""
    return galsim.Moffat(beta=PSF_BETA, fwhm=fwhm_arcsec, flux=flux).shear(g1=g1, g2=g2)


def draw_at(profile: galsim.GSObject, wcs: WCS, x: float, y: float, size: int = 64
            ) -> tuple[np.ndarray, int, int]:
    """Draw ``profile`` centred at 0-based pixel (x, y); returns (stamp, x0, y0) of its corner."""
    ix0 = int(np.floor(x)) - size // 2
    iy0 = int(np.floor(y)) - size // 2
    bounds = galsim.BoundsI(ix0 + 1, ix0 + size, iy0 + 1, iy0 + size)
    stamp = galsim.ImageF(bounds, wcs=local_jacobian(wcs, x, y))
    profile.drawImage(image=stamp, center=galsim.PositionD(x + 1.0, y + 1.0))
    return stamp.array.astype(np.float64), ix0, iy0


def render_stars(wcs: WCS, ra: np.ndarray, dec: np.ndarray, flux: np.ndarray,
                 shape: tuple[int, int] = SHAPE, fwhm_arcsec: float = PSF_FWHM_ARCSEC,
                 size: int = 64) -> np.ndarray:
    """Image (float64) with point sources of ``flux`` e- at sky positions, drawn on ``wcs``."""
    img = np.zeros(shape)
    xs, ys = wcs.all_world2pix(ra, dec, 0, tolerance=1e-10)
    for x, y, f in zip(xs, ys, flux):
        stamp, ix0, iy0 = draw_at(psf_profile(fwhm_arcsec, flux=float(f)), wcs, x, y, size)
        y0c, x0c = max(iy0, 0), max(ix0, 0)
        y1c, x1c = min(iy0 + size, shape[0]), min(ix0 + size, shape[1])
        if y1c > y0c and x1c > x0c:
            img[y0c:y1c, x0c:x1c] += stamp[y0c - iy0:y1c - iy0, x0c - ix0:x1c - ix0]
    return img


def windowed_centroid(img: np.ndarray, x: float, y: float, sigma: float = 1.6,
                      half: int = 12, n_iter: int = 30) -> tuple[float, float]:
    """Gaussian-weighted centroid (0-based px), iterated from (x, y)."""
    cx, cy = float(x), float(y)
    ix, iy = int(round(x)), int(round(y))
    yy, xx = np.mgrid[iy - half:iy + half + 1, ix - half:ix + half + 1]
    sub = img[iy - half:iy + half + 1, ix - half:ix + half + 1]
    for _ in range(n_iter):
        w = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2)) * sub
        nx, ny = (w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()
        # SExtractor-style XWIN update: twice the weighted offset converges for a Gaussian
        cx, cy = cx + 2 * (nx - cx), cy + 2 * (ny - cy)
    return cx, cy


def box_sum(img: np.ndarray, x: float, y: float, half: int) -> float:
    """Sum of ``img`` in a (2 half + 1)**2 box centred on the pixel nearest (x, y)."""
    ix, iy = int(round(x)), int(round(y))
    return float(img[iy - half:iy + half + 1, ix - half:ix + half + 1].sum())
