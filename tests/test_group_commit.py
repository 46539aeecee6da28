"""Concurrent ingests share index transactions (group commit, ``core.group_commit``) and lose nothing by it.

A group is made deterministic here by holding its leader inside its transaction until
the other threads have queued: they then form the next group, all in one transaction.
Each object keeps its own principal, source, ledger leaf and audit record; one batch's
failure in a group is its own (the group is rolled back and each batch indexed alone).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import delete, func, select

from dicomguard.core import ingest
from dicomguard.core.access import Principal, PrincipalKind
from dicomguard.core.events import InstanceStored
from dicomguard.core.group_commit import GroupCommit
from dicomguard.core.writers import JournalReclaimed
from dicomguard.index.db import read_session
from dicomguard.index.models import IngestJournal, Instance
from tests.dicom_factory import DEPARTMENT, FakePatient, ct_series

DEVICE = Principal(PrincipalKind.DEVICE, "CT1", attributes={"operations": "store", "department": DEPARTMENT})
TECH = Principal(PrincipalKind.USER, "tech", frozenset({"technologist"}), attributes={"department": DEPARTMENT, "modalities": "CT"})


# -- the queue alone -----------------------------------------------------------------------


def _held_run(queue: GroupCommit[int], n: int, release: threading.Event) -> dict[int, int]:
    """``queue.run(0..n-1)`` from ``n`` threads: the first leads alone and holds its group (its commit waits for
    ``release``) until the other ``n - 1`` have queued; each thread's result by its work."""
    results: dict[int, int] = {}
    threads = [threading.Thread(target=lambda k=k: results.__setitem__(k, queue.run(k))) for k in range(n)]
    threads[0].start()
    _until(lambda: queue._leading)
    for t in threads[1:]:
        t.start()
    _until(lambda: len(queue._queue) == n - 1)
    release.set()
    for t in threads:
        t.join(10)
    return results


def test_each_thread_gets_its_own_outcome_and_concurrent_entries_share_groups() -> None:
    groups: list[int] = []
    release = threading.Event()

    def commit(group):  # type: ignore[no-untyped-def]
        groups.append(len(group))
        if len(groups) == 1:
            release.wait(10)
        for e in group:
            e.result, e.done = e.work * 10, True

    queue: GroupCommit[int] = GroupCommit(commit)
    results = _held_run(queue, 9, release)
    assert results == {n: n * 10 for n in range(9)}
    assert groups == [1, 8]  # the leader alone, then everyone who queued meanwhile in one group


def test_a_failing_group_fails_each_of_its_entries_and_the_next_group_runs() -> None:
    calls = 0

    def commit(group):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk gone")
        for e in group:
            e.result, e.done = "ok", True

    queue: GroupCommit[str] = GroupCommit(commit)
    with pytest.raises(OSError):
        queue.run(1)
    assert queue.run(2) == "ok"


def test_a_group_is_at_most_the_limit() -> None:
    sizes: list[int] = []
    hold = threading.Event()

    def commit(group):  # type: ignore[no-untyped-def]
        sizes.append(len(group))
        if len(sizes) == 1:
            hold.wait(10)
        for e in group:
            e.result, e.done = 0, True

    queue: GroupCommit[int] = GroupCommit(commit, limit=3)
    _held_run(queue, 8, hold)
    assert sizes[0] == 1 and max(sizes) <= 3 and sum(sizes) == 8


# -- ingests -------------------------------------------------------------------------------


def _until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _held_groups(monkeypatch, archive, waiting: int) -> list[int]:  # type: ignore[no-untyped-def]
    """Group sizes; the first group is held inside its transaction until ``waiting`` more batches have queued."""
    sizes: list[int] = []
    real = ingest._index_together

    def together(works):  # type: ignore[no-untyped-def]
        sizes.append(len(works))
        if len(sizes) == 1:
            _until(lambda: "index" in archive.ctx._group_commits and len(archive.ctx._group_commits["index"]._queue) >= waiting)
        return real(works)

    monkeypatch.setattr(ingest, "_index_together", together)
    return sizes


def _store_from_threads(archive, objects: list[tuple[Principal, bytes]]) -> dict[int, object]:  # type: ignore[no-untyped-def]
    outcomes: dict[int, object] = {}

    def one(n: int, principal: Principal, data: bytes) -> None:
        try:
            outcomes[n] = archive.services(principal).store.ingest(data, source=f"source-{n}")
        except Exception as exc:
            outcomes[n] = exc

    threads = [threading.Thread(target=one, args=(n, p, d)) for n, (p, d) in enumerate(objects)]
    threads[0].start()
    _until(lambda: "index" in archive.ctx._group_commits and archive.ctx._group_commits["index"]._leading)
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(60)
    return outcomes


def test_concurrent_stores_commit_together_each_with_its_own_record(archive, events, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    slices = ct_series(FakePatient("GC001", "GROUP^COMMIT", "19700101", "ACCGC1"), n=7, seed=3)
    sizes = _held_groups(monkeypatch, archive, waiting=6)
    objects = [(DEVICE if n % 2 else TECH, data) for n, data in enumerate(slices)]
    outcomes = _store_from_threads(archive, objects)
    assert all(not isinstance(o, Exception) for o in outcomes.values()), outcomes
    assert sizes == [1, 6]
    stored = [e for e in events if isinstance(e, InstanceStored)]
    assert sorted(e.source for e in stored) == sorted(f"source-{n}" for n in range(7))
    by_source = {e.source: e.principal.name for e in stored}
    assert all(by_source[f"source-{n}"] == (DEVICE if n % 2 else TECH).name for n in range(7))
    with read_session(archive.ctx.engine) as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 7
        blobs = list(s.scalars(select(Instance.blob_id)))
        assert s.scalar(select(func.count()).select_from(IngestJournal).where(IngestJournal.blob_id.in_(blobs))) == 0
    report = archive.operator.verify.run()
    assert report.ok, report.problems
    for o in outcomes.values():
        assert archive.operator.retrieve.instance(o.sop_instance_uid).data  # type: ignore[attr-defined]


def test_one_failing_batch_in_a_group_fails_alone(archive, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Recovery reclaimed one writer's journal (it was taken for dead): that batch is refused, and so would be the
    whole group's transaction; the others are then indexed alone and stored."""
    slices = ct_series(FakePatient("GC002", "GROUP^FAIL", "19700101", "ACCGC2"), n=5, seed=4)
    sizes = _held_groups(monkeypatch, archive, waiting=4)
    real_rows = ingest.IngestPipeline._index_rows
    doomed = slices[3]

    def rows(self, s, prepared, blob_ids, now):  # type: ignore[no-untyped-def]
        if any(p.attrs.instance.sop_instance_uid == _uid(doomed) for _, p in prepared):
            s.execute(delete(IngestJournal).where(IngestJournal.blob_id.in_(blob_ids)))
        return real_rows(self, s, prepared, blob_ids, now)

    monkeypatch.setattr(ingest.IngestPipeline, "_index_rows", rows)
    outcomes = _store_from_threads(archive, [(DEVICE, d) for d in slices])
    assert isinstance(outcomes[3], JournalReclaimed)
    assert all(not isinstance(outcomes[n], Exception) for n in (0, 1, 2, 4)), outcomes
    assert sizes[:2] == [1, 4]
    with read_session(archive.ctx.engine) as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 4
    report = archive.operator.verify.run()
    assert report.ok, report.problems


def _uid(data: bytes) -> str:
    from tests.dicom_factory import dataset_of

    return str(dataset_of(data).SOPInstanceUID)


# -- events recorded alone (queries, accesses) ---------------------------------------------


def _record_from_threads(archive, events_to_record: list, first_held: Callable[[], None]) -> dict[int, object]:  # type: ignore[no-untyped-def]
    """``record_alone`` of each event from its own thread; the first thread's transaction is held inside the bus
    (``first_held``) until the others have queued. Returns None or the exception per thread."""
    outcomes: dict[int, object] = {}
    held = threading.Event()

    def hold(s, e) -> None:  # type: ignore[no-untyped-def]
        if e is events_to_record[0] and not held.is_set():
            held.set()
            first_held()

    archive.ctx.bus.subscribe(hold)

    def one(n: int, event) -> None:  # type: ignore[no-untyped-def]
        try:
            archive.operator.query.record_alone(event)
            outcomes[n] = None
        except Exception as exc:
            outcomes[n] = exc

    threads = [threading.Thread(target=one, args=(n, e)) for n, e in enumerate(events_to_record)]
    threads[0].start()
    _until(held.is_set)
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(60)
    return outcomes


def _query_records(archive) -> list:  # type: ignore[no-untyped-def,type-arg]
    from dicomguard.audit.store import AuditFilter

    return archive.operator.audit.search(AuditFilter(user=TECH.name, event="110112"))


def _queries(n: int) -> list:  # type: ignore[type-arg]
    from datetime import UTC, datetime

    from dicomguard.core.events import QueryPerformed

    return [QueryPerformed(TECH, "STUDY", (("PatientID", f"GROUP-{k}"),), k, datetime.now(UTC)) for k in range(n)]


def test_concurrent_records_share_a_transaction_and_each_is_recorded(archive) -> None:  # type: ignore[no-untyped-def]
    """Queries recorded by concurrent threads while another's record commits are committed together, each with its
    own audit record and ledger leaf, before any of their callers returns."""
    sessions: dict[int, object] = {}  # the sessions themselves: kept alive, no two can share an id
    queued = _queries(6)
    archive.ctx.bus.subscribe(lambda s, e: sessions.__setitem__(queued.index(e), s) if e in queued else None)
    def first_held() -> None:
        _until(lambda: "records" in archive.ctx._group_commits and len(archive.ctx._group_commits["records"]._queue) >= 5)

    outcomes = _record_from_threads(archive, queued, first_held)
    assert outcomes == {n: None for n in range(6)}
    assert sorted(sessions) == list(range(6))
    assert len({id(sessions[n]) for n in range(1, 6)}) == 1 and sessions[0] is not sessions[1]  # one group of 5 after the first
    assert len(_query_records(archive)) == 6
    report = archive.operator.verify.run()
    assert report.ok, report.problems


def test_a_record_that_cannot_be_written_fails_only_its_own_caller(archive) -> None:  # type: ignore[no-untyped-def]
    """One event of a group whose recording fails makes the group's transaction fail: the others are then recorded
    alone and their callers return; only the failing one's caller gets the error."""
    queued = _queries(4)
    doomed = queued[2]

    def refuse(s, e) -> None:  # type: ignore[no-untyped-def]
        if e is doomed:
            raise RuntimeError("this event cannot be recorded")

    archive.ctx.bus.subscribe(refuse)

    def first_held() -> None:
        _until(lambda: "records" in archive.ctx._group_commits and len(archive.ctx._group_commits["records"]._queue) >= 3)

    outcomes = _record_from_threads(archive, queued, first_held)
    assert isinstance(outcomes[2], RuntimeError)
    assert [outcomes[n] for n in (0, 1, 3)] == [None, None, None]
    assert len(_query_records(archive)) == 3  # the group's failed transaction left nothing; each other one alone
    report = archive.operator.verify.run()
    assert report.ok, report.problems
