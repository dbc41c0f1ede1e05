"""Template CCD footprints without the exposure's corners file: a template whose CCDs went
through SE only (``sediff`` without ``-C`` on a fresh tree) is still found by the search."""

from __future__ import annotations

import json

import numpy as np
import pytest

from desgw.errors import MissingFileError
from desgw.io.corners import write_corners_out
from desgw.io.naming import corners_out_name
from desgw.io.product_paths import ccd_product_paths
from desgw.workflow.diff_ccd import find_template_ccds, template_corners

TEMPLATE = 664075


def _box(ra0: float, dec0: float) -> tuple[list[float], list[float]]:
    return [ra0, ra0 + 0.15, ra0 + 0.15, ra0], [dec0, dec0, dec0 + 0.3, dec0 + 0.3]


def _se_only(directory, boxes, damaged=()):
    for ccd, (ra, dec) in boxes.items():
        paths = ccd_product_paths(directory, TEMPLATE, "r", ccd, 1, 1)
        paths.fullcat.parent.mkdir(parents=True, exist_ok=True)
        paths.fullcat.write_bytes(b"stand-in")
        doc = {"corners": {"ra": ra, "dec": dec}} if ccd not in damaged else {"corners": 3}
        paths.qc.write_text(json.dumps(doc))


def test_corners_from_the_ccds_qc_files_when_the_exposure_file_is_missing(tmp_path):
    d = tmp_path / "out" / "scratch" / "gw" / "exp" / "20170824" / str(TEMPLATE)
    boxes = {22: _box(30.0, -30.0), 28: _box(30.2, -30.0), 29: _box(31.0, -30.0)}
    _se_only(d, boxes, damaged=(29,))
    got = template_corners(d, TEMPLATE, 1, 1)
    assert sorted(got) == [22, 28]  # the damaged qc.json is left out, not fatal
    np.testing.assert_allclose(got[28], np.array(boxes[28]))
    search = (np.array(boxes[28][0]) + 0.05, np.array(boxes[28][1]) + 0.1)
    found = find_template_ccds(search, 28, [TEMPLATE], out_root=tmp_path / "out", band="r",
                               rnum=1, pnum=1, search_expnum=880001)
    assert found == {TEMPLATE: (d, [28])}
    # with the corners file (the exposure step ran), it is the one used
    write_corners_out(d / corners_out_name(TEMPLATE), TEMPLATE, {22: boxes[22]}, band="r")
    assert sorted(template_corners(d, TEMPLATE, 1, 1)) == [22]


def test_no_corners_anywhere_names_the_file(tmp_path):
    d = tmp_path / str(TEMPLATE)
    d.mkdir()
    with pytest.raises(MissingFileError, match=f"{TEMPLATE}.out"):
        template_corners(d, TEMPLATE, 1, 1)
