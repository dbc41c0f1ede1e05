"""desgw.engine: execution of a task graph on Dask (a local cluster by default, a scheduler
address or dask-jobqueue), HTCondor DAG export, retries by exception type, resume, progress.
Knows tasks, not astronomy: the runners of each task kind are given by the caller
(:data:`desgw.workflow.tasks.RUNNERS`).

The public entry points are listed in ``__all__``; each is imported from its module on first use,
so ``import desgw.engine`` stays cheap (the command line imports only what a command needs).
"""

from __future__ import annotations

from typing import Any

from desgw.util.lazy import lazy_attribute, lazy_dir

__all__ = [
    "GraphError",
    "Outcome",
    "RunReport",
    "Runner",
    "Task",
    "TaskGraph",
    "TaskPayload",
    "TaskResult",
    "execute_task",
    "is_transient",
    "run_graph",
    "write_condor_dag",
]

_LAZY: dict[str, str] = {
    "Task": "graph",
    "TaskGraph": "graph",
    "GraphError": "graph",
    "RunReport": "run",
    "run_graph": "run",
    "Outcome": "tasks",
    "Runner": "tasks",
    "TaskPayload": "tasks",
    "TaskResult": "tasks",
    "execute_task": "tasks",
    "is_transient": "tasks",
    "write_condor_dag": "condor",
}


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, name)


def __dir__() -> list[str]:
    return lazy_dir(__name__, __all__)
