"""The SE runner's own process pool: the CCDs of one exposure in worker processes
(:class:`concurrent.futures.ProcessPoolExecutor`, forkserver start method where available,
else spawn; one worker per core by default). sep and most of the SE kernels hold the GIL, so
processes, not threads.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .se_ccd import run_ccd_task
from .se_types import CCDSummary

__all__ = [
    "run_ccd_tasks",
]

log = logging.getLogger(__name__)


def _mp_context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        # workers forked from a server that has imported the SE code start without the ~1.5 s
        # of imports each (numba still loads its cached kernels at each worker's first CCD)
        ctx.set_forkserver_preload(["desgw.workflow.se_ccd", "desgw.se.process"])
        return ctx
    return multiprocessing.get_context("spawn")


def run_ccd_tasks(tasks: Sequence[Any], *, single_process: bool, workers: int | None,
                  runner: Callable[[Any], CCDSummary] | None = None) -> dict[int, CCDSummary]:
    """Run CCD tasks (``runner``, default :func:`run_ccd_task`; e.g.
    :func:`desgw.workflow.se_instcal.run_instcal_ccd_task` for CP InstCal CCDs), by CCDNUM."""
    run = run_ccd_task if runner is None else runner
    if not tasks:
        return {}
    if single_process or (len(tasks) == 1 and workers in (None, 1)):
        return {t.ccdnum: run(t) for t in tasks}
    if workers is None:  # the cores this process may use (a batch slot may grant fewer)
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else (os.cpu_count() or 1)
    n = workers
    n = max(1, min(int(n), len(tasks)))
    out: dict[int, CCDSummary] = {}
    with ProcessPoolExecutor(max_workers=n, mp_context=_mp_context()) as pool:
        futures: dict[Future[CCDSummary], Any] = {pool.submit(run, t): t for t in tasks}
        for fut, task in futures.items():
            try:
                out[task.ccdnum] = fut.result()
            except BrokenProcessPool as exc:
                lost = BrokenProcessPool(f"a worker process died (out of memory or killed) "
                                         f"while CCDs were running: {exc}")
                out[task.ccdnum] = CCDSummary(ccdnum=task.ccdnum, ok=False, error=lost)
            except Exception as exc:  # noqa: BLE001 - e.g. a result that cannot be unpickled
                out[task.ccdnum] = CCDSummary(ccdnum=task.ccdnum, ok=False, error=exc,
                                              error_traceback=traceback.format_exc())
    return out
