"""Raw and Community Pipeline (CP) InstCal exposures mixed in one plan (issue 14): a raw search
exposure and a CP InstCal template, from `desgw ingest` (which records each exposure's kind) to
`desgw dagmaker` / `desgw sediff` (which run the CP SE task for the template) and candidates.

The CP template is the simulated template exposure written as the archive serves CP products
(tests/workflow/cp_instcal_sim.py: desgw's detrended CCD in ADU with GAINA/GAINB, CP mask codes,
1/ADU**2 weights) with its WCS moved by (0.4", -0.3") (RA cos(dec), Dec) as the start of the
refinement against Gaia.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from click.testing import CliRunner
from cp_instcal_sim import write_cp_instcal

from desgw.cli import main
from desgw.db import connect, get_exposure
from desgw.engine.condor import dag_node_name, write_condor_dag
from desgw.io.completion import diff_done_path, se_paths
from desgw.io.settings import load_settings
from desgw.workflow.dagmaker import make_dag
from desgw.workflow.dagmaker_rc import DagmakerConfig
from desgw.workflow.se_exposure import run_se_exposure

pytestmark = pytest.mark.slow  # the workflow tests' simulated night (~1 min, once)

SEARCH = 880001
OFFSET = (0.4, -0.3)  # arcsec added to the CP WCS


@pytest.fixture(scope="module")
def sim(workflow_sim):
    return workflow_sim


def _mixed_raw_folder(root, template, tmp, immasks):
    """raw/: the search's raw file (a link) and the template as a CP InstCal triplet only."""
    raw = tmp / "raw"
    raw.mkdir()
    (raw / f"DECam_{SEARCH:08d}.fits.fz").symlink_to(root / "raw" / f"DECam_{SEARCH:08d}.fits.fz")
    primary = fits.getheader(root / "raw" / f"DECam_{template:08d}.fits.fz", 0)
    cp = write_cp_instcal(immasks, primary, raw, stamp="170825_063000",
                          wcs_offset_arcsec=OFFSET)
    return raw, cp


def _stand_in_immask(path, ccdnum, truth, template):
    """A small immask-like file (SCI/MSK/WGT and a TAN WCS near the CCD) for planning only."""
    ra, dec = truth.true_pixel_to_sky(template, ccdnum, np.array([1023.5]), np.array([2047.5]))
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [float(ra[0]), float(dec[0])]
    w.wcs.crpix = [4.5, 4.5]
    w.wcs.cd = [[0.0, 7.3e-5], [-7.3e-5, 0.0]]
    h = w.to_header()
    h.update(DETPOS="S4", SATURATE=1.5e5, RDNOISE=7.0, FWHM=3.5, AVSKY=700.0)
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(np.full((8, 8), 700.0, np.float32), h, name="SCI"),
            fits.ImageHDU(np.zeros((8, 8), np.int32), h, name="MSK"),
            fits.ImageHDU(np.full((8, 8), 1e-3, np.float32), h, name="WGT")]
    fits.HDUList(hdus).writeto(path)
    return path


def test_dagmaker_plans_the_cp_template_with_the_instcal_task(sim, tmp_path):
    """Without a database the kind comes from the file (PROCTYPE InstCal): the template's SE and
    calibration tasks carry ``instcal`` and the _ooi_ file, the raw search's do not; the CP
    mask and weight (same EXPNUM) are never taken for the exposure; HTCondor gets --instcal."""
    root, truth = sim
    (template,) = truth.template_expnums
    imm = {c: _stand_in_immask(tmp_path / f"imm{c}.fits", c, truth, template)
           for c in (22, 28)}
    raw, cp = _mixed_raw_folder(root, template, tmp_path, imm)
    settings = load_settings(raw_dir=raw, calib_dir=root / "calib", refcat_dir=root / "refcat",
                             out_root=tmp_path / "out", environ={}, cwd=tmp_path)
    assert settings.raw_path(template) == cp["ooi"]
    g = make_dag(SEARCH, settings=settings, config=DagmakerConfig())
    assert [t["expnum"] for t in g.meta["templates"]] == [template]
    assert g.meta["templates"][0]["kind"] == "instcal" and g.meta["search"]["kind"] == "raw"
    t_se = [t for t in g.of_kind("se") if t.expnum == template]
    # only the CCDs the CP file holds can be planned (the raw file had 22, 23, 28, 29)
    assert sorted(t.ccd for t in t_se) == [22, 28]
    assert all(t.args["instcal"] is True and t.args["raw_path"] == str(cp["ooi"])
               for t in t_se)
    assert g.task(f"expcalib-{template}").args["instcal"] is True
    search_tasks = [t for t in g.tasks if t.expnum == SEARCH]
    assert search_tasks and not any(t.args.get("instcal") for t in search_tasks)
    write_condor_dag(g, tmp_path / "condor", settings=settings)
    dag = (tmp_path / "condor" / f"desgw_pipeline_{SEARCH}.dag").read_text()
    t_line = next(ln for ln in dag.splitlines() if ln.startswith("VARS")
                  and f" {dag_node_name(f'se-{template}-28')} " in ln)
    s_line = next(ln for ln in dag.splitlines() if ln.startswith("VARS")
                  and f" {dag_node_name(f'se-{SEARCH}-28')} " in ln)
    assert "--instcal" in t_line and "--instcal" not in s_line


def test_raw_search_and_cp_template_from_ingest_to_candidates(sim, tmp_path):
    """`desgw ingest` records the CP template as kind 'instcal', `desgw sediff` runs its CCD
    through the CP task and the raw search through the raw one, and the difference imaging
    against the CP template finds its fakes down to the expected depth.

    Physics of the CP path against the same pixels processed from raw: the zeropoint of the
    CP image (ADU times GAINA/GAINB) equals the raw one (measured: 2e-5 mag), and the Gaia
    refinement removes the 0.5" moved into the CP WCS (measured: 0.03 mas left)."""
    root, truth = sim
    (template,) = truth.template_expnums
    # the template CCD that the CP file holds, processed from raw (the "CP pipeline")
    direct = load_settings(raw_dir=root / "raw", calib_dir=root / "calib",
                           refcat_dir=root / "refcat", out_root=tmp_path / "direct",
                           environ={}, cwd=tmp_path)
    rep = run_se_exposure(template, settings=direct, rnum=1, pnum=1, ccds=[28],
                          single_process=True, template_mode=True)
    assert rep.ok, rep.lines()
    t_args = {"band": "r", "rnum": 1, "pnum": 1, "cache": "scratch", "schema": "gw",
              "nite": rep.nite}
    raw_immask = se_paths(tmp_path / "direct", template, 28, t_args).immask
    raw_dir, cp = _mixed_raw_folder(root, template, tmp_path, {28: raw_immask})

    db_url = f"sqlite:///{tmp_path / 'desgw.sqlite'}"
    res = CliRunner().invoke(main, ["ingest", str(raw_dir), "--db-url", db_url])
    assert res.exit_code == 0, res.output
    assert f"{cp['ooi'].name}: CP InstCal image" in res.output
    assert "2 exposures registered, 0 files rejected" in res.output
    with connect(db_url) as db:
        assert get_exposure(db, template).kind == "instcal"
        assert get_exposure(db, template).raw_path == str(cp["ooi"])
        assert get_exposure(db, SEARCH).kind == "raw"
        s_nite = get_exposure(db, SEARCH).nite

    out = tmp_path / "out"
    res = CliRunner().invoke(main, [
        "sediff", "-E", str(SEARCH), "-r", "1", "-p", "1", "-S", "67", "-c", "28", "-C", "-s",
        "--raw-dir", str(raw_dir), "--calib-dir", str(root / "calib"), "--refcat",
        str(root / "refcat"), "--out", str(out), "--db-url", db_url])
    assert res.exit_code == 0, res.output
    assert f"templates: {template} (CCDs 28)" in res.output
    # the template's CP SE and calibration, the raw search CCD fused (SE and difference
    # imaging in one task) and the search calibration
    assert "4 tasks: 4 done" in res.output, res.output

    # the template went through the CP task: its immask names the CP image
    cp_immask = se_paths(out, template, 28, t_args).immask
    with fits.open(cp_immask) as h:
        cp_hdr = h["SCI"].header
    raw_hdr = fits.getheader(raw_immask, "SCI")
    assert cp_hdr["CPIMAGE"] == cp["ooi"].name and "CPIMAGE" not in raw_hdr
    assert cp_hdr["DEGRADED"] == "none" and cp_hdr["ASTRNMAT"] >= 10
    assert abs(cp_hdr["MAGZERO"] - raw_hdr["MAGZERO"]) < 0.005
    w_cp, w_raw = WCS(cp_hdr, relax=True), WCS(raw_hdr, relax=True)
    y, x = np.mgrid[0:4096:512, 0:2048:256].astype(float)
    r1, d1 = w_cp.all_pix2world(x, y, 0)
    r2, d2 = w_raw.all_pix2world(x, y, 0)
    sep = np.hypot((r1 - r2) * np.cos(np.radians(d1)), d1 - d2) * 3600.0
    assert sep.max() < 0.02 < math.hypot(*OFFSET)

    # the difference imaging used the CP template and finds its fakes to the expected depth
    done = json.loads(diff_done_path(out, SEARCH, 28, {**t_args, "nite": s_nite,
                                                       "season": 67}).read_text())
    assert done["ok"] and [template, 28] in [list(t) for t in done["templates_used"]]
    eff = done["efficiency"]
    # measured: m50 23.21, ideal limit 23.28 (the template covers ~10 % of the search CCD)
    assert abs(eff["m50"] - done["ideal_limit_mag"]) < 0.3
    assert done["n_fakes_recovered"] > 0.3 * done["n_fakes"]
