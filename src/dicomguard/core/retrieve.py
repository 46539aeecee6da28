"""The retrieve path (PS3.4 C.4.2-C.4.3, PS3.18 10.4): load -> decrypt -> verify -> deliver.

Guarantee: bytes are returned only when the blob authenticated under the
object's own identity (AES-GCM) *and* its recomputed pixel and header digests
equal those recorded at ingest. Anything else raises
:class:`dicomguard.errors.IntegrityError`, publishes an ``IntegrityViolation``
(a security alert for the audit trail) and returns nothing.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import select

from dicomguard.config import LimitSettings
from dicomguard.core.context import ArchiveContext
from dicomguard.core.dicom_structure import FileStructure, indexed_structure, walk_part10
from dicomguard.core.events import IntegrityViolation
from dicomguard.core.hashing import digest_object
from dicomguard.core.small_objects import GROUP_OBJECTS, SMALL_OBJECT_BYTES, small_object_work
from dicomguard.crypto.aead import DecryptionError
from dicomguard.crypto.blob_cipher import blob_identity, decrypt_blob
from dicomguard.errors import DicomGuardError, ErasedError, IntegrityError, NotFoundError, RejectedObject
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import Instance
from dicomguard.storage.base import BlobMissingError

log = logging.getLogger(__name__)

# Stored objects passed the configured limits at ingest (a Deflated one its inflated size
# and ratio, so every read inflates at most what ingest accepted); re-checking them on read
# with the widest bounds keeps a later, stricter configuration from hiding data.
READ_LIMITS = LimitSettings(
    max_object_bytes=16384 * 1024 * 1024, max_element_bytes=2**32, max_elements=10**9, max_sequence_depth=64,
    max_inflated_bytes=16384 * 1024 * 1024, max_inflation_ratio=2000,
)


class IntegrityKind:
    BLOB_MISSING = "blob-missing"
    BLOB_UNAUTHENTIC = "blob-unauthentic"
    PIXEL_CHANGED = "pixel-changed"
    HEADER_CHANGED = "header-changed"
    STRUCTURE = "structure-invalid"


@dataclass(frozen=True)
class RetrievedObject:
    sop_instance_uid: str
    series_uid: str
    study_uid: str
    sop_class_uid: str
    transfer_syntax: str
    data: bytes
    structure: FileStructure = field(repr=False, compare=False)
    """The verifying walk's map of ``data``: readers parse its data set (for the Deflated
    transfer syntax, inflated once by that walk, PS3.5 A.5) instead of the file again."""


class IndexedObject(Protocol):
    """What verification needs of an object's index row (an ``Instance`` or a row of :data:`ROW_COLUMNS`)."""

    @property
    def sop_instance_uid(self) -> str: ...
    @property
    def series_uid(self) -> str: ...
    @property
    def study_uid(self) -> str: ...
    @property
    def patient_ref(self) -> str: ...
    @property
    def blob_id(self) -> str: ...
    @property
    def erased(self) -> bool: ...
    @property
    def pixel_sha256(self) -> bytes: ...
    @property
    def header_sha256(self) -> bytes: ...
    @property
    def transfer_syntax(self) -> str: ...
    @property
    def dataset_offset(self) -> int | None: ...
    @property
    def pixel_start(self) -> int | None: ...
    @property
    def pixel_end(self) -> int | None: ...


class _Unverified(Exception):
    """An object that failed verification, before its ``IntegrityViolation`` is published (:func:`_violation`)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def load_verified(ctx: ArchiveContext, row: IndexedObject) -> tuple[bytes, FileStructure]:
    """Decrypt and verify one indexed object; raises :class:`IntegrityError` on any mismatch.

    The digests are recomputed over the layout ingest recorded in the row (``indexed_structure``); a row without one,
    or one that does not fit the object, is walked as at ingest (with the widest limits, :data:`READ_LIMITS`)."""
    try:
        return _verify(ctx, row)
    except _Unverified as exc:
        raise _violation(ctx, row.sop_instance_uid, exc.kind) from None


def _verify(ctx: ArchiveContext, row: IndexedObject) -> tuple[bytes, FileStructure]:
    """:func:`load_verified` without publishing: a mismatch raises :class:`_Unverified` (nothing written here)."""
    uid = row.sop_instance_uid
    if row.erased:
        raise ErasedError(f"{uid} was erased")
    key = ctx.keyring.patient_key(row.patient_ref)
    try:
        blob = ctx.store.read(row.blob_id)
    except BlobMissingError:
        raise _Unverified(IntegrityKind.BLOB_MISSING) from None
    identity = blob_identity(uid, row.series_uid, row.study_uid, row.patient_ref)
    try:
        data = decrypt_blob(key, identity, blob)
    except DecryptionError:
        raise _Unverified(IntegrityKind.BLOB_UNAUTHENTIC) from None
    pixels = (row.pixel_start, row.pixel_end) if row.pixel_start is not None and row.pixel_end is not None else None
    structure = indexed_structure(data, row.transfer_syntax, row.dataset_offset, pixels)
    if structure is None:
        try:
            structure = walk_part10(data, READ_LIMITS)
        except RejectedObject:
            raise _Unverified(IntegrityKind.STRUCTURE) from None
    digests = digest_object(data, structure)
    if digests.pixel_sha256 != row.pixel_sha256:
        raise _Unverified(IntegrityKind.PIXEL_CHANGED)
    if digests.header_sha256 != row.header_sha256:
        raise _Unverified(IntegrityKind.HEADER_CHANGED)
    return data, structure


def retrieve(ctx: ArchiveContext, sop_instance_uid: str) -> RetrievedObject:
    """One verified object; raises :class:`IntegrityError`, :class:`NotFoundError` or :class:`ErasedError`."""
    ((_, outcome),) = retrieve_each(ctx, [sop_instance_uid])
    if isinstance(outcome, DicomGuardError):
        raise outcome
    return outcome


ROW_BATCH = 256
"""Index rows looked up per query: many objects cost a few queries, memory stays bounded (:data:`READ_AHEAD_BYTES`)."""

ROW_COLUMNS = (Instance.sop_instance_uid, Instance.series_uid, Instance.study_uid, Instance.patient_ref, Instance.blob_id,
               Instance.erased, Instance.pixel_sha256, Instance.header_sha256, Instance.sop_class_uid, Instance.transfer_syntax,
               Instance.size, Instance.dataset_offset, Instance.pixel_start, Instance.pixel_end)
"""The columns a retrieval reads: plain rows, not ORM objects (building those cost more than the query)."""

READ_AHEAD_BYTES = 64 * 1024 * 1024
"""Stored bytes of the objects being verified ahead of the one delivered (the next one always is, whatever its size)."""
READ_AHEAD_OBJECTS = 8
"""Objects verified ahead at most: enough to keep every verifying thread busy."""
THREAD_FROM_BYTES = SMALL_OBJECT_BYTES
"""Objects of at least this many stored bytes are verified ahead on the verifying threads, where their reading, AES-GCM
and SHA-256 run beside the delivery; smaller ones from a local disk are verified by the caller when delivered, a
group of :data:`GROUP_OBJECTS` at a time under ``small_object_work`` (``core.small_objects``): handed to a thread,
a 10 KB slice costs twice what it costs in the caller."""

_verifiers: dict[int, ThreadPoolExecutor] = {}
_verifiers_lock = threading.Lock()


def _verifier_pool(threads: int) -> ThreadPoolExecutor:
    """Threads shared by every retrieval from a store with ``threads`` reads in flight (``BlobStore.reads_in_flight``:
    one per core for a disk, more for an object store): reading, AES-GCM and SHA-256 release the interpreter lock, so
    large objects are read and verified on every core while the caller delivers the one before (a network write, a TLS record)."""
    with _verifiers_lock:
        pool = _verifiers.get(threads)
        if pool is None:
            pool = _verifiers[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="verify")
        return pool


Outcome = RetrievedObject | DicomGuardError


def _checked(ctx: ArchiveContext, row: IndexedObject) -> Outcome | _Unverified:
    """One object verified; a failed verification is returned, not yet published."""
    try:
        data, structure = _verify(ctx, row)
    except _Unverified as exc:
        return exc
    except DicomGuardError as exc:
        return exc
    return RetrievedObject(row.sop_instance_uid, row.series_uid, row.study_uid, row.sop_class_uid, row.transfer_syntax,  # type: ignore[attr-defined]
                           data, structure)


def _published(ctx: ArchiveContext, row: IndexedObject, checked: Outcome | _Unverified) -> Outcome:
    return _violation(ctx, row.sop_instance_uid, checked.kind) if isinstance(checked, _Unverified) else checked


def _outcome(ctx: ArchiveContext, row: IndexedObject) -> Outcome:
    return _published(ctx, row, _checked(ctx, row))


def _small_outcomes(ctx: ArchiveContext, rows: list[IndexedObject]) -> list[Outcome]:
    """Small objects verified under ``small_object_work``, which is therefore held over file reads, cryptography and
    index reads only: a failure's alert is written after it is released, so no writer waits on it."""
    with small_object_work:
        checked = [_checked(ctx, row) for row in rows]
    return [_published(ctx, row, c) for row, c in zip(rows, checked, strict=True)]


def retrieve_each(ctx: ArchiveContext, sop_instance_uids: list[str]) -> Iterator[tuple[str, Outcome]]:
    """Each object verified, in order; a failure is yielded in its place (not raised).

    Large objects (:data:`THREAD_FROM_BYTES`) after the one being delivered are read and verified ahead on the
    verifying threads, up to :data:`READ_AHEAD_OBJECTS` objects and :data:`READ_AHEAD_BYTES` stored bytes (the next
    object always); small ones are verified by the caller, :data:`GROUP_OBJECTS` at a time, when their turn comes.
    Memory stays bounded by those plus the objects delivered. Nothing is delivered unverified: each outcome is yielded
    only once its verification finished, in the order asked. Verification ahead that the caller never takes (a client
    gone) is cancelled when the iteration ends.
    """
    pool = _verifier_pool(max(1, ctx.store.reads_in_flight)) if len(sop_instance_uids) > 1 else None
    # Where a read mostly waits on the network (more reads in flight than cores: an object store), every object is
    # worth a thread; where it is CPU work (a disk's page cache), only a large one is.
    small_below = THREAD_FROM_BYTES if ctx.store.reads_in_flight <= (os.cpu_count() or 1) else 0
    ahead: deque[tuple[str, Future[Outcome], int]] = deque()
    queued = 0
    small: list[IndexedObject] = []

    def oldest() -> tuple[str, Outcome]:
        nonlocal queued
        uid, outcome, size = ahead.popleft()
        queued -= size
        return uid, outcome.result()

    def small_ones() -> Iterator[tuple[str, Outcome]]:
        """Everything before the small objects held, then they, verified here."""
        while ahead:
            yield oldest()
        yield from zip([r.sop_instance_uid for r in small], _small_outcomes(ctx, small), strict=True)
        small.clear()

    try:
        for start in range(0, len(sop_instance_uids), ROW_BATCH):
            part = sop_instance_uids[start:start + ROW_BATCH]
            with read_session(ctx.engine) as s:
                rows = {r.sop_instance_uid: r for r in s.execute(select(*ROW_COLUMNS).where(Instance.sop_instance_uid.in_(set(part))))}
            for uid in part:
                row = rows.get(uid)
                if row is not None and row.size < small_below:
                    small.append(row)
                    if len(small) >= GROUP_OBJECTS:
                        yield from small_ones()
                    continue
                if small:
                    yield from small_ones()
                if row is None or pool is None:
                    while ahead:
                        yield oldest()
                    yield uid, NotFoundError(f"no instance {uid}") if row is None else _outcome(ctx, row)
                    continue
                while ahead and (queued + row.size > READ_AHEAD_BYTES or len(ahead) >= READ_AHEAD_OBJECTS):
                    yield oldest()
                ahead.append((uid, pool.submit(_outcome, ctx, row), row.size))
                queued += row.size
        if small:
            yield from small_ones()
        while ahead:
            yield oldest()
    finally:
        for _, outcome, _ in ahead:
            outcome.cancel()


def _violation(ctx: ArchiveContext, uid: str, kind: str) -> IntegrityError:
    log.error("integrity failure (%s) on %s: object refused", kind, uid)
    with write_session(ctx.engine) as s:
        ctx.bus.publish(s, IntegrityViolation(uid, kind, datetime.now(UTC)))
    return IntegrityError(kind, uid)
