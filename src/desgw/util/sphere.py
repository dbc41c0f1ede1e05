"""Spherical geometry on the celestial sphere: unit vectors, great-circle separations, mean
directions, chords and the gnomonic (tangent-plane) projection.

The one home of these formulas for every stage (reference-catalog queries, astrometry,
template overlaps, star lists, database cone searches, the report). All angles are in degrees
unless a name says otherwise (``_arcsec``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "ARCSEC_PER_DEG",
    "radec_to_unit",
    "unit_to_radec",
    "angular_separation_deg",
    "mean_position",
    "arcsec_to_chord",
    "chord_to_arcsec",
    "gnomonic_forward",
    "gnomonic_inverse",
]

#: Arcseconds per degree.
ARCSEC_PER_DEG = 3600.0


def radec_to_unit(ra: ArrayLike, dec: ArrayLike) -> NDArray[np.float64]:
    """Unit vectors, shape (..., 3), for RA, Dec in degrees."""
    ra_r = np.radians(np.asarray(ra, dtype=np.float64))
    dec_r = np.radians(np.asarray(dec, dtype=np.float64))
    cd = np.cos(dec_r)
    return np.stack([cd * np.cos(ra_r), cd * np.sin(ra_r), np.sin(dec_r)], axis=-1)


def unit_to_radec(v: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """RA in [0, 360) and Dec (degrees) of vectors of shape (..., 3) (need not be unit)."""
    v = np.asarray(v, dtype=np.float64)
    ra = np.degrees(np.arctan2(v[..., 1], v[..., 0])) % 360.0
    dec = np.degrees(np.arctan2(v[..., 2], np.hypot(v[..., 0], v[..., 1])))
    return ra, dec


def angular_separation_deg(ra1: ArrayLike, dec1: ArrayLike, ra2: ArrayLike,
                           dec2: ArrayLike) -> NDArray[np.float64]:
    """Great-circle separation (degrees) by the Vincenty formula (stable at all angles).

    Parameters
    ----------
    ra1, dec1, ra2, dec2 : float or array_like
        Positions (deg), broadcast against each other.

    Returns
    -------
    numpy.ndarray
        Separations (deg) in [0, 180], float64 (0-d for scalar input).
    """
    l1, b1 = np.radians(np.asarray(ra1, float)), np.radians(np.asarray(dec1, float))
    l2, b2 = np.radians(np.asarray(ra2, float)), np.radians(np.asarray(dec2, float))
    dl = l2 - l1
    sb1, cb1, sb2, cb2 = np.sin(b1), np.cos(b1), np.sin(b2), np.cos(b2)
    num = np.hypot(cb2 * np.sin(dl), cb1 * sb2 - sb1 * cb2 * np.cos(dl))
    den = sb1 * sb2 + cb1 * cb2 * np.cos(dl)
    return np.degrees(np.arctan2(num, den))


def mean_position(ra: ArrayLike, dec: ArrayLike) -> tuple[float, float]:
    """Mean direction (deg) of positions, averaged as unit vectors (safe across RA = 0).

    A single position is returned as given (RA taken modulo 360).
    """
    ra_a, dec_a = np.atleast_1d(np.asarray(ra, float)), np.atleast_1d(np.asarray(dec, float))
    if ra_a.size == 1:
        return float(ra_a[0]) % 360.0, float(dec_a[0])
    v = radec_to_unit(ra_a.ravel(), dec_a.ravel()).sum(axis=0)
    ra_m, dec_m = unit_to_radec(v)
    return float(ra_m), float(dec_m)


def arcsec_to_chord(arcsec: ArrayLike) -> NDArray[np.float64]:
    """Length of the chord between unit vectors separated by ``arcsec`` (for k-d trees)."""
    return 2.0 * np.sin(np.radians(np.asarray(arcsec, dtype=np.float64) / ARCSEC_PER_DEG) / 2.0)


def chord_to_arcsec(chord: ArrayLike) -> NDArray[np.float64]:
    """Angle (arcsec) between unit vectors a ``chord`` apart (inverse of
    :func:`arcsec_to_chord`)."""
    c = np.asarray(chord, dtype=np.float64)
    return np.degrees(2.0 * np.arcsin(np.clip(c / 2.0, 0.0, 1.0))) * ARCSEC_PER_DEG


def gnomonic_forward(ra: ArrayLike, dec: ArrayLike, ra0: float, dec0: float, *,
                     min_cos: float = 1e-12
                     ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """Project RA, Dec onto the tangent plane at (ra0, dec0).

    Parameters
    ----------
    ra, dec : array_like
        Positions (deg).
    ra0, dec0 : float
        Tangent point (deg).
    min_cos : float, optional
        Points whose angular distance ``c`` from the tangent point has ``cos c <= min_cos``
        are "behind" (default: the far hemisphere; 0.2 keeps only points within ~78 deg).

    Returns
    -------
    xi, eta : ndarray of float64
        Standard coordinates (deg; xi toward increasing RA, eta toward north); +inf for
        points that are not in front.
    front : ndarray of bool
        True for points in front (the projection is only meaningful there).
    """
    a = np.radians(np.asarray(ra, dtype=np.float64) - ra0)
    d = np.radians(np.asarray(dec, dtype=np.float64))
    d0 = np.radians(dec0)
    cd, sd = np.cos(d), np.sin(d)
    ca = np.cos(a)
    cosc = np.sin(d0) * sd + np.cos(d0) * cd * ca
    front = cosc > min_cos
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = np.where(front, cd * np.sin(a) / cosc, np.inf)
        eta = np.where(front, (np.cos(d0) * sd - np.sin(d0) * cd * ca) / cosc, np.inf)
    return np.degrees(xi), np.degrees(eta), front


def gnomonic_inverse(xi: ArrayLike, eta: ArrayLike, ra0: ArrayLike, dec0: ArrayLike
                     ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Inverse gnomonic projection; tangent points may differ per element.

    Parameters
    ----------
    xi, eta : array_like
        Standard coordinates (deg).
    ra0, dec0 : array_like
        Tangent points (deg), broadcastable against ``xi``.

    Returns
    -------
    ra, dec : ndarray of float64
        RA in [0, 360) and Dec (deg).
    """
    x = np.radians(np.asarray(xi, dtype=np.float64))
    y = np.radians(np.asarray(eta, dtype=np.float64))
    d0 = np.radians(np.asarray(dec0, dtype=np.float64))
    cd0, sd0 = np.cos(d0), np.sin(d0)
    den = cd0 - y * sd0
    ra = (np.asarray(ra0, dtype=np.float64) + np.degrees(np.arctan2(x, den))) % 360.0
    dec = np.degrees(np.arctan2(sd0 + y * cd0, np.hypot(x, den)))
    return ra, dec
