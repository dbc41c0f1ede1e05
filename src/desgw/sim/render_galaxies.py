"""Galaxies: Sersic profiles convolved with the local Moffat PSF.

Method
------
Each galaxy is a Sersic profile ``I ~ exp(-b_n (r/r_e)**(1/n))`` (``b_n`` from
``gammaincinv(2n, 1/2)``, ``r_e = hlr``, sheared with its axis ratio and position angle,
area-preserving as GalSim's shear, so ``hlr`` is the geometric-mean half-light radius), truncated
at 5 half-light radii (elliptical) like GalSim's ``trunc``, and normalised to the object's flux
(so the truth flux is the rendered flux). It is mapped into pixels through the local Jacobian of
the instrument mapping, like the PSF (see `desgw.sim.psf`).

* Small galaxies (nearly all of them: a stamp of at most `MAX_FFT_STAMP` pixels holds
  the truncated profile plus the PSF) are drawn centred on their stamp by one numba kernel,
  pixel-integrated (6 x 6 sub-samples on the central pixels, an even grid so no sample sits on
  the cusp, 3 x 3 out to 4 pixels), Fourier transformed in batches of equal-size stamps
  (``scipy.fft.rfft2``, float32), multiplied by the transform of the point-sampled local PSF and
  by a phase ramp for the sub-pixel position, and transformed back. Drawing centred and shifting
  in Fourier space keeps the centroid exact (< 1e-4 px against GalSim; drawing the cuspy n = 4
  profile off-centre biased it by 0.01 px); pixel-integrating the galaxy and point-sampling the
  PSF applies the pixel response once. Agreement with GalSim's ``drawImage`` of the same
  convolved profile: < 0.3 % of the peak (tests/sim/test_render_psf.py).
* The convolution PSF is the local Moffat at the centre of the galaxy's 256 x 256 pixel cell
  (`PSF_CELL`; 128 cells per CCD, each transformed once per stamp size): the PSF field changes
  by < 0.3 % in FWHM across a cell for the survey's PSF variations. Stars always get the PSF at
  their exact position.
* Larger galaxies (rare, bright) are drawn by GalSim (``Sersic`` convolved with ``Moffat``, local
  ``JacobianWCS``), which handles big profiles well.

Measured on this machine (2 cores, idle): 5000 galaxies (r 20-24.5, hlr ~0.45 arcsec) take
~0.5 s with the batched FFT path against ~2 ms per galaxy (~10 s) with GalSim's ``drawImage``.
The PSF of the convolution is truncated where its wing holds less than
``max(2e-3 * flux, 10 e-)`` and renormalised, so total flux is conserved exactly.
"""

from __future__ import annotations

import logging

import numba
import numpy as np
import scipy.fft
from scipy.special import gammaincinv

from .psf import moffat_radius, moffat_stamps, pixel_profile

__all__ = ["MAX_FFT_STAMP", "FFT_SIZES", "PSF_CELL", "TRUNCATION_HLR", "GalaxyInputs", "sersic_bn",
           "add_galaxies"]

log = logging.getLogger(__name__)

#: Stamp sizes of the batched FFT path (pixels); larger galaxies go to GalSim.
FFT_SIZES: tuple[int, ...] = (16, 20, 24, 28, 32, 36, 40, 48, 56, 64, 72, 80, 96, 112, 128)
MAX_FFT_STAMP: int = FFT_SIZES[-1]
#: Truncation radius of the Sersic profiles, in half-light radii.
TRUNCATION_HLR: float = 5.0
_BATCH = 1024
#: Side (pixels) of the square cells over which the galaxies' convolution PSF is taken constant.
PSF_CELL: int = 256
#: Truncation tolerance of the galaxies' convolution PSF: the wing outside the stamp holds at most
#: ``max(PSF_FRAC_TOL * flux, PSF_ABS_TOL_E)`` electrons (redistributed, flux is conserved).
PSF_FRAC_TOL: float = 2e-3
PSF_ABS_TOL_E: float = 10.0


def sersic_bn(n: np.ndarray) -> np.ndarray:
    """Sersic ``b_n``: the half-light radius encloses half the (untruncated) flux."""
    return gammaincinv(2.0 * np.asarray(n, dtype=np.float64), 0.5)


class GalaxyInputs:
    """Per-galaxy pixel-frame inputs for one CCD (plain container, built by the renderer).

    Attributes
    ----------
    x, y : ndarray (N,)
        Centroids, trimmed pixels.
    flux : ndarray (N,)
        Electrons.
    b : ndarray (N, 3)
        Pixel-frame Sersic quadratic form (``(r/r_e)^2 = B11 dx^2 + 2 B12 dx dy + B22 dy^2``).
    n : ndarray (N,)
        Sersic index (clipped to 0.3..6.2 as GalSim supports).
    m : ndarray (N, 3)
        Pixel-frame Moffat quadratic form of the PSF at the galaxy (sets the stamp size).
    cell : ndarray of int (N,)
        Index into ``cell_m`` of the PSF cell holding the galaxy.
    cell_m : ndarray (K, 3)
        Moffat quadratic forms at the centres of the PSF cells (see `PSF_CELL`).
    jac : ndarray (N, 2, 2)
        Local Jacobian, arcsec/pixel (for the GalSim path).
    hlr_arcsec, e1, e2 : ndarray (N,)
        Galaxy size and ellipticity in the focal-frame tangent plane (GalSim path).
    psf_fwhm_arcsec, psf_e1, psf_e2 : ndarray (N,)
        Local PSF (GalSim path).
    """

    def __init__(self, *, x, y, flux, b, n, m, cell, cell_m, jac, hlr_arcsec, e1, e2,
                 psf_fwhm_arcsec, psf_e1, psf_e2):
        self.x, self.y, self.flux, self.b, self.n, self.m, self.jac = x, y, flux, b, n, m, jac
        self.cell, self.cell_m = np.asarray(cell, dtype=np.int64), cell_m
        self.hlr_arcsec, self.e1, self.e2 = hlr_arcsec, e1, e2
        self.psf_fwhm_arcsec, self.psf_e1, self.psf_e2 = psf_fwhm_arcsec, psf_e1, psf_e2

    def __len__(self) -> int:
        return len(self.x)


@numba.njit(cache=True, nogil=True, fastmath=True)
def _sersic_stamps_kernel(out, b, bn, inv2n, qcut):
    """Centred, pixel-integrated, truncated Sersic stamps normalised to sum 1."""
    n, size, _ = out.shape
    c = size // 2
    for k in range(n):
        b11, b12, b22 = b[k, 0], b[k, 1], b[k, 2]
        det = b11 * b22 - b12 * b12
        hx = min(int(np.ceil(np.sqrt(qcut * b22 / det))) + 1, c)
        hy = min(int(np.ceil(np.sqrt(qcut * b11 / det))) + 1, c)
        for j in range(size):
            for i in range(size):
                out[k, j, i] = 0.0
        tot = 0.0
        for j in range(c - hy, min(c + hy + 1, size)):
            dy = float(j - c)
            for i in range(c - hx, min(c + hx + 1, size)):
                dx = float(i - c)
                rp2 = dx * dx + dy * dy
                # an even sub-grid on the central pixels: no sample on the cusp
                if rp2 < 2.5:
                    sub = 6
                elif rp2 < 16.5:
                    sub = 3
                else:
                    sub = 1
                h = 1.0 / sub
                off = 0.5 * (sub - 1)
                acc = 0.0
                for jj in range(sub):
                    sy = dy + (jj - off) * h
                    for ii in range(sub):
                        sx = dx + (ii - off) * h
                        q = b11 * sx * sx + 2.0 * b12 * sx * sy + b22 * sy * sy
                        if q <= qcut and q > 0.0:
                            acc += np.exp(-bn[k] * np.exp(inv2n[k] * np.log(q)))
                        elif q <= 0.0:
                            acc += 1.0
                v = acc / (sub * sub)
                out[k, j, i] = v
                tot += v
        if tot > 0.0:
            for j in range(size):
                for i in range(size):
                    out[k, j, i] /= tot


@numba.njit(cache=True, nogil=True)
def _add_stamps_kernel(image, stamps, ix, iy, flux):
    ny, nx = image.shape
    n, size, _ = stamps.shape
    c = size // 2
    for k in range(n):
        for j in range(size):
            py = iy[k] - c + j
            if py < 0 or py >= ny:
                continue
            for i in range(size):
                px = ix[k] - c + i
                if px < 0 or px >= nx:
                    continue
                image[py, px] += stamps[k, j, i] * flux[k]


def _stamp_sizes(g: GalaxyInputs, beta: float) -> np.ndarray:
    det = np.maximum(g.b[:, 0] * g.b[:, 2] - g.b[:, 1] ** 2, 1e-12)
    extent_gal = np.sqrt(TRUNCATION_HLR**2 * np.maximum(g.b[:, 2], g.b[:, 0]) / det)
    r_psf = moffat_radius(g.flux, g.m, beta, frac_tol=PSF_FRAC_TOL, abs_tol_e=PSF_ABS_TOL_E,
                          edge_sb_e=1.0)
    need = 2 * (np.ceil(extent_gal) + r_psf) + 1
    sizes = np.array(FFT_SIZES)
    idx = np.searchsorted(sizes, need)
    out = np.full(len(need), -1, dtype=np.int64)
    ok = idx < len(sizes)
    out[ok] = sizes[idx[ok]]
    return out


def _psf_hat(cell_m: np.ndarray, cells: np.ndarray, beta: float, size: int,
             profile: str = "moffat") -> dict[int, np.ndarray]:
    if profile == "moffat":
        psf = moffat_stamps(cell_m[cells], beta, size).astype(np.float32)
    else:
        # point-sampled (the galaxy profile is pixel-integrated), centred on pixel size // 2
        off = 0.5 if size % 2 == 0 else 0.0  # galsim centres even images on a pixel corner
        psf = np.stack([pixel_profile(cell_m[c], beta, profile).drawImage(
            nx=size, ny=size, scale=1.0, method="no_pixel", offset=(off, off)).array
            for c in cells])
        psf = (psf / psf.sum(axis=(1, 2), keepdims=True)).astype(np.float32)
    psf = np.fft.ifftshift(psf, axes=(1, 2))
    hat = scipy.fft.rfft2(psf)
    return {int(c): hat[i] for i, c in enumerate(cells)}


def _fft_batch(image: np.ndarray, g: GalaxyInputs, sel: np.ndarray, size: int, beta: float,
               psf_hat: dict[int, np.ndarray]) -> None:
    ix = np.floor(g.x[sel] + 0.5).astype(np.int64)
    iy = np.floor(g.y[sel] + 0.5).astype(np.int64)
    dx0 = g.x[sel] - ix
    dy0 = g.y[sel] - iy
    n = np.clip(g.n[sel], 0.3, 6.2)
    gal = np.empty((len(sel), size, size), dtype=np.float32)
    _sersic_stamps_kernel(gal, np.ascontiguousarray(g.b[sel]), sersic_bn(n), 0.5 / n,
                          TRUNCATION_HLR**2)
    hat = scipy.fft.rfft2(gal)
    hat *= np.stack([psf_hat[int(c)] for c in g.cell[sel]])
    # sub-pixel shift of the (band-limited, PSF-convolved) stamp by a Fourier phase ramp
    ky = np.fft.fftfreq(size).astype(np.float32)
    kx = np.fft.rfftfreq(size).astype(np.float32)
    two_pi = np.float32(-2.0 * np.pi)
    hat *= np.exp(1j * two_pi * ky[None, :, None] * dy0[:, None, None].astype(np.float32))
    hat *= np.exp(1j * two_pi * kx[None, None, :] * dx0[:, None, None].astype(np.float32))
    conv = scipy.fft.irfft2(hat, s=(size, size))
    _add_stamps_kernel(image, conv.astype(np.float32, copy=False), ix, iy,
                       np.ascontiguousarray(g.flux[sel]))


def _galsim_one(image: np.ndarray, g: GalaxyInputs, k: int, beta: float,
                profile: str = "moffat") -> None:
    import galsim

    n = float(np.clip(g.n[k], 0.3, 6.2))
    hlr = float(g.hlr_arcsec[k])
    gal = galsim.Sersic(n, half_light_radius=hlr, trunc=TRUNCATION_HLR * hlr, flux_untruncated=True)
    gal = gal.shear(e1=float(g.e1[k]), e2=float(g.e2[k])).withFlux(float(g.flux[k]))
    psf = (galsim.Kolmogorov(fwhm=float(g.psf_fwhm_arcsec[k])) if profile == "kolmogorov"
           else galsim.Moffat(beta=beta, fwhm=float(g.psf_fwhm_arcsec[k])))
    psf = psf.shear(e1=float(g.psf_e1[k]), e2=float(g.psf_e2[k]))
    prof = galsim.Convolve(gal, psf, gsparams=galsim.GSParams(maximum_fft_size=16384))
    j = g.jac[k]
    wcs = galsim.JacobianWCS(float(j[0, 0]), float(j[0, 1]), float(j[1, 0]), float(j[1, 1]))
    det = abs(np.linalg.det(j))
    half = int(np.ceil(TRUNCATION_HLR * hlr / np.sqrt(det) * 1.5 + 8 * g.psf_fwhm_arcsec[k] / np.sqrt(det)))
    ix, iy = int(np.floor(g.x[k] + 0.5)), int(np.floor(g.y[k] + 0.5))
    ny, nx = image.shape
    x0, x1 = max(ix - half, 0), min(ix + half + 1, nx)
    y0, y1 = max(iy - half, 0), min(iy + half + 1, ny)
    if x0 >= x1 or y0 >= y1:
        return
    # galsim images are 1-based: pixel (i, j) of our array is galsim (i + 1, j + 1)
    stamp = galsim.ImageD(galsim.BoundsI(x0 + 1, x1, y0 + 1, y1), wcs=wcs)
    prof.drawImage(stamp, center=galsim.PositionD(g.x[k] + 1.0, g.y[k] + 1.0), method="auto",
                   add_to_image=False)
    image[y0:y1, x0:x1] += stamp.array.astype(np.float32)


def add_galaxies(image: np.ndarray, g: GalaxyInputs, beta: float, *,
                 profile: str = "moffat") -> dict[str, int]:
    """Add PSF-convolved Sersic galaxies to an electron image, in place.

    Parameters
    ----------
    image : ndarray, shape (ny, nx), float32
        Electrons per pixel (trimmed CCD grid).
    g : GalaxyInputs
    beta : float
        Moffat index of the PSF (for a Kolmogorov, the index its quadratic forms were built with).
    profile : {"moffat", "kolmogorov"}
        PSF profile (`desgw.sim.model.PSFField.profile`).

    Returns
    -------
    dict
        ``{"fft": n_fft, "galsim": n_galsim}``: how many galaxies each path drew.
    """
    if len(g) == 0:
        return {"fft": 0, "galsim": 0}
    sizes = _stamp_sizes(g, beta)
    for size in FFT_SIZES:
        sel = np.flatnonzero(sizes == size)
        if sel.size == 0:
            continue
        psf_hat = _psf_hat(g.cell_m, np.unique(g.cell[sel]), beta, size, profile)
        for start in range(0, len(sel), _BATCH):
            _fft_batch(image, g, sel[start:start + _BATCH], size, beta, psf_hat)
    big = np.flatnonzero(sizes < 0)
    for k in big:
        _galsim_one(image, g, int(k), beta, profile)
    return {"fft": int(np.sum(sizes > 0)), "galsim": int(len(big))}
