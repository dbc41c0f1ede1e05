"""``SEdiff.sh``: SE, verification and difference imaging of a search exposure's CCDs.

:func:`run_sediff` keeps the original flags and their meanings (``desgw sediff``):

==========  =====================================================================
``-E``      search exposure number
``-r -p``   SE processing version ``r{R}p{P}``
``-n``      night of the product directory (default: the header's)
``-b``      band (default: the header's; must agree)
``-S``      season (``67`` or ``dp67``): the difference-imaging version ``dp{S}``
``-c``      CCDs (default: every CCD in the raw file but the dead 2 and 61)
``-d``      destination cache: ``scratch`` or ``persistent``
``-m``      schema: ``gw`` or ``wsdiff``
``-v``      DiffImg version tag (recorded with the results)
``-V -T``   SNVETO and SNSTAR list names: the star and veto lists (makestarcat, always made
            by the difference imaging) are also written under these names
``-C``      photometric calibration of the search and template exposures
``-j``      no SE of the search exposure: calibrate its existing fullcats and go on
``-s``      single process (no Dask: tasks one after the other)
``-Y``      accepted, no effect (:data:`~desgw.workflow.se_exposure.SPECIAL_Y_WARNING`)
``-F``      FULLCOPY: keep every intermediate image of the difference imaging (the search
            image with the fakes, each resampled template CCD)
``-O``      redo the tasks whose products exist
``-t``      template: SE (and calibration with ``-C``) of this exposure only, quality
            measured but not assessed; no templates, no difference imaging
==========  =====================================================================

Raw exposures and Community Pipeline InstCal exposures can be mixed (e.g. a raw search
exposure and CP templates): each exposure's kind (the database's ``exposures.kind``, else the
PROCTYPE of its file) decides whether its SE tasks detrend a raw file or run the CP InstCal
processing (:mod:`desgw.workflow.se_instcal`).

The work is a small :class:`~desgw.engine.graph.TaskGraph` (:func:`desgw.workflow.dagmaker.
make_dag` restricted to the CCDs: templates chosen by the DAGMaker rules, or ``templates``,
their overlapping CCDs processed first when their products are missing) run by
:func:`desgw.engine.run.run_graph`. Each search CCD with a template is one fused task, SE and
difference imaging in memory (:mod:`desgw.workflow.sediff_ccd`); the search exposure's
calibration (``-C``) runs after them; templates keep SE then calibration. Database writes
happen in the tasks when the settings name a database.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from desgw.engine.graph import Task, TaskGraph, expcalib_task_id, se_task_id
from desgw.engine.run import RunReport
from desgw.errors import DesgwError
from desgw.io.settings import Settings

from .dagmaker import exposure_file, make_dag, raw_file_ccds, record_from_raw
from .dagmaker_rc import DagmakerConfig
from .se_types import CACHES, SCHEMAS, SPECIAL_Y_WARNING
from .tasks import run_pipeline

if TYPE_CHECKING:  # pragma: no cover
    from desgw.db import Database

__all__ = ["SEdiffReport", "parse_season", "run_sediff"]

log = logging.getLogger(__name__)

def parse_season(value: int | str) -> int:
    """Season number from ``67`` or ``"dp67"`` (>= 1).

    Raises
    ------
    ValueError
        Not a positive integer.
    """
    text = str(value).strip()
    if text.lower().startswith("dp"):
        text = text[2:]
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"season must be a positive number like 67 or dp67, got {value!r}")
    return int(text)


@dataclass
class SEdiffReport:
    """What :func:`run_sediff` did.

    Attributes
    ----------
    expnum : int
    graph : TaskGraph
        The tasks that were planned.
    run : RunReport
        Their execution.
    warnings : list of str
    """

    expnum: int
    graph: TaskGraph
    run: RunReport
    warnings: list[str] = field(default_factory=list)

    @property
    def differenced(self) -> tuple[str, ...]:
        """Ids of the difference-imaging tasks that are done or were found done."""
        return tuple(t.id for t in self.graph.tasks if t.kind == "diff"
                     and t.id in self.run.results and self.run.results[t.id].ok)

    @property
    def nothing_differenced(self) -> bool:
        """True when a search run (not ``-t``) differenced no CCD at all."""
        return not self.graph.meta.get("template_mode", False) and not self.differenced

    @property
    def degraded(self) -> tuple[str, ...]:
        """Ids of the ``expcalib`` tasks that failed only in the photometric calibration while
        every task depending on them finished (:func:`desgw.workflow.tasks.degraded_calibrations`,
        the run's :attr:`~desgw.engine.run.RunReport.degraded`): their CCDs' zeropoints came
        from a relative or nominal scale, flagged, not a failure of the run."""
        return self.run.degraded

    @property
    def ok(self) -> bool:
        """True when every task is done or skipped (or only :attr:`degraded`) and, unless in
        template mode (``-t``), at least one CCD was differenced."""
        return self.run.ok and not self.nothing_differenced

    def lines(self) -> list[str]:
        """A human summary."""
        meta = self.graph.meta
        out = [f"SEdiff of exposure {self.expnum}"]
        temps = meta.get("templates", [])
        if temps:
            out.append("  templates: " + ", ".join(
                f"{t['expnum']} (CCDs {','.join(map(str, t['ccds']))})" for t in temps))
        for r in meta.get("rejected", []):
            out.append(f"  rejected template {r['expnum']}: {'; '.join(r['reasons'])}")
        for d in meta.get("dropped", []):
            out.append(f"  dropped template {d['expnum']}: {d['reason']}")
        if meta.get("no_template_ccds"):
            out.append(f"  no template overlaps CCDs {meta['no_template_ccds']}")
        out += self.run.lines()
        out += [f"  warning: {w}" for w in self.warnings]
        for tid in self.degraded:
            t = self.graph.task(tid)
            out.append(f"  warning: photometric calibration of exposure {t.expnum} degraded "
                       "(too few stars); its CCDs' zeropoints come from relative or nominal "
                       "scales, flagged in the diffdone JSON ('zeropoints') and the candidate "
                       "header (ZPMODE, ZPSOURCE)")
        if self.nothing_differenced:
            n_diff = sum(t.kind == "diff" for t in self.graph.tasks)
            why = ("no usable template overlaps the CCDs" if n_diff == 0
                   else "every difference-imaging task failed or was blocked")
            out.append(f"  nothing was differenced: {why}")
        return out


def _template_only_graph(expnum: int, settings: Settings, config: DagmakerConfig,
                         ccds: Iterable[int] | None, nite: int | None, band: str | None,
                         calibrate: bool, search_se: bool) -> TaskGraph:
    """SE (+ calibration) of one exposure in template mode (``-t``)."""
    from desgw.errors import DesgwInputError
    from desgw.instrument import DEFAULT_CCDNUMS

    raw = str(exposure_file(settings, expnum))
    rec = record_from_raw(raw)
    if band is not None and band != rec.band:
        raise DesgwInputError(raw, 0, f"the exposure's band is {rec.band!r}, not {band!r}")
    present = raw_file_ccds(raw, strict=search_se, kind=rec.kind)
    ccd_list = (sorted({int(c) for c in ccds}) if ccds is not None
                else [c for c in DEFAULT_CCDNUMS if present is None or c in present])
    args = {"band": rec.band, "nite": int(nite) if nite is not None else rec.nite,
            "rnum": config.rnum, "pnum": config.pnum, "cache": config.destcache,
            "schema": config.schema, "template": True, "raw_path": raw,
            **({"instcal": True} if rec.kind == "instcal" else {})}
    tasks = [Task(se_task_id(expnum, c), "se", expnum, c, (), {**args, "extra_opts": []})
             for c in ccd_list] if search_se else []
    if calibrate:
        tasks.append(Task(expcalib_task_id(expnum), "expcalib", expnum, None,
                          tuple(t.id for t in tasks), {**args, "ccds": ccd_list}))
    meta = {"search": {"expnum": expnum, "band": rec.band, "nite": args["nite"],
                       "ccds": ccd_list}, "template_mode": True}
    return TaskGraph(tuple(tasks), meta)


def run_sediff(expnum: int, *, settings: Settings, rnum: int, pnum: int, season: int | str,
               nite: int | None = None, band: str | None = None,
               ccds: Iterable[int] | None = None, cache: str = "scratch", schema: str = "gw",
               version: str | None = None, snveto: str | None = None,
               starcat: str | None = None, run_calibration: bool = False,
               jump_to_calib: bool = False, single_process: bool = False,
               special_y: bool = False, fullcopy: bool = False, overwrite: bool = False,
               template_mode: bool = False, templates: Sequence[int] | None = None,
               config: DagmakerConfig | None = None, blacklist: Iterable[int] = frozenset(),
               db: Database | None = None, fakes: bool = True, scheduler: str | None = None,
               cluster: str | None = None, workers: int | None = None, retries: int = 2,
               progress: bool = True, db_timeout_s: float = 60.0) -> SEdiffReport:
    """SEdiff of a search exposure (see the module docstring for the flags).

    Parameters
    ----------
    expnum, rnum, pnum, season, nite, band, ccds, cache, schema, version
        ``-E -r -p -S -n -b -c -d -m -v``.
    snveto, starcat : str, optional
        ``-V``, ``-T``: names the veto and star lists are also written under.
    run_calibration, jump_to_calib, single_process, special_y, fullcopy, overwrite,
    template_mode : bool
        ``-C -j -s -Y -F -O -t``.
    templates : sequence of int, optional
        Template exposures to use (default: chosen by the DAGMaker rules of ``config``).
    config : DagmakerConfig, optional
        Template rules (TWINDOW, TEFF_CUT, nights, ...); its RNUM, PNUM, SEASON, DESTCACHE and
        SCHEMA are replaced by the arguments.
    blacklist : iterable of int
        Exposures never used as templates.
    db : Database, optional
        Template candidates from this database (default: ``settings.db_url``, else raw
        headers).
    fakes : bool
        Inject fake sources in the difference imaging.
    scheduler, cluster, workers, retries, progress
        As :func:`desgw.workflow.tasks.run_pipeline` (``-s`` means ``scheduler="single"``).
    db_timeout_s : float
        Wait for a locked SQLite database when checking it (s).

    Returns
    -------
    SEdiffReport

    Raises
    ------
    DesgwInputError
        No raw file, a band that disagrees with the header, bad templates.
    ValueError
        A bad cache, schema or season.
    desgw.db.DatabaseError
        The database cannot be opened.
    """
    if cache not in CACHES:
        raise ValueError(f"cache must be one of {CACHES}, got {cache!r}")
    if schema not in SCHEMAS:
        raise ValueError(f"schema must be one of {SCHEMAS}, got {schema!r}")
    expnum = int(expnum)
    season_n = parse_season(season)
    warnings: list[str] = []
    if special_y:
        log.warning(SPECIAL_Y_WARNING)
        warnings.append(SPECIAL_Y_WARNING)
    cfg = dataclasses.replace(config or DagmakerConfig(), rnum=int(rnum), pnum=int(pnum),
                              season=season_n, destcache=cache, schema=schema)
    calibrate = bool(run_calibration or jump_to_calib)
    if template_mode:
        graph = _template_only_graph(expnum, settings, cfg, ccds, nite, band, calibrate,
                                     search_se=not jump_to_calib)
    else:
        graph = make_dag(expnum, settings=settings, config=cfg, db=db, blacklist=blacklist,
                         ccds=ccds, templates=templates, nite=nite, band=band,
                         calibrate=calibrate, search_se=not jump_to_calib, diff=True,
                         fakes=fakes, full_copy=fullcopy, version=version, snstar=starcat,
                         snveto=snveto, fuse_search=True)
    se_bands = sorted({str(t.args["band"]) for t in graph.tasks if t.kind == "se"})
    for b in se_bands:
        try:
            linearity = settings.calib_paths(b).linearity
        except DesgwError:  # no calibration for the band: the SE tasks say so
            continue
        if linearity is None:
            msg = (f"no linearity table (linearity.fits or linearity.fits.fz) in "
                   f"{settings.calib_dir}: SE runs without the linearity correction")
            log.warning(msg)
            warnings.append(msg)
            break
    if single_process:
        scheduler, cluster = "single", None
    run = run_pipeline(graph, settings=settings, scheduler=scheduler, cluster=cluster,
                       workers=workers, overwrite=overwrite, retries=retries,
                       progress=progress, db_timeout_s=db_timeout_s)
    return SEdiffReport(expnum=expnum, graph=graph, run=run, warnings=warnings)

