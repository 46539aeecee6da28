"""Verify-on-read: a tampered object is refused and raises a security event, never served."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from dicomguard.core.events import IntegrityViolation
from dicomguard.core.retrieve import IntegrityKind
from dicomguard.crypto.blob_cipher import BlobEncryptor, blob_identity
from dicomguard.errors import IntegrityError
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import Instance
from tests.dicom_factory import ALICE, BOB, ct_series, dataset_of, to_bytes


@pytest.fixture
def stored(archive):
    uids = [archive.operator.store.ingest(d).sop_instance_uid for d in ct_series(ALICE, n=2)]
    uids.append(archive.operator.store.ingest(ct_series(BOB, n=1, seed=8)[0]).sop_instance_uid)
    events: list = []
    archive.ctx.bus.subscribe(lambda s, e: events.append(e))
    return archive, uids, events


def _row(archive, uid) -> Instance:
    with read_session(archive.ctx.engine) as s:
        return s.get(Instance, uid)


def _blob_path(archive, uid):
    return archive.ctx.store._path(_row(archive, uid).blob_id)


def _assert_refused(archive, uid, kind, events) -> None:
    with pytest.raises(IntegrityError) as exc:
        archive.operator.retrieve.instance(uid)
    assert exc.value.kind == kind and exc.value.uid == uid
    assert any(isinstance(e, IntegrityViolation) and e.sop_instance_uid == uid and e.kind == kind for e in events)


def test_flipped_ciphertext_byte_is_refused(stored) -> None:
    archive, uids, events = stored
    path = _blob_path(archive, uids[0])
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    _assert_refused(archive, uids[0], IntegrityKind.BLOB_UNAUTHENTIC, events)
    assert archive.operator.retrieve.instance(uids[1]).data  # neighbours unaffected


def test_blob_swapped_with_another_objects_blob_is_refused(stored) -> None:
    archive, uids, events = stored
    a, b = _blob_path(archive, uids[0]), _blob_path(archive, uids[1])
    a.write_bytes(b.read_bytes())  # same patient, same key: only the identity binding catches it
    _assert_refused(archive, uids[0], IntegrityKind.BLOB_UNAUTHENTIC, events)


def test_missing_blob_is_refused(stored) -> None:
    archive, uids, events = stored
    _blob_path(archive, uids[2]).unlink()
    _assert_refused(archive, uids[2], IntegrityKind.BLOB_MISSING, events)


def test_truncated_blob_is_refused(stored) -> None:
    archive, uids, events = stored
    path = _blob_path(archive, uids[0])
    path.write_bytes(path.read_bytes()[:-20])
    _assert_refused(archive, uids[0], IntegrityKind.BLOB_UNAUTHENTIC, events)


def _reencrypt(archive, uid, data: bytes) -> None:
    """What an attacker holding the keys does: encrypt modified content properly."""
    row = _row(archive, uid)
    key = archive.ctx.keyring.patient_key(row.patient_ref)
    enc = BlobEncryptor(key, blob_identity(uid, row.series_uid, row.study_uid, row.patient_ref))
    path = archive.ctx.store._path(row.blob_id)
    path.write_bytes(enc.header + enc.encrypt_segment(data, last=True))


def test_pixels_changed_under_the_real_key_are_refused(stored) -> None:
    archive, uids, events = stored
    ds = dataset_of(archive.operator.retrieve.instance(uids[0]).data)
    pixels = bytearray(ds.PixelData)
    pixels[100] ^= 0xFF
    ds.PixelData = bytes(pixels)
    _reencrypt(archive, uids[0], to_bytes(ds))
    _assert_refused(archive, uids[0], IntegrityKind.PIXEL_CHANGED, events)


def test_header_changed_under_the_real_key_is_refused(stored) -> None:
    archive, uids, events = stored
    ds = dataset_of(archive.operator.retrieve.instance(uids[0]).data)
    ds.PatientSex = "M"
    _reencrypt(archive, uids[0], to_bytes(ds))
    _assert_refused(archive, uids[0], IntegrityKind.HEADER_CHANGED, events)


def test_index_digest_altered_is_refused(stored) -> None:
    archive, uids, events = stored
    with write_session(archive.ctx.engine) as s:
        s.execute(update(Instance).where(Instance.sop_instance_uid == uids[1]).values(header_sha256=bytes(32)))
    _assert_refused(archive, uids[1], IntegrityKind.HEADER_CHANGED, events)


# -- verification ahead of delivery -------------------------------------------------------------------------------


@pytest.fixture
def series_of_eight(archive):
    return archive, [archive.operator.store.ingest(d).sop_instance_uid for d in ct_series(ALICE, n=8, seed=3)]


SMALL_AND_LARGE = pytest.mark.parametrize("thread_from", [0, 1 << 40], ids=["on-threads", "by-the-caller"])
"""Every object verified ahead on the threads (as large objects are), or every one by the caller (as small ones are)."""


@SMALL_AND_LARGE
def test_verified_ahead_yet_delivered_in_order_with_a_failure_in_its_place(series_of_eight, monkeypatch, thread_from) -> None:
    """Objects are verified (on several threads ahead of delivery, or by the caller in groups) and delivered in the
    order asked; a tampered one is its error in its place, the objects after it are still delivered."""
    from dicomguard.core import retrieve as r

    archive, uids = series_of_eight
    monkeypatch.setattr(r, "THREAD_FROM_BYTES", thread_from)
    monkeypatch.setattr(r, "GROUP_OBJECTS", 3)
    path = _blob_path(archive, uids[3])
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    asked = [uids[5], "1.2.3.404", *uids[:5], *uids[6:]]
    got = list(r.retrieve_each(archive.ctx, asked))
    assert [uid for uid, _ in got] == asked
    for uid, outcome in got:
        if uid == uids[3]:
            assert isinstance(outcome, IntegrityError) and outcome.kind == IntegrityKind.BLOB_UNAUTHENTIC
        elif uid == "1.2.3.404":
            assert type(outcome).__name__ == "NotFoundError"
        else:
            assert outcome.sop_instance_uid == uid and outcome.data == archive.operator.retrieve.instance(uid).data


def _count_started(monkeypatch, r):  # type: ignore[no-untyped-def]
    """Make each verification slow and list (uid, thread name) as each starts (before any alert is written)."""
    import threading
    import time

    started: list[tuple[str, str]] = []
    lock = threading.Lock()
    real = r._checked

    def slow(ctx, row):  # type: ignore[no-untyped-def]
        with lock:
            started.append((row.sop_instance_uid, threading.current_thread().name))
        time.sleep(0.05)
        return real(ctx, row)

    monkeypatch.setattr(r, "_checked", slow)
    return started, lock


def test_verification_ahead_is_bounded_and_stops_when_delivery_stops(series_of_eight, monkeypatch) -> None:
    """Large objects: at most READ_AHEAD_OBJECTS are verified beyond the one delivered, and what was queued ahead is
    cancelled when the caller stops taking objects (a client gone): memory and work stay bounded."""
    import time

    from dicomguard.core import retrieve as r

    archive, uids = series_of_eight
    monkeypatch.setattr(r, "READ_AHEAD_OBJECTS", 2)
    monkeypatch.setattr(r, "THREAD_FROM_BYTES", 0)  # every object counts as large
    started, lock = _count_started(monkeypatch, r)
    delivered = 0
    each = r.retrieve_each(archive.ctx, uids)
    for _ in each:
        delivered += 1
        with lock:
            assert len(started) <= delivered + 2  # the one delivered and at most two verified ahead
        if delivered == 2:
            break
    each.close()
    time.sleep(0.3)  # anything not cancelled would have started by now
    assert len(started) <= 2 + 2 and {uid for uid, _ in started} < set(uids)
    assert all(name.startswith("verify") for _, name in started)


def test_small_objects_are_verified_by_the_caller_a_group_at_a_time(series_of_eight, monkeypatch) -> None:
    """Small objects from a local disk: verified by the caller's thread, one group of GROUP_OBJECTS when its first
    object's turn comes, nothing beyond it; a caller that stops leaves the rest unverified."""
    import threading

    from dicomguard.core import retrieve as r

    archive, uids = series_of_eight
    monkeypatch.setattr(r, "THREAD_FROM_BYTES", 1 << 40)  # every object counts as small
    monkeypatch.setattr(r, "GROUP_OBJECTS", 3)
    started, lock = _count_started(monkeypatch, r)
    seen = []
    each = r.retrieve_each(archive.ctx, uids)
    for uid, _ in each:
        seen.append(uid)
        with lock:
            assert len(started) == 3 * (1 + (len(seen) - 1) // 3)  # the group of the object delivered, no more
        if len(seen) == 4:
            break
    each.close()
    assert len(started) == 6 and [uid for uid, _ in started] == uids[:6]
    assert {name for _, name in started} == {threading.current_thread().name}


def test_small_objects_of_concurrent_retrievals_are_verified_one_group_at_a_time(series_of_eight, monkeypatch) -> None:
    """Several request threads retrieving small objects at once never verify them at the same time (each group
    holds the process's lock), and each still gets every object of its own, in order."""
    import threading
    import time

    from dicomguard.core import retrieve as r

    archive, uids = series_of_eight
    monkeypatch.setattr(r, "THREAD_FROM_BYTES", 1 << 40)
    monkeypatch.setattr(r, "GROUP_OBJECTS", 2)
    active, most = [0], [0]
    lock = threading.Lock()
    real = r._checked

    def counted(ctx, row):  # type: ignore[no-untyped-def]
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.01)
        try:
            return real(ctx, row)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(r, "_checked", counted)
    results: dict[int, list[str]] = {}

    def retrieve(i: int) -> None:
        asked = uids[i:] + uids[:i]
        results[i] = [uid for uid, outcome in r.retrieve_each(archive.ctx, asked) if outcome.sop_instance_uid == uid]

    threads = [threading.Thread(target=retrieve, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1
    assert results == {i: uids[i:] + uids[:i] for i in range(3)}


def test_an_object_store_verifies_even_small_objects_on_the_threads(series_of_eight, monkeypatch) -> None:
    """Where a read mostly waits on the network (more reads in flight than cores), small objects are read ahead on
    the verifying threads too: one at a time in the caller would wait for every GET in turn."""
    import os

    from dicomguard.core import retrieve as r

    archive, uids = series_of_eight
    monkeypatch.setattr(r, "THREAD_FROM_BYTES", 1 << 40)
    monkeypatch.setattr(archive.ctx.store, "reads_in_flight", (os.cpu_count() or 1) + 1)
    started, _ = _count_started(monkeypatch, r)
    assert [uid for uid, _ in r.retrieve_each(archive.ctx, uids)] == uids
    assert len(started) == 8 and all(name.startswith("verify") for _, name in started)


def _layout(archive, uid) -> tuple:
    row = _row(archive, uid)
    return row.dataset_offset, row.pixel_start, row.pixel_end


def test_a_row_without_its_layout_is_walked_and_served_the_same(stored) -> None:
    """Rows stored before the layout was recorded (or Deflated ones) are walked on read, as every read once was."""
    archive, uids, events = stored
    before = archive.operator.retrieve.instance(uids[0]).data
    offset, start, end = _layout(archive, uids[0])
    assert offset is not None and start is not None and end is not None and start < end  # recorded at ingest
    with write_session(archive.ctx.engine) as s:
        s.execute(update(Instance).where(Instance.sop_instance_uid == uids[0])
                  .values(dataset_offset=None, pixel_start=None, pixel_end=None))
    assert archive.operator.retrieve.instance(uids[0]).data == before
    assert not [e for e in events if isinstance(e, IntegrityViolation)]


def test_a_forged_layout_is_refused_or_walked_never_served_differently(stored) -> None:
    """The layout only says which bytes each digest covers: a range moved in the index makes a digest differ
    (refused, alerted) or does not fit the object (walked again); the bytes served are always the ones stored."""
    archive, uids, events = stored
    original = archive.operator.retrieve.instance(uids[1]).data
    offset, start, end = _layout(archive, uids[1])
    with write_session(archive.ctx.engine) as s:
        s.execute(update(Instance).where(Instance.sop_instance_uid == uids[1]).values(pixel_start=start + 2))
    assert archive.operator.retrieve.instance(uids[1]).data == original  # no Pixel Data tag before it: walked
    with write_session(archive.ctx.engine) as s:
        s.execute(update(Instance).where(Instance.sop_instance_uid == uids[1]).values(pixel_start=start, pixel_end=end - 2))
    _assert_refused(archive, uids[1], IntegrityKind.PIXEL_CHANGED, events)


def test_index_backfill_records_the_layout_of_rows_stored_without_one(series_of_eight) -> None:
    """``index backfill`` reads and verifies each object stored before the layout was recorded (migration 0018) and
    records what ingest would have; a tampered object is refused and alerted as on any read, its row left as it was."""
    archive, uids = series_of_eight
    events: list = []
    archive.ctx.bus.subscribe(lambda s, e: events.append(e))
    recorded = {uid: _layout(archive, uid) for uid in uids}
    served = {uid: archive.operator.retrieve.instance(uid).data for uid in uids}
    with write_session(archive.ctx.engine) as s:
        s.execute(update(Instance).values(dataset_offset=None, pixel_start=None, pixel_end=None))
    path = _blob_path(archive, uids[5])
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))

    done = archive.operator.index_maintenance.backfill(batch=3)  # several batches
    assert (done.instances, done.unreadable) == (len(uids) - 1, 1)
    assert {uid: _layout(archive, uid) for uid in uids} == {**recorded, uids[5]: (None, None, None)}
    assert [(e.sop_instance_uid, e.kind) for e in events if isinstance(e, IntegrityViolation)] == [
        (uids[5], IntegrityKind.BLOB_UNAUTHENTIC)]
    assert all(archive.operator.retrieve.instance(uid).data == served[uid] for uid in uids if uid != uids[5])
    again = archive.operator.index_maintenance.backfill()
    assert (again.instances, again.unreadable) == (0, 1)  # the tampered one is tried again, and refused again


def test_the_alert_of_a_small_object_is_written_after_the_group_lock_is_released(series_of_eight, monkeypatch) -> None:
    """A thread holding ``small_object_work`` never waits for the index writer: a tampered small object's
    IntegrityViolation is published (a write transaction) once the group's lock is released, and is still refused."""
    from dicomguard.core import retrieve as r
    from dicomguard.core.small_objects import small_object_work

    archive, uids = series_of_eight
    monkeypatch.setattr(r, "THREAD_FROM_BYTES", 1 << 40)
    path = _blob_path(archive, uids[2])
    path.write_bytes(path.read_bytes()[:-7])
    held_while_published: list[bool] = []
    archive.ctx.bus.subscribe(lambda s, e: held_while_published.append(small_object_work.locked())
                              if isinstance(e, IntegrityViolation) else None)
    got = dict(r.retrieve_each(archive.ctx, uids))
    assert isinstance(got[uids[2]], IntegrityError) and got[uids[2]].kind == IntegrityKind.BLOB_UNAUTHENTIC
    assert held_while_published == [False]
    assert all(got[u].sop_instance_uid == u for u in uids if u != uids[2])


def test_a_slow_reader_holds_no_lock_while_its_small_objects_are_delivered(series_of_eight, monkeypatch) -> None:
    """A client that reads its answer slowly (or never) cannot keep other requests from their small objects: the
    group's lock is released before its first object is handed out, and stays free while the caller holds them."""
    from dicomguard.core import retrieve as r
    from dicomguard.core.small_objects import small_object_work

    archive, uids = series_of_eight
    monkeypatch.setattr(r, "THREAD_FROM_BYTES", 1 << 40)
    monkeypatch.setattr(r, "GROUP_OBJECTS", 3)
    each = r.retrieve_each(archive.ctx, uids)
    for uid, outcome in each:
        assert outcome.sop_instance_uid == uid
        assert not small_object_work.locked()
    each.close()
