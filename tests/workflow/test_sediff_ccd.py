"""The fused search CCD (desgw.workflow.sediff_ccd): the difference imaging's in-memory view of
a CCD just processed by SE equals what load_ccd_products reads back from the written files,
field by field; the fused task gives the difference imaging the file-based path gives, writes
the SE products before its completion marker and its database rows; a re-run skips it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from desgw.db import connect, get_exposure, has_diff_records
from desgw.diff.pipeline_products import load_ccd_products
from desgw.io.completion import diff_done_path
from desgw.io.product_paths import ccd_product_paths
from desgw.io.products import read_fits_table
from desgw.io.settings import load_settings
from desgw.se.process import SEConfig, process_ccd
from desgw.workflow.dagmaker import record_from_raw
from desgw.workflow.diff_ccd import DiffTask, run_diff_ccd
from desgw.workflow.se_ccd import _product_header, _read_inputs, _write_products
from desgw.workflow.se_exposure import run_se_exposure
from desgw.workflow.se_types import CCDTask
from desgw.workflow.sediff_ccd import run_sediff_ccd, search_products_from_se

pytestmark = pytest.mark.slow

SEARCH, CCD, R, P, SEASON = 880001, 28, 1, 1, 5


@pytest.fixture(scope="module")
def env(workflow_sim, tmp_path_factory):
    """The template exposure's SE and calibration done; a database."""
    root, truth = workflow_sim
    out = tmp_path_factory.mktemp("fused_out")
    settings = load_settings(raw_dir=root / "raw", calib_dir=root / "calib",
                             refcat_dir=root / "refcat", out_root=out,
                             db_url=f"sqlite:///{out / 'desgw.sqlite'}", environ={}, cwd=root)
    (template,) = truth.template_expnums
    rep = run_se_exposure(template, settings=settings, rnum=R, pnum=P, run_calibration=True,
                          template_mode=True, single_process=True)
    assert not rep.failed, rep.lines()
    return settings, truth, template


def _tasks(env):
    settings, truth, template = env
    nite = record_from_raw(truth.raw_path(SEARCH)).nite
    calib = settings.calib_paths("r")
    from desgw.io.naming import exposure_dir

    outdir = exposure_dir(settings.out_root, "scratch", "gw", nite, SEARCH)
    se_task = CCDTask(expnum=SEARCH, ccdnum=CCD, band="r", rnum=R, pnum=P,
                      raw_path=str(truth.raw_path(SEARCH)), bias_path=str(calib.bias),
                      flat_path=str(calib.flat), bpm_path=str(calib.bpm),
                      linearity_path=None if calib.linearity is None else str(calib.linearity),
                      refcat_dir=str(settings.refcat_dir), outdir=str(outdir), overwrite=True)
    diff_task = DiffTask(search_expnum=SEARCH, ccdnum=CCD, template_expnums=(template,),
                         settings=settings, rnum=R, pnum=P, season=SEASON, cache="scratch",
                         schema="gw", version="test", band="r", nite=nite, overwrite=True)
    return se_task, diff_task


def test_in_memory_search_products_equal_the_files(env):
    se_task, _ = _tasks(env)
    config = SEConfig()
    timings: dict[str, float] = {}
    result = process_ccd(_read_inputs(se_task, timings, config.refcat_margin_arcsec),
                         config=config)
    header = _product_header(se_task, config.hash(), result.header)
    mem = search_products_from_se(result, header, band="r", expnum=SEARCH, ccdnum=CCD)
    _write_products(se_task, result, config.hash(), timings, 0.0)
    p = ccd_product_paths(se_task.outdir, SEARCH, "r", CCD, R, P)
    disk = load_ccd_products(p.immask, psfmodel=p.psfmodel, fullcat=p.fullcat, qc=p.qc,
                             band="r", expnum=SEARCH, ccdnum=CCD)

    assert mem.shape == disk.shape == (4096, 2048)
    np.testing.assert_array_equal(mem.mask, disk.mask)
    # the weight plane: equal up to the codec's precision (lossless today)
    np.testing.assert_allclose(mem.weight, disk.weight, rtol=1e-3, atol=0)
    # the image: the file holds it quantised (RICE, q=16: steps of ~sigma/16)
    good = mem.weight > 0
    pull = (mem.image - disk.image)[good] * np.sqrt(mem.weight[good])
    assert np.max(np.abs(pull)) < 0.1 and np.std(pull) < 0.03
    # WCS: the same sky positions over the CCD (< 1 micro-arcsec)
    y, x = np.mgrid[0:4096:512, 0:2048:256].astype(float)
    a = mem.wcs.all_pix2world(x.ravel(), y.ravel(), 0)
    b = disk.wcs.all_pix2world(x.ravel(), y.ravel(), 0)
    assert np.max(np.hypot((a[0] - b[0]) * np.cos(np.radians(a[1])), a[1] - b[1])) * 3.6e9 < 1.0
    # PSF: the same stamps across the CCD
    for px, py in ((100.0, 100.0), (1024.0, 2048.0), (1900.5, 3900.25)):
        np.testing.assert_allclose(mem.psf.render(px, py), disk.psf.render(px, py),
                                   rtol=1e-6, atol=1e-9)
    # catalog: same rows and columns, same values
    assert mem.catalog is not None and disk.catalog is not None
    assert len(mem.catalog) == len(disk.catalog) > 100
    assert mem.catalog.colnames == disk.catalog.colnames
    for name in ("X_IMAGE", "Y_IMAGE", "ALPHAWIN_J2000", "DELTAWIN_J2000", "FLUX_PSF",
                 "FLUXERR_PSF", "MAG_AUTO", "FLAGS", "SPREAD_MODEL"):
        if name in mem.catalog.colnames:
            np.testing.assert_allclose(np.asarray(mem.catalog[name], float),
                                       np.asarray(disk.catalog[name], float), rtol=1e-6,
                                       equal_nan=True, err_msg=name)
    # the numbers from the header and the QC file
    for name in ("zp", "exptime", "fwhm", "psf_apcor", "t_eff"):
        assert getattr(mem, name) == pytest.approx(getattr(disk, name), rel=1e-9), name
    assert np.isfinite(mem.zp) and np.isfinite(mem.t_eff)
    assert (mem.qc_passed, mem.band, mem.expnum, mem.ccdnum) == \
        (disk.qc_passed, disk.band, disk.expnum, disk.ccdnum)


def test_fused_ccd_matches_the_file_path_and_orders_its_writes(env):
    settings, _, _ = env
    se_task, diff_task = _tasks(env)
    p = ccd_product_paths(se_task.outdir, SEARCH, "r", CCD, R, P)
    done = diff_done_path(settings.out_root, SEARCH, CCD,
                          {"band": "r", "nite": diff_task.nite, "rnum": R, "pnum": P,
                           "cache": "scratch", "schema": "gw", "season": SEASON})
    with connect(settings.db_url) as db:  # only the template's calibration ran
        assert get_exposure(db, SEARCH) is None

    se_sum, fused = run_sediff_ccd(se_task, diff_task)
    assert se_sum.ok and not se_sum.skipped and fused.ok, (se_sum.reason, fused.reason)
    assert p.complete()
    # the SE products and their marker come before the difference imaging's marker
    assert max(f.stat().st_mtime_ns for f in p.all()) <= done.stat().st_mtime_ns
    doc = json.loads(done.read_text())
    assert "write_se" in doc["timings"]
    with connect(settings.db_url) as db:  # the fused task registered its exposure
        assert get_exposure(db, SEARCH) is not None and has_diff_records(db, SEARCH, CCD)
    cands = read_fits_table(next(done.parent.glob("*_cands.fits")))

    from_files = run_diff_ccd(diff_task)  # the same CCD from the SE products on disk
    assert from_files.ok, from_files.reason
    cands_files = read_fits_table(next(done.parent.glob("*_cands.fits")))
    # the same difference imaging, up to the immask's quantisation of the search image
    assert fused.n_fakes == from_files.n_fakes > 0
    assert abs(fused.n_fakes_recovered - from_files.n_fakes_recovered) <= \
        max(2, 0.05 * from_files.n_fakes)
    assert abs(len(cands) - len(cands_files)) <= max(3, 0.1 * len(cands_files))
    bright = cands_files[np.asarray(cands_files["snr"], float) > 10]
    assert len(bright) > 0
    d = np.hypot(np.asarray(bright["x"], float)[:, None] - np.asarray(cands["x"], float),
                 np.asarray(bright["y"], float)[:, None] - np.asarray(cands["y"], float))
    assert np.all(d.min(axis=1) < 1.0)

    # a second fused run finds the SE products and the marker: nothing is redone
    from dataclasses import replace

    se_again, diff_again = run_sediff_ccd(replace(se_task, overwrite=False),
                                          replace(diff_task, overwrite=False))
    assert se_again.skipped and diff_again.skipped
