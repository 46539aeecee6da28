"""Canonical leaf encodings of the ledger. No leaf carries PHI.

A leaf is compact, key-sorted, ASCII JSON (so a third party can read and re-hash
it with any tool). Its Merkle leaf hash is ``SHA-256(0x00 || leaf bytes)``
(RFC 9162 2.1.1).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from dicomguard.core.events import (
    AccessRefused,
    ApplicationActivity,
    AuditLogUsed,
    AuditRecorded,
    BreakGlassStarted,
    ConflictRefused,
    Event,
    InstancesAccessed,
    InstanceStored,
    IntegrityViolation,
    KeysRotated,
    PatientErased,
    QueryPerformed,
    SecurityConfigurationChanged,
    UserAuthentication,
)

LEAF_FORMAT = "dicomguard-leaf/1"
KIND_INSTANCE = "instance"
KIND_EVENT = "event"
KIND_AUDIT = "audit"


def encode(doc: dict[str, Any]) -> bytes:
    return json.dumps({"f": LEAF_FORMAT, **doc}, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def decode(data: bytes) -> dict[str, Any]:
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("f") != LEAF_FORMAT:
        raise ValueError("not a dicomguard leaf")
    return doc


def _time(t: datetime) -> str:
    return t.isoformat(timespec="microseconds")


def _listing_hash(uids: tuple[str, ...]) -> str:
    return hashlib.sha256("\n".join(sorted(uids)).encode()).hexdigest()


def instance_leaf(e: InstanceStored) -> bytes:
    """Leaf of a stored object: identity, both digests, blob id and time (issue 3, point 2)."""
    return encode(
        {
            "kind": KIND_INSTANCE,
            "sop_instance_uid": e.sop_instance_uid,
            "series_uid": e.series_uid,
            "study_uid": e.study_uid,
            "sop_class_uid": e.sop_class_uid,
            "pixel_sha256": e.pixel_sha256.hex(),
            "header_sha256": e.header_sha256.hex(),
            "blob_id": e.blob_id,
            "time": _time(e.stored_at),
        }
    )


def audit_leaf(e: AuditRecorded) -> bytes:
    """Leaf of an audit record: its id and canonical SHA-256 only (the record is sealed; issue 6, point 2)."""
    return encode({"kind": KIND_AUDIT, "record_id": e.record_id, "record_sha256": e.record_sha256.hex(), "time": _time(e.at)})


def with_audit_records(entry: tuple[str, str, bytes], records: list[tuple[str, bytes]]) -> tuple[str, str, bytes]:
    """The same leaf, also naming the audit records written for its event: ``"audit": [[id, sha256], ...]``.

    The audit trail extends the leaf of the event it recorded rather than adding
    one leaf per record (issue 6): the ledger grows by one leaf per action, and
    every audit record is still bound to the log by its canonical hash.
    """
    kind, subject, data = entry
    doc = decode(data)
    doc.pop("f")
    doc["audit"] = [[record_id, digest.hex()] for record_id, digest in records]
    return kind, subject, encode(doc)


def audit_hashes(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(record id, canonical SHA-256 hex) of the audit records a decoded leaf binds."""
    if doc.get("kind") == KIND_AUDIT:
        return [(str(doc.get("record_id", "")), str(doc.get("record_sha256", "")))]
    return [(str(r[0]), str(r[1])) for r in doc.get("audit", ()) if isinstance(r, list) and len(r) == 2]


def leaf_for(event: Event) -> tuple[str, str, bytes]:
    """(kind, subject, leaf bytes) for a core event."""
    if isinstance(event, InstanceStored):
        return KIND_INSTANCE, event.sop_instance_uid, instance_leaf(event)
    if isinstance(event, AuditRecorded):
        return KIND_AUDIT, event.record_id, audit_leaf(event)
    if isinstance(event, ConflictRefused):
        doc = {"event": "conflict-refused", "subject": event.sop_instance_uid, "pixel_sha256": event.pixel_sha256.hex(),
               "header_sha256": event.header_sha256.hex(), "time": _time(event.at)}
    elif isinstance(event, PatientErased):
        doc = {"event": "patient-erased", "subject": event.patient_ref, "instances": len(event.instance_uids),
               "instances_sha256": _listing_hash(event.instance_uids), "time": _time(event.at)}
    elif isinstance(event, KeysRotated):
        doc = {"event": "keys-rotated", "subject": event.new_kek_id, "old_kek_id": event.old_kek_id,
               "rewrapped": event.rewrapped, "time": _time(event.at)}
    elif isinstance(event, IntegrityViolation):
        doc = {"event": "integrity-violation", "subject": event.sop_instance_uid, "problem": event.kind, "time": _time(event.at)}
    elif isinstance(event, AccessRefused):
        doc = {"event": "access-refused", "subject": event.principal.label(), "action": event.action.value,
               "resource": f"{event.resource_kind}:{event.resource_uid}", "time": _time(event.at)}
    elif isinstance(event, InstancesAccessed):
        doc = {"event": "instances-accessed", "subject": event.principal.label(), "action": event.action.value,
               "instances": len(event.sop_instance_uids), "instances_sha256": _listing_hash(event.sop_instance_uids),
               "time": _time(event.at)}
    elif isinstance(event, QueryPerformed):
        # The query keys may be identifiers (a name searched for): not even their hash is ledgered.
        doc = {"event": "query", "subject": event.principal.label(), "level": event.level, "results": event.results,
               "time": _time(event.at)}
    elif isinstance(event, ApplicationActivity):
        doc = {"event": "application-start" if event.started else "application-stop", "subject": event.application,
               "time": _time(event.at)}
    elif isinstance(event, AuditLogUsed):
        doc = {"event": "audit-log-used", "subject": event.principal.label(), "purpose": event.purpose, "time": _time(event.at)}
    elif isinstance(event, UserAuthentication):
        doc = {"event": "user-authentication", "subject": event.user, "outcome": event.kind, "time": _time(event.at)}
    elif isinstance(event, SecurityConfigurationChanged):
        doc = {"event": "security-configuration", "subject": event.principal.label(), "object": event.subject,
               "change": event.change, "time": _time(event.at)}
    elif isinstance(event, BreakGlassStarted):
        # The reason may name the patient: it is in the sealed audit record, not in the leaf.
        doc = {"event": "break-glass", "subject": event.principal.label(), "grant": event.grant_id,
               "patients": len(event.patient_refs), "expires": _time(event.expires_at), "time": _time(event.at)}
    else:  # pragma: no cover - a new event type must get a leaf encoding
        raise TypeError(f"no leaf encoding for {type(event).__name__}")
    return KIND_EVENT, str(doc["subject"])[:64], encode({"kind": KIND_EVENT, **doc})
