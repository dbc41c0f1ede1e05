"""Exposure photometric calibration with the original file names (``BLISS-expCalib_Y3apass.py``).

:func:`run_expcalib` calibrates the CCD catalogs of one exposure against Gaia (colour terms by
default) with the functions of :mod:`desgw.se.photocal` and writes, atomically, the three CSV
kinds the original wrote, with the original names and columns (learned from the original's
source; extra desgw columns are appended after the original ones):

``Zero_D{expnum:08d}_{ccd:02d}_r{R}p{P}.csv`` (one row: the CCD)
    ``FILENAME`` (the CCD's fullcat name), ``Nall`` (matched stars), ``Nclipped`` (stars kept
    by the clipping), ``ZP`` and ``ZPrms`` (the CCD's own ZP in the original's sign, and its
    error ``std/sqrt(N)``; NaN where the original wrote -999), ``magType``; then the desgw
    columns ``EXPNUM``, ``CCDNUM``, ``BAND``, ``NewZP``, ``NewZPrms``, ``NewZPFlag`` (the
    final ZP after the outlier rules, original sign, and the original's flag sum),
    ``MAG_ZERO``, ``MAG_ZERO_ERR`` (the final ZP in desgw's sign), ``ZP_SCATTER`` (rms of
    the kept stars), ``COLOR_TERMS`` (1 when Gaia colour terms were used), ``ZP_METHOD``
    (the estimator of the CCD's own ZP), ``ZP_SOURCE`` (where ``MAG_ZERO`` comes from:
    ``own``, ``exposure`` for a replaced CCD, ``shrinkage`` for the empirical-Bayes estimate
    over the exposure's CCDs), ``ZP_SHRINK_WEIGHT`` (the share of its own offset from the
    exposure the CCD keeps, 0-1) and ``ZP_TAU`` (the exposure's estimated real CCD-to-CCD
    scatter, mag; NaN without shrinkage).

``allZP_D{expnum:08d}_r{R}p{P}.csv`` (one row: the exposure, all stars of all CCDs)
    ``EXPNUM``, ``REQNUM``, ``ATTNUM``, ``NumStarsAll``, ``NumStarsClipped``, ``sigclipZP``,
    ``stdsigclipzp`` (original sign); then ``BAND``, ``MAG_ZERO``, ``MAG_ZERO_ERR``,
    ``ZP_SCATTER``, ``MEDIAN_CCD_MAG_ZERO``, ``OUTLIER_FRACTION``, ``EXPOSURE_FLAGGED``,
    ``COLOR_TERMS``, ``magType``, ``ZP_METHOD`` (estimator), ``CCD_ZP`` (``shrinkage`` or
    ``own``: the rule asked for), ``ZP_TAU``, ``N_CCD_SHRINKAGE`` (CCDs in the shrinkage fit, 0
    when none), ``CCD_MEAN_MAG_ZERO`` and ``CCD_MEAN_MAG_ZERO_ERR`` (the shrinkage fit's
    exposure zeropoint: its CCDs weighted by ``1/(s^2 + tau^2)``; NaN without shrinkage).

Estimators (desgw defaults, not the original's)
-----------------------------------------------
Each CCD's own ZP is the weighted mean (``method="weighted"``, ``error_floor=0.01``: Gaia's
errors through the colour transformation and the transformation's intrinsic scatter), the
same as the SE's own calibration (:class:`desgw.se.process.SEConfig` ``zp_method``,
``zp_error_floor``); the original's plain mean (``method="mean"``) gives every faint star
with a 0.02-0.05 mag reference error the weight of a bright one and scattered 1.7x more on the
science audit's sparse CCDs (rms 5.4 against 3.1 mmag vs the truth, same stars). The final
per-CCD ZP is the empirical-Bayes estimate about the exposure (``ZeropointRules.ccd_zp``,
:func:`desgw.se.photocal.shrink_ccd_zeropoints`) when the exposure has at least
:data:`~desgw.se.photocal.MIN_CCDS_FOR_SHRINKAGE` usable CCDs; ``rules=ZeropointRules(
ccd_zp="own", method="mean")`` gives the original's.

``D{expnum:08d}_{ccd:02d}_r{R}p{P}_ZP.csv`` (every catalog object of the CCD, sorted by RA)
    ``ID, EXPNUM, CCDNUM, NUMBER, ALPHAWIN_J2000, DELTAWIN_J2000, FLUX_AUTO, FLUXERR_AUTO,
    FLUX_PSF, FLUXERR_PSF, MAG_AUTO, MAGERR_AUTO, MAG_PSF, MAGERR_PSF, SPREAD_MODEL,
    SPREADERR_MODEL, FWHM_WORLD, FWHMPSF_IMAGE, FWHMPSF_WORLD, CLASS_STAR, FLAGS, IMAFLAGS_ISO,
    ZeroPoint, ZeroPoint_rms, ZeroPoint_FLAGS``: as the original, ``MAG_AUTO`` and ``MAG_PSF``
    are *calibrated* AB magnitudes computed from the fluxes with the CCD's final ZP. A column
    the input catalog lacks is written as ``nan``; magnitudes of non-positive fluxes are
    ``nan`` (the original wrote -9999).

Zeropoint sign conventions (both are in the files)
--------------------------------------------------
* desgw (``MAG_ZERO``, and every ``zp`` in the returned :class:`~desgw.se.photocal.ExposureZP`):
  ``m_AB = -2.5 log10(FLUX [e-]) + MAG_ZERO = MAG_* - sex_mag_zeropoint + MAG_ZERO``, FLUX the
  catalog flux in electrons summed over the exposure (not per second).
* original (``ZP``, ``NewZP``, ``sigclipZP``, ``ZeroPoint``): ``ZP = -MAG_ZERO`` (the original
  computed ``MAG_inst - m_ref - 25`` with ``MAG_inst = -2.5 log10(FLUX) + 25`` and calibrated
  with ``m = -2.5 log10(FLUX) - ZeroPoint``).

With ``debug=True`` a fourth file per CCD, ``D{expnum:08d}_{ccd:02d}_r{R}p{P}_match.csv``
(a desgw addition), lists the matched stars (positions, instrumental and reference
magnitudes, Gaia colour, residual, kept by the clipping).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeAlias, runtime_checkable

import numpy as np
from astropy.table import Table
from numpy.typing import ArrayLike, NDArray

from desgw.errors import (
    DesgwInputError,
    MissingCCDError,
)
from desgw.io.naming import allzp_csv_name, fullcat_name, zero_csv_name, zp_csv_name
from desgw.io.zp_tables import (
    ALLZP_CSV_COLUMNS,
    MATCH_CSV_COLUMNS,
    ZERO_CSV_COLUMNS,
    ZP_CSV_COLUMNS,
    format_csv_value,
    match_csv_name,
    write_csv_columns,
    write_csv_rows,
)
from desgw.refcat.transforms import TransformUnavailableError
from desgw.se.photocal import (
    ExposureZP,
    PhotometricCalibrationError,
    ZeropointResult,
    ZeropointRules,
    exposure_zeropoints,
    match_to_reference,
    reference_magnitudes,
    select_calibration_stars,
    zeropoint,
)
from desgw.se.photocal import (
    Method as ZPMethod,
)
from desgw.util.sphere import gnomonic_forward, gnomonic_inverse, mean_position

__all__ = [
    "MAGS_TYPES",
    "DEFAULT_ZP_METHOD",
    "DEFAULT_ERROR_FLOOR",
    "ReferenceCatalog",
    "CCDMeasurement",
    "instrumental_flux",
    "footprint_corners",
    "query_reference",
    "measure_ccd_zeropoint",
    "run_expcalib",
]

logger = logging.getLogger(__name__)

#: Estimator of each CCD's own zeropoint in :func:`run_expcalib`: the SE's
#: (:class:`desgw.se.process.SEConfig` ``zp_method``), not the original's plain mean.
DEFAULT_ZP_METHOD: ZPMethod = "weighted"
#: Error floor (mag) added in quadrature to each star's error for the weights: the intrinsic
#: scatter of true DES magnitudes about the Gaia transformation (SEConfig ``zp_error_floor``).
DEFAULT_ERROR_FLOOR = 0.01

#: Magnitude types of the original's ``--magsType``.
MAGS_TYPES: tuple[str, ...] = ("mag_psf", "mag_auto", "mag_aper_8")

#: The DES ``MAG_APER_8`` is the 8th SExtractor aperture (1-based), FLUX_APER[:, 7].
_APER8_INDEX = 7
_MAG_PER_LN = 2.5 / math.log(10.0)


@runtime_checkable
class ReferenceCatalog(Protocol):
    """Anything with ``query_footprint`` like :class:`desgw.refcat.store.RefCatStore`."""

    def query_footprint(self, corners_ra: ArrayLike, corners_dec: ArrayLike, *,
                        margin_arcsec: float = 0.0, epoch: float | None = None) -> Table: ...


RefCatLike: TypeAlias = ReferenceCatalog | Callable[..., Table] | Table


# ----------------------------------------------------------------------------- helpers
def _get(table: Table, name: str) -> NDArray[Any] | None:
    if name in table.colnames:
        return np.asarray(table[name])
    lower = {c.lower(): c for c in table.colnames}
    return np.asarray(table[lower[name.lower()]]) if name.lower() in lower else None


def _require(table: Table, name: str) -> NDArray[Any]:
    """Column ``name`` (case-insensitive) of a catalog, or an error naming it."""
    col = _get(table, name)
    if col is None:
        raise DesgwInputError(None, None, f"catalog has no column {name!r}", column=name)
    return col


def instrumental_flux(catalog: Table, mags_type: str = "mag_psf", *,
                      sex_mag_zeropoint: float = 25.0
                      ) -> tuple[NDArray[np.float64], NDArray[np.float64], str, str]:
    """The flux and flux error (e-) used for a ``--magsType``.

    ``mag_psf`` -> ``FLUX_PSF``/``FLUXERR_PSF``; ``mag_auto`` -> ``FLUX_AUTO``/``FLUXERR_AUTO``;
    ``mag_aper_8`` -> ``FLUX_APER_8`` if the catalog has such a column, else the 8th aperture
    ``FLUX_APER[:, 7]`` (DES numbers its apertures from 1). When a flux column is missing but
    the magnitude column (``MAG_PSF``, ...) exists, the flux is rebuilt from it:
    ``FLUX = 10**(-0.4 (MAG - sex_mag_zeropoint))`` (this is where ``sex_mag_zeropoint``
    matters).

    Returns
    -------
    flux, fluxerr : ndarray of float64, shape (N,)
    flux_name, fluxerr_name : str
        The catalog columns used (``"<from MAG_PSF>"`` when rebuilt).

    Raises
    ------
    ValueError
        Unknown ``mags_type``.
    DesgwInputError
        Neither the flux nor the magnitude column exists.
    """
    mt = mags_type.lower()
    if mt not in MAGS_TYPES:
        raise ValueError(f"mags_type must be one of {MAGS_TYPES}, got {mags_type!r}")
    base = mt[4:].upper()  # PSF, AUTO, APER_8
    fname, ename = f"FLUX_{base}", f"FLUXERR_{base}"
    flux, ferr = _get(catalog, fname), _get(catalog, ename)
    if (flux is None or ferr is None) and base == "APER_8":
        fa, ea = _get(catalog, "FLUX_APER"), _get(catalog, "FLUXERR_APER")
        if fa is not None and ea is not None and fa.ndim == 2 and fa.shape[1] > _APER8_INDEX:
            flux, ferr = fa[:, _APER8_INDEX], ea[:, _APER8_INDEX]
            fname, ename = "FLUX_APER[:,7]", "FLUXERR_APER[:,7]"
    if flux is None or ferr is None:
        mag, magerr = _get(catalog, f"MAG_{base}"), _get(catalog, f"MAGERR_{base}")
        if mag is None or magerr is None:
            raise DesgwInputError(None, None, f"catalog has neither {fname}/{ename} nor "
                                  f"MAG_{base}/MAGERR_{base} (columns: "
                                  f"{', '.join(catalog.colnames)})", column=fname)
        mag = mag.astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            flux = np.where(mag < 90, 10.0 ** (-0.4 * (mag - sex_mag_zeropoint)), np.nan)
            ferr = flux * magerr.astype(np.float64) / _MAG_PER_LN
        fname, ename = f"<from MAG_{base}>", f"<from MAGERR_{base}>"
    return (np.asarray(flux, dtype=np.float64), np.asarray(ferr, dtype=np.float64),
            fname, ename)


def footprint_corners(ra: ArrayLike, dec: ArrayLike, *, pad_arcsec: float = 0.0
                      ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Four corners of the tangent-plane box enclosing a set of positions.

    Used when a CCD's corners are not given: the box of its catalog positions, centred on
    their mean direction (RA wrap and poles are fine).

    Parameters
    ----------
    ra, dec : array_like of float, shape (N,), N >= 1
        Positions (deg); non-finite ones are ignored.
    pad_arcsec : float
        Grow the box by this much on every side (arcsec).

    Returns
    -------
    corners_ra, corners_dec : ndarray of float64, shape (4,)
    """
    ra_a = np.asarray(ra, dtype=np.float64).ravel()
    dec_a = np.asarray(dec, dtype=np.float64).ravel()
    ok = np.isfinite(ra_a) & np.isfinite(dec_a)
    if not np.any(ok):
        raise ValueError("no finite position to build a footprint from")
    ra0, dec0 = mean_position(ra_a[ok], dec_a[ok])
    xi, eta, _ = gnomonic_forward(ra_a[ok], dec_a[ok], ra0, dec0)
    pad = pad_arcsec / 3600.0
    x0, x1 = xi.min() - pad, xi.max() + pad
    y0, y1 = eta.min() - pad, eta.max() + pad
    # a degenerate (single-point) box still needs a finite area for the footprint code
    if x1 - x0 < 1e-6:
        x0, x1 = x0 - 5e-7, x1 + 5e-7
    if y1 - y0 < 1e-6:
        y0, y1 = y0 - 5e-7, y1 + 5e-7
    cra, cdec = gnomonic_inverse(np.array([x0, x1, x1, x0]), np.array([y0, y0, y1, y1]),
                                 ra0, dec0)
    return np.asarray(cra, dtype=np.float64), np.asarray(cdec, dtype=np.float64)


def query_reference(refcat: RefCatLike, corners_ra: ArrayLike, corners_dec: ArrayLike, *,
                    margin_arcsec: float = 5.0, epoch: float | None = None) -> Table:
    """Reference stars for a footprint from a store, a callable or a ready table.

    Parameters
    ----------
    refcat : ReferenceCatalog, callable or astropy.table.Table
        An object with ``query_footprint(corners_ra, corners_dec, margin_arcsec=, epoch=)``
        (e.g. :class:`desgw.refcat.store.RefCatStore`), a callable with the same arguments,
        or a table used as it is (matching discards stars outside the CCD).
    corners_ra, corners_dec : array_like, shape (K,)
        Footprint corners (deg).
    margin_arcsec : float
        Grow the footprint by this much (arcsec).
    epoch : float or None
        Julian year for proper motions (None: catalogue epoch).

    Returns
    -------
    astropy.table.Table
        Gaia columns (ra, dec, phot_g_mean_mag, phot_bp_mean_mag, phot_rp_mean_mag, ...).
    """
    if isinstance(refcat, Table):
        return refcat
    if isinstance(refcat, ReferenceCatalog):
        return refcat.query_footprint(corners_ra, corners_dec, margin_arcsec=margin_arcsec,
                                      epoch=epoch)
    if callable(refcat):
        return refcat(corners_ra, corners_dec, margin_arcsec=margin_arcsec, epoch=epoch)
    raise TypeError("refcat must be a Table, a callable or have query_footprint(); got "
                    f"{type(refcat).__name__}")


@dataclass(frozen=True, eq=False)
class CCDMeasurement:
    """One CCD's zeropoint measurement and the matched stars behind it.

    Attributes
    ----------
    result : ZeropointResult
        ``zp`` with ``m_AB = -2.5 log10(FLUX [e-]) + zp``.
    cat_index : ndarray of intp, shape (M,)
        Catalog rows of the matched calibration stars (same order as ``result.delta``).
    ref_index : ndarray of intp, shape (M,)
        Reference-table rows of the same stars.
    separation_arcsec, mag_inst, magerr_inst, mag_ref, bp_rp : ndarray of float64, shape (M,)
        Match separation, ``-2.5 log10(FLUX)``, its error, predicted DES magnitude, Gaia colour.
    n_candidates : int
        Catalog rows that passed the star selection.
    color_terms : bool
        Whether Gaia colour terms were applied.
    """

    result: ZeropointResult
    cat_index: NDArray[np.intp] = field(repr=False)
    ref_index: NDArray[np.intp] = field(repr=False)
    separation_arcsec: NDArray[np.float64] = field(repr=False)
    mag_inst: NDArray[np.float64] = field(repr=False)
    magerr_inst: NDArray[np.float64] = field(repr=False)
    mag_ref: NDArray[np.float64] = field(repr=False)
    bp_rp: NDArray[np.float64] = field(repr=False)
    n_candidates: int = 0
    color_terms: bool = True


def measure_ccd_zeropoint(catalog: Table, reference: Table, band: str, *,
                          mags_type: str = "mag_psf", sex_mag_zeropoint: float = 25.0,
                          use_color_terms: bool = True, match_radius_arcsec: float = 1.0,
                          selection: Mapping[str, Any] | None = None, method: ZPMethod = "mean",
                          error_floor: float = 0.02, nsigma: float = 3.0,
                          iters: int | None = 3) -> CCDMeasurement:
    """Select, match and measure the zeropoint of one CCD catalog.

    Parameters
    ----------
    catalog : astropy.table.Table
        SExtractor-style catalog (``ALPHAWIN_J2000``, ``DELTAWIN_J2000`` in deg, fluxes in e-
        over the exposure, and the columns of
        :func:`~desgw.se.photocal.select_calibration_stars`).
    reference : astropy.table.Table
        Gaia table at the exposure epoch (ra, dec in deg, G/BP/RP mags).
    band : str
        DES band.
    mags_type : {"mag_psf", "mag_auto", "mag_aper_8"}
    sex_mag_zeropoint : float
        Zeropoint of the catalog's MAG_* columns (used only when fluxes must be rebuilt).
    use_color_terms : bool
        Gaia -> DES colour terms (True) or the original G for every band (False).
    match_radius_arcsec : float
    selection : mapping, optional
        Keyword arguments for :func:`~desgw.se.photocal.select_calibration_stars` (the flux
        columns default to the ones of ``mags_type``).
    method, error_floor, nsigma, iters
        See :func:`~desgw.se.photocal.zeropoint`. Each star's ``mag_err`` is its catalog flux
        error and its reference magnitude's error (Gaia G, BP and RP errors through the
        colour transformation, :class:`~desgw.se.photocal.ReferenceMagnitudes`) in
        quadrature, in magnitudes. Stars Gaia flags as variable are not used.

    Returns
    -------
    CCDMeasurement
    """
    flux, ferr, _fname, _ename = instrumental_flux(catalog, mags_type,
                                                 sex_mag_zeropoint=sex_mag_zeropoint)
    sel_kw: dict[str, Any] = dict(selection or {})
    work = catalog
    if "flux_column" not in sel_kw:
        # select on the flux being calibrated (a view: the caller's table is not modified)
        work = Table(catalog, copy=False)
        work["_FLUX_CAL"], work["_FLUXERR_CAL"] = flux, ferr
        sel_kw["flux_column"], sel_kw["fluxerr_column"] = "_FLUX_CAL", "_FLUXERR_CAL"
    sel = select_calibration_stars(work, **sel_kw)
    rows = np.flatnonzero(sel)
    ra = _get(catalog, "ALPHAWIN_J2000")
    dec = _get(catalog, "DELTAWIN_J2000")
    if ra is None or dec is None:
        raise DesgwInputError(None, None, "catalog has no ALPHAWIN_J2000/DELTAWIN_J2000 columns")
    ref = reference_magnitudes(band, reference, use_color_terms=use_color_terms)
    rra, rdec = _get(reference, "ra"), _get(reference, "dec")
    if rra is None or rdec is None:
        raise DesgwInputError(None, None, "reference table has no ra/dec columns")
    m = match_to_reference(ra[rows], dec[rows], rra, rdec, radius_arcsec=match_radius_arcsec)
    # Gaia's variables are no calibrators: their magnitude tonight is not Gaia's mean
    keep = ref.valid[m.ref_index] & ~ref.variable[m.ref_index]
    cat_i = rows[m.cat_index[keep]]
    ref_i = m.ref_index[keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        mag_inst = -2.5 * np.log10(flux[cat_i])
        magerr = _MAG_PER_LN * ferr[cat_i] / flux[cat_i]
    mag_ref = ref.mag[ref_i]
    ref_err = ref.mag_err[ref_i]
    # the weights take both errors: a faint star's BP/RP colour error can exceed its flux error
    delta_err = np.where(np.isfinite(ref_err), np.hypot(magerr, ref_err), magerr)
    res = zeropoint(mag_inst, mag_ref, mag_err=delta_err, nsigma=nsigma, iters=iters,
                    method=method, error_floor=error_floor)
    # zeropoint() drops non-finite pairs; keep the arrays aligned with result.delta
    fin = np.isfinite(mag_inst) & np.isfinite(mag_ref)
    return CCDMeasurement(result=res, cat_index=cat_i[fin], ref_index=ref_i[fin],
                          separation_arcsec=m.separation_arcsec[keep][fin],
                          mag_inst=mag_inst[fin], magerr_inst=magerr[fin], mag_ref=mag_ref[fin],
                          bp_rp=ref.bp_rp[ref_i][fin], n_candidates=int(rows.size),
                          color_terms=ref.color_terms)


# ----------------------------------------------------------------------------- CSV I/O
def _write_zp_objects(path: Path, catalog: Table, expnum: int, ccd: int, zp: float, zp_err: float,
                      flag: int) -> Path:
    """The calibrated object list ``..._ZP.csv`` (original columns; see the module docstring)."""
    n = len(catalog)
    cols: dict[str, NDArray[Any]] = {}
    for name in ZP_CSV_COLUMNS[3:22]:
        col = _get(catalog, name)
        cols[name] = col if col is not None and col.ndim == 1 else np.full(n, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        for kind in ("AUTO", "PSF"):
            f = np.asarray(cols[f"FLUX_{kind}"], dtype=np.float64)
            e = np.asarray(cols[f"FLUXERR_{kind}"], dtype=np.float64)
            good = np.isfinite(f) & (f > 0)
            cols[f"MAG_{kind}"] = np.where(good, -2.5 * np.log10(np.where(good, f, 1.0)) + zp,
                                           np.nan)
            cols[f"MAGERR_{kind}"] = np.where(good, _MAG_PER_LN * e / np.where(good, f, 1.0),
                                              np.nan)
    ra = np.asarray(cols["ALPHAWIN_J2000"], dtype=np.float64)
    order = np.argsort(ra, kind="stable")
    coord = {"ALPHAWIN_J2000", "DELTAWIN_J2000", "FWHM_WORLD", "FWHMPSF_WORLD"}
    columns: list[Any] = [np.arange(1, n + 1), np.full(n, str(expnum)), np.full(n, str(ccd))]
    columns += [np.asarray(cols[name])[order] for name in ZP_CSV_COLUMNS[3:22]]
    columns += [np.full(n, format_csv_value(-zp)), np.full(n, format_csv_value(zp_err)),
                np.full(n, str(flag))]
    digits = [6, 6, 6] + [9 if name in coord else 6 for name in ZP_CSV_COLUMNS[3:22]] + [6] * 3
    return write_csv_columns(path, ZP_CSV_COLUMNS, columns, digits)


# ----------------------------------------------------------------------------- driver
def _as_int(name: str, value: int | str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def run_expcalib(expnum: int, reqnum: int | str, attnum: int | str, ccds: Iterable[int], *,
                 catalogs: Mapping[int, Table], refcat: RefCatLike, band: str,
                 mags_type: str = "mag_psf", sex_mag_zeropoint: float = 25.0,
                 outdir: str | os.PathLike[str], verbose: int = 0, debug: bool = False,
                 use_color_terms: bool = True, match_radius_arcsec: float = 1.0,
                 corners: Mapping[int, tuple[ArrayLike, ArrayLike]] | None = None,
                 epoch: float | None = None, margin_arcsec: float = 5.0,
                 selection: Mapping[str, Any] | None = None,
                 method: ZPMethod = DEFAULT_ZP_METHOD, error_floor: float = DEFAULT_ERROR_FLOOR,
                 rules: ZeropointRules | None = None) -> ExposureZP:
    """Calibrate the CCDs of an exposure against Gaia and write the original's CSV files.

    Parameters
    ----------
    expnum, reqnum, attnum : int
        Exposure number and the processing run/pass numbers (``r{reqnum}p{attnum}``).
    ccds : iterable of int
        CCDNUMs to calibrate (each must be in ``catalogs``).
    catalogs : mapping of int to astropy.table.Table
        SE catalog of each CCD (see :func:`measure_ccd_zeropoint` for columns).
    refcat : ReferenceCatalog, callable or Table
        Gaia source (see :func:`query_reference`).
    band : str
        DES band (g, r, i, z, Y).
    mags_type : {"mag_psf", "mag_auto", "mag_aper_8"}
        Photometry to calibrate (original ``--magsType``).
    sex_mag_zeropoint : float
        Zeropoint of the catalogs' MAG_* columns (original ``--sex_mag_zeropoint``).
    outdir : path
        Directory for the CSV files (created).
    verbose : int
        > 0 logs a per-CCD summary at INFO (else DEBUG).
    debug : bool
        Also write the matched-star file of each CCD (:func:`match_csv_name`).
    use_color_terms : bool
        Gaia -> DES colour terms (default) or the original G for every band. For a band
        without a transformation (Y) the original G-only scheme is used with a warning.
    match_radius_arcsec : float
        Match radius (original 1.0).
    corners : mapping of int to (corners_ra, corners_dec), optional
        CCD corners (deg) for the reference query; default: the box of the catalog positions.
    epoch : float or None
        Julian year of the exposure, for Gaia proper motions.
    margin_arcsec : float
        Grow each footprint by this much for the reference query.
    selection : mapping, optional
        Keyword arguments for :func:`~desgw.se.photocal.select_calibration_stars`.
    method, error_floor
        Zeropoint estimator (:func:`~desgw.se.photocal.zeropoint`); default the SE's weighted
        mean with a 0.01 mag floor (the original: ``"mean"``; see the module docstring).
    rules : ZeropointRules, optional
        Per-CCD replacement/outlier rules and the final CCD zeropoints; default the
        original's rules with ``method`` and ``error_floor`` from above and the
        empirical-Bayes CCD zeropoints (``ccd_zp="shrinkage"``).

    Returns
    -------
    ExposureZP
        ``zp`` in desgw's sign: ``m_AB = -2.5 log10(FLUX [e-]) + zp``.

    Raises
    ------
    MissingCCDError
        A CCD of ``ccds`` has no catalog.
    PhotometricCalibrationError
        Fewer than 3 stars in the whole exposure survive (nothing is written).
    DesgwInputError
        A catalog or the reference table lacks needed columns.
    """
    expnum = _as_int("expnum", expnum)
    rnum, pnum = _as_int("reqnum", reqnum), _as_int("attnum", attnum)
    ccd_list = [int(c) for c in ccds]
    if not ccd_list:
        raise ValueError("no CCD to calibrate")
    missing = [c for c in ccd_list if c not in catalogs]
    if missing:
        raise MissingCCDError(None, None, f"no catalog for CCD(s) {missing}",
                              present=tuple(sorted(int(k) for k in catalogs)))
    level = logging.INFO if verbose > 0 else logging.DEBUG
    out = Path(outdir)
    color_terms = use_color_terms
    if color_terms:
        try:
            reference_magnitudes(band, Table({"phot_g_mean_mag": [], "phot_bp_mean_mag": [],
                                               "phot_rp_mean_mag": []}))
        except TransformUnavailableError:
            logger.warning("band %s has no Gaia colour transformation: using Gaia G "
                           "(the original scheme) for exposure %d", band, expnum)
            color_terms = False

    measurements: dict[int, CCDMeasurement] = {}
    for ccd in ccd_list:
        cat = catalogs[ccd]
        if corners is not None and ccd in corners:
            cra, cdec = corners[ccd]
        else:
            cra, cdec = footprint_corners(_require(cat, "ALPHAWIN_J2000"),
                                          _require(cat, "DELTAWIN_J2000"))
        ref = query_reference(refcat, cra, cdec, margin_arcsec=margin_arcsec, epoch=epoch)
        meas = measure_ccd_zeropoint(cat, ref, band, mags_type=mags_type,
                                     sex_mag_zeropoint=sex_mag_zeropoint,
                                     use_color_terms=color_terms,
                                     match_radius_arcsec=match_radius_arcsec,
                                     selection=selection, method=method, error_floor=error_floor)
        measurements[ccd] = meas
        r = meas.result
        logger.log(level, "expnum %d CCD %02d: %d candidates, %d matched, %d kept, "
                   "zp %.4f +- %.4f (rms %.3f)", expnum, ccd, meas.n_candidates, r.n_matched,
                   r.n_used, r.zp, r.zp_err, r.rms)

    the_rules = rules if rules is not None else ZeropointRules(method=method,
                                                               error_floor=error_floor)
    expo = exposure_zeropoints({c: m.result for c, m in measurements.items()}, rules=the_rules)
    if not expo.exposure.valid:
        raise PhotometricCalibrationError(
            f"exposure {expnum} band {band}: only {expo.exposure.n_used} of "
            f"{expo.exposure.n_matched} matched stars survive; no zeropoint",
            n_matched=expo.exposure.n_matched, n_used=expo.exposure.n_used)

    mt = mags_type.lower()
    shr = expo.shrinkage
    tau = shr.tau if shr is not None else math.nan
    for ccd in ccd_list:
        c = expo.ccds[ccd]
        meas = measurements[ccd]
        own = meas.result
        fmt = format_csv_value
        zero_row = [fullcat_name(expnum, band, ccd, rnum, pnum), str(own.n_matched),
                    str(own.n_used), fmt(-own.zp), fmt(own.zp_err), mt, str(expnum), str(ccd),
                    band, fmt(-c.zp), fmt(c.zp_err), str(c.flag), fmt(c.zp), fmt(c.zp_err),
                    fmt(own.rms), str(int(color_terms)), own.method, c.source,
                    fmt(c.shrink_weight, 4), fmt(tau)]
        write_csv_rows(out / zero_csv_name(expnum, ccd, rnum, pnum), ZERO_CSV_COLUMNS, [zero_row])
        _write_zp_objects(out / zp_csv_name(expnum, ccd, rnum, pnum), catalogs[ccd], expnum,
                          ccd, c.zp, c.zp_err, c.flag)
        if debug:
            cat = catalogs[ccd]
            num = _get(cat, "NUMBER")
            ra, dec = _require(cat, "ALPHAWIN_J2000"), _require(cat, "DELTAWIN_J2000")
            rows = []
            for k, i in enumerate(meas.cat_index):
                rows.append([str(int(num[i])) if num is not None else str(int(i) + 1),
                             fmt(ra[i], 9), fmt(dec[i], 9),
                             fmt(meas.separation_arcsec[k], 4), fmt(meas.mag_inst[k]),
                             fmt(meas.magerr_inst[k]), fmt(meas.mag_ref[k]),
                             fmt(meas.bp_rp[k], 4), fmt(own.delta[k]), str(int(own.used[k]))])
            write_csv_rows(out / match_csv_name(expnum, ccd, rnum, pnum), MATCH_CSV_COLUMNS, rows)

    e = expo.exposure
    fmt = format_csv_value
    allzp_row = [str(expnum), str(rnum), str(pnum), str(e.n_matched), str(e.n_used), fmt(-e.zp),
                 fmt(e.zp_err), band, fmt(e.zp), fmt(e.zp_err), fmt(e.rms),
                 format_csv_value(expo.median_zp), format_csv_value(expo.outlier_fraction, 4),
                 str(int(expo.exposure_flagged)), str(int(color_terms)), mt, e.method,
                 the_rules.ccd_zp, fmt(tau), str(0 if shr is None else shr.n_ccds),
                 fmt(math.nan if shr is None else shr.mean_zp),
                 fmt(math.nan if shr is None else shr.mean_zp_err)]
    write_csv_rows(out / allzp_csv_name(expnum, rnum, pnum), ALLZP_CSV_COLUMNS, [allzp_row])
    logger.log(level, "expnum %d: exposure zp %.4f +- %.4f from %d/%d stars; %d of %d CCDs "
               "replaced; outlier fraction %.2f; CCD zeropoints %s (tau %.4f mag)", expnum,
               e.zp, e.zp_err, e.n_used, e.n_matched,
               sum(c.replaced for c in expo.ccds.values()), len(expo.ccds),
               expo.outlier_fraction,
               f"shrunk over {shr.n_ccds} CCDs" if shr is not None else "their own", tau)
    return expo
