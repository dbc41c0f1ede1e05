"""What one task of a :class:`~desgw.workflow.graph.TaskGraph` does on a worker.

:func:`execute_task` is the function the engine ships to Dask workers (or calls itself in
single-process mode). It opens the task's log file, calls the runner of the task's kind, and
returns a small picklable :class:`TaskResult`. It never raises for a failure of the task
itself (bad input, an algorithm that gives up): that is a ``"failed"`` result with the reason.
It raises :class:`TransientTaskError` only for environment failures worth another attempt
(:data:`TRANSIENT_ERRORS`: file system and network errors, an unreachable database), so the
engine's retries re-run it.

Runners (``runner(task, settings, overwrite, deps) -> Outcome``), by kind:

``se``
    :func:`desgw.workflow.se_exposure.run_ccd_task` on the CCD. Args: ``band``, ``nite``,
    ``rnum``, ``pnum``, ``cache``, ``schema``, ``template`` (bool), optional ``raw_path``.
``expcalib``
    :func:`desgw.workflow.se_exposure.run_se_exposure` with ``jump_to_calib`` on the CCDs whose
    SE succeeded: photometric calibration (Zero/allZP/ZP CSV files), ``{expnum}.out``, the
    exposure quality (assessed unless ``template``) and the database records. Args as ``se``
    plus ``ccds``. Blocked when no CCD succeeded.
``diff``
    :func:`desgw.workflow.diff_ccd.run_diff_ccd` (imported when the task runs; it makes the
    star and veto lists, subtracts, detects, writes the products, the database records and
    its completion marker). Args as ``se`` plus ``season``, ``version``, ``fakes``,
    ``full_copy`` (the original ``-F``), ``templates`` (exposure numbers), ``template_ccds``
    (``{expnum: [ccd, ...]}``), ``snstar``/``snveto`` (the original ``-T``/``-V``: the names
    the star and veto lists are also given, next to the ones run_diff_ccd writes). Blocked
    when the search CCD's SE or the search calibration failed; a template whose SE or
    calibration failed is left out (as the original verifySE did); blocked when no template
    is left.

Statuses: ``"done"`` (ran and succeeded), ``"skipped"`` (products existed), ``"failed"``,
``"blocked"`` (not run because something it needs failed; the reason says what).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from desgw.db.urls import redact_url, scrub_secret
from desgw.io.atomic import atomic_write_text

from .engine_products import exposure_outdir
from .graph import Task, expcalib_task_id, se_task_id
from .settings import Settings

__all__ = [
    "OK_STATUSES",
    "RUNNERS",
    "STATUSES",
    "TRANSIENT_ERRORS",
    "Outcome",
    "TaskPayload",
    "TaskResult",
    "TransientTaskError",
    "attempt_number",
    "execute_task",
    "is_transient",
    "run_diff",
    "run_expcalib",
    "run_se",
]

log = logging.getLogger(__name__)

#: Task statuses.
STATUSES: tuple[str, ...] = ("done", "skipped", "failed", "blocked")
#: Statuses whose products exist.
OK_STATUSES: frozenset[str] = frozenset({"done", "skipped"})
#: Exception type names of environment failures that are worth another attempt.
TRANSIENT_ERRORS: frozenset[str] = frozenset({
    "OSError", "IOError", "EnvironmentError", "TimeoutError", "ConnectionError",
    "ConnectionResetError", "ConnectionRefusedError", "ConnectionAbortedError",
    "BrokenPipeError", "InterruptedError", "BlockingIOError", "DatabaseConnectionError",
})


class TransientTaskError(Exception):
    """A task failed for a reason worth retrying; ``str(err)`` is ``"task: Type: message"``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (TransientTaskError, (str(self),))


def is_transient(error: str | BaseException | None) -> bool:
    """True when an error (an exception, or ``"Type: message"`` text) is an environment failure
    worth retrying (:data:`TRANSIENT_ERRORS`).

    Subclasses that name a definite problem (``FileNotFoundError``, ``PermissionError``,
    desgw's input errors) are not transient: only the exact type names listed count.
    """
    if error is None:
        return False
    if isinstance(error, BaseException):
        name = type(error).__name__
    else:
        name = str(error).split(":", 1)[0].strip()
    return name in TRANSIENT_ERRORS


@dataclass(frozen=True)
class Outcome:
    """What a runner returns (the engine turns it into a :class:`TaskResult`).

    Attributes
    ----------
    status : str
        One of :data:`STATUSES`.
    reason : str or None
        Why a task failed, was blocked or skipped.
    detail : dict
        Small JSON facts (numbers of objects, zeropoints, candidates...).
    traceback : str or None
        The failure's traceback (goes to the task log, not the result).
    """

    status: str
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    traceback: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class TaskResult:
    """The result of one task (small and picklable).

    Attributes
    ----------
    task_id, kind : str
    expnum : int
    ccd : int or None
    status : str
        One of :data:`STATUSES`.
    reason : str or None
        Failure, block or skip reason (never holds a database password).
    seconds : float
        Run time of the task (0 for tasks not run).
    started, finished : float
        Unix times (0 for tasks not run).
    attempt : int
        Which attempt of this run produced the result (1 = first).
    worker : str
        ``host:pid`` that ran it (empty when not run).
    log_path : str or None
        The task's log file.
    detail : dict
        Small JSON facts from the runner.
    """

    task_id: str
    kind: str
    expnum: int
    ccd: int | None
    status: str
    reason: str | None = None
    seconds: float = 0.0
    started: float = 0.0
    finished: float = 0.0
    attempt: int = 0
    worker: str = ""
    log_path: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the task's products exist (done or skipped)."""
        return self.status in OK_STATUSES

    def to_dict(self) -> dict[str, Any]:
        """JSON values."""
        return dataclasses.asdict(self)


Runner = Callable[[Task, Settings, bool, Mapping[str, TaskResult]], Outcome]


@dataclass(frozen=True)
class TaskPayload:
    """Everything a worker needs to run one task (picklable; its repr hides the database
    password, which Dask may log).

    Attributes
    ----------
    task : Task
    settings : Settings
    overwrite : bool
        Redo products that exist.
    log_dir : str
        Folder of the per-task log files.
    run_id : str
        Id of the engine run (marks the attempts in the log files).
    runner : callable or None
        Runner to use instead of :data:`RUNNERS` ``[task.kind]`` (a module-level function).
    retry_transient : bool
        Raise :class:`TransientTaskError` for transient failures (the engine retries them).
    """

    task: Task
    settings: Settings
    overwrite: bool
    log_dir: str
    run_id: str
    runner: Any = None
    retry_transient: bool = True

    def __repr__(self) -> str:
        return (f"TaskPayload({self.task.id}, out_root={str(self.settings.out_root)!r}, "
                f"db={redact_url(self.settings.db_url) if self.settings.db_url else None!r}, "
                f"overwrite={self.overwrite}, run_id={self.run_id!r})")


# ----------------------------------------------------------------------------- logging
class _ScrubFilter(logging.Filter):
    """Keeps the records of one thread and masks the database password in them."""

    def __init__(self, thread: int, secret_url: str | None) -> None:
        super().__init__()
        self.thread = thread
        self.secret_url = secret_url

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self.thread:
            return False
        if self.secret_url:
            record.msg = scrub_secret(record.getMessage(), self.secret_url)
            record.args = ()
        return True


@contextlib.contextmanager
def _task_log(path: Path, secret_url: str | None) -> Iterator[None]:
    """Send the desgw log records of this thread to ``path`` (append) while the task runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    handler.addFilter(_ScrubFilter(threading.get_ident(), secret_url))
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("desgw")
    old_level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()


def attempt_number(path: Path, run_id: str) -> int:
    """1 + the attempts of this run already recorded in the task's log file."""
    marker = f"attempt of run {run_id}"
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return 1 + sum(1 for line in f if marker in line)
    except OSError:
        return 1


def execute_task(payload: TaskPayload, *dep_results: TaskResult) -> TaskResult:
    """Run one task (on a worker or in this process); see the module docstring.

    Parameters
    ----------
    payload : TaskPayload
    *dep_results : TaskResult
        Results of the task's dependencies (any order).

    Returns
    -------
    TaskResult

    Raises
    ------
    TransientTaskError
        A transient failure and ``payload.retry_transient``.
    """
    task, settings = payload.task, payload.settings
    secret = settings.db_url
    log_path = Path(payload.log_dir) / f"{task.id}.log"
    attempt = attempt_number(log_path, payload.run_id)
    deps = {r.task_id: r for r in dep_results}
    runner: Runner = payload.runner if payload.runner is not None else RUNNERS[task.kind]
    started = time.time()
    t0 = time.perf_counter()
    with _task_log(log_path, secret):
        log.info("=== %s: attempt of run %s (#%d) on %s pid %d", task.id, payload.run_id,
                 attempt, socket.gethostname(), os.getpid())
        try:
            outcome = runner(task, settings, payload.overwrite, deps)
        except Exception as exc:  # noqa: BLE001 - a runner bug must not take the run down
            outcome = Outcome("failed", f"{type(exc).__name__}: {exc}",
                              traceback=traceback.format_exc())
        reason = None if outcome.reason is None else scrub_secret(outcome.reason, secret)
        if outcome.traceback:
            log.error("%s traceback:\n%s", task.id, outcome.traceback)
        seconds = time.perf_counter() - t0
        log.info("=== %s: %s%s (%.2f s)", task.id, outcome.status,
                 f": {reason}" if reason else "", seconds)
    if outcome.status == "failed" and payload.retry_transient and is_transient(reason):
        raise TransientTaskError(f"{task.id}: {reason}")
    return TaskResult(task_id=task.id, kind=task.kind, expnum=task.expnum, ccd=task.ccd,
                      status=outcome.status, reason=reason, seconds=seconds, started=started,
                      finished=time.time(), attempt=attempt,
                      worker=f"{socket.gethostname()}:{os.getpid()}", log_path=str(log_path),
                      detail=dict(outcome.detail))


# ----------------------------------------------------------------------------- runners
def _raw_path(task: Task, settings: Settings) -> str:
    given = task.args.get("raw_path")
    if given and Path(given).is_file():
        return str(given)
    return str(settings.raw_path(task.expnum))


def run_se(task: Task, settings: Settings, overwrite: bool,
           deps: Mapping[str, TaskResult]) -> Outcome:
    """SE of one CCD (:func:`desgw.workflow.se_exposure.run_ccd_task`)."""
    from .se_exposure import CCDTask, run_ccd_task

    a = task.args
    assert task.ccd is not None
    try:
        calib = settings.calib_paths(str(a["band"]))
        raw = _raw_path(task, settings)
    except Exception as exc:  # noqa: BLE001 - reported as the task's failure
        return Outcome("failed", f"{type(exc).__name__}: {exc}")
    outdir = exposure_outdir(settings.out_root, task.expnum, a)
    ccd_task = CCDTask(expnum=task.expnum, ccdnum=task.ccd, band=str(a["band"]),
                       rnum=int(a["rnum"]), pnum=int(a["pnum"]), raw_path=raw,
                       bias_path=str(calib.bias), flat_path=str(calib.flat),
                       bpm_path=None if calib.bpm is None else str(calib.bpm),
                       linearity_path=None if calib.linearity is None else str(calib.linearity),
                       refcat_dir=str(settings.refcat_dir), outdir=str(outdir),
                       overwrite=overwrite)
    s = run_ccd_task(ccd_task)
    if not s.ok:
        return Outcome("failed", s.error or "failed", traceback=s.error_traceback)
    detail = {"n_objects": s.n_objects, "zp": s.zp, "astrometric_rms_arcsec":
              s.astrometric_rms_arcsec, "process_seconds": s.timings.get("total")}
    if s.skipped:
        return Outcome("skipped", "products exist", detail)
    return Outcome("done", None, detail)


def _dep_problem(result: TaskResult | None) -> str | None:
    if result is None or result.ok:
        return None
    return f"{result.task_id} {result.status}: {result.reason}"


def run_expcalib(task: Task, settings: Settings, overwrite: bool,
                 deps: Mapping[str, TaskResult]) -> Outcome:
    """Calibration, corners, exposure quality and database records of one exposure."""
    from .se_exposure import run_se_exposure

    a = task.args
    ccds = [int(c) for c in a["ccds"]]
    bad = {c: _dep_problem(deps.get(se_task_id(task.expnum, c))) for c in ccds}
    bad = {c: why for c, why in bad.items() if why is not None}
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
                             template_mode=bool(a.get("template", False)))
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
        return Outcome("failed", "; ".join(problems), detail)
    return Outcome("done", None, detail)


def _copy_lists(task: Task, outdir: str | None) -> dict[str, str]:
    """Copies of the star and veto lists under the names given with ``-T``/``-V``."""
    from desgw.diff.starcat import snstar_name, snveto_name

    a = task.args
    if outdir is None:
        raise FileNotFoundError("the difference imaging reported no product folder")
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


def run_diff(task: Task, settings: Settings, overwrite: bool,
             deps: Mapping[str, TaskResult]) -> Outcome:
    """Difference imaging of one search CCD (:func:`desgw.workflow.diff_ccd.run_diff_ccd`)."""
    a = task.args
    assert task.ccd is not None
    for dep_id, what in ((se_task_id(task.expnum, task.ccd), "search SE"),
                         (expcalib_task_id(task.expnum), "search calibration")):
        why = _dep_problem(deps.get(dep_id))
        if why is not None:
            return Outcome("blocked", f"{what} failed: {why}")
    templates: list[int] = []
    left_out: dict[str, str] = {}
    for e in (int(x) for x in a["templates"]):
        ids = [se_task_id(e, c) for c in a["template_ccds"][str(e)]] + [expcalib_task_id(e)]
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

    from .diff_ccd import DiffTask, run_diff_ccd

    diff_task = DiffTask(search_expnum=task.expnum, ccdnum=task.ccd,
                         template_expnums=tuple(templates), settings=settings,
                         rnum=int(a["rnum"]), pnum=int(a["pnum"]), season=int(a["season"]),
                         cache=str(a["cache"]), schema=str(a["schema"]),
                         version=str(a["version"]), band=str(a["band"]), nite=int(a["nite"]),
                         fakes=bool(a.get("fakes", True)), overwrite=bool(overwrite),
                         full_copy=bool(a.get("full_copy", False)))
    summary = run_diff_ccd(diff_task)
    detail.update(n_candidates=int(summary.n_candidates), n_fakes=int(summary.n_fakes),
                  n_fakes_recovered=int(summary.n_fakes_recovered),
                  timings={str(k): float(v) for k, v in dict(summary.timings or {}).items()},
                  templates_used=[list(t) for t in getattr(summary, "templates_used", ())],
                  flags=list(getattr(summary, "flags", ())),
                  m50=float(getattr(summary, "m50", math.nan)))
    if not summary.ok:
        kind = getattr(summary, "error_kind", None)
        if kind:
            detail["error_kind"] = kind
        return Outcome("failed", str(summary.error or "difference imaging failed"), detail)
    if a.get("snstar") or a.get("snveto"):
        try:
            detail["lists"] = _copy_lists(task, getattr(summary, "outdir", None))
        except OSError as exc:
            return Outcome("failed", f"star/veto list copies: {type(exc).__name__}: {exc}",
                           detail)
    if getattr(summary, "skipped", False):
        return Outcome("skipped", "products exist", detail)
    return Outcome("done", None, detail)


#: The runner of each task kind.
RUNNERS: dict[str, Runner] = {"se": run_se, "expcalib": run_expcalib, "diff": run_diff}
