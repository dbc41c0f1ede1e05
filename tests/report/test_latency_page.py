"""The latency page of ``desgw watch``: percentiles, the chart's bars and the table."""

from __future__ import annotations

import re

import numpy as np

from desgw.db.latency import ExposureLatency
from desgw.report.latency import latency_percentiles, latency_svg, write_watch_report


def _search(expnum, landed, ingest, se, cand):
    return ExposureLatency(expnum, "search", "done", landed_at=landed,
                           ingested_at=landed + ingest, se_done_at=landed + ingest + se,
                           candidates_at=landed + ingest + se + cand, n_candidates=4)


def test_percentiles_and_bars_follow_the_times(tmp_path):
    rows = [_search(10 + i, 1000.0 + 120 * i, 1.0, 30.0 + i, 20.0 + 2 * i) for i in range(5)]
    rows.append(ExposureLatency(9, "template", "done", landed_at=900.0, ingested_at=902.0,
                                se_done_at=950.0, finished_at=951.0))
    rows.append(ExposureLatency(8, "rejected", "rejected", reason="exposure 8: bias",
                                landed_at=905.0, ingested_at=905.5))
    totals = np.array([51.0 + 3 * i for i in range(5)])
    pct = latency_percentiles(rows)
    assert pct["n"] == 5 and pct["max"] == totals.max()
    assert np.isclose(pct["p50"], np.percentile(totals, 50))
    assert np.isclose(pct["p95"], np.percentile(totals, 95))
    svg = latency_svg(rows)
    # bar widths in the chart are proportional to the steps' durations
    widths: dict[str, list[tuple[float, float]]] = {}
    bars = re.findall(r'<rect x="[\d.]+" y="\d+" width="([\d.]+)" height="16" fill="[^"]+">'
                      r'<title>(\d+): (.*?) ([\d.]+) s</title>', svg)
    assert len(bars) == 5 * 3 + 2  # three steps per search exposure, two for the template
    for w, exp, _step, secs in bars:
        widths.setdefault(exp, []).append((float(w), float(secs)))
    scale = {e: [w / s for w, s in v] for e, v in widths.items()}
    ref = scale["10"][0]
    assert all(np.allclose(v, ref, rtol=0.02) for v in scale.values())
    assert ">8 R<" not in svg  # rejected exposures are not drawn
    page = write_watch_report(tmp_path / "rep", rows).read_text()
    assert "<td>8</td><td>rejected</td>" in page and "exposure 8: bias" in page
    assert "<td>14</td><td>search</td><td>done</td>" in page and "<td>63.0</td>" in page
