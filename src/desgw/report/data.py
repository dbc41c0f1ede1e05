"""What the run report shows, read from the products on disk (nothing is reprocessed).

:func:`collect_report` reads, for one search exposure and its templates:

* the engine's run summary (``out_root/logs/run_*.json``): what ran, was skipped, failed;
* per CCD of every exposure, the SE ``_qc.json`` (FWHM, astrometric rms, t_eff, QC) and the
  calibrated zeropoint of ``Zero_D{expnum}_{ccd}_r{R}p{P}.csv`` (the ``_qc.json`` one when the
  exposure was not calibrated);
* per search CCD, the difference-imaging products: candidates (``_cands.fits``), fakes
  (``_fakes.fits``), efficiency (``_efficiency.json``) and the stamps of the candidates shown
  (``_stamps.fits``);
* optionally the simulator's truth (:func:`desgw.sim.load_truth`): true zeropoint and seeing
  per CCD, the simulated transients, variables and moving objects the candidates are matched
  to (within :data:`TRUTH_MATCH_ARCSEC`).

The result is a tree of small frozen dataclasses (:class:`ReportData`); the stamp pixels of the
candidates shown are kept as arrays for the writer to encode.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from desgw.errors import DesgwError
from desgw.io.product_paths import (
    ccd_product_paths,
    diff_product_paths,
    find_exposure_dir,
)

__all__ = [
    "TRUTH_MATCH_ARCSEC",
    "CCDRow",
    "ReportCandidateRow",
    "EfficiencySummary",
    "ReportData",
    "TransientRow",
    "collect_report",
    "rank_candidates",
]

log = logging.getLogger(__name__)

#: Radius of the candidate - simulated object match (arcsec).
TRUTH_MATCH_ARCSEC = 1.0
_KIND_NAMES = {0: "star", 1: "galaxy", 2: "transient", 3: "variable", 4: "moving"}


@dataclass(frozen=True)
class CCDRow:
    """One processed (or failed) CCD of one exposure.

    Attributes
    ----------
    expnum, ccdnum : int
    role : str
        ``"search"`` or ``"template"``.
    status : str
        SE status: ``"ok"``, or the failed/blocked task's status and reason.
    zp, zp_err : float
        Calibrated zeropoint of the total flux in e- (AB mag) and its error.
    zp_per_s : float
        Zeropoint for 1 e-/s (``zp - 2.5 log10(exptime)``, mag).
    fwhm_arcsec, astrometric_rms_arcsec, t_eff : float
    n_objects : int
    qc_passed : bool or None
        None when quality was measured but not assessed (templates).
    qc_reasons : tuple of str
    n_candidates, n_fakes, n_fakes_recovered : int
        Search CCDs: difference-imaging numbers (-1 when no difference products).
    m50, ideal_limit : float
        Search CCDs: 50 % efficiency magnitude of the fakes, ideal 5-sigma limit (AB).
    diff_status : str
        Search CCDs: ``"ok"``, ``"skipped"`` or the failure; templates ``""``.
    templates_used : tuple of (int, int)
        Search CCDs: the template (exposure, CCD) pairs in the coadd.
    templates_rejected : tuple of str
        Search CCDs: ``"expnum/ccd: reasons"`` of the template CCDs the difference imaging
        left out.
    truth_zp_per_s, truth_fwhm_arcsec : float
        The simulator's values (NaN without truth).
    """

    expnum: int
    ccdnum: int
    role: str
    status: str = "ok"
    zp: float = math.nan
    zp_err: float = math.nan
    zp_per_s: float = math.nan
    fwhm_arcsec: float = math.nan
    astrometric_rms_arcsec: float = math.nan
    t_eff: float = math.nan
    n_objects: int = 0
    qc_passed: bool | None = None
    qc_reasons: tuple[str, ...] = ()
    n_candidates: int = -1
    n_fakes: int = -1
    n_fakes_recovered: int = -1
    m50: float = math.nan
    ideal_limit: float = math.nan
    diff_status: str = ""
    templates_used: tuple[tuple[int, int], ...] = ()
    templates_rejected: tuple[str, ...] = ()
    truth_zp_per_s: float = math.nan
    truth_fwhm_arcsec: float = math.nan


@dataclass(frozen=True)
class ReportCandidateRow:
    """One candidate of the top list.

    Attributes
    ----------
    expnum, ccdnum, cand_id : int
        Search exposure, CCD and the candidate's id in its ``_cands.fits``.
    ra, dec : float
        Degrees.
    x, y : float
        0-based pixel position on the search CCD.
    mag, magerr, snr, real_bogus : float
    veto : bool
        Inside the star veto list (makestarcat).
    dipole : bool
    truth_kind : str
        Kind of the simulated object within :data:`TRUTH_MATCH_ARCSEC` (``"transient"``,
        ``"variable"``, ``"moving"``, ``"star"``, ``"galaxy"``), ``"none"``, or ``""`` without
        truth.
    truth_id : int
        Its id (-1 when none).
    truth_mag : float
        Its true magnitude in the search exposure.
    stamps : numpy.ndarray or None
        (3, size, size) search, template, difference stamps (float32).
    stamp_valid : numpy.ndarray or None
        (3, size, size) bool.
    """

    expnum: int
    ccdnum: int
    cand_id: int
    ra: float
    dec: float
    x: float
    y: float
    mag: float
    magerr: float
    snr: float
    real_bogus: float
    veto: bool
    dipole: bool
    truth_kind: str = ""
    truth_id: int = -1
    truth_mag: float = math.nan
    stamps: Any = field(default=None, repr=False, compare=False)
    stamp_valid: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class TransientRow:
    """A simulated transient on a search CCD and whether a candidate found it.

    Attributes
    ----------
    truth_id, ccdnum : int
    ra, dec, mag : float
        True position (deg) and magnitude in the search exposure (AB).
    found : bool
    cand_id : int
        The matching candidate (-1 when not found).
    real_bogus, snr, sep_arcsec : float
        Of the matching candidate (NaN when not found).
    ideal_limit : float
        The CCD's ideal 5-sigma limit (AB).
    """

    truth_id: int
    ccdnum: int
    ra: float
    dec: float
    mag: float
    found: bool
    cand_id: int = -1
    real_bogus: float = math.nan
    snr: float = math.nan
    sep_arcsec: float = math.nan
    ideal_limit: float = math.nan


@dataclass(frozen=True)
class EfficiencySummary:
    """Fakes of all search CCDs together and per CCD.

    Attributes
    ----------
    mags : numpy.ndarray
        (n,) injected magnitudes of every fake (AB).
    recovered : numpy.ndarray
        (n,) bool.
    per_ccd : dict of int to dict
        Each CCD's ``_efficiency.json`` document.
    ideal_limit : float
        Median over CCDs of the ideal 5-sigma limit (AB).
    """

    mags: Any = field(repr=False)
    recovered: Any = field(repr=False)
    per_ccd: dict[int, dict[str, Any]] = field(default_factory=dict)
    ideal_limit: float = math.nan


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows.

    Attributes
    ----------
    search_expnum : int
    template_expnums : tuple of int
    band : str
    ccds : tuple of CCDRow
        Every exposure's CCDs (search first).
    candidates : tuple of ReportCandidateRow
        The top candidates, best first.
    n_candidates_total : int
        Positive, non-fake candidates over all search CCDs.
    efficiency : EfficiencySummary
    transients : tuple of TransientRow
        Empty without truth.
    run : dict
        The engine's run summary (empty when not found).
    record : dict
        The demo's ``demo.json`` (parameters, stage timings; empty when not a demo).
    has_truth : bool
    database : dict
        What the processing database holds for the run (empty without one): ``url``
        (password masked), ``exposures``, ``ccd_products``, ``detections`` (of the search
        exposure), ``candidates`` and ``real_candidates`` (not fakes).
    """

    search_expnum: int
    template_expnums: tuple[int, ...]
    band: str
    ccds: tuple[CCDRow, ...]
    candidates: tuple[ReportCandidateRow, ...]
    n_candidates_total: int
    efficiency: EfficiencySummary
    transients: tuple[TransientRow, ...] = ()
    run: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)
    has_truth: bool = False
    database: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- helpers
def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def _get(d: Mapping[str, Any] | None, *keys: str) -> Any:
    cur: Any = d
    for k in keys:
        if not isinstance(cur, Mapping) or k not in cur:
            return None
        cur = cur[k]
    return cur


def _sep_arcsec(ra1: Any, dec1: Any, ra2: Any, dec2: Any) -> np.ndarray:
    from desgw.util.sphere import ARCSEC_PER_DEG, angular_separation_deg

    return np.asarray(angular_separation_deg(ra1, dec1, ra2, dec2)) * ARCSEC_PER_DEG


def rank_candidates(table: Any) -> np.ndarray:
    """Indices of the positive, non-fake candidates of a ``_cands`` table, best first.

    Order: not vetoed before vetoed, then real/bogus score (high first), then SNR.
    """
    c = table
    if len(c) == 0:
        return np.zeros(0, dtype=np.intp)
    keep = np.flatnonzero(~np.asarray(c["negative"], bool) & ~np.asarray(c["is_fake"], bool))
    rb = np.nan_to_num(np.asarray(c["real_bogus"], np.float64)[keep], nan=-1.0)
    snr = np.nan_to_num(np.asarray(c["snr"], np.float64)[keep], nan=-1.0)
    veto = np.asarray(c["veto"], bool)[keep]
    order = np.lexsort((-snr, -rb, veto))
    return keep[order]


def _run_statuses(run: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    return {str(t["task_id"]): (str(t["status"]), str(t.get("reason") or ""))
            for t in run.get("tasks", [])}


def _latest_run_summary(out_root: Path) -> dict[str, Any]:
    files = sorted((out_root / "logs").glob("run_*.json"), key=lambda p: p.stat().st_mtime)
    for p in reversed(files):
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    return {}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _database_counts(url: str, expnums: Sequence[int], search_expnum: int
                     ) -> dict[str, Any]:
    from desgw.db import (
        DatabaseError,
        connect,
        get_candidates,
        get_ccd_products,
        get_detections,
        get_exposure,
        redact_url,
    )

    try:
        with connect(url, create=False, busy_timeout_s=10.0) as db:
            return {"url": redact_url(url),
                    "exposures": sum(get_exposure(db, int(e)) is not None for e in expnums),
                    "ccd_products": sum(len(get_ccd_products(db, int(e))) for e in expnums),
                    "detections": len(get_detections(db, expnum=int(search_expnum))),
                    "candidates": len(get_candidates(db)),
                    "real_candidates": len(get_candidates(db, include_fakes=False))}
    except DatabaseError as exc:
        log.warning("no database summary: %s", exc)
        return {}


def _calibrated_zp(directory: Path, expnum: int, ccd: int, rnum: int, pnum: int
                   ) -> tuple[float, float]:
    from desgw.io.naming import zero_csv_name
    from desgw.io.products import read_csv

    p = directory / zero_csv_name(expnum, ccd, rnum, pnum)
    if not p.is_file():
        return math.nan, math.nan
    try:
        t = read_csv(p)
        return _num(t["MAG_ZERO"][0]), _num(t["MAG_ZERO_ERR"][0])
    except (DesgwError, KeyError, IndexError) as exc:
        log.warning("%s: %s", p, exc)
        return math.nan, math.nan


def _exposure_ccds(directory: Path, expnum: int, band: str, rnum: int, pnum: int) -> list[int]:
    pattern = f"D{int(expnum):08d}_{band}_*_r{rnum}p{pnum}_qc.json"
    out = []
    for p in directory.glob(pattern):
        part = p.name.split("_")[2]
        if part.isdigit():
            out.append(int(part))
    return sorted(out)


# ----------------------------------------------------------------------------- collecting
def _ccd_rows(out_root: Path, expnum: int, role: str, band: str, rnum: int, pnum: int,
              season: int, ccds: Sequence[int] | None, statuses: Mapping[str, tuple[str, str]],
              truth: Any) -> tuple[list[CCDRow], dict[int, Path]]:
    """CCD rows of one exposure and, for the search, each CCD's difference folder."""
    from desgw.engine.graph import diff_task_id, se_task_id

    try:
        directory = find_exposure_dir(out_root, expnum, rnum, pnum)
    except DesgwError:
        directory = None
    found = _exposure_ccds(directory, expnum, band, rnum, pnum) if directory else []
    wanted = sorted(set(found) | {int(c) for c in (ccds or ())} |
                    {int(t.split("-")[2]) for t in statuses
                     if t.startswith(f"se-{int(expnum)}-")})
    rows: list[CCDRow] = []
    diff_dirs: dict[int, Path] = {}
    for c in wanted:
        st, why = statuses.get(se_task_id(expnum, c), ("", ""))
        qc = None
        if directory is not None:
            qc = _read_json(ccd_product_paths(directory, expnum, band, c, rnum, pnum).qc)
        status = "ok" if qc is not None else (f"{st}: {why}" if st else "no products")
        kw: dict[str, Any] = {}
        if qc is not None:
            assert directory is not None
            zp, zp_err = _calibrated_zp(directory, expnum, c, rnum, pnum)
            if not math.isfinite(zp):
                zp, zp_err = _num(_get(qc, "zeropoint", "zp")), _num(_get(qc, "zeropoint",
                                                                         "zp_err"))
            m = _get(qc, "qc", "metrics") or {}
            exptime = _num(m.get("exptime"))
            passed = _get(qc, "qc", "passed")
            kw = {"zp": zp, "zp_err": zp_err,
                      "zp_per_s": zp - 2.5 * math.log10(exptime) if exptime > 0 else math.nan,
                      "fwhm_arcsec": _num(m.get("fwhm_arcsec")),
                      "astrometric_rms_arcsec": _num(_get(qc, "astrometry", "rms_arcsec")),
                      "t_eff": _num(_get(m, "teff", "teff")), "n_objects": int(qc.get("n_objects", 0)),
                      "qc_passed": None if passed is None else bool(passed),
                      "qc_reasons": tuple(str(r) for r in (_get(qc, "qc", "reasons") or ()))}
        if truth is not None:
            try:
                tr = truth.ccd_row(expnum, c)
                kw.update(truth_zp_per_s=_num(tr["zeropoint"]),
                          truth_fwhm_arcsec=_num(tr["fwhm_arcsec"]))
            except KeyError:
                pass
        if role == "search":
            dst, dwhy = statuses.get(diff_task_id(expnum, c), ("", ""))
            kw["diff_status"] = "ok" if dst == "done" else dst or "not run"
            if dst in ("failed", "blocked"):
                kw["diff_status"] = f"{dst}: {dwhy}"
            if directory is not None:
                paths = diff_product_paths(directory, expnum, band, c, rnum, pnum, season)
                done = _read_json(paths.done)
                if done is not None and done.get("ok"):
                    diff_dirs[c] = paths.directory
                    if dst in ("", "skipped"):
                        kw["diff_status"] = "ok"
                    kw.update(n_candidates=int(done.get("n_candidates", 0)),
                              n_fakes=int(done.get("n_fakes", 0)),
                              n_fakes_recovered=int(done.get("n_fakes_recovered", 0)),
                              m50=_num(_get(done, "efficiency", "m50")),
                              ideal_limit=_num(done.get("ideal_limit_mag")),
                              templates_used=tuple((int(a), int(b)) for a, b in
                                                   done.get("templates_used", [])),
                              templates_rejected=tuple(
                                  f"{r.get('expnum')}/{r.get('ccdnum')}: "
                                  f"{', '.join(map(str, r.get('reasons', [])))}"
                                  for r in done.get("templates_rejected", [])))
        rows.append(CCDRow(expnum=int(expnum), ccdnum=int(c), role=role, status=status, **kw))
    return rows, diff_dirs


def _truth_match(truth: Any, expnum: int, ccd: int, ra: np.ndarray, dec: np.ndarray
                 ) -> list[tuple[str, int, float, float]]:
    """(kind, id, true mag, separation) of each position's simulated object, preferring
    transients, variables and moving objects over stars and galaxies."""
    objs = truth.objects_on_ccd(expnum, ccd)
    out = []
    o_ra = np.asarray(objs["ra"], np.float64)
    o_dec = np.asarray(objs["dec"], np.float64)
    kinds = np.asarray(objs["kind"], int)
    for a, d in zip(ra, dec):
        if len(objs) == 0:
            out.append(("none", -1, math.nan, math.nan))
            continue
        sep = _sep_arcsec(a, d, o_ra, o_dec)
        near = np.flatnonzero(sep <= TRUTH_MATCH_ARCSEC)
        if near.size == 0:
            out.append(("none", -1, math.nan, math.nan))
            continue
        special = near[kinds[near] >= 2]
        pick = special if special.size else near
        j = int(pick[np.argmin(sep[pick])])
        out.append((_KIND_NAMES.get(int(kinds[j]), str(kinds[j])), int(objs["id"][j]),
                    float(objs["mag"][j]), float(sep[j])))
    return out


def collect_report(out_root: str | os.PathLike[str], *, search_expnum: int,
                   template_expnums: Sequence[int], band: str, rnum: int, pnum: int,
                   season: int, ccds: Sequence[int] | None = None, top_n: int = 12,
                   run_summary: str | os.PathLike[str] | None = None,
                   truth_dir: str | os.PathLike[str] | None = None,
                   record: Mapping[str, Any] | None = None,
                   db_url: str | None = None) -> ReportData:
    """Read what the report shows (module docstring).

    Parameters
    ----------
    out_root : path
        Product root of the run.
    search_expnum, template_expnums, band, rnum, pnum, season
        The run's exposures, band, SE version ``r{R}p{P}`` and difference season.
    ccds : sequence of int, optional
        Search CCDs of the run (CCDs with products are found anyway; these are listed even
        when they have none).
    top_n : int
        Candidates kept (best first, :func:`rank_candidates` over all CCDs).
    run_summary : path, optional
        The engine's run summary (default: the newest ``out_root/logs/run_*.json``).
    truth_dir : path, optional
        Simulated night (``OUTDIR`` of :func:`desgw.sim.night.simulate_night`) for the truth
        comparison.
    record : mapping, optional
        Run parameters and stage timings to show (the demo's ``demo.json``).
    db_url : str, optional
        The processing database, for a count of what it holds.

    Returns
    -------
    ReportData
    """
    from desgw.diff.stamps import read_stamps_fits
    from desgw.io.products import read_fits_table

    root = Path(out_root)
    run: dict[str, Any] = {}
    if run_summary is not None and Path(run_summary).is_file():
        run = _read_json(Path(run_summary)) or {}
    if not run:
        run = _latest_run_summary(root)
    statuses = _run_statuses(run)
    truth = None
    if truth_dir is not None:
        from desgw.sim import load_truth

        try:
            truth = load_truth(truth_dir)
        except DesgwError as exc:
            log.warning("no truth comparison: %s", exc)

    rows, diff_dirs = _ccd_rows(root, search_expnum, "search", band, rnum, pnum, season, ccds,
                                statuses, truth)
    for t in template_expnums:
        trows, _ = _ccd_rows(root, int(t), "template", band, rnum, pnum, season, None,
                             statuses, truth)
        rows += trows
    ideal = {r.ccdnum: r.ideal_limit for r in rows if r.role == "search"}

    # candidates, fakes, efficiency
    pool: list[tuple[float, float, float, int, int]] = []  # (veto, -rb, -snr, ccd, row)
    tables: dict[int, Any] = {}
    mags, rec = [], []
    per_ccd: dict[int, dict[str, Any]] = {}
    transients: list[TransientRow] = []
    n_total = 0
    for c, d in sorted(diff_dirs.items()):
        paths = diff_product_paths(d.parent.parent, search_expnum, band, c, rnum, pnum, season)
        try:
            cands = read_fits_table(paths.candidates_fits)
        except DesgwError as exc:
            log.warning("CCD %d: %s", c, exc)
            continue
        tables[c] = cands
        order = rank_candidates(cands)
        n_total += len(order)
        for i in order:
            r = cands[int(i)]
            pool.append((float(bool(r["veto"])), -np.nan_to_num(float(r["real_bogus"]), nan=-1),
                         -np.nan_to_num(float(r["snr"]), nan=-1), c, int(i)))
        if paths.fakes.is_file():
            f = read_fits_table(paths.fakes)
            mags.append(np.asarray(f["mag"], np.float64))
            rec.append(np.asarray(f["recovered"], bool))
        doc = _read_json(paths.efficiency)
        if doc is not None:
            per_ccd[c] = doc
        if truth is not None:
            objs = truth.objects_on_ccd(search_expnum, c)
            tr = objs[np.asarray(objs["kind"], int) == 2]
            pos = order  # positive, non-fake candidates
            c_ra = np.asarray(cands["ra"], np.float64)[pos]
            c_dec = np.asarray(cands["dec"], np.float64)[pos]
            for o in tr:
                sep = _sep_arcsec(float(o["ra"]), float(o["dec"]), c_ra, c_dec) \
                    if len(pos) else np.zeros(0)
                k = int(np.argmin(sep)) if sep.size else -1
                if k >= 0 and sep[k] <= TRUTH_MATCH_ARCSEC:
                    cr = cands[int(pos[k])]
                    transients.append(TransientRow(
                        truth_id=int(o["id"]), ccdnum=c, ra=float(o["ra"]), dec=float(o["dec"]),
                        mag=float(o["mag"]), found=True, cand_id=int(cr["id"]),
                        real_bogus=float(cr["real_bogus"]), snr=float(cr["snr"]),
                        sep_arcsec=float(sep[k]), ideal_limit=ideal.get(c, math.nan)))
                else:
                    transients.append(TransientRow(
                        truth_id=int(o["id"]), ccdnum=c, ra=float(o["ra"]), dec=float(o["dec"]),
                        mag=float(o["mag"]), found=False, ideal_limit=ideal.get(c, math.nan)))

    pool.sort()
    top = pool[:max(0, int(top_n))]
    stamps_by_ccd: dict[int, Any] = {}
    candidates: list[ReportCandidateRow] = []
    for _, _, _, c, i in top:
        r = tables[c][i]
        st = None
        if c not in stamps_by_ccd:
            p = diff_product_paths(diff_dirs[c].parent.parent, search_expnum, band, c, rnum,
                                   pnum, season).stamps
            try:
                stamps_by_ccd[c] = read_stamps_fits(p)[0] if p.is_file() else None
            except DesgwError as exc:
                log.warning("CCD %d stamps: %s", c, exc)
                stamps_by_ccd[c] = None
        st = stamps_by_ccd[c]
        kw: dict[str, Any] = {}
        if st is not None and i < len(st.data):
            kw = {"stamps": st.data[i], "stamp_valid": st.valid[i]}
        if truth is not None:
            kind, tid, tmag, _ = _truth_match(truth, search_expnum, c,
                                              np.array([float(r["ra"])]),
                                              np.array([float(r["dec"])]))[0]
            kw.update(truth_kind=kind, truth_id=tid, truth_mag=tmag)
        candidates.append(ReportCandidateRow(
            expnum=int(search_expnum), ccdnum=c, cand_id=int(r["id"]), ra=float(r["ra"]),
            dec=float(r["dec"]), x=float(r["x"]), y=float(r["y"]), mag=_num(r["mag"]),
            magerr=_num(r["magerr"]), snr=_num(r["snr"]), real_bogus=_num(r["real_bogus"]),
            veto=bool(r["veto"]), dipole=bool(r["is_dipole"]), **kw))

    finite_ideal = [v for v in ideal.values() if math.isfinite(v)]
    eff = EfficiencySummary(
        mags=np.concatenate(mags) if mags else np.zeros(0),
        recovered=np.concatenate(rec) if rec else np.zeros(0, bool), per_ccd=per_ccd,
        ideal_limit=float(np.median(finite_ideal)) if finite_ideal else math.nan)
    return ReportData(search_expnum=int(search_expnum),
                      template_expnums=tuple(int(t) for t in template_expnums), band=band,
                      ccds=tuple(rows), candidates=tuple(candidates),
                      n_candidates_total=n_total, efficiency=eff,
                      transients=tuple(transients), run=run, record=dict(record or {}),
                      has_truth=truth is not None,
                      database={} if db_url is None else _database_counts(
                          db_url, [search_expnum, *template_expnums], search_expnum))
