"""Fixtures for the desgw.db tests: a fresh SQLite file, and a fresh PostgreSQL database
when DESGW_TEST_PG_URL is set (see tests/db/start_postgres.sh); PostgreSQL cases are skipped
otherwise."""

from __future__ import annotations

import os
import secrets

import pytest

PG_ENV = "DESGW_TEST_PG_URL"


def pg_admin_url() -> str | None:
    return os.environ.get(PG_ENV) or None


def _fresh_pg_database(admin_url: str) -> tuple[str, str]:
    """Create an empty database next to the one in ``admin_url``; return (url, name)."""
    import sqlalchemy as sa

    name = "desgw_t_" + secrets.token_hex(6)
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    base = sa.engine.make_url(admin_url).set(database=name)
    return base.render_as_string(hide_password=False), name


def _drop_pg_database(admin_url: str, name: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """URL of an empty database: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'desgw.sqlite'}"
        return
    admin = pg_admin_url()
    if admin is None:
        pytest.skip(f"{PG_ENV} not set (start one with tests/db/start_postgres.sh)")
    url, name = _fresh_pg_database(admin)
    yield url
    _drop_pg_database(admin, name)


@pytest.fixture
def db(db_url):
    from desgw.db import connect

    database = connect(db_url)
    yield database
    database.close()
