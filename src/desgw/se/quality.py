"""Image-quality metrics and the pass/fail decision of a CCD or an exposure (``QC_Check.py``).

The original DES-GW ``QC_Check.py`` (read from its source, re-created here) measured the PSF
FWHM (median PSFEx ``PSF_FWHM`` times 0.263"/pixel), the sky brightness (``SKYBRITE`` per
second), the zeropoint against a nominal one (fitted per DES season, with airmass
extinction), combined them into the effective-exposure-time factor

    t_eff = F * B * C,   F = (FWHM_fid / FWHM)^2,   B = b_fid / b,
    C = 1 if dZP < 0.2 else 10^(-0.8 (dZP - 0.2))

and accepted an exposure when ``t_eff`` exceeded a per-band limit (g, Y 0.2; r, i, z 0.3),
the FWHM was below 1.6 times the band's Kolmogorov-scaled fiducial seeing, and the SCAMP
external astrometric rms was at most 0.1" on each axis.

desgw follows Neilsen et al. (2016, "Limiting Magnitude, tau, t_eff, and Image Quality in DES
Year 1", FERMILAB-PUB-16-229-AE): ``t_eff = eta^2 (FWHM_ref / FWHM)^2 (B_ref / B)`` with

* ``FWHM_ref`` = 0.9 arcsec in every band;
* ``B_ref / B`` a ratio of sky *count rates* (e-/s per pixel), as the original compared
  ``SKYBRITE/EXPTIME`` with reference counts: clouds dim the sky as much as the stars, so the
  S/N^2 of a sky-limited point source scales as ``eta^2 / B_counts``. ``B_ref`` is the
  zenith dark-sky brightness of each band, :data:`DARK_SKY_MAG`, converted to e-/s with the
  nominal zenith zeropoint (:func:`reference_sky_rate`); dark-sky brightness
  g 22.01, r 21.15, i 19.89, z 18.72, Y 17.96 mag/arcsec^2 (Neilsen et al. 2016, Table 1,
  values as we recall them: we could not reach the paper's text to re-check; they agree
  within 0.05-0.3 mag with the dark-sky levels hard-coded in the original ``QC_Check.py``,
  converted with the nominal zeropoints below: 22.15, 21.31, 20.10, 18.99, 18.01);
* ``eta`` the transparency: ``eta = 10^(-0.4 max(0, ZP_nom(X) - ZP - tol))`` with ZP for
  1 e-/s, ``ZP_nom(X) = NOMINAL_ZP[band] - EXTINCTION[band] (X - 1)``, and a tolerance
  ``tol`` (default 0.1 mag) for the season-to-season drift of the nominal zeropoint (the
  original used 0.2 mag; desgw's zeropoints use colour terms and are better than that).

Nominal DECam zeropoints (:data:`NOMINAL_ZP`): AB magnitude giving 1 e-/s at airmass 1.0, from
the most recent season (base MJD 57373, DES Y3) of the table in the original ``QC_Check.py``
(fits of DES zeropoints, ``a_0 + k X``): g 26.606, r 26.780, i 26.750, z 26.437, Y 25.318.
Extinction coefficients (:data:`EXTINCTION`, mag per airmass) are the original's:
g 0.192, r 0.097, i 0.071, z 0.083, Y 0.067.

Units: ``zp`` arguments are desgw zeropoints (:mod:`desgw.se.photocal`): the AB magnitude of
one electron summed over the exposure; the per-second zeropoint is ``zp - 2.5 log10(exptime)``.
Sky levels are the background per pixel over the exposure in electrons (images are in e-).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from numpy.typing import ArrayLike, NDArray

from desgw.errors import DesgwInputError
from desgw.instrument.bands import DES_BANDS, validate_band
from desgw.instrument.camera import PIXEL_SCALE_ARCSEC as DECAM_PIXEL_SCALE_ARCSEC

__all__ = [
    "QC_BANDS",
    "PIXEL_SCALE_ARCSEC",
    "FWHM_REF_ARCSEC",
    "DARK_SKY_MAG",
    "NOMINAL_ZP",
    "EXTINCTION",
    "MAX_FWHM_ARCSEC",
    "MIN_TEFF",
    "TeffResult",
    "QCMetrics",
    "QCThresholds",
    "QCResult",
    "nominal_zeropoint",
    "sky_brightness",
    "reference_sky_rate",
    "median_fwhm_arcsec",
    "astrometric_rms_arcsec",
    "effective_time_factor",
    "compute_qc_metrics",
    "combine_qc_metrics",
    "assess_quality",
]

logger = logging.getLogger(__name__)

#: Bands with t_eff references.
QC_BANDS: tuple[str, ...] = DES_BANDS
#: DECam pixel scale at the field centre (arcsec/pixel), as the original used.
PIXEL_SCALE_ARCSEC = DECAM_PIXEL_SCALE_ARCSEC
#: Reference FWHM of t_eff (arcsec; Neilsen et al. 2016).
FWHM_REF_ARCSEC = 0.9
#: Zenith dark-sky brightness (AB mag/arcsec^2; Neilsen et al. 2016).
DARK_SKY_MAG: dict[str, float] = {"g": 22.01, "r": 21.15, "i": 19.89, "z": 18.72, "Y": 17.96}
#: AB magnitude of a source giving 1 e-/s at airmass 1 (original QC_Check.py, season 57373).
NOMINAL_ZP: dict[str, float] = {"g": 26.606, "r": 26.780, "i": 26.750, "z": 26.437, "Y": 25.318}
#: Atmospheric extinction (mag per unit airmass; original QC_Check.py).
EXTINCTION: dict[str, float] = {"g": 0.192, "r": 0.097, "i": 0.071, "z": 0.083, "Y": 0.067}
#: Largest acceptable FWHM (arcsec): 1.6 x the Kolmogorov-scaled 1" fiducial (Y uses g's).
MAX_FWHM_ARCSEC: dict[str, float] = {"g": 1.6 * 1.103, "r": 1.6 * 1.041, "i": 1.6 * 1.00,
                                     "z": 1.6 * 0.965, "Y": 1.6 * 1.103}
#: Smallest acceptable t_eff factor (original QC_Check.py).
MIN_TEFF: dict[str, float] = {"g": 0.2, "r": 0.3, "i": 0.3, "z": 0.3, "Y": 0.2}


def nominal_zeropoint(band: str, airmass: float = 1.0) -> float:
    """Nominal clear-sky zeropoint for 1 e-/s at an airmass (AB mag).

    ``NOMINAL_ZP[band] - EXTINCTION[band] * (airmass - 1)``.
    """
    validate_band(band, QC_BANDS, what="band with quality references")
    if not (np.isfinite(airmass) and airmass >= 1.0):
        raise ValueError(f"airmass must be >= 1, got {airmass}")
    return NOMINAL_ZP[band] - EXTINCTION[band] * (airmass - 1.0)


def sky_brightness(sky_level_e: float, zp: float, *,
                   pixel_scale_arcsec: float = PIXEL_SCALE_ARCSEC) -> float:
    """Sky surface brightness (AB mag/arcsec^2) from a background level.

    Parameters
    ----------
    sky_level_e : float
        Background per pixel, summed over the exposure (e-).
    zp : float
        Zeropoint for the same units: AB magnitude of 1 e- over the exposure.
    pixel_scale_arcsec : float
        Pixel side (arcsec).

    Returns
    -------
    float
        ``zp - 2.5 log10(sky_level_e / pixel_scale^2)``; NaN for a non-positive level.
    """
    if not (np.isfinite(sky_level_e) and sky_level_e > 0):
        return math.nan
    return zp - 2.5 * math.log10(sky_level_e / pixel_scale_arcsec ** 2)


def reference_sky_rate(band: str, *, pixel_scale_arcsec: float = PIXEL_SCALE_ARCSEC) -> float:
    """Dark-sky count rate of the t_eff reference (e-/s per pixel).

    ``pixel_scale^2 * 10**(-0.4 (DARK_SKY_MAG[band] - NOMINAL_ZP[band]))``.
    """
    validate_band(band, QC_BANDS, what="band with quality references")
    return pixel_scale_arcsec ** 2 * 10.0 ** (-0.4 * (DARK_SKY_MAG[band] - NOMINAL_ZP[band]))


def median_fwhm_arcsec(catalog: Table, *, stars: ArrayLike | None = None,
                       class_star_min: float = 0.8, spread_model_max: float = 0.003) -> float:
    """Median ``FWHM_WORLD`` of the stars of a catalog (arcsec).

    Parameters
    ----------
    catalog : astropy.table.Table
        With ``FWHM_WORLD`` (deg) and, unless ``stars`` is given, ``CLASS_STAR``,
        ``SPREAD_MODEL``, ``FLAGS``.
    stars : array_like of bool, shape (len(catalog),), optional
        Rows to use; default ``CLASS_STAR > class_star_min``, ``|SPREAD_MODEL| <
        spread_model_max`` and ``FLAGS == 0``.

    Returns
    -------
    float
        NaN when no star has a positive FWHM.
    """
    def col(name: str) -> NDArray:
        if name not in catalog.colnames:
            raise DesgwInputError(None, None, f"catalog has no column {name!r}", column=name)
        return np.asarray(catalog[name], dtype=np.float64)

    fwhm = col("FWHM_WORLD") * 3600.0
    if stars is None:
        with np.errstate(invalid="ignore"):
            mask = ((col("CLASS_STAR") > class_star_min)
                    & (np.abs(col("SPREAD_MODEL")) < spread_model_max) & (col("FLAGS") == 0))
    else:
        mask = np.asarray(stars, dtype=bool)
    with np.errstate(invalid="ignore"):
        good = mask & np.isfinite(fwhm) & (fwhm > 0)
    return float(np.median(fwhm[good])) if np.any(good) else math.nan


def astrometric_rms_arcsec(separation_arcsec: ArrayLike) -> float:
    """2-D rms of catalog-minus-reference separations (arcsec).

    ``sqrt(mean(sep^2))`` over finite values (per-axis rms is this / sqrt(2)); NaN when empty.
    """
    s = np.asarray(separation_arcsec, dtype=np.float64).ravel()
    s = s[np.isfinite(s)]
    return float(np.sqrt(np.mean(s * s))) if s.size else math.nan


@dataclass(frozen=True)
class TeffResult:
    """Effective-exposure-time factor and its parts (all dimensionless).

    Attributes
    ----------
    teff : float
        ``teff_fwhm * teff_sky * teff_transparency``.
    teff_fwhm : float
        ``(FWHM_REF_ARCSEC / FWHM)^2``.
    teff_sky : float
        ``B_ref / B``: reference over measured sky count rate.
    teff_transparency : float
        ``eta^2``.
    eta : float
        Transparency (<= 1).
    """

    teff: float
    teff_fwhm: float
    teff_sky: float
    teff_transparency: float
    eta: float


def effective_time_factor(band: str, *, fwhm_arcsec: float, sky_rate_e: float,
                          zp_offset: float = 0.0, zp_tolerance: float = 0.1,
                          pixel_scale_arcsec: float = PIXEL_SCALE_ARCSEC) -> TeffResult:
    """t_eff factor (Neilsen et al. 2016): ``eta^2 (0.9"/FWHM)^2 (B_ref/B)``.

    Parameters
    ----------
    band : str
        One of :data:`QC_BANDS`.
    fwhm_arcsec : float
        PSF FWHM (arcsec).
    sky_rate_e : float
        Measured sky count rate (e-/s per pixel), compared with :func:`reference_sky_rate`.
    zp_offset : float
        Measured minus nominal zeropoint at the exposure's airmass (mag, 1 e-/s); negative
        when light is lost to clouds.
    zp_tolerance : float
        Losses up to this (mag) count as photometric (``eta = 1``).
    pixel_scale_arcsec : float

    Returns
    -------
    TeffResult
        NaN parts (and ``teff``) when an input is missing or not positive.
    """
    validate_band(band, QC_BANDS, what="band with quality references")
    f = (FWHM_REF_ARCSEC / fwhm_arcsec) ** 2 if np.isfinite(fwhm_arcsec) and fwhm_arcsec > 0 \
        else math.nan
    b = reference_sky_rate(band, pixel_scale_arcsec=pixel_scale_arcsec) / sky_rate_e \
        if np.isfinite(sky_rate_e) and sky_rate_e > 0 else math.nan
    if np.isfinite(zp_offset):
        eta = 10.0 ** (-0.4 * max(0.0, -zp_offset - zp_tolerance))
    else:
        eta = math.nan
    c = eta * eta
    return TeffResult(teff=f * b * c, teff_fwhm=f, teff_sky=b, teff_transparency=c, eta=eta)


@dataclass(frozen=True)
class QCMetrics:
    """Quality metrics of a CCD or an exposure.

    Attributes
    ----------
    band : str
    exptime : float
        Exposure time (s).
    airmass : float
    fwhm_arcsec : float
        PSF FWHM (arcsec).
    sky_level_e : float
        Background per pixel over the exposure (e-).
    sky_mag_arcsec2 : float
        Sky brightness calibrated with the measured zeropoint (AB mag/arcsec^2).
    zp : float
        AB magnitude of 1 e- over the exposure (desgw sign).
    zp_per_second : float
        ``zp - 2.5 log10(exptime)``: AB magnitude of 1 e-/s.
    zp_nominal : float
        Nominal zeropoint for 1 e-/s at ``airmass``.
    zp_offset : float
        ``zp_per_second - zp_nominal`` (mag; negative = light lost).
    astrometric_rms_arcsec : float
        2-D rms of the astrometric residuals against the reference (arcsec).
    n_stars : int
        Matched reference stars.
    teff : TeffResult
        Effective-exposure-time factor and parts.
    """

    band: str
    exptime: float
    airmass: float
    fwhm_arcsec: float
    sky_level_e: float
    sky_mag_arcsec2: float
    zp: float
    zp_per_second: float
    zp_nominal: float
    zp_offset: float
    astrometric_rms_arcsec: float
    n_stars: int
    teff: TeffResult

    @property
    def teff_seconds(self) -> float:
        """Effective exposure time ``teff * exptime`` (s)."""
        return self.teff.teff * self.exptime


def compute_qc_metrics(*, band: str, exptime: float, airmass: float, fwhm_arcsec: float,
                       sky_level_e: float, zp: float, astrometric_rms_arcsec: float,
                       n_stars: int, pixel_scale_arcsec: float = PIXEL_SCALE_ARCSEC,
                       zp_tolerance: float = 0.1) -> QCMetrics:
    """Quality metrics from the measurements of a CCD (or medians over an exposure).

    Parameters
    ----------
    band : str
        One of :data:`QC_BANDS`.
    exptime : float
        Exposure time (s, > 0).
    airmass : float
        Airmass (>= 1).
    fwhm_arcsec : float
        PSF FWHM (arcsec), e.g. the PSF model's or :func:`median_fwhm_arcsec`.
    sky_level_e : float
        Background per pixel over the exposure (e-).
    zp : float
        desgw zeropoint (AB magnitude of 1 e- over the exposure).
    astrometric_rms_arcsec : float
        2-D astrometric rms (arcsec), e.g. :func:`astrometric_rms_arcsec`.
    n_stars : int
        Matched reference stars.
    pixel_scale_arcsec : float
    zp_tolerance : float
        See :func:`effective_time_factor`.

    Returns
    -------
    QCMetrics
    """
    validate_band(band, QC_BANDS, what="band with quality references")
    if not (np.isfinite(exptime) and exptime > 0):
        raise ValueError(f"exptime must be positive, got {exptime}")
    zp_s = zp - 2.5 * math.log10(exptime)
    zp_nom = nominal_zeropoint(band, airmass)
    offset = zp_s - zp_nom
    sky_mag = sky_brightness(sky_level_e, zp, pixel_scale_arcsec=pixel_scale_arcsec)
    teff = effective_time_factor(band, fwhm_arcsec=fwhm_arcsec,
                                 sky_rate_e=sky_level_e / exptime, zp_offset=offset,
                                 zp_tolerance=zp_tolerance, pixel_scale_arcsec=pixel_scale_arcsec)
    return QCMetrics(band=band, exptime=float(exptime), airmass=float(airmass),
                     fwhm_arcsec=float(fwhm_arcsec), sky_level_e=float(sky_level_e),
                     sky_mag_arcsec2=sky_mag, zp=float(zp), zp_per_second=zp_s,
                     zp_nominal=zp_nom, zp_offset=offset,
                     astrometric_rms_arcsec=float(astrometric_rms_arcsec),
                     n_stars=int(n_stars), teff=teff)


def combine_qc_metrics(per_ccd: Sequence[QCMetrics], *,
                       pixel_scale_arcsec: float = PIXEL_SCALE_ARCSEC,
                       zp_tolerance: float = 0.1) -> QCMetrics:
    """Exposure metrics from CCD metrics.

    FWHM, sky level and zeropoint are medians over the CCDs with finite values (as the
    original took medians over CCD files); the astrometric rms is the star-weighted quadratic
    mean; stars are summed. Band, exposure time and airmass must agree.

    Raises
    ------
    ValueError
        Empty input or CCDs of different band, exposure time or airmass.
    """
    if not per_ccd:
        raise ValueError("no CCD metrics to combine")
    first = per_ccd[0]
    for m in per_ccd[1:]:
        if (m.band, m.exptime, m.airmass) != (first.band, first.exptime, first.airmass):
            raise ValueError("CCD metrics of different exposures (band/exptime/airmass differ)")

    def med(values: list[float]) -> float:
        a = np.asarray(values, dtype=np.float64)
        a = a[np.isfinite(a)]
        return float(np.median(a)) if a.size else math.nan

    n = np.array([m.n_stars for m in per_ccd], dtype=np.float64)
    rms = np.array([m.astrometric_rms_arcsec for m in per_ccd], dtype=np.float64)
    ok = np.isfinite(rms) & (n > 0)
    astro = float(np.sqrt(np.sum(n[ok] * rms[ok] ** 2) / np.sum(n[ok]))) if np.any(ok) \
        else math.nan
    return compute_qc_metrics(band=first.band, exptime=first.exptime, airmass=first.airmass,
                              fwhm_arcsec=med([m.fwhm_arcsec for m in per_ccd]),
                              sky_level_e=med([m.sky_level_e for m in per_ccd]),
                              zp=med([m.zp for m in per_ccd]), astrometric_rms_arcsec=astro,
                              n_stars=int(n.sum()), pixel_scale_arcsec=pixel_scale_arcsec,
                              zp_tolerance=zp_tolerance)


@dataclass(frozen=True)
class QCThresholds:
    """Pass/fail limits of :func:`assess_quality`.

    Attributes
    ----------
    min_stars : int
        Fewest matched reference stars (10 suits a CCD; use more for an exposure).
    max_astrometric_rms_arcsec : float
        Largest 2-D astrometric rms (arcsec); 0.15 ~ the original's 0.1" per axis.
    max_fwhm_arcsec : float or None
        Largest FWHM (arcsec); None: :data:`MAX_FWHM_ARCSEC` of the band.
    max_zp_deficit : float
        Largest loss of the zeropoint below nominal (mag): more means clouds.
    min_teff : float or None
        Smallest t_eff factor; None: :data:`MIN_TEFF` of the band.
    """

    min_stars: int = 10
    max_astrometric_rms_arcsec: float = 0.15
    max_fwhm_arcsec: float | None = None
    max_zp_deficit: float = 0.5
    min_teff: float | None = None


@dataclass(frozen=True)
class QCResult:
    """Outcome of :func:`assess_quality`.

    Attributes
    ----------
    passed : bool
        True when no check failed.
    reasons : tuple of str
        One sentence per failed check (empty when passed); each names its metric.
    metrics : QCMetrics
    """

    passed: bool
    reasons: tuple[str, ...]
    metrics: QCMetrics


def assess_quality(metrics: QCMetrics, *, thresholds: QCThresholds = QCThresholds()) -> QCResult:
    """Pass or fail a CCD or an exposure, with the reasons.

    Fails for: too few stars; astrometric rms too large; FWHM too large; zeropoint too far
    below nominal (clouds); t_eff below the cut. A metric that could not be measured (NaN)
    fails its check with a reason saying so.
    """
    t = thresholds
    m = metrics
    reasons: list[str] = []
    if m.n_stars < t.min_stars:
        reasons.append(f"too few stars: {m.n_stars} matched, {t.min_stars} needed")
    if not np.isfinite(m.astrometric_rms_arcsec):
        reasons.append("astrometric rms not measured")
    elif m.astrometric_rms_arcsec > t.max_astrometric_rms_arcsec:
        reasons.append(f"astrometric rms {m.astrometric_rms_arcsec:.3f} arcsec > "
                       f"{t.max_astrometric_rms_arcsec:.3f}")
    max_fwhm = t.max_fwhm_arcsec if t.max_fwhm_arcsec is not None else MAX_FWHM_ARCSEC[m.band]
    if not np.isfinite(m.fwhm_arcsec):
        reasons.append("FWHM not measured")
    elif m.fwhm_arcsec > max_fwhm:
        reasons.append(f"FWHM {m.fwhm_arcsec:.2f} arcsec > {max_fwhm:.2f} ({m.band} band)")
    if not np.isfinite(m.zp_offset):
        reasons.append("zeropoint not measured")
    elif -m.zp_offset > t.max_zp_deficit:
        reasons.append(f"zeropoint {-m.zp_offset:.2f} mag below nominal "
                       f"({m.zp_per_second:.3f} vs {m.zp_nominal:.3f} for 1 e-/s at airmass "
                       f"{m.airmass:.2f}): clouds")
    min_teff = t.min_teff if t.min_teff is not None else MIN_TEFF[m.band]
    if not np.isfinite(m.teff.teff):
        reasons.append("t_eff not measured")
    elif m.teff.teff < min_teff:
        reasons.append(f"t_eff {m.teff.teff:.3f} < {min_teff:.2f} (seeing {m.teff.teff_fwhm:.2f},"
                       f" sky {m.teff.teff_sky:.2f}, transparency {m.teff.teff_transparency:.2f})")
    return QCResult(passed=not reasons, reasons=tuple(reasons), metrics=m)
