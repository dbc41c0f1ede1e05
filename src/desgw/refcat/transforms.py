"""Gaia G, BP, RP -> DES/DECam g, r, i, z photometric transformations.

Each transformation is a polynomial in the Gaia colour ``c = BP - RP``::

    m_DES = G + sum_k a_k * c**k

Source of the coefficients
--------------------------
No Gaia -> DES polynomial in (BP-RP) could be located in the DES papers we
searched (DES DR2, Abbott et al. 2021, ApJS 255, 20; the DES Y6 FGCM
calibration-star note, Rykoff et al. 2023, arXiv:2305.01695); the DES DR2
transformation pages give DES <-> SDSS / Pan-STARRS relations, and DES -> Gaia
comparisons, not Gaia -> DES polynomials in BP-RP.  The coefficients below are
therefore the published DECam (same g, r, i, z filters as DES) relations of
Rongpu Zhou (2020-04-12) used by the DESI Legacy Imaging Surveys (DR9/DR10)
pipeline ``legacypipe`` (``legacypipe/gaiacat.py``, function ``gaia_to_decam``),
fitted to Gaia DR2/EDR3 versus Legacy Surveys DECam PSF photometry of stars.
The Legacy Surveys DECam zero points are tied to Pan-STARRS1 through colour
terms, so these relations may differ from the DES FGCM system by an overall
offset of order 0.01-0.02 mag per band; colour dependence is DECam's.

The valid colour range, ``-0.6 <= BP-RP <= 4.1`` for every band, is the range
the Legacy Surveys pipeline clips its colours to before evaluating these
polynomials; outside it the high-order polynomials are not trustworthy.

**Y band:** no published Gaia -> DES/DECam Y polynomial was found, so none is
provided; ``gaia_to_des("Y", ...)`` raises :class:`TransformUnavailableError`
(a ``ValueError``).  ``"Y"`` is still listed in :data:`BANDS` because it is a DES
band; :data:`TRANSFORM_BANDS` lists the bands that have a transformation.

The original DES-GW pipeline used the Gaia G magnitude for every band
(``DES mag = G``); :func:`gaia_g_only` reproduces it for comparison studies.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from desgw.errors import NoWorkFoundError
from desgw.instrument.bands import DES_BANDS, validate_band

__all__ = [
    "BANDS",
    "TRANSFORM_BANDS",
    "VALID_BP_RP",
    "POLY_COEFFS",
    "GaiaToDesResult",
    "TransformUnavailableError",
    "des_minus_g",
    "des_minus_g_slope",
    "gaia_to_des",
    "gaia_g_only",
]

logger = logging.getLogger(__name__)

#: All DES bands.
BANDS: tuple[str, ...] = DES_BANDS

#: Polynomial coefficients a_0 .. a_n (increasing power) of (m_DES - G) in c = BP - RP.
#: Source: Legacy Surveys / legacypipe ``gaia_to_decam`` (R. Zhou 2020), DECam filters.
POLY_COEFFS: dict[str, tuple[float, ...]] = {
    "g": (
        -0.1178631039, 0.3650113495, 0.5608615360, -0.2850687702,
        -1.0243473939, 1.4378375491, 0.0679401731, -1.1713172509,
        0.9107811975, -0.3374324004, 0.0683946390, -0.0073089582,
        0.0003230170,
    ),
    "r": (
        0.1139078673, -0.2868955307, 0.0013196434, 0.1029151074,
        0.1196710702, -0.3729031390, 0.1859874242, 0.1370162451,
        -0.1808580848, 0.0803219195, -0.0180218196, 0.0020584707,
        -0.0000953486,
    ),
    "i": (
        0.3396481660, -0.6491867119, -0.3330769819, 0.4381097294,
        0.5752125977, -1.4746570523, 1.2979140762, -0.6371018151,
        0.1948940062, -0.0382055596, 0.0046907449, -0.0003296841,
        0.0000101480,
    ),
    "z": (
        0.4811198057, -0.9990015041, 0.1403990019, 0.2150988888,
        -0.2917655866, 0.1326831887, -0.0259205004, 0.0018548776,
    ),
}

#: Bands with a Gaia -> DES transformation.
TRANSFORM_BANDS: tuple[str, ...] = tuple(POLY_COEFFS)

#: Valid BP-RP interval (inclusive, mag) per band.
VALID_BP_RP: dict[str, tuple[float, float]] = {b: (-0.6, 4.1) for b in TRANSFORM_BANDS}


class TransformUnavailableError(NoWorkFoundError, ValueError):
    """A DES band is known but has no published Gaia transformation (e.g. Y): nothing to
    transform with (a :class:`~desgw.errors.NoWorkFoundError`; still a ValueError)."""

    def __init__(self, band: str) -> None:
        super().__init__(band)
        self.band = band

    def __str__(self) -> str:
        return (
            f"no published Gaia -> DES transformation for band {self.band!r}; "
            f"available bands: {', '.join(TRANSFORM_BANDS)}"
        )


@dataclass(frozen=True)
class GaiaToDesResult:
    """Result of :func:`gaia_to_des`.

    Attributes
    ----------
    mag : ndarray of float64, shape (N,)
        Predicted DES magnitude (AB mag); NaN where ``valid`` is False.
    valid : ndarray of bool, shape (N,)
        True where G, BP, RP are finite and BP-RP lies inside ``VALID_BP_RP[band]``.
    band : str
        The DES band.
    """

    mag: NDArray[np.float64]
    valid: NDArray[np.bool_]
    band: str


def _poly_coeffs(band: str) -> tuple[float, ...]:
    validate_band(band, BANDS, what="DES band")
    if band not in POLY_COEFFS:
        raise TransformUnavailableError(band)
    return POLY_COEFFS[band]


def des_minus_g(band: str, bp_rp: ArrayLike) -> NDArray[np.float64]:
    """Evaluate the transformation polynomial (m_DES - G) at colour BP - RP.

    No range check is applied (use :data:`VALID_BP_RP`); this is the raw
    polynomial, for plotting or inverting.

    Parameters
    ----------
    band : str
        DES band, one of :data:`TRANSFORM_BANDS`.
    bp_rp : array_like of float, any shape
        Gaia BP - RP colour (mag).

    Returns
    -------
    ndarray of float64, same shape as ``bp_rp``
        m_DES - G (mag).

    Raises
    ------
    ValueError
        Unknown band; :class:`TransformUnavailableError` for a DES band without
        a transformation (Y).
    """
    coeffs = _poly_coeffs(band)
    c = np.asarray(bp_rp, dtype=np.float64)
    return np.asarray(np.polynomial.polynomial.polyval(c, np.asarray(coeffs, dtype=np.float64)),
                      dtype=np.float64)


def des_minus_g_slope(band: str, bp_rp: ArrayLike) -> NDArray[np.float64]:
    """Slope d(m_DES - G) / d(BP - RP) of the transformation at colour ``bp_rp`` (mag/mag),
    for propagating the BP and RP errors into a predicted magnitude.

    Parameters
    ----------
    band : str
        DES band, one of :data:`TRANSFORM_BANDS`.
    bp_rp : array_like of float, any shape
        Gaia BP - RP colour (mag).

    Returns
    -------
    ndarray of float64, same shape as ``bp_rp``

    Raises
    ------
    ValueError
        Unknown band; :class:`TransformUnavailableError` for Y.
    """
    coeffs = np.asarray(_poly_coeffs(band), dtype=np.float64)
    c = np.asarray(bp_rp, dtype=np.float64)
    return np.asarray(np.polynomial.polynomial.polyval(c, np.polynomial.polynomial.polyder(coeffs)),
                      dtype=np.float64)


def gaia_to_des(band: str, g: ArrayLike, bp: ArrayLike, rp: ArrayLike) -> GaiaToDesResult:
    """Predict DES magnitudes from Gaia G, BP and RP.

    Parameters
    ----------
    band : str
        DES band, one of :data:`TRANSFORM_BANDS` (``"g"``, ``"r"``, ``"i"``, ``"z"``).
    g, bp, rp : array_like of float, shape (N,) (or broadcastable, any shape)
        Gaia ``phot_g_mean_mag``, ``phot_bp_mean_mag``, ``phot_rp_mean_mag`` (mag).

    Returns
    -------
    GaiaToDesResult
        ``mag`` (float64, NaN where invalid) and ``valid`` (bool): False where any
        input is not finite or BP-RP is outside ``VALID_BP_RP[band]``.

    Raises
    ------
    ValueError
        Unknown band (message names it); :class:`TransformUnavailableError` for Y.
    """
    coeffs = _poly_coeffs(band)
    g_a, bp_a, rp_a = np.broadcast_arrays(
        np.asarray(g, dtype=np.float64),
        np.asarray(bp, dtype=np.float64),
        np.asarray(rp, dtype=np.float64),
    )
    color = bp_a - rp_a
    lo, hi = VALID_BP_RP[band]
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(g_a) & np.isfinite(color) & (color >= lo) & (color <= hi)
    mag = np.full(g_a.shape, np.nan, dtype=np.float64)
    poly = np.polynomial.polynomial.polyval(color[valid], np.asarray(coeffs, dtype=np.float64))
    mag[valid] = g_a[valid] + poly
    return GaiaToDesResult(mag=mag, valid=np.asarray(valid, dtype=bool), band=band)


def gaia_g_only(g: ArrayLike) -> NDArray[np.float64]:
    """The original DES-GW pipeline's transformation: DES magnitude = Gaia G in every band.

    Parameters
    ----------
    g : array_like of float, any shape
        Gaia ``phot_g_mean_mag`` (mag).

    Returns
    -------
    ndarray of float64, same shape
        A float64 copy of ``g``.
    """
    return np.array(g, dtype=np.float64, copy=True)
