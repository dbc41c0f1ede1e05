"""Zeropoints for the difference imaging of a CCD whose epochs lack one (a degraded mode).

The subtraction needs only the flux scale of each template relative to the search. When the
single-epoch processing could not measure an absolute zeropoint (a sparse field: no usable
Gaia star, e.g. the legacypipe testcase6 cut-outs around a saturated star), the scale is
measured from the sources that both epochs' catalogs hold
(:func:`desgw.diff.relscale.relative_flux_scale`), and :func:`resolve_zeropoints` fills the
missing zeropoints:

* a template without one gets ``zp_search - dmag`` (``dmag = 2.5 log10(F_search /
  F_template)``), with its error;
* a search CCD without one gets ``zp_template + dmag`` from the template with a zeropoint
  whose scale is best measured (calibrated through the template);
* when no epoch has an absolute zeropoint, or when no flux ratio can be measured (testcase6
  g and r: the epochs share only a saturated star), a CCD left without one gets its nominal
  zeropoint, predicted from DECam's throughput, exposure time and airmass
  (:func:`desgw.se.nominal_zp.nominal_ccd_zeropoint`, error
  :data:`~desgw.se.nominal_zp.NOMINAL_ZP_ERROR` = 0.15 mag): the last resort. A flux ratio,
  when measured, still sets the template's scale relative to the search;
* only when not even that can be computed (a band without a nominal zeropoint, no airmass)
  does the search get :data:`INSTRUMENTAL_ZEROPOINT` (``m = 25 - 2.5 log10(F / e-)``,
  subtraction right, magnitudes instrumental), and a template without a relative scale stays
  without a zeropoint (the difference imaging rejects it).

So the order of preference is: the CCD's own (Gaia) zeropoint, a relative flux ratio to an
epoch with one, the nominal zeropoint. Every derived value is flagged (``zeropoint_relative``,
``zeropoint_nominal``; ``magnitudes_uncalibrated`` for the instrumental case) and described in
:class:`ZeropointResolution` (``mode``, ``search_source`` and each template's ``source``,
written into the diff completion marker, and ``ZPMODE``/``ZPSOURCE`` in the candidate table
header, by :mod:`desgw.workflow.diff_ccd`). A CCD given a derived zeropoint whose single-epoch
QC failed only for lack of calibration stars (the reasons in :data:`CALIBRATION_QC_REASONS`)
is treated as passing it: its pixels, mask, weight and PSF are usable; a QC failure for any
other reason (seeing, sky...) still rejects it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from desgw.diff.pipeline_types import CCDProducts
from desgw.diff.relscale import RelativeScale, RelativeScaleError, relative_flux_scale
from desgw.se.nominal_zp import NOMINAL_ZP_ERROR, NominalZeropointError, nominal_ccd_zeropoint

__all__ = ["CALIBRATION_QC_REASONS", "INSTRUMENTAL_ZEROPOINT", "ZeropointResolution",
           "qc_reasons", "resolve_zeropoints"]

log = logging.getLogger(__name__)

#: Zeropoint given to a search CCD when no epoch has an absolute one (the SE catalogs'
#: ``MAG_*`` zeropoint): magnitudes ``25 - 2.5 log10(F / e-)``, flagged uncalibrated.
INSTRUMENTAL_ZEROPOINT = 25.0

#: Beginnings of the single-epoch QC reasons that only say calibration stars were missing.
CALIBRATION_QC_REASONS: tuple[str, ...] = (
    "too few stars", "astrometric rms not measured", "zeropoint not measured",
    "t_eff not measured", "degraded psf", "degraded wcs", "degraded zeropoint",
)


@dataclass
class ZeropointResolution:
    """How the zeropoints of one difference-imaging run were obtained.

    Attributes
    ----------
    mode : str
        ``"absolute"``: every epoch had its own; ``"relative"``: some came from a relative
        scale, on an absolute scale through another epoch; ``"nominal"``: some (the search's
        when no epoch had one) are nominal zeropoints; ``"instrumental"``: no epoch had one
        and no nominal one could be computed, the search has :data:`INSTRUMENTAL_ZEROPOINT`.
    search_zp : float
        The search zeropoint used (AB mag of 1 e-; instrumental in that mode).
    search_source : str
        ``"se"``, ``"template EXPNUM/CCD"``, ``"nominal"`` or ``"instrumental"``.
    search_zp_err : float
        Error of a nominal search zeropoint (mag); NaN otherwise.
    templates : list of dict
        Per template CCD whose zeropoint was derived or could not be: ``expnum``,
        ``ccdnum``, ``zp`` (None when none), ``source`` (``"relative"``: ``dmag``,
        ``dmag_err``, ``n_used``, ``n_matched``; ``"nominal"``: ``zp_err`` and the
        ``reason`` no relative scale was measured), or only a ``reason``.
    flags : list of str
    """

    mode: str = "absolute"
    search_zp: float = math.nan
    search_source: str = "se"
    search_zp_err: float = math.nan
    templates: list[dict[str, Any]] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"mode": self.mode, "search_zp": _finite(self.search_zp),
                "search_source": self.search_source,
                "search_zp_err": _finite(self.search_zp_err), "templates": self.templates,
                "flags": list(self.flags)}


def _finite(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) else None


def qc_reasons(path: str | Path | None) -> list[str]:
    """The single-epoch QC reasons of a CCD (``..._qc.json``; empty when absent or
    unreadable)."""
    if path is None or not Path(path).is_file():
        return []
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        return [str(r) for r in doc["qc"]["reasons"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _only_calibration(reasons: Sequence[str]) -> bool:
    return bool(reasons) and all(str(r).startswith(CALIBRATION_QC_REASONS) for r in reasons)


def _nominal(p: CCDProducts) -> tuple[float, str]:
    """The nominal zeropoint of a CCD (:func:`desgw.se.nominal_zp.nominal_ccd_zeropoint`),
    or NaN and why not."""
    try:
        return nominal_ccd_zeropoint(p.band, p.ccdnum, p.exptime, p.airmass).zp, ""
    except NominalZeropointError as exc:
        return math.nan, f"no nominal zeropoint: {exc}"


def resolve_zeropoints(search: CCDProducts, templates: Sequence[CCDProducts], *,
                       qc: Mapping[tuple[int, int], Sequence[str]] | None = None
                       ) -> tuple[CCDProducts, list[CCDProducts], ZeropointResolution]:
    """Fill missing zeropoints from relative scales, else nominal ones (module docstring).

    Parameters
    ----------
    search : CCDProducts
        The search CCD (its ``catalog`` is needed when a zeropoint is missing; its ``band``,
        ``ccdnum``, ``exptime`` and ``airmass`` for a nominal zeropoint).
    templates : sequence of CCDProducts
    qc : mapping of (expnum, ccdnum) to reasons, optional
        Single-epoch QC reasons of the CCDs (:func:`qc_reasons`), to tell a QC failure for
        lack of calibration stars from others.

    Returns
    -------
    search, templates, resolution
        New :class:`CCDProducts` (the inputs are not modified) and what was done. The search
        zeropoint stays NaN only when it has no relative scale to a template with a
        zeropoint, no nominal zeropoint and no relative scale to any template.
    """
    res = ZeropointResolution(search_zp=float(search.zp))
    templates = list(templates)
    if math.isfinite(search.zp) and all(math.isfinite(t.zp) for t in templates):
        return search, templates, res
    qc = {} if qc is None else qc
    scales: dict[int, RelativeScale] = {}
    why: dict[int, str] = {}
    for k, t in enumerate(templates):
        if math.isfinite(search.zp) and math.isfinite(t.zp):
            continue
        if search.catalog is None or t.catalog is None:
            why[k] = "no catalog to measure a relative scale"
            continue
        try:
            scales[k] = relative_flux_scale(search.catalog, t.catalog)
        except RelativeScaleError as exc:
            why[k] = f"relative scale: {exc}"
    search_zp, source, search_err = float(search.zp), "se", math.nan
    used_relative = used_nominal = instrumental = False
    if not math.isfinite(search_zp):
        refs = [k for k in scales if math.isfinite(templates[k].zp)]
        nominal, nominal_why = _nominal(search)
        if refs:
            k = min(refs, key=lambda i: scales[i].dmag_err)
            search_zp = float(templates[k].zp + scales[k].dmag)
            source = f"template {templates[k].expnum}/{templates[k].ccdnum}"
            used_relative = True
            res.templates.append(_entry(templates[k], templates[k].zp, scales[k],
                                        role="search zeropoint from it"))
        elif math.isfinite(nominal):
            search_zp, source, search_err = nominal, "nominal", NOMINAL_ZP_ERROR
            used_nominal = True
        elif scales:
            search_zp, source, instrumental = INSTRUMENTAL_ZEROPOINT, "instrumental", True
        else:
            res.mode = "relative"
            res.search_source = "none"
            res.templates = [{"expnum": templates[k].expnum, "ccdnum": templates[k].ccdnum,
                              "zp": None, "reason": why[k]} for k in sorted(why)]
            res.templates.append({"expnum": int(search.expnum), "ccdnum": int(search.ccdnum),
                                  "zp": None, "reason": f"search: {nominal_why}"})
            res.flags = ["zeropoint_relative_failed"]
            log.warning("search %d CCD %d: no zeropoint, no relative scale to any template "
                        "and no nominal one: %s", search.expnum, search.ccdnum,
                        "; ".join(e["reason"] for e in res.templates))
            return search, templates, res
        search = _with_zp(search, search_zp, qc)
    out: list[CCDProducts] = []
    for k, t in enumerate(templates):
        if math.isfinite(t.zp):
            out.append(t)
        elif k in scales:
            zp = search_zp - scales[k].dmag
            out.append(_with_zp(t, zp, qc))
            used_relative = True
            res.templates.append(_entry(t, zp, scales[k], role="zeropoint from the search"))
        else:
            zp, nominal_why = _nominal(t)
            if math.isfinite(zp) and not instrumental:
                out.append(_with_zp(t, zp, qc))
                used_nominal = True
                res.templates.append({"expnum": int(t.expnum), "ccdnum": int(t.ccdnum),
                                      "zp": float(zp), "zp_err": NOMINAL_ZP_ERROR,
                                      "source": "nominal",
                                      "role": "nominal zeropoint (no relative scale)",
                                      "reason": why.get(k, "no zeropoint")})
            else:
                out.append(t)
                reason = why.get(k, "no zeropoint")
                res.templates.append({"expnum": int(t.expnum), "ccdnum": int(t.ccdnum),
                                      "zp": None, "reason": "; ".join(
                                          r for r in (reason, nominal_why) if r)})
    res.mode = "instrumental" if instrumental else "nominal" if used_nominal else "relative"
    res.search_zp, res.search_source, res.search_zp_err = search_zp, source, search_err
    res.flags = ((["zeropoint_relative"] if used_relative or instrumental else [])
                 + (["zeropoint_nominal"] if used_nominal else [])
                 + (["magnitudes_uncalibrated"] if instrumental else []))
    log.warning("search %d CCD %d: zeropoints not all measured (%s; search %.4f from %s)",
                search.expnum, search.ccdnum, res.mode, search_zp, source)
    return search, out, res


def _with_zp(p: CCDProducts, zp: float, qc: Mapping[tuple[int, int], Sequence[str]]
             ) -> CCDProducts:
    passed = p.qc_passed or _only_calibration(qc.get((int(p.expnum), int(p.ccdnum)), ()))
    return replace(p, zp=float(zp), qc_passed=bool(passed))


def _entry(t: CCDProducts, zp: float, s: RelativeScale, *, role: str) -> dict[str, Any]:
    return {"expnum": int(t.expnum), "ccdnum": int(t.ccdnum), "zp": _finite(zp),
            "dmag": float(s.dmag), "dmag_err": float(s.dmag_err), "n_used": int(s.n_used),
            "n_matched": int(s.n_matched), "chi2_dof": _finite(s.chi2_dof), "role": role,
            "source": "relative",
            "ratio": float(np.float64(s.ratio))}
