"""The ingest pipeline, readable top to bottom in :meth:`IngestPipeline.ingest_many`.

parse -> sanitize -> validate -> hash + encrypt (one pass) -> write blob atomically
-> index -> publish ``InstanceStored`` (ledger, audit) in the same transaction.

Guarantees:

* **Nothing half-stored.** A blob is written (temp file, fsync, link) before the
  index transaction that makes it visible; the blob id is journalled first, so
  a crash between the two leaves a blob that recovery deletes. An object is
  reported stored only after its transaction committed.
* **Write-once.** A SOP Instance UID already stored with identical digests is
  an idempotent success (``duplicate``); with different digests it is refused
  (``conflict``) and recorded, and the stored object is untouched.
* **No PHI in clear.** The blob is ciphertext; index rows hold sealed values.
* **Polyglot defence** (CVE-2019-11687): the 128-byte preamble is stored as zeros.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

import pydicom
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from sqlalchemy import Connection, bindparam, delete, select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session

from dicomguard._process import pid_alive
from dicomguard.core.access import Principal
from dicomguard.core.attributes import ObjectAttributes, department_from_header, is_valid_uid, validate_and_extract, year_of
from dicomguard.core.context import ArchiveContext
from dicomguard.core.dicom_structure import PREAMBLE_BYTES, FileStructure, walk_part10
from dicomguard.core.events import ConflictRefused, IdentityConflictRefused, InstanceStored
from dicomguard.core.group_commit import GroupEntry
from dicomguard.core.hashing import DigestPass, ObjectDigests, digest_object
from dicomguard.core.phi import RowSealer
from dicomguard.core.plain_values import plain_text
from dicomguard.core.small_objects import GROUP_OBJECTS, SMALL_OBJECT_BYTES, small_object_work
from dicomguard.core.study_dates import study_date_token
from dicomguard.core.writers import JournalReclaimed, forget_expired, journal_released, live_tokens, token_of, writer_owner
from dicomguard.crypto.blind_index import BlindField
from dicomguard.crypto.blob_cipher import BlobEncryptor, blob_identity
from dicomguard.errors import RejectedObject, RejectReason
from dicomguard.index.db import before_commit, connection_of, insert_ignore, is_sqlite, read_connection, read_session, write_session
from dicomguard.index.direct import DirectStatement
from dicomguard.index.models import Conflict, IngestJournal, Instance, Series, Study

log = logging.getLogger(__name__)

_ZERO_PREAMBLE = bytes(PREAMBLE_BYTES)
_PARALLEL_HASH_BYTES = 4 * 1024 * 1024


@functools.cache
def _hasher() -> ThreadPoolExecutor:
    """The second core's SHA-256 worker for large objects (created on first use, not at import)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="dicomguard-hash")


@functools.cache
def _syncer() -> ThreadPoolExecutor:
    """Threads that make written blobs durable while their batch's index transaction is built (fsync releases the
    interpreter lock); one per association or request in flight, bounded."""
    return ThreadPoolExecutor(max_workers=8, thread_name_prefix="dicomguard-blob-sync")


class IngestStatus(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class IngestResult:
    status: IngestStatus
    sop_instance_uid: str
    series_uid: str
    study_uid: str
    size: int


@dataclass(frozen=True)
class ObjectIdentity:
    """Who an input says it is, as far as its header could be read (each UID well-formed, or ``""``).

    Carried by every outcome, stored or refused, so an adapter answers about an
    object (STOW-RS Referenced/Failed SOP Sequence) without parsing it again.
    """

    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_uid: str = ""
    series_uid: str = ""


@dataclass(frozen=True)
class IngestOutcome:
    """The fate of one input of a batch: ``result`` or ``error``, never both; ``identity`` in either case."""

    label: str
    result: IngestResult | None = None
    error: RejectedObject | None = None
    identity: ObjectIdentity = ObjectIdentity()


class _Refused(Exception):
    """A refusal of :meth:`IngestPipeline._prepare`, with what was known of the object's identity."""

    def __init__(self, error: RejectedObject, identity: ObjectIdentity) -> None:
        super().__init__(str(error))
        self.error = error
        self.identity = identity


@dataclass
class _Prepared:
    label: str
    attrs: ObjectAttributes
    patient_ref: str
    blob_id: str
    size: int
    digests: ObjectDigests
    blob_salt: bytes
    parents: _ParentRows
    """Index rows of the study and series, computed (tokenized, encoded) per object: a value that cannot be indexed
    fails its own object in ``_prepare``, never the batch's transaction."""
    layout: dict[str, int | None]
    """Where the walk found the data set and its Pixel Data (``layout_columns``): indexed, so a verified read hashes without
    walking again. Only the offsets: the batch holds no object's bytes until it is indexed."""


class _ParentRows:
    """The study and series rows an object would create, their identifying attributes sealed only when the rows are
    inserted.

    An object of a series the archive already indexed creates neither row, and sealing costs a fresh random nonce,
    a system call, per row. Everything that can refuse a value (tokens, the JSON documents) is done when the object
    is prepared; what is left for the index transaction is AES-GCM over bytes already made."""

    __slots__ = ("_study", "_series", "_pending")

    def __init__(self, study: dict[str, object], series: dict[str, object], sealer: RowSealer, study_phi: bytes,
                 series_phi: bytes) -> None:
        self._study, self._series = study, series
        self._pending: tuple[RowSealer, bytes, bytes] | None = (sealer, study_phi, series_phi)

    def rows(self) -> tuple[dict[str, object], dict[str, object]]:
        if self._pending is not None:
            sealer, study_phi, series_phi = self._pending
            self._study["phi"] = sealer.seal_document("studies", str(self._study["uid"]), study_phi)
            self._series["phi"] = sealer.seal_document("series", str(self._series["uid"]), series_phi)
            self._pending = None
        return self._study, self._series


Loader = Callable[[], bytes]


@dataclass
class _StagedBatch:
    """Objects of one batch prepared for its index transaction: refused ones with their outcome, the rest prepared."""

    size: int = 0
    blob_ids: list[str] = field(default_factory=list)
    outcomes: dict[int, IngestOutcome] = field(default_factory=dict)
    prepared: list[tuple[int, _Prepared]] = field(default_factory=list)


class IngestPipeline:
    """One ingest run for one principal. ``study_uid``: refuse every object of another study (``STUDY_MISMATCH``)."""

    def __init__(self, ctx: ArchiveContext, source: str, principal: Principal, study_uid: str | None = None,
                 study_labels: frozenset[str] = frozenset()) -> None:
        self.ctx = ctx
        self.source = source[:128]
        self.principal = principal
        self.study_uid = study_uid
        self.study_labels = study_labels
        """Labels of every study this run creates, from its first object on (a share's de-identified copy: ``share-copy``)."""

    # -- the pipeline -----------------------------------------------------------------

    def ingest(self, data: bytes) -> IngestResult:
        """Ingest one Part 10 object; raises :class:`RejectedObject` if refused."""
        (outcome,) = self.ingest_many([("object", lambda: data)])
        if outcome.error is not None:
            raise outcome.error
        assert outcome.result is not None
        return outcome.result

    def ingest_many(self, items: Iterable[tuple[str, Loader]]) -> Iterator[IngestOutcome]:
        """Ingest many objects, one index transaction per batch; outcomes in input order."""
        batch: list[tuple[str, Loader]] = []
        for item in items:
            batch.append(item)
            if len(batch) >= self.ctx.settings.ingest.batch_size:
                yield from self._ingest_batch(batch)
                batch = []
        if batch:
            yield from self._ingest_batch(batch)

    def staged(self) -> StagedIngest:
        """Objects prepared as they arrive and indexed only once their source is complete (:class:`StagedIngest`)."""
        return StagedIngest(self)

    def _ingest_batch(self, batch: list[tuple[str, Loader]]) -> list[IngestOutcome]:
        staged = _StagedBatch()
        try:
            with read_connection(self.ctx.engine) as lookup:
                self._stage(staged, batch, lookup)
        except BaseException:
            self._discard(staged.blob_ids)  # nothing of this batch became visible
            raise
        return self._commit(staged)

    def _stage(self, staged: _StagedBatch, items: list[tuple[str, Loader]], lookup: Connection) -> None:
        """1-6 for ``items``: each object refused with its reason, or prepared (its blob written, not yet durable)."""
        blob_ids = self.ctx.blob_id_pool(writer_owner()).take(len(items))
        staged.blob_ids.extend(blob_ids)  # journalled before any is written: a crash leaves nothing recovery misses
        for (label, load), blob_id in zip(items, blob_ids, strict=True):
            i = staged.size
            staged.size += 1
            try:
                step = self._prepare(label, load, blob_id, lookup)
            except _Refused as refused:
                staged.outcomes[i] = IngestOutcome(label, error=refused.error, identity=refused.identity)
                continue
            if isinstance(step, IngestOutcome):
                staged.outcomes[i] = step
            else:
                staged.prepared.append((i, step))

    def _commit(self, staged: _StagedBatch) -> list[IngestOutcome]:
        """7-8 for a staged batch: its blobs made durable while its index transaction is built, then indexed."""
        durable: Future[None] | None = None
        try:
            if staged.prepared:
                # The blobs are made durable while the index transaction is built; it commits only once they
                # are (``_index_together``): every blob of the batch is on disk before any of it is visible.
                durable = _syncer().submit(self.ctx.store.sync, [p.blob_id for _, p in staged.prepared])
            committed = self.ctx.group_commit("index", _commit_index_group).run(_IndexWork(self, staged.prepared, staged.blob_ids, durable))
        except BaseException as exc:
            # Nothing of this batch became visible: remove its blobs and journal entries (once no sync uses them).
            if durable is not None:
                futures_wait([durable])
            self._discard(staged.blob_ids)
            if isinstance(exc, JournalReclaimed):
                self.ctx.blob_id_pool(writer_owner()).forget()  # the rest of the reserved ids were reclaimed too
            raise
        staged.outcomes.update(committed)
        return [staged.outcomes[i] for i in range(staged.size)]

    def _prepare(self, label: str, load: Loader, blob_id: str, lookup: Connection) -> _Prepared | IngestOutcome:
        identity = ObjectIdentity()
        try:
            data = load()
            # 1-2. parse and sanitize: strict structure walk with limits, then pydicom for values
            structure = walk_part10(data, self.ctx.settings.limits)
            dataset = _parse_header(data)
            identity = identity_of(dataset)
            # 3. validate identity and extract index attributes
            attrs = validate_and_extract(dataset, structure.transfer_syntax)
            if self.study_uid is not None and attrs.study.uid != self.study_uid:
                raise RejectedObject(RejectReason.STUDY_MISMATCH, "instance is not part of the study the request named")
            uid = attrs.instance.sop_instance_uid
            existing = _stored_digests(lookup, uid)
            if existing is not None:
                # Re-send of a stored UID: compare digests only, never touch the stored object.
                resent = self._resolve_resend(uid, attrs, digest_object(data, structure), existing)
                return IngestOutcome(label, result=resent, identity=identity)
            patient_ref, data_key = self.ctx.patients.resolve(attrs.patient, self.source)
            parents = self._parent_rows(attrs, patient_ref, RowSealer(data_key))
        except RejectedObject as exc:
            raise _Refused(exc, identity) from None
        except (ValueError, TypeError, OverflowError, ArithmeticError, LookupError, AttributeError) as exc:
            # Validation is total: a value pydicom or the index cannot take rejects its own object, with a reason.
            # (The message names the error's type only: its text may quote a value.)
            refused = RejectedObject(RejectReason.MALFORMED, f"a header value cannot be indexed ({type(exc).__name__})")
            raise _Refused(refused, identity) from None
        # 4-6. hash pixels and header while encrypting, and write the blob atomically
        encryptor = BlobEncryptor(data_key, blob_identity(uid, attrs.series.uid, attrs.study.uid, patient_ref))
        digest = DigestPass(structure)
        size = self.ctx.store.put(blob_id, _seal_segments(memoryview(data), encryptor, digest), durable=False)
        return _Prepared(label, attrs, patient_ref, blob_id, size, digest.digests(), encryptor.salt, parents,
                         layout_columns(structure))

    def _parent_rows(self, a: ObjectAttributes, patient_ref: str, sealer: RowSealer) -> _ParentRows:
        """The study and series rows this object would create (inserted only if they do not exist yet)."""
        st, se = a.study, a.series
        study = {
            "uid": st.uid,
            "patient_ref": patient_ref,
            "accession_token": self.ctx.indexer.token(BlindField.ACCESSION_NUMBER, st.accession_number),
            "study_year": year_of(st.date),
            "study_date_token": study_date_token(self.ctx.indexer, st.date),
            "phi": None,
            "department": self._department(st.department),
            "site": str(self.principal.attributes.get("site") or "")[:64] or None,
            "referring_token": self.ctx.indexer.token(BlindField.REFERRING_PHYSICIAN, st.referring_physician)
            if st.referring_physician.strip(" ^=\x00") else None,
            "labels": ",".join(sorted(self.study_labels)) or None,
        }
        series = {
            "uid": se.uid,
            "study_uid": st.uid,
            "modality": se.modality or None,
            "series_number": se.number,
            "phi": None,
        }
        return _ParentRows(study, series, sealer, sealer.document(_study_phi(a)),
                           sealer.document({"description": se.description, "date": se.date}))

    def _index_rows(self, s: Session, prepared: list[tuple[int, _Prepared]], blob_ids: list[str],
                    now: datetime) -> tuple[dict[int, IngestOutcome], set[str], dict[str, tuple[str, str]]]:
        """7-8. index the batch and publish its events inside ``s`` (a transaction that may hold other batches too,
        :func:`_commit_index_group`); the outcomes, the blob ids left unused and the series claimed."""
        outcomes: dict[int, IngestOutcome] = {}
        unused = set(blob_ids)
        uids = [p.attrs.instance.sop_instance_uid for _, p in prepared]
        # Stored meanwhile by another writer: decided like a re-send.
        seen: dict[str, ObjectDigests] = {
            uid: ObjectDigests(px, hd) for uid, px, hd in _DIGESTS_OF.all(connection_of(s), {"uids": uids})
        } if uids else {}
        owners: dict[str, tuple[str, str]] = {}
        rows: list[dict[str, object]] = []
        for i, p in prepared:
            a = p.attrs
            uid = a.instance.sop_instance_uid
            prior = seen.get(uid)
            if prior is not None:
                outcomes[i] = self._resend_outcome(s, p.label, a, p.digests, prior, now)
                continue
            conflict = self._claim_parents(s, p, owners, now)
            if conflict is not None:
                outcomes[i] = IngestOutcome(p.label, error=RejectedObject(RejectReason.IDENTITY_CONFLICT, conflict),
                                            identity=_identity(a))
                continue
            rows.append(_instance_row(p, now))
            self.ctx.bus.publish(
                s,
                InstanceStored(
                    uid, a.series.uid, a.study.uid, p.patient_ref, a.instance.sop_class_uid, p.blob_id,
                    p.size, p.digests.pixel_sha256, p.digests.header_sha256, now, self.source, self.principal,
                ),
            )
            seen[uid] = p.digests
            unused.discard(p.blob_id)
            outcomes[i] = IngestOutcome(
                p.label, result=IngestResult(IngestStatus.STORED, uid, a.series.uid, a.study.uid, p.size), identity=_identity(a)
            )
        if rows:
            _INSERT_INSTANCES.execute_many(connection_of(s), rows)
        if not journal_released(s, blob_ids):
            raise JournalReclaimed()  # rolls back: recovery took this writer for dead and removes its blobs
        return outcomes, unused, owners

    def _committed(self, unused: set[str], owners: dict[str, tuple[str, str]]) -> None:
        """After the index transaction committed: drop the blobs it did not use, remember the series it claimed."""
        for blob_id in unused:
            self.ctx.store.delete(blob_id)
        if len(self.ctx.known_series) > 100_000:
            self.ctx.known_series.clear()
        self.ctx.known_series.update(owners)

    # -- steps ------------------------------------------------------------------------

    def _claim_parents(self, s: Session, p: _Prepared, owners: dict[str, tuple[str, str]], now: datetime) -> str | None:
        """Index the object's study and series if new, and check they are the object's own; else why not.

        A Study Instance UID belongs to one patient and a Series Instance UID to one
        study (PS3.3 C.7.2.1, C.7.3.1). Both rows are inserted only if absent and then
        read back inside this transaction, so a concurrent writer that created them
        first is seen; an object whose study belongs to another patient (or series to
        another study) is refused and recorded, and nothing of it is indexed.
        """
        a = p.attrs
        mine = (a.study.uid, p.patient_ref)
        owner = owners.get(a.series.uid) or (mine if self.ctx.known_series.get(a.series.uid) == mine else None)
        if owner is None:
            study_row, series_row = p.parents.rows()
            insert_ignore(s, Study, **study_row, created_at=now)
            study_owner = _STUDY_OWNER.scalar(connection_of(s), {"uid": a.study.uid})
            if study_owner == p.patient_ref:
                insert_ignore(s, Series, **series_row, created_at=now)
                owner = (_SERIES_OWNER.scalar(connection_of(s), {"uid": a.series.uid}) or "", p.patient_ref)
            else:
                owner = ("", study_owner or "")
            owners[a.series.uid] = owner
        if owner == mine:
            return None
        if owner[0] == "":
            conflict = "the study is stored under another patient"
        else:
            conflict = "the series is stored under another study"
        self.ctx.bus.publish(s, IdentityConflictRefused(a.instance.sop_instance_uid, a.study.uid, a.series.uid, owner[1], conflict,
                                                        self.source, now))
        log.warning("identity conflict refused for %s from %s: %s", a.instance.sop_instance_uid, self.source, conflict)
        return conflict

    def _department(self, from_header: str) -> str | None:
        """Who stored it decides first (a device or user of a department), then the header, then the configured default."""
        chosen = str(self.principal.attributes.get("department") or "") or from_header or self.ctx.settings.policy.default_department
        return department_from_header(chosen) or None

    def _resolve_resend(
        self, uid: str, attrs: ObjectAttributes, new: ObjectDigests, existing: tuple[ObjectDigests, bool]
    ) -> IngestResult:
        stored, erased = existing
        if erased:
            raise RejectedObject(RejectReason.PATIENT_ERASED, f"{uid} belonged to an erased patient")
        if stored == new:
            return IngestResult(IngestStatus.DUPLICATE, uid, attrs.series.uid, attrs.study.uid, 0)
        with write_session(self.ctx.engine) as s:
            self._record_conflict(s, uid, new, datetime.now(UTC))
        raise _conflict(uid)

    def _resend_outcome(self, s, label: str, a: ObjectAttributes, new: ObjectDigests, prior: ObjectDigests, now: datetime) -> IngestOutcome:  # type: ignore[no-untyped-def]
        uid = a.instance.sop_instance_uid
        if prior == new:
            return IngestOutcome(label, result=IngestResult(IngestStatus.DUPLICATE, uid, a.series.uid, a.study.uid, 0), identity=_identity(a))
        self._record_conflict(s, uid, new, now)
        return IngestOutcome(label, error=_conflict(uid), identity=_identity(a))

    def _record_conflict(self, s, uid: str, new: ObjectDigests, now: datetime) -> None:  # type: ignore[no-untyped-def]
        s.add(Conflict(sop_instance_uid=uid, pixel_sha256=new.pixel_sha256, header_sha256=new.header_sha256, source=self.source, received_at=now))
        s.flush()
        self.ctx.bus.publish(s, ConflictRefused(uid, new.pixel_sha256, new.header_sha256, self.source, now))
        log.warning("write-once conflict refused for %s from %s", uid, self.source)

    def _discard(self, blob_ids: list[str]) -> None:
        if not blob_ids:
            return
        for blob_id in blob_ids:
            self.ctx.store.delete(blob_id)
        with write_session(self.ctx.engine) as s:
            s.execute(delete(IngestJournal).where(IngestJournal.blob_id.in_(blob_ids)))


class StagedIngest:
    """Objects prepared while their source is still arriving, made visible only once it is known complete (ADR 0021).

    For a request that must arrive whole before anything of it is stored (a STOW-RS body whose multipart
    framing breaks stores nothing): :meth:`add` runs steps 1-6 for one object at once (parsed, checked,
    hashed, encrypted, its blob written under a journalled id, neither durable nor visible), so that work
    overlaps the rest of the transfer. :meth:`commit` then makes the blobs durable and indexes them in
    batches of ``ingest.batch_size``, exactly as :meth:`IngestPipeline.ingest_many` would; :meth:`discard`
    removes every blob written. A crash before either leaves journalled blobs that recovery removes.
    Memory: an object's bytes are released once it is prepared (a prepared object holds its index rows only).
    Not thread-safe: one thread adds, then commits or discards.
    """

    def __init__(self, pipeline: IngestPipeline) -> None:
        self._pipeline = pipeline
        self._batches: list[_StagedBatch] = []

    def add(self, label: str, load: Loader, size: int | None = None) -> None:
        """Prepare one object; a refusal becomes its outcome, an error of the archive (a full disk) is raised.

        ``size``: the object's length where the caller knows it. A small object's preparation is interpreter work
        from parse to blob write, done by one request thread at a time (``core.small_objects``); a large one (or
        one of unknown size) is prepared beside the others, its cryptography on every core."""
        self.add_many([(label, load, size)])

    def add_many(self, items: Sequence[tuple[str, Loader, int | None]]) -> None:
        """Prepare several objects that arrived whole, in order, as :meth:`add` would one by one.

        Objects next to each other are prepared with one lookup connection, at most
        :data:`~dicomguard.core.small_objects.GROUP_OBJECTS` at a time: a body of parts that queued up while the
        interpreter was busy costs one lookup snapshot per group, not per part. Small ones are prepared in one hold of
        ``small_object_work`` (one hand-over of the lock per group); large ones of known size are grouped up to
        :data:`_GROUP_BYTES`, so a group's snapshot lasts as long as a few objects' preparation, never a cine's."""
        engine = self._pipeline.ctx.engine
        start = 0
        while start < len(items):
            first = items[start][2]
            small = _is_small(first)
            end, grouped = start + 1, first or 0
            while first is not None and end < len(items) and end - start < GROUP_OBJECTS:
                size = items[end][2]
                if size is None or _is_small(size) != small or (not small and grouped + size > _GROUP_BYTES):
                    break  # an object of unknown size, of the other kind, or past the group's bytes starts a new group
                grouped += size
                end += 1
            with small_object_work if small else contextlib.nullcontext(), read_connection(engine) as lookup:
                for label, load, _size in items[start:end]:
                    self._pipeline._stage(self._open_batch(), [(label, load)], lookup)
            start = end

    def _open_batch(self) -> _StagedBatch:
        """The batch the next object joins: a new one once the last holds ``ingest.batch_size`` objects."""
        batches = self._batches
        if not batches or batches[-1].size >= self._pipeline.ctx.settings.ingest.batch_size:
            batches.append(_StagedBatch())
        return batches[-1]

    def commit(self) -> list[IngestOutcome]:
        """Every object's outcome, in the order added; if a batch cannot be indexed, the rest are discarded and it raises."""
        outcomes: list[IngestOutcome] = []
        batches, self._batches = self._batches, []
        for k, batch in enumerate(batches):
            try:
                outcomes += self._pipeline._commit(batch)
            except BaseException:
                for rest in batches[k + 1:]:
                    self._pipeline._discard(rest.blob_ids)
                raise
        return outcomes

    def discard(self) -> None:
        """Remove every blob written so far; nothing of it was ever visible."""
        batches, self._batches = self._batches, []
        for batch in batches:
            self._pipeline._discard(batch.blob_ids)


@dataclass(frozen=True)
class _IndexWork:
    """One ingest batch waiting for its index transaction (an entry of the process's group commit)."""

    pipeline: IngestPipeline
    prepared: list[tuple[int, _Prepared]]
    blob_ids: list[str]
    durable: Future[None] | None
    """The batch's blob sync: the transaction commits only once it completed (every blob on disk before visible)."""


def _index_together(works: Sequence[_IndexWork]) -> list[dict[int, IngestOutcome]]:
    """7-8 for several batches (of concurrent ingests, each with its own principal and source) in one transaction,
    committed only once every batch's blobs are durable: last before commit, after the ledger and audit hooks, so
    the syncs overlap them. A failed sync raises there and rolls the transaction back."""
    now = datetime.now(UTC)
    with write_session(works[0].pipeline.ctx.engine) as s:
        parts = [w.pipeline._index_rows(s, w.prepared, w.blob_ids, now) for w in works]
        durable = [w.durable for w in works if w.durable is not None]
        if durable:
            # Registered after every event was published, so it runs after the ledger and audit hooks.
            before_commit(s, "ingest.blobs-durable", lambda _s: [d.result() for d in durable])
    for w, (_, unused, owners) in zip(works, parts, strict=True):
        try:
            w.pipeline._committed(unused, owners)
        except Exception:  # committed: the outcomes stand; an unused blob left behind costs only space
            log.warning("after an index commit: an unused blob could not be removed", exc_info=True)
    return [outcomes for outcomes, _, _ in parts]


def _index_alone(work: _IndexWork) -> dict[int, IngestOutcome]:
    try:
        return _index_together([work])[0]
    except DbIntegrityError:
        # Another writer indexed one of these SOP Instance UIDs between our check and our insert (the same
        # object on two associations at once). Nothing of ours committed: decide again, now seeing theirs, so
        # ours is a duplicate (or a conflict), not a failure.
        return _index_together([work])[0]


def _commit_index_group(group: Sequence[GroupEntry[dict[int, IngestOutcome]]]) -> None:
    """The index transactions of concurrent ingests as one (``core.group_commit``): one durable commit, one ledger
    flush, one audit flush for the group. If it fails, nothing of it committed and each batch is indexed alone, so
    one batch's failure (a conflict, a reclaimed journal, a failed sync) is its own and never another's."""
    if len(group) > 1:
        try:
            for entry, outcomes in zip(group, _index_together([e.work for e in group]), strict=True):
                entry.result, entry.done = outcomes, True
            return
        except Exception:
            log.debug("a group of %d index transactions failed; indexing each alone", len(group), exc_info=True)
    for entry in group:
        try:
            entry.result = _index_alone(entry.work)
        except Exception as exc:
            entry.error = exc
        entry.done = True


def _parse_header(data: bytes) -> pydicom.Dataset:
    try:
        return dcmread(io.BytesIO(data), stop_before_pixels=True)
    except (InvalidDicomError, ValueError, KeyError, EOFError, OverflowError, NotImplementedError) as exc:
        # The exception text may quote element values (PHI): report only its type.
        raise RejectedObject(RejectReason.MALFORMED, f"header does not parse ({type(exc).__name__})") from None


def _seal_segments(data: memoryview, encryptor: BlobEncryptor, digest: DigestPass) -> Iterator[bytes]:
    """One pass: each segment is hashed (header/pixel split) and encrypted; the preamble is zeroed.

    For large objects the SHA-256 of a segment runs on a second core while the
    next one is encrypted (hashlib and OpenSSL release the GIL on large buffers).
    """
    yield encryptor.header
    seg = encryptor.segment_size
    total = len(data)
    pending: Future[None] | None = None
    parallel = total > _PARALLEL_HASH_BYTES
    for offset in range(0, max(total, 1), seg):
        chunk = data[offset : offset + seg]
        if offset == 0:
            first = bytearray(chunk)
            first[:PREAMBLE_BYTES] = _ZERO_PREAMBLE
            chunk = memoryview(first)
        if parallel:
            if pending is not None:
                pending.result()  # segments must reach the hashers in order
            pending = _hasher().submit(digest.update, offset, chunk)
        else:
            digest.update(offset, chunk)
        yield encryptor.encrypt_segment(chunk, last=offset + seg >= total)
    if pending is not None:
        pending.result()


def identity_of(ds: pydicom.Dataset) -> ObjectIdentity:
    """The object's UIDs as far as they are present and well-formed (a malformed one is left out, not echoed)."""

    def uid(keyword: str) -> str:
        plain = plain_text(ds, keyword)
        if plain is not None:
            return plain if is_valid_uid(plain) else ""
        try:
            value = str(ds.get(keyword, "") or "").strip(" \x00")
        except Exception:  # noqa: BLE001 - a malformed value is simply unknown
            return ""
        return value if is_valid_uid(value) else ""

    return ObjectIdentity(uid("SOPClassUID"), uid("SOPInstanceUID"), uid("StudyInstanceUID"), uid("SeriesInstanceUID"))


def _identity(a: ObjectAttributes) -> ObjectIdentity:
    return ObjectIdentity(a.instance.sop_class_uid, a.instance.sop_instance_uid, a.study.uid, a.series.uid)


def _instance_row(p: _Prepared, now: datetime) -> dict[str, object]:
    a = p.attrs.instance
    return {
        "sop_instance_uid": a.sop_instance_uid,
        "series_uid": p.attrs.series.uid,
        "study_uid": p.attrs.study.uid,
        "patient_ref": p.patient_ref,
        "sop_class_uid": a.sop_class_uid,
        "transfer_syntax": a.transfer_syntax,
        "instance_number": a.number,
        "number_of_frames": a.frames,
        "rows": a.rows,
        "columns": a.columns,
        "blob_id": p.blob_id,
        "blob_salt": p.blob_salt,
        "size": p.size,
        "pixel_sha256": p.digests.pixel_sha256,
        "header_sha256": p.digests.header_sha256,
        "stored_at": now,
        "erased": False,
        **p.layout,
    }


def layout_columns(structure: FileStructure) -> dict[str, int | None]:
    """Where the data set and its Pixel Data value lie (``core.dicom_structure.indexed_structure`` reads it back);
    none for a Deflated object, whose ranges are in the inflated stream: its reads inflate and walk it anyway."""
    if structure.deflated:
        return {"dataset_offset": None, "pixel_start": None, "pixel_end": None}
    pixels = structure.pixel_range
    return {"dataset_offset": structure.dataset_offset, "pixel_start": pixels[0] if pixels else None,
            "pixel_end": pixels[1] if pixels else None}


# The statements every stored object runs, compiled once and run on the transaction's DBAPI cursor (ADR 0024):
# SQLAlchemy's per-execution work cost more than the database's own (bench/README.md).
_instances = Instance.__table__
_STORED = DirectStatement(select(_instances.c.pixel_sha256, _instances.c.header_sha256, _instances.c.erased).where(
    _instances.c.sop_instance_uid == bindparam("uid")))
_DIGESTS_OF = DirectStatement(select(_instances.c.sop_instance_uid, _instances.c.pixel_sha256, _instances.c.header_sha256).where(
    _instances.c.sop_instance_uid.in_(bindparam("uids", expanding=True))), expanding="uids")
_INSERT_INSTANCES = DirectStatement(_instances.insert())
_STUDY_OWNER = DirectStatement(select(Study.__table__.c.patient_ref).where(Study.__table__.c.uid == bindparam("uid")))
_SERIES_OWNER = DirectStatement(select(Series.__table__.c.study_uid).where(Series.__table__.c.uid == bindparam("uid")))


_GROUP_BYTES = 16 * 1024 * 1024
"""Large objects of known size prepared under one lookup snapshot (``StagedIngest.add_many``): at most this many bytes."""


def _is_small(size: int | None) -> bool:
    return size is not None and size < SMALL_OBJECT_BYTES


def _stored_digests(lookup: Connection, uid: str) -> tuple[ObjectDigests, bool] | None:
    row = _STORED.first(lookup, {"uid": uid})
    return (ObjectDigests(row[0], row[1]), bool(row[2])) if row is not None else None


def _study_phi(a: ObjectAttributes) -> dict[str, str]:
    st = a.study
    return {
        "date": st.date,
        "time": st.time,
        "accession_number": st.accession_number,
        "study_id": st.study_id,
        "description": st.description,
        "referring_physician": st.referring_physician,
    }


def _conflict(uid: str) -> RejectedObject:
    return RejectedObject(RejectReason.CONFLICT, f"{uid} is already stored with different content (write-once)")


def recover_interrupted_ingests(ctx: ArchiveContext) -> int:
    """Remove blobs journalled by writers that died before their index transaction committed.

    Dead: on PostgreSQL a writer whose heartbeat expired, on any node (:mod:`dicomguard.core.writers`);
    on SQLite, or for journal rows written before heartbeats, a process of this host that no longer
    runs. The journal rows are claimed (deleted, committed) before any blob is removed, so a writer
    wrongly taken for dead cannot index them afterwards (its commit is fenced).
    """
    with read_session(ctx.engine) as s:
        rows = s.execute(select(IngestJournal.blob_id, IngestJournal.owner)).all()
    if not rows:
        return 0
    host = socket.gethostname()
    heartbeats = not is_sqlite(ctx.engine)
    alive = live_tokens(ctx.engine) if heartbeats else set()
    dead = []
    for blob_id, owner in rows:
        token = token_of(owner)
        if heartbeats and token is not None:
            if token not in alive:
                dead.append(blob_id)
            continue
        owner_host, _, pid = (owner.rsplit(":", 1)[0] if token is not None else owner).rpartition(":")
        if owner_host == host and pid.isdigit() and not pid_alive(int(pid)):
            dead.append(blob_id)
    removed = 0
    for start in range(0, len(dead), 500):
        with write_session(ctx.engine) as s:
            claimed = list(s.scalars(delete(IngestJournal).where(IngestJournal.blob_id.in_(dead[start:start + 500]))
                                     .returning(IngestJournal.blob_id)))
        # Committed: no writer can index these ids any more; those already indexed stay.
        with read_session(ctx.engine) as s:
            indexed = set(s.scalars(select(Instance.blob_id).where(Instance.blob_id.in_(claimed))))
        for blob_id in claimed:
            # Most journalled ids were reserved ahead of use and never written: count real blobs only.
            if blob_id not in indexed and ctx.store.exists(blob_id):
                ctx.store.delete(blob_id)
                removed += 1
    if heartbeats:
        forget_expired(ctx.engine)
    return removed
