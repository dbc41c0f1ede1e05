"""The live-night page of ``desgw watch``: latency per exposure, as a table and an SVG chart.

:func:`write_watch_report` writes ``REPORT_DIR/index.html`` (atomically; inline CSS and SVG,
no script, no external URL) from the ``watch_latency`` rows
(:class:`~desgw.db.latency.ExposureLatency`):

* a summary: exposures seen, processed, failed, rejected; p50 / p95 / max of the time from the
  file landing to the candidates in the database for the search exposures;
* the chart (:func:`latency_svg`): one horizontal bar per exposure, split into landed ->
  ingested, ingested -> SE done, SE done -> candidates in the database (s);
* the table: every exposure with its role, status, the three intervals, the total, candidates
  and the reason of a rejection or a failure.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import math
import os
from collections.abc import Sequence
from html import escape
from pathlib import Path

import numpy as np

from desgw.db.latency import ExposureLatency
from desgw.io.atomic import atomic_write_text

__all__ = ["STEP_COLOURS", "latency_percentiles", "latency_svg", "write_watch_report"]

#: Colour of each step of the chart: (label, colour).
STEP_COLOURS: tuple[tuple[str, str], ...] = (("landed -> ingested", "#9e9e9e"),
                                             ("ingested -> SE done", "#1f77b4"),
                                             ("SE done -> candidates in DB", "#ff7f0e"))


def _steps(r: ExposureLatency) -> list[float]:
    """The three intervals (s; NaN when unknown)."""
    marks = [r.landed_at, r.ingested_at, r.se_done_at, r.candidates_at]
    out = []
    for a, b in itertools.pairwise(marks):
        out.append(float(b) - float(a) if a is not None and b is not None else math.nan)
    return out


def latency_percentiles(rows: Sequence[ExposureLatency], *, role: str = "search"
                        ) -> dict[str, float]:
    """p50, p95 and max (s) of landed -> candidates of the finished exposures of ``role``."""
    vals = np.array([v for r in rows if r.role == role
                     if (v := r.since_landed("candidates")) is not None], dtype=float)
    if vals.size == 0:
        return {"n": 0, "p50": math.nan, "p95": math.nan, "max": math.nan}
    return {"n": int(vals.size), "p50": float(np.percentile(vals, 50)),
            "p95": float(np.percentile(vals, 95)), "max": float(vals.max())}


def latency_svg(rows: Sequence[ExposureLatency], *, width: int = 760) -> str:
    """An inline SVG bar chart of the latency steps of each exposure (seconds).

    Parameters
    ----------
    rows : sequence of ExposureLatency
        In display order (top to bottom); rejected exposures are left out.
    width : int
        Width of the chart (px).
    """
    shown = [r for r in rows if r.role != "rejected"]
    bar_h, gap, left, top, bottom = 16, 6, 150, 28, 48
    height = top + bottom + max(1, len(shown)) * (bar_h + gap)
    totals = [sum(v for v in _steps(r) if math.isfinite(v)) for r in shown]
    vmax = max([1.0, *totals]) * 1.05
    plot_w = width - left - 20

    def sx(v: float) -> float:
        return left + plot_w * v / vmax

    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
              f'viewBox="0 0 {width} {height}" role="img" aria-label="latency per exposure">')]
    x0 = left
    for label, colour in STEP_COLOURS:
        parts.append(f'<rect x="{x0}" y="6" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{x0 + 14}" y="15" font-size="10">{escape(label)}</text>')
        x0 += 180
    for i, r in enumerate(shown):
        y = top + i * (bar_h + gap)
        name = f"{r.expnum} {r.role[0].upper()}"
        parts.append(f'<text x="{left - 6}" y="{y + bar_h - 4}" font-size="11" '
                     f'text-anchor="end">{escape(name)}</text>')
        start = 0.0
        for v, (label, colour) in zip(_steps(r), STEP_COLOURS):
            if not math.isfinite(v):
                continue
            w = max(0.0, sx(start + v) - sx(start))
            parts.append(f'<rect x="{sx(start):.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                         f'fill="{colour}"><title>{r.expnum}: {escape(label)} {v:.1f} s'
                         f'</title></rect>')
            start += v
        if r.status == "failed":
            parts.append(f'<text x="{sx(start) + 4:.1f}" y="{y + bar_h - 4}" font-size="10" '
                         f'fill="#c00">failed</text>')
    axis_y = height - bottom + 6
    parts.append(f'<line x1="{left}" y1="{axis_y}" x2="{left + plot_w}" y2="{axis_y}" '
                 'stroke="#333"/>')
    for tick in np.linspace(0.0, vmax, 6):
        parts.append(f'<line x1="{sx(tick):.1f}" y1="{axis_y}" x2="{sx(tick):.1f}" '
                     f'y2="{axis_y + 4}" stroke="#333"/><text x="{sx(tick):.1f}" '
                     f'y="{axis_y + 16}" font-size="10" text-anchor="middle">{tick:.0f}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" font-size="12" '
                 'text-anchor="middle">time from the file landing (s)</text>')
    parts.append("</svg>")
    return "".join(parts)


def _cell(v: float | None) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.1f}"


def write_watch_report(report_dir: str | os.PathLike[str], rows: Sequence[ExposureLatency], *,
                       title: str = "desgw watch: live night") -> Path:
    """Write ``report_dir/index.html`` (see the module docstring); return its path."""
    out = Path(report_dir)
    pct = latency_percentiles(rows)
    counts = {k: sum(1 for r in rows if r.status == k)
              for k in ("done", "waiting", "failed", "rejected")}
    stamp = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    body = [f"<h1>{escape(title)}</h1>",
            (f"<p>updated {stamp}: {len(rows)} exposures seen, {counts['done']} processed, "
            f"{counts['waiting']} in progress, {counts['failed']} with failures, "
            f"{counts['rejected']} rejected.</p>"),
            (f"<p>search exposures, file landed -> candidates in the database: "
            f"n = {pct['n']}, p50 {_cell(pct['p50'])} s, p95 {_cell(pct['p95'])} s, "
            f"max {_cell(pct['max'])} s.</p>"),
            '<section id="latency-plot"><h2>Latency per exposure</h2>', latency_svg(rows),
            "</section>",
            ('<section id="latency-table"><h2>Exposures</h2><table><tr><th>expnum</th>'
            "<th>role</th><th>status</th><th>landed (UTC)</th><th>landed -> ingested (s)</th>"
            "<th>ingested -> SE done (s)</th><th>SE done -> candidates (s)</th>"
            "<th>total (s)</th><th>candidates</th><th>note</th></tr>")]
    for r in rows:
        steps = _steps(r)
        landed = "" if r.landed_at is None else _dt.datetime.fromtimestamp(
            r.landed_at, _dt.UTC).strftime("%H:%M:%S")
        body.append(
            f"<tr><td>{r.expnum}</td><td>{escape(r.role)}</td><td>{escape(r.status)}</td>"
            f"<td>{landed}</td><td>{_cell(steps[0])}</td><td>{_cell(steps[1])}</td>"
            f"<td>{_cell(steps[2])}</td><td>{_cell(r.since_landed('candidates'))}</td>"
            f"<td>{'' if r.n_candidates is None else r.n_candidates}</td>"
            f"<td>{escape(r.reason or '')}</td></tr>")
    body.append("</table></section>")
    css = ("body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;"
           "font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
           "td:last-child{text-align:left}")
    html = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>'
            f"{escape(title)}</title><style>{css}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")
    return atomic_write_text(out / "index.html", html)
