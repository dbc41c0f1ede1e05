"""connect_shared: the database a worker keeps open between CCDs (its engine and compiled
statements reused) gives the rows a new connection per CCD gives, and is opened afresh when
the SQLite file changes, the timeouts differ, or a connection error ends a block."""

from __future__ import annotations

import os
import sys

import pytest

from desgw.db import DatabaseConnectionError, connect, connect_shared, replace_ccd_results

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import db_concurrency_worker as w  # noqa: E402  (found through the sys.path line above)
from test_db_replace import snapshot  # noqa: E402


def _store(db):
    uses, fakes, dets = w.ccd_results()
    replace_ccd_results(db, 2000, 5, templates_used=uses, fakes=fakes, detections=dets)


def test_shared_database_rows_equal_fresh_connections(db_url, tmp_path):
    with connect(db_url) as db:
        w.register_two(db)
    with connect_shared(db_url) as first:
        _store(first)
    with connect_shared(db_url) as again:  # the same engine, statements compiled once
        assert again is first
        _store(again)  # a rerun of the CCD: replaces its rows
    with connect(db_url) as db:
        shared_rows = snapshot(db)
    # the same work with a new connection per CCD
    other = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    with connect(other) as db:
        w.register_two(db)
    for _ in range(2):
        with connect(other) as db:
            _store(db)
    with connect(other) as db:
        assert snapshot(db) == shared_rows
    assert len(shared_rows["detections"]) == 90 and len(shared_rows["fakes"]) == 40


def test_replaced_sqlite_file_is_opened_afresh(tmp_path):
    path = tmp_path / "d.sqlite"
    url = f"sqlite:///{path}"
    with connect(url) as db:
        w.register_two(db)
    with connect_shared(url) as first:
        _store(first)
    path.unlink()  # another database under the same name
    for extra in ("-wal", "-shm"):
        (tmp_path / f"d.sqlite{extra}").unlink(missing_ok=True)
    with connect(url) as db:
        w.register_two(db)
    with connect_shared(url) as second:
        assert second is not first
        _store(second)  # into the new file, not the removed one
    with connect(url) as db:
        assert len(snapshot(db)["detections"]) == 90
    with connect_shared(url, busy_timeout_s=5.0) as third:  # other settings: its own
        assert third is not second


def test_connection_error_forgets_the_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'e.sqlite'}"
    with pytest.raises(DatabaseConnectionError), connect_shared(url) as first:
        raise DatabaseConnectionError("locked")
    with connect_shared(url) as second:
        assert second is not first
    with connect_shared("sqlite://") as a, connect_shared("sqlite://") as b:
        assert a is not b  # in memory: never shared (each is another database)
