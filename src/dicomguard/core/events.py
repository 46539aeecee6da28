"""Events the services publish inside the transaction of the action they record.

One subscriber, the recorder of the composition root (``app/recorder.py``),
turns each event into its audit record(s) and its ledger leaf in that same
database transaction, so an action without its record cannot be committed.
Every event class derives from :class:`Event`; the recorder's table has one
entry per class (a test enumerates them). Events carry no PHI unless a field
says so: objects are named by UID and patients by their surrogate reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from dicomguard.core.access import Action, Principal


class Event:
    """Base of every event the services publish (the recorder dispatches on the concrete class)."""

    __slots__ = ()


@dataclass(frozen=True)
class InstanceStored(Event):
    sop_instance_uid: str
    series_uid: str
    study_uid: str
    patient_ref: str
    sop_class_uid: str
    blob_id: str
    size: int
    pixel_sha256: bytes
    header_sha256: bytes
    stored_at: datetime
    source: str
    principal: Principal | None = None


@dataclass(frozen=True)
class ConflictRefused(Event):
    sop_instance_uid: str
    pixel_sha256: bytes
    header_sha256: bytes
    source: str
    at: datetime


@dataclass(frozen=True)
class IdentityConflictRefused(Event):
    """An object was refused because its study belongs to another patient, or its series to another study.

    A UID belongs to one owner (PS3.3 C.7.2.1, C.7.3.1): an object that would mix two
    patients under one study is refused, recorded, and the stored study is untouched.
    ``owner_ref`` is the patient reference of the study as stored.
    """

    sop_instance_uid: str
    study_uid: str
    series_uid: str
    owner_ref: str
    conflict: str
    source: str
    at: datetime


@dataclass(frozen=True)
class PatientIdentityConflict(Event):
    """Objects arrived with a known (Issuer of Patient ID, Patient ID) but different demographics: kept apart.

    A patient's demographics come only from the objects filed under that row, never
    from a record filled by another storer: the newer demographics get a patient row
    of their own (``patient_ref``) beside the earlier one (``other_ref``) until an
    administrator reconciles them. ``fields`` names what differs, never the values.
    """

    conflict_id: int
    patient_ref: str
    other_ref: str
    fields: tuple[str, ...]
    source: str
    at: datetime


@dataclass(frozen=True)
class PatientIdentityResolved(Event):
    """An administrator decided a patient-identity conflict: ``same-person`` or ``different-persons``."""

    principal: Principal
    conflict_id: int
    patient_ref: str
    other_ref: str
    decision: str
    reason: str
    at: datetime


@dataclass(frozen=True)
class PatientErased(Event):
    patient_ref: str
    instance_uids: tuple[str, ...]
    study_uids: tuple[str, ...]
    at: datetime
    principal: Principal | None = None
    """Who ordered the erasure, when the caller passes it (the audit trail names the archive otherwise)."""


@dataclass(frozen=True)
class KeysRotated(Event):
    old_kek_id: str
    new_kek_id: str
    rewrapped: int
    at: datetime
    principal: Principal | None = None
    """Who rotated (the local operator when not given)."""


@dataclass(frozen=True)
class IntegrityViolation(Event):
    """A stored object failed verification on read: it was refused, never served."""

    sop_instance_uid: str
    kind: str
    at: datetime


@dataclass(frozen=True)
class AccessRefused(Event):
    """A request the authorizer refused (default deny). A security alert for the audit trail."""

    principal: Principal
    action: Action
    resource_kind: str
    resource_uid: str
    reason: str
    at: datetime


@dataclass(frozen=True)
class InstancesAccessed(Event):
    """Objects delivered to a principal (retrieve, export), one event per request."""

    principal: Principal
    action: Action
    sop_instance_uids: tuple[str, ...]
    study_uids: tuple[str, ...]
    patient_refs: tuple[str, ...]
    at: datetime
    emergency: bool = False
    """Delivered under a break-glass grant (HL7 ActReason BTG): the audit message is marked."""


@dataclass(frozen=True)
class QueryPerformed(Event):
    """A query and how many results the principal was shown (after filtering).

    ``keys`` may hold identifiers (a patient name searched for): subscribers
    must keep it sealed at rest and out of logs.
    """

    principal: Principal
    level: str
    keys: tuple[tuple[str, str], ...]
    results: int
    at: datetime
    emergency: bool = False
    """A result was shown under a break-glass grant: the audit message is marked."""


@dataclass(frozen=True)
class ApplicationActivity(Event):
    """The archive application started or stopped (``dicomguard serve``; PS3.15 A.5.3.1)."""

    started: bool
    application: str
    launcher: str
    """Who started (or stopped) it: the operating system account."""
    at: datetime
    address: str | None = None


@dataclass(frozen=True)
class AuditLogUsed(Event):
    """A principal read the audit trail (search, report, export). Reading it is itself audited (PS3.15 A.5.3.2)."""

    principal: Principal
    purpose: str
    at: datetime


@dataclass(frozen=True)
class UserAuthentication(Event):
    """A login, logout, failed login or lockout of a user account (PS3.15 A.5.3.12).

    ``kind`` is ``login``, ``logout``, ``failure`` or ``lockout``. Published by
    the identity service; ``reason`` must not contain the password or PHI.
    """

    user: str
    kind: str
    at: datetime
    address: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class BreakGlassStarted(Event):
    """A clinician claimed emergency access to a patient: a security alert for the officer's review.

    ``reason`` is the typed justification; it may name the patient, so
    subscribers keep it sealed at rest (the audit trail seals its messages).
    """

    principal: Principal
    grant_id: str
    patient_refs: tuple[str, ...]
    reason: str
    expires_at: datetime
    at: datetime
    claimed_patient_id: str = ""
    """The Patient ID as claimed: the alert names it even when it matched no patient (the grant then opens nothing)."""
    claimed_issuer: str = ""


@dataclass(frozen=True)
class SecurityConfigurationChanged(Event):
    """An account, role, device or study access attribute was changed (PS3.15 Security Alert, 110129).

    ``subject`` names what changed (``user:NAME``, ``study:UID``); ``change`` says how, without
    secrets or PHI (never a password, TOTP secret or physician name).
    """

    principal: Principal
    subject: str
    change: str
    at: datetime


@dataclass(frozen=True)
class AuditMessageImported(Event):
    """An audit message of another system (another PACS, a modality) was accepted into the trail.

    The recorder stores it verbatim (``xml``, evidence is not rewritten) with its
    ``origin`` and binds it to a ledger leaf of its own. ``message`` is the parsed
    message (an ``audit.message.AuditMessage``; the core does not know the type)
    and holds PHI: it is sealed at rest like every record.
    """

    principal: Principal
    origin: str
    xml: bytes
    message: Any
    at: datetime


@dataclass(frozen=True)
class IntegrityChecked(Event):
    """A verification of the archive ran (``dicomguard verify``): what it covered and how many problems it found.

    Each problem is also published as an ``IntegrityViolation``.
    """

    principal: Principal
    mode: str
    objects: int
    leaves: int
    problems: int
    at: datetime


@dataclass(frozen=True)
class BackupCompleted(Event):
    """A snapshot was written to a backup target (ADR 0007). ``manifest_sha256`` makes the ledger the judge of
    which manifests are genuine, and which is the newest of the target."""

    principal: Principal
    target: str
    snapshot_id: str
    manifest_sha256: str
    checkpoint_size: int
    objects: int
    bytes: int
    new_bytes: int
    at: datetime


@dataclass(frozen=True)
class BackupFailed(Event):
    """A backup or a drill failed, or a target is overdue: a Security Alert (the reason names target and cause)."""

    principal: Principal
    target: str
    operation: str
    reason: str
    at: datetime


@dataclass(frozen=True)
class BackupDrilled(Event):
    """A restore drill ran on a snapshot: what it restored and verified, RPO and RTO, how many problems."""

    principal: Principal
    target: str
    snapshot_id: str
    objects: int
    problems: int
    rpo_s: float
    rto_s: float
    at: datetime


@dataclass(frozen=True)
class ArchiveRestored(Event):
    """This home was restored from a snapshot (the first record of the restored home)."""

    principal: Principal
    target: str
    snapshot_id: str
    objects: int
    tombstoned_patients: int
    at: datetime


@dataclass(frozen=True)
class Deidentified(Event):
    """Objects were released de-identified (PS3.15 Annex E): under which project and options, from where, bound by
    the hash of every (source, result) SHA-256 pair. ``patient_ids`` (file sources) are PHI: audit record only."""

    principal: Principal
    project: str
    options: tuple[str, ...]
    source: str
    patient_refs: tuple[str, ...]
    patient_ids: tuple[str, ...]
    study_uids: tuple[str, ...]
    released: int
    refused: int
    pairs_sha256: str
    destination: str
    at: datetime


@dataclass(frozen=True)
class Reidentified(Event):
    """A pseudonym of a de-identification project was resolved to the archive's patients (a Security Alert)."""

    principal: Principal
    project: str
    pseudonym: str
    patient_refs: tuple[str, ...]
    at: datetime


@dataclass(frozen=True)
class AlertRaised(Event):
    """An access-anomaly alert (``dicomguard.detect``): a Security Alert naming the user, the patients, why, and what
    containment was applied. ``patient_ids`` and ``explanation`` are PHI: in the sealed audit record only."""

    principal: Principal
    alert_id: int
    user: str
    kind: str
    severity: str
    patient_ids: tuple[str, ...]
    explanation: str
    containment: str
    at: datetime


@dataclass(frozen=True)
class AlertHandled(Event):
    """An alert was viewed, acknowledged, resolved (with a disposition) or its containment released."""

    principal: Principal
    alert_id: int
    action: str
    disposition: str | None
    at: datetime


@dataclass(frozen=True)
class ContextImported(Event):
    """Detection context (users, patients or orders) was imported; it replaces the previous one of its kind."""

    principal: Principal
    kind: str
    rows: int
    at: datetime


Subscriber = Callable[[Session, Event], None]


class EventBus:
    """Synchronous, in-transaction publish/subscribe. A failing subscriber aborts the transaction."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def publish(self, session: Session, event: Event) -> None:
        for subscriber in self._subscribers:
            subscriber(session, event)


@dataclass(frozen=True)
class ShareCreated(Event):
    """A study was shared by link or queued for a peer archive (ADR 0010): a disclosure, recorded with its patient.

    ``recipient`` is the kind of recipient (``external``, ``research``, ``peer:NAME`` ...); the free text
    "who and why" is PHI-adjacent and stays in the sealed share row, never in the ledger.
    """

    principal: Principal
    share_id: str
    source_study_uid: str
    served_study_uid: str
    patient_ref: str
    recipient: str
    deidentified: bool
    download: bool
    expires_at: datetime | None
    series: int
    at: datetime


@dataclass(frozen=True)
class ShareRevoked(Event):
    """A share link was revoked (by its owner, an officer, or a containment); its sessions ended with it."""

    principal: Principal
    share_id: str
    reason: str
    at: datetime


@dataclass(frozen=True)
class TransferDelivered(Event):
    """A queued study reached (or finally failed to reach) a peer archive over mutual TLS."""

    principal: Principal
    job_id: int
    peer: str
    study_uid: str
    instances: int
    delivered: bool
    detail: str
    at: datetime


@dataclass(frozen=True)
class ProvenanceVerified(Event):
    """Objects received from a peer archive carried inclusion proofs of the sender's ledger, verified under its key.

    ``origin`` names the sender's log; ``proofs_sha256`` binds the checked (instance, leaf index, tree size) list.
    """

    principal: Principal
    peer: str
    origin: str
    sop_instance_uids: tuple[str, ...]
    proofs_sha256: str
    at: datetime


@dataclass(frozen=True)
class IncidentRecorded(Event):
    """A step of incident response (NIST SP 800-61r3): opened, a containment or its release, a verification, a scope,
    a notification drafted or sent, closed. ``detail`` holds counts and names of accounts and devices, never PHI."""

    principal: Principal
    incident_id: int
    action: str
    target: str
    detail: str
    at: datetime


@dataclass(frozen=True)
class GovernanceRecorded(Event):
    """A governance record: a log review assembled or signed off, a risk added or updated, media sanitised (the
    destruction of keys or media as evidence, NIST SP 800-88). ``detail`` holds no PHI."""

    principal: Principal
    subject: str
    action: str
    detail: str
    at: datetime
