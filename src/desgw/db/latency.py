"""The ``watch_latency`` table: per exposure, when ``desgw watch`` saw each step of it.

One row per raw exposure the live service met: its role (``template``, ``search`` or
``rejected``), the reason it was rejected or its processing failed, and Unix times (s) of

* ``landed_at``: the file became complete in the watched folder (its modification time);
* ``ingested_at``: registered in ``exposures`` (or rejected);
* ``se_done_at``: the last single-epoch task of the exposure finished;
* ``candidates_at``: the last difference-imaging task finished, its candidates written to
  ``detections``/``candidates`` (search exposures); for a template, when its calibration
  finished;
* ``finished_at``: nothing of the exposure is left to run.

The table is an addition that does not touch the versioned tables of :mod:`desgw.db.models`
(it has its own metadata and is created on first use when missing), so a
database without it is still schema version :data:`~desgw.db.models.SCHEMA_VERSION` and older
desgw versions ignore it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, select

from .database import Database

__all__ = ["LATENCY_TABLE", "ExposureLatency", "ensure_latency_table", "get_latencies",
           "record_latency"]

_META = MetaData()

#: The ``watch_latency`` table.
LATENCY_TABLE = Table(
    "watch_latency", _META,
    Column("expnum", Integer, primary_key=True, autoincrement=False),
    Column("role", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", Text),
    Column("raw_path", Text),
    Column("n_ccds", Integer),
    Column("n_failed", Integer),
    Column("n_candidates", Integer),
    Column("landed_at", Float),
    Column("ingested_at", Float),
    Column("se_done_at", Float),
    Column("candidates_at", Float),
    Column("finished_at", Float),
)


@dataclass(frozen=True)
class ExposureLatency:
    """One row of ``watch_latency`` (times: Unix seconds, None when not reached).

    Attributes
    ----------
    expnum : int
    role : str
        ``"template"``, ``"search"`` or ``"rejected"``.
    status : str
        ``"waiting"`` (planned, running), ``"done"``, ``"failed"`` (some task failed or was
        blocked; ``reason`` says which) or ``"rejected"``.
    reason : str or None
    raw_path : str or None
    n_ccds, n_failed, n_candidates : int or None
        CCDs planned, tasks failed or blocked, candidates written.
    landed_at, ingested_at, se_done_at, candidates_at, finished_at : float or None
    """

    expnum: int
    role: str
    status: str
    reason: str | None = None
    raw_path: str | None = None
    n_ccds: int | None = None
    n_failed: int | None = None
    n_candidates: int | None = None
    landed_at: float | None = None
    ingested_at: float | None = None
    se_done_at: float | None = None
    candidates_at: float | None = None
    finished_at: float | None = None

    def since_landed(self, what: str) -> float | None:
        """Seconds from ``landed_at`` to ``{what}_at`` (None when either is unknown)."""
        t = getattr(self, f"{what}_at")
        if t is None or self.landed_at is None or not math.isfinite(t):
            return None
        return float(t) - float(self.landed_at)


def ensure_latency_table(db: Database) -> None:
    """Create ``watch_latency`` when the database lacks it."""
    with db.write_session() as s:
        _META.create_all(s.connection(), checkfirst=True)


def record_latency(db: Database, row: ExposureLatency) -> None:
    """Insert or replace the row of ``row.expnum``."""
    values = asdict(row)
    with db.write_session() as s:
        s.execute(LATENCY_TABLE.delete().where(LATENCY_TABLE.c.expnum == row.expnum))
        s.execute(LATENCY_TABLE.insert().values(**values))


def get_latencies(db: Database) -> list[ExposureLatency]:
    """Every row, by landing time (then exposure number)."""
    names = [f.name for f in fields(ExposureLatency)]
    with db.read_session() as s:
        rows = s.execute(select(LATENCY_TABLE)).mappings().all()
    out = [ExposureLatency(**{k: r[k] for k in names}) for r in rows]

    def key(r: ExposureLatency) -> tuple[float, int]:
        return (r.landed_at if r.landed_at is not None else math.inf, r.expnum)

    return sorted(out, key=key)

