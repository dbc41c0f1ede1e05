"""DECam focal plane -> sky mapping, with the optical distortion of the corrector.

Model
-----
Focal-plane millimetres ``(x_mm, y_mm)`` map to undistorted tangent-plane offsets from the
boresight, ``xi0 = +y_mm * s``, ``eta0 = -x_mm * s`` (degrees; xi towards +RA/East, eta towards
+Dec, the orientation of real DECam CP image WCS: CD1_2 > 0, CD2_1 < 0), then a radial distortion
``r = r0 * (1 + k2 r0**2 + k4 r0**4)`` (r0, r in degrees) and a sky rotation. The parameters
``s, k2, k4`` were fitted to the on-sky CCD corner offsets of real DECam (``data/
ccd_corners_xy_fill.dat``, obztak 3.0) with `fit_distortion`; the fit reproduces those corners to
about an arcsecond rms (checked in the tests). Pixel ``(x, y)`` of the trimmed image (0-based)
maps to focal-plane mm through the CCD centre and its small rotation from ``chipcenters.txt``.

Everything is vectorised numpy; the inverse distortion is solved with Newton iterations.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass

import numpy as np

from desgw.util.sphere import gnomonic_forward, gnomonic_inverse

from .camera import CCD_SHAPE, PIXEL_SIZE_MM, _data_file, ccds, get_ccd

__all__ = [
    "Distortion",
    "DECAM_DISTORTION",
    "Pointing",
    "pixel_to_focal",
    "focal_to_pixel",
    "focal_to_tangent",
    "tangent_to_focal",
    "tangent_to_sky",
    "sky_to_tangent",
    "pixel_to_sky",
    "sky_to_pixel",
    "ccd_corners_sky",
    "reference_corners",
    "fit_distortion",
    "pixel_scale_arcsec",
]


@dataclass(frozen=True)
class Distortion:
    """Radial distortion of the DECam corrector.

    Attributes
    ----------
    scale_deg_per_mm : float
        Plate scale at the optical axis (degrees per mm).
    k2 : float
        Cubic radial term (deg**-2).
    k4 : float
        Quintic radial term (deg**-4).
    """

    scale_deg_per_mm: float
    k2: float
    k4: float

    def distort(self, r0: np.ndarray) -> np.ndarray:
        """Distorted radius (deg) for undistorted radius ``r0`` (deg)."""
        r2 = r0 * r0
        return r0 * (1.0 + self.k2 * r2 + self.k4 * r2 * r2)

    def undistort(self, r: np.ndarray) -> np.ndarray:
        """Undistorted radius (deg) for distorted radius ``r`` (deg), by Newton iteration."""
        r = np.asarray(r, dtype=np.float64)
        r0 = r.copy()
        for _ in range(6):
            r2 = r0 * r0
            f = r0 * (1.0 + self.k2 * r2 + self.k4 * r2 * r2) - r
            fp = 1.0 + 3.0 * self.k2 * r2 + 5.0 * self.k4 * r2 * r2
            r0 = r0 - f / fp
        return r0


@dataclass(frozen=True)
class Pointing:
    """Telescope pointing: boresight (deg) and rotation of the focal plane on the sky (deg).

    ``rotation_deg`` turns the tangent-plane offsets counter-clockwise (East of North); real
    DECam keeps it near 0.
    """

    ra_deg: float
    dec_deg: float
    rotation_deg: float = 0.0


def pixel_to_focal(ccdnum: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trimmed-image pixel coordinates (0-based) -> focal-plane mm."""
    ccd = get_ccd(ccdnum)
    dx = (np.asarray(x, dtype=np.float64) - (CCD_SHAPE[1] - 1) / 2.0) * PIXEL_SIZE_MM
    dy = (np.asarray(y, dtype=np.float64) - (CCD_SHAPE[0] - 1) / 2.0) * PIXEL_SIZE_MM
    t = np.deg2rad(ccd.rotation_deg)
    c, s = np.cos(t), np.sin(t)
    return ccd.x_center_mm + c * dx - s * dy, ccd.y_center_mm + s * dx + c * dy


def focal_to_pixel(ccdnum: int, xmm: np.ndarray | float, ymm: np.ndarray | float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Focal-plane mm -> trimmed-image pixel coordinates (0-based) of CCD ``ccdnum``."""
    ccd = get_ccd(ccdnum)
    ddx = np.asarray(xmm, dtype=np.float64) - ccd.x_center_mm
    ddy = np.asarray(ymm, dtype=np.float64) - ccd.y_center_mm
    t = np.deg2rad(ccd.rotation_deg)
    c, s = np.cos(t), np.sin(t)
    dx = c * ddx + s * ddy
    dy = -s * ddx + c * ddy
    return dx / PIXEL_SIZE_MM + (CCD_SHAPE[1] - 1) / 2.0, dy / PIXEL_SIZE_MM + (CCD_SHAPE[0] - 1) / 2.0


def focal_to_tangent(
    xmm: np.ndarray, ymm: np.ndarray, distortion: Distortion | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Focal-plane mm -> distorted tangent-plane offsets (xi, eta) in degrees."""
    d = distortion or DECAM_DISTORTION
    xi0 = np.asarray(ymm, dtype=np.float64) * d.scale_deg_per_mm
    eta0 = -np.asarray(xmm, dtype=np.float64) * d.scale_deg_per_mm
    r0 = np.hypot(xi0, eta0)
    factor = np.where(r0 > 0, d.distort(r0) / np.where(r0 > 0, r0, 1.0), 1.0)
    return xi0 * factor, eta0 * factor


def tangent_to_focal(
    xi: np.ndarray, eta: np.ndarray, distortion: Distortion | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distorted tangent-plane offsets (deg) -> focal-plane mm (inverse of `focal_to_tangent`)."""
    d = distortion or DECAM_DISTORTION
    xi = np.asarray(xi, dtype=np.float64)
    eta = np.asarray(eta, dtype=np.float64)
    r = np.hypot(xi, eta)
    factor = np.where(r > 0, d.undistort(r) / np.where(r > 0, r, 1.0), 1.0)
    return -eta * factor / d.scale_deg_per_mm, xi * factor / d.scale_deg_per_mm


def tangent_to_sky(xi: np.ndarray, eta: np.ndarray, pointing: Pointing) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic deprojection of tangent-plane offsets (deg) about the boresight -> (ra, dec) deg."""
    t = np.deg2rad(pointing.rotation_deg)
    c, s = np.cos(t), np.sin(t)
    xr = c * np.asarray(xi) - s * np.asarray(eta)
    yr = s * np.asarray(xi) + c * np.asarray(eta)
    return gnomonic_inverse(xr, yr, pointing.ra_deg, pointing.dec_deg)


def sky_to_tangent(ra: np.ndarray, dec: np.ndarray, pointing: Pointing) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic projection of (ra, dec) deg about the boresight -> tangent offsets (xi, eta) deg."""
    xr, yr, _ = gnomonic_forward(ra, dec, pointing.ra_deg, pointing.dec_deg, min_cos=-np.inf)
    t = np.deg2rad(pointing.rotation_deg)
    c, s = np.cos(t), np.sin(t)
    return c * xr + s * yr, -s * xr + c * yr


def pixel_to_sky(
    ccdnum: int, x: np.ndarray, y: np.ndarray, pointing: Pointing, distortion: Distortion | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Trimmed pixel (0-based) of CCD ``ccdnum`` -> (ra, dec) in degrees for a pointing."""
    xmm, ymm = pixel_to_focal(ccdnum, x, y)
    xi, eta = focal_to_tangent(xmm, ymm, distortion)
    return tangent_to_sky(xi, eta, pointing)


def sky_to_pixel(
    ccdnum: int, ra: np.ndarray, dec: np.ndarray, pointing: Pointing, distortion: Distortion | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) degrees -> trimmed pixel coordinates (0-based) of CCD ``ccdnum``."""
    xi, eta = sky_to_tangent(ra, dec, pointing)
    xmm, ymm = tangent_to_focal(xi, eta, distortion)
    return focal_to_pixel(ccdnum, xmm, ymm)


def _corner_pixels() -> tuple[np.ndarray, np.ndarray]:
    nx, ny = CCD_SHAPE[1], CCD_SHAPE[0]
    return np.array([-0.5, nx - 0.5, nx - 0.5, -0.5]), np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])


def ccd_corners_sky(
    ccdnum: int, pointing: Pointing, distortion: Distortion | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in degrees of the four outer pixel corners of a CCD, counter-clockwise."""
    x, y = _corner_pixels()
    return pixel_to_sky(ccdnum, x, y, pointing, distortion)


@functools.cache
def reference_corners() -> dict[int, np.ndarray]:
    """Real DECam on-sky CCD corner offsets from the boresight (deg), ``{ccdnum: (4, 2) array}``.

    Columns are (xi, eta): offset towards +RA (times cos dec) and towards +Dec.
    """
    text = _data_file("ccd_corners_xy_fill.dat").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    raw = ast.literal_eval(body)
    return {int(k): np.asarray(v, dtype=np.float64) for k, v in raw.items()}


def fit_distortion() -> tuple[Distortion, float]:
    """Fit the plate scale and radial distortion to the real DECam corner offsets.

    Returns
    -------
    Distortion
        Best-fit parameters.
    float
        rms of the corner residuals in arcsec.
    """
    from scipy.optimize import least_squares

    ref = reference_corners()
    px, py = _corner_pixels()
    model_mm = []
    target = []
    for ccd in ccds():
        # CCD 31 (S7) is garbled in the reference file (corners ~2 arcmin off, its spread as big)
        if ccd.ccdnum not in ref or ccd.ccdnum == 31:
            continue
        xmm, ymm = pixel_to_focal(ccd.ccdnum, px, py)
        # pair each model corner with the nearest reference corner (orientation-agnostic)
        guess_xi, guess_eta = ymm * 0.0048717, -xmm * 0.0048717
        r = ref[ccd.ccdnum]
        idx = [int(np.argmin(np.hypot(r[:, 0] - gx, r[:, 1] - ge))) for gx, ge in zip(guess_xi, guess_eta)]
        model_mm.append(np.column_stack([xmm, ymm]))
        target.append(r[idx])
    mm = np.concatenate(model_mm)
    tgt = np.concatenate(target)

    def resid(p: np.ndarray) -> np.ndarray:
        # nuisance: the reference exposure's pointing offset (p3, p4 in mm) and sky rotation (p5, deg)
        d = Distortion(p[0], p[1], p[2])
        xi, eta = focal_to_tangent(mm[:, 0] - p[3], mm[:, 1] - p[4], d)
        t = np.deg2rad(p[5])
        xr = np.cos(t) * xi - np.sin(t) * eta
        yr = np.sin(t) * xi + np.cos(t) * eta
        return np.concatenate([xr - tgt[:, 0], yr - tgt[:, 1]]) * 3600.0

    sol = least_squares(
        resid, x0=[0.0048717, 0.0, 0.0, 0.0, 0.0, 0.0], x_scale=[1e-4, 1e-3, 1e-3, 0.1, 0.1, 0.01]
    )
    rms = float(np.sqrt(np.mean(resid(sol.x) ** 2) * 2))
    return Distortion(float(sol.x[0]), float(sol.x[1]), float(sol.x[2])), rms


#: Parameters from `fit_distortion` (refit and compare in tests/instrument/test_optics.py).
DECAM_DISTORTION = Distortion(scale_deg_per_mm=0.00488050810, k2=-1.73605e-3, k4=1.0812e-5)


def pixel_scale_arcsec(ccdnum: int, x: float, y: float, distortion: Distortion | None = None) -> float:
    """Local pixel scale (arcsec/pixel, geometric mean of the two axes) at a trimmed pixel."""
    p = Pointing(0.0, 0.0)
    ra, dec = pixel_to_sky(ccdnum, np.array([x, x + 1, x]), np.array([y, y, y + 1]), p, distortion)
    ra = np.where(ra > 180, ra - 360, ra)
    j = np.array([[ra[1] - ra[0], ra[2] - ra[0]], [dec[1] - dec[0], dec[2] - dec[0]]])
    return float(np.sqrt(abs(np.linalg.det(j))) * 3600.0)
