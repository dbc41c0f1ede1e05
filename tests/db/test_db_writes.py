"""desgw.db: registering exposures, recording products, detections with candidate
association, fakes, and the positional queries (SQLite always, PostgreSQL when configured)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from astropy.io import fits

from desgw.db import (CCDProduct, NewDetection, NewFake, TemplateUse, UnknownExposureError,
                      Zeropoint, add_detections, exposures_near, get_candidates,
                      get_ccd_products, get_detections, get_exposure, get_fakes,
                      get_templates_used, get_zeropoints, processed_ccds, record_ccd_product,
                      record_fakes, record_templates_used, record_zeropoints, register_exposure)
from desgw.errors import DesgwInputError
from desgw.io.raw import exposure_header_from_fits

ARCSEC = 1.0 / 3600.0


def header(expnum, *, nite=20190425, mjd=58598.1, band="r", ra=10.0, dec=-5.0, **extra):
    values = dict(expnum=expnum, nite=nite, mjd_obs=mjd, band=band, exptime=90.0, ra_deg=ra,
                  dec_deg=dec, object="S190425z hex 1", propid="2019A-0205", obstype="object",
                  airmass=1.2)
    values.update(extra)
    return SimpleNamespace(**values)


def det(ra, dec, **kw):
    values = dict(ra=ra, dec=dec, flux=100.0, fluxerr=10.0, snr=10.0)
    values.update(kw)
    return NewDetection(**values)


def offset(ra, dec, east_arcsec=0.0, north_arcsec=0.0):
    """Position moved by small offsets on the sky (arcsec)."""
    return ((ra + east_arcsec * ARCSEC / np.cos(np.radians(dec))) % 360.0,
            dec + north_arcsec * ARCSEC)


# ----------------------------------------------------------------------------- exposures
def test_register_exposure_from_a_real_header(db):
    h = fits.Header()
    h.update({"EXPNUM": 668439, "OBSTYPE": "object", "FILTER": "i DECam SDSS c0003",
              "EXPTIME": 90.0, "MJD-OBS": 58598.1234567, "TELRA": "12:34:56.78",
              "TELDEC": "-05:06:07.8", "AIRMASS": 1.23, "PROPID": "2019A-0205",
              "OBJECT": "S190425z hex 12", "PROGRAM": "DESGW"})
    record = register_exposure(db, exposure_header_from_fits(h), "/data/DECam_00668439.fits.fz")
    assert record.expnum == 668439 and record.band == "i" and record.program == "DESGW"
    assert record.ra == pytest.approx((12 + 34 / 60 + 56.78 / 3600) * 15, abs=1e-9)
    assert record.dec == pytest.approx(-(5 + 6 / 60 + 7.8 / 3600), abs=1e-9)
    assert record.nite == 20190424  # 2019-04-25T02:57 UTC is the night of the 24th
    assert record.raw_path == "/data/DECam_00668439.fits.fz"
    assert record.ingested_at.tzinfo is not None
    stored = get_exposure(db, 668439)
    assert stored == record


def test_register_again_updates_and_keeps_ingest_time(db):
    first = register_exposure(db, header(5), "/a")
    second = register_exposure(db, header(5, band="z"), "/b")
    assert second.band == "z" and second.raw_path == "/b"
    assert second.ingested_at == first.ingested_at
    assert get_exposure(db, 6) is None


def test_register_without_pointing_is_an_input_error(db):
    with pytest.raises(DesgwInputError, match=r"/raw/x.fits.*exposure 7.*TELRA"):
        register_exposure(db, header(7, ra_deg=None), "/raw/x.fits")


# ----------------------------------------------------------------------------- products
def test_ccd_products_upsert_teff_and_processed(db):
    register_exposure(db, header(10))
    for ccd, teff in [(1, 0.4), (3, 0.8), (4, 0.6)]:
        record_ccd_product(db, CCDProduct(10, ccd, 4, 7, "done", image_path=f"/i{ccd}",
                                          t_eff=teff, qc_passed=True))
    record_ccd_product(db, CCDProduct(10, 5, 4, 7, "failed", t_eff=0.01, qc_passed=False,
                                      qc_reasons=("astrometry rms 0.8 arcsec", "3 stars")))
    # re-recording CCD 1 replaces it
    record_ccd_product(db, CCDProduct(10, 1, 4, 7, "done", image_path="/new", t_eff=1.0,
                                      fwhm_arcsec=1.1))
    products = get_ccd_products(db, 10)
    assert [p.ccdnum for p in products] == [1, 3, 4, 5]
    assert products[0].image_path == "/new" and products[0].fwhm_arcsec == 1.1
    assert products[3].qc_reasons == ("astrometry rms 0.8 arcsec", "3 stars")
    assert products[3].qc_passed is False
    # median over finished CCDs only: (1.0, 0.8, 0.6) -> 0.8; the failed CCD is ignored
    assert get_exposure(db, 10).t_eff == pytest.approx(0.8)
    assert processed_ccds(db, 10, 4, 7) == frozenset({1, 3, 4})
    assert processed_ccds(db, 10, 4, 8) == frozenset()
    with pytest.raises(UnknownExposureError, match="exposure 11 is not registered"):
        record_ccd_product(db, CCDProduct(11, 1, 4, 7, "done"))


def test_ccd_products_in_one_transaction(db):
    from desgw.db import record_ccd_products

    register_exposure(db, header(10))
    assert record_ccd_products(db, []) == 0
    batch = [CCDProduct(10, ccd, 4, 7, "done", image_path=f"/i{ccd}", t_eff=0.1 * ccd,
                        qc_passed=True) for ccd in (2, 1, 3)]
    batch.append(CCDProduct(10, 5, 4, 7, "failed", qc_passed=False, qc_reasons=("no stars",)))
    assert record_ccd_products(db, batch) == 4
    # again, with CCD 1 changed: an upsert, not a duplicate
    assert record_ccd_products(db, [CCDProduct(10, 1, 4, 7, "done", image_path="/new")]) == 1
    products = get_ccd_products(db, 10)
    assert [p.ccdnum for p in products] == [1, 2, 3, 5]
    assert products[0].image_path == "/new" and products[1].t_eff == pytest.approx(0.2)
    assert products[3].qc_reasons == ("no stars",)
    assert processed_ccds(db, 10, 4, 7) == frozenset({1, 2, 3})
    # an unregistered exposure anywhere in the batch stores nothing
    with pytest.raises(UnknownExposureError, match="exposure 11 is not registered"):
        record_ccd_products(db, [CCDProduct(10, 7, 4, 7, "done"), CCDProduct(11, 1, 4, 7, "done")])
    assert 7 not in {p.ccdnum for p in get_ccd_products(db, 10)}
    with pytest.raises(ValueError, match="status"):
        CCDProduct(10, 1, 4, 7, "finished")


def test_zeropoints_and_templates_used(db):
    register_exposure(db, header(20))
    register_exposure(db, header(21, nite=20190301, mjd=58543.1))
    n = record_zeropoints(db, [Zeropoint(20, 0, 4, 7, 31.5, 0.01, 900),
                               Zeropoint(20, 5, 4, 7, 31.52, 0.02, 40),
                               Zeropoint(20, 6, 4, 7, 31.5, 0.0, 3, flag=1)])
    assert n == 3
    record_zeropoints(db, [Zeropoint(20, 5, 4, 7, 31.6, 0.03, 41)])
    zps = get_zeropoints(db, 20)
    assert [(z.ccdnum, z.zp, z.flag) for z in zps] == [(0, 31.5, 0), (5, 31.6, 0), (6, 31.5, 1)]
    uses = [TemplateUse(20, 5, 21, 5), TemplateUse(20, 5, 21, 6), TemplateUse(20, 6, 21, 6)]
    record_templates_used(db, uses)
    record_templates_used(db, uses[:1])  # again: no duplicate
    assert get_templates_used(db, 20) == uses
    with pytest.raises(UnknownExposureError):
        record_templates_used(db, [TemplateUse(20, 1, 999, 1)])


# ----------------------------------------------------------------------------- detections
def test_association_radius_and_counts(db):
    register_exposure(db, header(100, nite=20190425, mjd=58598.10))
    register_exposure(db, header(101, nite=20190425, mjd=58598.20))  # same night
    register_exposure(db, header(102, nite=20190427, mjd=58600.15))  # two nights later
    ra0, dec0 = 150.0, 2.0
    ids = add_detections(db, 100, 10, [det(ra0, dec0, real_bogus=0.3),
                                       det(*offset(ra0, dec0, east_arcsec=30.0))])
    assert len(ids) == 2
    near = offset(ra0, dec0, east_arcsec=0.6, north_arcsec=0.6)    # 0.85" away: joins
    far = offset(ra0, dec0, east_arcsec=-0.8, north_arcsec=-0.8)   # 1.13" away: new candidate
    add_detections(db, 101, 10, [det(*near, real_bogus=0.9)])
    add_detections(db, 102, 10, [det(*far), det(ra0, dec0, real_bogus=0.5)])
    cands = get_candidates(db)
    assert len(cands) == 3
    main = next(c for c in cands if c.id == get_detections(db, expnum=100)[0].candidate_id)
    assert main.n_detections == 3
    assert main.n_nights == 2  # 20190425 twice, 20190427 once
    assert main.first_mjd == pytest.approx(58598.10) and main.last_mjd == pytest.approx(58600.15)
    assert main.max_real_bogus == pytest.approx(0.9)
    # mean position of (0,0), (0.6,0.6), (0,0) arcsec offsets
    assert main.ra == pytest.approx(ra0 + 0.2 * ARCSEC / np.cos(np.radians(dec0)), abs=1e-9)
    assert main.dec == pytest.approx(dec0 + 0.2 * ARCSEC, abs=1e-9)
    members = get_detections(db, candidate_id=main.id)
    assert {d.expnum for d in members} == {100, 101, 102}
    assert len(get_candidates(db, min_nights=2)) == 1
    assert len(get_candidates(db, min_detections=2)) == 1


def test_association_within_one_batch_and_across_ra_zero(db):
    register_exposure(db, header(200, ra=0.0, dec=-30.0))
    a = (359.99995, -30.0)
    b = offset(*a, east_arcsec=0.5)  # crosses RA = 0
    assert b[0] < 1.0
    ids = add_detections(db, 200, 1, [det(*a), det(*b), det(*offset(*a, north_arcsec=5))])
    found = get_detections(db, expnum=200)
    assert [d.id for d in found] == ids
    assert found[0].candidate_id == found[1].candidate_id != found[2].candidate_id
    cand = next(c for c in get_candidates(db) if c.id == found[0].candidate_id)
    assert cand.n_detections == 2
    # the mean of 359.99995 and ~0.0000993 is ~0.0000246, not 180
    assert min(cand.ra, 360.0 - cand.ra) < 1e-4


def test_detection_input_checks(db):
    register_exposure(db, header(300))
    with pytest.raises(UnknownExposureError, match="exposure 301"):
        add_detections(db, 301, 1, [det(10.0, -5.0)])
    with pytest.raises(ValueError, match="unknown NewDetection field"):
        add_detections(db, 300, 1, [{"ra": 10.0, "dec": -5.0, "flux": 1.0, "fluxerr": 1.0,
                                     "snr": 1.0, "realbogus": 0.5}])
    with pytest.raises(ValueError, match="finite"):
        add_detections(db, 300, 1, [det(float("nan"), -5.0)])
    with pytest.raises(ValueError, match="not stored fakes"):
        add_detections(db, 300, 1, [det(10.0, -5.0, is_fake=True, fake_id=12345)])
    assert get_detections(db) == [] and get_candidates(db) == []
    # numpy scalars and NaN magnitudes are accepted (NaN mag -> None)
    ids = add_detections(db, 300, 1, [{"ra": np.float32(10.0), "dec": np.float64(-5.0),
                                       "flux": np.float32(-3.0), "fluxerr": 1.0,
                                       "snr": np.float32(-3.0), "mag": float("nan"),
                                       "flags": np.int16(4)}])
    stored = get_detections(db)[0]
    assert stored.id == ids[0] and stored.mag is None and stored.flags == 4


def test_fakes_recovered_by_detections(db):
    register_exposure(db, header(400))
    fake_ids = record_fakes(db, 400, 7, [NewFake(10.0, -5.0, 21.0, host=True),
                                         {"ra": 10.01, "dec": -5.0, "mag": 23.5}])
    assert len(fake_ids) == 2
    ids = add_detections(db, 400, 7, [det(10.0, -5.0, snr=8.0, is_fake=True, fake_id=fake_ids[0]),
                                      det(*offset(10.0, -5.0, east_arcsec=0.3), snr=12.0,
                                          is_fake=True, fake_id=fake_ids[0]),
                                      det(10.2, -5.0, real_bogus=0.7)])
    fakes = get_fakes(db, 400)
    assert fakes[0].recovered and fakes[0].recovered_detection_id == ids[1]  # higher S/N
    assert fakes[0].host and not fakes[1].recovered and fakes[1].recovered_detection_id is None
    assert len(get_candidates(db)) == 2
    assert len(get_candidates(db, include_fakes=False)) == 1
    with pytest.raises(ValueError, match="is_fake=False"):
        add_detections(db, 400, 7, [det(10.0, -5.0, fake_id=fake_ids[1])])


# ----------------------------------------------------------------------------- queries
def test_exposures_near(db):
    register_exposure(db, header(1, ra=359.5, dec=0.0, band="i"))
    register_exposure(db, header(2, ra=1.0, dec=0.5, band="i"))
    register_exposure(db, header(3, ra=1.0, dec=0.5, band="r"))
    register_exposure(db, header(4, ra=3.0, dec=0.0, band="i"))    # 2.5 deg away
    register_exposure(db, header(5, ra=180.0, dec=89.5, band="i"))
    register_exposure(db, header(6, ra=0.0, dec=88.5, band="i"))
    found = exposures_near(db, 0.2, 0.0, 2.2, "i")
    assert [e.expnum for e in found] == [1, 2]  # across RA = 0, nearest first, band i only
    assert [e.expnum for e in exposures_near(db, 0.2, 0.0, 2.2)] == [1, 2, 3]
    assert [e.expnum for e in exposures_near(db, 0.2, 0.0, 2.2, "i", exclude=[1])] == [2]
    # across the pole: 89.5 at RA 180 and 88.5 at RA 0 are 2.0 deg apart
    assert [e.expnum for e in exposures_near(db, 0.0, 88.5, 2.2, "i")] == [6, 5]
    assert exposures_near(db, 90.0, -40.0, 2.2) == []


def test_replace_ccd_results_batches_inserts_and_keeps_id_order(db):
    """The fakes, candidates and detections of a CCD go in as batches (a few INSERT
    statements, not one per row), and the returned ids are those of the rows in input
    order: each detection's stored position and its recovered fake match."""
    import sqlalchemy as sa

    from desgw.db import replace_ccd_results

    register_exposure(db, header(900001, mjd=58600.1))
    fakes = [NewFake(ra=20.0 + 0.01 * i, dec=-3.0, mag=21.0 + 0.01 * i, host=i % 2 == 0)
             for i in range(40)]
    dets = [det(20.0 + 0.01 * i, -3.0, snr=10.0 + i, is_fake=True, fake_id=i)
            for i in range(0, 40, 2)]
    dets += [det(21.0 + 0.003 * i, -3.1, snr=6.0) for i in range(30)]
    counts: dict[str, int] = {}

    def count(_c, _cur, statement, *_a) -> None:
        kind = statement.split(None, 1)[0].upper()
        counts[kind] = counts.get(kind, 0) + 1

    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        fake_ids, det_ids = replace_ccd_results(db, 900001, 7, fakes=fakes, detections=dets)
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)
    assert counts.get("INSERT", 0) <= 4
    assert len(fake_ids) == 40 and len(det_ids) == 50 and len(set(det_ids)) == 50
    stored = {d.id: d for d in get_detections(db, expnum=900001)}
    for i, did in enumerate(det_ids):
        assert stored[did].ra == pytest.approx(dets[i].ra, abs=1e-9)
        assert stored[did].snr == pytest.approx(dets[i].snr)
    by_id = {f.id: f for f in get_fakes(db, expnum=900001)}
    for i, fid in enumerate(fake_ids):
        assert by_id[fid].mag == pytest.approx(fakes[i].mag)
        assert by_id[fid].recovered == (i % 2 == 0)
        if i % 2 == 0:
            assert by_id[fid].recovered_detection_id == det_ids[i // 2]
    cands = get_candidates(db)
    assert len(cands) == 50 and sum(c.n_detections for c in cands) == 50
    # a rerun replaces: same counts, no duplicates
    replace_ccd_results(db, 900001, 7, fakes=fakes, detections=dets)
    assert len(get_detections(db, expnum=900001)) == 50 and len(get_candidates(db)) == 50
