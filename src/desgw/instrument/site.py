"""The Blanco telescope's site (CTIO) and the airmass of a pointing at a given time.

A raw DECam header carries ``AIRMASS`` (the telescope control system's value). When it is absent
or not physical, :func:`airmass_at` recomputes it from the pointing and the time: local mean
sidereal time from the IAU 1982 GMST polynomial (UT1 taken as UTC: an error below 1 s of time,
negligible here), the hour angle, the zenith distance, and the airmass of a plane-parallel
atmosphere with Hardie's (1962) curvature terms, good to ~0.001 below airmass 3.
Pure numpy, no IERS tables (no network access needed).
"""

from __future__ import annotations

import math

__all__ = ["CTIO_LATITUDE_DEG", "CTIO_LONGITUDE_DEG", "airmass_at", "zenith_distance_deg"]

#: Blanco 4-m telescope, Cerro Tololo (geodetic latitude and east longitude, degrees).
CTIO_LATITUDE_DEG = -30.16606
CTIO_LONGITUDE_DEG = -70.81489


def _gmst_deg(mjd_utc: float) -> float:
    """Greenwich mean sidereal time (degrees) at ``mjd_utc`` (UT1 ~ UTC)."""
    d = mjd_utc + 2400000.5 - 2451545.0
    t = d / 36525.0
    return (280.46061837 + 360.98564736629 * d + 0.000387933 * t * t
            - t * t * t / 38710000.0) % 360.0


def zenith_distance_deg(ra_deg: float, dec_deg: float, mjd_utc: float, *,
                        latitude_deg: float = CTIO_LATITUDE_DEG,
                        longitude_deg: float = CTIO_LONGITUDE_DEG) -> float:
    """Zenith distance (degrees) of ``(ra_deg, dec_deg)`` (degrees, of date; J2000 is within a
    few arcminutes, irrelevant for airmass) seen from the site at ``mjd_utc`` (days)."""
    ha = math.radians((_gmst_deg(mjd_utc) + longitude_deg - ra_deg) % 360.0)
    lat, dec = math.radians(latitude_deg), math.radians(dec_deg)
    cos_z = math.sin(lat) * math.sin(dec) + math.cos(lat) * math.cos(dec) * math.cos(ha)
    return math.degrees(math.acos(max(-1.0, min(1.0, cos_z))))


def airmass_at(ra_deg: float, dec_deg: float, mjd_utc: float, *,
               latitude_deg: float = CTIO_LATITUDE_DEG,
               longitude_deg: float = CTIO_LONGITUDE_DEG) -> float:
    """Airmass of a pointing at a time (Hardie 1962), NaN below the horizon.

    Parameters
    ----------
    ra_deg, dec_deg : float
        Pointing (degrees).
    mjd_utc : float
        Time (MJD, UTC; e.g. the middle of the exposure).
    latitude_deg, longitude_deg : float
        Site (degrees, east longitude); CTIO by default.

    Returns
    -------
    float
        ``sec z - 0.0018167 (sec z - 1) - 0.002875 (sec z - 1)^2 - 0.0008083 (sec z - 1)^3``,
        dimensionless; NaN when the zenith distance is 90 degrees or more.
    """
    z = zenith_distance_deg(ra_deg, dec_deg, mjd_utc, latitude_deg=latitude_deg,
                            longitude_deg=longitude_deg)
    if z >= 90.0:
        return math.nan
    s1 = 1.0 / math.cos(math.radians(z)) - 1.0
    return 1.0 + s1 - 0.0018167 * s1 - 0.002875 * s1 * s1 - 0.0008083 * s1 ** 3
