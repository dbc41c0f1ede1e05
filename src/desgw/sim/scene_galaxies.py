"""Galaxies of the simulated sky: number counts, Sersic shapes, sizes and colours.

Model
-----
* Counts in r: ``dN/dm = 3.0e4 * 10**(0.36 (r - 24))`` per deg^2 per mag (slope dlogN/dm = 0.36,
  between the steep bright-end and shallow faint-end slopes of deep r-band counts); this gives
  ~3.6e4 galaxies/deg^2 brighter than r = 24 and ~250/deg^2 brighter than r = 18.
* Two types: "disk" (70 %; Sersic n ~ 1, 0.5-1.5; axis ratio 0.2-1) and "bulge" (30 %; n 2.5-4;
  axis ratio 0.5-1). Position angles uniform.
* Half-light radius: ``log10(hlr / arcsec) = log10(0.5) - 0.12 (r - 22)`` +- 0.15 dex (2.6" at
  r=16, 0.5" at r=22, 0.29" at r=24); bulges are 0.7x smaller; clipped to 0.1-8".
* Colours relative to r (mag): disk g-r 0.5 +- 0.15, r-i 0.3 +- 0.1, i-z 0.15 +- 0.08,
  z-Y 0.05 +- 0.05; bulge g-r 1.1 +- 0.2, r-i 0.45 +- 0.1, i-z 0.3 +- 0.08, z-Y 0.15 +- 0.05.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["galaxy_counts", "GalaxySample", "draw_galaxies"]

_N24, _SLOPE = 3.0e4, 0.36


def galaxy_counts(r: NDArray[np.float64] | float, scale: float = 1.0) -> NDArray[np.float64]:
    """Differential galaxy counts in r (galaxies per deg^2 per mag)."""
    return _N24 * scale * 10.0 ** (_SLOPE * (np.asarray(r, dtype=np.float64) - 24.0))


@dataclass(frozen=True)
class GalaxySample:
    """Galaxy properties; arrays of shape (N,).

    Attributes
    ----------
    mags : dict[str, ndarray]
        AB magnitude per band (g, r, i, z, Y).
    hlr_arcsec, sersic_n, q, pa_deg : ndarray
        Half-light radius (arcsec), Sersic index, axis ratio b/a, position angle (deg E of N).
    is_bulge : ndarray of bool
    """

    mags: dict[str, NDArray[np.float64]]
    hlr_arcsec: NDArray[np.float64]
    sersic_n: NDArray[np.float64]
    q: NDArray[np.float64]
    pa_deg: NDArray[np.float64]
    is_bulge: NDArray[np.bool_]


def draw_galaxies(rng: np.random.Generator, r: NDArray[np.float64]) -> GalaxySample:
    """Shapes, sizes and colours for galaxies of r-band magnitudes ``r`` (shape (N,))."""
    n = r.size
    bulge = rng.uniform(size=n) < 0.3
    sersic = np.where(bulge, rng.uniform(2.5, 4.0, n), rng.uniform(0.5, 1.5, n))
    q = np.where(bulge, rng.uniform(0.5, 1.0, n), rng.uniform(0.2, 1.0, n))
    pa = rng.uniform(0.0, 180.0, n)
    log_hlr = np.log10(0.5) - 0.12 * (r - 22.0) + rng.normal(0.0, 0.15, n)
    hlr = np.clip(10.0 ** log_hlr * np.where(bulge, 0.7, 1.0), 0.1, 8.0)

    def col(mu_d: float, sd_d: float, mu_b: float, sd_b: float) -> NDArray[np.float64]:
        return np.where(bulge, rng.normal(mu_b, sd_b, n), rng.normal(mu_d, sd_d, n))

    g_r = col(0.5, 0.15, 1.1, 0.2)
    r_i = col(0.3, 0.1, 0.45, 0.1)
    i_z = col(0.15, 0.08, 0.3, 0.08)
    z_y = col(0.05, 0.05, 0.15, 0.05)
    i = r - r_i
    z = i - i_z
    mags = {"g": r + g_r, "r": r.copy(), "i": i, "z": z, "Y": z - z_y}
    return GalaxySample(mags=mags, hlr_arcsec=hlr, sersic_n=sersic, q=q, pa_deg=pa, is_bulge=bulge)
