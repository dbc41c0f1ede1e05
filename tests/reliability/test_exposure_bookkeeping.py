"""Issue 10 case 3: a run on some CCDs of an exposure rebuilds the exposure-level files from
every CCD product present, not from that call's CCDs only (``se -c 22,23`` then ``se -c 35``
left an ``{expnum}.out`` with CCD 35 alone, and the search CCDs found no overlapping
template CCD)."""

from __future__ import annotations

import json

from desgw.io.completion import exposure_outdir, se_paths
from desgw.io.corners import read_corners_out
from desgw.io.naming import corners_out_name
from desgw.io.settings import load_settings
from desgw.workflow.se_exposure import run_se_exposure

EXPNUM = 770001
ARGS = {"band": "r", "nite": 20190301, "rnum": 2, "pnum": 3, "cache": "scratch",
        "schema": "gw"}


def _ccd_products(out, ccd):
    """Stand-in products of one CCD; its QC file holds the CCD's sky corners."""
    paths = se_paths(out, EXPNUM, ccd, ARGS)
    paths.immask.parent.mkdir(parents=True, exist_ok=True)
    for p in paths.all()[:-1]:
        p.write_bytes(b"stand-in")
    ra0 = 30.0 + 0.3 * ccd
    paths.qc.write_text(json.dumps({"corners": {"ra": [ra0, ra0 + 0.15, ra0 + 0.15, ra0],
                                                "dec": [-10.0, -10.0, -9.7, -9.7]}}))


def test_corners_describe_every_ccd_present(tmp_path):
    out = tmp_path / "out"
    settings = load_settings(raw_dir=tmp_path / "raw", calib_dir=tmp_path / "calib",
                             refcat_dir=tmp_path / "refcat", out_root=out, environ={},
                             cwd=tmp_path)
    kw = {"settings": settings, "rnum": 2, "pnum": 3, "nite": 20190301, "band": "r",
          "jump_to_calib": True}
    for ccd in (22, 23):
        _ccd_products(out, ccd)
    run_se_exposure(EXPNUM, ccds=[22, 23], **kw)
    corners_path = exposure_outdir(out, EXPNUM, ARGS) / corners_out_name(EXPNUM)
    assert sorted(read_corners_out(corners_path).corners) == [22, 23]
    _ccd_products(out, 35)
    report = run_se_exposure(EXPNUM, ccds=[35], **kw)
    assert sorted(read_corners_out(corners_path).corners) == [22, 23, 35]
    assert sorted(report.ccds) == [22, 23, 35]
    c22 = read_corners_out(corners_path).corners[22]
    assert abs(min(c22[0]) - 36.6) < 1e-9  # CCD 22's own corners, kept
    # a CCD whose products are gone is no longer described
    se_paths(out, EXPNUM, 23, ARGS).qc.unlink()
    run_se_exposure(EXPNUM, ccds=[35], **kw)
    assert sorted(read_corners_out(corners_path).corners) == [22, 35]
