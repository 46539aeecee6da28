"""Database engines for the index: SQLite (embedded default) and PostgreSQL.

SQLite runs in WAL mode with ``synchronous=FULL`` (a committed ingest survives
power loss), ``secure_delete=ON`` (a crypto-shredded key is overwritten in the
file, not left in a free page) and ``BEGIN IMMEDIATE`` for write transactions
(writers queue on the lock instead of failing on upgrade): in memory between the
threads of one process, with short retries between processes, never through
SQLite's busy handler, which sleeps up to 100 ms between tries.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, Executable, Table, create_engine, event, text
from sqlalchemy.orm import Session

_MIGRATIONS = Path(__file__).with_name("migrations")


def make_engine(url: str) -> Engine:
    """Create the engine for ``url`` with the pragmas and options dicomguard relies on."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
            cur = dbapi_conn.cursor()
            for pragma in (
                "journal_mode=WAL",
                "synchronous=FULL",
                "foreign_keys=ON",
                "secure_delete=ON",
                f"busy_timeout={int(BUSY_TIMEOUT_S * 1000)}",
            ):
                cur.execute(f"PRAGMA {pragma}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # type: ignore[no-untyped-def]
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            if mode == "IMMEDIATE":
                _begin_immediate(conn)
            else:
                conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True)


BUSY_TIMEOUT_S = 60.0
_RETRY_FIRST_S, _RETRY_LONGEST_S = 0.0001, 0.002


def _begin_immediate(conn: Connection) -> None:
    """``BEGIN IMMEDIATE``, tried again every 0.1 ms doubling to 2 ms while another process holds the write lock,
    for up to :data:`BUSY_TIMEOUT_S`; the last try raises SQLAlchemy's ``OperationalError`` (``database is locked``).

    SQLite's own busy handler sleeps 1, 2, 5 ... up to 100 ms between tries, so a writer of another process
    (``serve --workers``) can find the lock free only after sleeping through several short transactions. The
    connection's busy timeout is set back for the transaction's other statements.
    """
    raw = conn.connection.dbapi_connection
    assert raw is not None
    raw.execute("PRAGMA busy_timeout=0")
    try:
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        pause = _RETRY_FIRST_S
        while time.monotonic() < deadline:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    break
            time.sleep(pause)
            pause = min(pause * 2, _RETRY_LONGEST_S)
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    finally:
        raw.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")


def as_utc(t: datetime) -> datetime:
    """SQLite returns naive datetimes for timezone-aware columns; every stored time is UTC."""
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A transaction that writes: committed on success, rolled back on any exception."""
    with _writer_turn(engine), Session(bind=_immediate(engine), expire_on_commit=False) as session, session.begin():
        yield session


_WRITER_LOCK = "dicomguard_writer_lock"
WRITER_WAIT_S = 5.0
"""Longest wait in the in-process queue. Past it the transaction goes on to ``BEGIN IMMEDIATE`` and SQLite's lock
decides, as before the queue existed: a thread whose turn depends on another thread's write (an ``after_commit``
hook handing work over) loses at most this long and never deadlocks. Normal turns take milliseconds."""


@contextmanager
def _writer_turn(engine: Engine) -> Iterator[None]:
    """On SQLite, the threads of this process take turns at the write lock in a queue (an in-memory lock).

    SQLite's busy handler makes a writer that finds the lock taken sleep 1, 2, 5, 10 ... up to 100 ms between
    tries, so under a few concurrent short transactions (every audited request writes one) the lock sits free
    while the waiters sleep. Queued here, the next thread starts the moment the previous one commits; other
    processes (``serve --workers``, the CLI) still meet at ``BEGIN IMMEDIATE`` (:func:`_begin_immediate`).
    PostgreSQL queues its own writers and needs none of this.

    The lock is re-entrant: an ``after_commit`` hook of a write (the key vault's push) may write again from the
    same thread once SQLite's lock is free; a nested write inside an open transaction waits for SQLite's lock
    and fails with ``database is locked``, as it always did.
    """
    if not is_sqlite(engine):
        yield
        return
    lock = engine.__dict__.get(_WRITER_LOCK)
    if lock is None:
        lock = engine.__dict__.setdefault(_WRITER_LOCK, threading.RLock())
    held = lock.acquire(timeout=WRITER_WAIT_S)
    try:
        yield
    finally:
        if held:
            lock.release()


_IMMEDIATE = "dicomguard_immediate"


def _immediate(engine: Engine) -> Engine:
    """``engine`` whose transactions begin with SQLite's write lock (``BEGIN IMMEDIATE``); made once per engine."""
    if not is_sqlite(engine):
        return engine
    bound = engine.__dict__.get(_IMMEDIATE)
    if bound is None:
        bound = engine.__dict__[_IMMEDIATE] = engine.execution_options(sqlite_begin="IMMEDIATE")
    return bound  # type: ignore[no-any-return]


_CONNECTION = "dicomguard.connection"


def connection_of(session: Session) -> Connection:
    """``session.connection()``, looked up once per transaction: the ORM walks its transaction state on every call,
    and the per-object write path asks a dozen times per transaction (ADR 0024)."""
    transaction = session.get_transaction()
    cached = session.info.get(_CONNECTION)
    if cached is not None and transaction is not None and cached[0] is transaction and transaction.is_active:
        return cached[1]  # type: ignore[no-any-return]
    conn = session.connection()
    session.info[_CONNECTION] = (session.get_transaction(), conn)
    return conn


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    """A read-only snapshot (deferred transaction on SQLite)."""
    with Session(bind=engine, expire_on_commit=False) as session, session.begin():
        yield session


@contextmanager
def read_connection(engine: Engine) -> Iterator[Connection]:
    """A read-only snapshot on a Core connection, without an ORM session: for the lookups of the per-object path,
    where building and closing a session cost more than the query (ADR 0024)."""
    with engine.connect() as conn, conn.begin():
        yield conn


def alembic_config(engine: Engine | None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


@functools.cache
def head_revision() -> str | None:
    """The newest migration (read from the migration scripts once per process)."""
    return ScriptDirectory.from_config(alembic_config(None)).get_current_head()  # type: ignore[arg-type]


def migrate(engine: Engine) -> None:
    """Bring the schema to the latest Alembic revision (a no-op, without loading Alembic's environment, when it is there)."""
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current is not None and current == head_revision():
        return
    command.upgrade(alembic_config(engine), "head")


def checkpoint_and_shrink(engine: Engine) -> None:
    """Push the WAL into the main file and truncate it, so erased key bytes leave the WAL file too."""
    if is_sqlite(engine):
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    else:
        # Dead tuples still hold the old wrapped key until VACUUM reclaims them.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM patients"))
            conn.execute(text("VACUUM patient_tokens"))


def insert_ignore(session: Session, model: type, **values: object) -> None:
    """INSERT that does nothing if the primary key exists (safe under concurrent writers)."""
    session.connection().execute(insert_ignore_statement(session.get_bind().dialect.name, model.__table__), values)  # type: ignore[attr-defined]


@functools.cache
def insert_ignore_statement(dialect: str, table: Table) -> Executable:
    """Built once per table and dialect: the statement's cache key is then computed once, and it runs as Core (no ORM
    bulk path); ``index.direct.DirectStatement`` compiles it for the hot path."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
    return dialect_insert(table).on_conflict_do_nothing()


_BEFORE_COMMIT = "dicomguard.before_commit"


def before_commit(session: Session, key: str, hook: Callable[[Session], None]) -> None:
    """Run ``hook(session)`` once, just before this transaction commits (inside it).

    Lets a subscriber batch its writes (e.g. all ledger leaves of an ingest batch)
    and still commit atomically with the action that produced them.
    """
    hooks: dict[str, Callable[[Session], None]] = session.info.setdefault(_BEFORE_COMMIT, {})
    hooks.setdefault(key, hook)


@event.listens_for(Session, "before_commit")
def _run_before_commit_hooks(session: Session) -> None:
    hooks = session.info.pop(_BEFORE_COMMIT, None)
    if hooks:
        for hook in hooks.values():
            hook(session)
