"""SQLite writers take turns without SQLite's sleeping busy handler, and still give up after the busy timeout.

Threads of one process queue on an in-process lock (``index.db._writer_turn``);
a writer of another process is waited for at ``BEGIN IMMEDIATE`` with short
retries (``index.db._begin_immediate``). Both keep what SQLite guaranteed:
one writer at a time, every committed transaction kept, and ``database is
locked`` once the busy timeout has passed.
"""

from __future__ import annotations

import sqlite3
import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from dicomguard.index import db
from dicomguard.index.db import make_engine, read_session, write_session


@pytest.fixture
def engine(tmp_path):  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / 'index.db'}")
    with write_session(engine) as s:
        s.execute(text("CREATE TABLE counter (n INTEGER NOT NULL)"))
        s.execute(text("INSERT INTO counter VALUES (0)"))
    yield engine
    engine.dispose()


def _count(engine) -> int:  # type: ignore[no-untyped-def]
    with read_session(engine) as s:
        return int(s.execute(text("SELECT n FROM counter")).scalar_one())


def test_threads_of_one_process_write_one_at_a_time_and_lose_nothing(engine) -> None:  # type: ignore[no-untyped-def]
    inside = 0
    most_inside = 0
    guard = threading.Lock()
    errors: list[BaseException] = []

    def writer() -> None:
        nonlocal inside, most_inside
        try:
            for _ in range(25):
                with write_session(engine) as s:
                    with guard:
                        inside += 1
                        most_inside = max(most_inside, inside)
                    n = s.execute(text("SELECT n FROM counter")).scalar_one()  # read-modify-write: lost updates show
                    s.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})
                    with guard:
                        inside -= 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert _count(engine) == 8 * 25
    assert most_inside == 1


def _other_process_holds_the_write_lock(path: str) -> sqlite3.Connection:
    """A second connection of its own (as another process has): it holds SQLite's write lock until it commits."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE counter SET n = n + 100")
    return other


def test_a_writer_waits_for_another_processes_transaction_then_writes(engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    other = _other_process_holds_the_write_lock(str(tmp_path / "index.db"))
    done = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with write_session(engine) as s:
                s.execute(text("UPDATE counter SET n = n + 1"))
            done.set()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    assert not done.wait(0.5)  # still waiting: the other transaction holds the lock
    other.execute("COMMIT")
    other.close()
    t.join(30)
    assert done.is_set() and not errors
    assert _count(engine) == 101  # both transactions kept


def test_a_writer_gives_up_with_database_locked_after_the_busy_timeout(engine, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(db, "BUSY_TIMEOUT_S", 0.3)
    other = _other_process_holds_the_write_lock(str(tmp_path / "index.db"))
    try:
        with pytest.raises(OperationalError, match="database is locked"):
            with write_session(engine) as s:
                s.execute(text("UPDATE counter SET n = n + 1"))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert _count(engine) == 0
    with write_session(engine) as s:  # the connection is usable again, with its busy timeout back
        s.execute(text("UPDATE counter SET n = n + 1"))
        assert s.execute(text("PRAGMA busy_timeout")).scalar_one() == int(0.3 * 1000)
    assert _count(engine) == 1
