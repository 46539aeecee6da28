"""Who may do what: principals, actions, resources and the authorizer seam.

Every core service takes the verified :class:`Principal` of the request and
asks the archive's :class:`Authorizer` before it touches patient data (zero
trust: a request is authorized at the point of use, whatever network it came
from). Refusals raise :class:`AccessDenied` and are published as
``AccessRefused`` events for the audit trail.

Until the policy engine of the identity issue lands, :class:`InterimAuthorizer`
decides with a fixed, default-deny table: devices may do only the operations
listed for them; users by role; the local operator (who holds the archive
passphrase and could decrypt everything anyway) may do everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from dicomguard.errors import DicomGuardError


class Action(StrEnum):
    STORE = "store"
    QUERY = "query"
    RETRIEVE = "retrieve"
    EXPORT = "export"
    ERASE = "erase"
    SHARE = "share"
    AUDIT_READ = "audit-read"
    ADMINISTER = "administer"
    CONNECT = "connect"
    """Opening an association or session: refused connections are recorded under it."""


class PrincipalKind(StrEnum):
    USER = "user"
    DEVICE = "device"
    OPERATOR = "operator"


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

    def label(self) -> str:
        return f"{self.kind.value}:{self.name}"


@dataclass(frozen=True)
class Resource:
    """What an action touches. ``kind`` is archive, patient, study, series or instance."""

    kind: str
    uid: str = ""
    study_uid: str = ""
    patient_ref: str = ""
    modality: str = ""
    attributes: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def archive(cls) -> Resource:
        return cls("archive")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    policies: tuple[str, ...] = ()


class AccessDenied(DicomGuardError):
    """The principal may not perform this action on this resource (default deny)."""

    def __init__(self, principal: Principal, action: Action, resource: Resource, reason: str) -> None:
        super().__init__(f"{principal.label()} may not {action.value} {resource.kind} {resource.uid}".rstrip() + f": {reason}")
        self.principal = principal
        self.action = action
        self.resource = resource
        self.reason = reason


class Authorizer(Protocol):
    def decide(self, principal: Principal, action: Action, resource: Resource) -> Decision: ...


# Interim role table (identity issue replaces it with Cedar policies).
_CLINICAL_READ = frozenset({Action.QUERY, Action.RETRIEVE})
_ROLE_ACTIONS: dict[str, frozenset[Action]] = {
    "radiologist": _CLINICAL_READ | {Action.EXPORT},
    "cardiologist": _CLINICAL_READ | {Action.EXPORT},
    "technologist": _CLINICAL_READ | {Action.STORE},
    "sonographer": _CLINICAL_READ | {Action.STORE},
    "referring_physician": _CLINICAL_READ,
    "researcher": frozenset(),
    "security_officer": frozenset({Action.AUDIT_READ}),
    "admin": frozenset({Action.ADMINISTER}),
}


class InterimAuthorizer:
    """Default-deny decisions from a fixed table (see module docstring)."""

    def decide(self, principal: Principal, action: Action, resource: Resource) -> Decision:
        if principal.kind is PrincipalKind.OPERATOR:
            return Decision(True, "local operator holds the archive keys", ("operator",))
        if principal.kind is PrincipalKind.DEVICE:
            allowed = principal.attributes.get("operations", ())
            if action.value in allowed:  # type: ignore[operator]
                return Decision(True, f"device may {action.value}", ("device-operations",))
            return Decision(False, f"device is not allowed to {action.value}", ("device-operations",))
        for role in principal.roles:
            if action in _ROLE_ACTIONS.get(role, frozenset()):
                return Decision(True, f"role {role} may {action.value}", (f"role:{role}",))
        return Decision(False, "no rule permits it (default deny)", ())
