"""Check an HTML report in a real headless browser (Chromium).

:func:`check_report_in_browser` opens the page with ``chromium --headless`` twice: once with
``--dump-dom`` (the DOM after the page's scripts ran, within a virtual-time budget) and once
with ``--screenshot``. It checks that

* the page rendered: the dumped DOM holds every expected section id and the report's load
  marker (``<body data-loaded="1">``, set by the page's only script after the ``load`` event);
* every image loaded: the page lists the ``<img>`` elements with ``naturalWidth == 0`` in
  ``data-images-broken`` (empty) and their number in ``data-images-total``;
* no console errors: no ``Uncaught`` exception and no console message in Chromium's log
  (``--enable-logging=stderr``: it logs every console message as ``CONSOLE``; the report writes
  none), and no error the page's own ``error`` listener counted (``data-errors``);
* the screenshot was written (a PNG file).

Chromium comes from the system (Debian's ``chromium`` package); :func:`find_chromium` looks
for it. Nothing here needs a network.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CHROMIUM_NAMES",
    "BrowserCheck",
    "check_report_in_browser",
    "find_chromium",
]

#: Executable names tried by :func:`find_chromium` (in order).
CHROMIUM_NAMES: tuple[str, ...] = ("chromium", "chromium-browser", "google-chrome",
                                   "chrome")
_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--disable-background-networking", "--no-first-run", "--enable-logging=stderr",
          "--v=0", "--hide-scrollbars")
_CONSOLE = re.compile(r":CONSOLE[:(\d)]*\]?\s*(.*)$")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class BrowserCheck:
    """What the browser saw.

    Attributes
    ----------
    ok : bool
        No problem found.
    problems : tuple of str
        What is wrong, one line each.
    sections : tuple of str
        Expected section ids found in the DOM.
    images_total : int
        ``<img>`` elements on the page.
    images_broken : tuple of str
        Sources of the images that did not load.
    console : tuple of str
        Console messages Chromium logged.
    screenshot : Path or None
        The screenshot written.
    dom_chars : int
        Size of the dumped DOM.
    """

    ok: bool
    problems: tuple[str, ...] = ()
    sections: tuple[str, ...] = ()
    images_total: int = 0
    images_broken: tuple[str, ...] = ()
    console: tuple[str, ...] = field(default=())
    screenshot: Path | None = None
    dom_chars: int = 0


def find_chromium(explicit: str | os.PathLike[str] | None = None) -> str | None:
    """Path of a Chromium executable: ``explicit``, ``$CHROMIUM``, or the first of
    :data:`CHROMIUM_NAMES` on ``PATH``; None when there is none."""
    for cand in (explicit, os.environ.get("CHROMIUM")):
        if cand and shutil.which(str(cand)):
            return shutil.which(str(cand))
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _attr(dom: str, name: str) -> str | None:
    m = re.search(r"<body\b[^>]*\b" + re.escape(name) + r'="([^"]*)"', dom)
    return m.group(1) if m else None


def _run(cmd: Sequence[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout_s,
                          check=False, env={**os.environ, "LANG": "C.UTF-8"})


def check_report_in_browser(html: str | os.PathLike[str], *,
                            sections: Sequence[str] = (),
                            screenshot: str | os.PathLike[str] | None = None,
                            chromium: str | os.PathLike[str] | None = None,
                            window: tuple[int, int] = (1280, 4000),
                            virtual_time_ms: int = 5000,
                            timeout_s: float = 120.0) -> BrowserCheck:
    """Open ``html`` in headless Chromium and check it (module docstring).

    Parameters
    ----------
    html : path
        The page (opened as a ``file://`` URL; its images are read relative to it).
    sections : sequence of str
        Element ids the page must hold (e.g. :data:`desgw.report.html.REPORT_SECTIONS`).
    screenshot : path, optional
        Where to write a PNG screenshot (default: next to the page, ``screenshot.png``).
    chromium : path, optional
        The browser (default :func:`find_chromium`).
    window : (int, int)
        Window width and height of the screenshot (px).
    virtual_time_ms : int
        Virtual time the page gets to load (ms).
    timeout_s : float
        Wall-clock limit of each browser run (s).

    Returns
    -------
    BrowserCheck

    Raises
    ------
    FileNotFoundError
        No Chromium, or no page at ``html``.
    """
    page = Path(html).absolute()
    if not page.is_file():
        raise FileNotFoundError(f"{page}: no such page")
    exe = find_chromium(chromium)
    if exe is None:
        raise FileNotFoundError("no Chromium executable found (tried $CHROMIUM and "
                                f"{', '.join(CHROMIUM_NAMES)})")
    shot = Path(screenshot) if screenshot is not None else page.parent / "screenshot.png"
    url = page.as_uri()
    problems: list[str] = []

    dump = _run([exe, *_FLAGS, f"--virtual-time-budget={int(virtual_time_ms)}",
                 "--dump-dom", url], timeout_s)
    dom = dump.stdout or ""
    if dump.returncode != 0:
        problems.append(f"chromium --dump-dom exited with {dump.returncode}")
    if not dom.strip():
        problems.append("the browser dumped an empty DOM")
    found = tuple(s for s in sections if re.search(r'\bid="' + re.escape(s) + '"', dom))
    missing = [s for s in sections if s not in found]
    if missing:
        problems.append(f"sections missing from the rendered page: {', '.join(missing)}")
    if _attr(dom, "data-loaded") != "1":
        problems.append("the page's load event did not run (no data-loaded on <body>)")
    total_text = _attr(dom, "data-images-total")
    total = int(total_text) if total_text and total_text.isdigit() else 0
    broken = tuple((_attr(dom, "data-images-broken") or "").split())
    if broken:
        problems.append(f"{len(broken)} of {total} images did not load: {', '.join(broken[:5])}")
    errors_text = _attr(dom, "data-errors")
    if errors_text and errors_text not in ("", "0"):
        problems.append(f"the page recorded {errors_text} error event(s): "
                        f"{_attr(dom, 'data-error-messages') or ''}")
    console = []
    for line in (dump.stderr or "").splitlines():
        m = _CONSOLE.search(line)
        if m:
            console.append(m.group(1).strip())
        elif "Uncaught" in line:
            console.append(line.strip())
    if console:
        problems.append(f"{len(console)} console message(s): {console[0][:200]}")

    shot.parent.mkdir(parents=True, exist_ok=True)
    shot_run = _run([exe, *_FLAGS, f"--virtual-time-budget={int(virtual_time_ms)}",
                     f"--window-size={int(window[0])},{int(window[1])}",
                     f"--screenshot={shot}", url], timeout_s)
    shot_ok = shot.is_file() and shot.read_bytes()[:8] == _PNG_SIGNATURE
    if not shot_ok:
        problems.append(f"no screenshot written (chromium exited with {shot_run.returncode})")
    return BrowserCheck(ok=not problems, problems=tuple(problems), sections=found,
                        images_total=total, images_broken=broken, console=tuple(console),
                        screenshot=shot if shot_ok else None, dom_chars=len(dom))
