"""desgw.workflow.templates: DAGMaker template rules, CCD overlaps, {expnum}.out files."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
from astropy.wcs import WCS

from desgw.db.records import ExposureRecord
from desgw.instrument import DEFAULT_CCDNUMS
from desgw.instrument.optics import (Pointing, ccd_corners_sky, focal_to_pixel, pixel_to_sky,
                                     sky_to_tangent, tangent_to_focal)
from desgw.errors import DesgwInputError, MissingFileError
from desgw.workflow.dagmaker_rc import DagmakerConfig
from desgw.io.corners import CORNER_PIXELS, read_corners_out, write_corners_out
from desgw.workflow.templates import (ccd_corners_from_wcs, ccd_overlaps, read_blacklist,
                                      select_templates)

SEARCH = ExposureRecord(expnum=700000, nite=20190425, mjd=58598.1, band="i", exptime=90.0,
                        ra=150.0, dec=2.0, object="S190425z hex 1", propid="2019A-0205",
                        obstype="object", t_eff=0.9)
CONFIG = DagmakerConfig(teff_cut_i=0.3, twindow=15.0, min_nite=20130101, max_nite=20190501)


def cand(expnum, **changes):
    base = dataclasses.replace(SEARCH, expnum=expnum, nite=20180301, mjd=58178.1, ra=150.5,
                               dec=1.5, t_eff=0.6)
    return dataclasses.replace(base, **changes)


# ----------------------------------------------------------------------------- selection
def test_each_rule():
    good = cand(1)
    cases = {
        2: (cand(2, band="r"), "band r differs"),
        3: (cand(3, ra=152.3, dec=2.0), "pointing 2.299 deg"),      # 2.3 deg of RA at dec 2
        4: (cand(4, obstype="dome flat"), "OBSTYPE='dome flat'"),
        5: (cand(5, object="pointing test"), "OBJECT 'pointing test'"),
        6: (cand(6), "blacklisted"),
        7: (cand(7, mjd=SEARCH.mjd - 14.9, nite=20190410), "less than TWINDOW 15"),
        8: (cand(8, t_eff=0.29), "t_eff 0.290 below TEFF_CUT_i 0.3"),
        9: (cand(9, nite=20121231), "night 20121231 outside"),
        10: (cand(10, nite=20190601, mjd=58635.1), "night 20190601 outside"),
        11: (dataclasses.replace(SEARCH), "the search exposure itself"),
    }
    later = cand(12, mjd=SEARCH.mjd + 16.0, nite=20190430)  # a later template is fine
    edge = cand(13, mjd=SEARCH.mjd - 15.0, t_eff=0.3, ra=150.0, dec=2.0 + 2.2)
    unknown = cand(14, t_eff=None)
    inputs = [good] + [c for c, _ in cases.values()] + [later, edge, unknown]
    sel = select_templates(SEARCH, inputs, CONFIG, blacklist={6})
    assert sel.selected_expnums == (1, 12, 13, 14)
    assert sel.unknown_teff == (14,)
    reasons = {r.exposure.expnum: r.reasons for r in sel.rejected}
    assert set(reasons) == set(cases) - {11} | {700000}
    for expnum, (_, text) in cases.items():
        key = 700000 if expnum == 11 else expnum
        assert len(reasons[key]) == 1 and text in reasons[key][0], (expnum, reasons[key])


def test_all_failed_rules_are_listed_and_unknown_teff_policy():
    bad = cand(20, band="r", ra=155.0, mjd=SEARCH.mjd - 1, nite=20100101, t_eff=None)
    sel = select_templates(SEARCH, [bad], dataclasses.replace(CONFIG, accept_unknown_teff=False))
    (rej,) = sel.rejected
    assert len(rej.reasons) == 5  # band, pointing, TWINDOW, unknown t_eff, night
    assert any("t_eff unknown" in r for r in rej.reasons)
    # default config: no t_eff cut and unknown accepted
    sel = select_templates(SEARCH, [cand(21, t_eff=None), cand(22, t_eff=0.01)], DagmakerConfig())
    assert sel.selected_expnums == (21, 22) and sel.unknown_teff == (21,)


def test_pointing_limit_across_ra_zero():
    search = dataclasses.replace(SEARCH, ra=0.5, dec=-30.0)
    near = cand(30, ra=359.0, dec=-30.0)   # 1.3 deg away across RA = 0
    far = cand(31, ra=357.0, dec=-30.0)    # 3.03 deg away
    sel = select_templates(search, [near, far], CONFIG)
    assert sel.selected_expnums == (30,)


def test_read_blacklist(tmp_path):
    path = tmp_path / "blacklist.txt"
    path.write_text("# bad exposures\n668439\n  668440  satellite trail\n\n668441 # focus\n")
    assert read_blacklist(path) == frozenset({668439, 668440, 668441})
    path.write_text("668439\nabc\n")
    with pytest.raises(DesgwInputError, match="line 2: 'abc'"):
        read_blacklist(path)
    with pytest.raises(MissingFileError):
        read_blacklist(tmp_path / "none.txt")


# ----------------------------------------------------------------------------- overlaps
def square(ra0, dec0, size):
    """Corners of a size x size deg square centred on (ra0, dec0) (small, near the equator)."""
    h = size / 2.0
    return ([ra0 - h, ra0 + h, ra0 + h, ra0 - h], [dec0 - h, dec0 - h, dec0 + h, dec0 + h])


def test_overlap_area_threshold_and_touching():
    search = {1: square(10.0, 0.0, 0.1)}
    # shifted by half its width: overlap 0.05 x 0.1 = 0.005 deg^2
    template = {5: square(10.05, 0.0, 0.1), 6: square(10.2, 0.0, 0.1), 7: square(10.1, 0.0, 0.1)}
    assert ccd_overlaps(search, template) == {1: [5]}  # 7 only touches, 6 is apart
    assert ccd_overlaps(search, template, min_overlap_deg2=0.0049) == {1: [5]}
    assert ccd_overlaps(search, template, min_overlap_deg2=0.0051) == {1: []}
    # corner order does not matter
    ra, dec = square(10.05, 0.0, 0.1)
    scrambled = {5: ([ra[0], ra[2], ra[1], ra[3]], [dec[0], dec[2], dec[1], dec[3]])}
    assert ccd_overlaps(search, scrambled, min_overlap_deg2=0.0049) == {1: [5]}
    with pytest.raises(ValueError, match="corners must be"):
        ccd_overlaps({1: ([1, 2, 3], [1, 2, 3])}, template)


def decam_corners(pointing):
    return {c: ccd_corners_sky(c, pointing) for c in DEFAULT_CCDNUMS}


def sampled_overlaps(search_pointing, template_pointing, n=(24, 48)):
    """Brute force: sample each template CCD and find the search CCDs that contain a sample."""
    gx, gy = np.meshgrid(np.linspace(0, 2047, n[0]), np.linspace(0, 4095, n[1]))
    out = {c: set() for c in DEFAULT_CCDNUMS}
    for t in DEFAULT_CCDNUMS:
        ra, dec = pixel_to_sky(t, gx.ravel(), gy.ravel(), template_pointing)
        xi, eta = sky_to_tangent(ra, dec, search_pointing)
        xmm, ymm = tangent_to_focal(xi, eta)
        for s in DEFAULT_CCDNUMS:
            x, y = focal_to_pixel(s, xmm, ymm)
            if np.any((x > -0.5) & (x < 2047.5) & (y > -0.5) & (y < 4095.5)):
                out[s].add(t)
    return out


@pytest.mark.parametrize("search_pointing, template_pointing", [
    (Pointing(150.0, 2.0), Pointing(150.31, 2.17, 0.0)),
    (Pointing(0.1, -20.0), Pointing(359.85, -19.9, 0.5)),   # across RA = 0, rotated
])
def test_decam_overlaps_match_brute_force(search_pointing, template_pointing):
    search, template = decam_corners(search_pointing), decam_corners(template_pointing)
    found = ccd_overlaps(search, template)
    # any overlap of more than a sampling cell must be found by sampling, and vice versa
    big = ccd_overlaps(search, template, min_overlap_deg2=6e-4)
    sampled = sampled_overlaps(search_pointing, template_pointing)
    n_pairs = 0
    for s in DEFAULT_CCDNUMS:
        assert sampled[s] <= set(found[s]), s
        assert set(big[s]) <= sampled[s], s
        n_pairs += len(found[s])
    assert 60 < n_pairs < 250  # a real, partial overlap of the two focal planes


def test_same_pointing_overlaps_only_itself_and_far_pointing_none():
    p = Pointing(150.0, 2.0)
    corners = decam_corners(p)
    assert ccd_overlaps(corners, corners) == {c: [c] for c in DEFAULT_CCDNUMS}
    far = decam_corners(Pointing(155.0, 2.0))
    assert all(v == [] for v in ccd_overlaps(corners, far).values())


# ----------------------------------------------------------------------------- corners files
def test_corners_from_wcs():
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = [16.0, 16.0]          # pixel (16, 16) 1-based is the reference point
    w.wcs.crval = [359.99, -5.0]
    w.wcs.cd = [[0.0, 7.3e-5], [-7.3e-5, 0.0]]  # DECam-like: x -> -Dec, y -> +RA
    ra, dec = ccd_corners_from_wcs(w)
    assert ra[0] == pytest.approx(359.99, abs=1e-9) and dec[0] == pytest.approx(-5.0, abs=1e-9)
    # (2033, 16): 2017 pixels along x = -2017 * 7.3e-5 deg in Dec
    assert dec[1] == pytest.approx(-5.0 - 2017 * 7.3e-5, abs=1e-6)
    # (16, 4081): 4065 pixels along y = +RA, wrapping through 0
    expected_ra = (359.99 + 4065 * 7.3e-5 / np.cos(np.radians(-5.0))) % 360.0
    assert ra[3] == pytest.approx(expected_ra, abs=1e-5) and ra[3] < 1.0
    assert CORNER_PIXELS[2] == (2033, 4081)


def test_corners_out_round_trip(tmp_path):
    corners = decam_corners(Pointing(0.05, -30.0))
    path = write_corners_out(tmp_path / "668439.out", 668439, corners, band="i")
    text = path.read_text()
    assert text.startswith("# desgw CCD corners, format 1")
    first = next(ln for ln in text.splitlines() if not ln.startswith("#")).split()
    assert first[:3] == ["668439", "1", "i"] and len(first) == 11
    back = read_corners_out(path)
    assert back.expnum == 668439 and back.band == "i" and sorted(back.corners) == sorted(corners)
    for c, (ra, dec) in corners.items():
        d_ra = (np.asarray(back.corners[c][0]) - np.asarray(ra) + 180.0) % 360.0 - 180.0
        assert np.abs(d_ra).max() < 1e-7 and np.abs(np.asarray(back.corners[c][1]) - dec).max() < 1e-7
    assert ccd_overlaps(back.corners, back.corners) == {c: [c] for c in corners}
    no_band = read_corners_out(write_corners_out(tmp_path / "1.out", 1, {3: square(1, 1, .1)}))
    assert no_band.band is None


@pytest.mark.parametrize("body, problem", [
    ("1 1 i 1 2 3 4 5 6 7\n", "line 1: expected 11 columns"),
    ("1 1 i 1 2 3 4 5 6 7 x\n", "line 1: not numbers"),
    ("1 1 i 1 2 3 4 5 6 7 95\n", "out of range"),
    ("1 1 i 1 2 3 4 5 6 7 8\n1 1 i 1 2 3 4 5 6 7 8\n", "line 2: CCD 1 listed twice"),
    ("1 1 i 1 2 3 4 5 6 7 8\n2 3 i 1 2 3 4 5 6 7 8\n", "line 2: exposure 2"),
    ("# only comments\n", "no CCD lines"),
])
def test_corners_out_errors(tmp_path, body, problem):
    path = tmp_path / "x.out"
    path.write_text(body)
    with pytest.raises(DesgwInputError, match=problem) as info:
        read_corners_out(path)
    assert str(path) in str(info.value)


def test_selection_logs_unknown_teff(caplog):
    caplog.set_level(logging.INFO)
    select_templates(SEARCH, [cand(40, t_eff=None)], CONFIG)
    assert "template 40 for 700000: t_eff unknown, accepted" in caplog.text
