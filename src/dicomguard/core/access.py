"""Who may do what: principals, actions, resources, request context and the authorizer seam.

Every core service takes the verified :class:`Principal` of the request and
asks the archive's :class:`Authorizer` before it touches patient data (zero
trust: a request is authorized at the point of use, whatever network it came
from). Refusals raise :class:`AccessDenied` (or :class:`StepUpRequired` when a
fresh MFA confirmation would permit it) and are published as ``AccessRefused``
events for the audit trail.

The authorizer is the Cedar policy engine (:mod:`dicomguard.policy.engine`);
this module holds only the vocabulary it decides on, so the core does not
depend on the policy language.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from dicomguard.errors import DicomGuardError

if TYPE_CHECKING:
    from dicomguard.core.study_scope import StudyScope


class Action(StrEnum):
    """What a principal asks to do; the Cedar action of the same name decides (``policy/schema.cedarschema``)."""

    STORE = "store"
    QUERY = "query"
    RETRIEVE = "retrieve"
    EXPORT = "export"
    ERASE = "erase"
    SHARE = "share"
    AUDIT_READ = "audit-read"
    AUDIT_IMPORT = "audit-import"
    """Storing audit messages of other systems from a file (``audit import``): the importer vouches for the file."""
    AUDIT_SEND = "audit-send"
    """Asserting audit messages as their sender (a device over the syslog-TLS listener), decided per message on
    what it claims (:meth:`Resource.audit_message`)."""
    CONNECT = "connect"
    """Opening an association or session: refused connections are recorded under it."""
    BREAK_GLASS = "break-glass"
    """Claiming emergency access to one patient."""
    # Administration: each is a member of the Cedar action group "administer", so one
    # policy can permit (or forbid) all of it and another a single operation.
    ADMINISTER = "administer"
    """The group itself; requested for nothing but kept as an action so policies written against it stay valid."""
    ACCOUNT_CREATE = "account-create"
    ACCOUNT_CHANGE = "account-change"
    """Roles, attributes, disable/enable, unlock, MFA reset, recovery codes and API tokens of an account."""
    ACCOUNT_READ = "account-read"
    DEVICE_ADD = "device-add"
    DEVICE_REVOKE = "device-revoke"
    DEVICE_READ = "device-read"
    ALLOWLIST_CHANGE = "allowlist-change"
    ALLOWLIST_READ = "allowlist-read"
    STUDY_CHANGE = "study-change"
    """A study's access attributes: department and labels."""
    POLICY_RELOAD = "policy-reload"
    POLICY_READ = "policy-read"
    """Explaining a decision (``policy test``): reads account and study access attributes, no PHI."""
    KEYS_ROTATE = "keys-rotate"
    LEDGER_WITNESS = "ledger-witness"
    VERIFY = "verify"
    INDEX_MAINTAIN = "index-maintain"
    """Adding the blind indexes newer versions write to rows written before them (``index backfill``, ADR 0017)."""
    METRICS_READ = "metrics-read"
    PATIENT_CONFLICTS_READ = "patient-conflicts-read"
    """Listing patient-identity conflicts: references, differing field names, departments and senders, no PHI."""
    PATIENT_RECONCILE = "patient-reconcile"
    """Deciding a patient-identity conflict (same person, or different persons)."""
    DEIDENTIFY = "deidentify"
    """Releasing objects de-identified (PS3.15 Annex E): decided on each study read from the archive, on the archive for files."""
    REIDENTIFY = "reidentify"
    """Resolving a project's pseudonym to the archive's patient (not administration: no shipped role has it; recorded
    as a Security Alert)."""
    CONTEXT_IMPORT = "context-import"
    """Importing detection context (users, patients, orders: PHI) into the archive."""
    CONTEXT_FEED = "context-feed"
    """Updating detection context incrementally as its sender (a hospital interface engine, a device over the HL7 v2
    MLLP listener): not administration, granted to no device by default."""
    ALERTS_READ = "alerts-read"
    """Listing and reading access-anomaly alerts (reading one shows its patients: recorded)."""
    ALERTS_HANDLE = "alerts-handle"
    """Acknowledging, resolving (with a disposition) and releasing the containment of alerts."""
    ALERTS_RAISE = "alerts-raise"
    """Raising an alert and applying its containment (the detector in ``serve``, as the operator)."""
    BACKUP_RUN = "backup-run"
    """Writing a snapshot (ciphertext, encrypted index, key vault) to a backup target."""
    BACKUP_DRILL = "backup-drill"
    """Restoring a snapshot into a scratch home and verifying every object (reads no PHI out)."""
    BACKUP_READ = "backup-read"
    """Listing snapshots and the 3-2-1-1-0 status of the targets."""
    SHARE_READ = "share-read"
    """Listing share links and their uses (a user their own; a security officer every link)."""
    SHARE_REVOKE = "share-revoke"
    """Revoking a share link: it and every recipient session end at once."""
    PEER_ADD = "peer-add"
    """Registering (or removing) a peer archive for site-to-site transfer: its address, CA and ledger key."""
    PEER_READ = "peer-read"
    """Listing peers and the transfer queue."""
    INCIDENT_RESPOND = "incident-respond"
    """Opening and closing an incident, and its containment steps (user, device, network, read-only archive) and their
    release (NIST SP 800-61r3 Respond)."""
    INCIDENT_READ = "incident-read"
    """Reading incidents, their timeline, breach scope and notification reports."""
    POSTURE_READ = "posture-read"
    """The security posture report (configuration and records against NIST CSF 2.0 and HIPAA; no PHI)."""
    LOG_REVIEW = "log-review"
    """Assembling a routine audit-log review and signing it off (HIPAA 164.308(a)(1)(ii)(D))."""
    RISK_MANAGE = "risk-manage"
    """Adding and updating risk-register entries and recording media sanitisation."""
    RISK_READ = "risk-read"
    """Reading the risk register and the asset inventory (devices, targets, privileged accounts; no PHI)."""


ADMINISTRATION = frozenset({
    Action.ACCOUNT_CREATE, Action.ACCOUNT_CHANGE, Action.ACCOUNT_READ, Action.DEVICE_ADD, Action.DEVICE_REVOKE,
    Action.DEVICE_READ, Action.ALLOWLIST_CHANGE, Action.ALLOWLIST_READ, Action.STUDY_CHANGE, Action.POLICY_RELOAD,
    Action.POLICY_READ, Action.KEYS_ROTATE, Action.LEDGER_WITNESS, Action.VERIFY, Action.METRICS_READ,
    Action.PATIENT_CONFLICTS_READ, Action.PATIENT_RECONCILE, Action.BACKUP_RUN, Action.BACKUP_DRILL, Action.BACKUP_READ,
    Action.CONTEXT_IMPORT, Action.ALERTS_READ, Action.ALERTS_HANDLE, Action.ALERTS_RAISE, Action.PEER_ADD, Action.PEER_READ,
    Action.POSTURE_READ, Action.RISK_READ,
})
"""Members of the Cedar action group ``administer`` (an API token scoped to ``administer`` may use each)."""


class PrincipalKind(StrEnum):
    USER = "user"
    DEVICE = "device"
    OPERATOR = "operator"
    SHARE = "share"
    """The recipient of a share link, after the link's PIN: read-only, exactly the shared study (ADR 0010)."""


@dataclass(frozen=True)
class Principal:
    """A verified caller: a user (token), a device (certificate, AE title) or the local operator."""

    kind: PrincipalKind
    name: str
    roles: frozenset[str] = frozenset()
    address: str | None = None
    attributes: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def operator(cls, name: str = "local-operator") -> Principal:
        return cls(PrincipalKind.OPERATOR, name, frozenset({"operator"}))

    @classmethod
    def share(cls, share_id: str, *, studies: Iterable[str], series: Iterable[str] = (), download: bool = False,
              deidentified: bool = False, address: str | None = None) -> Principal:
        """The recipient of share link ``share_id``, named ``share:<id>`` everywhere (audit, ledger, policies).

        Its scope is the link's studies (and, if any, series).
        """
        return cls(PrincipalKind.SHARE, f"{PrincipalKind.SHARE.value}:{share_id}", frozenset(), address, {
            "share_id": share_id, "studies": tuple(sorted(studies)), "series": tuple(sorted(series)), "download": download,
            "deidentified": deidentified})

    def label(self) -> str:
        return self.name if self.kind is PrincipalKind.SHARE else f"{self.kind.value}:{self.name}"

    @property
    def series_scope(self) -> frozenset[str]:
        """Series a share-link recipient is limited to (empty: the whole of its studies; other principals: no limit)."""
        return frozenset(self.attributes.get("series") or ()) if self.kind is PrincipalKind.SHARE else frozenset()


_LABEL = re.compile(r"^[a-z0-9_-]{1,32}$")


def normalize_department(name: str) -> str:
    """Departments compare case- and spacing-insensitively: stored and compared upper-case, single-spaced."""
    value = " ".join(name.split()).upper()
    if len(value) > 64:
        raise ValueError("a department name has at most 64 characters")
    return value


def normalize_label(label: str) -> str:
    """A study label or clearance: lower-case letters, digits, '_' and '-', 1-32 characters."""
    value = label.strip().lower()
    if not _LABEL.match(value):
        raise ValueError(f"invalid label {label!r}: 1-32 of a-z, 0-9, '_', '-'")
    return value


@dataclass(frozen=True)
class StudyAccess:
    """What policies know of a study: none of it identifies the patient."""

    department: str = ""
    site: str = ""
    labels: frozenset[str] = frozenset()
    modalities: frozenset[str] = frozenset()
    referring_token: str = ""
    """Blind index (hex) of the Referring Physician's Name, or ``""``."""
    stored_at: datetime = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Resource:
    """What an action touches. ``kind`` is archive, patient, study, series, instance, audit-log, audit-message,
    account, device, allow-list or policy-set.

    Study-level kinds carry :class:`StudyAccess`; without it the authorizer denies.
    """

    kind: str
    uid: str = ""
    study_uid: str = ""
    patient_ref: str = ""
    modality: str = ""
    attributes: Mapping[str, object] = field(default_factory=dict)
    access: StudyAccess | None = None

    @classmethod
    def archive(cls) -> Resource:
        return cls("archive")

    @classmethod
    def share_link(cls, share_id: str, owner: str) -> Resource:
        """A share link as the target of reading or revocation: its owner decides who may."""
        return cls("share-link", share_id, attributes={"owner": owner})

    @classmethod
    def incident(cls, incident_id: int | str) -> Resource:
        """An incident (``*``: incidents in general, e.g. to open one or list them)."""
        return cls("incident", str(incident_id))

    @classmethod
    def peer(cls, name: str, external: bool = True) -> Resource:
        """A peer archive (site-to-site transfer)."""
        return cls("peer", name, attributes={"external": external})

    @classmethod
    def patient(cls, patient_ref: str) -> Resource:
        return cls("patient", patient_ref, patient_ref=patient_ref)

    @classmethod
    def study(cls, study_uid: str, patient_ref: str, access: StudyAccess, kind: str = "study", uid: str = "") -> Resource:
        return cls(kind, uid or study_uid, study_uid, patient_ref, ",".join(sorted(access.modalities)), access=access)

    @classmethod
    def account(cls, name: str, roles: Iterable[str] = (), department: str = "") -> Resource:
        """A user account as the target of administration: its name, current roles and department."""
        return cls("account", name, attributes={"name": name, "roles": tuple(sorted(roles)), "department": department})

    @classmethod
    def device(cls, ae_title: str, operations: Iterable[str] = (), department: str = "") -> Resource:
        """A device registration as the target of administration."""
        return cls("device", ae_title, attributes={"operations": tuple(operations), "department": department})

    @classmethod
    def allow_list(cls) -> Resource:
        """The legacy gateway's allow-list of (AE title, address) pairs."""
        return cls("allow-list")

    @classmethod
    def policy_set(cls) -> Resource:
        """The archive's Cedar policy files."""
        return cls("policy-set")

    @classmethod
    def audit_log(cls) -> Resource:
        return cls("audit-log")

    @classmethod
    def audit_message(cls, ref: str, *, about_others: bool, as_archive: bool = False) -> Resource:
        """An audit message a principal asserts (``audit-send``); ``ref`` names it (a keyed hash of its bytes).

        ``about_others``: an ActiveParticipant or the AuditSourceID of the message is not the sender itself;
        ``as_archive``: its AuditSourceID or its requestor is this archive (it would pass for the archive's own).
        """
        return cls("audit-message", ref, attributes={"about_others": about_others, "as_archive": as_archive})


NO_MFA_AGE = 2**31
"""``mfa_age`` of a principal with no interactive session: never fresh."""


@dataclass(frozen=True)
class RequestContext:
    """The Cedar request context (see ``policy/schema.cedarschema``)."""

    now: datetime
    mfa_age_s: int = NO_MFA_AGE
    emergency_patients: frozenset[str] = frozenset()
    studies_in_window: int = 0
    external: bool = False
    contained: bool = False
    """The principal is contained after an access-anomaly alert: every request needs a fresh step-up."""
    recipient: str = ""
    """For share: the kind of recipient (``internal``, ``external``, ``research``, ``patient``, ``peer``)."""
    deidentified: bool = False
    """For share: the share serves a de-identified copy."""
    read_only: bool = False
    """The archive is contained read-only during an incident: stores and changes are refused, reading goes on."""

    @classmethod
    def now_for(cls, principal: Principal) -> RequestContext:
        """The context of a principal as far as the principal itself tells (its session's MFA time)."""
        now = datetime.now(UTC)
        return cls(now, mfa_age_of(principal, now))

    def to_cedar(self) -> dict[str, object]:
        return {
            "now": int(self.now.timestamp()),
            "mfa_age": self.mfa_age_s,
            "emergency_patients": sorted(self.emergency_patients),
            "studies_in_window": self.studies_in_window,
            "external": self.external,
            "contained": self.contained,
            "recipient": self.recipient,
            "deidentified": self.deidentified,
            "read_only": self.read_only,
        }


def mfa_age_of(principal: Principal, now: datetime) -> int:
    mfa_at = principal.attributes.get("mfa_at")
    if not isinstance(mfa_at, datetime):
        return NO_MFA_AGE
    return max(0, int((now - mfa_at).total_seconds()))


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    policies: tuple[str, ...] = ()
    """Ids of the policies that determined the decision (Cedar's reasons)."""
    step_up: bool = False
    """Refused only by step-up guards: a fresh MFA confirmation would permit it."""
    break_glass: bool = False
    """Permitted under a break-glass grant: the access is marked as emergency access."""
    deidentify: bool = False
    """Refused only by guards annotated ``@deidentify``: the same request for a de-identified copy would be permitted."""


class AccessDenied(DicomGuardError):
    """The principal may not perform this action on this resource (default deny)."""

    def __init__(self, principal: Principal, action: Action, resource: Resource, reason: str) -> None:
        super().__init__(f"{principal.label()} may not {action.value} {resource.kind} {resource.uid}".rstrip() + f": {reason}")
        self.principal = principal
        self.action = action
        self.resource = resource
        self.reason = reason


class StepUpRequired(AccessDenied):
    """Refused until the principal confirms a fresh TOTP code (``POST /auth/step-up``)."""


class Authorizer(Protocol):
    def decide(self, principal: Principal, action: Action, resource: Resource, context: RequestContext | None = None) -> Decision: ...

    def decide_many(
        self, principal: Principal, action: Action, resources: Sequence[Resource], context: RequestContext | None = None
    ) -> list[Decision]: ...

    def study_scope(self, principal: Principal, action: Action, context: RequestContext | None = None) -> StudyScope:
        """At least every study ``principal`` may be permitted ``action`` on (``core.study_scope``, ADR 0019)."""
        ...
