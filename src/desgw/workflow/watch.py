"""``desgw watch``: process a night live, exposure by exposure, search exposures first.

:func:`run_watch` is a long-running service on a warm Dask cluster (a ``LocalCluster`` of
worker processes by default, or the scheduler at an address). It loops:

1. **Landing** (:class:`desgw.io.landing.LandingWatch`): a raw file in the watched folder is
   read once it is complete: final name (copy under a temporary name, then rename), whole FITS
   structure, size and time unchanged over ``settle_s``.
2. **Ingest and classify** (:func:`desgw.db.ingest_raw`): calibration, test and unusable
   exposures are rejected with the reason (printed, recorded, skipped); a science exposure is
   a *search* exposure when its night is ``search_nite`` or later (default: tonight, DES
   ``nite`` of the current time), else a *template*.
3. **Plan** by the DAGMaker rules: a template gets SE of its CCDs and its calibration (template
   mode); a search exposure gets :func:`desgw.workflow.dagmaker.make_dag`: SE, calibration and
   difference imaging per CCD against the templates the rules pick from the database. Tasks of
   the same id are the same work: a template task the search needs is the one already queued.
   A search CCD that no template overlaps yet is planned again when a template lands.
4. **Run, urgent first**: the service keeps the ready tasks (those whose dependencies have
   finished) in its own queue and hands Dask at most one task per worker thread, highest
   priority first, with the same number as the Dask ``priority``: search exposures
   (:data:`PRIORITY_SEARCH`), then templates some search needs (:data:`PRIORITY_NEEDED`),
   then the others (:data:`PRIORITY_BACKGROUND`); ties go to the earlier exposure. Queued
   template work therefore waits for a search exposure that lands after it (a task already
   running is not interrupted). A difference-imaging task waits for the SE and calibration of
   its templates: it is ready only when they have finished; it never fails for them.
5. **Latency**: per exposure, file landed -> ingested -> SE done -> candidates in the database
   (:mod:`desgw.db.latency`, table ``watch_latency``), a line per exposure through ``echo``
   and the report page (:func:`desgw.report.latency.write_watch_report`) rewritten after each
   exposure.

**Resume**: an exposure the table records as finished (or rejected) is not looked at again; any
other is planned again, and a task whose products exist is skipped (the engine's rule,
:func:`desgw.engine.run.task_complete`), unless a task it depends on ran again. **Failures**: a
bad file is rejected and reported, a failed CCD task is reported and its exposure goes on
without it (the runners' rules, :mod:`desgw.workflow.tasks`). **Stopping**: after
``max_exposures`` exposures have finished, after ``idle_s`` seconds with nothing landing or
running, or on SIGINT/SIGTERM: no new task is started and the running ones are waited for.
**Memory**: the service holds only task records; each worker process of the local cluster has
a memory limit of :data:`desgw.engine.run.WORKER_MEMORY_GB` (Dask restarts a worker above it;
its task is retried and then reported), and at most one task per worker thread is submitted.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from desgw.db.errors import DatabaseError
from desgw.db.latency import (
    ExposureLatency,
    ensure_latency_table,
    get_latencies,
    record_latency,
)
from desgw.engine.graph import Task, expcalib_task_id, se_task_id
from desgw.engine.run import WORKER_MEMORY_GB, task_complete
from desgw.engine.tasks import Runner, TaskPayload, TaskResult, execute_task
from desgw.errors import DesgwInputError, describe_error
from desgw.io.landing import LandingWatch
from desgw.io.settings import Settings
from desgw.report.latency import latency_percentiles, write_watch_report

from .dagmaker import make_dag, raw_file_ccds
from .dagmaker_rc import DagmakerConfig
from .tasks import RUNNERS

__all__ = [
    "PRIORITY_BACKGROUND",
    "PRIORITY_NEEDED",
    "PRIORITY_SEARCH",
    "WatchSummary",
    "run_watch",
    "tonight_nite",
]

log = logging.getLogger(__name__)

#: Dask priorities (higher runs first) of the three classes of work.
PRIORITY_SEARCH, PRIORITY_NEEDED, PRIORITY_BACKGROUND = 100, 50, 0


def tonight_nite(now: float | None = None) -> int:
    """DES ``nite`` (YYYYMMDD) of a Unix time (default: now)."""
    import datetime as _dt

    from desgw.io.raw import nite_from_datetime

    t = _dt.datetime.fromtimestamp(time.time() if now is None else now, _dt.UTC)
    return nite_from_datetime(t.replace(tzinfo=None))


@dataclass
class _Entry:
    task: Task
    priority: int
    seq: int
    state: str = "waiting"  # waiting, running, finished
    result: TaskResult | None = None
    submitted: float = 0.0


@dataclass
class _Exposure:
    expnum: int
    role: str
    raw_path: str
    landed_at: float
    ingested_at: float
    seq: int
    task_ids: list[str] = field(default_factory=list)
    no_template_ccds: list[int] = field(default_factory=list)
    se_done_at: float | None = None
    finished: bool = False


@dataclass(frozen=True)
class WatchSummary:
    """What :func:`run_watch` did in this session.

    Attributes
    ----------
    processed : tuple of int
        Exposures finished in this session, in finishing order.
    rejected : tuple of (str, str)
        Files rejected in this session: ``(path, reason)``.
    latencies : tuple of ExposureLatency
        Every row of ``watch_latency`` at the end (earlier sessions included).
    task_starts : dict of str to float
        Unix start time of every task run in this session (skipped ones excluded).
    task_status : dict of str to str
        Final status of every task of this session (``done``, ``skipped``, ``failed``,
        ``blocked``).
    stop_reason : str
        ``"max_exposures"``, ``"idle"`` or ``"signal"``.
    report_path : Path or None
    wall_seconds : float
    """

    processed: tuple[int, ...]
    rejected: tuple[tuple[str, str], ...]
    latencies: tuple[ExposureLatency, ...]
    task_starts: dict[str, float]
    task_status: dict[str, str]
    stop_reason: str
    report_path: Path | None
    wall_seconds: float

    def percentiles(self) -> dict[str, float]:
        """p50 / p95 / max (s) of landed -> candidates of the search exposures."""
        return latency_percentiles(self.latencies)


#: Modules every worker imports when the service starts (:func:`_preload`).
PRELOAD_MODULES: tuple[str, ...] = ("desgw.workflow.se_ccd", "desgw.workflow.se_exposure",
                                    "desgw.workflow.diff_ccd")


def _preload() -> list[str]:
    """Import :data:`PRELOAD_MODULES` in this (worker) process; names of those that failed."""
    import importlib

    failed = []
    for name in PRELOAD_MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - reported, the task will fail with it later
            failed.append(f"{name}: {describe_error(exc)}")
    return failed


def _open_client(scheduler: str | None, workers: int | None, retries: int) -> tuple[Any, Any]:
    """(client, own cluster or None)."""
    from dask.distributed import Client

    if scheduler not in (None, "local"):
        return Client(scheduler, timeout="30s"), None
    from desgw.engine.run import default_workers, start_local_cluster

    n = int(workers) if workers else default_workers()
    cluster = start_local_cluster(n, retries=retries, memory_limit=f"{WORKER_MEMORY_GB}GB")
    return Client(cluster), cluster


class _Service:
    def __init__(self, raw_dir: Path, settings: Settings, config: DagmakerConfig, *,
                 search_nite: int, client: Any, runners: Mapping[str, Runner], poll_s: float,
                 settle_s: float, max_exposures: int | None, idle_s: float | None,
                 report_dir: Path | None, echo: Callable[[str], None], fakes: bool,
                 retries: int, stop: threading.Event, blacklist: Iterable[int]) -> None:
        from desgw.db import connect

        self.raw_dir = raw_dir
        self.settings = settings
        self.config = config
        self.search_nite = int(search_nite)
        self.client = client
        self.runners = runners
        self.poll_s = poll_s
        self.max_exposures = max_exposures
        self.idle_s = idle_s
        self.report_dir = report_dir
        self.echo = echo
        self.fakes = fakes
        self.retries = retries
        self.stop = stop
        self.blacklist = frozenset(int(b) for b in blacklist)
        assert settings.db_url is not None
        self.db = connect(settings.db_url)
        ensure_latency_table(self.db)
        self.landing = LandingWatch(raw_dir, settle_s=settle_s)
        self.run_id = time.strftime("%Y%m%dT%H%M%S") + "-watch-" + secrets.token_hex(3)
        self.log_dir = settings.out_root / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, _Entry] = {}
        self.exposures: dict[int, _Exposure] = {}
        self.running: dict[Any, str] = {}
        self.n_submit: dict[str, int] = {}
        self.seq = 0
        self.processed: list[int] = []
        self.rejected: list[tuple[str, str]] = []
        self.task_starts: dict[str, float] = {}
        self.report_path: Path | None = None
        self.last_activity = time.time()
        self.finished_paths: set[str] = set()
        self.previous: dict[int, ExposureLatency] = {}
        for row in get_latencies(self.db):
            self.previous[row.expnum] = row
            if row.status in ("done", "failed", "rejected") and row.raw_path:
                self.finished_paths.add(os.path.realpath(row.raw_path))

    # ----------------------------------------------------------------- latency records
    def _record(self, exp: _Exposure, *, status: str | None = None) -> ExposureLatency:
        own = [self.entries[t] for t in exp.task_ids]
        results = [e.result for e in own if e.result is not None]
        bad = [r for r in results if not r.ok]
        diffs = [r for r in results if r.kind == "diff"]
        n_cand = sum(int(r.detail.get("n_candidates", 0)) for r in diffs if r.ok)
        cand_at = None
        if exp.role == "search" and exp.finished and diffs:
            cand_at = max(r.finished or time.time() for r in diffs)
        reasons = [f"{r.task_id} {r.status}: {r.reason}" for r in bad]
        if exp.no_template_ccds:
            reasons.append(f"no template overlaps CCDs {exp.no_template_ccds} yet")
        if status is None:
            status = ("failed" if bad else "done") if exp.finished else "waiting"
        ccds = {self.entries[t].task.ccd for t in exp.task_ids
                if self.entries[t].task.ccd is not None}
        row = ExposureLatency(
            expnum=exp.expnum, role=exp.role, status=status,
            reason="; ".join(reasons)[:2000] or None, raw_path=exp.raw_path,
            n_ccds=len(ccds), n_failed=len(bad),
            n_candidates=n_cand if exp.role == "search" and diffs else None,
            landed_at=exp.landed_at, ingested_at=exp.ingested_at, se_done_at=exp.se_done_at,
            candidates_at=cand_at,
            finished_at=max((r.finished or time.time() for r in results), default=None)
            if exp.finished else None)
        record_latency(self.db, row)
        return row

    def _write_report(self) -> None:
        if self.report_dir is None:
            return
        try:
            self.report_path = write_watch_report(self.report_dir, get_latencies(self.db))
        except OSError as exc:
            log.error("cannot write the watch report: %s", exc)

    # ----------------------------------------------------------------- planning
    def _add(self, task: Task, priority: int, exp: _Exposure | None) -> None:
        have = self.entries.get(task.id)
        if have is not None:
            have.priority = max(have.priority, priority)
            return
        self.seq += 1
        self.entries[task.id] = _Entry(task, priority, self.seq)
        if exp is not None and task.expnum == exp.expnum:
            exp.task_ids.append(task.id)

    def _template_tasks(self, exp: _Exposure, rec: Any) -> list[Task]:
        from desgw.instrument import DEFAULT_CCDNUMS

        present = raw_file_ccds(exp.raw_path)
        ccds = [c for c in DEFAULT_CCDNUMS if present is None or c in present]
        cfg = self.config
        args = {"band": rec.band, "nite": int(rec.nite), "rnum": cfg.rnum, "pnum": cfg.pnum,
                "cache": cfg.destcache, "schema": cfg.schema, "template": True,
                "raw_path": exp.raw_path}
        tasks = [Task(se_task_id(exp.expnum, c), "se", exp.expnum, c, (),
                      {**args, "extra_opts": list(cfg.temp_opts)}) for c in ccds]
        tasks.append(Task(expcalib_task_id(exp.expnum), "expcalib", exp.expnum, None,
                          tuple(t.id for t in tasks), {**args, "ccds": ccds}))
        return tasks

    def _plan_search(self, exp: _Exposure, ccds: list[int] | None = None) -> None:
        graph = make_dag(exp.expnum, settings=self.settings, config=self.config, db=self.db,
                         blacklist=self.blacklist, ccds=ccds, calibrate=True,
                         fakes=self.fakes)
        templates = {int(t["expnum"]) for t in graph.meta.get("templates", [])}
        for t in graph.tasks:
            if t.expnum == exp.expnum:
                self._add(t, PRIORITY_SEARCH, exp)
            else:
                owner = self.exposures.get(t.expnum)
                self._add(t, PRIORITY_NEEDED, owner)
        for e in self.entries.values():  # every queued task of a needed template moves up
            if e.task.expnum in templates and e.state == "waiting":
                e.priority = max(e.priority, PRIORITY_NEEDED)
        exp.no_template_ccds = [int(c) for c in graph.meta.get("no_template_ccds", [])]
        names = ", ".join(str(t) for t in sorted(templates)) or "none yet"
        self.echo(f"{exp.expnum} search: planned {len(exp.task_ids)} tasks, templates {names}"
                  + (f"; CCDs {exp.no_template_ccds} wait for a template"
                     if exp.no_template_ccds else ""))

    def _land(self, path: Path) -> None:
        from desgw.db import get_exposure, ingest_raw

        landed = path.stat().st_mtime
        report = ingest_raw(self.db, [path])
        ingested = time.time()
        self.last_activity = ingested
        if report.rejected:
            why = report.rejected[0][1]
            self.rejected.append((str(path), why))
            expnum = _expnum_of(path)
            if expnum is not None:
                record_latency(self.db, ExposureLatency(
                    expnum=expnum, role="rejected", status="rejected", reason=why[:2000],
                    raw_path=str(path), landed_at=landed, ingested_at=ingested))
            self.echo(f"rejected {path.name}: {why}")
            self._write_report()
            return
        (expnum,) = report.registered
        rec = get_exposure(self.db, expnum)
        assert rec is not None
        prev = self.previous.get(expnum)
        if prev is not None and prev.landed_at is not None:  # resumed: keep the first times
            landed = prev.landed_at
            ingested = prev.ingested_at or ingested
        role = "search" if int(rec.nite) >= self.search_nite else "template"
        exp = self.exposures.get(expnum)  # a file tried again after a database error
        if exp is None:
            self.seq += 1
            exp = _Exposure(expnum, role, str(path), landed, ingested, self.seq)
            self.exposures[expnum] = exp
        try:
            if role == "template":
                for t in self._template_tasks(exp, rec):
                    self._add(t, PRIORITY_BACKGROUND, exp)
                self.echo(f"{expnum} template: planned {len(exp.task_ids)} tasks")
                for other in list(self.exposures.values()):
                    if other.role == "search" and other.no_template_ccds and not other.finished:
                        self._plan_search(other, other.no_template_ccds)
                        self._record(other)
            else:
                self._plan_search(exp)
        except (DesgwInputError, OSError) as exc:
            why = describe_error(exc)
            self.echo(f"{expnum} {role}: cannot plan it: {why}")
            record_latency(self.db, ExposureLatency(
                expnum=expnum, role=role, status="failed", reason=why[:2000],
                raw_path=str(path), landed_at=landed, ingested_at=ingested))
            exp.finished = True
            return
        self._record(exp)
        self._check_exposures()

    # ----------------------------------------------------------------- running
    def _ready(self) -> list[tuple[int, int, str]]:
        heap: list[tuple[int, int, str]] = []
        for tid, e in self.entries.items():
            if e.state != "waiting":
                continue
            if all(d in self.entries and self.entries[d].state == "finished"
                   for d in e.task.deps):
                heapq.heappush(heap, (-e.priority, e.seq, tid))
        return heap

    def _finish(self, tid: str, result: TaskResult) -> None:
        e = self.entries[tid]
        e.state = "finished"
        e.result = result
        self.last_activity = time.time()
        if result.status in ("failed", "blocked"):
            self.echo(f"  {result.status.upper()} {tid}: {result.reason}")

    def _not_run(self, e: _Entry, status: str, reason: str,
                 error: BaseException | None = None) -> TaskResult:
        t = e.task
        return TaskResult(task_id=t.id, kind=t.kind, expnum=t.expnum, ccd=t.ccd,
                          status=status, reason=reason, finished=time.time(),
                          log_path=str(self.log_dir / f"{t.id}.log"), error=error)

    def _capacity(self) -> int:
        if self.client is None:
            return 1
        try:
            return max(1, sum(self.client.nthreads().values()))
        except Exception:  # noqa: BLE001 - a scheduler that does not answer: one at a time
            return 1

    def _submit_ready(self) -> None:
        heap = self._ready()
        free = self._capacity() - len(self.running)
        while heap and (free > 0 or self.client is None):
            _, _, tid = heapq.heappop(heap)
            e = self.entries[tid]
            deps = [r for d in e.task.deps if (r := self.entries[d].result) is not None]
            if not any(r.status == "done" for r in deps) and \
                    task_complete(e.task, self.settings):
                self._finish(tid, self._not_run(e, "skipped", "products exist"))
                heap = self._ready()
                continue
            payload = TaskPayload(task=e.task, settings=self.settings, overwrite=False,
                                  log_dir=str(self.log_dir), run_id=self.run_id,
                                  runner=self.runners[e.task.kind], retry_transient=True)
            e.state = "running"
            e.submitted = time.time()
            if self.client is None:  # one after the other in this process
                try:
                    result = execute_task(payload, *deps)
                except Exception as exc:  # noqa: BLE001 - transient after no retry
                    result = self._not_run(e, "failed", describe_error(exc), exc)
                self.task_starts[tid] = result.started or e.submitted
                self._finish(tid, result)
                self._check_exposures()
                return
            self.n_submit[tid] = self.n_submit.get(tid, 0) + 1
            fut = self.client.submit(execute_task, payload, *deps, priority=e.priority,
                                     key=f"{tid}-{self.run_id}-{self.n_submit[tid]}",
                                     pure=False, retries=self.retries)
            self.running[fut] = tid
            free -= 1

    def _collect(self, timeout: float) -> None:
        if not self.running:
            if self.client is not None or not self._ready():
                self.stop.wait(timeout)
            return
        from dask.distributed import TimeoutError as DaskTimeoutError
        from dask.distributed import wait

        try:
            done, _ = wait(list(self.running), timeout=timeout, return_when="FIRST_COMPLETED")
        except (TimeoutError, DaskTimeoutError):
            return
        for fut in done:
            tid = self.running.pop(fut)
            e = self.entries[tid]
            if fut.status == "finished":
                result = fut.result()
            else:
                try:
                    exc: BaseException = fut.exception()
                except BaseException as err:  # noqa: BLE001 - cancelled futures raise
                    exc = err
                result = self._not_run(e, "failed", describe_error(exc))
            self.task_starts[tid] = result.started or e.submitted
            self._finish(tid, result)
        self._check_exposures()

    def _check_exposures(self) -> None:
        for exp in self.exposures.values():
            if exp.finished:
                continue
            own = [self.entries[t] for t in exp.task_ids]
            se = [e for e in own if e.task.kind == "se"]
            if exp.se_done_at is None and se and all(e.state == "finished" for e in se):
                exp.se_done_at = max(e.result.finished or time.time() for e in se
                                     if e.result is not None)
                self._record(exp)
            if all(e.state == "finished" for e in own) and not exp.no_template_ccds:
                exp.finished = True
                row = self._record(exp)
                self.processed.append(exp.expnum)
                self.echo(_latency_line(row))
                self._write_report()

    # ----------------------------------------------------------------- the loop
    def _done_enough(self) -> str | None:
        if self.stop.is_set():
            return "signal"
        if self.max_exposures is not None and len(self.processed) >= self.max_exposures:
            return "max_exposures"
        busy = bool(self.running) or bool(self._ready())
        if self.idle_s is not None and not busy and \
                time.time() - self.last_activity >= self.idle_s:
            return "idle"
        return None

    def loop(self) -> str:
        reason: str | None = None
        while reason is None:
            for path in self.landing.poll():
                if os.path.realpath(path) in self.finished_paths:
                    continue
                try:
                    self._land(path)
                except DesgwInputError as exc:
                    self.echo(f"rejected {path.name}: {exc}")
                except (DatabaseError, OSError) as exc:  # locked database, file gone: later
                    self.echo(f"{path.name}: {describe_error(exc)}; trying again")
                    self.landing.forget(path)
            self._submit_ready()
            self._collect(self.poll_s)
            reason = self._done_enough()
        while self.running:  # stop cleanly: wait for the running tasks
            self._collect(self.poll_s)
        return reason

    def close(self) -> None:
        self.db.close()


def _expnum_of(path: Path) -> int | None:
    import re

    m = re.search(r"(\d{5,8})", path.name)
    return int(m.group(1)) if m else None


def _latency_line(r: ExposureLatency) -> str:
    def s(what: str) -> str:
        v = r.since_landed(what)
        return "-" if v is None else f"{v:.1f} s"

    cand = "" if r.n_candidates is None else f", {r.n_candidates} candidates"
    note = f" ({r.reason})" if r.reason else ""
    last = (f"candidates in DB +{s('candidates')}" if r.role == "search"
            else f"calibrated +{s('finished')}")
    return (f"{r.expnum} {r.role} {r.status}: ingested +{s('ingested')}, SE done "
            f"+{s('se_done')}, {last}{cand}{note}")


def run_watch(raw_dir: str | os.PathLike[str], *, settings: Settings,
              config: DagmakerConfig | None = None, search_nite: int | None = None,
              scheduler: str | None = None, workers: int | None = None, client: Any = None,
              runners: Mapping[str, Runner] | None = None, poll_s: float = 2.0,
              settle_s: float = 2.0, max_exposures: int | None = None,
              idle_s: float | None = None, report_dir: str | os.PathLike[str] | None = None,
              echo: Callable[[str], None] | None = None, fakes: bool = True,
              retries: int = 2, blacklist: Iterable[int] = frozenset(),
              stop: threading.Event | None = None, handle_signals: bool = True,
              preload: bool = True) -> WatchSummary:
    """Watch ``raw_dir`` and process each exposure as it lands (see the module docstring).

    Parameters
    ----------
    raw_dir : path
        The folder raw exposures land in (becomes ``settings.raw_dir``).
    settings : Settings
        Calibrations, reference catalog, product root and database (default
        ``sqlite:///{out_root}/desgw.sqlite`` when ``settings.db_url`` is None).
    config : DagmakerConfig, optional
        DAGMaker rules and the processing version (default :class:`DagmakerConfig`).
    search_nite : int, optional
        Exposures of this night (YYYYMMDD) or later are search exposures, earlier ones
        templates (default: :func:`tonight_nite`).
    scheduler : str, optional
        None or ``"local"``: a LocalCluster; ``"single"``: tasks one after the other in this
        process (no Dask); else a Dask scheduler address.
    workers : int, optional
        Worker processes of the LocalCluster (default: one per core, capped by memory).
    client : dask.distributed.Client, optional
        Use this client (the caller owns it); overrides ``scheduler``.
    runners : mapping, optional
        Replace the runner of some task kinds (tests).
    poll_s : float
        How often the folder is looked at and finished tasks collected (s).
    settle_s : float
        A file must keep its size and time this long before it is read (s).
    max_exposures : int, optional
        Stop after this many exposures finished in this session.
    idle_s : float, optional
        Stop after this long with nothing landing, ready or running (s).
    report_dir : path, optional
        Where the latency page goes (default ``settings.out_root / "watch_report"``).
    echo : callable, optional
        Called with one line per event (the CLI prints them); default: the log.
    fakes : bool
        Inject fakes in the difference imaging.
    retries : int
        Extra attempts of a task that failed transiently or whose worker died.
    blacklist : iterable of int
        Exposures never used as templates.
    stop : threading.Event, optional
        Set it to stop the service (as SIGINT does).
    handle_signals : bool
        Turn SIGINT and SIGTERM into a clean stop (main thread only).
    preload : bool
        Import the SE and difference-imaging modules on every worker before watching (a warm
        cluster: the first exposure does not wait for them; ~13 s per worker on a loaded
        2-core machine).

    Returns
    -------
    WatchSummary

    Raises
    ------
    desgw.db.DatabaseError
        The database cannot be opened.
    ValueError
        ``poll_s`` or ``settle_s`` not positive.
    """
    if not poll_s > 0 or settle_s < 0:
        raise ValueError(f"poll_s must be > 0 and settle_s >= 0, got {poll_s}, {settle_s}")
    t0 = time.perf_counter()
    raw = Path(raw_dir)
    if settings.db_url is None:
        settings.out_root.mkdir(parents=True, exist_ok=True)
        settings = dataclasses.replace(settings,
                                       db_url=f"sqlite:///{settings.out_root / 'desgw.sqlite'}")
    settings = dataclasses.replace(settings, raw_dir=raw)
    say = echo if echo is not None else (lambda line: log.info("%s", line))
    stop = stop if stop is not None else threading.Event()
    own_client = own_cluster = None
    if client is None and scheduler != "single":
        own_client, own_cluster = _open_client(scheduler, workers, retries)
        client = own_client
    old: dict[int, Any] = {}
    if handle_signals and threading.current_thread() is threading.main_thread():
        def _on_signal(signum: int, _frame: Any) -> None:
            if stop.is_set():
                raise KeyboardInterrupt
            say(f"signal {signum}: stopping after the running tasks (again to abort)")
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, _on_signal)
    service: _Service | None = None
    try:
        service = _Service(raw, settings, config or DagmakerConfig(),
                           search_nite=search_nite if search_nite is not None
                           else tonight_nite(),
                           client=client, runners={**RUNNERS, **dict(runners or {})},
                           poll_s=poll_s, settle_s=settle_s, max_exposures=max_exposures,
                           idle_s=idle_s,
                           report_dir=Path(report_dir) if report_dir is not None
                           else settings.out_root / "watch_report",
                           echo=say, fakes=fakes, retries=retries, stop=stop,
                           blacklist=blacklist)
        if preload and client is not None:
            t_pre = time.perf_counter()
            problems = {w: f for w, f in client.run(_preload).items() if f}
            say(f"workers ready: SE and difference-imaging modules imported in "
                f"{time.perf_counter() - t_pre:.1f} s"
                + (f"; failed on {problems}" if problems else ""))
        say(f"watching {raw} (search exposures: night {service.search_nite} and later; "
            f"{'single process' if client is None else f'{service._capacity()} worker threads'}"
            f"; database {service.db.url})")
        reason = service.loop()
        service._write_report()
        rows = tuple(get_latencies(service.db))
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)
        if service is not None:
            service.close()
        if own_client is not None:
            own_client.close()
        if own_cluster is not None:
            own_cluster.close()
    status = {tid: e.result.status for tid, e in service.entries.items()
              if e.result is not None}
    pct = latency_percentiles(rows)
    if pct["n"]:
        say(f"search latency (landed -> candidates): p50 {pct['p50']:.1f} s, p95 "
            f"{pct['p95']:.1f} s, max {pct['max']:.1f} s over {pct['n']} exposures")
    say(f"stopped ({reason}): {len(service.processed)} exposures processed, "
        f"{len(service.rejected)} rejected in this session")
    return WatchSummary(processed=tuple(service.processed), rejected=tuple(service.rejected),
                        latencies=rows, task_starts=dict(service.task_starts),
                        task_status=status, stop_reason=reason,
                        report_path=service.report_path,
                        wall_seconds=time.perf_counter() - t0)

