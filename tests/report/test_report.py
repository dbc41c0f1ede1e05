"""Report pieces on synthetic inputs: SVG charts, candidate ranking, the browser check."""

import math
import re

import numpy as np
import pytest
from astropy.table import Table

from desgw.report.browser import check_report_in_browser, find_chromium
from desgw.report.data import rank_candidates
from desgw.report.svg import (
    EfficiencyModel,
    EfficiencyPoint,
    colour_for,
    efficiency_svg,
    focal_plane_svg,
)


def test_colour_map_ends_and_missing_values():
    assert colour_for(0.0, 0.0, 1.0) == "#440154"      # dark end
    assert colour_for(5.0, 0.0, 1.0) == "#fde725"      # clipped to the bright end
    assert colour_for(-3.0, 0.0, 1.0) == "#440154"
    assert colour_for(math.nan, 0.0, 1.0) == "#bbbbbb"
    mid = colour_for(0.5, 0.0, 1.0)
    assert mid not in ("#440154", "#fde725")


def test_focal_plane_map_cells():
    from desgw.instrument import DEAD_CCDS, SCIENCE_CCDNUMS

    svg = focal_plane_svg({28: 31.40, 29: 31.50, 35: math.nan}, title="zp", unit="mag",
                          failed=[29])
    cells = re.findall(r'<g class="ccd" data-ccd="(\d+)" data-value="([^"]+)" '
                       r'data-qc="(\w+)">.*?fill="(#[0-9a-f]{6})"', svg, flags=re.DOTALL)
    got = {int(c): (v, qc, fill) for c, v, qc, fill in cells}
    assert set(got) == {28, 29, 35}
    assert float(got[28][0]) == 31.40 and got[28][1] == "pass"
    assert got[28][2] == colour_for(31.40, 31.40, 31.50) == "#440154"   # range from the values
    assert got[29][1] == "fail" and got[29][2] == "#fde725"
    assert got[35][0] == "nan" and got[35][2] == "#bbbbbb"
    off = re.findall(r'<g class="ccd-off" data-ccd="(\d+)"', svg)
    assert len(off) == len(SCIENCE_CCDNUMS) - 3
    assert svg.count('stroke="#e00"') == 2                               # the cross on CCD 29
    assert svg.count('fill="url(#hatch)"') == len(DEAD_CCDS)
    # CCD 28 and 29 are neighbours in the same row of the focal plane: their label x differ
    lx = {int(c): float(x) for x, c in re.findall(
        r'<text x="([\d.]+)" y="[\d.]+" class="ccd-label" text-anchor="middle">(\d+)</text>', svg)}
    assert set(lx) == {28, 29, 35} and abs(lx[28] - lx[29]) > 5


def test_efficiency_chart_scales():
    pts = [EfficiencyPoint(21.0, 10, 10, 1.0, 0.1, 0.0),
           EfficiencyPoint(23.0, 10, 5, 0.5, 0.15, 0.15),
           EfficiencyPoint(24.5, 8, 0, 0.0, 0.0, 0.1)]
    svg = efficiency_svg(pts, [EfficiencyModel("all", 23.0, 0.3, 1.0, main=True)], m50=23.0,
                         ideal_limit=23.2, title="fakes", width=560, height=320)
    circles = re.findall(r'<circle class="eff-point" data-mag="([^"]+)" data-n="(\d+)" '
                         r'data-k="(\d+)" data-eff="([^"]+)" cx="([\d.]+)" cy="([\d.]+)"', svg)
    assert [(float(m), int(n), int(k)) for m, n, k, *_ in circles] == \
        [(21.0, 10, 10), (23.0, 10, 5), (24.5, 8, 0)]
    cy = [float(c[5]) for c in circles]
    top, bottom = 26.0, 320 - 40.0
    assert cy[0] == pytest.approx(top) and cy[2] == pytest.approx(bottom)
    assert cy[1] == pytest.approx((top + bottom) / 2)
    # m50 line and the middle point share x; the ideal limit is drawn to the right of it
    x_m50 = float(re.search(r'class="m50" data-m50="[^"]+" x1="([\d.]+)"', svg).group(1))
    x_ideal = float(re.search(r'class="ideal-limit" data-ideal-limit="[^"]+" x1="([\d.]+)"',
                              svg).group(1))
    assert x_m50 == pytest.approx(float(circles[1][4]), abs=0.06) and x_ideal > x_m50
    # the model curve passes through half the plateau at m50
    d = re.search(r'class="eff-model"[^>]* d="([^"]+)"', svg).group(1)
    xy = np.array([[float(v) for v in p[1:].split(",")] for p in d.split()])
    y_at = np.interp(x_m50, xy[:, 0], xy[:, 1])
    assert y_at == pytest.approx((top + bottom) / 2, abs=1.0)


def test_rank_candidates_order():
    t = Table({"id": [1, 2, 3, 4, 5, 6, 7],
               "negative": [False, True, False, False, False, False, False],
               "is_fake": [False, False, True, False, False, False, False],
               "veto": [False, False, False, True, False, False, False],
               "real_bogus": [0.5, 0.99, 0.99, 0.99, 0.9, 0.9, np.nan],
               "snr": [50.0, 9.0, 9.0, 9.0, 6.0, 12.0, 100.0]})
    order = rank_candidates(t)
    # negatives and fakes left out; vetoed last; then score, then SNR; NaN score at the end
    assert list(t["id"][order]) == [6, 5, 1, 7, 4]
    assert len(rank_candidates(t[:0])) == 0


@pytest.mark.skipif(find_chromium() is None, reason="no Chromium installed (Debian: chromium)")
def test_browser_check_finds_broken_pages(tmp_path):
    from desgw.diff.stamps_png import encode_png_gray
    from desgw.report.html import _SCRIPT

    (tmp_path / "ok.png").write_bytes(encode_png_gray(np.full((5, 7), 128, np.uint8)))
    good = tmp_path / "good.html"
    good.write_text(f"<!DOCTYPE html><html><head><script>{_SCRIPT}</script></head><body>"
                    "<section id='a'><img src='ok.png'></section></body></html>")
    res = check_report_in_browser(good, sections=["a"], screenshot=tmp_path / "good.png")
    assert res.ok, res.problems
    assert res.images_total == 1 and res.images_broken == () and res.console == ()
    assert res.screenshot is not None and res.screenshot.stat().st_size > 100

    bad = tmp_path / "bad.html"
    bad.write_text(f"<!DOCTYPE html><html><head><script>{_SCRIPT}</script></head><body>"
                   "<section id='a'><img src='ok.png'><img src='missing.png'></section>"
                   "<script>console.error('boom'); notDefined();</script></body></html>")
    res = check_report_in_browser(bad, sections=["a", "b"], screenshot=tmp_path / "bad.png")
    assert not res.ok
    text = " ".join(res.problems)
    assert "sections missing" in text and "b" in text
    assert res.images_total == 2 and res.images_broken == ("missing.png",)
    assert any("boom" in c for c in res.console)
    assert any("notDefined" in c for c in res.console)
