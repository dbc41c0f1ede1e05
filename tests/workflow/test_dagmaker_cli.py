"""DAGMaker on a simulated night: template selection, CCD overlaps, existing products, the
database path, and the `desgw dagmaker` / `desgw ingest` commands."""

import dataclasses
import json

import numpy as np
import pytest
from astropy.io import fits
from click.testing import CliRunner

from desgw.cli import main
from desgw.io.completion import se_paths
from desgw.io.corners import write_corners_out
from desgw.io.settings import load_settings
from desgw.workflow.dagmaker import exposure_footprint, make_dag, record_from_raw
from desgw.workflow.dagmaker_rc import DagmakerConfig

# Every test plans on the workflow tests' simulated night (simulated once, ~1 min).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sim(workflow_sim):
    return workflow_sim


@pytest.fixture
def settings(sim, tmp_path):
    root, _ = sim
    return load_settings(raw_dir=root / "raw", calib_dir=root / "calib",
                         refcat_dir=root / "refcat", out_root=tmp_path / "out", environ={},
                         cwd=tmp_path)


def test_dag_from_raw_headers_picks_the_template_and_the_ccd_overlaps(sim, settings):
    _, truth = sim
    (search,), (template,) = truth.search_expnums, truth.template_expnums
    rendered = sorted(truth.ccdnums(template))  # the simulator renders exactly the overlapping CCDs
    g = make_dag(search, settings=settings, config=DagmakerConfig(rnum=3, pnum=4, season=67))
    assert [t["expnum"] for t in g.meta["templates"]] == [template]
    assert g.meta["rejected"] == [] and g.meta["dropped"] == []
    assert g.meta["overlaps"] == {"28": {str(template): rendered}}
    assert sorted(t.ccd for t in g.of_kind("se") if t.expnum == template) == rendered
    assert [t.id for t in g.of_kind("se") if t.expnum == search] == [f"se-{search}-28"]
    cal = g.task(f"expcalib-{template}")
    assert sorted(cal.deps) == sorted(f"se-{template}-{c}" for c in rendered)
    assert cal.args["ccds"] == rendered and cal.args["template"] is True
    diff = g.task(f"diff-{search}-28")
    assert set(diff.deps) == {f"se-{search}-28", f"expcalib-{search}", f"expcalib-{template}",
                              *(f"se-{template}-{c}" for c in rendered)}
    spec = truth.exposure_spec(search)
    assert diff.args["templates"] == [template] and diff.args["season"] == 67
    assert diff.args["band"] == spec.band and diff.args["rnum"] == 3
    assert diff.args["template_nites"] == {str(template): record_from_raw(
        truth.raw_path(template)).nite}
    # the approximate corners from the header pointing lie within ~1 arcmin of the true sky
    rec = record_from_raw(truth.raw_path(search))
    ra, dec = np.array(exposure_footprint(rec, [28]).corners[28])
    tra, tdec = truth.true_pixel_to_sky(search, 28, np.array([-0.5, 2047.5, 2047.5, -0.5]),
                                        np.array([-0.5, -0.5, 4095.5, 4095.5]))
    sep = np.hypot((np.sort(ra) - np.sort(tra)) * np.cos(np.radians(tdec.mean())),
                   np.sort(dec) - np.sort(tdec)) * 3600
    assert sep.max() < 60


def test_rules_reject_templates_with_reasons(sim, settings):
    _, truth = sim
    (search,), (template,) = truth.search_expnums, truth.template_expnums
    dt = abs(truth.exposure_spec(search).mjd - truth.exposure_spec(template).mjd)
    g = make_dag(search, settings=settings, config=DagmakerConfig(twindow=dt + 1.0))
    assert g.meta["templates"] == [] and g.of_kind("diff") == ()
    (rej,) = g.meta["rejected"]
    assert rej["expnum"] == template and "TWINDOW" in " ".join(rej["reasons"])
    assert g.meta["no_template_ccds"] == [28]
    assert [t.id for t in g.tasks] == [f"se-{search}-28", f"expcalib-{search}"]

    g = make_dag(search, settings=settings, config=DagmakerConfig(twindow=dt - 1.0,
                                                                  accept_unknown_teff=False),
                 blacklist={template})
    reasons = g.meta["rejected"][0]["reasons"]
    assert "blacklisted" in reasons and any("t_eff unknown" in r for r in reasons)


def test_existing_products_and_corner_files(sim, settings):
    _, truth = sim
    (search,), (template,) = truth.search_expnums, truth.template_expnums
    cfg = DagmakerConfig()
    nite = record_from_raw(truth.raw_path(template)).nite
    args = {"band": "r", "nite": nite, "rnum": cfg.rnum, "pnum": cfg.pnum,
            "cache": cfg.destcache, "schema": cfg.schema}
    paths = se_paths(settings.out_root, template, 22, args)
    paths.immask.parent.mkdir(parents=True)
    for p in paths.all():
        p.write_bytes(b"x")
    g = make_dag(search, settings=settings, config=cfg)
    assert f"se-{template}-22" not in g and f"se-{template}-23" in g
    (info,) = g.meta["templates"]
    assert info["existing_ccds"] == [22] and 22 in info["ccds"]
    assert g.task(f"expcalib-{template}").args["ccds"] == info["ccds"]
    assert f"se-{template}-22" not in g.task(f"diff-{search}-28").deps

    # SKIP_INCOMPLETE_SE: a template with some but not all of its CCDs is dropped
    g = make_dag(search, settings=settings, config=dataclasses.replace(cfg,
                                                                        skip_incomplete_se=True))
    assert g.meta["dropped"][0]["expnum"] == template and g.of_kind("diff") == ()

    # a {expnum}.out with (fitted) corners wins over the optical model: CCD 22 moved away
    far = ((10.0, 10.1, 10.1, 10.0), (5.0, 5.0, 5.2, 5.2))
    write_corners_out(paths.immask.parent / f"{template}.out", template, {22: far}, band="r")
    g = make_dag(search, settings=settings, config=cfg)
    (info,) = g.meta["templates"]
    assert 22 not in info["ccds"] and info["corners_from_file"] == [22]


def _write_bias_exposure(path, expnum):
    hdr = fits.Header()
    hdr.update({"EXPNUM": expnum, "OBSTYPE": "zero", "FILTER": "r DECam SDSS c0002",
                "BAND": "r", "EXPTIME": 0.0, "MJD-OBS": 58700.0,
                "DATE-OBS": "2019-08-05T00:00:00", "TELRA": "02:00:00", "TELDEC": "-30:00:00",
                "OBJECT": "bias", "PROPID": "2019B-SIM"})
    fits.PrimaryHDU(header=hdr).writeto(path)


def test_ingest_and_dagmaker_commands_with_a_database(sim, tmp_path, clean_env):
    root, truth = sim
    (search,), (template,) = truth.search_expnums, truth.template_expnums
    extra = tmp_path / "more_raw"
    extra.mkdir()
    _write_bias_exposure(extra / "DECam_00000042.fits", 42)
    db_url = f"sqlite:///{tmp_path / 'desgw.sqlite'}"
    runner = CliRunner()
    res = runner.invoke(main, ["ingest", str(root / "raw"), str(extra), "--db-url", db_url])
    assert res.exit_code == 0, res.output
    assert "2 exposures registered, 1 files rejected" in res.output
    assert "DECam_00000042.fits" in res.output and "calibration" in res.output

    common = ["--raw-dir", str(root / "raw"), "--calib-dir", str(root / "calib"),
              "--refcat", str(root / "refcat"), "--out", str(tmp_path / "out")]
    (tmp_path / "dagmaker.rc").write_text("RNUM=5\nPNUM=6\nSEASON=dp70\nDESTCACHE=scratch\n")
    res = runner.invoke(main, ["dagmaker", str(search), "-o", "g.json", "--condor", "dag",
                               "--db-url", db_url, *common])
    assert res.exit_code == 0, res.output
    assert f"template {template}" in res.output
    doc = json.loads((tmp_path / "g.json").read_text())
    assert doc["meta"]["database"] is True and doc["meta"]["config"]["season"] == 70
    diff = next(t for t in doc["tasks"] if t["kind"] == "diff")
    assert diff["args"]["templates"] == [template] and diff["args"]["cache"] == "scratch"
    assert diff["args"]["rnum"] == 5 and diff["args"]["pnum"] == 6
    assert (tmp_path / "dag" / f"desgw_pipeline_{search}.dag").is_file()

    # same graph as from the raw headers (the database only replaces the header look-ups)
    res = runner.invoke(main, ["dagmaker", str(search), "-o", "g2.json", *common])
    assert res.exit_code == 0, res.output
    doc2 = json.loads((tmp_path / "g2.json").read_text())
    assert [t["id"] for t in doc2["tasks"]] == [t["id"] for t in doc["tasks"]]

    # bad input: exit code 3 with the file named
    (tmp_path / "bad.rc").write_text("TWINDOW=soon\n")
    res = runner.invoke(main, ["dagmaker", str(search), "--rc", "bad.rc", *common])
    assert res.exit_code == 3 and "TWINDOW" in res.output
    res = runner.invoke(main, ["dagmaker", "12345", *common])
    assert res.exit_code == 3 and "12345" in res.output
