"""Task leases (app/leases.py): on one PostgreSQL database one process holds each lease; release, expiry or SIGKILL hand it over.

Each "node" here is its own SQLAlchemy engine (its own connections) on a scratch
database; the SIGKILL case uses a second process. Leases are shortened (seconds)
so expiry is quick to wait for; the rule tested is the same at 30 s.

Proven:

* of two (or eight, racing) clients only one holds a lease;
* the holder's release hands it over at the next try; its expiry (a holder that
  stops renewing) hands it over, and by then the old holder already counts
  itself out (the fencing rule: ``held()`` is False before anyone else acquires);
* the cursor the holder saved is read by the next holder; a process that lost
  the lease cannot overwrite it;
* a holder killed with SIGKILL keeps its lease until expiry, then the other
  process takes over;
* on two PostgreSQL nodes a once-per-archive periodic task ticks on one node
  only, and on the other once the first stops;
* on SQLite (one node) leases are always granted and periodic tasks tick.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import select

from dicomguard.app import leases
from dicomguard.app.leases import Lease, lease_status
from dicomguard.app.periodic import PeriodicTask
from dicomguard.index.db import make_engine, migrate, write_session
from dicomguard.index.models import TaskLease
from tests.conftest import PG_ADMIN_URL, _pg_database

DURATION_S = 1.5
RENEW_S = 0.3


@pytest.fixture
def pg_url(pg_available: bool) -> Iterator[str]:
    """A scratch PostgreSQL database with the archive's schema, dropped afterwards."""
    if not pg_available:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL unreachable at {PG_ADMIN_URL} under CI")
        pytest.skip(f"PostgreSQL unreachable at {PG_ADMIN_URL}")
    for url in _pg_database(None):
        engine = make_engine(url)
        try:
            migrate(engine)
        finally:
            engine.dispose()
        yield url


@pytest.fixture
def nodes(pg_url: str) -> Iterator[tuple[sqlalchemy.Engine, sqlalchemy.Engine]]:
    """Two engines on the database: two nodes' connection pools."""
    a, b = make_engine(pg_url), make_engine(pg_url)
    try:
        yield a, b
    finally:
        a.dispose()
        b.dispose()


def _lease(engine: sqlalchemy.Engine, name: str = "t") -> Lease:
    return Lease(engine, name, duration_s=DURATION_S, renew_s=RENEW_S)


def _row(engine: sqlalchemy.Engine, name: str = "t") -> TaskLease | None:
    with write_session(engine) as s:
        return s.get(TaskLease, name)


@pytest.mark.slow
def test_one_holder_and_release_hands_over(nodes: tuple[sqlalchemy.Engine, sqlalchemy.Engine]) -> None:
    a, b = _lease(nodes[0]), _lease(nodes[1])
    assert a.owner != b.owner and a.owner.count(":") == 2
    assert a.try_hold() and a.held() and a.acquisitions == 1
    assert not b.try_hold() and not b.held()
    assert a.try_hold() and a.acquisitions == 1  # a renewal is not a new acquisition
    assert not b.try_hold()
    row = _row(nodes[0])
    assert row is not None and row.owner == a.owner and row.lease_until is not None
    assert [(x.name, x.holder) for x in lease_status(nodes[1])] == [("t", a.owner)]
    a.release()
    assert not a.held() and _row(nodes[0]).owner is None  # type: ignore[union-attr]
    assert [(x.name, x.holder) for x in lease_status(nodes[1])] == [("t", None)]
    assert b.try_hold() and b.held()
    assert not a.try_hold()
    b.release()


@pytest.mark.slow
def test_expiry_hands_over_and_the_old_holder_has_stopped_first(nodes: tuple[sqlalchemy.Engine, sqlalchemy.Engine]) -> None:
    a, b = _lease(nodes[0]), _lease(nodes[1])
    assert a.try_hold()
    granted = time.monotonic()
    # a stops renewing (a paused process, a lost database connection): b keeps trying, as a standby does
    while not b.try_hold():
        assert time.monotonic() - granted < DURATION_S + 2.0, "the expired lease was not taken over"
        time.sleep(0.05)
    taken = time.monotonic() - granted
    assert taken >= DURATION_S - 0.2, taken  # not before the grant ran out (by the database's clock)
    assert not a.held(), "the old holder still acted after another acquired its lease"
    assert not a.save_cursor("7") and not a.try_hold()  # and the database refuses it
    b.release()


@pytest.mark.slow
def test_the_cursor_persists_across_holders(nodes: tuple[sqlalchemy.Engine, sqlalchemy.Engine]) -> None:
    a, b = _lease(nodes[0]), _lease(nodes[1])
    assert a.try_hold() and a.cursor is None
    assert a.save_cursor(41) and a.save_cursor(42) and a.cursor == "42"
    assert not b.save_cursor(99)  # not the holder: nothing written
    a.release()
    assert b.try_hold() and b.cursor == "42"
    assert b.save_cursor("43")
    assert not a.save_cursor("1")  # the former holder cannot move it back
    assert _row(nodes[0]).cursor == "43"  # type: ignore[union-attr]
    b.release()
    assert a.try_hold() and a.cursor == "43" and a.acquisitions == 2
    a.release()


@pytest.mark.slow
def test_of_eight_racing_clients_exactly_one_acquires(pg_url: str) -> None:
    engines = [make_engine(pg_url) for _ in range(8)]
    try:
        contenders = [_lease(e, "race") for e in engines]
        with write_session(engines[0]) as s:  # the row exists: the race is on the conditional UPDATE, not the INSERT
            s.add(TaskLease(name="race"))
        gate = threading.Barrier(len(contenders))
        results: dict[int, bool] = {}

        def contend(i: int) -> None:
            gate.wait()
            results[i] = contenders[i].try_hold()

        threads = [threading.Thread(target=contend, args=(i,)) for i in range(len(contenders))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(results.values()) == [False] * 7 + [True], results
        (winner,) = [contenders[i] for i, got in results.items() if got]
        assert _row(engines[0], "race").owner == winner.owner  # type: ignore[union-attr]
    finally:
        for e in engines:
            e.dispose()


HOLDER = """
import sys, time
from dicomguard.index.db import make_engine
from dicomguard.app.leases import Lease
lease = Lease(make_engine(sys.argv[1]), "killed", duration_s=float(sys.argv[2]), renew_s=float(sys.argv[3]))
assert lease.try_hold()
lease.keep()
print("HELD", lease.owner, flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_a_holder_killed_with_sigkill_loses_its_lease_after_expiry(pg_url: str, nodes: tuple[sqlalchemy.Engine, sqlalchemy.Engine]) -> None:
    duration = 2.0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, pg_url, str(duration), str(RENEW_S)], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, env=env, start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("HELD "), line
        owner = line.split()[1]
        standby = Lease(nodes[1], "killed", duration_s=duration, renew_s=RENEW_S)
        time.sleep(duration + 0.5)  # longer than one grant: the live holder renewed it
        assert not standby.try_hold()
        assert _row(nodes[1], "killed").owner == owner  # type: ignore[union-attr]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        killed = time.monotonic()
        assert not standby.try_hold()  # the dead holder's grant still runs
        while not standby.try_hold():
            assert time.monotonic() - killed < duration + 2.0, "the dead holder's lease was never taken over"
            time.sleep(0.05)
        assert _row(nodes[1], "killed").owner == standby.owner  # type: ignore[union-attr]
        standby.release()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# -- periodic tasks -----------------------------------------------------------------------------------------


class _Ticker(PeriodicTask):
    NAME = "ticker"
    POLL_S = 0.05

    def __init__(self, engine: sqlalchemy.Engine) -> None:
        super().__init__(_Services(engine))
        self.ticks: list[datetime] = []

    def tick(self, now: datetime) -> None:
        self.ticks.append(now)


class _Services:
    """What PeriodicTask reads of its services: the archive's engine."""

    def __init__(self, engine: sqlalchemy.Engine) -> None:
        self.archive = type("A", (), {"ctx": type("C", (), {"engine": engine})()})()


def _wait(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.slow
def test_a_once_per_archive_task_ticks_on_one_node_then_the_other(nodes: tuple[sqlalchemy.Engine, sqlalchemy.Engine],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leases, "LEASE_S", DURATION_S)
    monkeypatch.setattr(leases, "RENEW_S", RENEW_S)
    first, second = _Ticker(nodes[0]), _Ticker(nodes[1])
    stop_first, stop_second = threading.Event(), threading.Event()
    first.start(stop_first)
    _wait(lambda: len(first.ticks) >= 1)
    second.start(stop_second)
    try:
        time.sleep(3 * DURATION_S)  # several renewals: the first keeps it, the second only waits
        assert len(first.ticks) > 20 and second.ticks == []
        stop_first.set()
        first.join(10)
        handed_over = time.monotonic()
        _wait(lambda: len(second.ticks) >= 1)
        assert time.monotonic() - handed_over < RENEW_S + 1.0  # released: no wait for expiry
        ticked = len(first.ticks)
        time.sleep(0.3)
        assert len(first.ticks) == ticked
    finally:
        stop_first.set()
        stop_second.set()
        first.join(10)
        second.join(10)
    assert _row(nodes[0], "ticker").owner is None  # type: ignore[union-attr]  # released on stop


def test_on_sqlite_leases_are_always_granted_and_tasks_tick(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'index.sqlite'}")
    try:
        migrate(engine)
        with write_session(engine) as s:  # a previous serve process of this host died holding it
            s.add(TaskLease(name="ticker", owner="gone:1:dead", cursor="5"))
        task = _Ticker(engine)
        stop = threading.Event()
        task.start(stop)
        try:
            _wait(lambda: len(task.ticks) >= 3)
            assert task.lease is not None and task.lease.held() and task.lease.remaining() == float("inf")
            assert task.lease.cursor == "5"  # the progress of the previous process is kept
            assert [(x.name, x.holder) for x in lease_status(engine)] == [("ticker", task.lease.owner)]
        finally:
            stop.set()
            task.join(10)
        with write_session(engine) as s:
            assert s.scalar(select(TaskLease.owner).where(TaskLease.name == "ticker")) is None
        one, two = Lease(engine, "x"), Lease(engine, "x")
        assert one.try_hold() and two.try_hold()  # one node by construction: nothing to exclude
    finally:
        engine.dispose()
