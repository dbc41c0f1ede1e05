"""Star and veto lists (makestarcat): cuts, merging, veto radius and flags, file formats."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from desgw.diff.starcat import (
    VETO_MIN_RADIUS_ARCSEC,
    apply_veto,
    in_footprint,
    make_star_catalog,
    make_veto_table,
    merge_duplicates,
    select_stars,
    veto_radius_arcsec,
)
from desgw.errors import CorruptFileError, MissingFileError
from desgw.io.star_lists import (
    read_star_list,
    read_veto_list,
    snstar_name,
    snveto_name,
    write_star_list,
    write_veto_list,
)
from desgw.workflow.makestarcat import makestarcat_main

# A 0.15 x 0.3 deg "CCD" straddling RA = 0 (tests the wrap-around).
CORNERS = (np.array([359.93, 0.07, 0.07, 359.93]), np.array([-30.15, -30.15, -29.85, -29.85]))


def _catalog(ra, dec, mag, *, magerr=0.005, spread=0.0, flags=0, imaflags=0) -> Table:
    n = len(ra)

    def full(v):
        return np.broadcast_to(np.asarray(v, dtype=float), (n,)).copy()

    return Table({"ALPHAWIN_J2000": np.asarray(ra, float) % 360.0,
                  "DELTAWIN_J2000": np.asarray(dec, float),
                  "MAG_PSF": np.asarray(mag, float), "MAGERR_PSF": full(magerr),
                  "SPREAD_MODEL": full(spread), "FLAGS": full(flags).astype(int),
                  "IMAFLAGS_ISO": full(imaflags).astype(int)})


def test_names():
    assert snstar_name(668439, 28, 4, 5) == "SNSTAR_668439_28_r4p5.LIST"
    assert snveto_name(668439, 3, 4, 5) == "SNVETO_668439_3_r4p5.LIST"
    with pytest.raises(ValueError):
        snstar_name(-1, 3, 4, 5)


def test_select_stars_applies_each_cut():
    ra = np.full(10, 0.0)
    dec = np.linspace(-30.1, -29.9, 10)
    base = {"magerr": 0.005, "spread": 0.0, "flags": 0, "imaflags": 0}
    rows = []
    # (overrides, MAG_PSF, passes)
    cases = [
        ({}, 18.0, True), ({"spread": 0.003}, 18.0, False), ({"spread": 0.0029}, 18.0, True),
        ({"flags": 2}, 18.0, False), ({"imaflags": 1}, 18.0, False), ({}, 12.0, False),
        ({}, 21.5, False), ({}, 21.49, True), ({"magerr": 0.0111}, 18.0, False),
        ({"magerr": 0.0}, 18.0, False),
    ]
    for (over, mag, _), r, d in zip(cases, ra, dec):
        kw = {**base, **over}
        rows.append(_catalog([r], [d], [mag], **kw))
    from astropy.table import vstack
    cat = vstack(rows)
    got = select_stars(cat)
    expected = [ok for _, _, ok in cases]
    assert len(got) == sum(expected)
    np.testing.assert_allclose(np.sort(got["DEC"]), np.sort(dec[np.array(expected)]))


def test_footprint_cut_across_ra_zero():
    ra = np.array([359.95, 0.05, 0.10, 359.90, 0.0, 0.0])
    dec = np.array([-30.0, -30.1, -30.0, -30.0, -30.2, -29.86])
    inside = in_footprint(ra, dec, CORNERS)
    np.testing.assert_array_equal(inside, [True, True, False, False, False, True])
    got = select_stars(_catalog(ra, dec, np.full(6, 18.0)), footprint=CORNERS)
    assert len(got) == 3


def test_zeropoint_calibrates_raw_magnitudes():
    cat = _catalog([0.0, 0.01], [-30.0, -30.0], [25.0 - 6.0, 25.0 - 10.0])
    got = select_stars(cat, zeropoint=31.0)  # calibrated 25.0-6+6 = 25 (rejected), 21 (kept)
    assert len(got) == 1 and got["mag"][0] == pytest.approx(21.0)


def test_merge_duplicates_median_mag_and_error():
    rng = np.random.default_rng(1)
    nstar = 200
    ra0 = rng.uniform(359.94, 0.06 + 360.0, nstar) % 360.0
    dec0 = rng.uniform(-30.14, -29.86, nstar)
    mags0 = rng.uniform(14, 21, nstar)
    cats = []
    for k in range(3):  # three overlapping exposures, 0.2" scatter, different mags
        jit = 0.2 / 3600.0
        cats.append(_catalog(ra0 + rng.normal(0, jit, nstar) / np.cos(np.radians(dec0)),
                             dec0 + rng.normal(0, jit, nstar), mags0 + 0.01 * (k - 1) + [0, 0, 0.1][k],
                             magerr=0.003 + 0.001 * k))
    stars = make_star_catalog(cats, ccd_footprint=CORNERS)
    assert len(stars) == nstar
    assert np.all(stars["nobs"] == 3)
    match = np.abs(stars["mag"][:, None] - mags0[None, :]).argmin(axis=1)
    np.testing.assert_allclose(stars["mag"], mags0[match], atol=1e-9)  # median of -0.01, 0, +0.11
    sep = np.hypot((stars["RA"] - ra0[match] + 180) % 360 - 180, stars["DEC"] - dec0[match]) * 3600
    assert np.max(sep) < 0.6
    np.testing.assert_allclose(stars["magerr"], np.sqrt(0.003**2 + 0.004**2 + 0.005**2) / 3)
    assert np.all(np.diff(stars["RA"]) >= 0)
    np.testing.assert_array_equal(stars["OBJID"], np.arange(1, nstar + 1))


def test_merge_radius_one_arcsec():
    d = 1.0 / 3600.0
    got = merge_duplicates([10.0, 10.0, 10.0], [0.0, 0.95 * d, 5 * d], [18, 19, 20], [0.01] * 3)
    assert len(got) == 2
    assert sorted(got["nobs"]) == [1, 2]
    got = merge_duplicates([10.0, 10.0], [0.0, 1.05 * d], [18, 19], [0.01] * 2)
    assert len(got) == 2


def test_veto_radius_formula_and_clip():
    np.testing.assert_allclose(veto_radius_arcsec([12, 15, 21.5]), [36.0, 30.0, 17.0])
    assert veto_radius_arcsec(40.0) == VETO_MIN_RADIUS_ARCSEC
    assert veto_radius_arcsec(28.0, min_radius_arcsec=1.0) == pytest.approx(4.0)


def test_apply_veto_flags_inside_radius_only():
    stars = Table({"OBJID": [1, 2], "RA": [0.0, 359.99], "DEC": [-30.0, -30.05],
                   "mag": [15.0, 21.0], "magerr": [0.01, 0.01]})
    veto = make_veto_table(stars)  # radii 30", 18"
    cosd = np.cos(np.radians(-30.0))
    ra = np.array([29.0 / 3600 / cosd, 31.0 / 3600 / cosd, 359.99, 359.99, 180.0])
    dec = np.array([-30.0, -30.0, -30.05 + 17.5 / 3600, -30.05 + 18.5 / 3600, -30.0])
    flag = apply_veto(ra, dec, veto)
    np.testing.assert_array_equal(flag, [True, False, True, False, False])
    assert flag.shape == (5,)
    assert apply_veto([], [], veto).shape == (0,)


def test_list_files_round_trip(tmp_path):
    stars = merge_duplicates([0.123456789, 359.5], [-30.0, -29.5], [17.12346, 20.5],
                             [0.0071, 0.0102])
    p = write_star_list(tmp_path / snstar_name(1, 28, 4, 5), stars, band="r", rnum=4, pnum=5)
    text = p.read_text().splitlines()
    assert text[0] == "# ASSOC format for Sextractor input."
    assert text[1] == "# Star Source: SNSTAR table, CATALOG= r4p5"
    assert text[2] == "# NVAR: 5"
    assert text[3] == "# VARNAMES:\tOBJID\tRA\tDEC\tmag_r\tmagerr_r"
    assert text[4] == "1\t0.123457\t-30.000000\t17.1235\t0.0071"
    back = read_star_list(p)
    assert back.meta == {"rnum": 4, "pnum": 5, "band": "r"}
    np.testing.assert_allclose(back["RA"], stars["RA"], atol=1e-6)
    np.testing.assert_allclose(back["mag"], stars["mag"], atol=1e-4)
    with pytest.raises(ValueError, match="radius"):
        write_veto_list(tmp_path / "plain.LIST", stars, band="r", rnum=4, pnum=5)
    v = write_veto_list(tmp_path / snveto_name(1, 28, 4, 5), make_veto_table(stars), band="r",
                        rnum=4, pnum=5)
    vtext = v.read_text().splitlines()
    assert vtext[2] == "# NVAR: 7"
    assert vtext[3].endswith("\tradius\tvtype")
    assert vtext[4].split("\t")[5:] == [f"{30 - 2 * (17.12346 - 15):.6f}", "6"]
    vb = read_veto_list(v)
    np.testing.assert_allclose(vb["radius"], veto_radius_arcsec(stars["mag"]), atol=1e-6)
    assert list(vb["vtype"]) == [6, 6]
    assert not list(tmp_path.glob(".*"))  # no temporary left behind
    with pytest.raises(CorruptFileError):
        read_veto_list(p)  # a star list has 5 columns
    with pytest.raises(MissingFileError):
        read_star_list(tmp_path / "nope.LIST")


def test_makestarcat_main(tmp_path):
    from desgw.io.corners import write_corners_out
    from desgw.io.zp_tables import ZP_CSV_COLUMNS

    search, tmpl = 700000, 600000
    write_corners_out(tmp_path / f"{search}.out", search,
                      {28: (tuple(CORNERS[0]), tuple(CORNERS[1]))}, band="r")
    rng = np.random.default_rng(3)
    ra = rng.uniform(-0.06, 0.06, 50) % 360
    dec = rng.uniform(-30.14, -29.86, 50)

    def write_zp(expnum, ccd, ra, dec, mag):
        rows = [",".join(ZP_CSV_COLUMNS)]
        for i, (r, d, m) in enumerate(zip(ra, dec, mag), start=1):
            vals = {c: "0" for c in ZP_CSV_COLUMNS}
            vals.update(ID=str(i), EXPNUM=str(expnum), CCDNUM=str(ccd), ALPHAWIN_J2000=f"{r:.9f}",
                        DELTAWIN_J2000=f"{d:.9f}", MAG_PSF=f"{m:.5f}", MAGERR_PSF="0.005")
            rows.append(",".join(vals[c] for c in ZP_CSV_COLUMNS))
        d = tmp_path / "exp" / str(expnum)
        d.mkdir(parents=True, exist_ok=True)
        (d / f"D{expnum:08d}_{ccd:02d}_r4p5_ZP.csv").write_text("\n".join(rows) + "\n")

    write_zp(tmpl, 27, ra[:30], dec[:30], np.full(30, 18.0))
    write_zp(tmpl, 28, ra[20:], dec[20:], np.full(30, 18.2))  # 10 stars in both template CCDs
    write_zp(search, 28, [0.0], [-30.0], [16.0])  # a search-only "star": not used
    res = makestarcat_main(expnum=search, nite=20240101, rnum=4, pnum=5, band="r", season=30,
                           ccd=28, outdir=tmp_path / "out", rootdir=tmp_path)
    assert len(res.catalog_paths) == 2
    assert res.snstar_path.name == "SNSTAR_700000_28_r4p5.LIST"
    stars = read_star_list(res.snstar_path)
    assert len(stars) == 50
    assert np.sum(np.isclose(stars["mag"], 18.1)) == 10  # median of 18.0 and 18.2
    assert read_veto_list(res.snveto_path)["radius"].min() > 20
