"""Template selection and CCD overlaps (the DAGMaker rules).

Exposure level (:func:`select_templates`): a template candidate must have the search's band,
a pointing within 2.2 deg of the search pointing, be a science exposure (not a calibration,
test or junk exposure), not be blacklisted, be at least TWINDOW days from the search, have
t_eff >= TEFF_CUT_band (when t_eff is known; unknown t_eff is accepted unless
ACCEPT_UNKNOWN_TEFF is false, and the selection lists such exposures) and a night within
MIN_NITE..MAX_NITE.

CCD level (:func:`ccd_overlaps`): which template CCDs overlap each search CCD, from the CCD
corners: the footprints are projected onto the tangent plane at the search exposure's
centre (gnomonic: great circles become straight lines, RA wrap-around disappears) and
intersected as convex polygons. The ``{expnum}.out`` corners file is read and written by
:mod:`desgw.io.corners`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from desgw.db.ingest import non_science_reason
from desgw.db.records import ExposureRecord
from desgw.errors import DesgwInputError, MissingFileError
from desgw.io.corners import CORNER_PIXELS, CCDCorners, corners_array
from desgw.util.sphere import angular_separation_deg, gnomonic_forward, mean_position

from .dagmaker_rc import BANDS, DagmakerConfig

__all__ = [
    "MAX_POINTING_SEPARATION_DEG",
    "RejectedTemplate",
    "TemplateSelection",
    "select_templates",
    "read_blacklist",
    "ccd_corners_from_wcs",
    "ccd_overlaps",
]

log = logging.getLogger(__name__)

#: Largest template-to-search pointing distance (deg), as the original DAGMaker.
MAX_POINTING_SEPARATION_DEG = 2.2

# Intersections smaller than this (deg^2, ~0.001 arcsec^2) are rounding noise of touching edges.
_AREA_EPS_DEG2 = 1e-10



# ----------------------------------------------------------------------------- selection
@dataclass(frozen=True)
class RejectedTemplate:
    """A template candidate that was not selected, with every rule it failed."""

    exposure: ExposureRecord
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class TemplateSelection:
    """Result of :func:`select_templates`.

    Attributes
    ----------
    search_expnum : int
        The search exposure.
    selected : tuple of ExposureRecord
        Accepted templates, in input order.
    rejected : tuple of RejectedTemplate
        The other candidates, in input order, with their reasons.
    unknown_teff : tuple of int
        Selected exposures whose t_eff was unknown (accepted by ACCEPT_UNKNOWN_TEFF).
    """

    search_expnum: int
    selected: tuple[ExposureRecord, ...]
    rejected: tuple[RejectedTemplate, ...]
    unknown_teff: tuple[int, ...]

    @property
    def selected_expnums(self) -> tuple[int, ...]:
        """Exposure numbers of the selected templates."""
        return tuple(e.expnum for e in self.selected)


def _reasons(search: ExposureRecord, cand: ExposureRecord, config: DagmakerConfig,
             blacklist: Iterable[int] | frozenset[int], max_sep: float) -> tuple[list[str], bool]:
    """Failed rules of one candidate, and whether its t_eff was unknown."""
    reasons: list[str] = []
    if cand.expnum == search.expnum:
        return ["the search exposure itself"], False
    if cand.band != search.band:
        reasons.append(f"band {cand.band} differs from the search band {search.band}")
    sep = float(angular_separation_deg(search.ra, search.dec, cand.ra, cand.dec))
    if not sep <= max_sep:
        reasons.append(f"pointing {sep:.3f} deg from the search (limit {max_sep} deg)")
    junk = non_science_reason(cand.obstype, cand.object, cand.propid)
    if junk is not None:
        reasons.append(junk)
    if cand.expnum in blacklist:
        reasons.append("blacklisted")
    dt = abs(cand.mjd - search.mjd)
    if dt < config.twindow:
        reasons.append(f"|dMJD| {dt:.2f} d is less than TWINDOW {config.twindow:g} d")
    unknown = cand.t_eff is None or not math.isfinite(cand.t_eff)
    cut = config.teff_cut(cand.band) if cand.band in BANDS else 0.0
    if unknown:
        if not config.accept_unknown_teff:
            reasons.append("t_eff unknown (ACCEPT_UNKNOWN_TEFF is false)")
    elif cand.t_eff is not None and cand.t_eff < cut:
        reasons.append(f"t_eff {cand.t_eff:.3f} below TEFF_CUT_{cand.band} {cut:g}")
    if not config.min_nite <= cand.nite <= config.max_nite:
        reasons.append(f"night {cand.nite} outside MIN_NITE..MAX_NITE "
                       f"({config.min_nite}..{config.max_nite})")
    return reasons, unknown


def select_templates(search: ExposureRecord, candidates: Sequence[ExposureRecord],
                     config: DagmakerConfig, *, blacklist: Iterable[int] = frozenset(),
                     max_separation_deg: float = MAX_POINTING_SEPARATION_DEG
                     ) -> TemplateSelection:
    """Choose template exposures for a search exposure by the DAGMaker rules.

    Parameters
    ----------
    search : ExposureRecord
        The search exposure.
    candidates : sequence of ExposureRecord
        Possible templates (e.g. :func:`desgw.db.exposures_near`); ``t_eff`` None = unknown.
    config : DagmakerConfig
        TWINDOW, TEFF_CUT_band, MIN_NITE, MAX_NITE and ACCEPT_UNKNOWN_TEFF are used.
    blacklist : iterable of int
        Exposure numbers never to use (see :func:`read_blacklist`).
    max_separation_deg : float
        Largest pointing distance (deg); 2.2 as the original.

    Returns
    -------
    TemplateSelection
        Every candidate is either selected or rejected with all the rules it failed.
    """
    banned = frozenset(int(e) for e in blacklist)
    selected: list[ExposureRecord] = []
    rejected: list[RejectedTemplate] = []
    unknown_teff: list[int] = []
    for cand in candidates:
        reasons, unknown = _reasons(search, cand, config, banned, max_separation_deg)
        if reasons:
            rejected.append(RejectedTemplate(cand, tuple(reasons)))
            continue
        selected.append(cand)
        if unknown:
            unknown_teff.append(cand.expnum)
            log.info("template %d for %d: t_eff unknown, accepted (ACCEPT_UNKNOWN_TEFF)",
                     cand.expnum, search.expnum)
    log.info("exposure %d: %d templates selected, %d rejected", search.expnum, len(selected),
             len(rejected))
    return TemplateSelection(search.expnum, tuple(selected), tuple(rejected),
                             tuple(unknown_teff))


def read_blacklist(path: str | os.PathLike[str]) -> frozenset[int]:
    """Exposure numbers from a blacklist file.

    One exposure number per line (the first whitespace-separated token; the rest of the
    line is a free comment); ``#`` starts a comment; blank lines are ignored.

    Raises
    ------
    MissingFileError
        If the file does not exist.
    DesgwInputError
        If a line does not start with an exposure number (names the line).
    """
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(p, None, "blacklist file not found")
    try:
        text_all = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DesgwInputError(p, None, f"not UTF-8 text (byte {exc.start}): not a blacklist "
                              "of exposure numbers") from None
    out: set[int] = set()
    for number, line in enumerate(text_all.splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        token = text.split()[0].replace(",", "")
        if not token.isdigit():
            raise DesgwInputError(p, None, f"line {number}: {token!r} is not an exposure number")
        out.add(int(token))
    return frozenset(out)


# ----------------------------------------------------------------------------- corners
def ccd_corners_from_wcs(wcs: Any) -> CCDCorners:
    """Corners of a CCD as the original computed them: its WCS at :data:`CORNER_PIXELS`.

    Parameters
    ----------
    wcs : astropy.wcs.WCS
        The CCD's celestial WCS (distortion included).

    Returns
    -------
    (ra[4], dec[4]) : tuple of tuples of float
        Degrees, in :data:`CORNER_PIXELS` order.
    """
    x = np.array([p[0] for p in CORNER_PIXELS], dtype=np.float64)
    y = np.array([p[1] for p in CORNER_PIXELS], dtype=np.float64)
    ra, dec = wcs.all_pix2world(x, y, 1)
    ra = np.asarray(ra, dtype=np.float64) % 360.0
    dec = np.asarray(dec, dtype=np.float64)
    return (tuple(float(v) for v in ra), tuple(float(v) for v in dec))  # type: ignore[return-value]



def _ccw(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """Vertices (N, 2) of the convex quadrilateral, counter-clockwise."""
    cx, cy = x.mean(), y.mean()
    order = np.argsort(np.arctan2(y - cy, x - cx))
    return np.stack([x[order], y[order]], axis=1)


def _area(poly: NDArray[np.float64]) -> float:
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _clip(subject: NDArray[np.float64], clip: NDArray[np.float64]) -> NDArray[np.float64]:
    """Intersection of two convex CCW polygons (Sutherland-Hodgman)."""
    out = list(map(tuple, subject))
    n = len(clip)
    for i in range(n):
        if not out:
            break
        ax, ay = clip[i]
        bx, by = clip[(i + 1) % n]
        ex, ey = bx - ax, by - ay
        inp, out = out, []
        for j in range(len(inp)):
            cur, prev = inp[j], inp[j - 1]
            # which side of the clip edge (>= 0: inside)
            s_cur = ex * (cur[1] - ay) - ey * (cur[0] - ax)
            s_prev = ex * (prev[1] - ay) - ey * (prev[0] - ax)
            if s_cur >= 0:
                if s_prev < 0:
                    t = s_prev / (s_prev - s_cur)
                    out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
                out.append(cur)
            elif s_prev >= 0:
                t = s_prev / (s_prev - s_cur)
                out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
    return np.asarray(out, dtype=np.float64).reshape(-1, 2)


def ccd_overlaps(search_corners: Mapping[int, Any], template_corners: Mapping[int, Any], *,
                 min_overlap_deg2: float = 0.0) -> dict[int, list[int]]:
    """Template CCDs whose footprint overlaps each search CCD.

    Parameters
    ----------
    search_corners, template_corners : mapping of int to (ra[4], dec[4])
        CCD number -> corner RA and Dec (deg), e.g. from :func:`read_corners_out`. The corner
        order does not matter (the footprint is the convex quadrilateral through them).
    min_overlap_deg2 : float
        A pair overlaps when the intersection area exceeds this (deg^2, tangent plane);
        the default 0 counts any overlap of positive area (touching edges, and rounding
        slivers below 1e-10 deg^2, do not count).

    Returns
    -------
    dict of int to list of int
        Every search CCD (sorted) -> the overlapping template CCDs (sorted; may be empty).
    """
    search = {int(k): corners_array(v, f"search CCD {k}") for k, v in search_corners.items()}
    template = {int(k): corners_array(v, f"template CCD {k}") for k, v in template_corners.items()}
    result: dict[int, list[int]] = {k: [] for k in sorted(search)}
    if not search or not template:
        return result
    ra0, dec0 = mean_position(np.concatenate([c[0] for c in search.values()]),
                           np.concatenate([c[1] for c in search.values()]))

    def project(corners: dict[int, NDArray[np.float64]]) -> dict[int, NDArray[np.float64]]:
        polys = {}
        for ccd, c in corners.items():
            # front: within ~78 deg, far beyond any DECam overlap
            x, y, front = gnomonic_forward(c[0], c[1], ra0, dec0, min_cos=0.2)
            if front.all():
                polys[ccd] = _ccw(x, y)
        return polys

    s_poly, t_poly = project(search), project(template)
    if not t_poly:
        return result
    s_ids, t_ids = sorted(s_poly), sorted(t_poly)
    s_cen = np.array([s_poly[k].mean(axis=0) for k in s_ids])
    t_cen = np.array([t_poly[k].mean(axis=0) for k in t_ids])
    s_rad = np.array([np.hypot(*(s_poly[k] - s_cen[i]).T).max() for i, k in enumerate(s_ids)])
    t_rad = np.array([np.hypot(*(t_poly[k] - t_cen[i]).T).max() for i, k in enumerate(t_ids)])
    dist = np.hypot(s_cen[:, None, 0] - t_cen[None, :, 0], s_cen[:, None, 1] - t_cen[None, :, 1])
    near = dist < s_rad[:, None] + t_rad[None, :]
    for i, j in zip(*np.nonzero(near)):
        area = _area(_clip(t_poly[t_ids[j]], s_poly[s_ids[i]]))
        if area > min_overlap_deg2 + _AREA_EPS_DEG2:
            result[s_ids[i]].append(t_ids[j])
    return result
