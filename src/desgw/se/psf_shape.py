"""Shape measurements of PSF stamps: elliptical Moffat fit (FWHM) and adaptive moments (e1, e2).

Both work on pixelated, normalised stamps such as :meth:`desgw.se.psf.PSFModel.render`
returns, and both remove the pixel response, so the numbers refer to the PSF profile in the
sky (what a simulator's Moffat ``fwhm`` and distortion ``e1, e2`` describe):

- :func:`fit_moffat` fits an elliptical Moffat integrated over pixels (5 x 5 sub-samples per
  pixel). Its FWHM is the geometric mean of the major- and minor-axis FWHM, the quantity a
  shear that preserves area leaves unchanged.
- :func:`adaptive_moments` iterates an elliptical Gaussian weight matched to the stamp
  (Bernstein & Jarvis 2002) and returns the distortion ``e1 = (Mxx - Myy) / (Mxx + Myy)``,
  ``e2 = 2 Mxy / (Mxx + Myy)`` of the weighted moments after subtracting the pixel's variance
  (1/12 pix**2) from ``Mxx`` and ``Myy``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy.optimize import least_squares

__all__ = ["MoffatFit", "fit_moffat", "Moments", "adaptive_moments"]

_NSUB = 5


@dataclass(frozen=True)
class MoffatFit:
    """Elliptical Moffat parameters (pixels).

    Attributes
    ----------
    flux, x0, y0 : float
        Total flux and centre (0-based stamp coordinates).
    fwhm : float
        Geometric-mean FWHM (pix), pixel response removed.
    e1, e2 : float
        Distortion ``(a**2 - b**2) / (a**2 + b**2)`` times ``cos 2theta``, ``sin 2theta``.
    beta : float
        Moffat index.
    """

    flux: float
    x0: float
    y0: float
    fwhm: float
    e1: float
    e2: float
    beta: float


def _moffat_pixels(params: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The pixel-integrated elliptical Moffat of ``params`` (flux, x0, y0, ln FWHM, e1, e2,
    beta) at the pixels whose sub-sample positions are the rows of ``xs``, ``ys``."""
    model = np.empty(xs.shape[0])
    _moffat_eval(np.asarray(params, dtype=np.float64), xs, ys, model, np.empty((0, 7)), False)
    return model


@njit(cache=True)
def _moffat_eval(params, xs, ys, model, jac, want_jac):  # pragma: no cover - numba
    """Model (and its Jacobian in ``params``) of :func:`_moffat_pixels`, one pass per pixel.

    ``e = hypot(e1, e2)`` is capped at 0.95 (its derivative is 0 above), ``theta = atan2(e2,
    e1) / 2``, axis ratio ``q = sqrt((1 - e) / (1 + e))``, ``alpha = FWHM / (2 sqrt(2**(1 /
    beta) - 1))``, ``r2 = (u**2 q + v**2 / q) / alpha**2`` in the frame rotated by theta and
    the profile ``(beta - 1) / (pi alpha**2) (1 + r2)**-beta``. At ``e = 0`` (where theta is
    undefined) the derivatives in ``e1``, ``e2`` are the limits ``-(dx**2 - dy**2)`` and
    ``-2 dx dy`` over ``alpha**2`` of ``r2``'s.
    """
    flux, x0, y0, lnfwhm, e1, e2, beta = (params[0], params[1], params[2], params[3],
                                          params[4], params[5], params[6])
    fwhm = np.exp(lnfwhm)
    eh = np.hypot(e1, e2)
    e = min(eh, 0.95)
    theta = 0.5 * np.arctan2(e2, e1)
    q = np.sqrt((1.0 - e) / (1.0 + e))
    p2 = 2.0 ** (1.0 / beta)
    w = p2 - 1.0
    alpha = fwhm / (2.0 * np.sqrt(w))
    a2 = alpha * alpha
    c = np.cos(theta)
    s = np.sin(theta)
    norm = (beta - 1.0) / (np.pi * a2)
    npix, ns = xs.shape
    inv_ns = 1.0 / ns
    for i in range(npix):
        acc = 0.0
        g_x0 = 0.0
        g_y0 = 0.0
        g_th = 0.0
        g_q = 0.0
        g_al = 0.0
        g_be = 0.0
        g_e1z = 0.0
        g_e2z = 0.0
        for k in range(ns):
            dx = xs[i, k] - x0
            dy = ys[i, k] - y0
            u = c * dx + s * dy
            v = -s * dx + c * dy
            r2 = (u * u * q + v * v / q) / a2
            opr = 1.0 + r2
            lg = np.log(opr)
            pr = norm * np.exp(-beta * lg)
            acc += pr
            if want_jac:
                g = -beta * pr / opr / a2  # d prof / d (r2 alpha**2)
                g_x0 += g * (-2.0 * u * q * c + 2.0 * v / q * s)
                g_y0 += g * (-2.0 * u * q * s - 2.0 * v / q * c)
                g_th += g * 2.0 * u * v * (q - 1.0 / q)
                g_q += g * (u * u - v * v / (q * q))
                g_e1z += g * -(dx * dx - dy * dy)
                g_e2z += g * -2.0 * dx * dy
                g_al += pr * (-2.0 / alpha) * (1.0 - beta * r2 / opr)
                g_be += pr * (1.0 / (beta - 1.0) - lg)
        model[i] = flux * acc * inv_ns
        if want_jac:
            f = flux * inv_ns
            jac[i, 0] = acc * inv_ns
            jac[i, 1] = f * g_x0
            jac[i, 2] = f * g_y0
            jac[i, 3] = f * g_al * alpha
            if eh > 0.0:
                de1 = e1 / eh if eh < 0.95 else 0.0
                de2 = e2 / eh if eh < 0.95 else 0.0
                dq = -1.0 / (q * (1.0 + e) ** 2)
                jac[i, 4] = f * (g_q * dq * de1 - g_th * 0.5 * e2 / (eh * eh))
                jac[i, 5] = f * (g_q * dq * de2 + g_th * 0.5 * e1 / (eh * eh))
            else:
                jac[i, 4] = f * g_e1z
                jac[i, 5] = f * g_e2z
            dalpha_dbeta = alpha / (2.0 * w) * p2 * np.log(2.0) / (beta * beta)
            jac[i, 6] = f * (g_be + g_al * dalpha_dbeta)


def fit_moffat(stamp: np.ndarray, *, radius: float | None = None,
               start: MoffatFit | None = None) -> MoffatFit:
    """Fit an elliptical, pixel-integrated Moffat to a stamp.

    The model and its analytic Jacobian come from one compiled pass over the sub-samples
    (:func:`_moffat_eval`); a fit of a 31 x 31 stamp takes ~2 ms instead of the ~13 ms of a
    numpy model with a finite-difference Jacobian (8 model evaluations per iteration).

    Parameters
    ----------
    stamp : numpy.ndarray
        (ny, nx) image of one PSF, background 0.
    radius : float or None
        Only pixels within this distance (pix) of the stamp centre are fitted (default: all).
    start : MoffatFit or None
        Starting parameters, e.g. the fit of a similar stamp (the same PSF model at a nearby
        position): the fit converges to the same minimum in fewer iterations. Default: a
        circular Moffat of beta 3 at the stamp centre, its FWHM from the half-maximum area.

    Returns
    -------
    MoffatFit
    """
    stamp = np.asarray(stamp, dtype=np.float64)
    ny, nx = stamp.shape
    yy, xx = np.mgrid[:ny, :nx]
    sel = np.ones(stamp.shape, dtype=bool)
    if radius is not None:
        sel = np.hypot(xx - nx // 2, yy - ny // 2) <= radius
    off = (np.arange(_NSUB) + 0.5) / _NSUB - 0.5
    sx, sy = np.meshgrid(off, off)
    xs = np.ascontiguousarray(xx[sel][:, None] + sx.ravel()[None, :], dtype=np.float64)
    ys = np.ascontiguousarray(yy[sel][:, None] + sy.ravel()[None, :], dtype=np.float64)
    data = stamp[sel]
    total = stamp.sum()
    # Starting FWHM from the half-maximum area.
    area = max(int(np.count_nonzero(stamp >= 0.5 * stamp.max())), 1)
    fwhm0 = max(2.0 * np.sqrt(area / np.pi), 1.0)
    p0 = np.array([total, nx // 2, ny // 2, np.log(fwhm0), 0.0, 0.0, 3.0])
    lo = [-np.inf, -np.inf, -np.inf, np.log(0.3), -0.9, -0.9, 1.2]
    hi = [np.inf, np.inf, np.inf, np.log(100.0), 0.9, 0.9, 30.0]
    if start is not None:
        p0 = np.clip([start.flux, start.x0, start.y0, np.log(start.fwhm), start.e1, start.e2,
                      start.beta], lo, hi)
    scale = max(abs(data).max(), 1e-30)
    model = np.empty(data.size)
    jac = np.empty((data.size, 7))
    cache: dict[str, np.ndarray] = {}

    def _eval(p: np.ndarray) -> None:
        if "p" not in cache or not np.array_equal(cache["p"], p):
            _moffat_eval(p, xs, ys, model, jac, True)
            cache["p"] = p.copy()

    def resid(p: np.ndarray) -> np.ndarray:
        _eval(p)
        return (model - data) / scale

    def jacobian(p: np.ndarray) -> np.ndarray:
        _eval(p)
        return jac / scale

    res = least_squares(resid, p0, jac=jacobian, bounds=(lo, hi), x_scale="jac", xtol=1e-10,
                        ftol=1e-10)
    flux, x0, y0, lnfwhm, e1, e2, beta = res.x
    return MoffatFit(flux=float(flux), x0=float(x0), y0=float(y0), fwhm=float(np.exp(lnfwhm)),
                     e1=float(e1), e2=float(e2), beta=float(beta))


@dataclass(frozen=True)
class Moments:
    """Adaptive second moments of a stamp (pixel response removed).

    Attributes
    ----------
    x0, y0 : float
        Weighted centroid (0-based stamp coordinates).
    mxx, myy, mxy : float
        Second moments (pix**2) of the matched elliptical Gaussian, minus 1/12 on the diagonal.
    e1, e2 : float
        Distortion components from the moments.
    """

    x0: float
    y0: float
    mxx: float
    myy: float
    mxy: float
    e1: float
    e2: float


def adaptive_moments(stamp: np.ndarray, *, max_iter: int = 100, tol: float = 1e-8) -> Moments:
    """Adaptive (elliptical-Gaussian-weighted) moments of a stamp.

    Parameters
    ----------
    stamp : numpy.ndarray
        (ny, nx) image, background 0.
    max_iter : int
        Iteration limit.
    tol : float
        Convergence tolerance on the moments (pix**2).

    Returns
    -------
    Moments
    """
    img = np.asarray(stamp, dtype=np.float64)
    ny, nx = img.shape
    yy, xx = np.mgrid[:ny, :nx].astype(np.float64)
    x0, y0 = nx // 2, ny // 2
    mxx = myy = 2.0
    mxy = 0.0
    for _ in range(max_iter):
        det = mxx * myy - mxy * mxy
        ixx, iyy, ixy = myy / det, mxx / det, -mxy / det
        dx, dy = xx - x0, yy - y0
        w = np.exp(-0.5 * (ixx * dx * dx + iyy * dy * dy + 2.0 * ixy * dx * dy)) * img
        s = w.sum()
        nx0 = x0 + (w * dx).sum() / s
        ny0 = y0 + (w * dy).sum() / s
        # For a Gaussian image, the weighted moments are the harmonic combination of image and
        # weight moments; matching means the weighted moments equal half the weight moments.
        cxx = (w * dx * dx).sum() / s
        cyy = (w * dy * dy).sum() / s
        cxy = (w * dx * dy).sum() / s
        nxx, nyy, nxy = 2.0 * cxx, 2.0 * cyy, 2.0 * cxy
        done = max(abs(nxx - mxx), abs(nyy - myy), abs(nxy - mxy)) < tol
        mxx, myy, mxy, x0, y0 = nxx, nyy, nxy, nx0, ny0
        if done:
            break
    pxx = mxx - 1.0 / 12.0
    pyy = myy - 1.0 / 12.0
    tr = pxx + pyy
    return Moments(x0=float(x0), y0=float(y0), mxx=float(pxx), myy=float(pyy), mxy=float(mxy),
                   e1=float((pxx - pyy) / tr), e2=float(2.0 * mxy / tr))
