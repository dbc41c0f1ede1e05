"""Live progress of an engine run, per stage (``se``, ``expcalib``, ``diff``).

:func:`make_progress` gives a `rich <https://rich.readthedocs.io>`_ display (one bar per stage)
when rich is installed and the output is a terminal, else :class:`LogProgress`, which writes
plain log lines (``desgw.engine.progress`` logger, INFO) when a stage advances, at most one
line every ``interval_s`` seconds plus one when a stage completes. Both are used as::

    with make_progress({"se": 10, "expcalib": 2, "diff": 4}) as progress:
        progress.update("se", "done")
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import IO, Any, Self

__all__ = ["LogProgress", "RichProgress", "StageCounts", "make_progress"]

log = logging.getLogger(__name__)


class StageCounts:
    """Counters of one stage: total and finished tasks by status."""

    def __init__(self, total: int) -> None:
        self.total = int(total)
        self.by_status: dict[str, int] = {}

    @property
    def finished(self) -> int:
        """Tasks with a final status."""
        return sum(self.by_status.values())

    def text(self) -> str:
        """``3/10 (2 done, 1 failed)``."""
        parts = ", ".join(f"{n} {s}" for s, n in sorted(self.by_status.items()) if n)
        return f"{self.finished}/{self.total}" + (f" ({parts})" if parts else "")


class LogProgress:
    """Progress as plain log lines (see the module docstring)."""

    def __init__(self, totals: Mapping[str, int], *, interval_s: float = 5.0) -> None:
        self.stages = {k: StageCounts(v) for k, v in totals.items() if v > 0}
        self.interval_s = float(interval_s)
        self._last = 0.0

    def line(self) -> str:
        """One line with every stage."""
        return "progress: " + " | ".join(f"{k} {c.text()}" for k, c in self.stages.items())

    def update(self, stage: str, status: str) -> None:
        """Count one finished task of ``stage`` with ``status``."""
        c = self.stages.setdefault(stage, StageCounts(0))
        c.by_status[status] = c.by_status.get(status, 0) + 1
        now = time.monotonic()
        if c.finished >= c.total or now - self._last >= self.interval_s:
            self._last = now
            log.info("%s", self.line())

    def __enter__(self) -> Self:
        if self.stages:
            log.info("%s", self.line())
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class RichProgress(LogProgress):
    """Progress bars (rich) on a terminal, one per stage."""

    def __init__(self, totals: Mapping[str, int], *, stream: IO[str] | None = None) -> None:
        super().__init__(totals)
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._progress = Progress(TextColumn("{task.description:>9}"), BarColumn(),
                                  MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                  console=Console(file=stream or sys.stderr), transient=False)
        self._ids: dict[str, Any] = {k: self._progress.add_task(k, total=c.total, info="")
                                     for k, c in self.stages.items()}

    def update(self, stage: str, status: str) -> None:
        c = self.stages.setdefault(stage, StageCounts(0))
        c.by_status[status] = c.by_status.get(status, 0) + 1
        if stage not in self._ids:
            self._ids[stage] = self._progress.add_task(stage, total=c.total, info="")
        info = ", ".join(f"{n} {s}" for s, n in sorted(c.by_status.items()) if s != "done")
        self._progress.update(self._ids[stage], completed=c.finished, info=info)

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()


def make_progress(totals: Mapping[str, int], *, stream: IO[str] | None = None,
                  interval_s: float = 5.0) -> LogProgress:
    """The progress display for ``totals`` (tasks per stage): rich bars when rich is installed
    and ``stream`` (default stderr) is a terminal, else plain log lines."""
    out = stream or sys.stderr
    isatty = getattr(out, "isatty", None)
    if isatty is not None and isatty():
        try:
            return RichProgress(totals, stream=out)
        except ImportError:
            pass
    return LogProgress(totals, interval_s=interval_s)
