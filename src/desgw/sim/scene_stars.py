"""Stars of the simulated sky: counts, colour locus, distances, proper motions and Gaia errors.

Model (a simple Besancon-like recipe, good to a few tens of per cent at high latitude)
------------------------------------------------------------------------------------------
* Counts: differential counts in Gaia G (per deg^2 per mag) at the Galactic pole,
  ``n(G) = N0 / (10**(-a1 (G - Gb)) + 10**(-a2 (G - Gb)))``: slope ``a1 = 0.30`` for bright
  (disk) stars, flattening to ``a2 = 0.06`` beyond ``Gb`` where the halo dominates. Normalised so
  that at the pole ~1000 stars/deg^2 have G < 20.7, ~2600 have G < 24 and ~8 have G < 12
  (Gaia/SDSS high-latitude counts). At latitude b the disk part scales as ``1/sin|b|``: the
  counts are multiplied by ``0.6 / sin|b| + 0.4`` (|b| floored at 15 deg).
* Populations vary with G: disk dwarfs (BP-RP ~ 1.0 +- 0.25), halo turn-off stars
  (0.78 +- 0.08, more common at G > 18), giants (1.25 +- 0.2) and M dwarfs (1.8-3.0, common at
  faint G), with 2 % of the M dwarfs very red (BP-RP 4.1-4.8, outside the Gaia->DES transform
  range: kept and flagged). BP-RP is clipped at 0.5 from below.
* G - RP from BP-RP by an approximate main-sequence relation ``0.62 c - 0.075 c^2``
  (0 at c=0, 0.45 at the Sun's c=0.82, 1.19 at c=3); BP = RP + c.
* Absolute magnitudes: dwarfs on a piecewise-linear main sequence M_G(BP-RP) (3.0 at 0.5, 4.6
  at 0.8, 9.3 at 2.0, 12.0 at 3.0) +- 0.3; halo turn-off M_G ~ 4.0 +- 0.4; giants -0.5..1.5.
  No extinction (E(B-V) ~ 0.02 at high latitude). Distance from G - M_G; parallax = 1000/d.
* Tangential velocities: disk stars sigma 35 km/s plus 20 km/s solar reflex, halo stars (and
  giants beyond 3 kpc) sigma 130 km/s plus 220 km/s reflex, the reflex along one direction per
  scene. ``pm = v / (4.74 d_kpc)`` mas/yr: nearby M dwarfs move tens of mas/yr, distant halo
  stars a few.
* Gaia DR3-like errors (ref_epoch 2016.0): parallax error
  ``sqrt(40 + 800 z + 30 z^2)`` uas with ``z = 10**(0.4 (max(G, 13) - 15))`` (Gaia
  performance formula), position error 0.8x and proper-motion error 1.1x that (per year);
  G error ``sqrt(0.0003^2 + (0.005 * 10**(0.2 (G - 20)))^2)`` mag, BP and RP 12x and 8x the
  photon term. Gaia detects G < 20.7.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..instrument.bands import validate_band
from ..refcat.transforms import TRANSFORM_BANDS, VALID_BP_RP, des_minus_g

__all__ = [
    "GAIA_G_LIMIT",
    "GAIA_REF_EPOCH",
    "STAR_POPULATIONS",
    "latitude_factor",
    "star_counts",
    "sample_magnitudes",
    "StarSample",
    "draw_stars",
    "GaiaErrors",
    "gaia_errors",
    "g_minus_rp",
    "des_from_gaia",
]

#: Gaia detection limit (G, mag).
GAIA_G_LIMIT: float = 20.7
#: Reference epoch of the simulated Gaia catalogue (Julian year; Gaia DR3).
GAIA_REF_EPOCH: float = 2016.0
#: Population codes of `StarSample.population`.
STAR_POPULATIONS: dict[str, int] = {"disk_dwarf": 0, "halo_turnoff": 1, "giant": 2, "m_dwarf": 3}

_A1, _A2, _GB = 0.30, 0.06, 17.5
_N0_POLE = 265.0  # per deg^2 per mag; see module docstring for the integrals it gives
_K_KMS = 4.74047


def latitude_factor(b_deg: float) -> float:
    """Star-count multiplier at Galactic latitude ``b_deg`` (1 at the pole)."""
    sinb = np.sin(np.deg2rad(max(abs(float(b_deg)), 15.0)))
    return float(0.6 / sinb + 0.4)


def star_counts(g: ArrayLike, b_deg: float, scale: float = 1.0) -> NDArray[np.float64]:
    """Differential star counts (stars per deg^2 per mag) at Gaia G magnitude ``g``."""
    x = np.asarray(g, dtype=np.float64) - _GB
    n = _N0_POLE / (10.0 ** (-_A1 * x) + 10.0 ** (-_A2 * x))
    return n * latitude_factor(b_deg) * scale


def sample_magnitudes(rng: np.random.Generator, counts, lo: float, hi: float, area_deg2: float
                      ) -> NDArray[np.float64]:
    """Poisson-sample magnitudes from differential counts ``counts(m)`` (per deg^2 per mag).

    Parameters
    ----------
    rng : numpy.random.Generator
    counts : callable
        ``counts(m) -> ndarray`` (per deg^2 per mag).
    lo, hi : float
        Magnitude range (mag).
    area_deg2 : float
        Sky area (deg^2).

    Returns
    -------
    ndarray of float64, shape (N,)
        N is Poisson with mean ``area * integral(counts)``.
    """
    grid = np.linspace(lo, hi, 2001)
    dens = counts(grid)
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(grid))])
    n = rng.poisson(cum[-1] * area_deg2)
    return np.interp(rng.uniform(0.0, cum[-1], n), cum, grid)


def g_minus_rp(bp_rp: ArrayLike) -> NDArray[np.float64]:
    """Approximate G - RP (mag) of a star of colour BP - RP (see module docstring)."""
    c = np.asarray(bp_rp, dtype=np.float64)
    return 0.62 * c - 0.075 * c * c


_MS_C = np.array([0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0])
_MS_MG = np.array([3.0, 4.6, 5.6, 7.6, 9.3, 10.8, 12.0, 14.5, 16.5])


@dataclass(frozen=True)
class StarSample:
    """True properties of simulated stars; every array has shape (N,).

    Attributes
    ----------
    g, bp, rp : ndarray
        True Gaia G, BP, RP magnitudes.
    population : ndarray of int8
        `STAR_POPULATIONS` code.
    abs_g : ndarray
        Absolute G magnitude.
    distance_pc, parallax_mas : ndarray
    pmra, pmdec : ndarray
        True proper motion (mas/yr; pmra includes cos(dec)).
    """

    g: NDArray[np.float64]
    bp: NDArray[np.float64]
    rp: NDArray[np.float64]
    population: NDArray[np.int8]
    abs_g: NDArray[np.float64]
    distance_pc: NDArray[np.float64]
    parallax_mas: NDArray[np.float64]
    pmra: NDArray[np.float64]
    pmdec: NDArray[np.float64]

    @property
    def bp_rp(self) -> NDArray[np.float64]:
        return self.bp - self.rp


def _sigmoid(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-x))


def draw_stars(rng: np.random.Generator, g: NDArray[np.float64], reflex_angle_deg: float) -> StarSample:
    """Draw populations, colours, distances and proper motions for stars of magnitudes ``g``.

    Parameters
    ----------
    rng : numpy.random.Generator
    g : ndarray, shape (N,)
        True Gaia G magnitudes.
    reflex_angle_deg : float
        Direction of the solar-reflex proper motion in this field (deg, East of North).
    """
    n = g.size
    f_m = 0.05 + 0.35 * _sigmoid((g - 19.0) / 1.5)
    f_halo = 0.5 * _sigmoid((g - 18.0) / 1.0)
    f_giant = 0.03 + 0.05 * _sigmoid((15.0 - g) / 1.5)
    u = rng.uniform(size=n)
    pop = np.zeros(n, dtype=np.int8)
    pop[u < f_m] = STAR_POPULATIONS["m_dwarf"]
    pop[(u >= f_m) & (u < f_m + f_halo)] = STAR_POPULATIONS["halo_turnoff"]
    pop[(u >= f_m + f_halo) & (u < f_m + f_halo + f_giant)] = STAR_POPULATIONS["giant"]

    c = np.clip(rng.normal(1.0, 0.25, n), 0.5, 1.8)
    halo = pop == STAR_POPULATIONS["halo_turnoff"]
    giant = pop == STAR_POPULATIONS["giant"]
    mdw = pop == STAR_POPULATIONS["m_dwarf"]
    c[halo] = np.clip(rng.normal(0.78, 0.08, halo.sum()), 0.5, None)
    c[giant] = np.clip(rng.normal(1.25, 0.2, giant.sum()), 0.9, 2.0)
    c[mdw] = 1.8 + 1.2 * rng.uniform(size=mdw.sum()) ** 0.7
    very_red = mdw & (rng.uniform(size=n) < 0.02)
    c[very_red] = rng.uniform(4.1, 4.8, very_red.sum()) + 1e-6

    rp = g - g_minus_rp(c)
    bp = rp + c

    abs_g = np.interp(c, _MS_C, _MS_MG) + rng.normal(0.0, 0.3, n)
    abs_g[halo] = rng.normal(4.0, 0.4, halo.sum())
    abs_g[giant] = rng.uniform(-0.5, 1.5, giant.sum())
    dist = 10.0 ** ((g - abs_g + 5.0) / 5.0)
    d_kpc = dist / 1000.0

    hot = halo | (giant & (d_kpc > 3.0))
    sigma = np.where(hot, 130.0, 35.0)
    reflex = np.where(hot, 220.0, 20.0)
    ang = np.deg2rad(reflex_angle_deg)
    v_e = rng.normal(0.0, 1.0, n) * sigma - reflex * np.sin(ang)
    v_n = rng.normal(0.0, 1.0, n) * sigma - reflex * np.cos(ang)
    pmra = v_e / (_K_KMS * d_kpc)
    pmdec = v_n / (_K_KMS * d_kpc)
    return StarSample(g=g, bp=bp, rp=rp, population=pop, abs_g=abs_g, distance_pc=dist,
                      parallax_mas=1000.0 / dist, pmra=pmra, pmdec=pmdec)


@dataclass(frozen=True)
class GaiaErrors:
    """Gaia DR3-like 1-sigma errors; arrays of shape (N,).

    Attributes
    ----------
    pos_mas : position error per coordinate at the reference epoch (mas)
    parallax_mas : parallax error (mas)
    pm_masyr : proper-motion error per component (mas/yr)
    g_mag, bp_mag, rp_mag : photometric errors (mag)
    """

    pos_mas: NDArray[np.float64]
    parallax_mas: NDArray[np.float64]
    pm_masyr: NDArray[np.float64]
    g_mag: NDArray[np.float64]
    bp_mag: NDArray[np.float64]
    rp_mag: NDArray[np.float64]


def gaia_errors(g: ArrayLike) -> GaiaErrors:
    """Gaia DR3-like errors at true G magnitude ``g`` (formulae in the module docstring)."""
    g = np.asarray(g, dtype=np.float64)
    z = 10.0 ** (0.4 * (np.maximum(g, 13.0) - 15.0))
    plx = np.sqrt(40.0 + 800.0 * z + 30.0 * z * z) / 1000.0
    phot = 0.005 * 10.0 ** (0.2 * (g - 20.0))
    return GaiaErrors(
        pos_mas=0.8 * plx, parallax_mas=plx, pm_masyr=1.1 * plx,
        g_mag=np.hypot(3e-4, phot), bp_mag=np.hypot(1e-3, 12.0 * phot),
        rp_mag=np.hypot(1e-3, 8.0 * phot),
    )


def des_from_gaia(band: str, g: NDArray[np.float64], bp: NDArray[np.float64], rp: NDArray[np.float64]
                  ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """True DES magnitude of stars from their true Gaia magnitudes, with the calibration's transform.

    For g, r, i, z this is ``refcat.transforms.gaia_to_des`` (the transformation the
    photometric calibration uses) where BP-RP is inside ``VALID_BP_RP``; outside it the
    polynomial is continued linearly from the range edge (flagged ``valid = False``). For Y,
    which has no Gaia transformation, ``Y = z - (0.05 + 0.1 (BP-RP - 0.8))`` (an approximate
    z - Y stellar locus), also flagged ``valid = False``.

    Returns
    -------
    mag : ndarray of float64, shape (N,)
    valid : ndarray of bool, shape (N,)
        True where the calibration's transform applies.
    """
    c = bp - rp
    if band == "Y":
        z, _ = des_from_gaia("z", g, bp, rp)
        return z - (0.05 + 0.1 * (c - 0.8)), np.zeros(c.shape, dtype=bool)
    validate_band(band, TRANSFORM_BANDS, what="DES band")
    lo, hi = VALID_BP_RP[band]
    cc = np.clip(c, lo, hi)
    eps = 1e-3
    slope_hi = (des_minus_g(band, hi) - des_minus_g(band, hi - eps)) / eps
    slope_lo = (des_minus_g(band, lo + eps) - des_minus_g(band, lo)) / eps
    dm = des_minus_g(band, cc) + np.where(c > hi, slope_hi * (c - hi), 0.0) \
        + np.where(c < lo, slope_lo * (c - lo), 0.0)
    valid = (c >= lo) & (c <= hi)
    return g + dm, valid
