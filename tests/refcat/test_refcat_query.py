"""Footprint and cone queries against an independent spherical brute force."""

from __future__ import annotations

import warnings

import astropy.units as u
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.coordinates import SkyCoord
from astropy.time import Time

from desgw.refcat import RefCatStore, ingest_gaia, mjd_to_jyear
from desgw.refcat.geometry import angular_separation_deg

from refcat_factory import gaia_like, random_cap, rectangle_corners, spherical_polygon_distance

# (ra, dec, cap radius, n stars)
REGIONS = [(0.0, 5.0, 2.5, 30000), (150.0, -75.0, 2.5, 30000), (77.0, -30.0, 1.5, 15000),
           (10.0, -89.0, 1.5, 8000)]


@pytest.fixture(scope="module")
def catalog():
    rng = np.random.default_rng(42)
    parts = []
    first = 1
    for ra0, dec0, rad, n in REGIONS:
        ra, dec = random_cap(rng, n, ra0, dec0, rad)
        parts.append(gaia_like(rng, ra, dec, first_id=first, pm_scale=30.0))
        first += n
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    # a few fast movers (up to 3 arcsec/yr) so that epoch propagation matters
    fast = rng.choice(cat["ra"].size, 300, replace=False)
    cat["pmra"][fast] = rng.uniform(-3000, 3000, fast.size).astype(np.float32)
    cat["pmdec"][fast] = rng.uniform(-3000, 3000, fast.size).astype(np.float32)
    return cat


@pytest.fixture(scope="module")
def store(catalog, tmp_path_factory):
    d = tmp_path_factory.mktemp("refcat")
    src = d / "cat.parquet"
    pq.write_table(pa.table(catalog), src)
    ingest_gaia([src], d / "store", order=7, chunk_rows=20000)
    return RefCatStore(d / "store", cache_pixels=64)


def _positions_at(catalog, epoch):
    if epoch is None:
        return catalog["ra"], catalog["dec"]
    c = SkyCoord(catalog["ra"] * u.deg, catalog["dec"] * u.deg,
                 pm_ra_cosdec=catalog["pmra"].astype(float) * u.mas / u.yr,
                 pm_dec=catalog["pmdec"].astype(float) * u.mas / u.yr,
                 obstime=Time(2016.0, format="jyear"))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = c.apply_space_motion(new_obstime=Time(epoch, format="jyear"))
    return m.ra.deg, m.dec.deg


FOOTPRINTS = [
    # centre ra, dec, width, height (deg), rotation (deg), margin (arcsec), epoch
    (0.05, 5.1, 0.15, 0.30, 20.0, 0.0, None),      # DECam CCD straddling RA = 0
    (359.9, 4.0, 1.2, 2.0, -35.0, 10.0, None),     # large, across RA = 0, with margin
    (150.3, -75.2, 0.15, 0.30, 0.0, 10.0, None),   # CCD at dec -75
    (149.0, -74.5, 1.5, 1.0, 60.0, 30.0, 2023.7),  # dec -75, large margin, propagated
    (77.2, -29.8, 0.3, 0.15, 90.0, 0.0, 2010.0),   # back in time
    (10.0, -89.2, 0.8, 0.6, 10.0, 5.0, 2020.0),    # near the south pole
]


@pytest.mark.parametrize("fp", FOOTPRINTS)
def test_footprint_equals_brute_force(store, catalog, fp):
    ra0, dec0, w, h, rot, margin, epoch = fp
    cra, cdec = rectangle_corners(ra0, dec0, w, h, rot)
    perm = [2, 0, 3, 1]  # corners given in scrambled order
    res = store.query_footprint(cra[perm], cdec[perm], margin_arcsec=margin, epoch=epoch)
    ra, dec = _positions_at(catalog, epoch)
    inside, dist = spherical_polygon_distance(ra, dec, cra, cdec)
    m = margin / 3600
    brute = inside | (dist <= m)
    # stars within 2e-6 deg (7 mas) of the boundary may differ between the tangent-plane
    # margin and the spherical brute force, or between the two proper-motion models
    ambiguous = np.abs(np.where(inside & (m == 0), 0, dist) - m) < 2e-6
    ambiguous &= ~(inside & (dist > 2e-6))
    got = set(res["source_id"].tolist())
    exp = set(catalog["source_id"][brute].tolist())
    amb = set(catalog["source_id"][ambiguous].tolist())
    assert len(exp) > 20
    assert (got ^ exp) <= amb, f"{len(got - exp - amb)} extra, {len(exp - got - amb)} missed"
    assert len(got) == len(set(res["source_id"].tolist())) == len(res)  # no duplicates
    # returned positions are the propagated ones, originals kept
    ids = np.asarray(res["source_id"]) - 1
    np.testing.assert_allclose(res["ra_ref"], catalog["ra"][ids], atol=1e-12)
    sep = angular_separation_deg(res["ra"], res["dec"], ra[ids], dec[ids]) * 3.6e6
    assert np.max(sep, initial=0) < 0.05  # mas
    assert res["ra"].unit == u.deg and res["pmra"].unit == u.mas / u.yr
    assert res.meta["epoch"] == epoch


def test_margin_grows_selection(store):
    cra, cdec = rectangle_corners(77.0, -30.0, 0.15, 0.3, 0.0)
    n0 = len(store.query_footprint(cra, cdec))
    n1 = len(store.query_footprint(cra, cdec, margin_arcsec=60))
    # density ~ 15000 / (pi 1.5^2) per deg^2; added area = perimeter * m + pi m^2
    m = 60 / 3600
    expected_extra = 15000 / (np.pi * 1.5 ** 2) * (2 * (0.15 + 0.3) * m + np.pi * m * m)
    assert n1 > n0
    assert abs((n1 - n0) - expected_extra) < 5 * np.sqrt(expected_extra)


def test_proper_motion_moves_star_into_footprint(tmp_path):
    # a star 20 arcsec west of a CCD edge, moving east at 2 arcsec/yr
    cra, cdec = rectangle_corners(45.0, -20.0, 0.15, 0.3, 0.0)
    rng = np.random.default_rng(0)
    west_edge_ra = 45.0 - 0.075 / np.cos(np.radians(-20.0))
    ra = np.array([west_edge_ra - 20 / 3600 / np.cos(np.radians(-20)), 45.0])
    dec = np.array([-20.0, -20.0])
    cat = gaia_like(rng, ra, dec)
    cat["pmra"][:] = [2000.0, 0.0]
    cat["pmdec"][:] = 0.0
    src = tmp_path / "pm.parquet"
    pq.write_table(pa.table(cat), src)
    ingest_gaia([src], tmp_path / "s", order=9)
    s = RefCatStore(tmp_path / "s")
    assert s.query_footprint(cra, cdec)["source_id"].tolist() == [2]
    at = s.query_footprint(cra, cdec, epoch=2016.0 + 12.0)  # moved 24 arcsec east
    assert sorted(at["source_id"].tolist()) == [1, 2]
    row = at[at["source_id"] == 1][0]
    assert (row["ra"] - row["ra_ref"]) * np.cos(np.radians(-20)) * 3600 == pytest.approx(
        24.0, abs=1e-3)
    assert len(s.query_footprint(cra, cdec, epoch=2016.0 + 8.0)) == 1  # only 16" moved
    assert mjd_to_jyear(57388.5) == 2016.0


@pytest.mark.parametrize("ra,dec,radius,epoch", [(0.2, 5.0, 0.5, None), (359.5, 6.0, 1.0, 2019.5),
                                                 (150.0, -75.0, 0.3, 2022.0),
                                                 (10.0, -90.0, 0.7, None)])
def test_cone_equals_brute_force(store, catalog, ra, dec, radius, epoch):
    res = store.query_cone(ra, dec, radius, epoch=epoch)
    pra, pdec = _positions_at(catalog, epoch)
    sep = angular_separation_deg(ra, dec, pra, pdec)
    exp = set(catalog["source_id"][sep <= radius].tolist())
    amb = set(catalog["source_id"][np.abs(sep - radius) < 2e-6].tolist())
    got = set(res["source_id"].tolist())
    assert len(exp) > 50
    assert (got ^ exp) <= amb


def test_cache_and_repeat_queries_identical(store):
    cra, cdec = rectangle_corners(150.0, -75.0, 0.15, 0.3, 0.0)
    store.clear_cache()
    a = store.query_footprint(cra, cdec, margin_arcsec=10, epoch=2019.5)
    assert 0 < len(store._cache) <= 64
    b = store.query_footprint(cra, cdec, margin_arcsec=10, epoch=2019.5)
    np.testing.assert_array_equal(a["source_id"], b["source_id"])
    np.testing.assert_array_equal(a["ra"], b["ra"])
    # results do not alias the cache
    b["ra"][:] = 0
    c = store.query_footprint(cra, cdec, margin_arcsec=10, epoch=2019.5)
    np.testing.assert_array_equal(a["ra"], c["ra"])


def test_empty_region_and_bad_queries(store):
    res = store.query_footprint([200, 200.1, 200.1], [40, 40, 40.1])
    assert len(res) == 0 and "source_id" in res.colnames and "ra_ref" in res.colnames
    assert len(store.query_cone(200.0, 40.0, 0.5)) == 0
    with pytest.raises(ValueError):
        store.query_cone(0.0, 95.0, 1.0)
    with pytest.raises(ValueError):
        store.query_cone(0.0, 0.0, -1.0)
    with pytest.raises(ValueError):
        store.query_footprint([0, 1], [0, 0])


def test_fast_mover_from_a_distant_pixel_is_found(tmp_path):
    # order 12 pixels are ~52 arcsec across; the star starts 90 arcsec south of a 10x10
    # arcsec footprint, in another pixel, and moves 10 arcsec/yr north for 9 yr
    rng = np.random.default_rng(1)
    cat = gaia_like(rng, np.array([80.0, 80.0]), np.array([-40.0 - 90 / 3600, -40.0]))
    cat["pmra"][:] = 0.0
    cat["pmdec"][:] = [10000.0, 0.0]
    src = tmp_path / "fast.parquet"
    pq.write_table(pa.table(cat), src)
    ingest_gaia([src], tmp_path / "s", order=12)
    s = RefCatStore(tmp_path / "s")
    cra, cdec = rectangle_corners(80.0, -40.0, 10 / 3600, 10 / 3600, 0.0)
    assert s.query_footprint(cra, cdec)["source_id"].tolist() == [2]
    got = s.query_footprint(cra, cdec, epoch=2016.0 + 9.0)
    assert sorted(got["source_id"].tolist()) == [1, 2]
    assert sorted(s.query_cone(80.0, -40.0, 5 / 3600, epoch=2025.0)["source_id"].tolist()) == [1, 2]
