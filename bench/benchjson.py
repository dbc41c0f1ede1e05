"""What the bench scripts do with a result: the machine's load, and one JSON object printed
(and written to ``--out`` when given).

Imported by the scripts of this folder (``python bench/NAME.py`` puts the folder on
``sys.path``); not part of the package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["emit", "git_commit", "load_average", "run_cases"]


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded to 0.01."""
    return [round(v, 2) for v in os.getloadavg()]


def emit(result: Any, out: Path | None) -> None:
    """Print ``result`` as indented JSON and, if ``out`` is given, write the same text there
    (with a final newline)."""
    text = json.dumps(result, indent=1)
    print(text)
    if out is not None:
        Path(out).write_text(text + "\n")


def git_commit() -> str:
    """The short hash of the checkout these scripts belong to ("" outside git)."""
    return subprocess.run(["git", "-C", str(Path(__file__).resolve().parent.parent), "rev-parse",
                           "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def run_cases(benchmark: str, cases: str, measure: Callable[[str, int, int], Any],
              out: Path | None, **extra: Any) -> dict[str, Any]:
    """Measure each ``NIGHT:EXPNUM:CCD`` of the comma-separated ``cases`` with
    ``measure(night, expnum, ccdnum)`` (each row also printed to stderr as it comes) and
    :func:`emit` ``{"benchmark", "commit", **extra, "load_avg_start", "rows", "cpu_s",
    "load_avg_end"}``; returns that object."""
    result: dict[str, Any] = {"benchmark": benchmark, "commit": git_commit(), **extra,
                              "load_avg_start": load_average(), "rows": []}
    t0 = time.process_time()
    for case in cases.split(","):
        night, e, c = case.split(":")
        row = measure(night, int(e), int(c))
        print(row, file=sys.stderr, flush=True)
        result["rows"].append(row)
    result["cpu_s"] = round(time.process_time() - t0, 1)
    result["load_avg_end"] = load_average()
    emit(result, out)
    return result
