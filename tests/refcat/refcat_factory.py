"""Synthetic Gaia-like catalogs and an independent (spherical) brute-force footprint test."""

from __future__ import annotations

import numpy as np

GAIA_COLUMNS = ("source_id", "ra", "dec", "ra_error", "dec_error", "pmra", "pmdec",
                "pmra_error", "pmdec_error", "ref_epoch", "phot_g_mean_mag",
                "phot_bp_mean_mag", "phot_rp_mean_mag", "phot_g_mean_flux_over_error",
                "phot_bp_mean_flux_over_error", "phot_rp_mean_flux_over_error")


def random_cap(rng: np.random.Generator, n: int, ra0: float, dec0: float, radius: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """Uniform random points (deg) in a spherical cap of ``radius`` deg about (ra0, dec0)."""
    cosr = np.cos(np.radians(radius))
    z = rng.uniform(cosr, 1.0, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    s = np.sqrt(1 - z * z)
    local = np.stack([z, s * np.cos(phi), s * np.sin(phi)], axis=-1)  # around +x
    a, d = np.radians(ra0), np.radians(dec0)
    # rotate +x to (a, d): first about y by -d (tilt to dec), then about z by a
    ry = np.array([[np.cos(d), 0, -np.sin(d)], [0, 1, 0], [np.sin(d), 0, np.cos(d)]])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    v = local @ (rz @ ry).T
    ra = np.degrees(np.arctan2(v[:, 1], v[:, 0])) % 360
    dec = np.degrees(np.arcsin(np.clip(v[:, 2], -1, 1)))
    return ra, dec


def gaia_like(rng: np.random.Generator, ra: np.ndarray, dec: np.ndarray, *,
              first_id: int = 1, pm_scale: float = 5.0) -> dict[str, np.ndarray]:
    """Gaia-archive-named columns for the given positions (ref_epoch 2016.0)."""
    n = ra.size
    g = rng.uniform(12, 20, n)
    color = rng.uniform(0.0, 3.0, n)
    return {
        "source_id": np.arange(first_id, first_id + n, dtype=np.int64),
        "ra": ra.astype(np.float64), "dec": dec.astype(np.float64),
        "ra_error": rng.uniform(0.02, 1, n).astype(np.float32),
        "dec_error": rng.uniform(0.02, 1, n).astype(np.float32),
        "pmra": rng.normal(0, pm_scale, n).astype(np.float32),
        "pmdec": rng.normal(0, pm_scale, n).astype(np.float32),
        "pmra_error": rng.uniform(0.02, 1, n).astype(np.float32),
        "pmdec_error": rng.uniform(0.02, 1, n).astype(np.float32),
        "ref_epoch": np.full(n, 2016.0),
        "phot_g_mean_mag": g.astype(np.float32),
        "phot_bp_mean_mag": (g + 0.4 * color).astype(np.float32),
        "phot_rp_mean_mag": (g + 0.4 * color - color).astype(np.float32),
        "phot_g_mean_flux_over_error": rng.uniform(10, 1000, n).astype(np.float32),
        "phot_bp_mean_flux_over_error": rng.uniform(10, 1000, n).astype(np.float32),
        "phot_rp_mean_flux_over_error": rng.uniform(10, 1000, n).astype(np.float32),
    }


def unit(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    r, d = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)], axis=-1)


def _angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1),
                                 np.sum(a * b, axis=-1)))


def spherical_polygon_distance(ra: np.ndarray, dec: np.ndarray, cra: np.ndarray,
                               cdec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Brute force on the sphere, independent of the tangent plane.

    Corners must be given in order around a convex polygon. Returns (inside, dist): whether
    each point is inside the great-circle polygon and its angular distance (deg) to the
    nearest edge arc.
    """
    p = unit(ra, dec)
    v = unit(np.asarray(cra), np.asarray(cdec))
    k = len(v)
    signs = []
    dists = []
    for i in range(k):
        a, b = v[i], v[(i + 1) % k]
        n = np.cross(a, b)
        n /= np.linalg.norm(n)
        s = p @ n
        signs.append(s)
        q = p - s[:, None] * n[None, :]
        within = (np.cross(a, q) @ n >= 0) & (np.cross(q, b) @ n >= 0)
        d_line = np.degrees(np.arcsin(np.clip(np.abs(s), 0, 1)))
        d_end = np.minimum(_angle(p, a[None, :]), _angle(p, b[None, :]))
        dists.append(np.where(within, d_line, d_end))
    sign = np.array(signs)
    inside = np.all(sign >= 0, axis=0) | np.all(sign <= 0, axis=0)
    return inside, np.min(np.array(dists), axis=0)


def rectangle_corners(ra0: float, dec0: float, width: float, height: float, angle_deg: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Corners (in order) of a rotated width x height (deg) rectangle centred on (ra0, dec0),
    built with a plain spherical offset (astropy SkyCoord.directional_offset_by)."""
    from astropy.coordinates import SkyCoord
    import astropy.units as u
    c = SkyCoord(ra0 * u.deg, dec0 * u.deg)
    out_ra, out_dec = [], []
    for sx, sy in ((1, 1), (-1, 1), (-1, -1), (1, -1)):
        x, y = sx * width / 2, sy * height / 2
        pa = np.degrees(np.arctan2(x, y)) + angle_deg
        sep = np.degrees(np.arctan(np.hypot(np.radians(x), np.radians(y))))
        p = c.directional_offset_by(pa * u.deg, sep * u.deg)
        out_ra.append(p.ra.deg)
        out_dec.append(p.dec.deg)
    return np.array(out_ra), np.array(out_dec)
