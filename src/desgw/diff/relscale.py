"""Relative photometric scale of two epochs from the sources detected in both.

A difference image needs only the flux ratio of template and search, not their absolute
zeropoints. When a CCD has no zeropoint (a sparse field: no unsaturated Gaia star, as on the
legacypipe testcase6 cut-outs) the ratio can still be measured from the sources that both
single-epoch catalogs hold, as a matched-source flux ratio (HOTPANTS measures the same number
as its kernel normalisation). :func:`relative_flux_scale` matches the two catalogs on the sky,
keeps the sources that are measured cleanly in both (no saturated or unusable pixel in their
segment, not saturated, signal-to-noise above a cut) and combines their magnitude differences
with a clipped weighted mean; its error comes from the flux errors, inflated by the scatter
when several sources disagree more than their errors allow (variables, blends).

PSF fluxes (``FLUX_PSF``, each epoch fitted with its own PSF model and aperture-corrected by
SE) are used: unlike aperture fluxes they do not depend on the seeing of each epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from desgw.errors import AlgorithmError
from desgw.se import maskbits
from desgw.util.sphere import angular_separation_deg

__all__ = ["RelativeScale", "RelativeScaleConfig", "RelativeScaleError", "relative_flux_scale"]

#: SExtractor FLAGS bit: the object has saturated pixels.
_FLAG_SATURATED = 4


class RelativeScaleError(AlgorithmError):
    """No flux ratio can be measured: no source is measured cleanly in both catalogs.

    Attributes
    ----------
    n_matched : int
        Sources of the two catalogs matched on the sky.
    n_clean : int
        Of those, the ones measured cleanly in both (0 here).
    """

    def __init__(self, message: str, *, n_matched: int = 0, n_clean: int = 0) -> None:
        super().__init__(message)
        self.n_matched = int(n_matched)
        self.n_clean = int(n_clean)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_error, (str(self), self.n_matched, self.n_clean))


def _rebuild_error(message: str, n_matched: int, n_clean: int) -> RelativeScaleError:
    return RelativeScaleError(message, n_matched=n_matched, n_clean=n_clean)


@dataclass(frozen=True)
class RelativeScaleConfig:
    """Settings of :func:`relative_flux_scale`.

    Attributes
    ----------
    match_radius_arcsec : float
        Largest separation of a matched pair (arcsec).
    min_snr : float
        Least ``FLUX_PSF / FLUXERR_PSF`` in each catalog.
    clip_sigma : float
        Sources further than this many standard deviations (their own error, or the scatter
        when it is larger) from the weighted mean are left out, iteratively.
    flux_column, error_column : str
        Catalog columns of the flux and its error (the same unit in both catalogs, e.g. e-).
    """

    match_radius_arcsec: float = 1.0
    min_snr: float = 5.0
    clip_sigma: float = 3.0
    flux_column: str = "FLUX_PSF"
    error_column: str = "FLUXERR_PSF"


@dataclass(frozen=True)
class RelativeScale:
    """The flux ratio search / template of the same sources.

    Attributes
    ----------
    dmag : float
        ``2.5 log10(F_search / F_template)`` (mag): the template's zeropoint is the search's
        minus ``dmag`` (and the search's the template's plus ``dmag``).
    dmag_err : float
        Its 1-sigma error (mag).
    n_used : int
        Sources in the mean (after clipping).
    n_clean : int
        Matched sources measured cleanly in both catalogs.
    n_matched : int
        Sources matched on the sky.
    chi2_dof : float
        Reduced chi-squared of the used sources about the mean (NaN with one source).
    """

    dmag: float
    dmag_err: float
    n_used: int
    n_clean: int
    n_matched: int
    chi2_dof: float

    @property
    def ratio(self) -> float:
        """``F_search / F_template``."""
        return float(10.0 ** (0.4 * self.dmag))


def _clean(cat: Any, cfg: RelativeScaleConfig) -> np.ndarray:
    """Rows measured cleanly: finite positive flux with S/N >= min_snr, not saturated, no
    unusable pixel in the segment."""
    f = np.asarray(cat[cfg.flux_column], dtype=np.float64)
    e = np.asarray(cat[cfg.error_column], dtype=np.float64)
    ok = np.isfinite(f) & np.isfinite(e) & (e > 0) & (f > cfg.min_snr * e)
    if "FLAGS" in cat.colnames:
        ok &= (np.asarray(cat["FLAGS"]).astype(np.int64) & _FLAG_SATURATED) == 0
    if "IMAFLAGS_ISO" in cat.colnames:
        ok &= (np.asarray(cat["IMAFLAGS_ISO"]).astype(np.int64) & maskbits.UNUSABLE) == 0
    return ok


def _mutual_nearest(ra1: np.ndarray, dec1: np.ndarray, ra2: np.ndarray, dec2: np.ndarray,
                    radius_arcsec: float) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) that are each other's nearest neighbour within the radius."""
    if ra1.size == 0 or ra2.size == 0:
        z = np.zeros(0, dtype=np.intp)
        return z, z
    sep = angular_separation_deg(ra1[:, None], dec1[:, None], ra2[None, :],
                                 dec2[None, :]) * 3600.0
    j = np.argmin(sep, axis=1)
    i_back = np.argmin(sep, axis=0)
    i = np.arange(ra1.size)
    keep = (sep[i, j] <= radius_arcsec) & (i_back[j] == i)
    return i[keep], j[keep]


def relative_flux_scale(search_catalog: Any, template_catalog: Any, *,
                        config: RelativeScaleConfig | None = None) -> RelativeScale:
    """Flux ratio of the sources detected in both epochs (module docstring).

    Parameters
    ----------
    search_catalog, template_catalog : astropy.table.Table
        SE catalogs (SExtractor columns ``ALPHAWIN_J2000``, ``DELTAWIN_J2000`` in deg, the
        flux and error columns of ``config`` in e-, and ``FLAGS``, ``IMAFLAGS_ISO`` when
        present).
    config : RelativeScaleConfig, optional

    Returns
    -------
    RelativeScale

    Raises
    ------
    RelativeScaleError
        No source is matched and measured cleanly in both catalogs (the message gives the
        counts).
    """
    cfg = RelativeScaleConfig() if config is None else config
    ra_s = np.asarray(search_catalog["ALPHAWIN_J2000"], dtype=np.float64)
    de_s = np.asarray(search_catalog["DELTAWIN_J2000"], dtype=np.float64)
    ra_t = np.asarray(template_catalog["ALPHAWIN_J2000"], dtype=np.float64)
    de_t = np.asarray(template_catalog["DELTAWIN_J2000"], dtype=np.float64)
    i, j = _mutual_nearest(ra_s, de_s, ra_t, de_t, cfg.match_radius_arcsec)
    n_matched = int(i.size)
    clean = _clean(search_catalog, cfg)[i] & _clean(template_catalog, cfg)[j]
    i, j = i[clean], j[clean]
    if i.size == 0:
        raise RelativeScaleError(
            f"no source measured cleanly in both epochs: {len(search_catalog)} search and "
            f"{len(template_catalog)} template detections, {n_matched} matched within "
            f"{cfg.match_radius_arcsec:g}\", none unsaturated, unmasked and at S/N >= "
            f"{cfg.min_snr:g} in both", n_matched=n_matched, n_clean=0)
    fs = np.asarray(search_catalog[cfg.flux_column], dtype=np.float64)[i]
    es = np.asarray(search_catalog[cfg.error_column], dtype=np.float64)[i]
    ft = np.asarray(template_catalog[cfg.flux_column], dtype=np.float64)[j]
    et = np.asarray(template_catalog[cfg.error_column], dtype=np.float64)[j]
    d = 2.5 * np.log10(fs / ft)
    err = 2.5 / math.log(10.0) * np.hypot(es / fs, et / ft)
    use = np.ones(d.size, dtype=bool)
    while True:
        w = 1.0 / err[use] ** 2
        mean = float(np.sum(w * d[use]) / np.sum(w))
        n = int(use.sum())
        chi2 = float(np.sum(w * (d[use] - mean) ** 2))
        scatter = math.sqrt(chi2 / (n - 1)) if n > 1 else 1.0
        resid = np.abs(d - mean) / (err * max(1.0, scatter))
        new = resid <= cfg.clip_sigma
        if n <= 2 or np.array_equal(new, use) or new.sum() < max(2, n // 2):
            break
        use = new
    w = 1.0 / err[use] ** 2
    mean = float(np.sum(w * d[use]) / np.sum(w))
    n = int(use.sum())
    chi2_dof = float(np.sum(w * (d[use] - mean) ** 2) / (n - 1)) if n > 1 else math.nan
    sigma = math.sqrt(1.0 / float(np.sum(w)))
    if n > 1 and chi2_dof > 1.0:
        sigma *= math.sqrt(chi2_dof)
    return RelativeScale(dmag=mean, dmag_err=sigma, n_used=n, n_clean=int(i.size),
                         n_matched=n_matched, chi2_dof=chi2_dof)
