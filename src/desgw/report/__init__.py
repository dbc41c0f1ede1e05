"""desgw.report: the HTML report of a processed night (data, SVG figures, stamps) and its
headless-browser check; the latency page of ``desgw watch``.

The public entry points are listed in ``__all__``; each is imported from its module on first use,
so ``import desgw.report`` stays cheap (the command line imports only what a command needs).
"""

from __future__ import annotations

from typing import Any

from desgw.util.lazy import lazy_attribute, lazy_dir

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
    return lazy_attribute(__name__, _LAZY, name)


def __dir__() -> list[str]:
    return lazy_dir(__name__, __all__)
