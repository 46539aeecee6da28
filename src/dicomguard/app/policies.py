"""The policy set as a service: loading it at start, reloading it (SIGHUP), explaining a decision (``policy test``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from dicomguard.config import Settings
from dicomguard.core.access import (
    NO_MFA_AGE,
    Action,
    Decision,
    Principal,
    RequestContext,
    Resource,
)
from dicomguard.core.events import SecurityConfigurationChanged
from dicomguard.core.service import Service
from dicomguard.errors import NotFoundError
from dicomguard.identity import users
from dicomguard.index.db import read_session
from dicomguard.index.models import User
from dicomguard.pki.devices import DeviceRegistry
from dicomguard.policy.engine import LoadedPolicy, PolicyEngine, PolicyError, install_default_policies

log = logging.getLogger(__name__)


def policy_directory(root: Path, settings: Settings) -> Path:
    return root / settings.policy.directory


def load_policies(root: Path, settings: Settings) -> PolicyEngine:
    """The archive's validated Cedar policies; raises :class:`PolicyError` (refuse to start) if any is invalid.

    A home made before policies existed gets the shipped defaults written in
    first (they are least privilege); an existing folder is never touched.
    """
    folder = policy_directory(root, settings)
    if not folder.exists():
        log.warning("no policy folder %s: writing the shipped default policies there", folder)
        install_default_policies(folder)
    return PolicyEngine.load(folder)


@dataclass(frozen=True)
class Explanation:
    """A decision and what it was made on (``dicomguard policy test``); never a Patient ID or a name."""

    principal: Principal
    action: Action
    resource: Resource
    context: RequestContext
    decision: Decision
    policies: dict[str, LoadedPolicy]
    notes: list[str] = field(default_factory=list)


class PolicyService(Service):
    def reload(self) -> PolicyEngine:
        """Load the policy files again (``policy-reload``): on any error the running policies stay.

        Either way the attempt is recorded as a Security Configuration alert naming
        the policy set by its SHA-256, or the validation error. Raises
        :class:`PolicyError` when the new set was refused.
        """
        self.access.authorize(Action.POLICY_RELOAD, Resource.policy_set())
        try:
            engine = load_policies(self.ctx.home, self.ctx.settings)
        except PolicyError as exc:
            self._record(f"policy reload refused, the running policies stay: {exc}")
            raise
        self.ctx.authorizer = engine
        self._record(f"policies reloaded: {len(engine.policies)} policies from {engine.files} files, sha256 {engine.fingerprint}")
        return engine

    def _record(self, change: str) -> None:
        self.record_alone(SecurityConfigurationChanged(self.principal, "policies", change[:1000], datetime.now(UTC)))

    def explain(
        self, principal_spec: str, action: Action, resource_spec: str, *, issuer: str | None = None, mfa_age: int | None = None,
        emergency: bool = False, studies_in_window: int | None = None, external: bool = False, draft: PolicyEngine | None = None,
    ) -> Explanation:
        """Would the named principal be allowed ``action`` on the named resource (``policy-read``)?

        ``principal_spec``: ``user:NAME``, ``device:AE_TITLE`` or ``operator``;
        ``resource_spec``: ``study:UID``, ``patient:PATIENT_ID``, ``account:NAME``,
        ``device:AE_TITLE``, ``archive``, ``audit-log``, ``audit-message:about-itself|about-others|as-archive``
        (for ``audit-send``), ``allow-list`` or ``policy-set``.
        ``draft``: decide with these policies instead of the running ones.
        Raises ``ValueError`` (bad spec) or :class:`NotFoundError` (unknown principal or resource).
        """
        self.access.authorize(Action.POLICY_READ, Resource.policy_set())
        engine = draft or self.ctx.authorizer
        principal, notes = self._principal(principal_spec)
        resource = self._resource(resource_spec, issuer)
        if emergency and not resource.patient_ref:
            raise ValueError("--emergency needs a study or patient resource")
        if studies_in_window is None:
            studies_in_window = 1 if action in (Action.RETRIEVE, Action.EXPORT) and resource.kind == "study" else 0
        context = RequestContext(
            datetime.now(UTC),
            NO_MFA_AGE if mfa_age is None else mfa_age,
            frozenset({resource.patient_ref}) if emergency else frozenset(),
            studies_in_window,
            external,
        )
        decision = engine.decide(principal, action, resource, context)
        return Explanation(principal, action, resource, context, decision, dict(getattr(engine, "policies", {})), notes)

    def _principal(self, spec: str) -> tuple[Principal, list[str]]:
        kind, _, name = spec.partition(":")
        notes: list[str] = []
        if spec == "operator":
            return Principal.operator(), notes
        if kind == "user" and name:
            with read_session(self.ctx.engine) as s:
                principal = users.user_principal(s, name)
                user = s.get(User, name)
                if user is not None and user.disabled:
                    notes.append("the account is disabled: it cannot authenticate, whatever the policies say")
            return principal, notes
        if kind == "device" and name:
            device = DeviceRegistry(self.ctx.engine).get(name)
            if device is None:
                raise NotFoundError(f"no device {name}")
            if device.revoked:
                notes.append("the device's certificate is revoked: it cannot connect, whatever the policies say")
            return device.principal(None), notes
        raise ValueError("--principal is user:NAME, device:AE_TITLE or operator")

    def _resource(self, spec: str, issuer: str | None) -> Resource:
        kind, _, value = spec.partition(":")
        simple = {"archive": Resource.archive, "audit-log": Resource.audit_log, "allow-list": Resource.allow_list,
                  "policy-set": Resource.policy_set}
        if spec in simple:
            return simple[spec]()
        if kind == "study" and value:
            found = self.access.study_resources([value]).get(value)
            if found is None:
                raise NotFoundError(f"unknown study {value}: the archive holds no study with this Study Instance UID")
            return found
        if kind == "patient" and value:
            matches = self.ctx.patients.find(value, issuer)
            if not matches:
                raise NotFoundError("unknown patient: no live patient with this Patient ID" + (" and issuer" if issuer else ""))
            if len({ref for ref, _ in matches}) > 1:
                raise ValueError(f"{len(matches)} patients have this Patient ID: give --issuer")
            return Resource.patient(matches[0][0])
        if kind == "account" and value:
            with read_session(self.ctx.engine) as s:
                user = s.get(User, value)
                if user is None:
                    raise NotFoundError(f"no user {value!r}")
                return Resource.account(value, users.user_roles(s, value), user.department or "")
        if kind == "device" and value:
            device = DeviceRegistry(self.ctx.engine).get(value)
            if device is None:
                raise NotFoundError(f"no device {value}")
            return Resource.device(value, device.operations, device.department or "")
        if kind == "audit-message" and value in ("about-itself", "about-others", "as-archive"):
            return Resource.audit_message(value, about_others=value != "about-itself", as_archive=value == "as-archive")
        raise ValueError("--resource is study:UID, patient:PATIENT_ID, account:NAME, device:AE_TITLE, archive, audit-log, "
                         "audit-message:about-itself|about-others|as-archive, allow-list or policy-set")
