"""Star and veto lists for difference imaging (the original ``makestarcat.py``).

The original pipeline built, per search CCD, a list of bright, well-measured stars from the
single-epoch (SE) catalogs of the exposures that cover the CCD, and a *veto* list that draws a
magnitude-dependent circle around each star: difference-image detections inside a circle are
residuals of imperfectly subtracted stars and are flagged (the original's filterObj step used
the veto list through SExtractor's ASSOC mechanism).

Selection (:func:`select_stars`), as the original:

* ``SPREAD_MODEL < 0.003`` (point-like), ``FLAGS == 0``, ``IMAFLAGS_ISO == 0``;
* ``12 < MAG_PSF < 21.5`` (calibrated AB magnitudes, as in the ``..._ZP.csv`` tables) and
  ``0 < MAGERR_PSF <= 0.011``;
* inside the CCD footprint. The original cut on the RA/Dec bounding box of *all* CCDs of the
  search exposure (from ``{expnum}.out``); we cut on the search CCD's own footprint polygon,
  which is what the list is used for.

Merging (:func:`merge_duplicates`): the same star measured on several overlapping exposures
is merged when the detections lie within 1 arcsec (friends-of-friends: groups are the
connected components of the "closer than 1 arcsec" graph). The merged position is the mean
direction, the magnitude the median, the error ``sqrt(sum err_i^2) / N`` (the error of the
mean), as the original.

Veto radius (:func:`veto_radius_arcsec`): ``30 - 2 (mag - 15)`` arcsec, the original formula
(36" at mag 12, 17" at mag 21.5), clipped below at :data:`VETO_MIN_RADIUS_ARCSEC` = 3 arcsec
so that magnitudes fainter than the list's cut (where the formula would reach zero at mag 30
and go negative) still veto a region of a few seeing FWHM, the size of a subtraction residual.

The SNSTAR and SNVETO files are written and read by :mod:`desgw.io.star_lists`;
``makestarcat.py`` itself is :func:`desgw.workflow.makestarcat.makestarcat_main`.

"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from numpy.typing import ArrayLike, NDArray
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from desgw.errors import DesgwInputError
from desgw.util.sphere import (
    arcsec_to_chord,
    gnomonic_forward,
    mean_position,
    radec_to_unit,
    unit_to_radec,
)

__all__ = [
    "VETO_MIN_RADIUS_ARCSEC",
    "VETO_TYPE_STAR",
    "StarCuts",
    "apply_veto",
    "in_footprint",
    "make_star_catalog",
    "make_veto_table",
    "merge_duplicates",
    "select_stars",
    "veto_radius_arcsec",
]

log = logging.getLogger(__name__)

#: Smallest veto radius (arcsec) returned by :func:`veto_radius_arcsec`.
VETO_MIN_RADIUS_ARCSEC = 3.0
#: The original's ``vtype`` of a star in the veto list.
VETO_TYPE_STAR = 6

_RA_NAMES = ("ALPHAWIN_J2000", "ALPHA_J2000", "RA", "ra")
_DEC_NAMES = ("DELTAWIN_J2000", "DELTA_J2000", "DEC", "dec")


@dataclass(frozen=True)
class StarCuts:
    """Star-list selection (the original makestarcat cuts).

    Attributes
    ----------
    max_spread_model : float
        Keep ``SPREAD_MODEL < max_spread_model``.
    mag_min, mag_max : float
        Keep ``mag_min < MAG_PSF < mag_max`` (calibrated AB).
    max_magerr : float
        Keep ``0 < MAGERR_PSF <= max_magerr``.
    merge_radius_arcsec : float
        Detections closer than this (arcsec) are one star.
    """

    max_spread_model: float = 0.003
    mag_min: float = 12.0
    mag_max: float = 21.5
    max_magerr: float = 0.011
    merge_radius_arcsec: float = 1.0

    def __post_init__(self) -> None:
        if not self.mag_min < self.mag_max:
            raise ValueError(f"StarCuts: mag_min {self.mag_min} must be < mag_max {self.mag_max}")
        if not self.max_magerr > 0 or not self.merge_radius_arcsec > 0:
            raise ValueError("StarCuts: max_magerr and merge_radius_arcsec must be > 0")


# ----------------------------------------------------------------------------- geometry
def in_footprint(ra: ArrayLike, dec: ArrayLike,
                 footprint: tuple[ArrayLike, ArrayLike]) -> NDArray[np.bool_]:
    """Whether sky positions fall inside a polygon footprint (e.g. a CCD's 4 corners).

    The polygon and the points are projected gnomonically about the polygon's mean
    direction (great circles become straight lines; no RA wrap-around problems) and tested
    with the even-odd rule.

    Parameters
    ----------
    ra, dec : array_like
        Positions (deg), shape (n,).
    footprint : (ra[k], dec[k])
        Polygon vertices (deg) in order around the polygon, k >= 3.

    Returns
    -------
    numpy.ndarray
        (n,) bool.
    """
    pra = np.asarray(footprint[0], dtype=np.float64).ravel()
    pdec = np.asarray(footprint[1], dtype=np.float64).ravel()
    if pra.size < 3 or pra.size != pdec.size or not np.all(np.isfinite(pra + pdec)):
        raise ValueError("footprint must be (ra[k], dec[k]) of k >= 3 finite vertices")
    ra0, dec0 = mean_position(pra, pdec)
    vx, vy, _ = gnomonic_forward(pra, pdec, ra0, dec0)
    px, py, front = gnomonic_forward(np.atleast_1d(np.asarray(ra, dtype=np.float64)),
                                     np.atleast_1d(np.asarray(dec, dtype=np.float64)),
                                     ra0, dec0, min_cos=1e-9)
    inside = np.zeros(px.shape, dtype=bool)
    k = vx.size
    for i in range(k):
        x1, y1, x2, y2 = vx[i], vy[i], vx[(i + 1) % k], vy[(i + 1) % k]
        crosses = (y1 > py) != (y2 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (px < xint)
    return inside & front


# ----------------------------------------------------------------------------- selection
def _column(table: Table, names: Sequence[str], what: str) -> NDArray[np.float64]:
    for n in names:
        if n in table.colnames:
            col = np.ma.filled(np.ma.asarray(table[n], dtype=np.float64), np.nan)
            if col.ndim != 1:
                raise DesgwInputError(None, None, f"catalog column {n} is not one-dimensional")
            return np.asarray(col)
    raise DesgwInputError(None, None, f"catalog has no {what} column (looked for "
                          f"{', '.join(names)}; has {', '.join(table.colnames[:20])})")


def select_stars(catalog: Table, *, footprint: tuple[ArrayLike, ArrayLike] | None = None,
                 cuts: StarCuts = StarCuts(), zeropoint: float | None = None,
                 sex_mag_zeropoint: float = 25.0) -> Table:
    """Stars of one SE catalog passing the makestarcat cuts.

    Parameters
    ----------
    catalog : astropy.table.Table
        SE catalog with ``ALPHAWIN_J2000``/``DELTAWIN_J2000`` (or ``ALPHA_J2000``, ``RA``/
        ``DEC``), ``MAG_PSF``, ``MAGERR_PSF``, ``SPREAD_MODEL``, ``FLAGS``, ``IMAFLAGS_ISO``.
    footprint : (ra[k], dec[k]) or None
        Keep only stars inside this polygon (deg); ``None``: no position cut.
    cuts : StarCuts
        The cuts.
    zeropoint : float or None
        ``None``: ``MAG_PSF`` is already calibrated AB (a ``..._ZP.csv`` table). Otherwise the
        CCD's zeropoint (desgw sign, ``m = -2.5 log10(FLUX_e) + zp``) and ``MAG_PSF`` is the
        raw SE magnitude with zeropoint ``sex_mag_zeropoint`` (a ``_fullcat.fits`` table).
    sex_mag_zeropoint : float
        Zeropoint of the raw SE magnitudes (used only with ``zeropoint``).

    Returns
    -------
    astropy.table.Table
        Columns ``RA``, ``DEC`` (deg), ``mag``, ``magerr`` (AB) of the stars kept.
    """
    ra = _column(catalog, _RA_NAMES, "RA")
    dec = _column(catalog, _DEC_NAMES, "Dec")
    mag = _column(catalog, ("MAG_PSF",), "MAG_PSF")
    if zeropoint is not None:
        mag = mag - sex_mag_zeropoint + float(zeropoint)
    err = _column(catalog, ("MAGERR_PSF",), "MAGERR_PSF")
    spread = _column(catalog, ("SPREAD_MODEL",), "SPREAD_MODEL")
    flags = _column(catalog, ("FLAGS",), "FLAGS")
    imaflags = _column(catalog, ("IMAFLAGS_ISO", "IMAFLAGS"), "IMAFLAGS_ISO")
    with np.errstate(invalid="ignore"):
        keep = ((spread < cuts.max_spread_model) & (flags == 0) & (imaflags == 0)
                & (mag > cuts.mag_min) & (mag < cuts.mag_max)
                & (err > 0) & (err <= cuts.max_magerr) & np.isfinite(ra) & np.isfinite(dec))
    if footprint is not None and keep.any():
        idx = np.flatnonzero(keep)
        keep[idx] = in_footprint(ra[idx], dec[idx], footprint)
    return Table({"RA": ra[keep], "DEC": dec[keep], "mag": mag[keep], "magerr": err[keep]})


def merge_duplicates(ra: ArrayLike, dec: ArrayLike, mag: ArrayLike, magerr: ArrayLike, *,
                     radius_arcsec: float = 1.0) -> Table:
    """Merge detections of the same star (friends-of-friends within ``radius_arcsec``).

    Parameters
    ----------
    ra, dec : array_like
        Positions (deg), shape (n,).
    mag, magerr : array_like
        Magnitudes and errors, shape (n,).
    radius_arcsec : float
        Linking length (arcsec).

    Returns
    -------
    astropy.table.Table
        ``OBJID`` (1..m, in RA order), ``RA``, ``DEC`` (mean direction of the group, deg),
        ``mag`` (median), ``magerr`` (``sqrt(sum err^2)/N``), ``nobs`` (detections merged).
    """
    ra = np.asarray(ra, dtype=np.float64).ravel()
    dec = np.asarray(dec, dtype=np.float64).ravel()
    mag = np.asarray(mag, dtype=np.float64).ravel()
    magerr = np.asarray(magerr, dtype=np.float64).ravel()
    n = ra.size
    if not (dec.size == mag.size == magerr.size == n):
        raise ValueError("ra, dec, mag and magerr must have the same length")
    if n == 0:
        return Table({"OBJID": np.zeros(0, np.int64), "RA": np.zeros(0), "DEC": np.zeros(0),
                      "mag": np.zeros(0), "magerr": np.zeros(0), "nobs": np.zeros(0, np.int64)})
    xyz = radec_to_unit(ra, dec)
    pairs = cKDTree(xyz).query_pairs(float(arcsec_to_chord(radius_arcsec)), output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    ngroups, label = connected_components(graph, directed=False)
    order = np.argsort(label, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(label[order]) != 0])
    counts = np.diff(np.r_[starts, n])
    mean_xyz = np.add.reduceat(xyz[order], starts, axis=0)
    gra, gdec = unit_to_radec(mean_xyz)
    gmag = np.array([np.median(m) for m in np.split(mag[order], starts[1:])])
    gerr = np.sqrt(np.add.reduceat(magerr[order] ** 2, starts)) / counts
    srt = np.lexsort((gdec, gra))
    log.debug("merged %d detections into %d stars", n, ngroups)
    return Table({"OBJID": np.arange(1, ngroups + 1, dtype=np.int64), "RA": gra[srt],
                  "DEC": gdec[srt], "mag": gmag[srt], "magerr": gerr[srt],
                  "nobs": counts[srt].astype(np.int64)})


def make_star_catalog(catalogs: Sequence[Table], *,
                      ccd_footprint: tuple[ArrayLike, ArrayLike] | None = None,
                      cuts: StarCuts = StarCuts(),
                      zeropoints: Sequence[float | None] | None = None,
                      sex_mag_zeropoint: float = 25.0) -> Table:
    """The star list of one search CCD from the SE catalogs that cover it.

    Parameters
    ----------
    catalogs : sequence of astropy.table.Table
        SE catalogs (``..._ZP.csv`` tables with calibrated ``MAG_PSF``, or fullcats with
        ``zeropoints``) of the exposures and CCDs that overlap the search CCD. The original
        used the *template* exposures only: a bright transient in the search exposure would
        otherwise enter its own veto list. :func:`makestarcat_main` follows the original.
    ccd_footprint : (ra[4], dec[4]) or None
        The search CCD's corners (deg); ``None``: no position cut.
    cuts : StarCuts
        Selection and merging parameters (see the module docstring).
    zeropoints : sequence of float or None, or None
        Per catalog: ``None`` if its ``MAG_PSF`` is calibrated, else its zeropoint (desgw
        sign) to calibrate raw SE magnitudes (zeropoint ``sex_mag_zeropoint``).
    sex_mag_zeropoint : float
        Zeropoint of raw SE magnitudes.

    Returns
    -------
    astropy.table.Table
        ``OBJID`` (int, 1..n in RA order), ``RA``, ``DEC`` (deg), ``mag``, ``magerr`` (AB),
        ``nobs`` (detections merged).
    """
    if zeropoints is not None and len(zeropoints) != len(catalogs):
        raise ValueError(f"{len(zeropoints)} zeropoints for {len(catalogs)} catalogs")
    parts = [select_stars(cat, footprint=ccd_footprint, cuts=cuts,
                          zeropoint=None if zeropoints is None else zeropoints[i],
                          sex_mag_zeropoint=sex_mag_zeropoint)
             for i, cat in enumerate(catalogs)]
    cols = {k: (np.concatenate([np.asarray(p[k], dtype=np.float64) for p in parts])
                if parts else np.zeros(0)) for k in ("RA", "DEC", "mag", "magerr")}
    return merge_duplicates(cols["RA"], cols["DEC"], cols["mag"], cols["magerr"],
                            radius_arcsec=cuts.merge_radius_arcsec)


# ----------------------------------------------------------------------------- veto
def veto_radius_arcsec(mag: ArrayLike, *,
                       min_radius_arcsec: float = VETO_MIN_RADIUS_ARCSEC) -> NDArray[np.float64]:
    """Veto radius around a star: ``max(30 - 2 (mag - 15), min_radius_arcsec)`` arcsec.

    Parameters
    ----------
    mag : array_like
        Star magnitudes (AB).
    min_radius_arcsec : float
        Lower clip (arcsec); the original formula reaches 0 at mag 30.

    Returns
    -------
    numpy.ndarray
        Radii (arcsec), same shape as ``mag``.
    """
    m = np.asarray(mag, dtype=np.float64)
    return np.maximum(30.0 - 2.0 * (m - 15.0), float(min_radius_arcsec))


def make_veto_table(stars: Table, *,
                    min_radius_arcsec: float = VETO_MIN_RADIUS_ARCSEC) -> Table:
    """The veto table: the star list plus ``radius`` (arcsec) and ``vtype`` (6)."""
    veto = Table({k: np.asarray(stars[k]) for k in ("OBJID", "RA", "DEC", "mag", "magerr")})
    veto["radius"] = veto_radius_arcsec(veto["mag"], min_radius_arcsec=min_radius_arcsec)
    veto["vtype"] = np.full(len(veto), VETO_TYPE_STAR, dtype=np.int64)
    return veto


def apply_veto(ra: ArrayLike, dec: ArrayLike, veto_table: Table) -> NDArray[np.bool_]:
    """Flag positions inside any veto circle (a flag; nothing is removed).

    Parameters
    ----------
    ra, dec : array_like
        Detection positions (deg), shape (n,).
    veto_table : astropy.table.Table
        ``RA``, ``DEC`` (deg) and ``radius`` (arcsec), e.g. from :func:`read_veto_list`.

    Returns
    -------
    numpy.ndarray
        (n,) bool, True where the detection is within ``radius`` of a veto star.
    """
    ra = np.atleast_1d(np.asarray(ra, dtype=np.float64))
    dec = np.atleast_1d(np.asarray(dec, dtype=np.float64))
    if ra.shape != dec.shape:
        raise ValueError("ra and dec must have the same shape")
    flag = np.zeros(ra.shape, dtype=bool)
    if ra.size == 0 or len(veto_table) == 0:
        return flag
    tree = cKDTree(radec_to_unit(ra.ravel(), dec.ravel()))
    stars = radec_to_unit(np.asarray(veto_table["RA"], np.float64), np.asarray(veto_table["DEC"],
                                                                       np.float64))
    hits = tree.query_ball_point(stars, arcsec_to_chord(np.asarray(veto_table["radius"], np.float64)))
    idx = [i for h in hits for i in h]
    if idx:
        flag.ravel()[np.asarray(idx, dtype=np.int64)] = True
    return flag
