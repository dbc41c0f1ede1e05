"""run_diff_ccd end to end on the simulated night: template discovery from the products on disk,
star/veto lists, the product folder, the completion marker and resume, database records, a
failing CCD, nothing to do, and the diffimg / makestarcat commands."""

from __future__ import annotations

import json
import math
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from desgw.diff.pipeline_types import DiffError
from desgw.errors import MissingFileError
from desgw.io.settings import load_settings
from desgw.workflow.diff_ccd import DiffSummary, DiffTask, run_diff_ccd
from desgw.workflow.se_exposure import run_se_exposure

pytestmark = pytest.mark.slow

R, P, CCD, SEASON = 1, 1, 28, 42
RB_THRESHOLD = 0.641
NARROW, BROAD = 797828, 767502


def _stand_in_score(candidates, stamps):
    return np.clip(np.abs(np.asarray(candidates["snr"], float)) / 20.0, 0.0, 1.0)


@pytest.fixture(scope="module")
def env(sim_night, sim_refcat_store, sim_night_se, tmp_path_factory):
    """SE products of the whole night (shared with tests/diff/test_pipeline_sim.py through the
    resume rule) with every exposure registered in a database, and a stand-in real/bogus."""
    outdir, truth = sim_night
    outdir = Path(outdir)
    out_root = sim_night_se  # resumed here: the CCDs are registered in this module's database
    db_url = f"sqlite:///{tmp_path_factory.mktemp('diffdb') / 'desgw.sqlite'}"
    settings = load_settings(raw_dir=outdir / "raw", calib_dir=outdir / "calib",
                             refcat_dir=sim_refcat_store.store_dir, out_root=out_root,
                             db_url=db_url, environ={}, cwd=outdir)
    nites = {}
    for e in truth.expnums:
        rep = run_se_exposure(e, settings=settings, rnum=R, pnum=P, run_calibration=True,
                              template_mode=e in truth.template_expnums, workers=2)
        assert not rep.failed and "db" not in rep.errors, rep.lines()
        nites[e] = rep.nite
    mp = pytest.MonkeyPatch()
    mp.setitem(sys.modules, "desgw.diff.realbogus", types.SimpleNamespace(
        score=_stand_in_score, load_model=lambda: types.SimpleNamespace(threshold=RB_THRESHOLD)))
    yield settings, truth, nites
    mp.undo()


def _task(env, **kw):
    settings, truth, nites = env
    s = truth.search_expnums[0]
    args = {"search_expnum": s, "ccdnum": CCD, "template_expnums": (), "settings": settings, "rnum": R,
            "pnum": P, "season": SEASON, "cache": "scratch", "schema": "gw", "version": "test",
            "band": "r", "nite": nites[s], "fakes": True, "overwrite": False}
    args.update(kw)
    return DiffTask(**args)


@pytest.fixture(scope="module")
def done(env):
    task = _task(env)
    return task, run_diff_ccd(task)


def test_task_and_summary_pickle(env):
    task = _task(env)
    assert pickle.loads(pickle.dumps(task)) == task
    s = DiffSummary(ccdnum=3, ok=False, error=DiffError("3 stars", kind="failed"),
                    timings={"total": 1.0}, m50=23.1, m50_err=0.05, ideal_limit_mag=23.0,
                    error_kind="failed")
    back = pickle.loads(pickle.dumps(s))
    assert back == s and isinstance(back.error, DiffError) and back.reason == s.reason
    assert s.reason == "DiffError: failed: 3 stars"


def test_products_of_one_ccd(env, done):
    from desgw.diff.pipeline_products import read_diff_image
    from desgw.io.products import read_fits_table, read_parquet
    from desgw.io.star_lists import read_star_list, read_veto_list

    task, s = done
    assert s.ok, s.reason
    assert not s.skipped and s.n_candidates > 20 and s.n_fakes >= 150
    assert 0 < s.n_fakes_recovered < s.n_fakes
    # templates found on disk; the 1.63" exposure fails the t_eff QC of its CCDs
    assert {e for e, _ in s.templates_used} == {NARROW}
    assert abs(s.m50 - s.ideal_limit_mag) < 0.15
    d = Path(s.outdir)
    assert d.name == "r_28" and d.parent.name == f"dp{SEASON}"
    prefix = f"D{task.search_expnum:08d}_r_28_r1p1_dp{SEASON}"
    done_doc = json.loads((d / f"{prefix}_diffdone.json").read_text())
    assert done_doc["ok"] and done_doc["template_expnums"] == [NARROW]
    assert {r["expnum"] for r in done_doc["templates_rejected"]} == {BROAD}
    # the ZOGY filter grid chosen from the two PSFs (zogy.choose_kernel_size): one of its
    # candidates, recorded in the marker and the product header
    assert done_doc["zogy_kernel_size"] in (64, 128)
    from astropy.io import fits

    assert fits.getheader(d / f"{prefix}_diff.fits.fz", "SCI")["ZOGYKSZ"] == \
        done_doc["zogy_kernel_size"]
    img = read_diff_image(d / f"{prefix}_diff.fits.fz")
    # SCORE (S_corr) only with full_copy (-F): the candidates carry it at their peaks
    assert img["SCI"].shape == (4096, 2048) and set(img) == {"SCI", "MSK", "WGT"}
    good = img["WGT"] > 0
    z = img["SCI"][good] * np.sqrt(img["WGT"][good])
    assert 0.9 < 1.4826 * np.median(np.abs(z - np.median(z))) < 1.1
    cands = read_fits_table(d / f"{prefix}_cands.fits")
    assert len(cands) == s.n_candidates == len(read_parquet(d / f"{prefix}_cands.parquet"))
    fakes = read_fits_table(d / f"{prefix}_fakes.fits")
    assert len(fakes) == s.n_fakes and int(np.sum(fakes["recovered"])) == s.n_fakes_recovered
    eff = json.loads((d / f"{prefix}_efficiency.json").read_text())
    assert eff["efficiency"]["m50"] == pytest.approx(s.m50)
    # the real/bogus threshold is published with the candidates, and how many pass it
    assert cands.meta["RBTHRESH"] == pytest.approx(RB_THRESHOLD)
    assert eff["real_bogus_threshold"] == done_doc["real_bogus_threshold"] == RB_THRESHOLD
    passing = ((np.asarray(cands["real_bogus"]) >= RB_THRESHOLD) & ~np.asarray(cands["negative"])
               & ~np.asarray(cands["veto"]) & ~np.asarray(cands["is_fake"]))
    assert 0 < passing.sum() < len(cands)
    assert done_doc["n_candidates_above_threshold"] == s.n_above_threshold == int(passing.sum())
    assert (d / f"{prefix}_stamps.fits").is_file() and any((d / "stamps").glob("*.png"))
    # the template coadd and the search image: only with full_copy (-F)
    assert not (d / f"{prefix}_template.fits.fz").is_file()
    assert not (d / f"{prefix}_search.fits.fz").is_file()
    stars = read_star_list(d / f"SNSTAR_{task.search_expnum}_28_r1p1.LIST")
    veto = read_veto_list(d / f"SNVETO_{task.search_expnum}_28_r1p1.LIST")
    assert len(stars) == len(veto) > 5 and np.all(veto["radius"] >= 3.0)


def test_fake_draws_from_gathered_inputs(env, done):
    """gather_diff_inputs + difference_ccd with fake_rng draw 0 is run_diff_ccd's difference
    (the same fakes, found alike); draw 1 is an independent draw (other positions and
    magnitudes, placed as the pipeline requires) that measures the same efficiency; the
    inputs are left as they were (draw 0 again: the same fakes)."""
    from desgw.diff.pipeline import DiffConfig, difference_ccd
    from desgw.io.products import read_fits_table
    from desgw.workflow.diff_ccd import fake_rng, gather_diff_inputs

    task, s = done
    assert s.ok, s.reason
    (path,) = Path(s.outdir).glob("*_fakes.fits")
    on_disk = read_fits_table(path)
    inputs = gather_diff_inputs(task)
    cfg = DiffConfig()

    def draw(k):
        return difference_ccd(inputs.search, inputs.templates, star_veto=inputs.veto,
                              config=cfg, rng=fake_rng(task, k))

    r0, r1 = draw(0), draw(1)
    for col in ("x", "y", "mag", "recovered"):
        np.testing.assert_array_equal(np.asarray(r0.fakes[col]), np.asarray(on_disk[col]))
    assert r0.efficiency is not None and r0.efficiency.m50 == pytest.approx(s.m50)
    f0, f1 = r0.fakes, r1.fakes
    assert len(f1) == len(f0) >= 150
    xy0 = np.column_stack([f0["x"], f0["y"]])
    xy1 = np.column_stack([f1["x"], f1["y"]])
    d01 = np.hypot(*(xy1[:, None, :] - xy0[None, :, :]).transpose(2, 0, 1)).min(axis=1)
    assert np.sum(d01 < 0.5) <= 2  # chance coincidences only (hosted fakes share galaxies)
    assert abs(np.corrcoef(f0["mag"], f1["mag"])[0, 1]) < 4.0 / np.sqrt(len(f0))
    d11 = np.hypot(*(xy1[:, None, :] - xy1[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(d11, np.inf)
    assert r1.ideal_limit is not None
    assert d11.min() >= max(cfg.fake_min_separation_px, cfg.fake_detection_separation_fwhm
                            * r1.ideal_limit.difference_fwhm_px) - 1e-9
    # the same CCD's efficiency from two independent draws of 200 fakes: within 3 sigma of
    # the two fits' errors
    e0, e1 = r0.efficiency, r1.efficiency
    assert e1 is not None and np.isfinite(e0.m50_err) and np.isfinite(e1.m50_err)
    assert abs(e1.m50 - e0.m50) < 3.0 * np.hypot(e0.m50_err, e1.m50_err)
    again = draw(0)
    for col in ("x", "y", "mag", "recovered", "flux_forced"):
        np.testing.assert_array_equal(np.asarray(again.fakes[col]), np.asarray(f0[col]))


def test_database_records(env, done):
    from desgw.db import (connect, get_detections, get_fakes, get_templates_used,
                          get_zeropoints)

    task, s = done
    settings = env[0]
    with connect(settings.db_url) as db:
        dets = get_detections(db, expnum=task.search_expnum, ccdnum=CCD)
        fakes = get_fakes(db, task.search_expnum, CCD)
        used = get_templates_used(db, task.search_expnum)
    assert len(dets) == s.n_candidates
    assert len(fakes) == s.n_fakes
    assert sum(f.recovered for f in fakes) == s.n_fakes_recovered
    assert sum(d.is_fake for d in dets) == s.n_fakes_recovered
    assert {(u.template_expnum, u.template_ccdnum) for u in used} == set(s.templates_used)
    # each detection records the zeropoint its magnitude is on (schema 5): the exposure
    # calibration's for this CCD when it had already run (this fixture's SE step calibrates),
    # else the CCD's own SE zeropoint; one for all of them, and the magnitudes on it
    with connect(settings.db_url) as db:
        cal = {z.ccdnum: z.zp for z in get_zeropoints(db, task.search_expnum, rnum=task.rnum,
                                                      pnum=task.pnum)}
    assert len({d.zp for d in dets}) == 1 and math.isfinite(dets[0].zp)
    if CCD in cal:
        assert {d.zp_source for d in dets} == {"expcalib"}
        assert dets[0].zp == pytest.approx(cal[CCD], abs=1e-9)
    else:
        assert {d.zp_source for d in dets} == {"se"}
    offsets = [d.mag + 2.5 * math.log10(d.flux) for d in dets if d.mag is not None]
    assert offsets and max(offsets) - min(offsets) < 1e-6
    assert abs(offsets[0] - dets[0].zp) < 0.1  # zp less the PSF stamp's aperture correction
    # each template CCD's registration refinement is recorded with its use (schema 3)
    assert all(u.reg_method in ("affine", "shift", "wcs") and u.reg_nstars is not None
               for u in used)
    d = Path(s.outdir)
    (done_path,) = d.glob("*_diffdone.json")
    regs = {(r["expnum"], r["ccdnum"]): r
            for r in json.loads(done_path.read_text())["registration"]}
    assert len(regs) == len(used)
    for u in used:  # the same numbers as the products record
        r = regs[(u.template_expnum, u.template_ccdnum)]
        assert (u.reg_method, u.reg_nstars) == (r["method"], r["n_stars"])
        assert u.reg_dx == pytest.approx(r["shift_x"]) and u.reg_dy == pytest.approx(r["shift_y"])
        after = r["rms_after"]  # null in JSON where not finite (NULL in the database)
        assert u.reg_rms_after == (None if after is None else pytest.approx(after))


def test_resume_and_cli(env, done):
    from desgw.cli import main

    task, s = done
    again = run_diff_ccd(task)
    assert again.ok and again.skipped and again.n_candidates == s.n_candidates
    settings, _truth, nites = env
    e = task.search_expnum
    args = ["diffimg", "-E", str(e), "-r", "r1p1", "-p", f"dp{SEASON}", "-n", str(nites[e]),
            "-b", "r", "-c", "28", "--out", str(settings.out_root)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "already done" in res.output and f"{s.n_candidates} candidates" in res.output
    assert (f"({s.n_above_threshold} with real/bogus >= {RB_THRESHOLD:.3f})" in res.output)
    res = CliRunner().invoke(main, [*args[:3], "-r", "1p1", *args[5:]])
    assert res.exit_code == 2 and "r{R}p{P}" in res.output
    assert "`desgw diffimg` takes the SE version as one word, -r r{R}p{P}" in res.output
    res = CliRunner().invoke(main, [*args[:5], "-p", "r1p1", *args[7:]])
    assert res.exit_code == 2 and "that is an SE version: diffimg takes it as -r" in res.output
    # -n: found from the products when absent; a contradicting night is an error (exit 3)
    no_n = args[:7] + args[9:]
    res = CliRunner().invoke(main, no_n)
    assert res.exit_code == 0, res.output
    assert f"night {nites[e]} (from the exposure's products)" in res.output
    wrong = str(int(nites[e]) + 1)
    res = CliRunner().invoke(main, [*args[:8], wrong, *args[9:]])
    assert res.exit_code == 3, res.output
    assert f"-n {wrong} contradicts exposure {e}" in res.output
    assert f"under night {nites[e]}" in res.output


def test_failing_and_nothing_to_do(env):
    bad = run_diff_ccd(_task(env, ccdnum=29))  # no SE products of CCD 29
    assert not bad.ok and bad.error_kind == "failed" and "29" in bad.reason
    assert isinstance(bad.error, MissingFileError)
    none = run_diff_ccd(_task(env, template_expnums=(BROAD,), season=SEASON + 1))
    assert not none.ok and none.error_kind == "nothing_to_do"
    assert "QC failed" in none.reason and isinstance(none.error, DiffError)


def test_makestarcat_command(env, tmp_path):
    from desgw.cli import main

    settings, truth, nites = env
    e = truth.search_expnums[0]
    res = CliRunner().invoke(main, ["makestarcat", "-e", str(e), "-n", str(nites[e]), "-r", "1",
                                    "-p", "1", "-b", "r", "-s", str(SEASON), "--ccd", "28",
                                    "-outdir", str(tmp_path), "-rootdir",
                                    str(settings.out_root)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / f"SNSTAR_{e}_28_r1p1.LIST").is_file()
    assert (tmp_path / f"SNVETO_{e}_28_r1p1.LIST").is_file()


def test_overwrite_rerun_replaces_database_rows(env, done):
    """Issue 10 case 1: ``-O`` (and a crash before the marker) reruns a CCD; its detections,
    fakes and candidates are replaced, never added twice."""
    from desgw.db import (
        connect,
        get_candidates,
        get_detections,
        get_fakes,
        get_templates_used,
    )

    task, s = done
    settings = env[0]

    def rows():
        with connect(settings.db_url) as db:
            dets = get_detections(db, expnum=task.search_expnum, ccdnum=CCD)
            return (sorted((round(d.ra, 8), round(d.dec, 8), d.is_fake) for d in dets),
                    sorted((round(f.ra, 8), f.mag, f.recovered)
                           for f in get_fakes(db, task.search_expnum, CCD)),
                    sorted((round(c.ra, 8), c.n_detections) for c in get_candidates(db)),
                    sorted((u.template_expnum, u.template_ccdnum)
                           for u in get_templates_used(db, task.search_expnum)))

    before = rows()
    again = run_diff_ccd(_task(env, overwrite=True))
    assert again.ok and not again.skipped, again.reason
    assert again.n_candidates == s.n_candidates and again.n_fakes == s.n_fakes
    after = rows()
    assert len(after[0]) == s.n_candidates and len(after[1]) == s.n_fakes
    assert all(n == 1 for _, n in after[2])  # one exposure: no candidate seen twice
    assert after == before
