#!/usr/bin/env python
"""Check a desgw HTML report in headless Chromium: it renders, its images load, no console errors.

Usage::

    python scripts/check_report_browser.py desgw-demo/report/index.html [--screenshot shot.png]

Prints one line per problem and a JSON summary; exit code 0 when the page passes, 1 when it
does not, 2 when no Chromium is installed (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import json
import sys

from desgw.report.browser import check_report_in_browser, find_chromium
from desgw.report.html import REPORT_SECTIONS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", help="the report's index.html")
    parser.add_argument("--screenshot", default=None,
                        help="PNG to write (default: screenshot.png next to the page)")
    parser.add_argument("--chromium", default=None, help="browser executable")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=4000)
    args = parser.parse_args(argv)
    if find_chromium(args.chromium) is None:
        print("no Chromium found (install Debian's chromium package)", file=sys.stderr)
        return 2
    res = check_report_in_browser(args.html, sections=REPORT_SECTIONS,
                                  screenshot=args.screenshot, chromium=args.chromium,
                                  window=(args.width, args.height))
    for p in res.problems:
        print(f"PROBLEM: {p}")
    print(json.dumps({"ok": res.ok, "sections": list(res.sections),
                      "images_total": res.images_total,
                      "images_broken": list(res.images_broken), "console": list(res.console),
                      "screenshot": None if res.screenshot is None else str(res.screenshot),
                      "dom_chars": res.dom_chars}, indent=1))
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
