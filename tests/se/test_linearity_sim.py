"""The linearity correction on the simulated night: the table the simulator writes, process_ccd
with and without it, and the exposure runner reading calib/linearity.fits when present."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest

from desgw.io.calib import read_linearity
from desgw.io.products import read_immask
from desgw.se.process import process_ccd

# Uses (and processes) the session's simulated night: minutes.
pytestmark = pytest.mark.slow

CCD = 28


@pytest.fixture(scope="module")
def search_inputs(sim_night, sim_ccd_inputs):
    outdir, truth = sim_night
    expnum = truth.search_expnums[0]
    inputs = sim_ccd_inputs(expnum, CCD)
    table = read_linearity(Path(outdir) / "calib" / "linearity.fits", CCD)
    return expnum, inputs, table


def test_the_sim_night_writes_a_nonlinear_table(search_inputs):
    _, _, table = search_inputs
    for amp in ("A", "B"):
        gain_back = table.linear(amp) - table.adu
        assert np.all(np.diff(table.linear(amp)) > 0)
        # 0.5-1.5 % at 30-57k ADU SATURATA: tens to hundreds of ADU at 30k recorded ADU
        k = np.searchsorted(table.adu, 30000.0)
        assert 0.0005 * 30000 < gain_back[k] < 0.03 * 30000
        assert abs(gain_back[np.searchsorted(table.adu, 500.0)]) < 0.05


def test_process_ccd_with_the_table(sim_night, search_inputs):
    """With the table: zeropoint within 5 mmag of the truth and astrometry as good; the
    brightest sources gain up to a few 1e-4 of flux over the uncorrected run, faint ones none."""
    _, truth = sim_night
    expnum, inputs, table = search_inputs
    with_lin = process_ccd(dataclasses.replace(inputs, linearity=table))
    without = process_ccd(dataclasses.replace(inputs, linearity=None))
    assert with_lin.header["LINCOR"] is True and without.header["LINCOR"] is False
    spec = truth.exposure_spec(expnum)
    zp_true = float(truth.ccd_row(expnum, CCD)["zeropoint"]) + 2.5 * np.log10(spec.exptime)
    assert abs(with_lin.zeropoint.zp - zp_true) <= 0.005
    assert with_lin.astrometry.rms_arcsec < 0.05
    # same detections, bright ones brighter after the correction, faint ones unchanged
    a, b = with_lin.catalog, without.catalog
    xa = np.column_stack([np.asarray(a["XWIN_IMAGE"]), np.asarray(a["YWIN_IMAGE"])])
    xb = np.column_stack([np.asarray(b["XWIN_IMAGE"]), np.asarray(b["YWIN_IMAGE"])])
    from scipy.spatial import cKDTree

    d, j = cKDTree(xb).query(xa)
    ok = (d < 0.2) & (np.asarray(a["FLAGS"]) == 0) & (np.asarray(b["FLAGS"])[j] == 0)
    fa = np.asarray(a["FLUX_AUTO"], dtype=float)[ok]
    fb = np.asarray(b["FLUX_AUTO"], dtype=float)[j[ok]]
    ratio = fa / fb - 1
    bright = fa > np.percentile(fa, 99)
    faint = fa < np.percentile(fa, 50)
    # the correction only adds flux, up to a few 1e-4 for the brightest unsaturated sources
    # (their pixels reach a fraction of SATURATA); faint sources sit at the sky level
    assert np.all(ratio[bright] > -1e-4) and np.all(ratio[bright] < 0.016)
    assert np.max(ratio[bright]) > 5e-4
    assert abs(np.median(ratio[faint])) < 5e-5


@pytest.mark.slow
def test_runner_reads_the_table_and_warns_once_without_it(sim_night, sim_refcat_store, tmp_path,
                                                           caplog):
    from desgw.io.settings import load_settings
    from desgw.workflow.se_exposure import run_se_exposure

    outdir, truth = sim_night
    expnum = truth.search_expnums[0]
    no_lin = tmp_path / "calib_no_linearity"
    no_lin.mkdir()
    for p in (Path(outdir) / "calib").iterdir():
        if p.name != "linearity.fits":
            (no_lin / p.name).symlink_to(p)
    lincor = {}
    for name, calib_dir in (("with", Path(outdir) / "calib"), ("without", no_lin)):
        settings = load_settings(raw_dir=Path(outdir) / "raw", calib_dir=calib_dir,
                                 refcat_dir=sim_refcat_store.store_dir,
                                 out_root=tmp_path / name, environ={}, cwd=tmp_path)
        assert (settings.calib_paths("r").linearity is None) == (name == "without")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="desgw.workflow.se_exposure"):
            report = run_se_exposure(expnum, settings=settings, rnum=1, pnum=1, ccds=[CCD],
                                     single_process=True)
        assert report.processed == (CCD,), report.lines()
        warned = [r for r in caplog.records if "linearity" in r.getMessage()]
        assert len(warned) == (1 if name == "without" else 0)
        immask = next(Path(report.outdir).glob(f"*_{CCD:02d}_r1p1_immask.fits*"))
        lincor[name] = read_immask(immask).header["LINCOR"]
    assert lincor == {"with": True, "without": False}
