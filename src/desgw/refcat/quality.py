"""Gaia quality cuts: keep reference stars whose astrometry and photometry can be trusted.

A Gaia source used for astrometry or photometric calibration must be a single point source
with clean photometry. The cuts (each applied only when its column is in the table; a NaN
value passes, so catalogs without the column, or rows the archive left empty, are kept):

* ``astrometric_excess_noise`` (mas) below ``max_excess_noise_mas``: extended sources (galaxy
  nuclei: 11 mas in the legacypipe testcase9 cut-out) and unresolved binaries have large
  excess noise; a star with 4.25 mas gave a zeropoint 0.49 mag off on a real CP cut-out.
  The default 3 mas keeps the stars of the real cut-outs (<= 1.7 mas) and is close to the
  Legacy Surveys' point-source cut (10**0.5 mas).
* ``duplicated_source`` false: Gaia DR2 flags sources whose observations were cross-matched
  to more than one source (close pairs; photometry and astrometry less reliable).
* ``phot_bp_rp_excess_factor`` within ``1.0 + 0.015 c^2 < E < 1.3 + 0.06 c^2`` (c = BP - RP;
  Evans et al. 2018, A&A 616, A4, eq. 2): BP and RP fluxes contaminated by neighbours or
  background make the colour, and so the colour term, wrong.
* ``visibility_periods_used`` at least ``min_visibility_periods`` (8, Lindegren et al. 2018,
  A&A 616, A2): fewer make a poor five-parameter solution (proper motion to the epoch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table

__all__ = ["GAIA_QUALITY_COLUMNS", "GaiaQualityCuts", "gaia_quality_mask"]

#: The Gaia columns the cuts read (the reference-catalog store keeps them when present).
GAIA_QUALITY_COLUMNS: tuple[str, ...] = ("astrometric_excess_noise", "duplicated_source",
                                         "phot_bp_rp_excess_factor", "visibility_periods_used")


@dataclass(frozen=True)
class GaiaQualityCuts:
    """Limits of :func:`gaia_quality_mask`.

    Attributes
    ----------
    max_excess_noise_mas : float
        Largest astrometric excess noise (mas).
    reject_duplicated : bool
        Drop ``duplicated_source`` sources.
    bp_rp_excess : bool
        Apply the BP/RP flux excess band of Evans et al. (2018).
    min_visibility_periods : int
        Fewest visibility periods.
    """

    max_excess_noise_mas: float = 3.0
    reject_duplicated: bool = True
    bp_rp_excess: bool = True
    min_visibility_periods: int = 8


def _col(table: Table, name: str) -> np.ndarray | None:
    for n in (name, name.upper()):
        if n in table.colnames:
            col = table[n]
            data = np.ma.filled(col, np.nan) if np.ma.isMaskedArray(col) else np.asarray(col)
            return np.asarray(data, dtype=np.float64)
    return None


def gaia_quality_mask(table: Table, *, cuts: GaiaQualityCuts = GaiaQualityCuts()
                      ) -> np.ndarray:
    """True for the Gaia rows that pass the quality cuts (see the module docstring).

    Parameters
    ----------
    table : astropy.table.Table
        Gaia rows; the columns of :data:`GAIA_QUALITY_COLUMNS` are used when present (lower or
        upper case); ``phot_bp_mean_mag`` / ``phot_rp_mean_mag`` for the excess-factor band.
    cuts : GaiaQualityCuts

    Returns
    -------
    numpy.ndarray of bool, shape (len(table),)
    """
    n = len(table)
    ok = np.ones(n, dtype=bool)
    with np.errstate(invalid="ignore"):
        aen = _col(table, "astrometric_excess_noise")
        if aen is not None:
            ok &= ~(aen >= cuts.max_excess_noise_mas)
        dup = _col(table, "duplicated_source")
        if dup is not None and cuts.reject_duplicated:
            ok &= ~(dup > 0.5)
        exc = _col(table, "phot_bp_rp_excess_factor")
        bp, rp = _col(table, "phot_bp_mean_mag"), _col(table, "phot_rp_mean_mag")
        if exc is not None and bp is not None and rp is not None and cuts.bp_rp_excess:
            c2 = (bp - rp) ** 2
            ok &= ~((exc <= 1.0 + 0.015 * c2) | (exc >= 1.3 + 0.06 * c2))
        vis = _col(table, "visibility_periods_used")
        if vis is not None:
            ok &= ~(vis < cuts.min_visibility_periods)
    return ok
