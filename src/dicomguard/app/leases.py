"""Leases on archive-wide background tasks: with several ``serve`` nodes on one database, one process runs each task.

A lease (Gray and Cheriton, "Leases: An Efficient Fault-Tolerant Mechanism for
Distributed File Cache Consistency", SOSP 1989) is a row of ``task_lease``: the
task's name, its holder (``hostname:pid:random``), the time the grant ends and a
``cursor`` the holder may persist for whoever holds it next. Properties:

* **At most one holder.** Acquiring and renewing are one conditional ``UPDATE``:
  the row is taken only if it is free, already ours, or expired by the
  *database's* clock (``now()``). Under PostgreSQL's READ COMMITTED a concurrent
  ``UPDATE`` of the same row waits for the first to commit and re-checks the
  condition on the new row version, so of two nodes racing for a free lease
  exactly one gets it. Only the database's clock decides expiry: the nodes'
  wall clocks need not agree.
* **Fencing rule: a holder that cannot renew stops acting before its lease
  expires.** The holder computes its own deadline from its monotonic clock read
  *before* it sent the ``UPDATE`` (so before the database's ``now()`` of that
  grant), minus :data:`GUARD_S`; :meth:`Lease.held` turns False at that
  deadline whatever the database says, and tasks check it before each unit of
  work. A paused process or one cut off from the database therefore stops
  before another can acquire (assuming clocks that drift by far less than
  :data:`GUARD_S` per lease period). Work *already started* is not interrupted:
  a unit of work must be short next to :data:`LEASE_S`, or (like a backup) be
  harmless to repeat.
* **Failover.** A holder renews every :data:`RENEW_S`; a standby tries to
  acquire at the same pace. A holder that dies (SIGKILL, lost host) stops
  renewing and its lease is taken over at most ``LEASE_S + RENEW_S`` later. A
  holder that stops cleanly releases the row and a standby takes over within
  ``RENEW_S``.
* **Progress survives the holder.** ``cursor`` is written only by the current
  holder (the write is conditional on ownership and expiry) and read by the next
  one when it acquires.

SQLite is one node by construction (the database is a file of one host), so
there the lease is always granted: taken unconditionally, without expiry and
without renewals; the row still names the holder for ``audit status``.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from dicomguard.core.writers import PREFIX as WRITER_PREFIX
from dicomguard.index.db import as_utc, insert_ignore, is_sqlite, read_session, write_session
from dicomguard.index.models import TaskLease

log = logging.getLogger(__name__)

LEASE_S = 30.0
"""How long one grant lasts (by the database's clock)."""
RENEW_S = 10.0
"""How often the holder renews, and a standby tries to acquire: two renewals may fail before the lease is lost."""
GUARD_S = 1.0
"""The holder gives its grant up this much before the database would, for clock-rate differences and the last check."""


def make_owner() -> str:
    """``hostname:pid:random``: which host and process holds a lease, unique even when a pid is reused."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"[:255]


class Lease:
    """One process's claim on the lease ``name``: :meth:`try_hold` once, or :meth:`keep` it in a thread; :meth:`release` at the end."""

    def __init__(self, engine: Engine, name: str, *, duration_s: float | None = None, renew_s: float | None = None,
                 owner: str | None = None) -> None:
        duration_s = LEASE_S if duration_s is None else duration_s  # read at call time: tests shorten them
        renew_s = RENEW_S if renew_s is None else renew_s
        self.guard_s = min(GUARD_S, duration_s / 10)
        if not 0 < renew_s < duration_s - self.guard_s:
            raise ValueError("a lease must be renewed well before it expires")
        self.engine = engine
        self.name = name
        self.duration_s = duration_s
        self.renew_s = renew_s
        self.owner = owner or make_owner()
        self.single_node = is_sqlite(engine)
        self.acquisitions = 0
        """Incremented each time the lease is (re)acquired after not being held: a holder rebuilds its state then."""
        self.cursor: str | None = None
        """The cursor as read at the last acquisition, then as last saved by this holder."""
        self._deadline = 0.0  # monotonic; the lease counts as held before it
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    # -- holding ---------------------------------------------------------------------------

    def held(self) -> bool:
        """True while this process may act for the lease (the fencing rule: False from the local deadline on)."""
        return time.monotonic() < self._deadline

    def remaining(self) -> float:
        """Seconds this process may still act without a renewal (``inf`` on SQLite)."""
        return max(0.0, self._deadline - time.monotonic())

    def try_hold(self) -> bool:
        """Acquire the lease, or renew it if held: one conditional UPDATE. Returns whether it is held now."""
        with self._lock:
            started = time.monotonic()
            was_held = started < self._deadline
            if was_held and self.single_node:
                return True  # nothing to renew: one node, no expiry
            try:
                got, cursor = self._grant()
            except SQLAlchemyError as exc:
                # Not renewed: the local deadline runs out by itself (fencing), a standby keeps trying.
                log.warning("lease %s: could not %s it: %s", self.name, "renew" if was_held else "acquire", exc.__class__.__name__)
                return self.held()
            if not got:
                if was_held:
                    log.warning("lease %s: lost to another process; this one stops acting for it", self.name)
                self._deadline = 0.0
                return False
            self._deadline = math.inf if self.single_node else started + self.duration_s - self.guard_s
            if not was_held:
                self.acquisitions += 1
                self.cursor = cursor
                log.info("lease %s acquired by %s", self.name, self.owner)
            return True

    def _grant(self) -> tuple[bool, str | None]:
        mine = [TaskLease.name == self.name]
        if self.single_node:
            until = None  # always granted, never expires (SQLite: one node)
        else:
            mine.append(or_(TaskLease.owner.is_(None), TaskLease.owner == self.owner, TaskLease.lease_until < func.now()))
            until = func.now() + timedelta(seconds=self.duration_s)
        with write_session(self.engine) as s:
            insert_ignore(s, TaskLease, name=self.name)
            got = s.execute(update(TaskLease).where(*mine)
                            .values(owner=self.owner, lease_until=until, updated_at=datetime.now(UTC))).rowcount == 1
            cursor = s.scalar(select(TaskLease.cursor).where(TaskLease.name == self.name)) if got else None
        return got, cursor

    def keep(self) -> None:
        """Acquire (a standby: keep trying) and renew every ``renew_s``, in a daemon thread, until :meth:`release`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._closed.clear()
        self._thread = threading.Thread(target=self._keep, name=f"lease-{self.name}", daemon=True)
        self._thread.start()

    def _keep(self) -> None:
        while not self._closed.is_set():
            try:
                self.try_hold()
            except Exception:  # noqa: BLE001 - the keeper must outlive surprises; the deadline fences
                log.exception("lease %s: renewal failed", self.name)
            self._closed.wait(self.renew_s)

    # -- progress --------------------------------------------------------------------------

    def save_cursor(self, value: str | int) -> bool:
        """Persist the holder's progress; False (and the lease counts as lost) unless this process still holds the row."""
        value = str(value)
        if not self.held():
            return False
        mine = [TaskLease.name == self.name, TaskLease.owner == self.owner]
        if not self.single_node:
            mine.append(TaskLease.lease_until > func.now())
        try:
            with write_session(self.engine) as s:
                got = s.execute(update(TaskLease).where(*mine).values(cursor=value, updated_at=datetime.now(UTC))).rowcount == 1
        except SQLAlchemyError as exc:
            log.warning("lease %s: could not save the cursor: %s", self.name, exc.__class__.__name__)
            return False
        if got:
            self.cursor = value
        else:
            log.warning("lease %s: taken over by another process; this one stops acting for it", self.name)
            self._deadline = 0.0
        return got

    # -- the end ---------------------------------------------------------------------------

    def release(self) -> None:
        """Stop renewing and free the row (a standby takes over within its next try); the lease expires anyway if this fails."""
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=self.renew_s + 5)
        with self._lock:
            self._deadline = 0.0
            try:
                with write_session(self.engine) as s:
                    s.execute(update(TaskLease).where(TaskLease.name == self.name, TaskLease.owner == self.owner)
                              .values(owner=None, lease_until=None, updated_at=datetime.now(UTC)))
            except SQLAlchemyError:
                log.warning("lease %s: could not release it; it expires by itself", self.name)


# -- status (CLI) ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaseStatus:
    name: str
    holder: str | None
    """The process holding it now (None: free or expired)."""
    lease_until: datetime | None
    cursor: str | None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "holder": self.holder, "lease_until": self.lease_until.isoformat() if self.lease_until else None,
                "cursor": self.cursor}


def lease_status(engine: Engine) -> list[LeaseStatus]:
    """Every task lease and who holds it, judged by the database's clock (one small table; blob writers' heartbeats,
    kept in the same table by :mod:`dicomguard.core.writers`, are not tasks and are left out)."""
    with read_session(engine) as s:
        rows = list(s.scalars(select(TaskLease).where(TaskLease.name.not_like(WRITER_PREFIX + "%")).order_by(TaskLease.name)))
        now = datetime.now(UTC) if is_sqlite(engine) else as_utc(s.scalar(select(func.now())))
    out = []
    for r in rows:
        until = as_utc(r.lease_until) if r.lease_until else None
        live = r.owner is not None and (until is None or until > now)  # no expiry: SQLite
        out.append(LeaseStatus(r.name, r.owner if live else None, until, r.cursor))
    return out
