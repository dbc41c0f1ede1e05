"""run_se_exposure end to end on a simulated exposure (2 CCDs): products, resume, overwrite,
a failing CCD, single process vs worker processes, calibration and database records."""

import json
import math

import numpy as np
import pytest

from desgw.io.calib import CalibFile, write_calib
from desgw.io.corners import read_corners_out
from desgw.io.naming import (
    allzp_csv_name,
    corners_out_name,
    qc_exposure_name,
    zero_csv_name,
    zp_csv_name,
)
from desgw.io.product_paths import ccd_product_paths
from desgw.io.products import read_fits_table, read_immask
from desgw.io.settings import load_settings
from desgw.workflow.se_exposure import run_se_exposure

pytestmark = pytest.mark.slow

EXPNUM, R, P, CCDS = 880001, 3, 7, (28, 29)


@pytest.fixture(scope="module")
def sim(search_sim_2ccd):
    """A simulated search exposure (CCDs 28, 29) with its Gaia store (shared, read only)."""
    from desgw.sim import load_truth

    return search_sim_2ccd, load_truth(search_sim_2ccd)


def _settings(root, out, **kw):
    return load_settings(raw_dir=root / "raw", calib_dir=kw.get("calib", root / "calib"),
                         refcat_dir=root / "refcat", out_root=out, db_url=kw.get("db_url"),
                         environ={}, cwd=root)


@pytest.fixture(scope="module")
def parallel_run(sim, tmp_path_factory):
    root, _ = sim
    out = tmp_path_factory.mktemp("se_run_out")
    db_url = f"sqlite:///{out / 'desgw.sqlite'}"
    report = run_se_exposure(EXPNUM, settings=_settings(root, out, db_url=db_url), rnum=R, pnum=P,
                             run_calibration=True, workers=2)
    return out, db_url, report


def test_products_corners_zeropoints_and_quality(sim, parallel_run):
    _, truth = sim
    out, db_url, report = parallel_run
    assert report.ok, report.lines()
    assert report.processed == CCDS and not report.failed
    band, nite = truth.exposure_spec(EXPNUM).band, report.nite
    expdir = out / "scratch" / "gw" / "exp" / str(nite) / str(EXPNUM)
    assert report.outdir == expdir
    for ccd in CCDS:
        paths = ccd_product_paths(expdir, EXPNUM, band, ccd, R, P)
        assert paths.immask.name == f"D{EXPNUM:08d}_{band}_{ccd:02d}_r{R}p{P}_immask.fits.fz"
        assert paths.complete()
        im = read_immask(paths.immask)
        assert im.sci.shape == (4096, 2048) and im.sci.dtype == np.float32
        assert im.header["CFGHASH"] == report.ccds[ccd].config_hash
        # the fitted WCS stored with the image maps pixels to the true sky
        x, y = np.array([100.0, 1024.0, 1900.0]), np.array([200.0, 2048.0, 3900.0])
        ra, dec = im.wcs.all_pix2world(x, y, 0)
        tra, tdec = truth.true_pixel_to_sky(EXPNUM, ccd, x, y)
        sep = np.hypot((ra - tra) * np.cos(np.radians(tdec)), dec - tdec) * 3600
        assert sep.max() < 0.1  # arcsec
        cat = read_fits_table(paths.fullcat)
        assert len(cat) == report.ccds[ccd].n_objects > 100
        for name in (zero_csv_name(EXPNUM, ccd, R, P), zp_csv_name(EXPNUM, ccd, R, P)):
            assert (expdir / name).is_file()
    assert (expdir / allzp_csv_name(EXPNUM, R, P)).is_file()

    # {expnum}.out: corners at pixels 16/2033 x 16/4081 (1-based) agree with the true sky
    corners = read_corners_out(expdir / corners_out_name(EXPNUM))
    assert sorted(corners.corners) == list(CCDS) and corners.band == band
    for ccd in CCDS:
        ra, dec = truth.true_pixel_to_sky(EXPNUM, ccd, np.array([15.0, 2032, 2032, 15]),
                                          np.array([15.0, 15, 4080, 4080]))
        cra, cdec = (np.array(v) for v in corners.corners[ccd])
        sep = np.hypot((cra - ra) * np.cos(np.radians(dec)), cdec - dec) * 3600
        assert sep.max() < 0.1  # arcsec

    # calibrated zeropoints (e- over the exposure) against the simulator's truth (e-/s)
    exptime = truth.exposure_spec(EXPNUM).exptime
    for ccd, zp in report.zeropoints.items():
        true_zp = float(truth.ccd_row(EXPNUM, ccd)["zeropoint"]) + 2.5 * math.log10(exptime)
        assert zp == pytest.approx(true_zp, abs=0.03)

    # exposure quality
    doc = json.loads((expdir / qc_exposure_name(EXPNUM, band, R, P)).read_text())
    assert doc["qc"]["passed"] is True and doc["calibrated_zeropoints"] is True
    true_fwhm = np.mean([float(truth.ccd_row(EXPNUM, c)["fwhm_arcsec"]) for c in CCDS])
    assert doc["qc"]["metrics"]["fwhm_arcsec"] == pytest.approx(true_fwhm, rel=0.1)
    assert report.exposure_qc.passed

    # database records
    from desgw.db import connect, get_ccd_products, get_zeropoints

    with connect(db_url) as db:
        products = get_ccd_products(db, EXPNUM)
        zps = get_zeropoints(db, EXPNUM)
    assert sorted(p.ccdnum for p in products) == list(CCDS)
    assert all(p.status == "done" and p.qc_passed for p in products)
    assert sorted(z.ccdnum for z in zps) == [0, *CCDS]
    exp_zp = next(z for z in zps if z.ccdnum == 0)
    assert exp_zp.zp == pytest.approx(report.expcalib.zp)


def test_rerun_skips_finished_ccds(sim, parallel_run):
    root, _ = sim
    out, _, first = parallel_run
    paths = ccd_product_paths(first.outdir, EXPNUM, first.band, 28, R, P)
    before = paths.immask.stat().st_mtime_ns
    report = run_se_exposure(EXPNUM, settings=_settings(root, out), rnum=R, pnum=P, workers=2)
    assert report.ok and report.skipped == CCDS and report.processed == ()
    assert paths.immask.stat().st_mtime_ns == before
    assert report.stage_seconds["ccds"] < 2.0
    # the resumed summaries carry what the exposure steps need
    np.testing.assert_allclose(report.ccds[28].corners, first.ccds[28].corners, rtol=0, atol=1e-9)
    assert report.ccds[29].qc.metrics.fwhm_arcsec == pytest.approx(
        first.ccds[29].qc.metrics.fwhm_arcsec)
    assert report.exposure_qc.passed


def test_jump_to_calib_and_template_mode_use_the_products_on_disk(sim, parallel_run):
    root, _ = sim
    out, _, first = parallel_run
    zero = first.outdir / zero_csv_name(EXPNUM, 28, R, P)
    before = zero.stat().st_mtime_ns
    report = run_se_exposure(EXPNUM, settings=_settings(root, out), rnum=R, pnum=P,
                             jump_to_calib=True, template_mode=True)
    assert report.ok and report.processed == () and report.skipped == CCDS
    assert zero.stat().st_mtime_ns > before                      # calibrated again
    assert report.zeropoints == pytest.approx(first.zeropoints, abs=1e-9)
    assert not hasattr(report.exposure_qc, "passed")              # -t: measured, not assessed
    doc = json.loads((first.outdir / qc_exposure_name(EXPNUM, first.band, R, P)).read_text())
    assert doc["template_mode"] is True and doc["qc"]["passed"] is None
    assert doc["qc"]["metrics"]["teff"]["teff"] == pytest.approx(
        first.exposure_qc.metrics.teff.teff)


def test_single_process_gives_the_same_products_and_overwrite_redoes(sim, parallel_run,
                                                                     tmp_path):
    root, _ = sim
    _, _, par = parallel_run
    single = run_se_exposure(EXPNUM, settings=_settings(root, tmp_path), rnum=R, pnum=P,
                             single_process=True)
    assert single.ok and single.processed == CCDS
    for ccd in CCDS:
        a = ccd_product_paths(par.outdir, EXPNUM, par.band, ccd, R, P)
        b = ccd_product_paths(single.outdir, EXPNUM, par.band, ccd, R, P)
        ia, ib = read_immask(a.immask), read_immask(b.immask)
        for x, y in ((ia.sci, ib.sci), (ia.msk, ib.msk), (ia.wgt, ib.wgt)):
            np.testing.assert_array_equal(x, y)
        ca, cb = read_fits_table(a.fullcat), read_fits_table(b.fullcat)
        assert ca.colnames == cb.colnames and len(ca) == len(cb)
        for name in ca.colnames:
            np.testing.assert_array_equal(np.asarray(ca[name]), np.asarray(cb[name]))

    # -O redoes a finished CCD (the others stay), with the same result
    target = ccd_product_paths(single.outdir, EXPNUM, par.band, 28, R, P)
    other = ccd_product_paths(single.outdir, EXPNUM, par.band, 29, R, P)
    t28, t29 = target.immask.stat().st_mtime_ns, other.immask.stat().st_mtime_ns
    before = read_immask(target.immask)
    # the decoded bias, flat and bad-pixel planes of both CCDs were kept for later tasks
    cached = sorted((p.parent.parent.name.split(".")[0], p.name)
                    for p in _settings(root, tmp_path).calib_cache_dir.rglob("*.npy"))
    assert cached == [(k, f"ccd{c}.npy") for k in ("bias", "bpm", "flat_r") for c in CCDS]
    # and the raw CCDs other CCDs' crosstalk needs (28 -> 29, 29 -> 30), decoded once
    raw_kept = sorted(p.name for p in _settings(root, tmp_path).raw_cache_dir.rglob("*.npy"))
    assert raw_kept == [f"ccd{c}.npy" for c in CCDS]
    again = run_se_exposure(EXPNUM, settings=_settings(root, tmp_path), rnum=R, pnum=P,
                            single_process=True, overwrite=True, ccds=[28])
    # CCD 29's products, kept, are still part of the exposure (issue 10 case 3)
    assert again.processed == (28,) and again.skipped == (29,)
    assert target.immask.stat().st_mtime_ns > t28
    after = read_immask(target.immask)  # raw CCDs and calibrations from the caches: the same
    for x, y in ((before.sci, after.sci), (before.msk, after.msk), (before.wgt, after.wgt)):
        np.testing.assert_array_equal(x, y)
    assert other.immask.stat().st_mtime_ns == t29
    assert len(read_fits_table(target.fullcat)) == single.ccds[28].n_objects


def test_a_failing_ccd_is_reported_and_the_other_finishes(sim, tmp_path):
    root, _ = sim
    calib = tmp_path / "calib"
    calib.mkdir()
    for name in ("bias.fits.fz", "flat_r.fits.fz"):
        (calib / name).symlink_to(root / "calib" / name)
    with CalibFile(root / "calib" / "bpm.fits.fz") as f:  # a bad-pixel mask without CCD 29
        write_calib(calib / "bpm.fits.fz", "bpm", {28: f.read(28)})
    out = tmp_path / "out"
    report = run_se_exposure(EXPNUM, settings=_settings(root, out, calib=calib), rnum=R, pnum=P,
                             run_calibration=True, workers=2)
    assert not report.ok
    assert set(report.failed) == {29} and "29" in report.failed[29]
    assert "MissingCCDError" in report.failed[29]
    assert report.processed == (28,)
    assert ccd_product_paths(report.outdir, EXPNUM, report.band, 28, R, P).complete()
    assert not any(report.outdir.glob(f"*_29_r{R}p{P}_*"))  # nothing half-written
    assert sorted(read_corners_out(report.outdir / corners_out_name(EXPNUM)).corners) == [28]
    assert sorted(report.zeropoints) == [28]
    assert any("FAILED CCD 29" in line for line in report.lines())
