"""Core events -> DICOM audit messages (PS3.15 A.5.3 event definitions, IHE RAD/ITI conventions).

One public function per event class, named in the recorder's table
(``app/recorder.py``, where a test enumerates the event classes). An event
yields one or more messages: A.5.3.7 allows one patient per DICOM Instances
Transferred message, so an access to several patients' objects becomes one
message per patient.

Patients are named by Patient ID (``ParticipantObjectID``; ``ID^^^ISSUER`` when
an issuer is known), resolved from the event's surrogate reference through the
index; the schema's mandatory ``ParticipantObjectName`` repeats the identifier
(the patient's name is not added: data minimization).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Protocol

from pydicom.datadict import dictionary_VR, tag_for_keyword
from sqlalchemy.orm import Session

from dicomguard.audit.codes import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    QUERY_SOP_CLASSES,
    ActionCode,
    Code,
    EventIds,
    EventTypes,
    MediaTypes,
    NetworkAccessPointType,
    ObjectIdTypes,
    ObjectRole,
    ObjectType,
    Outcome,
    Roles,
    SourceType,
)
from dicomguard.audit.message import (
    AuditMessage,
    ObjectDescription,
    Participant,
    ParticipantObject,
    SopClassRef,
)
from dicomguard.audit.origin import LOCAL as ORIGIN_LOCAL
from dicomguard.core.access import Action, Principal, PrincipalKind
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

MAX_INSTANCE_UIDS = 1000
"""Instance UIDs listed per study in one message; NumberOfInstances is always exact."""

LIFECYCLE_PERMANENT_ERASURE = 15  # RFC 3881 5.5.3
CLI_IMPORT_SOURCE = "cli-import"
# Verification problems that mean the security system itself may be compromised (outcome 12).
_MAJOR_KINDS = frozenset({
    "ledger-truncated", "ledger-forked", "rollback", "checkpoint-signature-bad", "index-row-altered",
    "index-row-missing", "index-row-unledgered", "index-row-unreadable", "audit-record-altered", "audit-record-missing",
    "audit-record-unledgered", "audit-record-misordered",
})


@dataclass(frozen=True)
class PatientIdentity:
    patient_id: str
    issuer: str = ""


@dataclass(frozen=True)
class InstanceInfo:
    study_uid: str
    patient_ref: str
    sop_class_uid: str


class Lookups(Protocol):
    """What the mapping reads from the index, inside the event's transaction."""

    def patient(self, session: Session, ref: str) -> PatientIdentity | None: ...

    def instances(self, session: Session, uids: Iterable[str]) -> dict[str, InstanceInfo]: ...

    def studies_of(self, session: Session, ref: str) -> list[str]: ...

    def patient_of_study(self, session: Session, study_uid: str) -> str | None: ...


@dataclass(frozen=True)
class Source:
    """This archive as the audit source and as an active participant."""

    ae_title: str
    source_id: str
    host: str
    archive_id: str
    site_id: str | None = None
    operator_account: str = ""


@dataclass(frozen=True)
class Draft:
    """A message and what the trail indexes it by (requestor's UserID, Patient IDs).

    Messages of other systems keep the bytes received (``xml``, evidence is not
    rewritten), their ``origin`` and a keyed dedup token (``dedup``).
    """

    message: AuditMessage
    user: str | None
    patients: tuple[str, ...]
    origin: str = ORIGIN_LOCAL
    xml: bytes | None = None
    dedup: bool = False


Mapper = Callable[["MappingContext", Session, Event], list[Draft]]
"""The shape of every function below: an event, in its transaction, becomes audit message drafts."""


@dataclass
class MappingContext:
    source: Source
    lookups: Lookups

    # -- building blocks ---------------------------------------------------------------

    def message(self, event_id: Code, e_time, outcome: int, action: str | None, participants: list[Participant],  # type: ignore[no-untyped-def]
                objects: list[ParticipantObject] = (), event_types: tuple[Code, ...] = (), description: str | None = None) -> AuditMessage:  # type: ignore[assignment]
        return AuditMessage(
            event_id=event_id, time=e_time, outcome=int(outcome), participants=tuple(participants), source_id=self.source.source_id,
            action=action, event_types=event_types, outcome_description=description, site_id=self.source.site_id,
            source_types=(Code(str(int(SourceType.APPLICATION_SERVER)), "", ""),), objects=tuple(objects),
        )

    def archive(self, role: Code | None = None, requestor: bool = False, name: str = "dicomguard") -> Participant:
        """The archive application process (A.5.2.1: the AE title, and AETITLES= as alternative ID)."""
        s = self.source
        return Participant(s.ae_title, requestor, (role,) if role else (), f"AETITLES={s.ae_title}", name, s.host,
                           int(NetworkAccessPointType.MACHINE_NAME))

    def principal(self, p: Principal, role: Code | None = None, requestor: bool = True) -> Participant:
        roles = (role,) if role else ()
        if p.kind is PrincipalKind.DEVICE:
            nap, typ = _nap(p.address)
            return Participant(p.name, requestor, roles, f"AETITLES={p.name}", None, nap, typ)
        if p.kind is PrincipalKind.OPERATOR:
            account = self.source.operator_account
            return Participant(p.name, requestor, roles, account or None, "local operator", self.source.host,
                               int(NetworkAccessPointType.MACHINE_NAME))
        nap, typ = _nap(p.address)
        return Participant(p.name, requestor, roles, None, p.name, nap, typ)

    def named(self, label: str, role: Code | None = None, requestor: bool = True) -> Participant:
        """A participant known only by a label (an ingest source such as ``dimse:CT1``)."""
        return Participant(label or "unknown", requestor, (role,) if role else ())

    def patient_object(self, session: Session, ref: str, lifecycle: int | None = None) -> tuple[ParticipantObject, str]:
        ident = self.lookups.patient(session, ref) if ref else None
        if ident is None:
            # Unknown or already destroyed identity: name the surrogate, never guess.
            pid = f"urn:dicomguard:patient-ref:{ref or 'unknown'}"
            return ParticipantObject(pid, ObjectIdTypes.PATIENT_NUMBER, type_code=ObjectType.PERSON, role=ObjectRole.PATIENT,
                                     lifecycle=lifecycle), pid
        object_id = f"{ident.patient_id}^^^{ident.issuer}" if ident.issuer else ident.patient_id
        return ParticipantObject(object_id, ObjectIdTypes.PATIENT_NUMBER, name=ident.patient_id, type_code=ObjectType.PERSON,
                                 role=ObjectRole.PATIENT, lifecycle=lifecycle), ident.patient_id

    @staticmethod
    def study_object(study_uid: str, instances: list[tuple[str, str]] = (), lifecycle: int | None = None) -> ParticipantObject:  # type: ignore[assignment]
        """A study (A.5.2.7) with its SOP classes, instance counts and (up to a bound) instance UIDs."""
        by_class: dict[str, list[str]] = {}
        for uid, sop_class in instances:
            by_class.setdefault(sop_class, []).append(uid)
        descriptions = ()
        if by_class:
            descriptions = (ObjectDescription(sop_classes=tuple(
                SopClassRef(cls or None, len(uids), tuple(uids[:MAX_INSTANCE_UIDS])) for cls, uids in sorted(by_class.items())
            )),)
        return ParticipantObject(study_uid, ObjectIdTypes.STUDY_INSTANCE_UID, type_code=ObjectType.SYSTEM_OBJECT,
                                 role=ObjectRole.REPORT, lifecycle=lifecycle, descriptions=descriptions)

    def subject_objects(self, session: Session, sop_instance_uid: str) -> tuple[list[ParticipantObject], list[str]]:
        """Study and patient of one instance, when the index knows it."""
        info = self.lookups.instances(session, [sop_instance_uid]).get(sop_instance_uid)
        if info is None:
            return [], []
        patient, pid = self.patient_object(session, info.patient_ref)
        return [self.study_object(info.study_uid, [(sop_instance_uid, info.sop_class_uid)]), patient], [pid]


@lru_cache(maxsize=4096)
def _nap(address: str | None) -> tuple[str | None, int | None]:
    if not address:
        return None, None
    if "://" in address:
        return address, int(NetworkAccessPointType.URI)
    try:
        ipaddress.ip_address(address)
        return address, int(NetworkAccessPointType.IP_ADDRESS)
    except ValueError:
        return address, int(NetworkAccessPointType.MACHINE_NAME)


def alert_subject(object_id: str, description: str, id_type: Code = ObjectIdTypes.URI, **details: str) -> ParticipantObject:
    """The Alert Subject of a Security Alert (A.5.3.11), with its free-text Alert Description."""
    pairs = [("Alert Description", _utf8(description))] + [(k, _utf8(v)) for k, v in details.items()]
    return ParticipantObject(object_id, id_type, type_code=ObjectType.SYSTEM_OBJECT, role=ObjectRole.SECURITY_RESOURCE,
                             details=tuple(pairs))


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "replace")  # a lone surrogate from a peer becomes '?', never an exception


def _uid_uri(uid: str) -> str:
    if uid and all(c.isdigit() or c == "." for c in uid):
        return f"urn:dicom:uid:{uid}"
    return "urn:dicomguard:" + ("-".join(uid.split()) or "unknown")


# -- DICOM query keys as a dataset (A.5.3.10: ParticipantObjectQuery) ---------------------

_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"})


@lru_cache(maxsize=512)
def _tag_and_vr(keyword: str) -> tuple[int, str] | None:
    tag = tag_for_keyword(keyword)
    return None if tag is None else (tag, dictionary_VR(tag))


def encode_query(level: str, keys: Iterable[tuple[str, str]]) -> bytes:
    """The query as an Explicit VR Little Endian dataset (Query/Retrieve Level first in tag order)."""
    elements: list[tuple[int, str, bytes]] = []
    for keyword, value in [("QueryRetrieveLevel", level), *keys]:
        known = _tag_and_vr(keyword)
        if known is None:
            continue
        tag, vr = known
        raw = _utf8(value)
        if len(raw) % 2:
            raw += b"\x00" if vr == "UI" else b" "
        elements.append((tag, vr, raw))
    out = bytearray()
    for tag, vr, raw in sorted(elements):
        out += struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode("ascii")
        out += struct.pack("<HI", 0, len(raw)) if vr in _LONG_VRS else struct.pack("<H", len(raw))
        out += raw
    return bytes(out)


# -- one function per core event ------------------------------------------------------------


def instance_stored(c: MappingContext, s: Session, e: InstanceStored) -> list[Draft]:
    """A.5.3.7 DICOM Instances Transferred (C, the archive receives); A.5.3.5 Import for ``dicomguard import``."""
    patient, pid = c.patient_object(s, e.patient_ref)
    study = c.study_object(e.study_uid, [(e.sop_instance_uid, e.sop_class_uid)])
    sender = c.principal(e.principal, requestor=True) if e.principal is not None else c.named(e.source)
    if e.source == CLI_IMPORT_SOURCE:
        media = Participant(f"file://{c.source.host}", False, (Roles.SOURCE_MEDIA,), media_type=MediaTypes.URI)
        importer = Participant(sender.user_id, True, (Roles.DESTINATION,), sender.alt_user_id, sender.user_name, sender.nap_id, sender.nap_type)
        msg = c.message(EventIds.IMPORT, e.stored_at, Outcome.SUCCESS, ActionCode.CREATE,
                        [media, importer, c.archive(Roles.DESTINATION)], [study, patient])
    else:
        src = Participant(sender.user_id, sender.requestor, (Roles.SOURCE,), sender.alt_user_id, sender.user_name, sender.nap_id, sender.nap_type)
        msg = c.message(EventIds.INSTANCES_TRANSFERRED, e.stored_at, Outcome.SUCCESS, ActionCode.CREATE,
                        [src, c.archive(Roles.DESTINATION)], [study, patient])
    return [Draft(msg, sender.user_id, (pid,))]


def instances_accessed(c: MappingContext, s: Session, e: InstancesAccessed) -> list[Draft]:
    """Retrieve: A.5.3.7 Transferred (R); export: A.5.3.4 Export; other reads: A.5.3.6 Accessed. One message per patient."""
    infos = c.lookups.instances(s, e.sop_instance_uids)
    by_patient: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for uid in e.sop_instance_uids:
        info = infos.get(uid)
        ref, study, cls = (info.patient_ref, info.study_uid, info.sop_class_uid) if info else ("", "", "")
        by_patient.setdefault(ref, {}).setdefault(study, []).append((uid, cls))
    drafts = []
    for ref, studies in by_patient.items():
        patient, pid = c.patient_object(s, ref)
        objects = [c.study_object(uid, inst) for uid, inst in sorted(studies.items()) if uid] + [patient]
        if e.action is Action.EXPORT:
            participants = [
                c.principal(e.principal, Roles.SOURCE, requestor=True), c.archive(Roles.SOURCE),
                Participant(e.principal.address or f"file://{c.source.host}", False, (Roles.DESTINATION_MEDIA,), media_type=MediaTypes.URI),
            ]
            msg = c.message(EventIds.EXPORT, e.at, Outcome.SUCCESS, ActionCode.READ, participants, objects)
        elif e.action is Action.RETRIEVE:
            participants = [c.archive(Roles.SOURCE), c.principal(e.principal, Roles.DESTINATION, requestor=True)]
            msg = c.message(EventIds.INSTANCES_TRANSFERRED, e.at, Outcome.SUCCESS, ActionCode.READ, participants, objects)
        else:
            participants = [c.principal(e.principal, requestor=True), c.archive()]
            msg = c.message(EventIds.INSTANCES_ACCESSED, e.at, Outcome.SUCCESS, ActionCode.READ, participants, objects,
                            description=f"action {e.action.value}")
        drafts.append(Draft(_marked_emergency(msg) if e.emergency else msg, e.principal.name, (pid,)))
    return drafts


def query_performed(c: MappingContext, s: Session, e: QueryPerformed) -> list[Draft]:
    """A.5.3.10 Query: the query dataset base64-encoded; the patient too when the query names one exactly."""
    sop_class = QUERY_SOP_CLASSES["PATIENT" if e.level == "PATIENT" else "STUDY"]
    query = ParticipantObject(
        sop_class, ObjectIdTypes.SOP_CLASS_UID, query=encode_query(e.level, e.keys), type_code=ObjectType.SYSTEM_OBJECT,
        role=ObjectRole.REPORT,
        details=(("TransferSyntax", EXPLICIT_VR_LITTLE_ENDIAN.encode("ascii")), ("NumberOfResults", str(e.results).encode("ascii"))),
    )
    objects = [query]
    patients: tuple[str, ...] = ()
    pid = dict(e.keys).get("PatientID", "")
    if pid and not any(ch in pid for ch in "*?\\"):
        objects.append(ParticipantObject(pid, ObjectIdTypes.PATIENT_NUMBER, name=pid, type_code=ObjectType.PERSON, role=ObjectRole.PATIENT))
        patients = (pid,)
    msg = c.message(EventIds.QUERY, e.at, Outcome.SUCCESS, ActionCode.EXECUTE,
                    [c.principal(e.principal, Roles.SOURCE, requestor=True), c.archive(Roles.DESTINATION)], objects)
    return [Draft(_marked_emergency(msg) if e.emergency else msg, e.principal.name, patients)]


def _marked_emergency(msg: AuditMessage) -> AuditMessage:
    """Mark an access made under a break-glass grant: EventTypeCode BTG and a description a reviewer sees."""
    note = "emergency access (break-glass)"
    return replace(msg, event_types=(*msg.event_types, EventTypes.BREAK_THE_GLASS),
                   outcome_description=f"{msg.outcome_description}; {note}" if msg.outcome_description else note)


def security_configuration(c: MappingContext, s: Session, e: SecurityConfigurationChanged) -> list[Draft]:
    """A.5.3.11 Security Alert "Security Configuration": accounts, roles, devices, study access attributes."""
    objects = [alert_subject(f"urn:dicomguard:{e.subject}", e.change)]
    msg = c.message(EventIds.SECURITY_ALERT, e.at, Outcome.SUCCESS, ActionCode.UPDATE,
                    [c.principal(e.principal, requestor=True), c.archive()], objects,
                    (EventTypes.SECURITY_CONFIGURATION,), e.change)
    return [Draft(msg, e.principal.name, ())]


def break_glass(c: MappingContext, s: Session, e: BreakGlassStarted) -> list[Draft]:
    """A.5.3.11 Security Alert "Emergency Override Started": who, which patient(s), until when, and the typed reason."""
    objects: list[ParticipantObject] = []
    pids: list[str] = []
    for ref in e.patient_refs:
        patient, pid = c.patient_object(s, ref)
        objects.append(patient)
        pids.append(pid)
    if not e.patient_refs and e.claimed_patient_id:
        # Claimed for a Patient ID the archive does not hold: the clinician was answered as for any claim,
        # the officer sees what was claimed and that it matched nothing.
        claimed = f"{e.claimed_patient_id}^^^{e.claimed_issuer}" if e.claimed_issuer else e.claimed_patient_id
        objects.append(ParticipantObject(claimed, ObjectIdTypes.PATIENT_NUMBER, name=e.claimed_patient_id, type_code=ObjectType.PERSON,
                                         role=ObjectRole.PATIENT))
        pids.append(e.claimed_patient_id)
    objects.append(alert_subject(f"urn:dicomguard:break-glass:{e.grant_id}", e.reason, Expires=e.expires_at.isoformat(),
                                 **{"Patients matched": str(len(e.patient_refs))}))
    msg = c.message(EventIds.SECURITY_ALERT, e.at, Outcome.SUCCESS, ActionCode.EXECUTE,
                    [c.principal(e.principal, requestor=True), c.archive()], objects,
                    (EventTypes.EMERGENCY_OVERRIDE_STARTED, EventTypes.BREAK_THE_GLASS),
                    f"break-glass until {e.expires_at.isoformat()}: {e.reason}")
    return [Draft(msg, e.principal.name, tuple(pids))]


def access_refused(c: MappingContext, s: Session, e: AccessRefused) -> list[Draft]:
    """A.5.3.11 Security Alert: a refused association (Node Authentication) or a refused request."""
    performer = c.principal(e.principal, requestor=True)
    patients: list[str] = []
    if e.action is Action.CONNECT:
        types: tuple[Code, ...] = (EventTypes.NODE_AUTHENTICATION, EventTypes.ASSOCIATION_REFUSED)
        objects = [alert_subject(e.principal.address or "unknown", e.reason, ObjectIdTypes.NODE_ID, Action=e.action.value)]
    else:
        types = (EventTypes.USE_OF_RESTRICTED_FUNCTION, EventTypes.ACCESS_REFUSED)
        resource = f"urn:dicomguard:{e.resource_kind}" + (f":{e.resource_uid}" if e.resource_uid else "")
        objects = [alert_subject(resource, e.reason, Action=e.action.value)]
        if e.resource_kind == "instance" and e.resource_uid:
            extra, patients = c.subject_objects(s, e.resource_uid)
            objects += extra
        elif e.resource_kind == "study" and e.resource_uid:
            ref = c.lookups.patient_of_study(s, e.resource_uid)
            if ref is not None:
                patient, pid = c.patient_object(s, ref)
                objects += [c.study_object(e.resource_uid), patient]
                patients = [pid]
    msg = c.message(EventIds.SECURITY_ALERT, e.at, Outcome.MINOR_FAILURE, ActionCode.EXECUTE, [c.archive(), performer], objects,
                    types, f"{e.action.value} refused: {e.reason}")
    return [Draft(msg, e.principal.name, tuple(patients))]


def conflict_refused(c: MappingContext, s: Session, e: ConflictRefused) -> list[Draft]:
    """A.5.3.11 Security Alert: a different object sent under a stored SOP Instance UID was refused (write-once)."""
    reason = "a different object was sent under a stored SOP Instance UID; refused, the stored object is unchanged"
    objects = [alert_subject(_uid_uri(e.sop_instance_uid), reason, **{"Received pixel SHA-256": e.pixel_sha256.hex(),
                                                                      "Received header SHA-256": e.header_sha256.hex()})]
    extra, patients = c.subject_objects(s, e.sop_instance_uid)
    msg = c.message(EventIds.SECURITY_ALERT, e.at, Outcome.MINOR_FAILURE, ActionCode.EXECUTE, [c.archive(), c.named(e.source)],
                    objects + extra, (EventTypes.USE_OF_RESTRICTED_FUNCTION, EventTypes.CONFLICT_REFUSED), "write-once conflict refused")
    return [Draft(msg, e.source, tuple(patients))]


def identity_conflict_refused(c: MappingContext, s: Session, e: IdentityConflictRefused) -> list[Draft]:
    """A.5.3.11 Security Alert: an object whose study belongs to another patient (or series to another study) was refused.

    Names the stored study and its patient (whose study was targeted) and the sender.
    """
    objects = [alert_subject(_uid_uri(e.sop_instance_uid), f"refused: {e.conflict}; the stored study is unchanged",
                             Series=e.series_uid)]
    patients: list[str] = []
    if e.owner_ref:
        patient, pid = c.patient_object(s, e.owner_ref)
        objects += [c.study_object(e.study_uid), patient]
        patients = [pid]
    msg = c.message(EventIds.SECURITY_ALERT, e.at, Outcome.MINOR_FAILURE, ActionCode.EXECUTE, [c.archive(), c.named(e.source)], objects,
                    (EventTypes.USE_OF_RESTRICTED_FUNCTION, EventTypes.IDENTITY_CONFLICT_REFUSED), f"identity conflict refused: {e.conflict}")
    return [Draft(msg, e.source, tuple(patients))]


def integrity_violation(c: MappingContext, s: Session, e: IntegrityViolation) -> list[Draft]:
    """A.5.3.11 Security Alert: stored data failed verification (refused on read, or found by ``verify``)."""
    outcome = Outcome.MAJOR_FAILURE if e.kind in _MAJOR_KINDS else Outcome.SERIOUS_FAILURE
    objects = [alert_subject(_uid_uri(e.sop_instance_uid), f"integrity failure: {e.kind}", Problem=e.kind)]
    extra, patients = c.subject_objects(s, e.sop_instance_uid) if "." in e.sop_instance_uid else ([], [])
    msg = c.message(EventIds.SECURITY_ALERT, e.at, outcome, ActionCode.EXECUTE, [c.archive(requestor=True)], objects + extra,
                    (EventTypes.INTEGRITY_VIOLATION,), f"integrity failure ({e.kind})")
    return [Draft(msg, c.source.ae_title, tuple(patients))]


def keys_rotated(c: MappingContext, s: Session, e: KeysRotated) -> list[Draft]:
    """A.5.3.11 Security Alert (Security Configuration): the key-encryption key was replaced."""
    text = f"key-encryption key {e.old_kek_id} replaced by {e.new_kek_id}; {e.rewrapped} keys re-wrapped"
    operator = c.principal(e.principal or Principal.operator(), requestor=True)
    msg = c.message(EventIds.SECURITY_ALERT, e.at, Outcome.SUCCESS, ActionCode.EXECUTE, [c.archive(), operator],
                    [alert_subject(f"urn:dicomguard:kek:{e.new_kek_id}", text)],
                    (EventTypes.SECURITY_CONFIGURATION, EventTypes.KEYS_ROTATED), text)
    return [Draft(msg, operator.user_id, ())]


def patient_identity_conflict(c: MappingContext, s: Session, e: PatientIdentityConflict) -> list[Draft]:
    """A.5.3.11 Security Alert: one Patient ID arrived with different demographics and was kept apart.

    Names both patient rows (their Patient IDs are the same; the sealed audit record
    holds them) and the sender, and says which fields differ, never their values.
    """
    new, pid = c.patient_object(s, e.patient_ref)
    earlier, _ = c.patient_object(s, e.other_ref)
    what = f"patient-identity conflict {e.conflict_id}: {', '.join(e.fields) or 'demographics'} differ; kept apart until reconciled"
    objects = [alert_subject(f"urn:dicomguard:patient-conflict:{e.conflict_id}", what), new, earlier]
    msg = c.message(EventIds.SECURITY_ALERT, e.at, Outcome.MINOR_FAILURE, ActionCode.EXECUTE, [c.archive(), c.named(e.source)], objects,
                    (EventTypes.PATIENT_IDENTITY_CONFLICT,), what)
    return [Draft(msg, e.source, (pid,))]


def patient_identity_resolved(c: MappingContext, s: Session, e: PatientIdentityResolved) -> list[Draft]:
    """A.5.3.15 Patient Record (U): an administrator reconciled a patient-identity conflict, with the typed reason."""
    new, pid = c.patient_object(s, e.patient_ref)
    earlier, _ = c.patient_object(s, e.other_ref)
    objects = [alert_subject(f"urn:dicomguard:patient-conflict:{e.conflict_id}", e.reason, Decision=e.decision), new, earlier]
    msg = c.message(EventIds.PATIENT_RECORD, e.at, Outcome.SUCCESS, ActionCode.UPDATE,
                    [c.principal(e.principal, requestor=True), c.archive()], objects, (EventTypes.PATIENT_IDENTITY_RESOLVED,),
                    f"patient-identity conflict {e.conflict_id} resolved: {e.decision}")
    return [Draft(msg, e.principal.name, (pid,))]


def patient_erased(c: MappingContext, s: Session, e: PatientErased) -> list[Draft]:
    """Crypto-shredding: A.5.3.8 DICOM Study Deleted and A.5.3.15 Patient Record (D), one patient per message."""
    who = c.principal(e.principal, requestor=True) if e.principal is not None else c.archive(requestor=True)
    drafts = []
    for ref in [r for r in e.patient_ref.split(",") if r] or [""]:
        patient, pid = c.patient_object(s, ref, LIFECYCLE_PERMANENT_ERASURE)
        studies = c.lookups.studies_of(s, ref) if ref else list(e.study_uids)
        participants = [who] if e.principal is None else [who, c.archive()]
        deleted = c.message(EventIds.STUDY_DELETED, e.at, Outcome.SUCCESS, ActionCode.DELETE, participants,
                            [c.study_object(u, lifecycle=LIFECYCLE_PERMANENT_ERASURE) for u in studies] + [patient],
                            description=f"crypto-shredded: {len(studies)} studies, {len(e.instance_uids)} instances")
        record = c.message(EventIds.PATIENT_RECORD, e.at, Outcome.SUCCESS, ActionCode.DELETE, participants, [patient],
                           description="patient identity and data key destroyed")
        drafts += [Draft(deleted, who.user_id, (pid,)), Draft(record, who.user_id, (pid,))]
    return drafts


def application_activity(c: MappingContext, s: Session, e: ApplicationActivity) -> list[Draft]:
    """A.5.3.1 Application Activity: the application (110150) and who launched it (110151)."""
    nap, typ = _nap(e.address or c.source.host)
    launcher = Participant(e.launcher or "unknown", True, (Roles.APPLICATION_LAUNCHER,), None, e.launcher or None, nap, typ)
    msg = c.message(EventIds.APPLICATION_ACTIVITY, e.at, Outcome.SUCCESS, ActionCode.EXECUTE,
                    [c.archive(Roles.APPLICATION, name=e.application), launcher], [],
                    (EventTypes.APPLICATION_START if e.started else EventTypes.APPLICATION_STOP,))
    return [Draft(msg, launcher.user_id, ())]


def audit_log_used(c: MappingContext, s: Session, e: AuditLogUsed) -> list[Draft]:
    """A.5.3.2 Audit Log Used: the reader, and the audit log as a Security Resource."""
    log = ParticipantObject(f"urn:dicomguard:{c.source.archive_id}:audit-log", ObjectIdTypes.URI, name="Security Audit Log",
                            details=(("Purpose", _utf8(e.purpose)),), type_code=ObjectType.SYSTEM_OBJECT,
                            role=ObjectRole.SECURITY_RESOURCE)
    msg = c.message(EventIds.AUDIT_LOG_USED, e.at, Outcome.SUCCESS, ActionCode.READ, [c.principal(e.principal, requestor=True), c.archive()], [log])
    return [Draft(msg, e.principal.name, ())]


USER_AUTH_KINDS = {
    "login": ((EventTypes.LOGIN,), Outcome.SUCCESS),
    "logout": ((EventTypes.LOGOUT,), Outcome.SUCCESS),
    "failure": ((EventTypes.LOGIN, EventTypes.LOGIN_FAILED), Outcome.MINOR_FAILURE),
    "lockout": ((EventTypes.LOGIN, EventTypes.LOCKOUT), Outcome.SERIOUS_FAILURE),
}


def user_authentication(c: MappingContext, s: Session, e: UserAuthentication) -> list[Draft]:
    """A.5.3.12 User Authentication: login, logout, failed login, lockout."""
    types, outcome = USER_AUTH_KINDS.get(e.kind, ((EventTypes.LOGIN, EventTypes.LOGIN_FAILED), Outcome.MINOR_FAILURE))
    nap, typ = _nap(e.address)
    user = Participant(e.user, True, (), None, e.user, nap, typ)
    msg = c.message(EventIds.USER_AUTHENTICATION, e.at, outcome, ActionCode.EXECUTE, [user, c.archive()], [], types,
                    e.reason or (None if outcome == Outcome.SUCCESS else e.kind))
    return [Draft(msg, e.user, ())]


def alert_raised(c: MappingContext, s: Session, e: AlertRaised) -> list[Draft]:
    """A.5.3.11 Security Alert: an access anomaly; the user as the alert's participant, the patients, why, and the containment."""
    text = f"alert {e.alert_id}: {e.severity} {e.kind} by {e.user}; containment {e.containment}: {e.explanation}"[:4000]
    objects = [alert_subject(f"urn:dicomguard:alert:{e.alert_id}", text, Kind=e.kind, Severity=e.severity, Containment=e.containment)]
    for pid in e.patient_ids[:MAX_INSTANCE_UIDS]:
        objects.append(ParticipantObject(pid, ObjectIdTypes.PATIENT_NUMBER, name=pid, type_code=ObjectType.PERSON, role=ObjectRole.PATIENT))
    outcome = Outcome.SERIOUS_FAILURE if e.severity in ("high", "critical") else Outcome.MINOR_FAILURE
    msg = c.message(EventIds.SECURITY_ALERT, e.at, outcome, ActionCode.EXECUTE, [c.principal(e.principal, requestor=True), c.archive(),
                    c.named(e.user, requestor=False)], objects, (EventTypes.ACCESS_ANOMALY,), text[:1024])
    return [Draft(msg, e.user, tuple(e.patient_ids))]


def alert_handled(c: MappingContext, s: Session, e: AlertHandled) -> list[Draft]:
    """A.5.3.11 Security Alert: an alert was viewed, acknowledged, resolved or its containment released."""
    text = f"alert {e.alert_id} {e.action}" + (f" ({e.disposition})" if e.disposition else "")
    msg = c.message(EventIds.SECURITY_ALERT, e.at, Outcome.SUCCESS, ActionCode.EXECUTE, [c.principal(e.principal, requestor=True),
                    c.archive()], [alert_subject(f"urn:dicomguard:alert:{e.alert_id}", text)], (EventTypes.ALERT_HANDLED,), text)
    return [Draft(msg, e.principal.name, ())]


def context_imported(c: MappingContext, s: Session, e: ContextImported) -> list[Draft]:
    """A.5.3.11 Security Alert (configuration): detection context replaced; the rows are PHI and are not in the message."""
    text = f"detection context {e.kind} imported: {e.rows} rows"
    msg = c.message(EventIds.SECURITY_ALERT, e.at, Outcome.SUCCESS, ActionCode.EXECUTE, [c.principal(e.principal, requestor=True),
                    c.archive()], [alert_subject(f"urn:dicomguard:detection-context:{e.kind}", text)],
                    (EventTypes.SECURITY_CONFIGURATION, EventTypes.CONTEXT_IMPORTED), text)
    return [Draft(msg, e.principal.name, ())]


def deidentified(c: MappingContext, s: Session, e: Deidentified) -> list[Draft]:
    """A.5.3.4 Export, marked de-identified: the source patients and studies, and the release (project, options, digests)."""
    objects: list[ParticipantObject] = [c.study_object(uid) for uid in e.study_uids]
    pids: list[str] = []
    for ref in e.patient_refs:
        patient, pid = c.patient_object(s, ref)
        objects.append(patient)
        pids.append(pid)
    for pid in e.patient_ids:
        objects.append(ParticipantObject(pid, ObjectIdTypes.PATIENT_NUMBER, name=pid, type_code=ObjectType.PERSON, role=ObjectRole.PATIENT))
        pids.append(pid)
    release = ParticipantObject(
        f"urn:dicomguard:deid:{e.project}", ObjectIdTypes.URI, type_code=ObjectType.SYSTEM_OBJECT, role=ObjectRole.REPORT,
        details=(("De-identified", b"YES"), ("Project", _utf8(e.project)), ("Options", _utf8(",".join(e.options) or "basic profile")),
                 ("Released", str(e.released).encode()), ("Refused", str(e.refused).encode()),
                 ("PairsSHA256", e.pairs_sha256.encode("ascii"))))
    participants = [
        c.principal(e.principal, Roles.SOURCE, requestor=True), c.archive(Roles.SOURCE),
        Participant(f"file://{c.source.host}", False, (Roles.DESTINATION_MEDIA,), media_type=MediaTypes.URI),
    ]
    outcome = Outcome.SUCCESS if not e.refused else Outcome.MINOR_FAILURE
    msg = c.message(EventIds.EXPORT, e.at, outcome, ActionCode.READ, participants, [*objects, release],
                    description=f"de-identified release ({e.project}): {e.released} released, {e.refused} refused")
    return [Draft(msg, e.principal.name, tuple(pids))]


def reidentified(c: MappingContext, s: Session, e: Reidentified) -> list[Draft]:
    """A.5.3.11 Security Alert: a project's pseudonym was resolved to the archive's patient(s)."""
    text = f"pseudonym {e.pseudonym} of project {e.project} re-identified: {len(e.patient_refs)} match(es)"
    objects = [alert_subject(f"urn:dicomguard:deid:{e.project}", text)]
    pids = []
    for ref in e.patient_refs:
        patient, pid = c.patient_object(s, ref)
        objects.append(patient)
        pids.append(pid)
    msg = c.message(EventIds.SECURITY_ALERT, e.at, Outcome.SUCCESS, ActionCode.EXECUTE, [c.principal(e.principal, requestor=True),
                    c.archive()], objects, (EventTypes.REIDENTIFIED,), text)
    return [Draft(msg, e.principal.name, tuple(pids))]


def _backup_alert(c: MappingContext, e: BackupCompleted | BackupFailed | BackupDrilled | ArchiveRestored, subject: str, text: str,
                  outcome: Outcome, code: Any) -> list[Draft]:
    requestor = c.principal(e.principal, requestor=True)
    msg = c.message(EventIds.SECURITY_ALERT, e.at, outcome, ActionCode.EXECUTE, [requestor, c.archive()],
                    [alert_subject(f"urn:dicomguard:{c.source.archive_id}:backup:{subject}", text, Target=e.target)], (code,), text)
    return [Draft(msg, e.principal.name, ())]


def backup_completed(c: MappingContext, s: Session, e: BackupCompleted) -> list[Draft]:
    """A.5.3.11 Security Alert: a snapshot of the archive (ciphertext, encrypted index) was written to a backup target."""
    text = (f"backup {e.snapshot_id} to {e.target}: {e.objects} objects, {e.bytes} bytes ({e.new_bytes} new), "
            f"ledger checkpoint {e.checkpoint_size}")
    return _backup_alert(c, e, e.snapshot_id, text, Outcome.SUCCESS, EventTypes.BACKUP_COMPLETED)


def backup_failed(c: MappingContext, s: Session, e: BackupFailed) -> list[Draft]:
    """A.5.3.11 Security Alert: a backup or drill failed, or a target is overdue (forwarded to the collectors like every alert)."""
    text = f"{e.operation} on {e.target} failed: {e.reason}"
    return _backup_alert(c, e, e.target, text[:1024], Outcome.SERIOUS_FAILURE, EventTypes.BACKUP_FAILED)


def backup_drilled(c: MappingContext, s: Session, e: BackupDrilled) -> list[Draft]:
    """A.5.3.11 Security Alert: a restore drill ran; its problems (0 = the 3-2-1-1-0 "0 errors"), RPO and RTO."""
    text = (f"restore drill of {e.snapshot_id} from {e.target}: {e.objects} objects, {e.problems} problems, "
            f"RPO {e.rpo_s:.0f} s, RTO {e.rto_s:.1f} s")
    outcome = Outcome.SUCCESS if e.problems == 0 else Outcome.SERIOUS_FAILURE
    return _backup_alert(c, e, e.snapshot_id, text, outcome, EventTypes.BACKUP_DRILLED)


def archive_restored(c: MappingContext, s: Session, e: ArchiveRestored) -> list[Draft]:
    """A.5.3.11 Security Alert: this home was restored from a snapshot; erased patients stay tombstones."""
    text = (f"restored from snapshot {e.snapshot_id} of {e.target}: {e.objects} objects, "
            f"{e.tombstoned_patients} erased patients kept as tombstones")
    return _backup_alert(c, e, e.snapshot_id, text, Outcome.SUCCESS, EventTypes.ARCHIVE_RESTORED)


def integrity_checked(c: MappingContext, s: Session, e: IntegrityChecked) -> list[Draft]:
    """A.5.3.11 Security Alert: a verification of the archive ran; what it covered, how many problems it found."""
    text = f"{e.mode} verification: {e.objects} objects, {e.leaves} ledger entries, {e.problems} problems"
    outcome = Outcome.SUCCESS if e.problems == 0 else Outcome.SERIOUS_FAILURE
    msg = c.message(EventIds.SECURITY_ALERT, e.at, outcome, ActionCode.EXECUTE, [c.principal(e.principal, requestor=True), c.archive()],
                    [alert_subject(f"urn:dicomguard:{c.source.archive_id}:integrity", text, Mode=e.mode, Problems=str(e.problems))],
                    (EventTypes.INTEGRITY_CHECKED,), text)
    return [Draft(msg, e.principal.name, ())]


def audit_message_imported(c: MappingContext, s: Session, e: AuditMessageImported) -> list[Draft]:
    """A message of another system, stored as received (its origin marked, deduplicated by a keyed hash of its bytes)."""
    requestor = e.message.requestor()
    return [Draft(e.message, requestor.user_id if requestor else None, tuple(e.message.patient_ids()), e.origin, e.xml, dedup=True)]


def share_created(c: MappingContext, s: Session, e: ShareCreated) -> list[Draft]:
    """A.5.3.11 Security Alert "share created": who shared which study of which patient, to what kind of recipient, until when.

    The study and patient are participant objects so that a breach scope finds every share of a patient.
    """
    text = (f"share {e.share_id}: study shared ({'de-identified copy' if e.deidentified else 'identified'}) with a {e.recipient}"
            f" recipient" + (f" until {e.expires_at.isoformat()}" if e.expires_at else "") + ("; download allowed" if e.download else ""))
    objects = [alert_subject(f"urn:dicomguard:share:{e.share_id}", text, Recipient=e.recipient,
                             Deidentified="YES" if e.deidentified else "NO", Series=str(e.series) if e.series else "all"),
               c.study_object(e.source_study_uid)]
    pids: list[str] = []
    if e.patient_ref:
        patient, pid = c.patient_object(s, e.patient_ref)
        objects.append(patient)
        pids.append(pid)
    msg = c.message(EventIds.SECURITY_ALERT, e.at, Outcome.SUCCESS, ActionCode.CREATE, [c.principal(e.principal, requestor=True),
                    c.archive()], objects, (EventTypes.SHARE_CREATED,), text)
    return [Draft(msg, e.principal.name, tuple(pids))]


def share_revoked(c: MappingContext, s: Session, e: ShareRevoked) -> list[Draft]:
    """A.5.3.11 Security Alert "share revoked": the link and its recipient sessions ended."""
    text = f"share {e.share_id} revoked: {e.reason}"[:1024]
    msg = c.message(EventIds.SECURITY_ALERT, e.at, Outcome.SUCCESS, ActionCode.DELETE, [c.principal(e.principal, requestor=True),
                    c.archive()], [alert_subject(f"urn:dicomguard:share:{e.share_id}", text)], (EventTypes.SHARE_REVOKED,), text)
    return [Draft(msg, e.principal.name, ())]


def transfer_delivered(c: MappingContext, s: Session, e: TransferDelivered) -> list[Draft]:
    """A.5.3.11 Security Alert: a queued study was delivered to a peer archive (or failed for good)."""
    text = f"transfer {e.job_id} to peer {e.peer}: {e.instances} instances " + ("delivered" if e.delivered else f"failed: {e.detail}")
    objects = [alert_subject(f"urn:dicomguard:peer:{e.peer}", text[:1024]), c.study_object(e.study_uid)]
    msg = c.message(EventIds.SECURITY_ALERT, e.at, Outcome.SUCCESS if e.delivered else Outcome.MINOR_FAILURE, ActionCode.EXECUTE,
                    [c.principal(e.principal, requestor=True), c.archive(), c.named(f"peer:{e.peer}", requestor=False)], objects,
                    (EventTypes.TRANSFER_DELIVERED if e.delivered else EventTypes.TRANSFER_FAILED,), text[:1024])
    return [Draft(msg, e.principal.name, ())]


def provenance_verified(c: MappingContext, s: Session, e: ProvenanceVerified) -> list[Draft]:
    """A.5.3.11 Security Alert (success): objects received from a peer were proven in the sender's ledger."""
    text = f"{len(e.sop_instance_uids)} objects from peer {e.peer} proven in log {e.origin}"[:1024]
    objects = [alert_subject(f"urn:dicomguard:peer:{e.peer}", text, Origin=e.origin[:256], ProofsSHA256=e.proofs_sha256)]
    msg = c.message(EventIds.SECURITY_ALERT, e.at, Outcome.SUCCESS, ActionCode.EXECUTE, [c.principal(e.principal, requestor=True),
                    c.archive()], objects, (EventTypes.PROVENANCE_VERIFIED,), text)
    return [Draft(msg, e.principal.name, ())]


def incident_recorded(c: MappingContext, s: Session, e: IncidentRecorded) -> list[Draft]:
    """A.5.3.11 Security Alert: one step of an incident's response, with the account or device it concerns."""
    text = f"incident {e.incident_id} {e.action} {e.target}: {e.detail}"[:1024]
    objects = [alert_subject(f"urn:dicomguard:incident:{e.incident_id}", text, Action=e.action[:64], Target=e.target[:256])]
    msg = c.message(EventIds.SECURITY_ALERT, e.at, Outcome.SUCCESS, ActionCode.EXECUTE, [c.principal(e.principal, requestor=True),
                    c.archive()], objects, (EventTypes.INCIDENT,), text)
    return [Draft(msg, e.principal.name, ())]


def governance_recorded(c: MappingContext, s: Session, e: GovernanceRecorded) -> list[Draft]:
    """A.5.3.11 Security Alert (success): a log review, a risk-register change or a media sanitisation, as evidence."""
    text = f"{e.action} {e.subject}: {e.detail}"[:1024]
    msg = c.message(EventIds.SECURITY_ALERT, e.at, Outcome.SUCCESS, ActionCode.EXECUTE, [c.principal(e.principal, requestor=True),
                    c.archive()], [alert_subject(f"urn:dicomguard:{e.subject}", text, Action=e.action[:64])],
                    (EventTypes.GOVERNANCE,), text)
    return [Draft(msg, e.principal.name, ())]
