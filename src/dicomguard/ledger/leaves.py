"""Canonical leaf encodings of the ledger. No leaf carries PHI.

A leaf is compact, key-sorted, ASCII JSON (so a third party can read and re-hash
it with any tool). Its Merkle leaf hash is ``SHA-256(0x00 || leaf bytes)``
(RFC 9162 2.1.1).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from dicomguard.core.events import (
    AccessRefused,
    AlertHandled,
    AlertRaised,
    ApplicationActivity,
    ArchiveRestored,
    AuditLogUsed,
    AuditMessageImported,
    BackupCompleted,
    BackupDrilled,
    BackupFailed,
    BreakGlassStarted,
    ConflictRefused,
    ContextImported,
    Deidentified,
    GovernanceRecorded,
    IdentityConflictRefused,
    IncidentRecorded,
    InstancesAccessed,
    InstanceStored,
    IntegrityChecked,
    IntegrityViolation,
    KeysRotated,
    PatientErased,
    PatientIdentityConflict,
    PatientIdentityResolved,
    ProvenanceVerified,
    QueryPerformed,
    Reidentified,
    SecurityConfigurationChanged,
    ShareCreated,
    ShareRevoked,
    TransferDelivered,
    UserAuthentication,
)

LeafEntry = tuple[str, str, bytes]
"""(kind, subject, leaf bytes): what the ledger appends and indexes (``ledger_leaves.kind``, ``.subject``)."""

LEAF_FORMAT = "dicomguard-leaf/1"
KIND_INSTANCE = "instance"
KIND_EVENT = "event"
KIND_AUDIT = "audit"
"""Leaves of imported audit messages written by earlier versions: one record per leaf, still verified."""


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
    """Leaf of a stored object: identity, both digests, blob id and time."""
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


def with_audit_records(entry: LeafEntry, records: Sequence[tuple[str, bytes]]) -> LeafEntry:
    """The same leaf, also naming the audit records written for its event: ``"audit": [[id, sha256], ...]``.

    The recorder extends the leaf of the event it recorded rather than adding
    one leaf per record: the ledger grows by one leaf per action, and every
    audit record is still bound to the log by its canonical hash.
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


def _event(doc: dict[str, Any]) -> LeafEntry:
    return KIND_EVENT, str(doc["subject"])[:64], encode({"kind": KIND_EVENT, **doc})


# One encoder per event class; the recorder's table (``app/recorder.py``) names them. No leaf carries PHI.


def instance_stored(e: InstanceStored) -> LeafEntry:
    return KIND_INSTANCE, e.sop_instance_uid, instance_leaf(e)


def conflict_refused(e: ConflictRefused) -> LeafEntry:
    return _event({"event": "conflict-refused", "subject": e.sop_instance_uid, "pixel_sha256": e.pixel_sha256.hex(),
                   "header_sha256": e.header_sha256.hex(), "time": _time(e.at)})


def identity_conflict_refused(e: IdentityConflictRefused) -> LeafEntry:
    return _event({"event": "identity-conflict-refused", "subject": e.sop_instance_uid, "study_uid": e.study_uid,
                   "series_uid": e.series_uid, "conflict": e.conflict, "time": _time(e.at)})


def patient_identity_conflict(e: PatientIdentityConflict) -> LeafEntry:
    return _event({"event": "patient-identity-conflict", "subject": e.patient_ref, "other": e.other_ref, "conflict": e.conflict_id,
                   "fields": list(e.fields), "time": _time(e.at)})


def patient_identity_resolved(e: PatientIdentityResolved) -> LeafEntry:
    return _event({"event": "patient-identity-resolved", "subject": e.patient_ref, "other": e.other_ref, "conflict": e.conflict_id,
                   "decision": e.decision, "by": e.principal.label(),
                   "time": _time(e.at)})


def patient_erased(e: PatientErased) -> LeafEntry:
    return _event({"event": "patient-erased", "subject": e.patient_ref, "instances": len(e.instance_uids),
                   "instances_sha256": _listing_hash(e.instance_uids), "time": _time(e.at)})


def keys_rotated(e: KeysRotated) -> LeafEntry:
    return _event({"event": "keys-rotated", "subject": e.new_kek_id, "old_kek_id": e.old_kek_id, "rewrapped": e.rewrapped,
                   "time": _time(e.at)})


def alert_raised(e: AlertRaised) -> LeafEntry:
    # No Patient ID and no explanation text (both PHI): the sealed audit record holds them.
    return _event({"event": "alert-raised", "subject": str(e.alert_id), "user": e.user, "kind": e.kind, "severity": e.severity,
                   "patients": len(e.patient_ids), "containment": e.containment, "by": e.principal.label(), "time": _time(e.at)})


def alert_handled(e: AlertHandled) -> LeafEntry:
    return _event({"event": "alert-handled", "subject": str(e.alert_id), "action": e.action, "disposition": e.disposition,
                   "by": e.principal.label(), "time": _time(e.at)})


def context_imported(e: ContextImported) -> LeafEntry:
    return _event({"event": "context-imported", "subject": e.kind, "rows": e.rows, "by": e.principal.label(), "time": _time(e.at)})


def deidentified(e: Deidentified) -> LeafEntry:
    # No Patient ID, not even hashed: the (source, result) digests bind what was released.
    return _event({"event": "deidentified", "subject": e.project, "options": list(e.options), "source": e.source,
                   "studies": list(e.study_uids), "released": e.released, "refused": e.refused, "pairs_sha256": e.pairs_sha256,
                   "by": e.principal.label(), "time": _time(e.at)})


def reidentified(e: Reidentified) -> LeafEntry:
    return _event({"event": "reidentified", "subject": e.project, "pseudonym": e.pseudonym, "matches": len(e.patient_refs),
                   "by": e.principal.label(), "time": _time(e.at)})


def backup_completed(e: BackupCompleted) -> LeafEntry:
    return _event({"event": "backup-completed", "subject": e.snapshot_id, "target": e.target, "manifest_sha256": e.manifest_sha256,
                   "checkpoint_size": e.checkpoint_size, "objects": e.objects, "bytes": e.bytes, "new_bytes": e.new_bytes,
                   "by": e.principal.label(), "time": _time(e.at)})


def backup_failed(e: BackupFailed) -> LeafEntry:
    return _event({"event": "backup-failed", "subject": e.target, "operation": e.operation, "reason": e.reason[:512],
                   "by": e.principal.label(), "time": _time(e.at)})


def backup_drilled(e: BackupDrilled) -> LeafEntry:
    return _event({"event": "backup-drilled", "subject": e.snapshot_id, "target": e.target, "objects": e.objects,
                   "problems": e.problems, "rpo_s": round(e.rpo_s, 3), "rto_s": round(e.rto_s, 3), "by": e.principal.label(),
                   "time": _time(e.at)})


def archive_restored(e: ArchiveRestored) -> LeafEntry:
    return _event({"event": "archive-restored", "subject": e.snapshot_id, "target": e.target, "objects": e.objects,
                   "tombstoned_patients": e.tombstoned_patients, "by": e.principal.label(), "time": _time(e.at)})


def integrity_violation(e: IntegrityViolation) -> LeafEntry:
    return _event({"event": "integrity-violation", "subject": e.sop_instance_uid, "problem": e.kind, "time": _time(e.at)})


def integrity_checked(e: IntegrityChecked) -> LeafEntry:
    return _event({"event": "integrity-checked", "subject": e.principal.label(), "mode": e.mode, "objects": e.objects,
                   "leaves": e.leaves, "problems": e.problems, "time": _time(e.at)})


def access_refused(e: AccessRefused) -> LeafEntry:
    return _event({"event": "access-refused", "subject": e.principal.label(), "action": e.action.value,
                   "resource": f"{e.resource_kind}:{e.resource_uid}", "time": _time(e.at)})


def instances_accessed(e: InstancesAccessed) -> LeafEntry:
    return _event({"event": "instances-accessed", "subject": e.principal.label(), "action": e.action.value,
                   "instances": len(e.sop_instance_uids), "instances_sha256": _listing_hash(e.sop_instance_uids), "time": _time(e.at)})


def query_performed(e: QueryPerformed) -> LeafEntry:
    # The query keys may be identifiers (a name searched for): not even their hash is ledgered.
    return _event({"event": "query", "subject": e.principal.label(), "level": e.level, "results": e.results, "time": _time(e.at)})


def application_activity(e: ApplicationActivity) -> LeafEntry:
    return _event({"event": "application-start" if e.started else "application-stop", "subject": e.application, "time": _time(e.at)})


def audit_log_used(e: AuditLogUsed) -> LeafEntry:
    return _event({"event": "audit-log-used", "subject": e.principal.label(), "purpose": e.purpose, "time": _time(e.at)})


def user_authentication(e: UserAuthentication) -> LeafEntry:
    return _event({"event": "user-authentication", "subject": e.user, "outcome": e.kind, "time": _time(e.at)})


def security_configuration(e: SecurityConfigurationChanged) -> LeafEntry:
    return _event({"event": "security-configuration", "subject": e.principal.label(), "object": e.subject, "change": e.change,
                   "time": _time(e.at)})


def break_glass(e: BreakGlassStarted) -> LeafEntry:
    # The reason may name the patient: it is in the sealed audit record, not in the leaf.
    return _event({"event": "break-glass", "subject": e.principal.label(), "grant": e.grant_id, "patients": len(e.patient_refs),
                   "expires": _time(e.expires_at), "time": _time(e.at)})


def audit_message_imported(e: AuditMessageImported) -> LeafEntry:
    # The message itself is sealed in the audit record this leaf binds (``"audit": [[id, sha256]]``).
    return _event({"event": "audit-import", "subject": e.origin[:64], "time": _time(e.at)})


def share_created(e: ShareCreated) -> LeafEntry:
    # No patient identity and no recipient text: the sealed audit record and the share row hold them.
    return _event({"event": "share-created", "subject": e.share_id, "study": e.source_study_uid, "served": e.served_study_uid,
                   "recipient": e.recipient, "deidentified": e.deidentified, "download": e.download,
                   "expires": _time(e.expires_at) if e.expires_at else None, "by": e.principal.label(), "time": _time(e.at)})


def share_revoked(e: ShareRevoked) -> LeafEntry:
    return _event({"event": "share-revoked", "subject": e.share_id, "by": e.principal.label(), "time": _time(e.at)})


def transfer_delivered(e: TransferDelivered) -> LeafEntry:
    return _event({"event": "transfer-delivered" if e.delivered else "transfer-failed", "subject": str(e.job_id), "peer": e.peer,
                   "study": e.study_uid, "instances": e.instances, "by": e.principal.label(), "time": _time(e.at)})


def provenance_verified(e: ProvenanceVerified) -> LeafEntry:
    return _event({"event": "provenance-verified", "subject": e.peer, "origin": e.origin, "instances": len(e.sop_instance_uids),
                   "instances_sha256": _listing_hash(e.sop_instance_uids), "proofs_sha256": e.proofs_sha256,
                   "by": e.principal.label(), "time": _time(e.at)})


def incident_recorded(e: IncidentRecorded) -> LeafEntry:
    return _event({"event": "incident", "subject": str(e.incident_id), "action": e.action, "target": e.target,
                   "detail_sha256": hashlib.sha256(e.detail.encode()).hexdigest(), "by": e.principal.label(), "time": _time(e.at)})


def governance_recorded(e: GovernanceRecorded) -> LeafEntry:
    return _event({"event": "governance", "subject": e.subject, "action": e.action,
                   "detail_sha256": hashlib.sha256(e.detail.encode()).hexdigest(), "by": e.principal.label(), "time": _time(e.at)})
