"""What every core service needs, built once by the composition root (``app/archive.py``)."""

from __future__ import annotations

import secrets
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from dicomguard.config import Settings
from dicomguard.core.access import Authorizer
from dicomguard.core.events import EventBus
from dicomguard.core.group_commit import GroupCommit, GroupEntry
from dicomguard.core.keyring import Keyring
from dicomguard.core.patients import PatientDirectory
from dicomguard.crypto.blind_index import BlindIndexer
from dicomguard.storage.base import BlobStore


class BlobIdPool:
    """Blob ids journalled ahead of use, so that a single-object ingest costs no extra commit.

    Ids are recorded in ``ingest_journal`` (with this process as owner) in
    chunks; an id leaves the journal in the index transaction that uses it.
    Ids still journalled when the process dies are cleaned up by recovery.
    """

    CHUNK = 256
    """Ids journalled per reservation: one durable commit per CHUNK objects ingested (recovery removes what a dead
    writer left reserved, so a larger chunk costs only rows)."""

    def __init__(self, engine: Engine, owner: str) -> None:
        from dicomguard.core.writers import Heartbeat

        self._engine = engine
        self._owner = owner
        self._heartbeat = Heartbeat(engine, owner)
        self._ids: deque[str] = deque()
        self._lock = threading.Lock()

    def take(self, n: int) -> list[str]:
        from sqlalchemy import insert

        from dicomguard.index.db import write_session
        from dicomguard.index.models import IngestJournal

        with self._lock:
            if len(self._ids) < n:
                count = max(n - len(self._ids), self.CHUNK)
                random = secrets.token_bytes(16 * count).hex()  # 128 random bits per id, as token_hex(16) gives
                fresh = [random[i:i + 32] for i in range(0, 32 * count, 32)]
                now = datetime.now(UTC)
                with write_session(self._engine) as s:
                    self._heartbeat.announce(s)  # alive before any of these ids can be seen by recovery
                    s.execute(insert(IngestJournal), [{"blob_id": b, "owner": self._owner, "created_at": now} for b in fresh])
                self._ids.extend(fresh)
            return [self._ids.popleft() for _ in range(n)]

    def close(self) -> None:
        """The archive closes: ids reserved and never used leave the journal, and the heartbeat stops."""
        from sqlalchemy import delete

        from dicomguard.index.db import write_session
        from dicomguard.index.models import IngestJournal

        with self._lock:
            unused, self._ids = list(self._ids), deque()
        if unused:
            try:
                with write_session(self._engine) as s:
                    s.execute(delete(IngestJournal).where(IngestJournal.blob_id.in_(unused)))
            except Exception:  # noqa: BLE001 - closing anyway; recovery removes them after the heartbeat expires
                pass
        self._heartbeat.stop()

    def forget(self) -> None:
        """Drop the ids reserved ahead (recovery reclaimed them: this writer was taken for dead); fresh ones follow."""
        with self._lock:
            self._ids.clear()


_CONTEXT_LOCK = threading.Lock()


@dataclass
class ArchiveContext:
    home: Path
    settings: Settings
    engine: Engine
    store: BlobStore
    keyring: Keyring
    indexer: BlindIndexer
    patients: PatientDirectory
    bus: EventBus
    authorizer: Authorizer
    known_series: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    """Series already indexed by this process, with their (study UID, patient reference): skips the owner check per object."""
    suffix_tokens_complete: bool = field(default=False, repr=False)
    """Seen set once every patient row carries suffix indexes (``core.wildcard_tokens``); it never becomes unset."""
    _blob_ids: BlobIdPool | None = field(default=None, init=False, repr=False)
    _group_commits: dict[str, GroupCommit[Any]] = field(default_factory=dict, init=False, repr=False)

    def close_writers(self) -> None:
        if self._blob_ids is not None:
            self._blob_ids.close()

    def group_commit(self, name: str, commit: Callable[[Sequence[GroupEntry[Any]]], None]) -> GroupCommit[Any]:
        """This process's group commit called ``name`` (``core.group_commit``), made with ``commit`` on first use:
        concurrent transactions of one kind (ingests' index rows, events recorded alone) share one durable commit."""
        with _CONTEXT_LOCK:
            group = self._group_commits.get(name)
            if group is None:
                group = self._group_commits[name] = GroupCommit(commit)
            return group

    def blob_id_pool(self, owner: str) -> BlobIdPool:
        if self._blob_ids is None:
            self._blob_ids = BlobIdPool(self.engine, owner)
        return self._blob_ids
