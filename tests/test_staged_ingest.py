"""A staged ingest (``StoreService.staged``, ADR 0021) writes objects as they arrive and shows them only on commit.

What a STOW-RS body relies on: its parts are prepared while the rest of it arrives, yet a body that
breaks stores nothing and leaves no blob, and a committed one is stored exactly as ``ingest_many``
would store it (batches, write-once, one outcome per part in order, a refused part alone).
"""

from __future__ import annotations

from sqlalchemy import select

from dicomguard.core.events import InstanceStored
from dicomguard.core.ingest import IngestStatus
from dicomguard.core.query import IndexQuery
from dicomguard.errors import RejectReason
from dicomguard.index.db import read_session
from dicomguard.index.models import IngestJournal
from tests.dicom_factory import ALICE, ct_series, dataset_of


def _blobs(archive) -> set[str]:  # type: ignore[no-untyped-def]
    return set(archive.ctx.store.iter_ids())


def _stored(archive) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(i.sop_instance_uid for i in IndexQuery(archive.ctx).instances())


def test_objects_are_written_as_they_come_and_visible_only_on_commit(archive, events) -> None:  # type: ignore[no-untyped-def]
    objects = ct_series(ALICE, n=2)
    before = _blobs(archive)
    staged = archive.operator.store.staged(source="test")
    for i, data in enumerate(objects):
        staged.add(str(i), lambda data=data: data)
    staged.add("2", lambda: b"not a DICOM object" * 20)
    assert len(_blobs(archive) - before) == 2  # written while the rest was still to come
    assert _stored(archive) == [] and not [e for e in events if isinstance(e, InstanceStored)]

    outcomes = staged.commit()
    assert [o.label for o in outcomes] == ["0", "1", "2"]
    assert [o.result.status for o in outcomes[:2] if o.result] == [IngestStatus.STORED] * 2
    assert outcomes[2].error is not None and outcomes[2].error.reason is RejectReason.NOT_DICOM
    assert _stored(archive) == sorted(dataset_of(d).SOPInstanceUID for d in objects)
    assert len([e for e in events if isinstance(e, InstanceStored)]) == 2
    assert archive.operator.verify.run().ok


def test_a_discarded_staging_leaves_no_blob_and_no_journal_entry(archive) -> None:  # type: ignore[no-untyped-def]
    before = _blobs(archive)
    staged = archive.operator.store.staged(source="test")
    for i, data in enumerate(ct_series(ALICE, n=3)):
        staged.add(str(i), lambda data=data: data)
    written = _blobs(archive) - before
    assert len(written) == 3
    staged.discard()
    assert _blobs(archive) == before and _stored(archive) == []
    with read_session(archive.ctx.engine) as s:
        journalled = set(s.scalars(select(IngestJournal.blob_id)))
    assert not journalled & written  # recovery has nothing left to find either
    assert staged.commit() == []  # a discarded staging commits nothing


def test_staged_objects_commit_in_batches_and_a_resent_uid_is_a_duplicate(archive) -> None:  # type: ignore[no-untyped-def]
    ingest = archive.settings.ingest.model_copy(update={"batch_size": 2})
    archive.ctx.settings = archive.settings.model_copy(update={"ingest": ingest})
    objects = ct_series(ALICE, n=4)
    staged = archive.operator.store.staged(source="test")
    for i, data in enumerate([*objects, objects[0]]):  # five objects, three batches; the last one is sent twice
        staged.add(str(i), lambda data=data: data)
    outcomes = staged.commit()
    statuses = [o.result.status if o.result else None for o in outcomes]
    assert statuses == [IngestStatus.STORED] * 4 + [IngestStatus.DUPLICATE]
    assert _stored(archive) == sorted(dataset_of(d).SOPInstanceUID for d in objects)


def _concurrent_adds(archive, monkeypatch, size: int | None, wait) -> list[int]:  # type: ignore[no-untyped-def]
    """Two request threads staging one object each at once, ``wait`` run inside each preparation; returns the most
    preparations seen running at once."""
    import threading

    from dicomguard.core.ingest import IngestPipeline

    active, most = [0], [0]
    lock = threading.Lock()
    real = IngestPipeline._prepare

    def watched(self, *args):  # type: ignore[no-untyped-def]
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        try:
            wait()
            return real(self, *args)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(IngestPipeline, "_prepare", watched)
    objects = ct_series(ALICE, n=2, seed=11)
    stagings = [archive.operator.store.staged(source="test") for _ in objects]
    threads = [threading.Thread(target=st.add, args=(str(i), lambda d=d: d, size)) for i, (st, d) in enumerate(zip(stagings, objects))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [o.result.status for st in stagings for o in st.commit() if o.result] == [IngestStatus.STORED] * 2
    return most


def test_small_objects_of_concurrent_requests_are_prepared_one_at_a_time(archive, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A small object's preparation is interpreter work: two requests staging small objects take turns
    (``core.small_objects``), and both are stored."""
    import time

    assert _concurrent_adds(archive, monkeypatch, 10_000, lambda: time.sleep(0.1)) == [1]


def test_large_objects_or_unknown_sizes_are_prepared_side_by_side(archive, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Large objects (and objects whose size the caller does not give) are prepared at the same time: each waits
    inside its preparation for the other to arrive, which two turns one after the other never would."""
    import threading

    from dicomguard.core.small_objects import SMALL_OBJECT_BYTES

    for size in (SMALL_OBJECT_BYTES, None):
        both = threading.Barrier(2, timeout=10)
        assert _concurrent_adds(archive, monkeypatch, size, both.wait) == [2]
        monkeypatch.undo()


def test_small_objects_that_queued_are_prepared_in_bounded_groups_and_large_ones_outside_the_lock(archive, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``add_many``: a run of small objects is prepared in one hold of the lock with one lookup connection, at most
    ``GROUP_OBJECTS`` at a time; large objects between them are prepared without the lock, with one lookup
    connection for a run of known size up to ``_GROUP_BYTES``, and alone when their size is unknown. Each is
    stored, in order, in batches of ``ingest.batch_size`` as one ``add`` after another would store it."""
    from dicomguard.core import ingest as ingest_module
    from dicomguard.core.small_objects import SMALL_OBJECT_BYTES, small_object_work

    ingest = archive.settings.ingest.model_copy(update={"batch_size": 3})
    archive.ctx.settings = archive.settings.model_copy(update={"ingest": ingest})
    monkeypatch.setattr(ingest_module, "GROUP_OBJECTS", 3)
    monkeypatch.setattr(ingest_module, "_GROUP_BYTES", 2 * SMALL_OBJECT_BYTES)
    sessions, held = [], []
    real_session, real_prepare = ingest_module.read_connection, ingest_module.IngestPipeline._prepare

    def counted_session(engine):  # type: ignore[no-untyped-def]
        sessions.append(engine)
        return real_session(engine)

    def watched(self, label, *args):  # type: ignore[no-untyped-def]
        held.append((label, small_object_work.locked(), len(sessions)))
        return real_prepare(self, label, *args)

    monkeypatch.setattr(ingest_module, "read_connection", counted_session)
    monkeypatch.setattr(ingest_module.IngestPipeline, "_prepare", watched)
    objects = ct_series(ALICE, n=9, seed=13)
    large = SMALL_OBJECT_BYTES
    sizes = [100, 100, 100, 100, large, large, large, None, 100]
    staged = archive.operator.store.staged(source="test")
    staged.add_many([(str(i), lambda d=d: d, size) for i, (d, size) in enumerate(zip(objects, sizes, strict=True))])
    assert held == [("0", True, 1), ("1", True, 1), ("2", True, 1), ("3", True, 2),  # small: 3 per hold, then 1
                    ("4", False, 3), ("5", False, 3), ("6", False, 4),  # large: 2 per snapshot (the byte bound)
                    ("7", False, 5), ("8", True, 6)]  # unknown size: alone
    outcomes = staged.commit()
    assert [o.label for o in outcomes] == [str(i) for i in range(9)]
    assert [o.result.status for o in outcomes if o.result] == [IngestStatus.STORED] * 9
    assert _stored(archive) == sorted(dataset_of(d).SOPInstanceUID for d in objects)
