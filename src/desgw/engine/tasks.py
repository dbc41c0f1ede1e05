"""What one task of a :class:`~desgw.engine.graph.TaskGraph` does on a worker.

:func:`execute_task` is the function the engine ships to Dask workers (or calls itself in
single-process mode). It opens the task's log file, calls the runner of the task's kind, and
returns a small picklable :class:`TaskResult` that carries the failure's exception object. It
never raises for a failure of the task itself (bad input, an algorithm that gives up): that is
a ``"failed"`` result with the exception and its text. It raises
:class:`~desgw.errors.TransientTaskError` only for environment failures worth another attempt
(:func:`is_transient`, by exception type: :class:`~desgw.errors.TransientError` and the
file-system and network errors of :data:`TRANSIENT_OS_ERRORS`), so the engine's retries re-run
it.

Runners (``runner(task, settings, overwrite, deps) -> Outcome``) are given by the caller, one
per task kind (the pipeline's are :data:`desgw.workflow.tasks.RUNNERS`): the engine knows
tasks, not astronomy.

Statuses: ``"done"`` (ran and succeeded), ``"skipped"`` (products existed), ``"failed"``,
``"blocked"`` (not run because something it needs failed; the reason says what).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from desgw.db.urls import redact_url, scrub_secret
from desgw.engine.graph import Task
from desgw.errors import TransientError, TransientTaskError, describe_error
from desgw.io.settings import Settings
from desgw.util.gcfreeze import freeze_after_first_task

__all__ = [
    "OK_STATUSES",
    "STATUSES",
    "TRANSIENT_OS_ERRORS",
    "Outcome",
    "Runner",
    "TaskPayload",
    "TaskResult",
    "attempt_number",
    "execute_task",
    "is_transient",
]

log = logging.getLogger(__name__)

#: Task statuses.
STATUSES: tuple[str, ...] = ("done", "skipped", "failed", "blocked")
#: Statuses whose products exist.
OK_STATUSES: frozenset[str] = frozenset({"done", "skipped"})
#: Built-in exception types of environment failures worth another attempt (exact types:
#: subclasses that name a definite problem, such as ``FileNotFoundError`` or
#: ``PermissionError``, are not transient).
TRANSIENT_OS_ERRORS: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, ConnectionError, ConnectionResetError, ConnectionRefusedError,
    ConnectionAbortedError, BrokenPipeError, InterruptedError, BlockingIOError)


def is_transient(error: BaseException | None) -> bool:
    """True when an exception is an environment failure worth retrying: a
    :class:`~desgw.errors.TransientError` (an unreachable database, ...) or exactly one of
    :data:`TRANSIENT_OS_ERRORS`."""
    if error is None:
        return False
    return isinstance(error, TransientError) or type(error) in TRANSIENT_OS_ERRORS


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
    error : BaseException or None
        The exception of a failed task (what the retry decision looks at).
    """

    status: str
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    traceback: str | None = field(default=None, repr=False)
    error: BaseException | None = field(default=None, repr=False)


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
    error : BaseException or None
        The exception of a failed task (picklable; None otherwise).
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
    error: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when the task's products exist (done or skipped)."""
        return self.status in OK_STATUSES

    def to_dict(self) -> dict[str, Any]:
        """JSON values (the exception as its type name; its text is ``reason``)."""
        out = dataclasses.asdict(replace(self, error=None))
        out["error"] = None if self.error is None else type(self.error).__name__
        return out


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
    runner : Runner
        The runner of the task's kind (a module-level function, so it pickles by name).
    retry_transient : bool
        Raise :class:`~desgw.errors.TransientTaskError` for transient failures (the engine
        retries them).
    """

    task: Task
    settings: Settings
    overwrite: bool
    log_dir: str
    run_id: str
    runner: Runner
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


def _portable(error: BaseException | None, secret: str | None) -> BaseException | None:
    """The exception to put in a result, or None when it cannot travel: its text holds the
    database password (the result keeps only the scrubbed reason), or it does not survive
    pickling (a class whose constructor takes other arguments than it stores), which would
    lose the whole result on the way back from a worker."""
    if error is None or scrub_secret(str(error), secret) != str(error):
        return None
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - any failure to round-trip means it stays behind
        return None
    return error


def _in_dask_worker() -> bool:
    """Whether this code runs in a Dask worker (a long-lived process of many tasks)."""
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return False
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True


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
    runner = payload.runner
    started = time.time()
    t0 = time.perf_counter()
    with _task_log(log_path, secret):
        log.info("=== %s: attempt of run %s (#%d) on %s pid %d", task.id, payload.run_id,
                 attempt, socket.gethostname(), os.getpid())
        try:
            outcome = runner(task, settings, payload.overwrite, deps)
        except Exception as exc:  # noqa: BLE001 - a runner bug must not take the run down
            outcome = Outcome("failed", describe_error(exc), traceback=traceback.format_exc(),
                              error=exc)
        reason = None if outcome.reason is None else scrub_secret(outcome.reason, secret)
        error = _portable(outcome.error, secret)
        if outcome.traceback:
            log.error("%s traceback:\n%s", task.id, outcome.traceback)
        seconds = time.perf_counter() - t0
        log.info("=== %s: %s%s (%.2f s)", task.id, outcome.status,
                 f": {reason}" if reason else "", seconds)
    if _in_dask_worker():
        freeze_after_first_task(task.kind)  # desgw.util.gcfreeze: cheaper full collections
    if outcome.status == "failed" and payload.retry_transient and is_transient(outcome.error):
        raise TransientTaskError(task.id, reason or type(outcome.error).__name__)
    return TaskResult(task_id=task.id, kind=task.kind, expnum=task.expnum, ccd=task.ccd,
                      status=outcome.status, reason=reason, seconds=seconds, started=started,
                      finished=time.time(), attempt=attempt,
                      worker=f"{socket.gethostname()}:{os.getpid()}", log_path=str(log_path),
                      detail=dict(outcome.detail), error=error)


