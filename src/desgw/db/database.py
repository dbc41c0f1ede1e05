"""Opening a desgw database: :func:`connect` and :class:`Database`.

SQLite (the default) is opened in WAL mode with a busy timeout, foreign keys on, and every
write transaction started with ``BEGIN IMMEDIATE``: writers from several processes queue for
the write lock instead of failing half-way, and readers never block. PostgreSQL is reached
through psycopg 3 (``postgresql+psycopg://``); writers that must be serialised (candidate
association, schema creation) take a transaction-scoped advisory lock.

The schema is created on first use and its version stored in ``schema_version``. A database
of an older version with a migration in :data:`MIGRATIONS` is upgraded in place when opened
(one transaction per step, a row per applied version; see :func:`migrate_schema`); a database
with a newer version, an older one without a migration, or desgw tables but no version, is
refused with :class:`~desgw.db.errors.SchemaVersionError`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from sqlalchemy import (Connection, Engine, create_engine, event, func, insert, inspect, select,
                        text)
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from desgw.util.extras import require_extra

from .errors import DatabaseConnectionError, DatabaseError, SchemaVersionError
from .models import SCHEMA_VERSION, Base, SchemaVersionRow
from .urls import normalize_url, redact_url, scrub_secret

__all__ = ["ADVISORY_LOCK_CANDIDATES", "ADVISORY_LOCK_SCHEMA", "MIGRATIONS", "Database",
           "connect", "connect_shared", "migrate_schema", "retry_database"]

log = logging.getLogger(__name__)

#: PostgreSQL advisory-lock keys (transaction scope) of desgw.
ADVISORY_LOCK_SCHEMA = 0x6465_7367_0001
ADVISORY_LOCK_CANDIDATES = 0x6465_7367_0002

_BEGIN_OPTION = "desgw_sqlite_begin"


def _sqlite_events(engine: Engine, busy_timeout_s: float, memory: bool) -> None:
    """Install WAL/busy-timeout pragmas and explicit BEGIN [IMMEDIATE] on a SQLite engine."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the driver opens no transactions; we emit BEGIN
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            if not memory:
                cur.execute("PRAGMA journal_mode = WAL")
                cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA foreign_keys = ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """An open desgw database (a SQLAlchemy engine plus desgw's transaction rules).

    Use :func:`connect` to make one. The object is picklable (it re-connects from the URL on
    unpickling), so it can be handed to worker processes; each process gets its own pool.

    Attributes
    ----------
    url : str
        The URL with the password masked (safe to log).
    dialect : str
        ``"sqlite"`` or ``"postgresql"``.
    engine : sqlalchemy.Engine
        The engine (for advanced use; prefer :meth:`write_session` / :meth:`read_session`).
    schema_version : int
        The schema version found or created.
    """

    def __init__(self, engine: Engine, url: str, schema_version: int) -> None:
        self.engine = engine
        self._url = url
        self.url = redact_url(url)
        self.dialect = engine.dialect.name
        self.schema_version = schema_version
        self._write_engine = engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})

    def __repr__(self) -> str:
        return f"Database({self.url!r}, schema_version={self.schema_version})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (connect, (self._url,))

    @contextlib.contextmanager
    def write_session(self) -> Iterator[Session]:
        """A session in one write transaction: committed on success, rolled back on error.

        On SQLite the transaction starts with ``BEGIN IMMEDIATE`` (waits up to the busy
        timeout for other writers), so a read-then-write inside it cannot be overtaken.
        """
        with self._wrap_errors(), Session(self._write_engine, expire_on_commit=False) as session:
            with session.begin():
                session.connection()  # BEGIN (IMMEDIATE) now, not at the first statement
                yield session

    @contextlib.contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for reading (never blocks on writers with SQLite WAL or PostgreSQL)."""
        with self._wrap_errors(), Session(self.engine, expire_on_commit=False) as session:
            with session.begin():
                yield session

    def check_writable(self) -> None:
        """Take the write lock once and release it: a database another process keeps locked
        fails here, within the busy timeout, instead of at the first write of a task.

        :func:`connect` no longer takes the write lock (a database at the current schema is
        checked in a read transaction), so a run calls this once before its tasks start.

        Raises
        ------
        DatabaseConnectionError
            The write lock was not granted within the busy timeout, or the server is gone.
        """
        with self.write_session():
            pass

    def lock_candidates(self, session: Session) -> None:
        """Serialise candidate association with other writers until the transaction ends.

        SQLite: nothing to do (a write transaction already holds the database write lock).
        PostgreSQL: takes a transaction-scoped advisory lock.
        """
        if self.dialect == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                            {"k": ADVISORY_LOCK_CANDIDATES})

    @contextlib.contextmanager
    def _wrap_errors(self) -> Iterator[None]:
        try:
            yield
        except OperationalError as exc:  # locked, busy, server gone: worth another try
            raise DatabaseConnectionError(
                f"{self.url}: {scrub_secret(_first_line(exc), self._url)}") from None
        except SQLAlchemyError as exc:
            raise DatabaseError(f"{self.url}: {scrub_secret(_first_line(exc), self._url)}"
                                ) from None

    def close(self) -> None:
        """Close all pooled connections."""
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    source = orig if orig is not None else exc
    lines = [ln for ln in str(source).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(source).__name__


def _migrate_1_to_2(conn: Connection) -> None:
    """Version 2: ``exposures.kind`` (``raw`` for every exposure registered before it)."""
    conn.execute(text("ALTER TABLE exposures ADD COLUMN kind VARCHAR(16) NOT NULL "
                      "DEFAULT 'raw'"))


def _migrate_2_to_3(conn: Connection) -> None:
    """Version 3: the registration of each template use (``templates_used.reg_*``, NULL for
    the rows recorded before it)."""
    for column, kind in (("reg_method", "VARCHAR(16)"), ("reg_nstars", "INTEGER"),
                         ("reg_dx", "FLOAT"), ("reg_dy", "FLOAT"), ("reg_rms_before", "FLOAT"),
                         ("reg_rms_after", "FLOAT")):
        conn.execute(text(f"ALTER TABLE templates_used ADD COLUMN {column} {kind}"))


#: Indexes added by schema version 4: (name, table, column).
_V4_INDEXES = (("ix_detections_fake_id", "detections", "fake_id"),
               ("ix_fakes_recovered_detection_id", "fakes", "recovered_detection_id"))


def _migrate_3_to_4(conn: Connection) -> None:
    """Version 4: indexes on the foreign keys that point at fakes and detections
    (``detections.fake_id``, ``fakes.recovered_detection_id``). Deleting a fake or a detection
    (:func:`desgw.db.replace_ccd_results` replacing a CCD's rows) checks those keys; without an
    index each check scans the whole other table (0.24 CPU-s per CCD at 7,000 detections and
    10,700 fakes; 0.007 s with them). ``create_all`` does not add indexes to existing tables,
    hence this step (``IF NOT EXISTS``: a database created with them is left as it is)."""
    for name, table, column in _V4_INDEXES:
        conn.execute(text(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({column})"))


def _migrate_4_to_5(conn: Connection) -> None:
    """Version 5: the zeropoint of each detection's magnitude and its source
    (``detections.zp``, ``detections.zp_source``; NULL for the rows recorded before it, whose
    magnitudes :func:`desgw.db.recalibrate_detections` then leaves as they are)."""
    conn.execute(text("ALTER TABLE detections ADD COLUMN zp FLOAT"))
    conn.execute(text("ALTER TABLE detections ADD COLUMN zp_source VARCHAR(32)"))


#: Schema migrations: ``MIGRATIONS[v]`` upgrades a database of version ``v`` to ``v + 1``
#: inside the caller's transaction (plain SQL, valid on SQLite and PostgreSQL).
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _migrate_1_to_2, 2: _migrate_2_to_3,
                                                       3: _migrate_3_to_4, 4: _migrate_4_to_5}


def migrate_schema(conn: Connection, found: int, *, shown: str = "database") -> int:
    """Upgrade a desgw schema of version ``found`` to :data:`SCHEMA_VERSION` step by step.

    Parameters
    ----------
    conn : sqlalchemy.Connection
        In a write transaction (and, on PostgreSQL, holding the schema advisory lock).
    found : int
        The version the database has.
    shown : str
        The redacted URL, for the messages.

    Returns
    -------
    int
        :data:`SCHEMA_VERSION`.

    Raises
    ------
    SchemaVersionError
        No migration from ``found`` (or from a version on the way).
    """
    version = int(found)
    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise SchemaVersionError(
                f"{shown}: database schema version {version} is unknown to this desgw "
                f"(version {SCHEMA_VERSION}) and there is no migration from it")
        step(conn)
        version += 1
        conn.execute(insert(SchemaVersionRow).values(version=version))
        log.info("%s: desgw schema upgraded from version %d to %d", shown, version - 1, version)
    return version


def _current_version(engine: Engine) -> int | None:
    """The schema version when the database is already at :data:`SCHEMA_VERSION` (a plain read
    transaction: no write lock, nothing created), else None."""
    with engine.connect() as conn, conn.begin():
        if SchemaVersionRow.__tablename__ not in set(inspect(conn).get_table_names()):
            return None
        found = conn.execute(select(func.max(SchemaVersionRow.version))).scalar()
    return SCHEMA_VERSION if found == SCHEMA_VERSION else None


def _ensure_schema(engine: Engine, url: str, create: bool) -> int:
    """Check (or create) the desgw schema; return its version.

    A database already at :data:`SCHEMA_VERSION` (every open but the first) is checked in a
    read transaction; only creating or migrating takes the write lock (SQLite ``BEGIN
    IMMEDIATE``, PostgreSQL's schema advisory lock), and checks again under it."""
    shown = redact_url(url)
    if _current_version(engine) is not None:
        return SCHEMA_VERSION
    write = engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
    with write.connect() as conn, conn.begin():
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_LOCK_SCHEMA})
        tables = set(inspect(conn).get_table_names())
        if SchemaVersionRow.__tablename__ in tables:
            versions = list(conn.execute(select(SchemaVersionRow.version)).scalars())
            if not versions:
                raise SchemaVersionError(f"{shown}: the schema_version table is empty; this is "
                                         "not a usable desgw database")
            found = max(versions)
            if found > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{shown}: database schema version {found} is newer than this desgw "
                    f"understands (version {SCHEMA_VERSION}); upgrade desgw")
            if found != SCHEMA_VERSION:
                return migrate_schema(conn, found, shown=shown)
            return found
        ours = sorted(tables & set(Base.metadata.tables))
        if ours:
            raise SchemaVersionError(f"{shown}: holds desgw tables ({', '.join(ours)}) but no "
                                     "schema_version table; refusing to use it")
        if not create:
            raise SchemaVersionError(f"{shown}: no desgw schema (and create=False)")
        Base.metadata.create_all(conn)
        conn.execute(insert(SchemaVersionRow).values(version=SCHEMA_VERSION))
        log.info("created desgw schema version %d in %s", SCHEMA_VERSION, shown)
        return SCHEMA_VERSION


def connect(url: str | os.PathLike[str] | None = None, *, create: bool = True,
            busy_timeout_s: float = 60.0, connect_timeout_s: float = 10.0,
            echo: bool = False) -> Database:
    """Open (and on first use create) a desgw database.

    Parameters
    ----------
    url : str, os.PathLike or None
        SQLAlchemy URL (``sqlite:///path/desgw.sqlite``, ``postgresql+psycopg://user:pw@host
        /db``; plain ``postgresql://`` gets the psycopg driver), a path object (a SQLite file),
        or None: ``$DESGW_DB_URL`` if set, else ``./desgw.sqlite``. A string that is not a
        URL is refused (:func:`~desgw.db.urls.normalize_url`).
    create : bool
        Create the schema when the database has none (default). With False a database
        without the schema raises :class:`SchemaVersionError`.
    busy_timeout_s : float
        SQLite: how long a writer waits for the write lock (s).
    connect_timeout_s : float
        PostgreSQL: how long to wait for the server (s).
    echo : bool
        Log every SQL statement (SQLAlchemy echo).

    Returns
    -------
    Database

    Raises
    ------
    DatabaseURLError
        ``url`` is not a URL desgw accepts (the message does not repeat it).
    DatabaseConnectionError
        The database cannot be opened or reached. The message holds the redacted URL only.
    SchemaVersionError
        The database holds a newer, unknown or foreign schema.
    """
    full = normalize_url(url)
    shown = redact_url(full)
    kwargs: dict[str, Any] = {"echo": echo, "future": True}
    is_sqlite = full.startswith("sqlite")
    memory = False
    try:
        if is_sqlite:
            database = full.split("://", 1)[1].lstrip("/") if "://" in full else ""
            memory = database in ("", ":memory:") or "mode=memory" in full
            if not memory:
                directory = os.path.dirname(full.split(":///", 1)[1].split("?", 1)[0])
                if directory and not os.path.isdir(directory):
                    raise DatabaseConnectionError(
                        f"{shown}: cannot open the SQLite database: directory {directory} "
                        "does not exist")
            kwargs["connect_args"] = {"timeout": busy_timeout_s, "check_same_thread": False}
        elif full.startswith("postgresql"):
            if full.startswith("postgresql+psycopg:"):
                require_extra("psycopg", "postgres", "PostgreSQL databases")
            kwargs["connect_args"] = {"connect_timeout": max(1, int(round(connect_timeout_s)))}
            kwargs["pool_pre_ping"] = True
        engine = create_engine(full, **kwargs)
    except DatabaseConnectionError:
        raise
    except Exception as exc:  # noqa: BLE001 - bad URL or missing driver: never show the password
        raise DatabaseConnectionError(f"{shown}: cannot open the database: "
                                      f"{scrub_secret(_first_line(exc), full)}") from None
    if is_sqlite:
        _sqlite_events(engine, busy_timeout_s, memory)
    try:
        version = _ensure_schema(engine, full, create)
    except SchemaVersionError:
        engine.dispose()
        raise
    except SQLAlchemyError as exc:
        engine.dispose()
        raise DatabaseConnectionError(f"{shown}: cannot open the database: "
                                      f"{scrub_secret(_first_line(exc), full)}") from None
    log.info("opened database %s (schema version %d)", shown, version)
    return Database(engine, full, version)


#: Databases :func:`connect_shared` keeps open: (process, URL, busy timeout, connect
#: timeout) -> (identity of the SQLite file when opened, or None; the database).
_SHARED: dict[tuple[Any, ...], tuple[tuple[int, int] | None, Database]] = {}


def _sqlite_file(full: str) -> str | None:
    """The file of a file-backed SQLite URL; None for in-memory SQLite and other databases."""
    if not full.startswith("sqlite") or ":///" not in full or "mode=memory" in full:
        return None
    path = full.split(":///", 1)[1].split("?", 1)[0]
    return None if path in ("", ":memory:") else path


def _file_identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


@contextlib.contextmanager
def connect_shared(url: str | os.PathLike[str] | None = None, *, busy_timeout_s: float = 60.0,
                   connect_timeout_s: float = 10.0) -> Iterator[Database]:
    """:func:`connect`'s database for one piece of work, kept open for this process's later
    pieces with the same URL and timeouts instead of closed at the end of the block.

    Its engine, connection pool and compiled statements are reused: SQLAlchemy compiles
    statements once per engine, so a worker that opened a new engine per CCD compiled every
    statement of a CCD's records again (a search CCD's records: ~50 -> ~34 ms of CPU).

    A new database is opened (as :func:`connect`: schema checked or created) when the SQLite
    file is not the one opened before (removed or replaced: another device or inode), in
    another process (after a fork), and after a :class:`DatabaseConnectionError` in the block
    (that one is closed and forgotten, so that a retry starts from a new connection).
    In-memory SQLite is not shared (each connect is another database): the block gets a
    database of its own, closed at its end. Do not close the database the block gets.

    Raises
    ------
    DatabaseURLError, DatabaseConnectionError, SchemaVersionError
        As :func:`connect`.
    """
    full = normalize_url(url)
    path = _sqlite_file(full)
    if full.startswith("sqlite") and path is None:
        with connect(full, busy_timeout_s=busy_timeout_s,
                     connect_timeout_s=connect_timeout_s) as own:
            yield own
        return
    key = (os.getpid(), full, float(busy_timeout_s), float(connect_timeout_s))
    found = _SHARED.get(key)
    if found is not None and path is not None and found[0] != _file_identity(path):
        _SHARED.pop(key, None)
        found[1].close()
        found = None
    if found is None:
        db = connect(full, busy_timeout_s=busy_timeout_s, connect_timeout_s=connect_timeout_s)
        found = (None if path is None else _file_identity(path), db)
        _SHARED[key] = found
    db = found[1]
    try:
        yield db
    except DatabaseConnectionError:
        if _SHARED.get(key) is found:
            del _SHARED[key]
        db.close()
        raise


T = TypeVar("T")


def retry_database(work: Callable[[], T], *, timeout_s: float, what: str = "database write",
                   first_delay_s: float = 0.25, max_delay_s: float = 5.0) -> T:
    """Run ``work`` (which opens the database and writes in its own transactions), again with
    exponential backoff while it fails with :class:`DatabaseConnectionError` (a locked SQLite
    file, a PostgreSQL server that is down or restarting), for at most ``timeout_s`` seconds.

    ``work`` must be idempotent (desgw's writes are upserts or replace a CCD's rows).

    Parameters
    ----------
    work : callable
        No arguments; its result is returned.
    timeout_s : float
        Give up (re-raise the last error) once this many seconds have passed (s).
    what : str
        Named in the log lines.
    first_delay_s, max_delay_s : float
        First wait and longest wait between tries (s).

    Raises
    ------
    DatabaseConnectionError
        Still failing after ``timeout_s``.
    """
    deadline = time.monotonic() + max(0.0, float(timeout_s))
    delay = float(first_delay_s)
    attempt = 1
    while True:
        try:
            return work()
        except DatabaseConnectionError as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                log.error("%s failed after %d attempt(s): %s", what, attempt, exc)
                raise
            wait = min(delay, max_delay_s, left)
            log.warning("%s failed (attempt %d), trying again in %.2f s: %s", what, attempt,
                        wait, exc)
            time.sleep(wait)
            delay *= 2.0
            attempt += 1
