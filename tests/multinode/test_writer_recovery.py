"""Orphan blobs of dead writers, with several nodes on one PostgreSQL database (core/writers.py).

Recovery decides "dead" by the writer's heartbeat, not by its host name: two nodes with the same
host name (containers) must not remove each other's in-flight blobs, and a node that never comes
back must not leave its orphans forever. A writer wrongly taken for dead is fenced: its index
transaction refuses to commit, so no index row ever names a removed blob.
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from dicomguard.app.archive import Archive
from dicomguard.app.leases import lease_status
from dicomguard.core import writers
from dicomguard.core.ingest import recover_interrupted_ingests
from dicomguard.core.writers import JournalReclaimed
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import IngestJournal, Instance, TaskLease
from tests.dicom_factory import FakePatient, ct_series

pytestmark = pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)

ALICE = FakePatient("WR-001", "WRITER^ALICE", "19700101", "ACCW1")


def _journal_blob(archive: Archive, owner: str, heartbeat: timedelta | None, namespace: str = "elsewhere") -> str:
    """A blob written and journalled by ``owner``, not indexed; its heartbeat expires after ``heartbeat`` (None: no row)."""
    blob_id = secrets.token_hex(16)
    archive.ctx.store.put(blob_id, iter([b"ciphertext of an interrupted ingest"]))
    with write_session(archive.ctx.engine) as s:
        s.add(IngestJournal(blob_id=blob_id, owner=owner, created_at=datetime.now(UTC)))
        token = writers.token_of(owner)
        if heartbeat is not None and token is not None:
            s.add(TaskLease(name=writers.PREFIX + token, owner=f"4242@{namespace}",
                            lease_until=datetime.now(UTC) + heartbeat))
    return blob_id


def test_a_live_writer_of_another_node_with_the_same_host_name_keeps_its_blobs(archive: Archive) -> None:
    """Same host name, a pid that does not run here, a fresh heartbeat: alive (the old host-and-pid rule removed it)."""
    host = socket.gethostname()
    other_node = _journal_blob(archive, f"{host}:999999:{secrets.token_hex(8)}", timedelta(seconds=60))
    dead_node = _journal_blob(archive, f"{host}:999998:{secrets.token_hex(8)}", timedelta(seconds=-5))
    lost_host = _journal_blob(archive, f"gone.example:77:{secrets.token_hex(8)}", None)
    legacy_here = _journal_blob(archive, f"{host}:999997", None)  # written before heartbeats: the pid rule applies

    assert recover_interrupted_ingests(archive.ctx) == 3
    assert archive.ctx.store.exists(other_node)
    for blob_id in (dead_node, lost_host, legacy_here):
        assert not archive.ctx.store.exists(blob_id)
    with read_session(archive.ctx.engine) as s:
        assert set(s.scalars(select(IngestJournal.blob_id))) >= {other_node}
        assert not {dead_node, lost_host, legacy_here} & set(s.scalars(select(IngestJournal.blob_id)))


def test_a_dead_process_of_this_namespace_is_recovered_without_waiting_for_its_heartbeat(archive: Archive) -> None:
    owner = f"{socket.gethostname()}:999996:{secrets.token_hex(8)}"
    blob_id = _journal_blob(archive, owner, timedelta(seconds=60), namespace=writers.process_namespace())
    assert recover_interrupted_ingests(archive.ctx) == 1
    assert not archive.ctx.store.exists(blob_id)


def test_this_process_keeps_a_heartbeat_and_its_reserved_ids(archive: Archive) -> None:
    """Storing once journals ids ahead and announces this writer; recovery on another node leaves them alone."""
    archive.operator.store.ingest(ct_series(ALICE, n=1, seed=1)[0])
    owner = writers.writer_owner()
    with read_session(archive.ctx.engine) as s:
        reserved = list(s.scalars(select(IngestJournal.blob_id).where(IngestJournal.owner == owner)))
        row = s.get(TaskLease, writers.PREFIX + str(writers.token_of(owner)))
    assert reserved and row is not None and row.owner == f"{os.getpid()}@{writers.process_namespace()}"
    assert not [x for x in lease_status(archive.ctx.engine) if x.name.startswith(writers.PREFIX)]  # not a task
    recover_interrupted_ingests(archive.ctx)
    with read_session(archive.ctx.engine) as s:
        assert set(reserved) <= set(s.scalars(select(IngestJournal.blob_id)))


def test_a_writer_taken_for_dead_stores_nothing_and_indexes_no_removed_blob(archive: Archive) -> None:
    """The fence: recovery claims a paused writer's ids; the writer's next index transaction refuses, nothing is half-stored."""
    first, second = ct_series(ALICE, n=2, seed=2)
    archive.operator.store.ingest(first)  # journals a chunk of ids ahead and the heartbeat
    owner = writers.writer_owner()
    with write_session(archive.ctx.engine) as s:  # as if this process had been paused for minutes: expired
        s.execute(update(TaskLease).where(TaskLease.name == writers.PREFIX + str(writers.token_of(owner)))
                  .values(lease_until=datetime.now(UTC) - timedelta(minutes=5), owner="1@another-namespace"))
    recover_interrupted_ingests(archive.ctx)  # another node's recovery claims every reserved id
    with pytest.raises(JournalReclaimed):
        archive.operator.store.ingest(second)
    with read_session(archive.ctx.engine) as s:
        indexed = list(s.scalars(select(Instance.blob_id)))
    assert len(indexed) == 1 and all(archive.ctx.store.exists(b) for b in indexed)
    archive.operator.store.ingest(second)  # sent again: fresh ids, a fresh heartbeat
    with read_session(archive.ctx.engine) as s:
        indexed = list(s.scalars(select(Instance.blob_id)))
        row = s.get(TaskLease, writers.PREFIX + str(writers.token_of(owner)))
    assert len(indexed) == 2 and all(archive.ctx.store.exists(b) for b in indexed)
    assert row is not None and row.owner == f"{os.getpid()}@{writers.process_namespace()}"
    assert archive.operator.verify.run().ok
