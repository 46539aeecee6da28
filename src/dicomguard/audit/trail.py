"""The audit trail: writes the DICOM audit messages the recorder gives it, in the action's own transaction.

Guarantees:

* **No action without its record.** The recorder (``app/recorder.py``) calls
  :meth:`AuditTrail.write` inside the action's transaction and
  :meth:`AuditTrail.flush` just before it commits. If recording fails, the
  action rolls back.
* **Sealed at rest.** The XML message is sealed with AES-256-GCM under a key
  derived (HKDF, own ``info``) from the archive index key, bound to the record
  id; users and patients are searchable only through keyed blind indexes.
  Records survive crypto-shredding (they are not under the patient's key): an
  erased patient's access history is kept, as audit retention requires.
* **Ledgered.** :meth:`AuditTrail.write` returns each record's id and canonical
  SHA-256 (:func:`canonical_hash`, over every stored column and the plaintext
  message); the recorder names them in the ledger leaf of the same action. An
  edited, inserted, reordered or deleted row is found by ``dicomguard verify``.
* **Ordered.** ``seq`` is assigned in :meth:`AuditTrail.flush`, which the
  recorder runs after the ledger appended its leaves under the ledger's lock
  (the head row; SQLite: the write lock), so sequence order is commit order:
  forwarders send records in ``seq`` order and never skip one that commits late.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import os
import secrets
import socket
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii

from sqlalchemy import event as sa_event
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dicomguard.audit.mapping import (
    Draft,
    InstanceInfo,
    MappingContext,
    PatientIdentity,
    Source,
)
from dicomguard.audit.message import to_xml
from dicomguard.core.context import ArchiveContext
from dicomguard.core.keyring import META_ARCHIVE_ID, PURPOSE_INDEX
from dicomguard.core.phi import RowSealer
from dicomguard.crypto.aead import DecryptionError, derive_key, open_sealed, seal
from dicomguard.crypto.blind_index import BlindField, BlindIndexer
from dicomguard.errors import ErasedError
from dicomguard.index.db import connection_of, read_session
from dicomguard.index.direct import DirectStatement
from dicomguard.index.models import (
    ArchiveMeta,
    AuditPatient,
    AuditRecord,
    Instance,
    Patient,
    Study,
)

RECORD_FORMAT = "dicomguard-audit-record/1"
_PENDING = "dicomguard.audit.pending"
_CHUNK = 500
_CACHE = 4096
_INSTANCE_CACHE = 65536

_WROTE = "dicomguard.audit.wrote"


class _Signal:
    """A generation counter that forwarders wait on: bumped after a transaction with audit records commits."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    @property
    def generation(self) -> int:
        return self._generation

    def notify(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self._generation != seen, timeout)
            return self._generation


RECORDS_WRITTEN = _Signal()
"""Wakes this process's forwarders when records commit (other processes' records are found by polling)."""


def _records_committed(session: Session) -> None:
    if session.info.pop(_WROTE, False):
        RECORDS_WRITTEN.notify()


def _listen_for_commits() -> None:
    """Signal the forwarders after every commit that wrote records (installed once, by the first trail built)."""
    if not sa_event.contains(Session, "after_commit", _records_committed):
        sa_event.listen(Session, "after_commit", _records_committed)


def utc(t: datetime) -> datetime:
    """Times come back naive from SQLite; every stored time is UTC."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _iso(t: datetime) -> str:
    return utc(t).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


class AuditKeys:
    """Keys of the audit trail, all HKDF subkeys of the archive index key (RFC 5869)."""

    def __init__(self, index_key: bytes) -> None:
        self._seal = derive_key(index_key, b"dicomguard audit record v1")
        self._user = derive_key(index_key, b"dicomguard audit token v1:user")
        self._dedup = derive_key(index_key, b"dicomguard audit token v1:dedup")
        # Patient IDs are normalized exactly like the index's, but under an unlinkable key.
        self._patients = BlindIndexer(derive_key(index_key, b"dicomguard audit token v1:patient"))

    @classmethod
    def for_archive(cls, ctx: ArchiveContext) -> AuditKeys:
        return cls(ctx.keyring.archive_key(PURPOSE_INDEX))

    def user_token(self, user: str) -> bytes:
        return hmac.new(self._user, user.strip().encode("utf-8", "replace"), hashlib.sha256).digest()[:16]

    def patient_token(self, patient_id: str) -> bytes:
        return self._patients.token(BlindField.PATIENT_ID, patient_id)

    def dedup_token(self, xml: bytes) -> bytes:
        return hmac.new(self._dedup, xml, hashlib.sha256).digest()[:16]

    def seal(self, record_id: str, xml: bytes) -> bytes:
        return seal(self._seal, xml, b"audit_records|" + record_id.encode("ascii"))

    def open(self, record_id: str, body: bytes) -> bytes:
        """Raises :class:`dicomguard.crypto.aead.DecryptionError` if the body was altered or moved."""
        return open_sealed(self._seal, body, b"audit_records|" + record_id.encode("ascii"))


@dataclass(frozen=True)
class RecordFields:
    """Everything a record row holds, in clear (before sealing); the input of :func:`canonical_hash`."""

    id: str
    recorded_at: datetime
    event_time: datetime
    event_id: str
    event_type: str | None
    action: str | None
    outcome: int
    origin: str
    user_token: bytes | None
    dedup_token: bytes | None
    patient_tokens: tuple[bytes, ...]
    xml: bytes


def canonical_hash(f: RecordFields) -> bytes:
    """SHA-256 of the record's canonical JSON: sorted keys, no spaces, ASCII, UTC microsecond times,
    the message as its SHA-256. Written out by hand for speed; equal to ``json.dumps(...,
    sort_keys=True, separators=(",", ":"))`` of the same document (tested)."""
    patients = ",".join(f'"{t}"' for t in sorted(t.hex() for t in f.patient_tokens))
    doc = (
        f'{{"action":{_json(f.action)},"dedup_token":{_json(f.dedup_token.hex() if f.dedup_token else None)},'
        f'"event_id":{_json(f.event_id)},"event_time":"{_iso(f.event_time)}","event_type":{_json(f.event_type)},'
        f'"f":"{RECORD_FORMAT}","id":{_json(f.id)},"origin":{_json(f.origin)},"outcome":{int(f.outcome)},'
        f'"patients":[{patients}],"recorded_at":"{_iso(f.recorded_at)}",'
        f'"user_token":{_json(f.user_token.hex() if f.user_token else None)},"xml_sha256":"{hashlib.sha256(f.xml).hexdigest()}"}}'
    )
    return hashlib.sha256(doc.encode("ascii")).digest()


def canonical_document(f: RecordFields) -> dict[str, object]:
    """The document :func:`canonical_hash` hashes (for third parties and tests)."""
    return {
        "f": RECORD_FORMAT, "id": f.id, "recorded_at": _iso(f.recorded_at), "event_time": _iso(f.event_time),
        "event_id": f.event_id, "event_type": f.event_type, "action": f.action, "outcome": int(f.outcome), "origin": f.origin,
        "user_token": f.user_token.hex() if f.user_token else None, "dedup_token": f.dedup_token.hex() if f.dedup_token else None,
        "patients": sorted(t.hex() for t in f.patient_tokens), "xml_sha256": hashlib.sha256(f.xml).hexdigest(),
    }


def _json(value: str | None) -> str:
    return "null" if value is None else encode_basestring_ascii(value)


class IndexLookups:
    """Resolves surrogate patient references to Patient IDs (decrypting the index row), with a bounded cache.

    A patient erased in the current transaction (crypto-shredding publishes its
    event after destroying the row's key) is read from the last committed state
    through a separate connection, so the Study Deleted message still names them.
    """

    def __init__(self, ctx: ArchiveContext) -> None:
        self.ctx = ctx
        self._cache: OrderedDict[str, PatientIdentity] = OrderedDict()
        self._instances: OrderedDict[str, InstanceInfo] = OrderedDict()
        self._lock = threading.Lock()

    def patient(self, session: Session, ref: str) -> PatientIdentity | None:
        with self._lock:
            hit = self._cache.get(ref)
        if hit is not None:
            return hit
        ident = self._read(session, ref)
        if ident is None:
            with read_session(self.ctx.engine) as committed:
                ident = self._read(committed, ref)
        if ident is not None:
            with self._lock:
                self._cache[ref] = ident
                while len(self._cache) > _CACHE:
                    self._cache.popitem(last=False)
        return ident

    def _read(self, s: Session, ref: str) -> PatientIdentity | None:
        row = s.execute(select(Patient.phi, Patient.wrapped_data_key).where(Patient.ref == ref)).first()
        if row is None or row.phi is None:
            return None
        try:
            key = self.ctx.keyring.patient_key(ref, s)
        except ErasedError:
            return None
        try:
            phi = RowSealer(key).open("patients", ref, row.phi)
        except DecryptionError:
            return None  # a damaged row is verify's business; the message names the surrogate instead
        return PatientIdentity(str(phi.get("id", "")), str(phi.get("issuer", "") or ""))

    def forget(self, ref: str) -> None:
        with self._lock:
            self._cache.pop(ref, None)

    def instances(self, session: Session, uids: Iterable[str]) -> dict[str, InstanceInfo]:
        """Study, patient and SOP class of stored instances (write-once facts: cached)."""
        out: dict[str, InstanceInfo] = {}
        wanted = []
        with self._lock:
            for uid in dict.fromkeys(uids):
                hit = self._instances.get(uid)
                if hit is None:
                    wanted.append(uid)
                else:
                    out[uid] = hit
        for i in range(0, len(wanted), _CHUNK):
            rows = session.execute(
                select(Instance.sop_instance_uid, Instance.study_uid, Instance.patient_ref, Instance.sop_class_uid)
                .where(Instance.sop_instance_uid.in_(wanted[i : i + _CHUNK]))
            )
            out.update({uid: InstanceInfo(study, ref, cls) for uid, study, ref, cls in rows})
        for uid in wanted:
            if uid in out:
                self.remember_instance(uid, out[uid])
        return out

    def remember_instance(self, uid: str, info: InstanceInfo) -> None:
        with self._lock:
            self._instances[uid] = info
            if len(self._instances) > _INSTANCE_CACHE:
                self._instances.popitem(last=False)

    def studies_of(self, session: Session, ref: str) -> list[str]:
        return list(session.scalars(select(Study.uid).where(Study.patient_ref == ref).order_by(Study.uid)))

    def patient_of_study(self, session: Session, study_uid: str) -> str | None:
        return session.scalar(select(Study.patient_ref).where(Study.uid == study_uid))


def _operator_account() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid={os.getuid()}"


def source_for(ctx: ArchiveContext) -> Source:
    with read_session(ctx.engine) as s:
        meta = s.get(ArchiveMeta, META_ARCHIVE_ID)
    st = ctx.settings
    return Source(
        ae_title=st.archive.ae_title,
        source_id=st.audit.source_id or st.archive.ae_title,
        host=socket.gethostname(),
        archive_id=meta.value if meta else "unknown",
        site_id=st.audit.enterprise_site or None,
        operator_account=_operator_account(),
    )


class AuditTrail:
    """The one writer of audit records (called by the recorder of the composition root)."""

    def __init__(self, ctx: ArchiveContext) -> None:
        self.ctx = ctx
        self.keys = AuditKeys.for_archive(ctx)
        self.lookups = IndexLookups(ctx)
        self.mapping = MappingContext(source_for(ctx), self.lookups)
        _listen_for_commits()

    def forget_patients(self, refs: Iterable[str]) -> None:
        """Drop cached Patient IDs of erased patients: no identity of an erased patient stays in memory."""
        for ref in refs:
            self.lookups.forget(ref)

    def write(self, session: Session, draft: Draft) -> tuple[str, bytes]:
        """Queue one record in ``session`` (inserted by :meth:`flush`); returns its id and canonical SHA-256."""
        message = draft.message
        xml = draft.xml if draft.xml is not None else to_xml(message)
        record_id = secrets.token_hex(16)
        now = datetime.now(UTC)
        fields = RecordFields(
            id=record_id,
            recorded_at=now,
            event_time=utc(message.time),
            event_id=message.event_id.code[:64],
            event_type=" ".join(c.code for c in message.event_types)[:128] or None,
            action=message.action[:1] if message.action else None,
            outcome=int(message.outcome),
            origin=draft.origin[:128],
            user_token=self.keys.user_token(draft.user) if draft.user else None,
            dedup_token=self.keys.dedup_token(xml) if draft.dedup else None,
            patient_tokens=tuple(sorted({self.keys.patient_token(p) for p in draft.patients if p})),
            xml=xml,
        )
        session.info.setdefault(_PENDING, []).append((fields, self.keys.seal(record_id, xml)))
        return record_id, canonical_hash(fields)

    @staticmethod
    def flush(session: Session) -> None:
        """Insert the transaction's queued records, ``seq`` continuing the table (just before commit).

        The caller holds the ledger's lock (the recorder flushes the ledger first), so
        concurrent transactions assign ``seq`` in commit order.
        """
        _insert_pending(session)


# Compiled once and run on the transaction's DBAPI cursor (ADR 0024): every audited action inserts.
_LAST_SEQ = DirectStatement(select(func.max(AuditRecord.__table__.c.seq)))
_INSERT_RECORDS = DirectStatement(AuditRecord.__table__.insert())
_INSERT_PATIENTS = DirectStatement(AuditPatient.__table__.insert())


def _insert_pending(session: Session) -> None:
    pending: list[tuple[RecordFields, bytes]] = session.info.pop(_PENDING, [])
    if not pending:
        return
    conn = connection_of(session)
    top = int(_LAST_SEQ.scalar(conn) or 0)
    rows, tokens = [], []
    for i, (f, body) in enumerate(pending, 1):
        seq = top + i
        rows.append({
            "seq": seq, "id": f.id, "recorded_at": f.recorded_at, "event_time": f.event_time, "event_id": f.event_id,
            "event_type": f.event_type, "action": f.action, "outcome": f.outcome, "origin": f.origin,
            "user_token": f.user_token, "dedup_token": f.dedup_token, "body": body,
        })
        tokens += [{"record_seq": seq, "token": t} for t in f.patient_tokens]
    _INSERT_RECORDS.execute_many(conn, rows)
    if tokens:
        _INSERT_PATIENTS.execute_many(conn, tokens)
    session.info[_WROTE] = True
