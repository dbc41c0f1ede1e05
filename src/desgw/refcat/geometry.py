"""Sky geometry for reference-catalog queries: gnomonic projection, convex footprints,
proper-motion propagation and epoch conversion.

All angles are in degrees unless a name says otherwise. The footprint of a CCD is a
convex spherical polygon whose edges are great-circle arcs; the gnomonic (tangent-plane)
projection maps great circles to straight lines, so a point-in-polygon test in the tangent
plane at the polygon centre is exact on the sphere for any position (RA wrap at 0/360 and
high declinations need no special cases), as long as the polygon spans < 90 deg.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

# The spherical primitives live in desgw.util.sphere; re-exported here for the refcat API.
from desgw.util.sphere import (
    angular_separation_deg,
    gnomonic_forward,
    gnomonic_inverse,
    radec_to_unit,
    unit_to_radec,
)

__all__ = [
    "MAS_PER_DEG",
    "mjd_to_jyear",
    "radec_to_unit",
    "unit_to_radec",
    "gnomonic_forward",
    "gnomonic_inverse",
    "angular_separation_deg",
    "ConvexFootprint",
    "convex_footprint",
    "propagate_proper_motion",
]

MAS_PER_DEG = 3.6e6


@overload
def mjd_to_jyear(mjd: float) -> float: ...
@overload
def mjd_to_jyear(mjd: ArrayLike) -> NDArray[np.float64] | float: ...
def mjd_to_jyear(mjd: ArrayLike) -> NDArray[np.float64] | float:
    """Convert a Modified Julian Date to a decimal Julian year (epoch).

    ``J = 2000.0 + (MJD - 51544.5) / 365.25`` (the Julian-epoch definition; the time
    scale, UTC vs TT, is ignored: at most ~70 s, negligible for proper motion).

    Parameters
    ----------
    mjd : float or array_like
        Modified Julian Date (days).

    Returns
    -------
    float or ndarray of float64
        Julian year, e.g. 2019.5.
    """
    j = 2000.0 + (np.asarray(mjd, dtype=np.float64) - 51544.5) / 365.25
    return float(j) if j.ndim == 0 else j


def _convex_hull(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.intp]:
    """Indices of the convex hull, counter-clockwise (Andrew's monotone chain)."""
    order = np.lexsort((y, x))
    pts = [(float(x[i]), float(y[i]), int(i)) for i in order]

    def cross(o: tuple, a: tuple, b: tuple) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[tuple] = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = lower[:-1] + upper[:-1]
    return np.array([p[2] for p in hull], dtype=np.intp)


@dataclass(frozen=True)
class ConvexFootprint:
    """A convex spherical polygon (great-circle edges) grown by a margin.

    Attributes
    ----------
    ra0, dec0 : float
        Tangent point: the normalised mean of the corner unit vectors (deg).
    xi, eta : ndarray of float64, shape (K,)
        Hull corners in the tangent plane (deg), counter-clockwise.
    margin_deg : float
        Growth (deg, measured in the tangent plane): a point belongs to the footprint if it
        lies inside the polygon or within ``margin_deg`` of one of its edges.
    radius_deg : float
        Angular radius of a cone about (ra0, dec0) that contains the grown footprint.
    """

    ra0: float
    dec0: float
    xi: NDArray[np.float64]
    eta: NDArray[np.float64]
    margin_deg: float
    radius_deg: float

    def contains(self, ra: ArrayLike, dec: ArrayLike) -> NDArray[np.bool_]:
        """Boolean mask, shape (N,): which positions (deg) lie in the grown footprint."""
        x, y, front = gnomonic_forward(ra, dec, self.ra0, self.dec0)
        x = np.where(front, x, 0.0)  # far-side points: any finite value, masked below
        y = np.where(front, y, 0.0)
        x1, y1 = self.xi, self.eta
        x2, y2 = np.roll(self.xi, -1), np.roll(self.eta, -1)
        ex, ey = x2 - x1, y2 - y1
        # signed area test per edge (counter-clockwise hull -> inside means >= 0 for all)
        px = x[:, None] - x1[None, :]
        py = y[:, None] - y1[None, :]
        crossv = ex[None, :] * py - ey[None, :] * px
        inside = np.all(crossv >= 0.0, axis=1)
        if self.margin_deg > 0:
            elen2 = ex * ex + ey * ey
            t = np.clip((px * ex[None, :] + py * ey[None, :]) / elen2[None, :], 0.0, 1.0)
            dx = px - t * ex[None, :]
            dy = py - t * ey[None, :]
            near = np.any(dx * dx + dy * dy <= self.margin_deg ** 2, axis=1)
            inside |= near
        return inside & front


def convex_footprint(corners_ra: ArrayLike, corners_dec: ArrayLike, *,
                     margin_arcsec: float = 0.0) -> ConvexFootprint:
    """Build the convex footprint spanned by corner positions.

    Parameters
    ----------
    corners_ra, corners_dec : array_like, shape (K,), K >= 3
        Corner positions (deg) in any order; the footprint is their convex hull on the
        tangent plane at the corners' mean direction (edges are great-circle arcs).
    margin_arcsec : float
        Growth of the footprint (arcsec, >= 0).

    Returns
    -------
    ConvexFootprint

    Raises
    ------
    ValueError
        Fewer than 3 corners, non-finite corners, mismatched shapes, a negative margin,
        a degenerate (zero-area) polygon, or a polygon spanning >= 90 deg.
    """
    ra = np.atleast_1d(np.asarray(corners_ra, dtype=np.float64)).ravel()
    dec = np.atleast_1d(np.asarray(corners_dec, dtype=np.float64)).ravel()
    if ra.shape != dec.shape:
        raise ValueError(f"corners_ra has {ra.size} values but corners_dec has {dec.size}")
    if ra.size < 3:
        raise ValueError(f"a footprint needs at least 3 corners, got {ra.size}")
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
        raise ValueError("footprint corners must be finite")
    if np.any(np.abs(dec) > 90.0):
        raise ValueError("footprint corner declinations must lie in [-90, 90]")
    if not np.isfinite(margin_arcsec) or margin_arcsec < 0:
        raise ValueError(f"margin_arcsec must be >= 0, got {margin_arcsec}")
    v = radec_to_unit(ra, dec).sum(axis=0)
    norm = np.linalg.norm(v)
    if norm < 1e-9:
        raise ValueError("footprint corners are spread over the whole sphere")
    ra0, dec0 = (float(c) for c in unit_to_radec(v / norm))
    xi, eta, front = gnomonic_forward(ra, dec, ra0, dec0)
    seps = angular_separation_deg(ra0, dec0, ra, dec)
    if not np.all(front) or np.max(seps) >= 89.0:
        raise ValueError("footprint spans too much of the sky (corner >= 89 deg from centre)")
    hull = _convex_hull(xi, eta)
    if hull.size < 3:
        raise ValueError("footprint corners are collinear (zero-area polygon)")
    margin_deg = margin_arcsec / 3600.0
    # the farthest point of the grown polygon from the centre: a corner + margin (in the
    # tangent plane, angular distance <= plane distance, so the plane radius is an upper bound)
    r_plane = float(np.max(np.hypot(xi[hull], eta[hull]))) + margin_deg
    radius = float(np.degrees(np.arctan(np.radians(r_plane))))
    return ConvexFootprint(ra0=ra0, dec0=dec0, xi=xi[hull].copy(), eta=eta[hull].copy(),
                           margin_deg=margin_deg, radius_deg=radius)


def propagate_proper_motion(ra: ArrayLike, dec: ArrayLike, pmra: ArrayLike, pmdec: ArrayLike,
                            dt_years: ArrayLike
                            ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Move stars by proper motion, linearly in each star's own tangent plane.

    Parameters
    ----------
    ra, dec : array_like, shape (N,)
        Positions at the reference epoch (deg).
    pmra : array_like, shape (N,)
        mu_alpha* = mu_alpha cos(dec) (mas/yr), as in the Gaia archive.
    pmdec : array_like, shape (N,)
        mu_delta (mas/yr).
    dt_years : array_like, shape (N,) or scalar
        Target epoch minus reference epoch (Julian years).

    Returns
    -------
    ra, dec : ndarray of float64, shape (N,)
        Positions at the target epoch (deg): the star's tangent-plane offset
        (xi, eta) = (pmra, pmdec) * dt is deprojected about its reference position.
    """
    dt = np.asarray(dt_years, dtype=np.float64)
    xi = np.asarray(pmra, dtype=np.float64) * dt / MAS_PER_DEG
    eta = np.asarray(pmdec, dtype=np.float64) * dt / MAS_PER_DEG
    return gnomonic_inverse(xi, eta, ra, dec)
