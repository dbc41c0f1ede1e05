"""desgw.report: the HTML report of a processed night (data, SVG figures, stamps) and its
headless-browser check; the latency page of ``desgw watch``.

The public entry points are listed in ``__all__``; each is imported from its module on first use,
so ``import desgw.report`` stays cheap (the command line imports only what a command needs).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ReportData",
    "check_report_in_browser",
    "collect_report",
    "find_chromium",
    "render_report",
    "write_report",
    "write_watch_report",
]

_LAZY: dict[str, str] = {
    "render_report": "html",
    "write_report": "html",
    "ReportData": "data",
    "collect_report": "data",
    "check_report_in_browser": "browser",
    "find_chromium": "browser",
    "write_watch_report": "latency",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
