"""Bad input gets a clear error and stores nothing; what is stored is never lost.

One table of named hostile or broken inputs, one runner (the shape of
python-tuf's named invalid inputs).
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Callable

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from sqlalchemy import func, select

from dicomguard.app.archive import Archive
from dicomguard.core.ingest import IngestStatus
from dicomguard.errors import RejectedObject, RejectReason
from dicomguard.index.db import read_session
from dicomguard.index.models import Conflict, IngestJournal, Instance, Patient
from tests.conftest import PASSPHRASE
from tests.dicom_factory import ALICE, ct_series, dataset_of, to_bytes


def _ct() -> bytes:
    return ct_series(ALICE, n=1, seed=11)[0]


def _without(keyword: str) -> bytes:
    ds = dataset_of(_ct())
    delattr(ds, keyword)
    return to_bytes(ds)


def _with(**values: str) -> bytes:
    ds = dataset_of(_ct())
    for k, v in values.items():
        setattr(ds, k, v)
    return to_bytes(ds)


def _meta_mismatch() -> bytes:
    """File meta names another instance than the data set (raw edit: pydicom would fix it up)."""
    data = _ct()
    uid = dataset_of(data).SOPInstanceUID.encode()
    at = data.index(uid)  # first occurrence: Media Storage SOP Instance UID in the file meta
    other = uid[:-1] + (b"1" if uid[-1:] != b"1" else b"2")
    return data[:at] + other + data[at + len(uid) :]


def _hostile_length() -> bytes:
    """A header element claims 4 GB: must be refused, not read past the end."""
    data = bytearray(_ct())
    at = data.index(b"\x10\x00\x20\x00LO")  # (0010,0020) Patient ID, explicit VR, 2-byte length
    data[at + 6 : at + 8] = struct.pack("<H", 0xFFF0)
    return bytes(data)


def _undefined_length_on_text() -> bytes:
    data = bytearray(_ct())
    at = data.index(b"\x08\x00\x30\x10LO")  # (0008,1030) Study Description
    # rewrite it as UT with undefined length: not allowed outside SQ/UN/pixel data
    data[at + 4 : at + 8] = b"UT\x00\x00"
    data[at + 8 : at + 8] = struct.pack("<I", 0xFFFFFFFF)
    return bytes(data)


def _big_private_element() -> bytes:
    ds = dataset_of(_ct())
    ds.add_new(0x00091010, "OB", b"\x00" * (2 * 1024 * 1024))
    ds.add_new(0x00090010, "LO", "ACME")
    return to_bytes(ds)


def _many_elements() -> bytes:
    ds = dataset_of(_ct())
    ds.add_new(0x00090010, "LO", "ACME")
    for i in range(300):
        ds.add_new(0x00091000 | (0x10 + i % 0xEF) | ((i // 0xEF) << 8), "LO", f"v{i}")
    return to_bytes(ds)


def _deep_sequences(depth: int = 20) -> bytes:
    ds = dataset_of(_ct())
    inner = Dataset()
    inner.CodeValue = "X"
    for _ in range(depth):
        outer = Dataset()
        outer.ContentSequence = Sequence([inner])
        inner = outer
    ds.ContentSequence = inner.ContentSequence
    return to_bytes(ds)


def _deflate_bomb() -> bytes:
    """Deflated transfer syntax whose data set inflates far beyond the object limit."""
    ds = dataset_of(_ct())
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    head = to_bytes(ds)
    # (0002,0000) group length, explicit VR UL at offset 132: its value ends the meta
    meta_end = 144 + struct.unpack_from("<I", head, 140)[0]
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = comp.compress(b"\x00" * (64 * 1024 * 1024)) + comp.flush()
    return head[:meta_end] + bomb


def _deflated(pixels: bytes) -> bytes:
    """A CT whose data set is Deflated (PS3.5 A.5) by pydicom, with ``pixels`` as its Pixel Data."""
    ds = dataset_of(_ct())
    ds.Rows, ds.Columns = 1024, len(pixels) // 2048
    ds.PixelData = pixels
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    return to_bytes(ds)


def _noisy(n: int) -> bytes:
    """``n`` bytes that deflate about 3:1 (under any ratio limit)."""
    return bytes(b & 0x0F for b in random.Random(5).randbytes(n))


def _truncated(fraction: float) -> Callable[[], bytes]:
    return lambda: (lambda d: d[: int(len(d) * fraction)])(_ct())


CASES: dict[str, tuple[Callable[[], bytes], RejectReason, dict[str, str]]] = {
    "empty file": (lambda: b"", RejectReason.NOT_DICOM, {}),
    "text file": (lambda: b"patient list\n" * 50, RejectReason.NOT_DICOM, {}),
    "png image": (lambda: b"\x89PNG\r\n\x1a\n" + bytes(400), RejectReason.NOT_DICOM, {}),
    "truncated in file meta": (lambda: _ct()[:150], RejectReason.TRUNCATED, {}),
    "truncated in header": (lambda: _ct()[:600], RejectReason.TRUNCATED, {}),
    "truncated in pixel data (50%)": (_truncated(0.5), RejectReason.TRUNCATED, {}),
    "truncated by one byte": (lambda: _ct()[:-1], RejectReason.TRUNCATED, {}),
    "missing SOP Class UID": (lambda: _without("SOPClassUID"), RejectReason.MISSING_UID, {}),
    "missing SOP Instance UID": (lambda: _without("SOPInstanceUID"), RejectReason.MISSING_UID, {}),
    "missing Study Instance UID": (lambda: _without("StudyInstanceUID"), RejectReason.MISSING_UID, {}),
    "missing Series Instance UID": (lambda: _without("SeriesInstanceUID"), RejectReason.MISSING_UID, {}),
    "UID with leading zero": (lambda: _with(StudyInstanceUID="1.2.03.4"), RejectReason.INVALID_UID, {}),
    "UID with letters": (lambda: _with(SeriesInstanceUID="1.2.abc"), RejectReason.INVALID_UID, {}),
    "UID over 64 chars": (lambda: _with(StudyInstanceUID="1." + "2" * 70), RejectReason.INVALID_UID, {}),
    "file meta names another instance": (_meta_mismatch, RejectReason.META_MISMATCH, {}),
    "element length past the end": (_hostile_length, RejectReason.TRUNCATED, {}),
    "undefined length on a text element": (_undefined_length_on_text, RejectReason.MALFORMED, {}),
    "oversized element": (_big_private_element, RejectReason.ELEMENT_TOO_LARGE, {"DICOMGUARD_LIMITS__MAX_ELEMENT_BYTES": str(1024 * 1024)}),
    "too many elements": (_many_elements, RejectReason.TOO_MANY_ELEMENTS, {"DICOMGUARD_LIMITS__MAX_ELEMENTS": "200"}),
    "sequences nested too deep": (_deep_sequences, RejectReason.TOO_DEEP, {}),
    "object over the size limit": (_ct, RejectReason.TOO_LARGE, {"DICOMGUARD_LIMITS__MAX_OBJECT_BYTES": "4096"}),
    "deflate bomb": (_deflate_bomb, RejectReason.TOO_LARGE, {"DICOMGUARD_LIMITS__MAX_OBJECT_BYTES": str(8 * 1024 * 1024)}),
    "deflate bomb under every size limit (ratio)": (lambda: _deflated(bytes(16 * 1024 * 1024)), RejectReason.TOO_LARGE, {}),
    "inflated data set over its limit": (
        lambda: _deflated(_noisy(4 * 1024 * 1024)), RejectReason.TOO_LARGE, {"DICOMGUARD_LIMITS__MAX_INFLATED_BYTES": str(2 * 1024 * 1024)}
    ),
}


def _state(archive: Archive) -> tuple[int, int, int, int]:
    with read_session(archive.ctx.engine) as s:
        instances = s.scalar(select(func.count()).select_from(Instance))
        patients = s.scalar(select(func.count()).select_from(Patient))
        journalled = list(s.scalars(select(IngestJournal.blob_id)))
    # Journalled ids are reserved ahead; what matters is that none of them left a blob behind.
    journal = sum(1 for b in journalled if archive.ctx.store.exists(b))
    blobs = len(list(archive.ctx.store.iter_ids()))
    return instances, patients, journal, blobs


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_with_a_clear_reason_and_stores_nothing(name, home, monkeypatch) -> None:
    build, reason, env = CASES[name]
    with Archive.open(home, PASSPHRASE) as archive:
        kept = archive.operator.store.ingest(ct_series(ALICE, n=1, seed=99)[0])  # already stored: must survive
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with Archive.open(home, PASSPHRASE) as archive:
        before = _state(archive)
        data = build()
        with pytest.raises(RejectedObject) as exc:
            archive.operator.store.ingest(data)
        assert exc.value.reason is reason, str(exc.value)
        assert exc.value.detail  # a message a person can act on
        instances, patients, journal, blobs = _state(archive)
        assert (instances, journal, blobs) == (before[0], 0, before[3])
        assert archive.operator.retrieve.instance(kept.sop_instance_uid).data


@pytest.mark.parametrize(
    "preamble",
    [
        pytest.param(b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + b"\x02\x00\x3e\x00", id="ELF"),
        pytest.param(b"MZ\x90\x00\x03" + b"\x00" * 55 + b"\x80\x00\x00\x00" + b"PE\x00\x00", id="PE"),
    ],
)
def test_polyglot_preamble_is_sanitized_and_object_stored(archive, preamble) -> None:
    """CVE-2019-11687: an executable hidden in the preamble is neutralised, the image is kept."""
    ds = dataset_of(_ct())
    data = to_bytes(ds, preamble=preamble)
    assert data[:4] in (b"\x7fELF", b"MZ\x90\x00")
    result = archive.operator.store.ingest(data)
    assert result.status is IngestStatus.STORED
    back = archive.operator.retrieve.instance(result.sop_instance_uid).data
    assert back[:128] == bytes(128)
    assert back[128:] == data[128:]


def test_conflicting_resend_is_refused_recorded_and_original_kept(archive) -> None:
    data = _ct()
    first = archive.operator.store.ingest(data)
    ds = dataset_of(data)
    ds.PixelData = bytes(len(ds.PixelData))  # same UID, different pixels
    with pytest.raises(RejectedObject) as exc:
        archive.operator.store.ingest(to_bytes(ds))
    assert exc.value.reason is RejectReason.CONFLICT
    ds2 = dataset_of(data)
    ds2.StudyDescription = "ALTERED"  # same UID, different header
    with pytest.raises(RejectedObject):
        archive.operator.store.ingest(to_bytes(ds2))
    assert archive.operator.retrieve.instance(first.sop_instance_uid).data[128:] == data[128:]
    with read_session(archive.ctx.engine) as s:
        conflicts = list(s.scalars(select(Conflict)))
    assert [c.sop_instance_uid for c in conflicts] == [first.sop_instance_uid] * 2
    assert _state(archive)[3] == 1  # no extra blob left behind


def test_conflict_inside_one_batch(archive) -> None:
    data = _ct()
    ds = dataset_of(data)
    ds.PixelData = bytes(len(ds.PixelData))
    outcomes = list(archive.operator.store.ingest_many([("a", lambda: data), ("b", lambda: to_bytes(ds)), ("c", lambda: data)]))
    assert outcomes[0].result.status is IngestStatus.STORED
    assert outcomes[1].error.reason is RejectReason.CONFLICT
    assert outcomes[2].result.status is IngestStatus.DUPLICATE
    assert _state(archive)[0] == 1 and _state(archive)[3] == 1


def test_disk_full_while_writing_a_blob_stores_nothing(archive, monkeypatch) -> None:
    """ENOSPC mid-write: clear error, no partial blob, no index row, earlier objects intact."""
    import errno
    import os

    kept = archive.operator.store.ingest(ct_series(ALICE, n=1, seed=5)[0])
    real_write, real_writev = os.write, os.writev

    def full(fd, data):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    monkeypatch.setattr(os, "writev", full)  # a small blob's header and body go out in one writev
    from dicomguard.storage.base import BlobStoreError

    with pytest.raises(BlobStoreError, match="No space left"):
        archive.operator.store.ingest(_ct())
    monkeypatch.setattr(os, "write", real_write)
    monkeypatch.setattr(os, "writev", real_writev)
    instances, _, journal, blobs = _state(archive)
    assert (instances, journal, blobs) == (1, 0, 1)
    assert not [p for p in archive.ctx.store.root.rglob(".tmp-*")]
    assert archive.operator.retrieve.instance(kept.sop_instance_uid).data


def test_an_object_is_indexed_only_once_its_blob_is_durable(archive, monkeypatch) -> None:
    """The blob sync runs beside the index transaction, which commits only after it: while the sync has not
    returned, neither the object nor its ledger entry is visible to any reader."""
    import threading
    import time

    from dicomguard.index.models import LedgerLeaf

    store = archive.ctx.store
    real_sync = store.sync
    seen_during_sync: list[tuple[int, int]] = []
    threads: list[str] = []

    def slow_sync(blob_ids):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread().name)
        real_sync(blob_ids)
        time.sleep(0.3)  # the index transaction has long been built by now: it must wait
        with read_session(archive.ctx.engine) as s:
            seen_during_sync.append((s.scalar(select(func.count()).select_from(Instance)) or 0,
                                     s.scalar(select(func.count()).select_from(LedgerLeaf).where(LedgerLeaf.kind == "instance")) or 0))

    monkeypatch.setattr(store, "sync", slow_sync)
    stored = archive.operator.store.ingest(_ct())
    assert seen_during_sync == [(0, 0)]
    assert threads and threads[0].startswith("dicomguard-blob-sync")  # it did run beside the transaction
    assert _state(archive)[0] == 1 and archive.operator.retrieve.instance(stored.sop_instance_uid).data


def test_a_failed_blob_sync_indexes_nothing_and_removes_the_blob(archive, monkeypatch) -> None:
    """fsync failing (EIO: the disk lost the write) after the transaction was built: it rolls back, the blob and its
    journal entry are removed, the error reaches the caller, and the next object is stored."""
    import errno

    kept = archive.operator.store.ingest(ct_series(ALICE, n=1, seed=5)[0])
    real_sync = archive.ctx.store.sync

    def failing(blob_ids):  # type: ignore[no-untyped-def]
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(archive.ctx.store, "sync", failing)
    with pytest.raises(OSError, match="Input/output error"):
        archive.operator.store.ingest(_ct())
    instances, _, journal, blobs = _state(archive)
    assert (instances, journal, blobs) == (1, 0, 1)
    with read_session(archive.ctx.engine) as s:
        from dicomguard.index.models import LedgerLeaf
        assert s.scalar(select(func.count()).select_from(LedgerLeaf).where(LedgerLeaf.kind == "instance")) == 1
    monkeypatch.setattr(archive.ctx.store, "sync", real_sync)
    assert archive.operator.store.ingest(_ct()).sop_instance_uid and _state(archive)[0] == 2
    assert archive.operator.retrieve.instance(kept.sop_instance_uid).data
