"""Which blob writers are alive: the owners of ``ingest_journal`` rows, for recovery on any node.

An ingest journals its blob ids before it writes the blobs and removes them in the index
transaction that makes the objects visible; ids still journalled by a writer that died are
orphans, which recovery removes. Deciding "died" by host name and process id only works on
one host (two containers with the same host name would remove each other's in-flight blobs,
and a host that never returns leaves its orphans forever). So on PostgreSQL every writer
process keeps a heartbeat row, ``writer:<token>`` in ``task_lease``, created in the same
transaction as its first journal rows and renewed every :data:`RENEW_S` by a daemon thread,
with the expiry set by the database's clock (:data:`TTL_S`). A writer is dead for recovery
when its row is missing or expired, whatever its host; or at once when its row names this
process namespace (the kernel's boot id and the pid namespace, so two containers with one host
name are told apart) and its process no longer runs. SQLite is one host by construction: there
the host-and-pid check stays. ``serve`` runs recovery every minute, so the orphans of a node
that never returns are removed by the others once its heartbeat expired.

Fencing: recovery first *claims* a dead writer's ids (deletes the journal rows and commits),
then removes the blobs; the writer's own index transaction deletes its journal rows and
refuses to commit when fewer rows than it journalled are left (:func:`journal_released`). A
writer wrongly presumed dead (paused longer than :data:`TTL_S`) therefore stores nothing of
that batch: it never indexes a blob that recovery removed. (Gray and Cheriton, "Leases", SOSP
1989: the holder of an expired lease must not act, and here the store enforces it.)
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from datetime import UTC, datetime, timedelta
from typing import Final

from sqlalchemy import Engine, bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from dicomguard.errors import DicomGuardError
from dicomguard.index.db import connection_of, insert_ignore, is_sqlite, write_session
from dicomguard.index.direct import DirectStatement
from dicomguard.index.models import IngestJournal, TaskLease

log = logging.getLogger(__name__)

PREFIX: Final = "writer:"
RENEW_S: Final = 10.0
"""How often a writer renews its heartbeat."""
TTL_S: Final = 60.0
"""A writer whose heartbeat is older than this (by the database's clock) is dead for recovery."""

_owners: dict[int, str] = {}


class JournalReclaimed(DicomGuardError):
    """This writer was taken for dead by recovery: nothing of the batch was stored (the sender sends again)."""

    def __init__(self) -> None:
        super().__init__("the archive took this writer for dead (no heartbeat) and reclaimed its blobs: nothing of "
                         "the batch was stored; send it again")


def writer_owner() -> str:
    """``hostname:pid:token`` of this process as a journal owner; a fork gets its own token.

    Made once per process (the host's name as it started): it is asked for every object stored, and one owner
    string per process is what recovery expects, even if the host is renamed while the archive serves."""
    pid = os.getpid()
    owner = _owners.get(pid)
    if owner is None:
        owner = _owners.setdefault(pid, f"{socket.gethostname()}:{pid}:{secrets.token_hex(8)}"[-128:])
    return owner


def process_namespace() -> str:
    """Boot id and pid namespace of this process ("" where /proc does not tell): where a pid means one process."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


def token_of(owner: str) -> str | None:
    """The heartbeat token of an owner, ``None`` for an owner written before heartbeats (``hostname:pid``)."""
    parts = owner.rsplit(":", 2)
    return parts[2] if len(parts) == 3 and parts[1].isdigit() and len(parts[2]) == 16 else None


class Heartbeat:
    """This process's liveness row as a blob writer (PostgreSQL only; a no-op on SQLite)."""

    def __init__(self, engine: Engine, owner: str) -> None:
        self._engine = engine
        self._owner = owner
        self._token = token_of(owner)
        self._enabled = self._token is not None and not is_sqlite(engine)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def announce(self, s: Session) -> None:
        """In the transaction that journals ids: the row exists (and is fresh) before any of them is visible."""
        if not self._enabled:
            return
        insert_ignore(s, TaskLease, name=PREFIX + str(self._token))
        s.execute(self._renewal())
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._renew_forever, name="writer-heartbeat", daemon=True)
                self._thread.start()

    def _renewal(self):  # type: ignore[no-untyped-def]
        # The row's owner is "pid@namespace": recovery in the same namespace need not wait for the expiry.
        holder = f"{os.getpid()}@{process_namespace()}"[:255]
        return (update(TaskLease).where(TaskLease.name == PREFIX + str(self._token))
                .values(owner=holder, lease_until=func.now() + timedelta(seconds=TTL_S), updated_at=datetime.now(UTC)))

    def stop(self) -> None:
        """End the renewals (the archive closes): ids still journalled are recovered once the row expires."""
        self._stopped.set()

    def _renew_forever(self) -> None:
        pid = os.getpid()
        while os.getpid() == pid and not self._stopped.wait(RENEW_S):  # a forked child has its own heartbeat
            try:
                with write_session(self._engine) as s:
                    s.execute(self._renewal())
            except Exception as exc:  # noqa: BLE001 - retried; a writer that stays cut off is fenced at commit
                log.warning("blob writer heartbeat not renewed: %s", type(exc).__name__)


def live_tokens(engine: Engine) -> set[str]:
    """Tokens of writers alive: heartbeat not expired (by the database's clock), and, for writers of this process
    namespace, their process still running."""
    from dicomguard._process import pid_alive
    from dicomguard.index.db import read_session

    here = process_namespace()
    with read_session(engine) as s:
        rows = s.execute(select(TaskLease.name, TaskLease.owner)
                         .where(TaskLease.name.like(PREFIX + "%"), TaskLease.lease_until > func.now())).all()
    alive = set()
    for name, holder in rows:
        pid, _, namespace = (holder or "").partition("@")
        if here and namespace == here and pid.isdigit() and not pid_alive(int(pid)):
            continue  # died here: no need to wait for its heartbeat to expire
        alive.add(name[len(PREFIX):])
    return alive


def forget_expired(engine: Engine) -> None:
    """Remove heartbeat rows expired for a while (their writers' journal rows were claimed by then)."""
    with write_session(engine) as s:
        s.execute(delete(TaskLease).where(TaskLease.name.like(PREFIX + "%"),
                                          TaskLease.lease_until < func.now() - timedelta(seconds=TTL_S)))


_RELEASE = DirectStatement(IngestJournal.__table__.delete().where(IngestJournal.__table__.c.blob_id.in_(bindparam("ids", expanding=True))),
                           expanding="ids")
"""Compiled once, run on the DBAPI cursor (ADR 0024): every ingest transaction releases its journal rows."""


def journal_released(s: Session, blob_ids: list[str]) -> bool:
    """Delete the journal rows of ``blob_ids`` in the index transaction; False if recovery claimed any (the fence)."""
    if not blob_ids:
        return True
    return _RELEASE.execute(connection_of(s), {"ids": blob_ids}) == len(blob_ids)
