"""`desgw demo` end to end on the session's simulated night (CCD 28, one template): the run,
the report's content against the products and the simulator's truth, resume, the CLI, and the
report in headless Chromium."""

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from desgw.cli import main
from desgw.io.naming import zero_csv_name
from desgw.io.product_paths import diff_product_paths, find_exposure_dir
from desgw.io.products import read_csv, read_fits_table
from desgw.report.browser import check_report_in_browser, find_chromium
from desgw.report.data import collect_report, rank_candidates
from desgw.report.html import REPORT_SECTIONS
from desgw.workflow.demo import DEMO_PNUM, DEMO_RNUM, DEMO_SEASON, demo_layout, run_demo

TOP = 8


@pytest.fixture(scope="module")
def demo(workflow_sim, tmp_path_factory):
    """run_demo on the session's simulated night (linked as OUTDIR/sim: the demo finds the
    night there and does not simulate it again)."""
    root, truth = workflow_sim
    out = tmp_path_factory.mktemp("demo")
    (out / "sim").symlink_to(root, target_is_directory=True)
    lines = []
    res = run_demo(out, ccds=[28], seed=5, n_templates=1, workers=2, top_n=TOP,
                   echo=lines.append)
    return res, truth, lines


def _search_dir(res):
    return find_exposure_dir(demo_layout(res.outdir).out, res.search_expnum, DEMO_RNUM,
                             DEMO_PNUM)


@pytest.mark.slow
def test_demo_runs_everything(demo):
    res, truth, lines = demo
    assert res.ok, res.problems
    assert res.search_expnum == truth.search_expnums[0]
    assert res.template_expnums == tuple(truth.template_expnums) and res.ccds == (28,)
    n_template_ccds = len(truth.ccdnums(truth.template_expnums[0]))
    # template SE of every rendered template CCD (all overlap CCD 28), two calibrations, the
    # fused search CCD (search SE and difference imaging in one task)
    assert res.counts == {"done": n_template_ccds + 3, "skipped": 0, "failed": 0, "blocked": 0}
    st = res.stage_seconds
    assert st["simulation"] < 5.0                       # found, not simulated again
    for k in ("template_se", "search_se", "expcalib", "diff", "processing", "report"):
        assert st[k] > 0, k
    assert st["processing"] >= max(st["template_se"], st["diff"])
    assert res.report_path.is_file() and res.report_path.name == "index.html"
    assert any(line.startswith("report: ") for line in lines)
    rec = json.loads(demo_layout(res.outdir).record.read_text())
    assert rec["stage_seconds"]["report"] == pytest.approx(st["report"])
    assert rec["machine"]["cores"] >= 1


@pytest.mark.slow
def test_report_matches_products_and_truth(demo):
    res, truth, _ = demo
    html = res.report_path.read_text()
    for s in REPORT_SECTIONS:
        assert f'id="{s}"' in html, s
    sdir = _search_dir(res)
    # focal-plane map of the search exposure: one cell, CCD 28, the calibrated ZP
    zp = float(read_csv(sdir / zero_csv_name(res.search_expnum, 28, DEMO_RNUM, DEMO_PNUM))
               ["MAG_ZERO"][0])
    svgs = re.findall(r"<svg[^>]*class=\"focal-plane\".*?</svg>", html, flags=re.DOTALL)
    zp_map = next(s for s in svgs if f"<title>{res.search_expnum}: zeropoint" in s)
    cells = re.findall(r'<g class="ccd" data-ccd="(\d+)" data-value="([^"]+)"', zp_map)
    assert [int(c) for c, _ in cells] == [28]
    assert float(cells[0][1]) == pytest.approx(zp, abs=1e-9)
    # the template exposure's map: one cell per template CCD with SE products
    (template,) = res.template_expnums
    t_map = next(s for s in svgs if f"<title>{template}: zeropoint" in s)
    t_cells = {int(c) for c in re.findall(r'<g class="ccd" data-ccd="(\d+)"', t_map)}
    assert t_cells == set(truth.ccdnums(template))

    # candidates: the top of the ranking of the candidate table, in order, with 3 stamps each
    paths = diff_product_paths(sdir, res.search_expnum, "r", 28, DEMO_RNUM, DEMO_PNUM,
                               DEMO_SEASON)
    cands = read_fits_table(paths.candidates_fits)
    want = [int(i) for i in cands["id"][rank_candidates(cands)][:TOP]]
    shown = [int(i) for i in re.findall(r"<div class='cand' data-ccd='28' data-id='(\d+)'",
                                        html)]
    assert shown == want and len(shown) == min(TOP, len(rank_candidates(cands)))
    imgs = re.findall(r"<img src='([^']+)'", html)
    assert len(imgs) == 3 * len(shown)
    for src in imgs:
        data = (res.report_path.parent / src).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert int.from_bytes(data[16:20], "big") == 51    # width of a 51x51 stamp

    # efficiency points: every fake of the fakes table, binned
    fakes = read_fits_table(paths.fakes)
    pts = re.findall(r'class="eff-point" data-mag="[^"]+" data-n="(\d+)" data-k="(\d+)"', html)
    assert sum(int(n) for n, _ in pts) == len(fakes) > 50
    assert sum(int(k) for _, k in pts) == int(np.sum(fakes["recovered"]))

    # truth: the pipeline's numbers agree with the simulator's
    data = collect_report(demo_layout(res.outdir).out, search_expnum=res.search_expnum,
                          template_expnums=res.template_expnums, band="r", rnum=DEMO_RNUM,
                          pnum=DEMO_PNUM, season=DEMO_SEASON, ccds=[28], top_n=TOP,
                          truth_dir=demo_layout(res.outdir).sim)
    search_row = next(r for r in data.ccds if r.role == "search")
    assert search_row.zp_per_s - search_row.truth_zp_per_s == pytest.approx(0.0, abs=0.03)
    assert search_row.fwhm_arcsec / search_row.truth_fwhm_arcsec == pytest.approx(1.0, abs=0.05)
    assert search_row.n_candidates == len(cands)
    bright = [t for t in data.transients if t.mag < search_row.ideal_limit - 1.0]
    assert bright and all(t.found for t in bright), data.transients
    assert all(t.sep_arcsec < 0.5 for t in bright)
    # a transient found is labelled as such among the shown candidates
    found_ids = {t.cand_id for t in data.transients if t.found}
    for c in data.candidates:
        if c.cand_id in found_ids:
            assert c.truth_kind == "transient"


@pytest.mark.slow
def test_second_run_resumes(demo):
    res, _, _ = demo
    before = res.report_path.stat().st_mtime_ns
    again = run_demo(res.outdir, ccds=[28], seed=5, n_templates=1, workers=2, top_n=TOP)
    # the template's products exist: it gets no task; the search exposure's tasks are skipped
    assert again.ok and again.counts["done"] == again.counts["failed"] == 0
    assert again.counts["skipped"] == 2                  # fused search CCD, its calibration
    assert again.stage_seconds["template_se"] == 0 and again.stage_seconds["diff"] == 0
    assert again.report_path.stat().st_mtime_ns > before
    with pytest.raises(ValueError, match="another simulated night"):
        run_demo(res.outdir, ccds=[28], seed=6, n_templates=1)


@pytest.mark.slow
def test_cli(demo):
    res, _, _ = demo
    base = [str(res.outdir), "--ccds", "28", "--n-templates", "1", "--no-progress", "--top",
            str(TOP)]
    out = CliRunner().invoke(main, ["demo", *base, "--seed", "5"])
    assert out.exit_code == 0, out.output
    assert f"report: {res.report_path}" in out.output
    assert "0 done" in out.output and "skipped" in out.output
    out = CliRunner().invoke(main, ["demo", *base, "--seed", "7"])
    assert out.exit_code == 3 and "another simulated night" in out.output


@pytest.mark.slow
@pytest.mark.skipif(find_chromium() is None, reason="no Chromium installed (Debian: chromium)")
def test_report_in_headless_chromium(demo, tmp_path):
    res, _, _ = demo
    check = check_report_in_browser(res.report_path, sections=REPORT_SECTIONS,
                                    screenshot=tmp_path / "report.png")
    assert check.ok, check.problems
    assert check.images_total == 3 * min(TOP, check.images_total // 3) > 0
    assert check.images_broken == () and check.console == ()
    assert check.screenshot is not None


def test_diff_done_with_a_rejected_template(tmp_path):
    """A CCD whose difference imaging rejected one of its templates is complete for the
    templates asked for (the demo's second template is rejected on some CCDs)."""
    from desgw.io.completion import diff_complete, diff_done_path

    args = {"band": "r", "nite": 20190814, "rnum": 1, "pnum": 1, "cache": "scratch",
            "schema": "gw", "season": 1, "templates": [743156, 773503]}
    done = diff_done_path(tmp_path, 880001, 28, args)
    done.parent.mkdir(parents=True)
    done.write_text(json.dumps({"ok": True, "template_expnums": [743156],
                                "templates_requested": [743156, 773503]}))
    assert diff_complete(tmp_path, 880001, 28, args)
    assert not diff_complete(tmp_path, 880001, 28, {**args, "templates": [743156]})
    # markers written before templates_requested existed: the templates used
    done.write_text(json.dumps({"ok": True, "template_expnums": [743156]}))
    assert diff_complete(tmp_path, 880001, 28, {**args, "templates": [743156]})
