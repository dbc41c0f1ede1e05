"""The pipeline's task runners: what each kind of task of a
:class:`~desgw.engine.graph.TaskGraph` does (the engine, :mod:`desgw.engine`, runs them).

Runners (``runner(task, settings, overwrite, deps) -> Outcome``), by kind:

``se``
    :func:`desgw.workflow.se_ccd.run_ccd_task` on the CCD. Args: ``band``, ``nite``,
    ``rnum``, ``pnum``, ``cache``, ``schema``, ``template`` (bool), optional ``raw_path``;
    with ``instcal`` (bool) the exposure is a CP InstCal image (``raw_path``, the ``_ooi_``
    file) and :func:`desgw.workflow.se_instcal.run_instcal_ccd_task` runs instead (no
    calibration files).
``expcalib``
    :func:`desgw.workflow.se_exposure.run_se_exposure` with ``jump_to_calib`` on the CCDs whose
    SE succeeded: photometric calibration (Zero/allZP/ZP CSV files), ``{expnum}.out``, the
    exposure quality (assessed unless ``template``) and the database records. Args as ``se``
    (``instcal`` included) plus ``ccds``. Blocked when no CCD succeeded.
``diff``
    :func:`desgw.workflow.diff_ccd.run_diff_ccd` (imported when the task runs; it makes the
    star and veto lists, subtracts, detects, writes the products, the database records and
    its completion marker). Args as ``se`` plus ``season``, ``version``, ``fakes``,
    ``full_copy`` (the original ``-F``), ``templates`` (exposure numbers), ``template_ccds``
    (``{expnum: [ccd, ...]}``), ``snstar``/``snveto`` (the original ``-T``/``-V``: the names
    the star and veto lists are also given, next to the ones run_diff_ccd writes). Blocked
    when the search CCD's SE or the search calibration failed; a template whose SE or
    calibration failed is left out (as the original verifySE did); blocked when no template
    is left. A calibration that failed only for lack of calibration stars (its corners and
    exposure QC written; detail ``calibration_only``) blocks nothing: the exposure is
    differenced with its SE zeropoints or relative scales (detail
    ``uncalibrated_exposures``). With ``fused`` (true) the task is the fused search CCD
    (:func:`desgw.workflow.sediff_ccd.run_sediff_ccd`): SE of the search CCD (optional
    ``raw_path``) and its difference imaging in one task and in memory; it has no search SE
    task to depend on, and the search exposure's ``expcalib`` depends on it instead (a CCD
    whose SE products are on disk is calibrated even when its difference imaging failed).
    Only raw search exposures are fused (a CP InstCal search keeps its ``se`` task).


:func:`run_pipeline` runs a graph on the engine with these runners. The ``se`` and ``diff``
runners first make the worker process keep its freed memory for the next CCD
(:func:`desgw.util.malloc.keep_freed_memory`: a Dask worker otherwise page-faults every
plane it allocates, ~25 % of a difference imaging's CPU time).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desgw.engine.graph import (
    GraphError,
    Task,
    TaskGraph,
    diff_task_id,
    expcalib_task_id,
    se_task_id,
)
from desgw.engine.run import RunReport, run_graph
from desgw.engine.tasks import Outcome, Runner, TaskResult
from desgw.errors import describe_error
from desgw.io.atomic import atomic_write_text
from desgw.io.completion import exposure_outdir, se_complete
from desgw.io.settings import Settings
from desgw.io.star_lists import snstar_name, snveto_name
from desgw.util.malloc import keep_freed_memory

from .se_ccd import run_ccd_task
from .se_exposure import run_se_exposure
from .se_types import CCDSummary, CCDTask

if TYPE_CHECKING:  # pragma: no cover
    from .diff_ccd import DiffSummary

__all__ = [
    "REQUIRED_ARGS",
    "RUNNERS",
    "check_task_args",
    "run_diff_task",
    "run_expcalib_task",
    "run_pipeline",
    "run_se_task",
]

log = logging.getLogger(__name__)


def _raw_path(task: Task, settings: Settings) -> str:
    given = task.args.get("raw_path")
    if given and Path(given).is_file():
        return str(given)
    return str(settings.raw_path(task.expnum))


def _ccd_task(task: Task, settings: Settings, overwrite: bool) -> CCDTask:
    """The SE task of a graph task's CCD (raw file, calibrations, product folder)."""
    a = task.args
    assert task.ccd is not None
    calib = settings.calib_paths(str(a["band"]))
    raw = _raw_path(task, settings)
    outdir = exposure_outdir(settings.out_root, task.expnum, a)
    return CCDTask(expnum=task.expnum, ccdnum=task.ccd, band=str(a["band"]),
                   rnum=int(a["rnum"]), pnum=int(a["pnum"]), raw_path=raw,
                   bias_path=str(calib.bias), flat_path=str(calib.flat),
                   bpm_path=None if calib.bpm is None else str(calib.bpm),
                   linearity_path=None if calib.linearity is None else str(calib.linearity),
                   refcat_dir=str(settings.refcat_dir), outdir=str(outdir),
                   overwrite=overwrite, calib_cache_dir=str(settings.calib_cache_dir),
                   raw_cache_dir=str(settings.raw_cache_dir))


def run_se_task(task: Task, settings: Settings, overwrite: bool,
           deps: Mapping[str, TaskResult]) -> Outcome:
    """SE of one CCD (:func:`desgw.workflow.se_ccd.run_ccd_task`; with the ``instcal``
    argument, a CP InstCal CCD: :func:`desgw.workflow.se_instcal.run_instcal_ccd_task`)."""
    keep_freed_memory()  # the worker reuses the CCD's freed planes (desgw.util.malloc)
    if task.args.get("instcal"):
        out = _se_outcome(_run_instcal_se(task, settings, overwrite))
    else:
        try:
            ccd_task = _ccd_task(task, settings, overwrite)
        except Exception as exc:  # noqa: BLE001 - reported as the task's failure
            return Outcome("failed", describe_error(exc), error=exc)
        if task.args.get("template"):
            return _run_template_se(task, settings, ccd_task)
        out = _se_outcome(run_ccd_task(ccd_task))
    if task.args.get("template") and out.status == "done":
        seconds = _prepare_template(task, settings)
        if seconds is not None:
            out.detail["prepare_template_s"] = seconds
    return out


def _run_template_se(task: Task, settings: Settings, ccd_task: CCDTask) -> Outcome:
    """SE of a template CCD, then its prepared form made from the SE result in memory
    (:func:`desgw.diff.pipeline_products.prepare_template_from_memory`: the immask just
    written is not read back); from the files (:func:`_prepare_template`) when SE did not
    run (products complete from before) or the in-memory preparation failed."""
    import time

    from desgw.diff.pipeline_products import prepare_template_from_memory

    seconds: list[float] = []

    def prepare(result: Any, header: Any) -> None:
        t0 = time.perf_counter()
        prepare_template_from_memory(ccd_task.paths.immask, result.image, result.mask,
                                     result.weight, header)
        seconds.append(time.perf_counter() - t0)

    out = _se_outcome(run_ccd_task(ccd_task, after_write=prepare))
    if out.status == "done":
        made = seconds[0] if seconds else _prepare_template(task, settings)
        if made is not None:
            out.detail["prepare_template_s"] = made
    return out


def _prepare_template(task: Task, settings: Settings) -> float | None:
    """A template CCD's prepared form (:func:`desgw.diff.pipeline_products.
    load_template_products`: sky-subtracted image, weight, mask, WCS, with the default
    difference-imaging settings) made right after its SE, so that no search CCD pays for it
    on the critical path. Seconds taken; None (logged) when it could not be made: the first
    difference imaging that uses the CCD then makes it."""
    import time

    from desgw.diff.pipeline_products import load_template_products
    from desgw.io.product_paths import ccd_product_paths

    a = task.args
    assert task.ccd is not None
    t0 = time.perf_counter()
    p = ccd_product_paths(exposure_outdir(settings.out_root, task.expnum, a), task.expnum,
                          str(a["band"]), int(task.ccd), int(a["rnum"]), int(a["pnum"]))
    try:
        load_template_products(p.immask, psfmodel=p.psfmodel, band=str(a["band"]),
                               expnum=task.expnum, ccdnum=int(task.ccd))
    except Exception as exc:  # noqa: BLE001 - the SE products stand; the diff prepares later
        log.warning("%s: template CCD not prepared (%s); the first difference imaging that "
                    "uses it will prepare it", task.id, describe_error(exc))
        return None
    return time.perf_counter() - t0


def _run_instcal_se(task: Task, settings: Settings, overwrite: bool) -> CCDSummary:
    """SE of one CCD of a CP InstCal exposure (the ``*_ooi_*`` image: ``raw_path``, else found
    under the raw folder by EXPNUM)."""
    from desgw.io.instcal import find_instcal_image

    from .se_instcal import InstCalTask, run_instcal_ccd_task

    a = task.args
    assert task.ccd is not None
    given = a.get("raw_path")
    try:
        image = (str(given) if given and Path(given).is_file()
                 else str(find_instcal_image(settings.raw_dir, task.expnum)))
    except Exception as exc:  # noqa: BLE001 - reported as the task's failure
        return CCDSummary(ccdnum=int(task.ccd), ok=False, error=exc)
    outdir = exposure_outdir(settings.out_root, task.expnum, a)
    return run_instcal_ccd_task(InstCalTask(
        expnum=task.expnum, ccdnum=int(task.ccd), band=str(a["band"]), rnum=int(a["rnum"]),
        pnum=int(a["pnum"]), image_path=image, refcat_dir=str(settings.refcat_dir),
        outdir=str(outdir), overwrite=overwrite))


def _se_outcome(s: CCDSummary) -> Outcome:
    if not s.ok:
        return Outcome("failed", s.reason or "failed", traceback=s.error_traceback,
                       error=s.error)
    detail = {"n_objects": s.n_objects, "zp": s.zp, "astrometric_rms_arcsec":
              s.astrometric_rms_arcsec, "process_seconds": s.timings.get("total"),
              "timings": {str(k): float(v) for k, v in s.timings.items()}}
    if s.skipped:
        return Outcome("skipped", "products exist", detail)
    return Outcome("done", None, detail)


def _dep_problem(result: TaskResult | None) -> str | None:
    if result is None or result.ok:
        return None
    return f"{result.task_id} {result.status}: {result.reason}"


def run_expcalib_task(task: Task, settings: Settings, overwrite: bool,
                 deps: Mapping[str, TaskResult]) -> Outcome:
    """Calibration, corners, exposure quality and database records of one exposure."""
    a = task.args
    ccds = [int(c) for c in a["ccds"]]
    dep_problems = {c: _dep_problem(deps.get(se_task_id(task.expnum, c))) for c in ccds}
    for c in ccds:  # fused search CCDs: usable when their SE products are on disk
        fused = deps.get(diff_task_id(task.expnum, c))
        if se_task_id(task.expnum, c) not in deps and fused is not None:
            dep_problems[c] = None if se_complete(settings.out_root, task.expnum, c, a) \
                else (_dep_problem(fused) or f"{fused.task_id}: no SE products")
    bad = {c: why for c, why in dep_problems.items() if why is not None}
    usable = [c for c in ccds if c not in bad]
    if not usable:
        return Outcome("blocked", "no CCD of the exposure has SE products: "
                       + "; ".join(bad.values()))
    if bad:
        log.warning("exposure %d: calibrating without CCDs %s (SE failed)", task.expnum,
                    sorted(bad))
    report = run_se_exposure(task.expnum, settings=settings, rnum=int(a["rnum"]),
                             pnum=int(a["pnum"]), nite=int(a["nite"]), band=str(a["band"]),
                             cache=str(a["cache"]), schema=str(a["schema"]), ccds=usable,
                             jump_to_calib=True, single_process=True,
                             template_mode=bool(a.get("template", False)),
                             instcal=bool(a.get("instcal", False)))
    for line in report.lines():
        log.info("%s", line)
    detail: dict[str, Any] = {"ccds": usable, "left_out": sorted(bad)}
    if report.expcalib is not None:
        detail.update(zp=report.expcalib.zp, zp_err=report.expcalib.zp_err,
                      n_stars=int(report.expcalib.exposure.n_used))
    q = report.exposure_qc
    if q is not None and hasattr(q, "passed"):
        detail.update(qc_passed=bool(q.passed), qc_reasons=list(q.reasons))
    problems = [f"{stage}: {why}" for stage, why in sorted(report.errors.items())]
    problems += [f"CCD {c}: {why}" for c, why in sorted(report.failed.items())]
    if problems:
        if set(report.errors) == {"expcalib"} and not report.failed and \
                report.corners_path is not None and \
                report.errors["expcalib"].startswith("PhotometricCalibrationError"):
            # only the photometric calibration failed (too few Gaia stars): the corners and
            # the exposure QC are written; the difference imaging can go on (run_diff_task)
            detail["calibration_only"] = True
        return Outcome("failed", "; ".join(problems), detail)
    return Outcome("done", None, detail)


def _calibration_only(result: TaskResult | None) -> bool:
    """An ``expcalib`` task that failed only in the photometric calibration (its corners and
    exposure QC were written): the difference imaging does not need its zeropoints (each CCD's
    comes from its SE products, or from a relative scale: :mod:`desgw.workflow.diff_relzp`)."""
    return result is not None and not result.ok and bool(result.detail.get("calibration_only"))


def degraded_calibrations(graph: TaskGraph, results: Mapping[str, TaskResult]) -> tuple[str, ...]:
    """Ids of the ``expcalib`` tasks that failed only in the photometric calibration (too few
    stars: ``calibration_only``; corners and exposure QC written) while every task depending on
    them finished (done or skipped): their CCDs' zeropoints came from a relative or nominal
    scale (:mod:`desgw.workflow.diff_relzp`), flagged in the products, so the run is degraded,
    not failed (:attr:`desgw.engine.run.RunReport.degraded`)."""
    out = []
    for t in graph.of_kind("expcalib"):
        if not _calibration_only(results.get(t.id)):
            continue
        if all(d.id in results and results[d.id].ok for d in graph.dependents(t.id)):
            out.append(t.id)
    return tuple(out)


def _copy_lists(task: Task, outdir: str | None) -> dict[str, str]:
    """Copies of the star and veto lists under the names given with ``-T``/``-V``."""
    a = task.args
    if outdir is None:
        raise FileNotFoundError("the difference imaging reported no product folder")
    if task.ccd is None:
        raise ValueError(f"task {task.id}: a difference-imaging task needs a CCD")
    d = Path(outdir)
    r, p = int(a["rnum"]), int(a["pnum"])
    out: dict[str, str] = {}
    for key, made in (("snstar", snstar_name(task.expnum, int(task.ccd), r, p)),
                      ("snveto", snveto_name(task.expnum, int(task.ccd), r, p))):
        name = a.get(key)
        if name:
            target = Path(name) if Path(name).is_absolute() else d / name
            atomic_write_text(target, (d / made).read_text(encoding="utf-8"))
            out[key] = str(target)
    return out


def run_diff_task(task: Task, settings: Settings, overwrite: bool,
             deps: Mapping[str, TaskResult]) -> Outcome:
    """Difference imaging of one search CCD (:func:`desgw.workflow.diff_ccd.run_diff_ccd`)."""
    keep_freed_memory()  # the worker reuses the CCD's freed planes (desgw.util.malloc)
    a = task.args
    assert task.ccd is not None
    fused = bool(a.get("fused", False))
    uncalibrated: list[int] = []
    for dep_id, what in ((se_task_id(task.expnum, task.ccd), "search SE"),
                         (expcalib_task_id(task.expnum), "search calibration")):
        if not fused and _calibration_only(deps.get(dep_id)):
            uncalibrated.append(task.expnum)
            continue
        why = None if fused else _dep_problem(deps.get(dep_id))
        if why is not None:
            return Outcome("blocked", f"{what} failed: {why}")
    templates: list[int] = []
    left_out: dict[str, str] = {}
    for e in (int(x) for x in a["templates"]):
        ids = [se_task_id(e, c) for c in a["template_ccds"][str(e)]]
        if _calibration_only(deps.get(expcalib_task_id(e))):
            uncalibrated.append(e)
        else:
            ids.append(expcalib_task_id(e))
        problems = [w for w in (_dep_problem(deps.get(i)) for i in ids) if w is not None]
        if problems:
            left_out[str(e)] = "; ".join(problems)
            log.warning("%s: template %d left out: %s", task.id, e, left_out[str(e)])
        else:
            templates.append(e)
    if not templates:
        return Outcome("blocked", "no template left: " + "; ".join(
            f"{e}: {w}" for e, w in left_out.items()))
    detail: dict[str, Any] = {"templates": templates, "left_out": left_out}
    if uncalibrated:
        detail["uncalibrated_exposures"] = uncalibrated
        log.warning("%s: exposures %s have no photometric calibration (too few stars); "
                    "differencing with the SE zeropoints or relative scales", task.id,
                    uncalibrated)

    # imported here: the difference-imaging stack is loaded only by workers that run a diff
    # task (and the workflow tests put a stand-in module in its place)
    from desgw.workflow.diff_ccd import DiffTask, run_diff_ccd

    diff_task = DiffTask(search_expnum=task.expnum, ccdnum=task.ccd,
                         template_expnums=tuple(templates), settings=settings,
                         rnum=int(a["rnum"]), pnum=int(a["pnum"]), season=int(a["season"]),
                         cache=str(a["cache"]), schema=str(a["schema"]),
                         version=str(a["version"]), band=str(a["band"]), nite=int(a["nite"]),
                         fakes=bool(a.get("fakes", True)), overwrite=bool(overwrite),
                         full_copy=bool(a.get("full_copy", False)))
    summary: DiffSummary
    if fused:
        from desgw.workflow.sediff_ccd import run_sediff_ccd

        try:
            se_task = _ccd_task(task, settings, overwrite)
        except Exception as exc:  # noqa: BLE001 - reported as the task's failure
            return Outcome("failed", f"search SE: {describe_error(exc)}", detail, error=exc)
        se_summary, summary = run_sediff_ccd(se_task, diff_task)
        detail.update(se_ok=bool(se_summary.ok), se_skipped=bool(se_summary.skipped),
                      n_objects=int(se_summary.n_objects), zp=se_summary.zp,
                      se_timings={str(k): float(v) for k, v in se_summary.timings.items()})
        if not se_summary.ok:
            return Outcome("failed", f"search SE: {se_summary.reason or 'failed'}", detail,
                           traceback=se_summary.error_traceback, error=se_summary.error)
    else:
        summary = run_diff_ccd(diff_task)
    detail.update(n_candidates=int(summary.n_candidates), n_fakes=int(summary.n_fakes),
                  n_fakes_recovered=int(summary.n_fakes_recovered),
                  timings={str(k): float(v) for k, v in summary.timings.items()},
                  templates_used=[list(t) for t in summary.templates_used],
                  flags=list(summary.flags), m50=float(summary.m50))
    if not summary.ok:
        if summary.error_kind:
            detail["error_kind"] = summary.error_kind
        return Outcome("failed", summary.reason or "difference imaging failed", detail,
                       error=summary.error)
    if a.get("snstar") or a.get("snveto"):
        try:
            detail["lists"] = _copy_lists(task, summary.outdir)
        except OSError as exc:
            return Outcome("failed", f"star/veto list copies: {describe_error(exc)}", detail,
                           error=exc)
    if summary.skipped:
        return Outcome("skipped", "products exist", detail)
    return Outcome("done", None, detail)


#: The runner of each task kind.
RUNNERS: dict[str, Runner] = {"se": run_se_task, "expcalib": run_expcalib_task,
                             "diff": run_diff_task}


_COMMON_ARGS = ("band", "nite", "rnum", "pnum", "cache", "schema")
#: The arguments each task kind of :data:`RUNNERS` cannot run without.
REQUIRED_ARGS: dict[str, tuple[str, ...]] = {
    "se": _COMMON_ARGS,
    "expcalib": (*_COMMON_ARGS, "ccds"),
    "diff": (*_COMMON_ARGS, "season", "version", "templates", "template_ccds"),
}


def check_task_args(graph: TaskGraph, *, source: str | None = None,
                    kinds: Mapping[str, tuple[str, ...]] = REQUIRED_ARGS) -> None:
    """Refuse a graph whose tasks lack arguments their runner needs (or a CCD, for the per-CCD
    kinds), before anything runs.

    Raises
    ------
    GraphError
        Naming ``source`` (the graph file), the first such task and what it lacks.
    """
    for t in graph.tasks:
        need = kinds.get(t.kind)
        if need is None:
            continue
        missing = [k for k in need if k not in t.args]
        if t.kind in ("se", "diff") and t.ccd is None:
            missing.insert(0, "ccd")
        if missing:
            raise GraphError(source, None, f"task {t.id} ({t.kind}) lacks argument(s) "
                             f"{', '.join(missing)}")


def run_pipeline(graph: TaskGraph, *, settings: Settings,
                 runners: Mapping[str, Callable[..., Any]] | None = None,
                 **options: Any) -> RunReport:
    """Run a task graph of the pipeline on the engine (:func:`desgw.engine.run.run_graph`) with
    :data:`RUNNERS`.

    Parameters
    ----------
    graph : TaskGraph
    settings : Settings
    runners : mapping of kind to function, optional
        Replace the runner of some task kinds (module-level functions with the signature of
        :func:`run_se_task`); for tests and custom stages.
    **options
        The other keywords of :func:`~desgw.engine.run.run_graph` (scheduler, cluster,
        workers, overwrite, retries, progress, log_dir, cluster_opts, db_timeout_s).

    Returns
    -------
    RunReport

    Raises
    ------
    GraphError
        A task lacks an argument its (default) runner needs (:func:`check_task_args`).
    """
    replaced = set(runners or {})
    check_task_args(graph, kinds={k: v for k, v in REQUIRED_ARGS.items() if k not in replaced})
    options.setdefault("degraded_rule", degraded_calibrations)
    return run_graph(graph, settings=settings, runners={**RUNNERS, **dict(runners or {})},
                     **options)
