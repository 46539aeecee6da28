"""The recorder: the one subscriber that turns every event into its audit record(s) and its ledger leaf.

Called by the event bus inside the transaction of the action (``core/service.py``):

1. the event's audit messages (PS3.15 A.5.3) are built and queued in the audit trail;
2. its ledger leaf (RFC 9162 leaf, no PHI) is queued, naming the id and canonical
   SHA-256 of each of those records, so the ledger grows by one leaf per action
   and every record is bound to the log;
3. just before the transaction commits, the ledger appends its leaves (taking
   its lock and signing a checkpoint) and then the trail inserts its records
   (``seq`` assigned under that lock, so sequence order is commit order).

Either all of it commits with the action, or none of it does. Which event
becomes which leaf and which messages is :data:`RECORDINGS`: one entry per
event class, checked by a test that enumerates the subclasses of
:class:`dicomguard.core.events.Event`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from dicomguard.audit import mapping
from dicomguard.audit.mapping import Draft, MappingContext
from dicomguard.audit.trail import AuditTrail
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
    Event,
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
from dicomguard.index.db import before_commit
from dicomguard.ledger import leaves
from dicomguard.ledger.leaves import LeafEntry
from dicomguard.ledger.service import Ledger


@dataclass(frozen=True)
class Recording:
    """How one event class is recorded: its ledger leaf and its audit messages."""

    leaf: Callable[[Any], LeafEntry]
    audit: Callable[[MappingContext, Session, Any], list[Draft]]


RECORDINGS: dict[type[Event], Recording] = {
    InstanceStored: Recording(leaves.instance_stored, mapping.instance_stored),
    ConflictRefused: Recording(leaves.conflict_refused, mapping.conflict_refused),
    IdentityConflictRefused: Recording(leaves.identity_conflict_refused, mapping.identity_conflict_refused),
    PatientErased: Recording(leaves.patient_erased, mapping.patient_erased),
    PatientIdentityConflict: Recording(leaves.patient_identity_conflict, mapping.patient_identity_conflict),
    PatientIdentityResolved: Recording(leaves.patient_identity_resolved, mapping.patient_identity_resolved),
    KeysRotated: Recording(leaves.keys_rotated, mapping.keys_rotated),
    IntegrityViolation: Recording(leaves.integrity_violation, mapping.integrity_violation),
    IntegrityChecked: Recording(leaves.integrity_checked, mapping.integrity_checked),
    AccessRefused: Recording(leaves.access_refused, mapping.access_refused),
    InstancesAccessed: Recording(leaves.instances_accessed, mapping.instances_accessed),
    QueryPerformed: Recording(leaves.query_performed, mapping.query_performed),
    ApplicationActivity: Recording(leaves.application_activity, mapping.application_activity),
    AuditLogUsed: Recording(leaves.audit_log_used, mapping.audit_log_used),
    UserAuthentication: Recording(leaves.user_authentication, mapping.user_authentication),
    BreakGlassStarted: Recording(leaves.break_glass, mapping.break_glass),
    SecurityConfigurationChanged: Recording(leaves.security_configuration, mapping.security_configuration),
    AuditMessageImported: Recording(leaves.audit_message_imported, mapping.audit_message_imported),
    BackupCompleted: Recording(leaves.backup_completed, mapping.backup_completed),
    BackupFailed: Recording(leaves.backup_failed, mapping.backup_failed),
    BackupDrilled: Recording(leaves.backup_drilled, mapping.backup_drilled),
    ArchiveRestored: Recording(leaves.archive_restored, mapping.archive_restored),
    Deidentified: Recording(leaves.deidentified, mapping.deidentified),
    AlertRaised: Recording(leaves.alert_raised, mapping.alert_raised),
    AlertHandled: Recording(leaves.alert_handled, mapping.alert_handled),
    ContextImported: Recording(leaves.context_imported, mapping.context_imported),
    Reidentified: Recording(leaves.reidentified, mapping.reidentified),
    ShareCreated: Recording(leaves.share_created, mapping.share_created),
    ShareRevoked: Recording(leaves.share_revoked, mapping.share_revoked),
    TransferDelivered: Recording(leaves.transfer_delivered, mapping.transfer_delivered),
    ProvenanceVerified: Recording(leaves.provenance_verified, mapping.provenance_verified),
    IncidentRecorded: Recording(leaves.incident_recorded, mapping.incident_recorded),
    GovernanceRecorded: Recording(leaves.governance_recorded, mapping.governance_recorded),
}


class Recorder:
    """Subscriber of the event bus (``Archive.open`` subscribes it, and nothing else)."""

    def __init__(self, ledger: Ledger, trail: AuditTrail) -> None:
        self.ledger = ledger
        self.trail = trail

    def on_event(self, session: Session, event: Event) -> None:
        recording = RECORDINGS.get(type(event))
        if recording is None:
            raise TypeError(f"no recording for {type(event).__name__}: add it to app.recorder.RECORDINGS")
        records = [self.trail.write(session, draft) for draft in recording.audit(self.trail.mapping, session, event)]
        self.ledger.append(session, recording.leaf(event), records)
        before_commit(session, "recorder", self._flush)
        if isinstance(event, PatientErased):
            self.trail.forget_patients(event.patient_ref.split(","))

    def _flush(self, session: Session) -> None:
        self.ledger.flush(session)  # takes the ledger lock: what follows is ordered by commit
        self.trail.flush(session)
