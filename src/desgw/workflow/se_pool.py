"""The CCD tasks of one exposure's SE run on the engine (:func:`desgw.engine.run.run_graph`):
its local mode (a ``dask.distributed.LocalCluster`` of long-lived worker processes, one thread
each: sep and most SE kernels hold the GIL) or, with ``single_process``, one after the other
in this process. So ``desgw se`` fails, retries (transient errors, a worker that dies) and logs
(``out_root/logs/{task_id}.log``) exactly as ``desgw sediff`` and ``desgw run`` do.

Each CCD becomes an ``se`` :class:`~desgw.engine.graph.Task` whose JSON arguments are the
fields of its picklable CCD task (:class:`~desgw.workflow.se_types.CCDTask`, or
:class:`~desgw.workflow.se_instcal.InstCalTask` for CP InstCal CCDs) but the SE
configuration, which travels with the runner (:func:`functools.partial` of
:func:`run_engine_ccd`). The CCD task decides the resume itself (its ``overwrite``), so the
engine is told to run every task it is given.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from desgw.engine.graph import Task, TaskGraph, se_task_id
from desgw.engine.tasks import Outcome, TaskResult
from desgw.errors import DesgwError
from desgw.io.settings import Settings

from .se_ccd import run_ccd_task
from .se_qc import load_ccd_summary
from .se_types import CCDSummary

__all__ = [
    "run_ccd_tasks",
    "run_engine_ccd",
]

log = logging.getLogger(__name__)


def _task_fields(ccd_task: Any) -> dict[str, Any]:
    """The JSON fields of a CCD task dataclass (all but its ``config``)."""
    return {f.name: getattr(ccd_task, f.name) for f in dataclasses.fields(ccd_task)
            if f.name != "config"}


def run_engine_ccd(task_type: type, config: Any, runner: Callable[[Any], CCDSummary],
                   task: Task, settings: Settings, overwrite: bool,
                   deps: Mapping[str, TaskResult]) -> Outcome:
    """Engine runner of one CCD: rebuild the CCD task of ``task_type`` from ``task.args``
    (with ``config``) and run ``runner`` on it (``settings``, ``overwrite`` and ``deps`` are
    the engine's: the CCD task carries its own paths and ``overwrite``)."""
    ccd_task = task_type(**dict(task.args["ccd_task"]), config=config)
    s = runner(ccd_task)
    if not s.ok:
        return Outcome("failed", s.reason or "failed", traceback=s.error_traceback,
                       error=s.error)
    detail = {"n_objects": s.n_objects, "zp": s.zp,
              "astrometric_rms_arcsec": s.astrometric_rms_arcsec,
              "timings": {str(k): float(v) for k, v in s.timings.items()}}
    return Outcome("skipped" if s.skipped else "done", "products exist" if s.skipped else None,
                   detail)


def _summary(ccd_task: Any, result: TaskResult) -> CCDSummary:
    """The CCD's summary after the engine ran it: from its ``_qc.json`` when it succeeded,
    else its failure."""
    ccd = int(ccd_task.ccdnum)
    if result.ok:
        try:
            s = load_ccd_summary(ccd_task.paths.qc, ccd)
            return dataclasses.replace(s, skipped=result.status == "skipped")
        except DesgwError as exc:  # the task said done but left no readable QC file
            return CCDSummary(ccdnum=ccd, ok=False, error=exc)
    error = result.error
    if error is None:  # an exception that could not travel back: its text is the reason
        error = DesgwError(result.reason or f"CCD {ccd} {result.status}")
    return CCDSummary(ccdnum=ccd, ok=False, error=error)


def run_ccd_tasks(tasks: Sequence[Any], *, settings: Settings, single_process: bool,
                  workers: int | None, runner: Callable[[Any], CCDSummary] | None = None,
                  retries: int = 2) -> dict[int, CCDSummary]:
    """Run CCD tasks on the engine (see the module docstring), by CCDNUM.

    Parameters
    ----------
    tasks : sequence of CCDTask or InstCalTask
        Picklable dataclasses with ``expnum``, ``ccdnum``, ``config`` and ``paths``; every
        task shares the first one's ``config``.
    settings : Settings
        Where the task logs go (``out_root/logs``); the database is not used here.
    single_process : bool
        Run in this process (the engine's ``scheduler="single"``), without Dask.
    workers : int, optional
        Worker processes of the local cluster (default one per core, at most one per CCD).
    runner : callable, optional
        ``runner(ccd_task) -> CCDSummary`` (default :func:`run_ccd_task`; e.g.
        :func:`desgw.workflow.se_instcal.run_instcal_ccd_task`).
    retries : int
        Extra attempts for transient failures and CCDs whose worker died.

    Returns
    -------
    dict of int to CCDSummary
    """
    from desgw.engine.run import run_graph

    if not tasks:
        return {}
    run = run_ccd_task if runner is None else runner
    task_type = type(tasks[0])
    config = tasks[0].config
    if any(type(t) is not task_type or t.config != config for t in tasks):
        raise ValueError("the CCD tasks of one run must be of one type with one config")
    graph = TaskGraph(tuple(Task(se_task_id(int(t.expnum), int(t.ccdnum)), "se", int(t.expnum),
                                 int(t.ccdnum), (), {"ccd_task": _task_fields(t)})
                            for t in tasks))
    n = len(tasks)
    scheduler = "single" if single_process or (n == 1 and workers in (None, 1)) else None
    report = run_graph(graph, settings=dataclasses.replace(settings, db_url=None),
                       runners={"se": functools.partial(run_engine_ccd, task_type, config,
                                                        run)},
                       scheduler=scheduler, workers=None if workers is None
                       else max(1, min(int(workers), n)),
                       overwrite=True, retries=retries, progress=False)
    by_id = {se_task_id(int(t.expnum), int(t.ccdnum)): t for t in tasks}
    return {int(by_id[tid].ccdnum): _summary(by_id[tid], r) for tid, r in report.results.items()}
