"""Run a :class:`~desgw.engine.graph.TaskGraph` on Dask (or in this process).

:func:`run_graph` executes the tasks of a graph with their dependencies:

* **Where**: by default on a ``dask.distributed.LocalCluster`` sized to the machine (one worker
  *process* per core, one thread each: sep and most SE kernels hold the GIL, so threads would
  not run CCDs in parallel; capped by memory at ~3.5 GB per worker and by the number of tasks);
  ``scheduler="tcp://host:8786"`` uses an existing Dask cluster; ``cluster="htcondor"`` or
  ``"slurm"`` starts workers as batch jobs with dask-jobqueue (one core and 3.5 GB per job, as
  the original budgeted); ``scheduler="single"`` runs the tasks one after the other in this
  process, without Dask (the original ``-s``).
* **Dependencies**: every task is submitted at once with ``client.submit``, the futures of
  its dependencies as arguments, so Dask starts a task as soon as what it needs is finished
  and passes it their :class:`~desgw.engine.tasks.TaskResult`.
* **Failures**: a task that fails is recorded with its reason and exception and the others go
  on. Its dependents still run and decide (the runners, :mod:`desgw.workflow.tasks`): a
  difference-imaging task whose search SE failed is ``blocked`` with that reason; one whose
  template failed leaves that template out. A failure that is an environment problem (by type: a
  :class:`~desgw.errors.TransientError` such as an unreachable database, or a plain
  ``OSError``) is retried ``retries`` times (Dask task retries); a task whose worker
  process dies (killed, out of memory) is re-run on another worker up to ``retries`` times
  (the scheduler's allowed failures, set for the clusters the engine starts) and then
  reported as failed. (Dask also blames the tasks that were only waiting on a dying worker;
  the engine submits such a task again as long as its log shows at most ``retries`` real
  starts in this run.) When a task ends in an error the engine re-submits its dependents with
  the failure as the dependency's result, so they can still block, or go on without it.
* **Resume**: a task whose products exist is not run again (:mod:`desgw.io.completion`)
  unless ``overwrite``, or unless a task it depends on runs again.
* **Logs**: each task appends to ``out_root/logs/{task_id}.log`` (every attempt starts with a
  header line naming the run); the run summary is written to
  ``out_root/logs/run_{run_id}.json``. The database password never reaches a log or a
  message.
* **Progress**: :mod:`desgw.engine.progress` (bars on a terminal with rich, log lines
  otherwise).

Worker set-up
-------------
The local clusters the engine starts (:func:`start_local_cluster`, also ``desgw watch``'s)
give their workers :data:`WORKER_DASK_CONFIG`, and so do the batch clusters
(:func:`make_cluster`, ``--cluster``), whose workers start on other hosts from a job script
and read no configuration of this process: the job script's prologue exports the settings
(:func:`worker_environment`: ``MALLOC_ARENA_MAX=1`` itself, which the nanny and the worker it
spawns inherit, and the others as dask's ``DASK_...`` variables, which the worker's dask reads
when imported), and the scheduler, which runs in this process, is made with them set:

* ``MALLOC_ARENA_MAX=1`` in the environment the nanny spawns the worker with (glibc reads it
  at start-up only). A Dask task runs in a worker *thread*, and glibc gives a thread its own
  malloc arena, made of 64 MiB heaps; when a freed CCD plane leaves a heap empty, glibc unmaps
  the heap whatever :func:`desgw.util.malloc.keep_freed_memory` set, and the next plane
  page-faults every page again. With one arena the task's planes come from the main heap and
  are reused. Measured (the fused task of a sparse CCD, one process pinned to one core, after
  two CCDs, worker thread, environment as a Dask worker's, 3 runs, load 3-4): 4.30-4.82 CPU-s,
  54k-150k minor faults, without; 3.80-3.89 CPU-s, ~500 faults, with (3.79-3.83 in the main
  thread).
* Dask's statistical profiler off (``distributed.worker.profile.enabled``): it samples the
  task thread's stack every 10 ms on the worker's event loop (and takes the GIL from the task
  to do it). The worker's other threads used 0.16-0.20 CPU-s per sparse CCD task with it and
  0.07-0.10 without (1 worker pinned to one core, load 4-5), and the first task of a worker
  (imports, numba caches) 0.8-1 CPU-s less. Nothing in desgw reads the profiles.
* Event-loop health checks ("ticks") every 1 s instead of 20 ms and system-monitor samples
  (host CPU, memory, network and disk counters for the dashboard) every 2 s instead of 0.5 s,
  in the workers and the scheduler: each wakes an event loop, which must take the GIL from
  the task. The workers' other threads 0.056-0.066 -> 0.031-0.034 CPU-s per task, the
  scheduler's (and client's) process 1.57-1.76 -> 1.12-1.16 CPU-s in a 30 s run of 6 CCDs
  (1 worker pinned to one core, interleaved, 2 runs each, load 3-5). These costs go with wall
  time, not with the work: ~4 core-s of a 157 s 60-CCD run. The memory monitor (0.1 s) is
  left as it is: it is what stops a worker that outgrows its memory limit.

The arena and the profiler together (6 sparse CCDs on the 2-worker LocalCluster, old and new
interleaved, 3 runs each, CPU seconds of every process from /proc, load 4-6): fused task 4.00
-> 3.73 CPU-s per CCD after a worker's first task, the first 9.08 -> 7.85; the whole process
tree 40.4 -> 36.1 CPU-s. Left alone: gc in a worker's first task (~1.2 CPU-s: full collections
while the modules are imported, before :mod:`desgw.util.gcfreeze` freezes them).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import shlex
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from desgw.db.urls import scrub_secret
from desgw.engine.graph import TASK_KINDS, Task, TaskGraph
from desgw.engine.progress import LogProgress, make_progress
from desgw.engine.tasks import (
    OK_STATUSES,
    Runner,
    TaskPayload,
    TaskResult,
    attempt_number,
    execute_task,
)
from desgw.errors import TransientTaskError, describe_error
from desgw.io.atomic import atomic_write_text, clean_stale_temp_files
from desgw.io.completion import (
    diff_complete,
    expcalib_complete,
    exposure_outdir,
    se_complete,
)
from desgw.io.settings import Settings
from desgw.util.extras import require_extra

if TYPE_CHECKING:  # pragma: no cover
    from desgw.db import Database

__all__ = [
    "CLUSTER_KINDS",
    "WORKER_DASK_CONFIG",
    "WORKER_MEMORY_GB",
    "DegradedRule",
    "RunReport",
    "cluster_options",
    "default_workers",
    "make_cluster",
    "run_graph",
    "start_local_cluster",
    "task_complete",
    "worker_environment",
]

log = logging.getLogger(__name__)

#: Batch systems dask-jobqueue can start workers on.
CLUSTER_KINDS: tuple[str, ...] = ("htcondor", "slurm")
#: Memory budget of one worker (GB): the original's per-job request.
WORKER_MEMORY_GB = 3.5
#: Dask settings of the worker processes of the local clusters the engine starts (module
#: docstring, "Worker set-up"): one malloc arena, no statistical profiler, fewer event-loop
#: ticks and system-monitor samples (the scheduler's too).
WORKER_DASK_CONFIG: dict[str, Any] = {
    "distributed.worker.profile.enabled": False,
    "distributed.nanny.pre-spawn-environ.MALLOC_ARENA_MAX": "1",
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
}
#: ``rule(graph, results) -> ids``: failed tasks a pipeline accepts as degraded successes.
DegradedRule = Callable[[TaskGraph, Mapping[str, TaskResult]], Iterable[str]]


# ----------------------------------------------------------------------------- report
@dataclass
class RunReport:
    """What :func:`run_graph` did.

    Attributes
    ----------
    results : dict of str to TaskResult
        Every task of the graph, in graph order.
    wall_seconds : float
        Wall time of the run.
    stage_seconds : dict of str to float
        Wall time of each stage that ran: first start to last end of its tasks (s).
    task_seconds : dict of str to float
        Summed run time of the tasks of each stage (s).
    scheduler : str
        What ran the tasks (``"single process"``, ``"LocalCluster (2 workers)"``, an address).
    run_id : str
        Id of the run (in the task logs).
    log_dir : Path
        Folder of the task logs and of the run summary.
    summary_path : Path or None
        The run summary JSON written.
    degraded : tuple of str
        Failed tasks that the pipeline's rule (``run_graph(degraded_rule=...)``) accepts as a
        degraded success: e.g. an exposure calibration that lacked stars while every task
        depending on it finished. Listed as DEGRADED, not failed, and :attr:`ok` allows them.
    """

    results: dict[str, TaskResult]
    wall_seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    task_seconds: dict[str, float] = field(default_factory=dict)
    scheduler: str = ""
    run_id: str = ""
    log_dir: Path | None = None
    summary_path: Path | None = None
    degraded: tuple[str, ...] = ()

    def with_status(self, status: str) -> tuple[str, ...]:
        """Ids of the tasks with ``status``."""
        return tuple(t for t, r in self.results.items() if r.status == status)

    @property
    def done(self) -> tuple[str, ...]:
        """Tasks run successfully."""
        return self.with_status("done")

    @property
    def skipped(self) -> tuple[str, ...]:
        """Tasks whose products existed."""
        return self.with_status("skipped")

    @property
    def failed(self) -> tuple[str, ...]:
        """Tasks that failed."""
        return self.with_status("failed")

    @property
    def blocked(self) -> tuple[str, ...]:
        """Tasks not run because something they need failed."""
        return self.with_status("blocked")

    @property
    def ok(self) -> bool:
        """True when every task is done or skipped, or is one of :attr:`degraded`."""
        degraded = set(self.degraded)
        return all(r.status in OK_STATUSES or t in degraded for t, r in self.results.items())

    def to_dict(self) -> dict[str, Any]:
        """JSON values."""
        return {"run_id": self.run_id, "scheduler": self.scheduler, "ok": self.ok,
                "wall_seconds": self.wall_seconds, "stage_seconds": self.stage_seconds,
                "task_seconds": self.task_seconds,
                "counts": {s: len(self.with_status(s)) for s in
                           ("done", "skipped", "failed", "blocked")},
                "degraded": list(self.degraded),
                "tasks": [r.to_dict() for r in self.results.values()]}

    def lines(self) -> list[str]:
        """A human summary."""
        counts = {s: len(self.with_status(s)) for s in ("done", "skipped", "failed", "blocked")}
        out = [(f"run {self.run_id}: {len(self.results)} tasks: {counts['done']} done, "
                f"{counts['skipped']} skipped (products exist), {counts['failed']} failed, "
                f"{counts['blocked']} blocked; {self.scheduler}; wall "
                f"{self.wall_seconds:.1f} s")]
        for kind in TASK_KINDS:
            rs = [r for r in self.results.values() if r.kind == kind]
            if not rs:
                continue
            by = {s: sum(1 for r in rs if r.status == s) for s in
                  ("done", "skipped", "failed", "blocked")}
            parts = ", ".join(f"{n} {s}" for s, n in by.items() if n)
            wall = self.stage_seconds.get(kind)
            timing = (f"; wall {wall:.1f} s, task time {self.task_seconds.get(kind, 0):.1f} s"
                      if wall is not None else "")
            out.append(f"  {kind}: {len(rs)} tasks ({parts}){timing}")
        degraded = set(self.degraded)
        for r in self.results.values():
            if r.status in ("failed", "blocked"):
                word = "DEGRADED" if r.task_id in degraded else r.status.upper()
                out.append(f"  {word} {r.task_id}: {r.reason}")
            elif r.status == "done" and r.attempt > 1:
                out.append(f"  {r.task_id}: done at attempt {r.attempt}")
        if self.log_dir is not None:
            out.append(f"  task logs: {self.log_dir}")
        return out


# ----------------------------------------------------------------------------- clusters
def default_workers(n_tasks: int | None = None) -> int:
    """Worker processes for this machine: the usable cores, at most one per
    :data:`WORKER_MEMORY_GB` of memory and one per task."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else (os.cpu_count() or 1)
    n = cores
    n = min(n, max(1, int(psutil.virtual_memory().total / 1e9 / WORKER_MEMORY_GB)))
    if n_tasks is not None:
        n = min(n, max(1, int(n_tasks)))
    return max(1, n)


def worker_environment(config: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Environment variables that give a worker started from a job script the Dask settings
    ``config`` (default :data:`WORKER_DASK_CONFIG`).

    A ``distributed.nanny.pre-spawn-environ.NAME`` setting becomes the variable ``NAME`` itself
    (the nanny and the worker process it spawns inherit it; dask lower-cases the names of the
    ``DASK_`` variables, so one could not carry ``MALLOC_ARENA_MAX``), every other setting
    dask's variable ``DASK_A__B__C`` of its key ``a.b.c`` (``-`` as ``_``), which
    ``dask.config`` reads when imported (``False`` parses back to the boolean).
    """
    prefix = "distributed.nanny.pre-spawn-environ."
    env: dict[str, str] = {}
    for key, value in (WORKER_DASK_CONFIG if config is None else config).items():
        if key.startswith(prefix):
            env[key[len(prefix):]] = str(value)
        else:
            env["DASK_" + key.upper().replace(".", "__").replace("-", "_")] = str(value)
    return env


def cluster_options(kind: str, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of the dask-jobqueue cluster of ``kind`` (one core per job, 3.5 GB,
    the original's budget; 5 h wall time on Slurm), updated with ``overrides``.

    ``job_script_prologue`` starts with the exports of :func:`worker_environment` (module
    docstring, "Worker set-up"), followed by the prologue of ``overrides``, else by the one
    of dask-jobqueue's configuration (``jobqueue.{kind}.job-script-prologue``).
    """
    if kind not in CLUSTER_KINDS:
        raise ValueError(f"cluster must be one of {CLUSTER_KINDS}, got {kind!r}")
    import dask

    opts: dict[str, Any] = {"cores": 1, "processes": 1, "memory": f"{WORKER_MEMORY_GB}GB"}
    if kind == "htcondor":
        opts["disk"] = "8GB"
    else:
        opts["walltime"] = "05:00:00"
    overrides = dict(overrides)
    user = overrides.pop("job_script_prologue", None)
    if user is None:
        user = dask.config.get(f"jobqueue.{kind}.job-script-prologue", None) or []
    opts.update(overrides)
    opts["job_script_prologue"] = [f"export {k}={shlex.quote(v)}"
                                   for k, v in worker_environment().items()] + list(user)
    return opts


def make_cluster(kind: str, *, workers: int | None = None,
                 options: Mapping[str, Any] | None = None) -> Any:
    """A dask-jobqueue cluster (``HTCondorCluster`` or ``SLURMCluster``) scaled to ``workers``
    jobs (default 10), its job script and its scheduler (in this process) with
    :data:`WORKER_DASK_CONFIG` (:func:`cluster_options`). dask-jobqueue is imported here
    only."""
    import dask

    opts = cluster_options(kind, **dict(options or {}))
    dask_jobqueue = require_extra("dask_jobqueue", "batch", "HTCondor and Slurm clusters")
    cls = dask_jobqueue.HTCondorCluster if kind == "htcondor" else dask_jobqueue.SLURMCluster
    with dask.config.set(WORKER_DASK_CONFIG):  # the scheduler reads it when made
        cluster = cls(**opts)
    cluster.scale(jobs=int(workers) if workers else 10)
    return cluster


def start_local_cluster(n_workers: int, *, retries: int, **kwargs: Any) -> Any:
    """A ``dask.distributed.LocalCluster`` of ``n_workers`` worker processes of one thread
    each, no dashboard, whose scheduler re-runs a task whose worker died up to ``retries``
    times (its allowed failures), started with :data:`WORKER_DASK_CONFIG` (module docstring).

    Parameters
    ----------
    n_workers : int
        Worker processes.
    retries : int
        Times a task may be re-run after its worker process died.
    **kwargs
        Other ``LocalCluster`` arguments (``memory_limit``...).

    Returns
    -------
    dask.distributed.LocalCluster
    """
    import dask
    from dask.distributed import LocalCluster

    with dask.config.set(WORKER_DASK_CONFIG):  # the nannies copy the config when made
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                            dashboard_address=None, scheduler_kwargs={"allowed_failures": retries},
                            silence_logs=logging.ERROR, **kwargs)


def _connect(scheduler: str | None, cluster: str | None, workers: int | None, retries: int,
             n_tasks: int, cluster_opts: Mapping[str, Any] | None) -> tuple[Any, Any, str]:
    """(client, cluster or None, description)."""
    from dask.distributed import Client

    if scheduler not in (None, "local"):
        if cluster is not None:
            raise ValueError("give a scheduler address or a cluster kind, not both")
        client = Client(scheduler, timeout="30s")
        n = len(client.scheduler_info().get("workers", {}))
        return client, None, f"scheduler {scheduler} ({n} workers)"
    if cluster is not None:
        c = make_cluster(cluster, workers=workers, options=cluster_opts)
        return Client(c), c, f"{type(c).__name__} ({workers or 10} jobs)"
    n = int(workers) if workers else default_workers(n_tasks)
    c = start_local_cluster(n, retries=retries)
    return Client(c), c, f"LocalCluster ({n} worker processes)"


# ----------------------------------------------------------------------------- resume
def task_complete(task: Task, settings: Settings, db: Database | None = None) -> bool:
    """True when the task's products exist (:mod:`desgw.io.completion`) and, with ``db``, the
    database rows the task writes exist too (calibration: the exposure zeropoint and a product
    row per CCD; difference imaging: the CCD's template uses): a task whose database write
    failed, or that ran without a database, runs again to write them. A fused search CCD (a
    ``diff`` task with ``fused``) also needs its SE products."""
    from desgw.db import has_calibration_records, has_diff_records

    a = task.args
    if task.kind == "se":
        assert task.ccd is not None
        return se_complete(settings.out_root, task.expnum, task.ccd, a)
    if task.kind == "expcalib":
        if not expcalib_complete(settings.out_root, task.expnum, a["ccds"], a):
            return False
        return db is None or has_calibration_records(db, task.expnum, int(a["rnum"]),
                                                     int(a["pnum"]), a["ccds"])
    assert task.ccd is not None
    if not diff_complete(settings.out_root, task.expnum, task.ccd, a):
        return False
    if a.get("fused") and not se_complete(settings.out_root, task.expnum, task.ccd, a):
        return False  # a fused search CCD also makes the CCD's SE products
    return db is None or has_diff_records(db, task.expnum, task.ccd)


# ----------------------------------------------------------------------------- running
def _not_run(task: Task, status: str, reason: str, log_dir: Path, attempt: int = 0,
             error: BaseException | None = None) -> TaskResult:
    return TaskResult(task_id=task.id, kind=task.kind, expnum=task.expnum, ccd=task.ccd,
                      status=status, reason=reason, attempt=attempt,
                      log_path=str(log_dir / f"{task.id}.log"), error=error)


def _describe(exc: BaseException, retries: int) -> str:
    name = type(exc).__name__
    if name == "KilledWorker":
        return (f"its worker process died on each of {retries + 1} attempts (killed, out of "
                f"memory or crashed): {exc}")
    if isinstance(exc, TransientTaskError):
        return f"{exc.reason} (still failing after {retries + 1} attempts)"
    return describe_error(exc)


def _origin(exc: BaseException, key_to_task: Mapping[str, str]) -> str | None:
    """The task whose failure an exception is (None when it cannot tell)."""
    if isinstance(exc, TransientTaskError):
        return exc.task_id
    key = getattr(exc, "task", None)
    if key is None and type(exc).__name__ == "KilledWorker" and exc.args:
        key = exc.args[0]
    return key_to_task.get(str(key)) if key is not None else None


def _run_single(tasks: list[Task], payloads: Mapping[str, TaskPayload],
                results: dict[str, TaskResult], retries: int, progress: LogProgress) -> None:
    """Run ``tasks`` one after the other in this process, with BLAS and OpenMP limited to one
    thread as in a Dask worker (the nanny starts workers with ``OMP_NUM_THREADS``,
    ``MKL_NUM_THREADS`` and ``OPENBLAS_NUM_THREADS`` = 1): a multithreaded BLAS sums in
    another order, and the products of one CCD then differed from the local cluster's in the
    last bits (PSF FWHM ~1e-12 relative, and a few RICE-quantised weight pixels)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        _run_tasks_here(tasks, payloads, results, retries, progress)


def _run_tasks_here(tasks: list[Task], payloads: Mapping[str, TaskPayload],
                    results: dict[str, TaskResult], retries: int, progress: LogProgress
                    ) -> None:
    for t in tasks:
        deps = [results[d] for d in t.deps]
        result: TaskResult | None = None
        last: BaseException | None = None
        for _ in range(retries + 1):
            try:
                result = execute_task(payloads[t.id], *deps)
                break
            except TransientTaskError as exc:
                last = exc
                log.warning("%s: %s; retrying", t.id, exc)
        if result is None:
            assert last is not None
            result = _not_run(t, "failed", _describe(last, retries),
                              Path(payloads[t.id].log_dir), error=last)
        results[t.id] = result
        progress.update(t.kind, result.status)


def _run_dask(client: Any, graph: TaskGraph, tasks: list[Task],
              payloads: Mapping[str, TaskPayload], results: dict[str, TaskResult],
              retries: int, run_id: str, progress: LogProgress, secret: str | None) -> None:
    from dask.distributed import as_completed

    futures: dict[str, Any] = {}
    key_to_task: dict[str, str] = {}
    n_submit: dict[str, int] = {}
    waiting: set[str] = set()  # tasks whose future erred because a dependency erred

    def submit(t: Task) -> Any:
        n_submit[t.id] = n_submit.get(t.id, 0) + 1
        key = f"{t.id}-{run_id}-{n_submit[t.id]}"
        args = [results[d] if d in results else futures[d] for d in t.deps]
        fut = client.submit(execute_task, payloads[t.id], *args, key=key, pure=False,
                            retries=retries)
        futures[t.id] = fut
        key_to_task[key] = t.id
        return fut

    ac = as_completed([submit(t) for t in tasks])

    def resubmit_ready() -> None:
        for tid in sorted(waiting, key=lambda i: tasks.index(graph.task(i))):
            t = graph.task(tid)
            if all(d in results for d in t.deps):
                waiting.discard(tid)
                ac.add(submit(t))

    for fut in ac:
        tid = key_to_task[fut.key]
        current = futures.get(tid)
        if current is None or current is not fut or tid in results:
            continue
        t = graph.task(tid)
        if fut.status == "finished":
            results[tid] = fut.result()
        else:
            try:
                exc: BaseException = fut.exception()
            except BaseException as err:  # noqa: BLE001 - cancelled futures raise here
                exc = err
            origin = _origin(exc, key_to_task)
            if origin == tid and type(exc).__name__ == "KilledWorker":
                # Dask blames every task assigned to a worker that dies, also those waiting
                # there; the task's log tells how often it really started in this run
                started = attempt_number(Path(payloads[tid].log_dir) / f"{tid}.log",
                                          run_id) - 1
                if started <= retries and n_submit[tid] <= retries + len(graph):
                    log.warning("%s: lost with a worker after %d start(s); submitting it again",
                                tid, started)
                    ac.add(submit(t))
                    continue
            if origin is not None:
                inherited = origin != tid
            else:
                inherited = any(d not in results or not results[d].ok
                                for d in t.deps if d in futures)
            if inherited and n_submit[tid] <= len(graph) + 1:
                waiting.add(tid)
                resubmit_ready()
                continue
            reason = scrub_secret(_describe(exc, retries), secret)
            log_dir = Path(payloads[tid].log_dir)
            results[tid] = _not_run(t, "failed", reason, log_dir,
                                    attempt_number(log_dir / f"{tid}.log", run_id) - 1,
                                    error=exc)
            log.error("%s failed: %s", tid, reason)
        progress.update(t.kind, results[tid].status)
        resubmit_ready()


def run_graph(graph: TaskGraph, *, settings: Settings, runners: Mapping[str, Runner],
              scheduler: str | None = None,
              cluster: str | None = None, workers: int | None = None, overwrite: bool = False,
              retries: int = 2, progress: bool = True,
              log_dir: str | os.PathLike[str] | None = None,
              cluster_opts: Mapping[str, Any] | None = None,
              db_timeout_s: float = 60.0,
              degraded_rule: DegradedRule | None = None) -> RunReport:
    """Execute a task graph (see the module docstring).

    Parameters
    ----------
    graph : TaskGraph
    settings : Settings
        Inputs, product root (logs go to ``out_root/logs``) and database.
    runners : mapping of kind to Runner
        The runner of every task kind of the graph (module-level functions, see
        :class:`~desgw.engine.tasks.Runner`; the pipeline's are
        :data:`desgw.workflow.tasks.RUNNERS`, which :func:`desgw.workflow.tasks.run_pipeline`
        passes).
    scheduler : str, optional
        None or ``"local"``: a LocalCluster on this machine; ``"single"``: no Dask, tasks one
        after the other in this process; otherwise the address of a running Dask scheduler.
    cluster : {"htcondor", "slurm"}, optional
        Start workers as batch jobs with dask-jobqueue (:func:`make_cluster`).
    workers : int, optional
        Worker processes (LocalCluster; default :func:`default_workers`) or batch jobs.
    overwrite : bool
        Run every task, even those whose products exist (``-O``).
    retries : int
        Extra attempts for transient failures and for tasks whose worker died.
    progress : bool
        Show progress (:func:`desgw.engine.progress.make_progress`).
    log_dir : path, optional
        Folder of the task logs (default ``settings.out_root / "logs"``).
    cluster_opts : mapping, optional
        Overrides of :func:`cluster_options`.
    db_timeout_s : float
        How long to wait for the database (s): when opening it before the run, and in every
        task, whose database writes are tried again with backoff for this long while it is
        locked or unreachable (``settings.db_timeout_s`` of the tasks).
    degraded_rule : callable, optional
        ``rule(graph, results) -> task ids``: the failed tasks to report as degraded
        (:attr:`RunReport.degraded`) rather than failed; the pipeline's is
        :func:`desgw.workflow.tasks.degraded_calibrations`.

    Returns
    -------
    RunReport

    Raises
    ------
    desgw.db.DatabaseError
        ``settings.db_url`` is set and the database cannot be opened (checked before any
        task runs; the message never holds the password).
    ValueError
        A bad ``cluster`` or ``retries``, both a scheduler address and a cluster, or a task
        kind of the graph without a runner.
    """
    t_start = time.perf_counter()
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if cluster is not None and cluster not in CLUSTER_KINDS:
        raise ValueError(f"cluster must be one of {CLUSTER_KINDS}, got {cluster!r}")
    no_runner = sorted({t.kind for t in graph.tasks} - set(runners))
    if no_runner:
        raise ValueError(f"no runner for task kind(s) {no_runner}")
    settings = dataclasses.replace(settings, db_timeout_s=float(db_timeout_s))
    db: Database | None = None
    if settings.db_url is not None:
        from desgw.db import connect

        db = connect(settings.db_url, busy_timeout_s=db_timeout_s,
                     connect_timeout_s=min(10.0, max(1.0, db_timeout_s)))
        db.check_writable()
    for d in sorted({exposure_outdir(settings.out_root, t.expnum, t.args) for t in graph.tasks
                     if {"cache", "schema", "nite"} <= set(t.args)}):
        clean_stale_temp_files(d)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
    logs = Path(log_dir) if log_dir is not None else settings.out_root / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    results: dict[str, TaskResult] = {}
    to_run: list[Task] = []
    runs: set[str] = set()
    try:
        for t in graph.tasks:
            if overwrite or any(d in runs for d in t.deps) or \
                    not task_complete(t, settings, db):
                runs.add(t.id)
                to_run.append(t)
            else:
                results[t.id] = _not_run(t, "skipped", "products exist", logs)
    finally:
        if db is not None:
            db.close()
    payloads = {t.id: TaskPayload(task=t, settings=settings, overwrite=overwrite,
                                  log_dir=str(logs), run_id=run_id,
                                  runner=runners[t.kind],
                                  retry_transient=True) for t in to_run}
    totals = {k: sum(1 for t in to_run if t.kind == k) for k in TASK_KINDS}
    log.info("run %s: %d tasks, %d to run (%s), %d with products already", run_id, len(graph),
             len(to_run), ", ".join(f"{n} {k}" for k, n in totals.items() if n),
             len(results))
    display = make_progress(totals) if progress else LogProgress({}, interval_s=1e9)
    description = "nothing to run"
    with display:
        if to_run and scheduler == "single":
            description = "single process"
            _run_single(to_run, payloads, results, retries, display)
        elif to_run:
            client, own_cluster, description = _connect(scheduler, cluster, workers, retries,
                                                        len(to_run), cluster_opts)
            try:
                _run_dask(client, graph, to_run, payloads, results, retries, run_id, display,
                          settings.db_url)
            finally:
                client.close()
                if own_cluster is not None:
                    own_cluster.close()

    ordered = {t.id: results[t.id] for t in graph.tasks}
    stage_seconds: dict[str, float] = {}
    task_seconds: dict[str, float] = {}
    for kind in TASK_KINDS:
        ran = [r for r in ordered.values() if r.kind == kind and r.started > 0]
        if ran:
            stage_seconds[kind] = max(r.finished for r in ran) - min(r.started for r in ran)
            task_seconds[kind] = sum(r.seconds for r in ran)
    degraded = tuple(degraded_rule(graph, ordered)) if degraded_rule is not None else ()
    report = RunReport(results=ordered, wall_seconds=time.perf_counter() - t_start,
                       stage_seconds=stage_seconds, task_seconds=task_seconds,
                       scheduler=description, run_id=run_id, log_dir=logs, degraded=degraded)
    doc = {**report.to_dict(), "graph_meta": {k: graph.meta.get(k) for k in ("search",)
                                              if k in graph.meta}}
    try:
        report.summary_path = atomic_write_text(logs / f"run_{run_id}.json",
                                                json.dumps(doc, indent=1, default=str) + "\n")
    except OSError as exc:
        log.error("cannot write the run summary: %s", exc)
    for line in report.lines():
        log.info("%s", line)
    return report
