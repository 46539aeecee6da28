"""Coded values of DICOM audit messages (PS3.15 A.5.2, PS3.16 CID 400-405) as typed constants.

A :class:`Code` is the ``CodedValueType`` of the A.5.1 schema: ``csd-code``,
``codeSystemName`` and ``originalText`` are all required there, so every
constant carries its meaning. Codes dicomguard adds for precision (the kind of an
integrity failure, a lockout) use the local code system ``99DGRD`` (the HL7
convention for local systems) and always come *in addition to* a standard code
where one exists, so a SIEM that knows only DCM codes still classifies them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

DCM = "DCM"
RFC3881 = "RFC-3881"
LOCAL = "99DGRD"


@dataclass(frozen=True)
class Code:
    code: str
    system: str
    meaning: str

    def key(self) -> tuple[str, str]:
        return self.code, self.system


def local(code: str, meaning: str) -> Code:
    return Code(code, LOCAL, meaning)


class EventIds:
    """EventID (PS3.16 CID 400 "Audit Event ID")."""

    APPLICATION_ACTIVITY = Code("110100", DCM, "Application Activity")
    AUDIT_LOG_USED = Code("110101", DCM, "Audit Log Used")
    BEGIN_TRANSFERRING = Code("110102", DCM, "Begin Transferring DICOM Instances")
    INSTANCES_ACCESSED = Code("110103", DCM, "DICOM Instances Accessed")
    INSTANCES_TRANSFERRED = Code("110104", DCM, "DICOM Instances Transferred")
    STUDY_DELETED = Code("110105", DCM, "DICOM Study Deleted")
    EXPORT = Code("110106", DCM, "Export")
    IMPORT = Code("110107", DCM, "Import")
    NETWORK_ENTRY = Code("110108", DCM, "Network Entry")
    ORDER_RECORD = Code("110109", DCM, "Order Record")
    PATIENT_RECORD = Code("110110", DCM, "Patient Record")
    PROCEDURE_RECORD = Code("110111", DCM, "Procedure Record")
    QUERY = Code("110112", DCM, "Query")
    SECURITY_ALERT = Code("110113", DCM, "Security Alert")
    USER_AUTHENTICATION = Code("110114", DCM, "User Authentication")

    @classmethod
    def all(cls) -> list[Code]:
        return [v for v in vars(cls).values() if isinstance(v, Code)]


# Short names accepted by ``audit search --event`` (and shown in its output).
EVENT_NAMES: dict[str, Code] = {
    "application-activity": EventIds.APPLICATION_ACTIVITY,
    "audit-log-used": EventIds.AUDIT_LOG_USED,
    "begin-transferring": EventIds.BEGIN_TRANSFERRING,
    "instances-accessed": EventIds.INSTANCES_ACCESSED,
    "instances-transferred": EventIds.INSTANCES_TRANSFERRED,
    "study-deleted": EventIds.STUDY_DELETED,
    "export": EventIds.EXPORT,
    "import": EventIds.IMPORT,
    "network-entry": EventIds.NETWORK_ENTRY,
    "order-record": EventIds.ORDER_RECORD,
    "patient-record": EventIds.PATIENT_RECORD,
    "procedure-record": EventIds.PROCEDURE_RECORD,
    "query": EventIds.QUERY,
    "security-alert": EventIds.SECURITY_ALERT,
    "user-authentication": EventIds.USER_AUTHENTICATION,
}
NAME_OF_EVENT: dict[str, str] = {c.code: name for name, c in EVENT_NAMES.items()}


class EventTypes:
    """EventTypeCode (PS3.16 CID 401, 403)."""

    APPLICATION_START = Code("110120", DCM, "Application Start")
    APPLICATION_STOP = Code("110121", DCM, "Application Stop")
    LOGIN = Code("110122", DCM, "Login")
    LOGOUT = Code("110123", DCM, "Logout")
    NODE_AUTHENTICATION = Code("110126", DCM, "Node Authentication")
    EMERGENCY_OVERRIDE_STARTED = Code("110127", DCM, "Emergency Override Started")
    SECURITY_CONFIGURATION = Code("110129", DCM, "Security Configuration")
    USE_OF_RESTRICTED_FUNCTION = Code("110132", DCM, "Use of Restricted Function")
    AUDIT_RECORDING_STOPPED = Code("110133", DCM, "Audit Recording Stopped")
    AUDIT_RECORDING_STARTED = Code("110134", DCM, "Audit Recording Started")
    EMERGENCY_OVERRIDE_STOPPED = Code("110138", DCM, "Emergency Override Stopped")
    # Local refinements (always next to a DCM code, or alone where DICOM has none)
    ACCESS_REFUSED = local("access-refused", "Request refused by the access policy")
    ASSOCIATION_REFUSED = local("association-refused", "Association or connection refused")
    CONFLICT_REFUSED = local("conflict-refused", "Write-once conflict refused")
    IDENTITY_CONFLICT_REFUSED = local("identity-conflict-refused", "Object refused: its study or series belongs to another owner")
    PATIENT_IDENTITY_CONFLICT = local("patient-identity-conflict", "One Patient ID arrived with different demographics: kept apart")
    PATIENT_IDENTITY_RESOLVED = local("patient-identity-resolved", "Patient-identity conflict reconciled")
    INTEGRITY_VIOLATION = local("integrity-violation", "Stored data failed integrity verification")
    INTEGRITY_CHECKED = local("integrity-checked", "Archive integrity verification ran")
    KEYS_ROTATED = local("keys-rotated", "Key-encryption key rotated")
    ACCESS_ANOMALY = local("access-anomaly", "Access anomaly detected (explanation, signature or learned behaviour)")
    ALERT_HANDLED = local("alert-handled", "Access-anomaly alert viewed, disposed or released")
    CONTEXT_IMPORTED = local("context-imported", "Detection context imported")
    DEIDENTIFIED = local("deidentified", "Objects released de-identified (PS3.15 Annex E)")
    REIDENTIFIED = local("reidentified", "Pseudonym resolved to the archive's patient")
    SHARE_CREATED = local("share-created", "Study shared by link or queued for a peer archive")
    SHARE_REVOKED = local("share-revoked", "Share link revoked")
    TRANSFER_DELIVERED = local("transfer-delivered", "Study delivered to a peer archive")
    TRANSFER_FAILED = local("transfer-failed", "Delivery to a peer archive failed permanently")
    PROVENANCE_VERIFIED = local("provenance-verified", "Received objects proven in the sending archive's ledger")
    GOVERNANCE = local("governance", "Log review, risk register or media sanitisation record")
    INCIDENT = local("incident", "Incident response step (opened, containment, release, scope, notification, closed)")
    BACKUP_COMPLETED = local("backup-completed", "Backup snapshot written")
    BACKUP_FAILED = local("backup-failed", "Backup or restore drill failed, or overdue")
    BACKUP_DRILLED = local("backup-drilled", "Restore drill ran")
    ARCHIVE_RESTORED = local("archive-restored", "Archive restored from a backup")
    LOGIN_FAILED = local("login-failed", "Login failed")
    LOCKOUT = local("lockout", "Account locked out")
    BREAK_THE_GLASS = Code("BTG", "HL7 ActReason", "break the glass")
    """HL7 v3 ActReason (purpose of use) BTG: marks every access made under an emergency grant."""
    STEP_UP_REQUIRED = local("step-up-required", "Refused until a fresh MFA confirmation")


class Roles:
    """RoleIDCode of active participants (PS3.16 CID 402)."""

    APPLICATION = Code("110150", DCM, "Application")
    APPLICATION_LAUNCHER = Code("110151", DCM, "Application Launcher")
    DESTINATION = Code("110152", DCM, "Destination Role ID")
    SOURCE = Code("110153", DCM, "Source Role ID")
    DESTINATION_MEDIA = Code("110154", DCM, "Destination Media")
    SOURCE_MEDIA = Code("110155", DCM, "Source Media")


class ObjectIdTypes:
    """ParticipantObjectIDTypeCode (PS3.16 CID 404; RFC 3881 codes)."""

    PATIENT_NUMBER = Code("2", RFC3881, "Patient Number")
    URI = Code("12", RFC3881, "URI")
    STUDY_INSTANCE_UID = Code("110180", DCM, "Study Instance UID")
    SOP_CLASS_UID = Code("110181", DCM, "SOP Class UID")
    NODE_ID = Code("110182", DCM, "Node ID")


class MediaTypes:
    """MediaType (PS3.16 CID 405)."""

    URI = Code("110037", DCM, "URI")


class Outcome(IntEnum):
    """EventOutcomeIndicator (PS3.15 A.5.1; RFC 3881 5.1.4)."""

    SUCCESS = 0
    MINOR_FAILURE = 4
    SERIOUS_FAILURE = 8
    MAJOR_FAILURE = 12


class ActionCode(StrEnum):
    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


class ObjectType(IntEnum):
    PERSON = 1
    SYSTEM_OBJECT = 2
    ORGANIZATION = 3
    OTHER = 4


class ObjectRole(IntEnum):
    """ParticipantObjectTypeCodeRole (RFC 3881 5.5.2) values dicomguard uses."""

    PATIENT = 1
    REPORT = 3
    MASTER_FILE = 5
    USER = 6
    SECURITY_RESOURCE = 13
    QUERY = 24


class NetworkAccessPointType(IntEnum):
    MACHINE_NAME = 1
    IP_ADDRESS = 2
    URI = 5


class SourceType(IntEnum):
    """AuditSourceTypeCode (RFC 3881 5.4.3)."""

    APPLICATION_SERVER = 4
    SECURITY_SERVER = 5


QUERY_SOP_CLASSES = {
    "PATIENT": "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root Query/Retrieve Information Model - FIND
    "STUDY": "1.2.840.10008.5.1.4.1.2.2.1",  # Study Root Query/Retrieve Information Model - FIND
}
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
