"""The ``watch_latency`` table: created beside the versioned schema, rows replaced by expnum."""

from __future__ import annotations

import sqlalchemy as sa

from desgw.db import SCHEMA_VERSION, connect
from desgw.db.latency import (
    ExposureLatency,
    ensure_latency_table,
    get_latencies,
    record_latency,
)


def test_latency_rows_round_trip_and_replace(db, db_url):
    ensure_latency_table(db)
    ensure_latency_table(db)  # a second time: nothing to do
    record_latency(db, ExposureLatency(7, "search", "waiting", landed_at=100.0,
                                       ingested_at=100.5, raw_path="/raw/DECam_00000007.fits"))
    record_latency(db, ExposureLatency(5, "template", "done", landed_at=50.0, ingested_at=51.0,
                                       se_done_at=90.0, finished_at=95.0))
    record_latency(db, ExposureLatency(7, "search", "done", landed_at=100.0, ingested_at=100.5,
                                       se_done_at=140.0, candidates_at=171.25, n_candidates=12,
                                       finished_at=171.25))
    rows = get_latencies(db)
    assert [r.expnum for r in rows] == [5, 7]  # by landing time, one row per exposure
    assert rows[1].status == "done" and rows[1].n_candidates == 12
    assert rows[1].since_landed("candidates") == 71.25
    assert rows[0].since_landed("candidates") is None
    # the versioned schema is untouched: the database still opens as the same version
    db.close()
    with connect(db_url) as again:
        assert again.schema_version == SCHEMA_VERSION
        assert len(get_latencies(again)) == 2
        with again.read_session() as s:
            assert "watch_latency" in sa.inspect(s.connection()).get_table_names()
