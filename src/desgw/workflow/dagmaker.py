"""DAGMaker: the task graph of one search exposure (the original ``DAGMaker.sh``).

:func:`make_dag` does what the original did before writing ``desgw_pipeline_EXPNUM.dag``:

1. **The search exposure**: its record from the database when there is one, else from the
   primary header of its raw file (:meth:`Settings.raw_path`) or CP InstCal image
   (:func:`exposure_file`). Each exposure's ``kind`` (raw or CP InstCal: the database's
   ``exposures.kind``, else the file's PROCTYPE) goes into its SE and ``expcalib`` task
   arguments (``instcal``), so raw and CP exposures mix (a raw search, CP templates).
2. **Template candidates**: database exposures within 2.2 deg of the search pointing in the
   same band (:func:`desgw.db.exposures_near`), or, without a database, the primary headers
   of the raw files in ``settings.raw_dir``. t_eff comes from the database (median over the
   exposure's CCDs) or, when unknown there, from the exposure QC file of SE products already
   on disk.
3. **Exposure selection** by the original rules (:func:`desgw.workflow.templates.
   select_templates`: band, 2.2 deg, science exposure, blacklist, TWINDOW, TEFF_CUT_band,
   MIN_NITE..MAX_NITE), or an explicit list of templates.
4. **CCD overlaps** (:func:`desgw.workflow.templates.ccd_overlaps`): CCD corners from each
   exposure's ``{expnum}.out`` file when SE has written one, else approximate corners from
   the DECam optical model (distortion included) at the header pointing.
5. **The graph**: one SE task per (template exposure, CCD that overlaps a search CCD) and per
   (search exposure, CCD); an ``expcalib`` task per exposure after its SE tasks; one ``diff``
   task per search CCD that some template overlaps, after the search CCD's SE task, the
   search ``expcalib`` and the SE (and ``expcalib``) tasks of its template CCDs. Template CCDs
   whose SE products already exist get no SE task (they are not re-processed), and a
   template whose needed CCDs and calibration all exist gets no task at all. With
   ``SKIP_INCOMPLETE_SE`` a template with some but not all of its needed CCD products is
   dropped instead of completed.

The graph's ``meta`` records the selection (selected, rejected with reasons, dropped), the
overlaps and the configuration, so ``desgw dagmaker`` output explains itself.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from desgw import __version__
from desgw.db.records import ExposureRecord
from desgw.engine.graph import (
    Task,
    TaskGraph,
    diff_task_id,
    expcalib_task_id,
    se_task_id,
)
from desgw.errors import DesgwInputError, MissingFileError
from desgw.instrument.bands import DECAM_BANDS
from desgw.io.completion import expcalib_complete, exposure_outdir, se_complete
from desgw.io.corners import read_corners_out
from desgw.io.naming import corners_out_name, qc_exposure_name
from desgw.io.settings import Settings, is_instcal_companion

from .dagmaker_rc import DagmakerConfig
from .templates import (
    MAX_POINTING_SEPARATION_DEG,
    TemplateSelection,
    ccd_overlaps,
    select_templates,
)

if TYPE_CHECKING:  # pragma: no cover
    from desgw.db import Database

__all__ = [
    "RAW_PATTERNS",
    "ExposureFootprint",
    "exposure_file",
    "exposure_footprint",
    "find_raw_files",
    "make_dag",
    "raw_file_ccds",
    "record_from_raw",
]

log = logging.getLogger(__name__)

#: File name patterns of raw exposures looked for in ``settings.raw_dir``.
RAW_PATTERNS: tuple[str, ...] = ("DECam_*.fits.fz", "DECam_*.fits", "c4d_*.fits.fz", "c4d_*.fits")


# ----------------------------------------------------------------------------- exposures
def find_raw_files(raw_dir: str | os.PathLike[str]) -> list[Path]:
    """Raw exposure files in ``raw_dir`` (:data:`RAW_PATTERNS`), sorted by name."""
    d = Path(raw_dir)
    if not d.is_dir():
        return []
    return sorted({p for pattern in RAW_PATTERNS for p in d.glob(pattern) if p.is_file()})


def exposure_file(settings: Settings, expnum: int) -> Path:
    """The file of an exposure: its raw file (:meth:`Settings.raw_path`), else a CP InstCal
    image with its EXPNUM anywhere under the raw folder
    (:func:`desgw.io.instcal.find_instcal_image`, as the archive's CP/V*/CPYYYYMMDD tree).

    Raises
    ------
    MissingFileError
        Neither (the raw file's message).
    """
    from desgw.io.instcal import find_instcal_image

    try:
        return settings.raw_path(expnum)
    except MissingFileError as exc:
        try:
            return find_instcal_image(settings.raw_dir, expnum)
        except MissingFileError:
            raise exc from None


def record_from_raw(path: str | os.PathLike[str]) -> ExposureRecord:
    """An :class:`ExposureRecord` from a raw file's (or CP InstCal image's) primary header
    (t_eff unknown; ``kind`` ``"instcal"`` for a CP InstCal image, else ``"raw"``).

    Raises
    ------
    DesgwInputError
        Unreadable header, or no band or pointing.
    """
    from desgw.io.raw import read_exposure_header

    from desgw.io.instcal import decam_file_kind

    h = read_exposure_header(path)
    if not h.band:
        raise DesgwInputError(path, 0, "no BAND/FILTER: cannot select templates")
    if h.ra_deg is None or h.dec_deg is None:
        raise DesgwInputError(path, 0, "no telescope pointing (TELRA/TELDEC)")
    return ExposureRecord(expnum=h.expnum, nite=h.nite, mjd=h.mjd_obs, band=h.band,
                          exptime=h.exptime, ra=float(h.ra_deg) % 360.0, dec=float(h.dec_deg),
                          object=h.object, propid=h.propid, obstype=h.obstype,
                          airmass=h.airmass, raw_path=str(path),
                          kind="instcal" if decam_file_kind(h.header) == "instcal" else "raw")


def _raw_records(settings: Settings) -> list[ExposureRecord]:
    out: list[ExposureRecord] = []
    for path in find_raw_files(settings.raw_dir):
        if is_instcal_companion(path):  # a CP mask or weight: read with its image
            continue
        try:
            out.append(record_from_raw(path))
        except (DesgwInputError, OSError) as exc:
            log.warning("template candidates: skipping %s: %s", path, exc)
    return out


def raw_file_ccds(path: str | None, *, strict: bool = False, kind: str = "raw"
                  ) -> tuple[int, ...] | None:
    """CCDs present in a raw file or, with ``kind="instcal"``, a CP InstCal image (None when
    there is no file, or it cannot be read and not ``strict``).

    Raises
    ------
    DesgwInputError
        With ``strict``, a file that is truncated, corrupt or unreadable (one error for the
        exposure, rather than one failed task per CCD).
    """
    if path is None or not Path(path).is_file():
        return None
    from desgw.io.instcal import instcal_ccdnums
    from desgw.io.raw import RawExposure

    try:
        if kind == "instcal":
            return tuple(instcal_ccdnums(path))
        with RawExposure(path) as raw:
            return tuple(sorted(int(c) for c in raw.ccdnums))
    except (DesgwInputError, OSError) as exc:
        if strict:
            if isinstance(exc, DesgwInputError):
                raise
            raise DesgwInputError(path, None, f"cannot read the raw file: {exc}") from None
        log.warning("%s: cannot list its CCDs: %s", path, exc)
        return None


def _teff_from_products(out_root: Path, rec: ExposureRecord, args: Mapping[str, Any]
                        ) -> float | None:
    """t_eff of an exposure from its exposure QC file, when SE has written one."""
    qc = exposure_outdir(out_root, rec.expnum, args) / qc_exposure_name(
        rec.expnum, rec.band, int(args["rnum"]), int(args["pnum"]))
    try:
        doc = json.loads(qc.read_text(encoding="utf-8"))
        value = doc["qc"]["metrics"]["teff"]["teff"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(value) if value is not None and math.isfinite(float(value)) else None


# ----------------------------------------------------------------------------- footprints
@dataclass(frozen=True)
class ExposureFootprint:
    """CCD corners of one exposure and where they came from.

    Attributes
    ----------
    expnum : int
    corners : dict of int to (ra[4], dec[4])
        Degrees.
    from_file : tuple of int
        CCDs whose corners come from the exposure's ``{expnum}.out`` (fitted WCS); the others
        are approximations from the optical model at the header pointing.
    """

    expnum: int
    corners: dict[int, Any]
    from_file: tuple[int, ...]


def exposure_footprint(rec: ExposureRecord, ccds: Iterable[int], *,
                       corners_file: str | os.PathLike[str] | None = None
                       ) -> ExposureFootprint:
    """Corners of ``ccds`` of an exposure: from ``corners_file`` where it has the CCD, else
    from the DECam optical model at the record's pointing.

    Parameters
    ----------
    rec : ExposureRecord
        The exposure (its ``ra``, ``dec`` pointing in deg).
    ccds : iterable of int
        CCD numbers.
    corners_file : path, optional
        The exposure's ``{expnum}.out``; ignored when absent or unreadable.
    """
    from desgw.instrument import DECAM_DISTORTION, Pointing, ccd_corners_sky

    known: dict[int, Any] = {}
    if corners_file is not None and Path(corners_file).is_file():
        try:
            known = dict(read_corners_out(corners_file).corners)
        except DesgwInputError as exc:
            log.warning("ignoring %s: %s", corners_file, exc)
    pointing = Pointing(float(rec.ra), float(rec.dec), 0.0)
    corners: dict[int, Any] = {}
    from_file: list[int] = []
    for ccd in sorted({int(c) for c in ccds}):
        if ccd in known:
            corners[ccd] = known[ccd]
            from_file.append(ccd)
        else:
            ra, dec = ccd_corners_sky(ccd, pointing, DECAM_DISTORTION)
            corners[ccd] = (np.asarray(ra, dtype=np.float64) % 360.0,
                            np.asarray(dec, dtype=np.float64))
    return ExposureFootprint(int(rec.expnum), corners, tuple(from_file))


# ----------------------------------------------------------------------------- the DAG
def _record_dict(rec: ExposureRecord) -> dict[str, Any]:
    return {"expnum": rec.expnum, "band": rec.band, "nite": rec.nite, "mjd": rec.mjd,
            "ra": rec.ra, "dec": rec.dec, "t_eff": rec.t_eff, "kind": rec.kind}


def _kind_args(rec: ExposureRecord) -> dict[str, Any]:
    """Task arguments of an exposure's kind: ``instcal`` for a CP InstCal exposure (its SE
    tasks run the CP InstCal single-epoch processing, no calibration files)."""
    return {"instcal": True} if rec.kind == "instcal" else {}


def _with_teff(rec: ExposureRecord, out_root: Path, args: Mapping[str, Any]) -> ExposureRecord:
    if rec.t_eff is not None:
        return rec
    teff = _teff_from_products(out_root, rec, {**args, "nite": rec.nite})
    if teff is None:
        return rec
    from dataclasses import replace

    return replace(rec, t_eff=teff)


def make_dag(search_expnum: int, *, settings: Settings, config: DagmakerConfig,
             db: Database | None = None, blacklist: Iterable[int] = frozenset(),
             ccds: Iterable[int] | None = None, templates: Sequence[int] | None = None,
             nite: int | None = None, band: str | None = None, calibrate: bool = True,
             search_se: bool = True, diff: bool = True, fakes: bool = True,
             full_copy: bool = False, version: str | None = None, snstar: str | None = None,
             snveto: str | None = None,
             max_separation_deg: float = MAX_POINTING_SEPARATION_DEG,
             fuse_search: bool = False) -> TaskGraph:
    """The task graph of one search exposure (see the module docstring).

    Parameters
    ----------
    search_expnum : int
        The search exposure.
    settings : Settings
        Raw, calibration, product folders and database URL.
    config : DagmakerConfig
        RNUM, PNUM, SEASON, DESTCACHE, SCHEMA, template rules, SEARCH_OPTS/TEMP_OPTS.
    db : Database, optional
        Template candidates from this database; default: ``settings.db_url`` when set, else
        the raw files' headers.
    blacklist : iterable of int
        Exposures never used as templates.
    ccds : iterable of int, optional
        Search CCDs (default: every default CCD in the search raw file, else 1-62 without 2
        and 61).
    templates : sequence of int, optional
        Use exactly these template exposures (no selection rules; overlaps still apply).
    nite, band : optional
        Night of the search product directory and band (default: the header's).
    calibrate : bool
        Add the ``expcalib`` tasks (photometric calibration, the original ``-C``).
    search_se : bool
        Add SE tasks for the search CCDs (False: ``-j``, the fullcats exist).
    diff : bool
        Add the difference-imaging tasks (False: SE only).
    fuse_search : bool
        With ``search_se`` and ``diff``: each search CCD with a template is one fused task
        (a ``diff`` task with ``fused``: SE and difference imaging in memory,
        :mod:`desgw.workflow.sediff_ccd`) instead of an ``se`` and a ``diff`` task, and the
        search calibration depends on those tasks (search CCDs without a template keep an
        ``se`` task). Raw search exposures only: a CP InstCal search keeps its tasks. The
        HTCondor export keeps the unfused graph (default False).
    fakes : bool
        Inject fake sources in the difference imaging.
    full_copy : bool
        Keep the intermediate images of the difference imaging (the original ``-F``).
    version : str, optional
        DiffImg version tag (default ``config.diffimg_eups_version``).
    snstar, snveto : str, optional
        Names to give the star and veto lists too (the original ``-T``, ``-V``).
    max_separation_deg : float
        Template pointing distance limit (deg).

    Returns
    -------
    TaskGraph

    Raises
    ------
    MissingFileError
        No database record and no raw file of the search exposure.
    DesgwInputError
        A band that disagrees with the search exposure's.
    desgw.db.DatabaseError
        The database cannot be read.
    """
    from desgw.instrument import DEFAULT_CCDNUMS

    search_expnum = int(search_expnum)
    if db is None and settings.db_url is not None:
        from desgw.db import connect

        with connect(settings.db_url) as own_db:
            return make_dag(search_expnum, settings=settings, config=config, db=own_db,
                            blacklist=blacklist, ccds=ccds, templates=templates, nite=nite,
                            band=band, calibrate=calibrate, search_se=search_se, diff=diff,
                            fakes=fakes, full_copy=full_copy, version=version,
                            snstar=snstar, snveto=snveto,
                            max_separation_deg=max_separation_deg, fuse_search=fuse_search)

    # --- the search exposure
    search: ExposureRecord | None = None
    if db is not None:
        from desgw.db import get_exposure

        search = get_exposure(db, search_expnum)
    raw_search: str | None = None
    try:
        raw_search = str(exposure_file(settings, search_expnum))
    except MissingFileError:
        if search is None:
            raise
        if search.raw_path and Path(search.raw_path).is_file():
            raw_search = search.raw_path
    if search is None:
        assert raw_search is not None
        search = record_from_raw(raw_search)
        if search.expnum != search_expnum:
            raise DesgwInputError(raw_search, 0, f"EXPNUM is {search.expnum}, expected "
                                  f"{search_expnum}")
    if band is not None and band != search.band:
        raise DesgwInputError(raw_search, 0, f"the search exposure's band is {search.band!r}, "
                              f"not {band!r}")
    search_nite = int(nite) if nite is not None else int(search.nite)
    base = {"band": search.band, "rnum": config.rnum, "pnum": config.pnum,
            "cache": config.destcache, "schema": config.schema}
    out_root = settings.out_root

    # a bad raw file: one error
    present = raw_file_ccds(raw_search, strict=search_se, kind=search.kind)
    if ccds is None:
        search_ccds = [c for c in DEFAULT_CCDNUMS if present is None or c in present]
    else:
        search_ccds = sorted({int(c) for c in ccds})
    search_args = {**base, "nite": search_nite}
    search_fp = exposure_footprint(
        search, search_ccds,
        corners_file=exposure_outdir(out_root, search_expnum, search_args)
        / corners_out_name(search_expnum))

    # --- template exposures
    selection: TemplateSelection | None = None
    if templates is not None:
        chosen: list[ExposureRecord] = []
        by_expnum: dict[int, ExposureRecord] = {}
        if db is not None:
            from desgw.db import get_exposure

            for e in templates:
                r = get_exposure(db, int(e))
                if r is not None:
                    by_expnum[int(e)] = r
        missing = [int(e) for e in templates if int(e) not in by_expnum]
        for e in missing:
            by_expnum[e] = record_from_raw(exposure_file(settings, e))
        chosen = [by_expnum[int(e)] for e in templates]
    else:
        if not diff:
            candidates: list[ExposureRecord] = []
        elif db is not None:
            from desgw.db import exposures_near

            candidates = exposures_near(db, search.ra, search.dec, max_separation_deg,
                                        band=search.band, exclude=[search_expnum])
        else:
            candidates = [r for r in _raw_records(settings) if r.expnum != search_expnum]
        candidates = [_with_teff(r, out_root, base) for r in candidates]
        selection = select_templates(search, candidates, config, blacklist=blacklist,
                                     max_separation_deg=max_separation_deg)
        chosen = list(selection.selected)

    # --- CCD overlaps, template by template
    overlaps: dict[int, dict[int, list[int]]] = {c: {} for c in search_ccds}
    template_info: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    tasks: list[Task] = []
    template_tasks: dict[int, dict[str, Any]] = {}
    template_nites: dict[int, int] = {}
    for rec in chosen:
        t_args = {**base, "nite": int(rec.nite)}
        t_raw = rec.raw_path
        with contextlib.suppress(MissingFileError):
            t_raw = str(exposure_file(settings, rec.expnum))
        t_present = raw_file_ccds(t_raw, kind=rec.kind)
        t_ccds = [c for c in DEFAULT_CCDNUMS if t_present is None or c in t_present]
        fp = exposure_footprint(rec, t_ccds, corners_file=exposure_outdir(
            out_root, rec.expnum, t_args) / corners_out_name(rec.expnum))
        over = ccd_overlaps(search_fp.corners, fp.corners)
        needed = sorted({c for v in over.values() for c in v})
        if not needed:
            dropped.append({"expnum": rec.expnum, "reason": "no CCD overlaps a search CCD"})
            continue
        existing = [c for c in needed if se_complete(out_root, rec.expnum, c, t_args)]
        missing_ccds = [c for c in needed if c not in existing]
        if config.skip_incomplete_se and existing and missing_ccds:
            dropped.append({"expnum": rec.expnum, "reason": f"SE incomplete (CCDs "
                            f"{missing_ccds} missing) and SKIP_INCOMPLETE_SE is set"})
            continue
        if t_present is None and missing_ccds:
            dropped.append({"expnum": rec.expnum, "reason": "no raw file to process CCDs "
                            f"{missing_ccds}"})
            continue
        for s_ccd, t_list in over.items():
            if t_list:
                overlaps[s_ccd][rec.expnum] = list(t_list)
        se_ids = []
        for c in missing_ccds:
            tid = se_task_id(rec.expnum, c)
            se_ids.append(tid)
            tasks.append(Task(tid, "se", rec.expnum, c, (), {
                **t_args, **_kind_args(rec), "template": True, "raw_path": t_raw,
                "extra_opts": list(config.temp_opts)}))
        cal_id = None
        if calibrate and (se_ids or not expcalib_complete(out_root, rec.expnum, needed,
                                                          t_args)):
            cal_id = expcalib_task_id(rec.expnum)
            tasks.append(Task(cal_id, "expcalib", rec.expnum, None, tuple(se_ids), {
                **t_args, **_kind_args(rec), "template": True, "ccds": needed,
                "raw_path": t_raw}))
        template_nites[rec.expnum] = int(rec.nite)
        template_tasks[rec.expnum] = {"se": {c: se_task_id(rec.expnum, c)
                                             for c in missing_ccds},
                                      "expcalib": cal_id}
        template_info.append({**_record_dict(rec), "ccds": needed, "existing_ccds": existing,
                              "corners_from_file": list(fp.from_file)})

    # --- search tasks
    # the fused task runs raw SE: a CP InstCal search keeps its se (instcal) tasks
    fused = {c for c in search_ccds if overlaps[c]} if (
        fuse_search and search_se and diff and search.kind == "raw") else set()
    search_se_ids: dict[int, str] = {}
    if search_se:
        for c in search_ccds:
            if c in fused:  # SE happens in the CCD's fused difference-imaging task
                continue
            tid = se_task_id(search_expnum, c)
            search_se_ids[c] = tid
            tasks.append(Task(tid, "se", search_expnum, c, (), {
                **search_args, **_kind_args(search), "template": False,
                "raw_path": raw_search, "extra_opts": []}))
    search_cal = None
    if calibrate and not fused:
        search_cal = expcalib_task_id(search_expnum)
        tasks.append(Task(search_cal, "expcalib", search_expnum, None,
                          tuple(search_se_ids.values()), {
                              **search_args, **_kind_args(search), "template": False,
                              "ccds": search_ccds, "raw_path": raw_search}))
    no_template: list[int] = []
    if diff:
        version = config.diffimg_eups_version if version is None else str(version)
        for c in search_ccds:
            per_template = overlaps[c]
            if not per_template:
                no_template.append(c)
                continue
            deps: list[str] = []
            if c in search_se_ids:
                deps.append(search_se_ids[c])
            if search_cal is not None:
                deps.append(search_cal)
            for e, t_list in sorted(per_template.items()):
                deps.extend(template_tasks[e]["se"][tc] for tc in t_list
                            if tc in template_tasks[e]["se"])
                if template_tasks[e]["expcalib"] is not None:
                    deps.append(template_tasks[e]["expcalib"])
            extra: dict[str, Any] = {"fused": True, "raw_path": raw_search} \
                if c in fused else {}
            tasks.append(Task(diff_task_id(search_expnum, c), "diff", search_expnum, c,
                              tuple(dict.fromkeys(deps)), {
                                  **search_args, **extra, "season": config.season,
                                  "version": version,
                                  "fakes": bool(fakes), "full_copy": bool(full_copy),
                                  "templates": sorted(per_template),
                                  "template_ccds": {str(e): v for e, v in
                                                    sorted(per_template.items())},
                                  "template_nites": {str(e): template_nites[e]
                                                     for e in sorted(per_template)},
                                  "snstar": snstar, "snveto": snveto,
                                  "extra_opts": list(config.search_opts)}))
        if no_template:
            log.warning("search exposure %d: no template overlaps CCDs %s: no difference "
                        "imaging for them", search_expnum, no_template)
    if calibrate and fused:  # after the fused search CCDs, which make the SE products
        search_cal = expcalib_task_id(search_expnum)
        tasks.append(Task(search_cal, "expcalib", search_expnum, None,
                          (*search_se_ids.values(),
                           *(diff_task_id(search_expnum, c) for c in sorted(fused))), {
                              **search_args, "template": False, "ccds": search_ccds,
                              "raw_path": raw_search}))

    meta: dict[str, Any] = {
        "search": {**_record_dict(search), "product_nite": search_nite, "ccds": search_ccds,
                   "corners_from_file": list(search_fp.from_file)},
        "config": {"rnum": config.rnum, "pnum": config.pnum, "season": config.season,
                   "destcache": config.destcache, "schema": config.schema,
                   "diffimg_version": version if diff else config.diffimg_eups_version,
                   "twindow": config.twindow, "teff_cut": config.teff_cut(search.band)
                   if search.band in DECAM_BANDS else None,
                   "write_db": config.write_db},
        "templates": template_info,
        "rejected": [] if selection is None else [
            {"expnum": r.exposure.expnum, "reasons": list(r.reasons)}
            for r in selection.rejected],
        "dropped": dropped,
        "explicit_templates": templates is not None,
        "overlaps": {str(c): {str(e): v for e, v in sorted(d.items())}
                     for c, d in overlaps.items()},
        "no_template_ccds": no_template,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "desgw_version": __version__,
        "database": db is not None,
    }
    graph = TaskGraph(tuple(tasks), meta)
    counts = graph.counts()
    log.info("DAG of %d: %d templates (%d rejected, %d dropped), %d SE, %d expcalib, %d diff "
             "tasks", search_expnum, len(template_info), len(meta["rejected"]), len(dropped),
             counts["se"], counts["expcalib"], counts["diff"])
    return graph
