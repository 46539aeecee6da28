"""Incident response (NIST SP 800-61r3 Respond): incidents, containment playbooks, breach scope, notifications.

Every step is decided by the policies (``incident-respond``: by default a security
officer with a TOTP at most 300 s old; ``incident-read``) and recorded twice: in the
incident's own timeline (``incident_steps``) and as a PS3.15 Security Alert with its
ledger leaf, in one transaction.

Containment, each reversible with a reason (``release``):

* ``user``: the account is disabled, its sessions end, its API tokens and share links
  are revoked (their recipients' sessions with them); the next request is refused.
* ``device``: its certificate is revoked (running associations are refused at their
  next operation) and it leaves the legacy gateway's allow-list. A release cannot
  un-revoke a certificate: the device is enrolled again (``device add``).
* ``network``: connections from the CIDR are refused at the HTTPS and DIMSE listeners.
* ``read-only``: the guard ``read-only-archive`` refuses stores and changes to everyone;
  reading for care goes on.

Scope answers from the audit trail (read through ``audit-read``, itself recorded):
which patients and studies a user, device or network queried, retrieved, exported or
shared in a time range, with counts per action and data category, and, from the last
``verify``, how many objects are provably unchanged.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from sqlalchemy import delete, select

from dicomguard.app.sealed_docs import SealedDocuments
from dicomguard.audit.codes import EventIds, EventTypes
from dicomguard.audit.store import AuditEntry, AuditFilter
from dicomguard.core.access import Action, Resource
from dicomguard.core.access_control import READ_ONLY_KEY
from dicomguard.core.events import IncidentRecorded
from dicomguard.core.keyring import PURPOSE_SHARE
from dicomguard.core.service import Service
from dicomguard.core.services.shares import revoke_links_of
from dicomguard.errors import DicomGuardError, NotFoundError
from dicomguard.identity import tokens, users
from dicomguard.index.db import as_utc, read_session
from dicomguard.index.models import ArchiveMeta, Device, GatewayAllow, Incident, IncidentStep, NetworkBlock, ShareLink, User

SEVERITIES = ("low", "medium", "high", "critical")
CONTAINMENTS = ("contain-user", "contain-device", "contain-network", "read-only")
NOTIFICATIONS = ("notified-authority", "notified-individuals", "notified-media", "notified-hhs")
"""Timeline actions that record a notification sent (the deadlines count them as met)."""

# Audit events that expose data, by what the subject did (PS3.15 A.5.3 EventIDs).
_EXPOSURES = {EventIds.QUERY.code: "query", EventIds.INSTANCES_TRANSFERRED.code: "retrieve", EventIds.EXPORT.code: "export",
              EventIds.INSTANCES_ACCESSED.code: "access"}
_SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."


class IncidentError(DicomGuardError, ValueError):
    """A step that does not apply (closed incident, nothing to release, bad target): a clear error, nothing changed."""


@dataclass
class Scope:
    """What a subject exposed in a time range (PHI: the patient list; reports use the counts only)."""

    subject: str
    since: datetime
    until: datetime
    patients: set[str] = field(default_factory=set)
    studies: set[str] = field(default_factory=set)
    instances: set[str] = field(default_factory=set)
    by_action: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    shares: set[str] = field(default_factory=set)
    refused: int = 0
    addresses: set[str] = field(default_factory=set)
    categories: dict[str, set[str]] = field(default_factory=dict)
    unchanged_objects: int | None = None
    integrity_problems: int | None = None
    verified_at: datetime | None = None

    def counts(self) -> dict[str, Any]:
        """Counts only (what reports and the incident record keep: no identifier)."""
        return {"subject": self.subject, "since": self.since.isoformat(), "until": self.until.isoformat(),
                "patients": len(self.patients), "studies": len(self.studies), "instances": len(self.instances),
                "shares": len(self.shares), "refused": self.refused,
                "by_action": {a: {"patients": len(v["patients"]), "studies": len(v["studies"]), "events": self.events.get(a, 0)}
                              for a, v in sorted(self.by_action.items())},
                "categories": {c: len(p) for c, p in sorted(self.categories.items())}, "addresses": sorted(self.addresses),
                "unchanged_objects": self.unchanged_objects, "integrity_problems": self.integrity_problems,
                "verified_at": self.verified_at.isoformat() if self.verified_at else None}

    def to_json(self) -> dict[str, Any]:
        return {**self.counts(), "patient_ids": sorted(self.patients), "study_uids": sorted(self.studies),
                "share_ids": sorted(self.shares)}

    def csv_rows(self) -> list[list[str]]:
        rows = [["action", "patient_id", "study_uid"]]
        for action, found in sorted(self.by_action.items()):
            rows += [[action, pid, ""] for pid in sorted(found["patients"])]
            rows += [[action, "", uid] for uid in sorted(found["studies"])]
        rows += [["share", "", sid] for sid in sorted(self.shares)]
        return rows


@dataclass(frozen=True)
class StepView:
    id: int
    at: datetime
    by: str
    kind: str
    target: str
    active: bool
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at.isoformat(), "by": self.by, "kind": self.kind, "target": self.target,
                "active": self.active, "detail": self.detail}


@dataclass(frozen=True)
class IncidentView:
    id: int
    title: str
    description: str
    severity: str
    status: str
    opened_by: str
    opened_at: datetime
    aware_at: datetime
    closed_at: datetime | None
    steps: tuple[StepView, ...] = ()
    scope: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "description": self.description, "severity": self.severity, "status": self.status,
                "opened_by": self.opened_by, "opened_at": self.opened_at.isoformat(), "aware_at": self.aware_at.isoformat(),
                "closed_at": self.closed_at.isoformat() if self.closed_at else None, "steps": [s.to_json() for s in self.steps],
                "scope": self.scope}


class IncidentService(Service):
    @cached_property
    def _docs(self) -> SealedDocuments:
        return SealedDocuments(self.ctx, PURPOSE_SHARE, b"dicomguard incident rows v1")

    def _key(self) -> bytes:
        return self._docs.ensure_key()

    def _seal(self, incident_id: int, doc: dict[str, Any]) -> bytes:
        return self._docs.seal("incidents", incident_id, doc)

    def _open(self, row: Incident) -> dict[str, Any]:
        return self._docs.open("incidents", row.id, row.sealed)  # type: ignore[no-any-return]

    # -- lifecycle ------------------------------------------------------------------------------

    def open(self, title: str, *, severity: str = "high", description: str = "", aware_at: datetime | None = None) -> int:
        """Open an incident (``incident-respond``); ``aware_at`` (default now) starts the notification clocks."""
        title = " ".join(title.split())
        if not title:
            raise ValueError("an incident needs a title")
        if severity not in SEVERITIES:
            raise ValueError(f"severity is one of {', '.join(SEVERITIES)}")
        now = datetime.now(UTC)
        aware = aware_at or now
        if aware > now:
            raise ValueError("the time of awareness cannot be in the future")
        self.access.authorize(Action.INCIDENT_RESPOND, Resource.incident("*"))
        self._key()
        with self.change() as s:
            row = Incident(severity=severity, status="open", opened_by=self.principal.label()[:256], opened_at=now, aware_at=aware,
                           closed_at=None, sealed=b"")
            s.add(row)
            s.flush()
            row.sealed = self._seal(row.id, {"title": title[:300], "description": description[:4000], "scope": None})
            self._step(s, row.id, "open", f"severity {severity}", {"severity": severity}, now, active=False)
            return row.id

    def close(self, incident_id: int, reason: str) -> IncidentView:
        row = self._incident(incident_id, Action.INCIDENT_RESPOND)
        if row.status == "closed":
            raise IncidentError(f"incident {incident_id} is already closed")
        reason = _reason(reason)
        now = datetime.now(UTC)
        with self.change() as s:
            active = list(s.scalars(select(IncidentStep).where(IncidentStep.incident_id == incident_id, IncidentStep.active.is_(True))))
            if active:
                raise IncidentError(f"release the containments in force first (steps {', '.join(str(a.id) for a in active)}), "
                                    "or keep the incident open")
            row = s.get(Incident, incident_id)  # type: ignore[assignment]
            row.status, row.closed_at = "closed", now
            self._step(s, incident_id, "close", "", {"reason": reason}, now, active=False)
        return self.show(incident_id)

    def list(self, *, include_closed: bool = False) -> list[IncidentView]:
        self.access.authorize(Action.INCIDENT_READ, Resource.incident("*"))
        with read_session(self.ctx.engine) as s:
            q = select(Incident).order_by(Incident.id.desc())
            if not include_closed:
                q = q.where(Incident.status == "open")
            rows = list(s.scalars(q))
        return [self._view(r, ()) for r in rows]

    def show(self, incident_id: int) -> IncidentView:
        row = self._incident(incident_id, Action.INCIDENT_READ)
        with read_session(self.ctx.engine) as s:
            steps = [StepView(x.id, as_utc(x.at), x.by, x.kind, x.target, x.active, json.loads(x.detail))
                     for x in s.scalars(select(IncidentStep).where(IncidentStep.incident_id == incident_id).order_by(IncidentStep.id))]
        return self._view(row, tuple(steps))

    def _view(self, row: Incident, steps: tuple[StepView, ...]) -> IncidentView:
        doc = self._open(row)
        return IncidentView(row.id, doc["title"], doc.get("description", ""), row.severity, row.status, row.opened_by,
                            as_utc(row.opened_at), as_utc(row.aware_at), as_utc(row.closed_at) if row.closed_at else None, steps,
                            doc.get("scope"))

    def _incident(self, incident_id: int, action: Action) -> Incident:
        self.access.authorize(action, Resource.incident(incident_id))
        with read_session(self.ctx.engine) as s:
            row = s.get(Incident, incident_id)
        if row is None:
            raise NotFoundError(f"no incident {incident_id}")
        return row

    def _open_incident(self, incident_id: int) -> Incident:
        row = self._incident(incident_id, Action.INCIDENT_RESPOND)
        if row.status != "open":
            raise IncidentError(f"incident {incident_id} is closed")
        return row

    def _step(self, s: Any, incident_id: int, kind: str, target: str, detail: dict[str, Any], now: datetime, *, active: bool) -> int:
        step = IncidentStep(incident_id=incident_id, at=now, by=self.principal.label()[:256], kind=kind, target=target[:256], active=active,
                            detail=json.dumps(detail))
        s.add(step)
        s.flush()
        self.record(s, IncidentRecorded(self.principal, incident_id, kind, target[:256], json.dumps(detail)[:2000], now))
        return step.id

    # -- containment ------------------------------------------------------------------------------

    def contain_user(self, incident_id: int, user: str, reason: str) -> int:
        """Disable the account, end its sessions, revoke its tokens and share links; returns the step id."""
        self._open_incident(incident_id)
        reason = _reason(reason)
        now = datetime.now(UTC)
        with self.change() as s:
            account = s.get(User, user)
            if account is None:
                raise NotFoundError(f"no user {user}")
            was_disabled = bool(account.disabled)
            users.set_disabled(s, user, True)
            users.end_sessions(s, user, now)
            revoked_tokens = tokens.revoke_user_tokens(s, user)
            links = revoke_links_of(s, self.ctx, self.principal, user, f"incident {incident_id}: {reason}"[:300], now)
            return self._step(s, incident_id, "contain-user", user, {"reason": reason, "tokens_revoked": revoked_tokens,
                                                                    "share_links_revoked": links, "was_disabled": was_disabled},
                              now, active=True)

    def contain_device(self, incident_id: int, ae_title: str, reason: str) -> int:
        """Revoke the device's certificate and remove it from the gateway allow-list; returns the step id."""
        self._open_incident(incident_id)
        reason = _reason(reason)
        now = datetime.now(UTC)
        with self.change() as s:
            device = s.get(Device, ae_title)
            if device is None:
                raise NotFoundError(f"no device {ae_title}")
            from dicomguard.pki.devices import DeviceRegistry

            DeviceRegistry.revoke(s, ae_title)
            allowed = s.execute(delete(GatewayAllow).where(GatewayAllow.ae_title == ae_title)).rowcount or 0
            return self._step(s, incident_id, "contain-device", ae_title, {"reason": reason, "allow_list_entries_removed": allowed},
                              now, active=True)

    def contain_network(self, incident_id: int, cidr: str, reason: str) -> int:
        """Refuse connections from ``cidr`` at the HTTPS and DIMSE listeners; returns the step id."""
        self._open_incident(incident_id)
        reason = _reason(reason)
        try:
            network = ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError:
            raise ValueError(f"{cidr!r} is not a network (e.g. 10.20.0.0/16 or 2001:db8::/32)") from None
        now = datetime.now(UTC)
        with self.change() as s:
            if s.get(NetworkBlock, str(network)) is not None:
                raise IncidentError(f"{network} is already contained")
            s.add(NetworkBlock(cidr=str(network), incident_id=incident_id, since=now))
            return self._step(s, incident_id, "contain-network", str(network), {"reason": reason}, now, active=True)

    def read_only(self, incident_id: int, reason: str) -> int:
        """Hold the whole archive read-only (guard ``read-only-archive``); returns the step id."""
        self._open_incident(incident_id)
        reason = _reason(reason)
        now = datetime.now(UTC)
        with self.change() as s:
            if s.get(ArchiveMeta, READ_ONLY_KEY) is not None:
                raise IncidentError("the archive is already read-only")
            s.add(ArchiveMeta(key=READ_ONLY_KEY, value=str(incident_id)))
            return self._step(s, incident_id, "read-only", "archive", {"reason": reason}, now, active=True)

    def release(self, incident_id: int, step_id: int, reason: str) -> None:
        """End a containment in force, with a reason (recorded)."""
        self._open_incident(incident_id)
        reason = _reason(reason)
        now = datetime.now(UTC)
        with self.change() as s:
            step = s.get(IncidentStep, step_id)
            if step is None or step.incident_id != incident_id or not step.active:
                raise IncidentError(f"step {step_id} is not a containment in force in incident {incident_id}")
            detail = json.loads(step.detail)
            note = ""
            if step.kind == "contain-user" and not detail.get("was_disabled"):
                users.set_disabled(s, step.target, False)
                note = "account enabled again (revoked tokens and links stay revoked)"
            elif step.kind == "contain-device":
                note = "the certificate stays revoked: enrol the device again (dicomguard device add)"
            elif step.kind == "contain-network":
                s.execute(delete(NetworkBlock).where(NetworkBlock.cidr == step.target))
            elif step.kind == "read-only":
                s.execute(delete(ArchiveMeta).where(ArchiveMeta.key == READ_ONLY_KEY))
            step.active = False
            self._step(s, incident_id, "release", f"{step.kind} {step.target}", {"step": step_id, "reason": reason, "note": note}, now,
                       active=False)

    def note(self, incident_id: int, kind: str, text: str) -> int:
        """A timeline entry: a notification sent (``notified-*``) or a free note."""
        if kind not in (*NOTIFICATIONS, "note"):
            raise ValueError(f"a timeline entry is one of {', '.join((*NOTIFICATIONS, 'note'))}")
        self._open_incident(incident_id)
        now = datetime.now(UTC)
        with self.change() as s:
            return self._step(s, incident_id, kind, "", {"text": " ".join(text.split())[:2000]}, now, active=False)

    def record_verification(self, incident_id: int, checked: int, problems: int) -> int:
        """Record a forced ``verify`` run as a step (its counts feed the scope)."""
        self._open_incident(incident_id)
        now = datetime.now(UTC)
        with self.change() as s:
            return self._step(s, incident_id, "verify", "archive", {"checked": checked, "problems": problems}, now, active=False)

    # -- scope --------------------------------------------------------------------------------------

    def scope(self, incident_id: int, *, user: str | None = None, device: str | None = None, network: str | None = None,
              share: str | None = None, since: datetime, until: datetime) -> Scope:
        """What ``user``, ``device``, ``network`` or the recipients of share link ``share`` exposed between ``since`` and
        ``until``, from the audit trail. (An API token acts as its user: scope the user.)"""
        if sum(x is not None for x in (user, device, network, share)) != 1:
            raise ValueError("scope one subject: --user, --device, --network or --share")
        if since >= until:
            raise ValueError("--since must be before --until")
        self._incident(incident_id, Action.INCIDENT_READ)
        with read_session(self.ctx.engine) as s:
            if user is not None and s.get(User, user) is None:
                raise NotFoundError(f"no user {user}")
            if device is not None and s.get(Device, device) is None:
                raise NotFoundError(f"no device {device}")
        cidr = None
        if network is not None:
            try:
                cidr = ipaddress.ip_network(network.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not a network") from None
        if share is not None:
            with read_session(self.ctx.engine) as s:
                if s.get(ShareLink, share.strip().lower()) is None:
                    raise NotFoundError(f"no share link {share}")
            user = f"share:{share.strip().lower()}"  # a link's recipients are recorded under this name
        subject = (f"share link {share}" if share else f"user {user}" if user else f"device {device}" if device
                   else f"network {cidr}")
        from dicomguard.audit.service import AuditService

        reader = AuditService(self.ctx, self.access)
        entries = reader.read(AuditFilter(user=user or device, since=since, until=until), f"incident {incident_id} scope of {subject}")
        result = Scope(subject, since, until)
        for entry in entries:
            if cidr is not None and not _in(entry, cidr):
                continue
            _account(result, entry)
        self._verification(incident_id, result)
        now = datetime.now(UTC)
        with self.change() as s:
            row = s.get(Incident, incident_id)
            assert row is not None
            doc = self._open(row)
            doc["scope"] = result.counts()
            doc["scope_patients"] = sorted(result.patients)  # sealed: the letters need them (GDPR Art. 34)
            row.sealed = self._seal(incident_id, doc)
            self._step(s, incident_id, "scope", subject, {"patients": len(result.patients), "studies": len(result.studies),
                                                          "shares": len(result.shares)}, now, active=False)
        return result

    # -- notifications ------------------------------------------------------------------------------

    def report(self, incident_id: int, kind: str, *, render: str = "text", organisation: str = "", contact: str | None = None) -> str:
        """A breach-notification draft (GDPR Art. 33, HIPAA 164.404, HHS 164.408) from the incident: counts, never identifiers.

        Recorded as a timeline step (what was drafted, when, by whom).
        """
        from dicomguard.incident.reports import build_report, render_html, render_text

        if render not in ("text", "html", "json"):
            raise ValueError("render a report as text, html or json")
        facts = self._facts(incident_id, organisation, contact)
        built = build_report(kind, facts, datetime.now(UTC))
        text = json.dumps(built.to_json(), indent=2) if render == "json" else render_html(built) if render == "html" else render_text(built)
        with self.change() as s:
            self._step(s, incident_id, "report", kind, {"render": render}, datetime.now(UTC), active=False)
        return text

    def _facts(self, incident_id: int, organisation: str, contact: str | None) -> Any:
        """The incident as the notification drafts see it: counts, timeline and measures, never an identifier."""
        from dicomguard.incident.facts import IncidentFacts, ScopeSummary, TimelineEntry

        view = self.show(incident_id)
        scope = None
        if view.scope is not None:
            c = view.scope
            scope = ScopeSummary(subject=c["subject"], since=datetime.fromisoformat(c["since"]), until=datetime.fromisoformat(c["until"]),
                                 patients=c["patients"], studies=c["studies"], instances=c.get("instances", 0),
                                 by_action={a: dict(v) for a, v in c["by_action"].items()}, categories=dict(c["categories"]),
                                 shares=c["shares"], addresses=tuple(c["addresses"]), unchanged_objects=c["unchanged_objects"],
                                 integrity_problems=c["integrity_problems"],
                                 verified_at=datetime.fromisoformat(c["verified_at"]) if c["verified_at"] else None)
        timeline = tuple(TimelineEntry(st.at, st.by, st.kind, _describe(st)) for st in view.steps)
        measures = tuple(m for m in (_public_measure(st) for st in view.steps) if m)
        # When the breach itself happened is for a person to establish: the scope's window is only what was examined.
        return IncidentFacts(id=view.id, title=view.title, severity=view.severity, status=view.status, opened_at=view.aware_at,
                             occurred_from=None, occurred_until=None,
                             closed_at=view.closed_at, organisation=organisation or self.ctx.settings.archive.ae_title,
                             contact=contact, timeline=timeline, scope=scope, measures=measures)

    def deadlines(self, incident_id: int) -> list[dict[str, Any]]:
        """The notification deadlines (GDPR 72 h, HIPAA 60 days, media, HHS) and whether the timeline shows them met."""
        from dicomguard.incident.deadlines import deadlines

        facts = self._facts(incident_id, "", None)
        return [{"name": d.name, "due": d.due.isoformat(), "status": d.status, "citation": d.citation, "note": d.note}
                for d in deadlines(facts, datetime.now(UTC))]

    def record_key_rotation(self, incident_id: int, kek_id: str, keys: int) -> int:
        """Record a key rotation made for the incident (``keys rotate`` as a step of the response)."""
        self._open_incident(incident_id)
        now = datetime.now(UTC)
        with self.change() as s:
            return self._step(s, incident_id, "rotate-keys", "archive", {"kek_id": kek_id, "keys_rewrapped": keys}, now, active=False)

    def letters(self, incident_id: int, *, organisation: str = "", contact: str | None = None) -> dict[str, str]:
        """One plain-language letter per patient of the last scope (GDPR Art. 34, HIPAA 164.404(c)): Patient ID -> text.

        The letters name the person (their own name only); reading the names is decided as ``incident-read`` and recorded
        as a timeline step with the number of letters.
        """
        from dicomguard.core.query import IndexQuery, PatientFilter
        from dicomguard.incident.letters import patient_letter

        row = self._incident(incident_id, Action.INCIDENT_READ)
        patients = self._open(row).get("scope_patients") or []
        if not patients:
            raise IncidentError("no breach scope with patients yet: run the scope first")
        facts = self._facts(incident_id, organisation, contact)
        out: dict[str, str] = {}
        index = IndexQuery(self.ctx)
        for pid in patients:
            found = index.patients(PatientFilter(patient_id=pid))
            name = found[0].name.replace("^", " ").strip() if found else ""
            out[pid] = patient_letter(facts, patient_name=name or "patient")
        with self.change() as s:
            self._step(s, incident_id, "letters", "", {"letters": len(out)}, datetime.now(UTC), active=False)
        return out

    def _verification(self, incident_id: int, result: Scope) -> None:
        with read_session(self.ctx.engine) as s:
            last = s.scalar(select(IncidentStep).where(IncidentStep.incident_id == incident_id, IncidentStep.kind == "verify")
                            .order_by(IncidentStep.id.desc()).limit(1))
        if last is not None:
            detail = json.loads(last.detail)
            result.unchanged_objects = int(detail["checked"]) - int(detail["problems"])
            result.integrity_problems = int(detail["problems"])
            result.verified_at = as_utc(last.at)


def _describe(step: StepView) -> str:
    """One line of the timeline for a report: what was done to what, and why (no PHI is ever in a step)."""
    d = step.detail
    why = d.get("reason") or d.get("text") or ""
    extra = {k: v for k, v in d.items() if k not in ("reason", "text") and v not in (None, "", False)}
    return f"{step.kind} {step.target}".strip() + (f": {why}" if why else "") + (f" ({extra})" if extra else "")


_PUBLIC_MEASURES = {
    "rotate-keys": "All encryption keys were re-protected under a new master key.",
    "contain-user": "The user account involved was disabled, its sessions ended and its access tokens and share links revoked.",
    "contain-device": "The device involved was disconnected: its certificate was revoked.",
    "contain-network": "Connections from the network involved were blocked.",
    "read-only": "The image archive was held read-only: nothing could be stored or changed.",
    "release": "A containment was lifted after review.",
}


def _public_measure(step: StepView) -> str:
    """A measure as notifications and letters may say it: what kind of step, never which account or device."""
    if step.kind == "verify":
        return (f"The integrity of {step.detail.get('checked', 0)} stored objects was verified against the tamper-evident ledger: "
                f"{step.detail.get('problems', 0)} problem(s) found.")
    return _PUBLIC_MEASURES.get(step.kind, "")


def _reason(text: str) -> str:
    text = " ".join(text.split())
    if len(text) < 5:
        raise ValueError("give a reason (at least 5 characters): it is recorded")
    return text[:500]


def _in(entry: AuditEntry, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    try:
        return ipaddress.ip_address(entry.summary()["address"]) in network
    except ValueError:
        return False


def _account(result: Scope, entry: AuditEntry) -> None:
    """Add what one audit record exposed (or was refused) to the scope."""
    summary = entry.summary()
    if summary["address"]:
        result.addresses.add(summary["address"])
    if entry.event_id == EventIds.SECURITY_ALERT.code:
        if EventTypes.SHARE_CREATED.code in summary["event_types"]:
            for o in entry.message.objects:
                if o.object_id.startswith("urn:dicomguard:share:"):
                    result.shares.add(o.object_id.rsplit(":", 1)[1])
            _expose(result, "share", summary["patients"], summary["studies"], entry)
        elif EventTypes.ACCESS_REFUSED.code in summary["event_types"]:
            result.refused += 1
        return
    action = _EXPOSURES.get(entry.event_id)
    if action is None or summary["outcome"] != 0:
        return
    _expose(result, action, summary["patients"], summary["studies"], entry)


def _expose(result: Scope, action: str, patients: Sequence[str], studies: Sequence[str], entry: AuditEntry) -> None:
    found = result.by_action.setdefault(action, {"patients": set(), "studies": set()})
    found["patients"].update(patients)
    found["studies"].update(studies)
    result.events[action] = result.events.get(action, 0) + 1
    result.patients.update(patients)
    result.studies.update(studies)
    # Categories (GDPR Art. 33(3)(a)): a query answers with identifiers; reads deliver images, structured reports too.
    result.categories.setdefault("identifiers", set()).update(patients)
    if action in ("retrieve", "export", "access", "share"):
        classes = [c for o in entry.message.objects for d in o.descriptions for c in d.sop_classes]
        for c in classes:
            result.instances.update(c.instances)
        result.categories.setdefault("images", set()).update(patients)
        if any((c.uid or "").startswith(_SR_PREFIX) for c in classes):
            result.categories.setdefault("reports", set()).update(patients)


_SCOPE_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Incident {{ n }}: breach scope</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<style>body{font-family:sans-serif;margin:2rem}table{border-collapse:collapse}td,th{border:1px solid #999;padding:.2rem .5rem}</style>
</head><body><h1>Incident {{ n }}: breach scope of {{ c.subject }}</h1>
<p>{{ c.since }} to {{ c.until }}. Contains patient identifiers: keep it with the incident file.</p>
<table><tr><th>patients</th><th>studies</th><th>share links</th><th>refused attempts</th><th>objects verified unchanged</th></tr>
<tr><td>{{ c.patients }}</td><td>{{ c.studies }}</td><td>{{ c.shares }}</td><td>{{ c.refused }}</td>
<td>{{ c.unchanged_objects if c.unchanged_objects is not none else "not verified in this incident" }}</td></tr></table>
<h2>By action</h2><table><tr><th>action</th><th>patients</th><th>studies</th><th>events</th></tr>
{% for a, v in c.by_action.items() %}<tr><td>{{ a }}</td><td>{{ v.patients }}</td><td>{{ v.studies }}</td><td>{{ v.events }}</td></tr>{% endfor %}
</table><h2>Data categories</h2><ul>{% for k, v in c.categories.items() %}<li>{{ k }}: {{ v }} patients</li>{% endfor %}</ul>
<h2>Patients</h2><ul>{% for p in patients %}<li>{{ p }}</li>{% endfor %}</ul>
<h2>Share links</h2><ul>{% for s in shares %}<li>{{ s }}</li>{% endfor %}</ul>
<h2>From addresses</h2><ul>{% for a in c.addresses %}<li>{{ a }}</li>{% endfor %}</ul></body></html>
"""


def scope_html(incident_id: int, result: Scope) -> str:
    """A standalone page of the scope (no script; escaped): for the incident file."""
    from jinja2 import Environment

    template = Environment(autoescape=True).from_string(_SCOPE_PAGE)
    return template.render(n=incident_id, c=result.counts(), patients=sorted(result.patients), shares=sorted(result.shares))
