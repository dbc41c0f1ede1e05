"""desgw.db: URL handling, password redaction, schema creation and versioning."""

from __future__ import annotations

import logging
import os
import pickle
import sqlite3
import traceback

import pytest
import sqlalchemy as sa

from desgw.db import (SCHEMA_VERSION, DatabaseConnectionError, SchemaVersionError, connect,
                      normalize_url, redact_url)
from desgw.db.urls import scrub_secret, url_password

SECRET = "Sup3r-s3cret_pw"


@pytest.mark.parametrize("url, expected", [
    (f"postgresql+psycopg://gw:{SECRET}@db.example.org:5432/desgw",
     "postgresql+psycopg://gw:***@db.example.org:5432/desgw"),
    (f"postgresql://gw:{SECRET}@localhost/desgw?sslmode=require",
     "postgresql://gw:***@localhost/desgw?sslmode=require"),
    ("postgresql://gw:p%40ss%2Fw@h/db", "postgresql://gw:***@h/db"),
    ("postgresql://gw:p@ss@h/db", "postgresql://gw:***@h/db"),
    (f"postgresql://h/db?user=gw&password={SECRET}&x=1", "postgresql://h/db?user=gw&password=***&x=1"),
    ("postgresql://gw@h/db", "postgresql://gw@h/db"),
    ("sqlite:////tmp/x.sqlite", "sqlite:////tmp/x.sqlite"),
])
def test_redact_url(url, expected):
    assert redact_url(url) == expected
    password = url_password(url)
    if password is not None:
        assert password not in redact_url(url)


def test_url_password_and_scrub():
    url = "postgresql://gw:p%40ss%2Fw@h/db"
    assert url_password(url) == "p@ss/w"
    text = f"failed for {url}: p@ss/w p%40ss%2Fw"
    scrubbed = scrub_secret(text, url)
    assert "p@ss/w" not in scrubbed and "p%40ss%2Fw" not in scrubbed
    assert "postgresql://gw:***@h/db" in scrubbed


def test_normalize_url(tmp_path, monkeypatch):
    assert normalize_url("postgresql://a:b@h/d") == "postgresql+psycopg://a:b@h/d"
    assert normalize_url("postgres://a@h/d") == "postgresql+psycopg://a@h/d"
    assert normalize_url(tmp_path / "x.db") == f"sqlite:///{tmp_path / 'x.db'}"
    assert normalize_url(f"sqlite:///{tmp_path / 'y.db'}") == f"sqlite:///{tmp_path / 'y.db'}"
    monkeypatch.setenv("DESGW_DB_URL", "sqlite:////somewhere/z.db")
    assert normalize_url(None) == "sqlite:////somewhere/z.db"
    monkeypatch.delenv("DESGW_DB_URL")
    monkeypatch.chdir(tmp_path)
    assert normalize_url(None) == f"sqlite:///{tmp_path / 'desgw.sqlite'}"


def _assert_no_secret(exc: BaseException, caplog) -> None:
    assert SECRET not in str(exc)
    assert SECRET not in repr(exc)
    assert SECRET not in "".join(traceback.format_exception(exc))
    assert SECRET not in caplog.text
    clone = pickle.loads(pickle.dumps(exc))
    assert type(clone) is type(exc) and str(clone) == str(exc)


def test_failed_postgres_connection_hides_password(caplog):
    # port 1 on loopback: nothing listens, the connection is refused at once
    url = f"postgresql+psycopg://gw:{SECRET}@127.0.0.1:1/desgw"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DatabaseConnectionError) as info:
        connect(url, connect_timeout_s=2)
    assert "gw:***@127.0.0.1:1/desgw" in str(info.value)
    assert "refused" in str(info.value).lower() or "failed" in str(info.value).lower()
    _assert_no_secret(info.value, caplog)


def test_bad_driver_hides_password(caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DatabaseConnectionError) as info:
        connect(f"nosuchdb+nodriver://gw:{SECRET}@127.0.0.1/x")
    _assert_no_secret(info.value, caplog)


def test_wrong_password_on_real_server_hides_it(caplog):
    admin = os.environ.get("DESGW_TEST_PG_URL")
    if not admin:
        pytest.skip("DESGW_TEST_PG_URL not set")
    url = sa.engine.make_url(admin).set(password=SECRET).render_as_string(hide_password=False)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DatabaseConnectionError) as info:
        connect(url)
    assert "password authentication failed" in str(info.value)
    _assert_no_secret(info.value, caplog)


def test_sqlite_missing_directory(tmp_path):
    with pytest.raises(DatabaseConnectionError, match="does not exist"):
        connect(tmp_path / "no" / "such" / "dir.sqlite")


def test_schema_created_once_and_reopened(db_url):
    db = connect(db_url)
    assert db.schema_version == SCHEMA_VERSION
    inspector = sa.inspect(db.engine)
    tables = set(inspector.get_table_names())
    assert {"schema_version", "exposures", "ccd_products", "zeropoints", "templates_used",
            "detections", "candidates", "fakes"} <= tables
    db.close()
    again = connect(db_url, create=False)
    with again.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM schema_version")).scalar() == 1
    assert "***" in repr(again) or "sqlite" in repr(again)
    clone = pickle.loads(pickle.dumps(again))
    assert clone.schema_version == SCHEMA_VERSION and clone.url == again.url
    clone.close()
    again.close()


def test_sqlite_uses_wal(tmp_path):
    db = connect(tmp_path / "w.sqlite")
    db.close()
    conn = sqlite3.connect(tmp_path / "w.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_newer_schema_refused(db_url):
    db = connect(db_url)
    with db.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO schema_version (version, applied_at) "
                             "VALUES (:v, CURRENT_TIMESTAMP)"), {"v": SCHEMA_VERSION + 5})
    db.close()
    with pytest.raises(SchemaVersionError, match=rf"version {SCHEMA_VERSION + 5} is newer"):
        connect(db_url)


def test_unknown_older_schema_refused(db_url):
    db = connect(db_url)
    with db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE schema_version SET version = 0"))
    db.close()
    with pytest.raises(SchemaVersionError, match="version 0 is unknown"):
        connect(db_url)


def test_desgw_tables_without_version_refused(db_url):
    db = connect(db_url)
    with db.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE schema_version"))
    db.close()
    with pytest.raises(SchemaVersionError, match="no schema_version table"):
        connect(db_url)


def test_create_false_on_empty_database(tmp_path):
    with pytest.raises(SchemaVersionError, match="no desgw schema"):
        connect(tmp_path / "empty.sqlite", create=False)


def test_write_session_takes_the_write_lock(tmp_path):
    """A write transaction holds the SQLite write lock from its start (BEGIN IMMEDIATE)."""
    from desgw.db import DatabaseError

    path = tmp_path / "lock.sqlite"
    first = connect(path)
    second = connect(path, busy_timeout_s=0.2)
    with first.write_session():
        with pytest.raises(DatabaseError, match="locked"):
            with second.write_session():
                pass
        with second.read_session() as session:  # readers are not blocked (WAL)
            assert session.execute(sa.text("SELECT count(*) FROM exposures")).scalar() == 0
    with second.write_session():
        pass
    first.close()
    second.close()


_REG_COLUMNS = ("reg_method", "reg_nstars", "reg_dx", "reg_dy", "reg_rms_before",
                "reg_rms_after")
_ZP_COLUMNS = ("zp", "zp_source")  # detections, schema 5


def _drop_detection_zp(conn):
    for column in _ZP_COLUMNS:
        conn.execute(sa.text(f"ALTER TABLE detections DROP COLUMN {column}"))


def _make_version_1_database(db_url):
    """A database as desgw with schema version 1 wrote it: no ``exposures.kind``, one
    exposure registered, one schema_version row (1)."""
    db = connect(db_url)
    with db.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE exposures DROP COLUMN kind"))
        for column in _REG_COLUMNS:  # schema 3
            conn.execute(sa.text(f"ALTER TABLE templates_used DROP COLUMN {column}"))
        _drop_detection_zp(conn)  # schema 5
        conn.execute(sa.text("DELETE FROM schema_version"))
        conn.execute(sa.text("INSERT INTO schema_version (version, applied_at) "
                             "VALUES (1, CURRENT_TIMESTAMP)"))
        conn.execute(sa.text("INSERT INTO exposures (expnum, nite, mjd, band, exptime, ra, dec, "
                             "raw_path, ingested_at) VALUES (123, 20190901, 58727.1, 'r', 90.0,"
                             " 10.0, -43.0, '/raw/DECam_00000123.fits.fz', CURRENT_TIMESTAMP)"))
    db.close()


def test_version_1_database_is_upgraded(db_url):
    """Schema 2 added exposures.kind: a version-1 database is migrated when opened, its
    exposures become 'raw', and new exposures record their kind."""
    from types import SimpleNamespace

    from desgw.db import get_exposure, register_exposure

    assert SCHEMA_VERSION == 5
    _make_version_1_database(db_url)
    db = connect(db_url)
    assert db.schema_version == 5
    with db.engine.connect() as conn:
        versions = sorted(conn.execute(sa.text("SELECT version FROM schema_version")).scalars())
    assert versions == [1, 2, 3, 4, 5]
    old = get_exposure(db, 123)
    assert old is not None and old.kind == "raw" and old.raw_path.endswith("123.fits.fz")
    cp = SimpleNamespace(expnum=124, nite=20190902, mjd_obs=58728.1, band="r", exptime=90.0,
                         ra_deg=10.0, dec_deg=-43.0, object=None, propid=None,
                         obstype="object", airmass=1.1, kind="instcal")
    register_exposure(db, cp, "/raw/c4d_190902_ooi_r_v1.fits.fz")
    assert get_exposure(db, 124).kind == "instcal"
    db.close()
    again = connect(db_url)  # opened again: nothing more to migrate
    with again.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM schema_version")).scalar() == 5
    assert get_exposure(again, 123).kind == "raw"
    again.close()


def test_version_2_template_uses_gain_their_registration(db_url):
    """Schema 3 added the registration of each template use: a version-2 database keeps its
    rows (registration NULL) and new uses store theirs, also through replace_ccd_results."""
    from types import SimpleNamespace

    from desgw.db import (
        TemplateUse,
        get_templates_used,
        record_templates_used,
        register_exposure,
        replace_ccd_results,
    )

    db = connect(db_url)
    for expnum in (880001, 664075):
        register_exposure(db, SimpleNamespace(
            expnum=expnum, nite=20190901, mjd_obs=58727.1, band="r", exptime=90.0,
            ra_deg=10.0, dec_deg=-43.0, object=None, propid=None, obstype="object",
            airmass=1.1, kind="raw"), f"/raw/DECam_{expnum:08d}.fits.fz")
    with db.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO templates_used (search_expnum, search_ccdnum, "
                             "template_expnum, template_ccdnum) VALUES (880001, 28, 664075, 22)"))
        for column in _REG_COLUMNS:
            conn.execute(sa.text(f"ALTER TABLE templates_used DROP COLUMN {column}"))
        _drop_detection_zp(conn)
        conn.execute(sa.text("UPDATE schema_version SET version = 2 WHERE version = 5"))
    db.close()
    db = connect(db_url)
    assert db.schema_version == 5
    (old,) = get_templates_used(db, 880001)
    assert (old.template_ccdnum, old.reg_method, old.reg_dx) == (22, None, None)
    shift = TemplateUse(880001, 29, 664075, 28, reg_method="shift", reg_nstars=17,
                        reg_dx=0.41, reg_dy=-0.12, reg_rms_before=0.45, reg_rms_after=0.08)
    record_templates_used(db, [shift])
    wcs_only = TemplateUse(880001, 30, 664075, 29, reg_method="wcs", reg_nstars=3,
                           reg_dx=0.0, reg_dy=0.0, reg_rms_before=float("nan"),
                           reg_rms_after=float("nan"))
    replace_ccd_results(db, 880001, 30, templates_used=[wcs_only])
    got = {u.search_ccdnum: u for u in get_templates_used(db, 880001)}
    assert got[29] == shift
    assert got[30].reg_method == "wcs" and got[30].reg_rms_after is None  # NaN -> NULL
    with pytest.raises(ValueError, match="registration method"):
        record_templates_used(db, [TemplateUse(880001, 31, 664075, 29, reg_method="guess")])
    db.close()


_FK_INDEXES = {"detections": ("ix_detections_fake_id", ["fake_id"]),
               "fakes": ("ix_fakes_recovered_detection_id", ["recovered_detection_id"])}


def _fk_indexes(db):
    found = {}
    with db.engine.connect() as conn:
        insp = sa.inspect(conn)
        for table, (name, _) in _FK_INDEXES.items():
            for ix in insp.get_indexes(table):
                if ix["name"] == name:
                    found[table] = (name, list(ix["column_names"]))
    return found


def test_version_3_database_gains_the_foreign_key_indexes(db_url):
    """Schema 4 indexes detections.fake_id and fakes.recovered_detection_id (the foreign-key
    checks of a CCD's replaced rows scanned the whole other table without them): a new database
    has them, a version-3 database without them gets them when opened, its rows kept, and a
    CCD's results are replaced there as before."""
    from types import SimpleNamespace

    from desgw.db import NewDetection, NewFake, get_fakes, register_exposure, replace_ccd_results

    db = connect(db_url)
    assert db.schema_version == SCHEMA_VERSION == 5
    assert _fk_indexes(db) == _FK_INDEXES
    register_exposure(db, SimpleNamespace(
        expnum=880001, nite=20190901, mjd_obs=58727.1, band="r", exptime=90.0, ra_deg=10.0,
        dec_deg=-43.0, object=None, propid=None, obstype="object", airmass=1.1, kind="raw"),
        "/raw/DECam_00880001.fits.fz")
    fakes = [NewFake(ra=10.0 + 0.01 * k, dec=-43.0, mag=21.0) for k in range(3)]
    dets = [NewDetection(ra=10.0 + 0.01 * k, dec=-43.0, flux=100.0, fluxerr=10.0, snr=10.0,
                         is_fake=True, fake_id=k) for k in range(2)]
    replace_ccd_results(db, 880001, 28, fakes=fakes, detections=dets)
    with db.engine.begin() as conn:
        for name, _ in _FK_INDEXES.values():
            conn.execute(sa.text(f"DROP INDEX {name}"))
        _drop_detection_zp(conn)
        conn.execute(sa.text("UPDATE schema_version SET version = 3 WHERE version = 5"))
    assert _fk_indexes(db) == {}
    db.close()
    db = connect(db_url)
    assert db.schema_version == 5
    assert _fk_indexes(db) == _FK_INDEXES
    with db.engine.connect() as conn:
        versions = sorted(conn.execute(sa.text("SELECT version FROM schema_version")).scalars())
        assert versions == [3, 4, 5]
    assert sum(f.recovered for f in get_fakes(db, 880001)) == 2
    replace_ccd_results(db, 880001, 28, fakes=fakes[:1], detections=dets[:1])
    got = get_fakes(db, 880001)
    assert len(got) == 1 and got[0].recovered
    db.close()


def test_version_4_detections_gain_their_zeropoint(db_url):
    """Schema 5 stores the zeropoint each detection's magnitude is on and its source: a
    version-4 database keeps its detections (zp NULL, left alone by recalibrate_detections),
    new ones store theirs and are put on the exposure calibration's zeropoints."""
    from types import SimpleNamespace

    from desgw.db import (
        NewDetection,
        get_detections,
        recalibrate_detections,
        register_exposure,
        replace_ccd_results,
    )

    db = connect(db_url)
    register_exposure(db, SimpleNamespace(
        expnum=880001, nite=20190901, mjd_obs=58727.1, band="r", exptime=90.0, ra_deg=10.0,
        dec_deg=-43.0, object=None, propid=None, obstype="object", airmass=1.1, kind="raw"),
        "/raw/DECam_00880001.fits.fz")
    with db.engine.begin() as conn:
        _drop_detection_zp(conn)
        conn.execute(sa.text("UPDATE schema_version SET version = 4 WHERE version = 5"))
    db.close()
    db = connect(db_url)
    assert db.schema_version == 5
    old = NewDetection(ra=10.0, dec=-43.0, flux=100.0, fluxerr=10.0, snr=10.0, mag=26.5)
    replace_ccd_results(db, 880001, 28, detections=[old])
    new = NewDetection(ra=10.1, dec=-43.0, flux=100.0, fluxerr=10.0, snr=10.0, mag=26.5,
                       zp=31.5, zp_source="se")
    replace_ccd_results(db, 880001, 29, detections=[new])
    with db.engine.begin() as conn:  # a detection stored before schema 5: no zeropoint
        conn.execute(sa.text("UPDATE detections SET zp = NULL, zp_source = NULL "
                             "WHERE ccdnum = 28"))
    assert recalibrate_detections(db, 880001, {28: 31.49, 29: 31.49}) == 1
    got = {d.ccdnum: d for d in get_detections(db, expnum=880001)}
    assert got[28].mag == 26.5 and got[28].zp is None
    assert got[29].mag == pytest.approx(26.49) and got[29].zp == 31.49
    assert got[29].zp_source == "expcalib"
    db.close()
