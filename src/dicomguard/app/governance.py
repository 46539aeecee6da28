"""Governance: routine log review with sign-off, the risk register, the asset inventory, media sanitisation records.

* **Log review** (HIPAA 164.308(a)(1)(ii)(D) information system activity review; CSF
  DE.AE-02): a review assembles one period of the audit trail (read through ``audit-read``,
  itself recorded) into counts (records, users, refused requests, failed logins,
  lockouts, break-glass uses, exports, integrity alerts, open alerts); a security officer
  signs it off with a note (``log-review``). ``serve`` assembles one every
  ``[audit] review_every_days``; the posture reports an overdue sign-off as a gap.
* **Risk register** (NIST SP 800-30: asset, threat, vulnerability, likelihood 1-5, impact
  1-5, owner, treatment, due date) kept by the officer (``risk-manage``), listed with the
  risks the archive derives itself from its own state (``risk-read``): every posture gap,
  and an administrator account unused for 90 days.
* **Asset inventory** (CSF ID.AM-01/02): devices with certificate expiry, operations,
  department and legacy-gateway status; storage and backup targets; privileged accounts.
* **Media sanitisation** (NIST SP 800-88): the retirement of a disk, tape or key, with its
  method, recorded as evidence in the audit trail and the ledger.

Every change is one ``GovernanceRecorded`` event (a Security Alert and its ledger leaf).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from dicomguard.app.periodic import PeriodicTask
from dicomguard.audit.store import AuditFilter
from dicomguard.core.access import Action, Resource
from dicomguard.core.events import GovernanceRecorded
from dicomguard.core.service import Service
from dicomguard.errors import DicomGuardError, NotFoundError
from dicomguard.index.db import as_utc, read_session
from dicomguard.index.models import AlertRow, AuthSession, Device, GatewayAllow, LogReview, Risk, User

log = logging.getLogger(__name__)
RISK_STATUSES = ("open", "accepted", "closed")
PRIVILEGED_ROLES = ("admin", "security_officer")
UNUSED_ADMIN = timedelta(days=90)


class GovernanceError(DicomGuardError, ValueError):
    """A governance step that does not apply (a review signed twice): a clear error, nothing changed."""


@dataclass(frozen=True)
class RiskView:
    id: int | None
    source: str
    """``register`` (kept by a person) or ``derived`` (the archive's own state)."""
    asset: str
    threat: str
    vulnerability: str
    likelihood: int
    impact: int
    owner: str
    treatment: str
    due: datetime | None
    status: str

    @property
    def score(self) -> int:
        return self.likelihood * self.impact

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "asset": self.asset, "threat": self.threat, "vulnerability": self.vulnerability,
                "likelihood": self.likelihood, "impact": self.impact, "score": self.score, "owner": self.owner,
                "treatment": self.treatment, "due": self.due.isoformat() if self.due else None, "status": self.status}


# Derived risks from posture gaps: (asset, threat, likelihood, impact).
_GAP_RISKS = {
    "tls-in-transit": ("legacy modalities", "interception of unencrypted DICOM on the hospital LAN", 3, 4),
    "mfa-step-up": ("access policies", "account takeover used for erasure, bulk retrieval or external sharing", 3, 5),
    "mfa-enrolled": ("user accounts", "password-only account takeover", 4, 4),
    "audit-forwarding": ("audit trail", "an intruder with archive access hides their trace (no copy outside)", 2, 4),
    "backup-drill": ("backups", "ransomware with no tested restore", 3, 5),
    "integrity-verified": ("stored images", "undetected alteration of images or headers", 2, 4),
    "alerts-reviewed": ("access-anomaly alerts", "ongoing snooping or exfiltration left unreviewed", 3, 4),
    "certificates": ("device certificates", "outage or unauthenticated fallback when certificates expire", 3, 3),
    "log-review": ("audit trail", "misuse undetected for lack of routine review", 3, 3),
    "incidents": ("incident response", "an incident left uncontained", 2, 4),
}


class GovernanceService(Service):
    # -- log review ------------------------------------------------------------------------------

    def assemble_review(self, since: datetime | None = None, until: datetime | None = None) -> int:
        """Assemble a review of ``since``..``until`` (default: from the last review's end, or 7 days, to now); returns its id."""
        self.access.authorize(Action.LOG_REVIEW, Resource.archive())
        from dicomguard.audit.report import review
        from dicomguard.audit.service import AuditService

        now = datetime.now(UTC)
        until = until or now
        if since is None:
            with read_session(self.ctx.engine) as s:
                last = s.scalar(select(func.max(LogReview.period_end)))
            since = as_utc(last) if last is not None else until - timedelta(days=max(1, self.ctx.settings.audit.review_every_days))
        if since >= until:
            raise GovernanceError("the review period is empty (since is not before until)")
        entries = AuditService(self.ctx, self.access).read(AuditFilter(since=since, until=until), "routine log review")
        r = review(entries, since, until)
        with read_session(self.ctx.engine) as s:
            open_alerts = int(s.scalar(select(func.count()).select_from(AlertRow).where(AlertRow.status == "open")) or 0)
        summary = {"records": r.records, "users": len(r.users), "refused": len(r.refused), "failed_logins": len(r.failed_logins),
                   "lockouts": len(r.lockouts), "break_glass": len(r.break_glass), "exports": len(r.exports),
                   "integrity_alerts": len(r.integrity), "damaged_records": len(r.damaged), "open_alerts": open_alerts}
        with self.change() as s:
            row = LogReview(period_start=since, period_end=until, created_at=now, created_by=self.principal.label()[:256],
                            summary=json.dumps(summary), signed_off_by=None, signed_off_at=None, note=None)
            s.add(row)
            s.flush()
            self.record(s, GovernanceRecorded(self.principal, f"log-review:{row.id}", "review-assembled", json.dumps(summary), now))
            return row.id

    def sign_off(self, review_id: int, note: str) -> None:
        """Sign a review off with a note (``log-review``; recorded). A review is signed once."""
        note = " ".join(note.split())
        if len(note) < 5:
            raise ValueError("a sign-off needs a note (at least 5 characters): what was looked at, what follows")
        self.access.authorize(Action.LOG_REVIEW, Resource.archive())
        now = datetime.now(UTC)
        with self.change() as s:
            row = s.get(LogReview, review_id)
            if row is None:
                raise NotFoundError(f"no log review {review_id}")
            if row.signed_off_at is not None:
                raise GovernanceError(f"log review {review_id} is already signed off")
            row.signed_off_by, row.signed_off_at, row.note = self.principal.label()[:256], now, note[:4000]
            self.record(s, GovernanceRecorded(self.principal, f"log-review:{review_id}", "review-signed-off", note[:1000], now))

    def reviews(self) -> list[dict[str, Any]]:
        self.access.authorize(Action.LOG_REVIEW, Resource.archive())
        with read_session(self.ctx.engine) as s:
            rows = list(s.scalars(select(LogReview).order_by(LogReview.id.desc())))
        return [{"id": r.id, "since": as_utc(r.period_start).isoformat(), "until": as_utc(r.period_end).isoformat(),
                 "created_by": r.created_by, "summary": json.loads(r.summary), "signed_off_by": r.signed_off_by,
                 "signed_off_at": as_utc(r.signed_off_at).isoformat() if r.signed_off_at else None, "note": r.note} for r in rows]

    # -- risk register -----------------------------------------------------------------------------

    def add_risk(self, *, asset: str, threat: str, vulnerability: str, likelihood: int, impact: int, owner: str, treatment: str,
                 due: datetime | None = None) -> int:
        _check_level("likelihood", likelihood)
        _check_level("impact", impact)
        for name, value in (("asset", asset), ("threat", threat), ("owner", owner)):
            if not value.strip():
                raise ValueError(f"a risk needs its {name}")
        self.access.authorize(Action.RISK_MANAGE, Resource.archive())
        now = datetime.now(UTC)
        with self.change() as s:
            row = Risk(asset=asset.strip()[:256], threat=threat.strip()[:512], vulnerability=vulnerability.strip()[:512],
                       likelihood=likelihood, impact=impact, owner=owner.strip()[:256], treatment=treatment.strip()[:1024], due=due,
                       status="open", created_at=now, updated_at=now)
            s.add(row)
            s.flush()
            self.record(s, GovernanceRecorded(self.principal, f"risk:{row.id}", "risk-added",
                                              f"{row.asset}: L{likelihood} x I{impact}, owner {row.owner}", now))
            return row.id

    def update_risk(self, risk_id: int, *, status: str | None = None, treatment: str | None = None, likelihood: int | None = None,
                    impact: int | None = None, owner: str | None = None, due: datetime | None = None) -> None:
        if status is not None and status not in RISK_STATUSES:
            raise ValueError(f"a risk's status is one of {', '.join(RISK_STATUSES)}")
        if likelihood is not None:
            _check_level("likelihood", likelihood)
        if impact is not None:
            _check_level("impact", impact)
        self.access.authorize(Action.RISK_MANAGE, Resource.archive())
        now = datetime.now(UTC)
        with self.change() as s:
            row = s.get(Risk, risk_id)
            if row is None:
                raise NotFoundError(f"no risk {risk_id}")
            changes = {k: v for k, v in (("status", status), ("treatment", treatment), ("likelihood", likelihood), ("impact", impact),
                                          ("owner", owner), ("due", due)) if v is not None}
            if not changes:
                raise ValueError("nothing to change")
            for k, v in changes.items():
                setattr(row, k, v)
            row.updated_at = now
            self.record(s, GovernanceRecorded(self.principal, f"risk:{risk_id}", "risk-updated",
                                              ", ".join(f"{k} {v}" for k, v in changes.items())[:1000], now))

    def risks(self, *, include_closed: bool = False) -> list[RiskView]:
        """The register and the risks derived from the archive's state, highest score first (``risk-read``)."""
        self.access.authorize(Action.RISK_READ, Resource.archive())
        with read_session(self.ctx.engine) as s:
            q = select(Risk)
            if not include_closed:
                q = q.where(Risk.status != "closed")
            rows = list(s.scalars(q))
        out = [RiskView(r.id, "register", r.asset, r.threat, r.vulnerability, r.likelihood, r.impact, r.owner, r.treatment,
                        as_utc(r.due) if r.due else None, r.status) for r in rows]
        out += self._derived()
        return sorted(out, key=lambda r: (-r.score, r.source, r.asset))

    def _derived(self) -> list[RiskView]:
        from dicomguard.app.posture import PostureService

        found: list[RiskView] = []
        for gap in PostureService(self.ctx, self.access).assess().gaps:
            if gap.id == "risks":
                continue  # the register's own risks are listed already
            asset, threat, likelihood, impact = _GAP_RISKS.get(gap.id, (gap.id, gap.title, 3, 3))
            found.append(RiskView(None, "derived", asset, threat, gap.evidence, likelihood, impact, "security officer",
                                  f"close the posture gap '{gap.title}'", None, "open"))
        now = datetime.now(UTC)
        for name, last in self._privileged_last_login():
            if last is None or now - last > UNUSED_ADMIN:
                found.append(RiskView(None, "derived", f"account {name}", "takeover of a dormant privileged account",
                                      f"no login for {UNUSED_ADMIN.days} days" if last else "never logged in", 2, 5, "security officer",
                                      "disable the account or confirm it is needed", None, "open"))
        return found

    def _privileged_last_login(self) -> list[tuple[str, datetime | None]]:
        from dicomguard.identity.users import user_roles

        with read_session(self.ctx.engine) as s:
            users = [(u.name, u.created_at) for u in s.scalars(select(User).where(User.disabled.is_(False)))
                     if set(user_roles(s, u.name)) & set(PRIVILEGED_ROLES)]
            out = []
            for name, created in users:
                last = s.scalar(select(func.max(AuthSession.created_at)).where(AuthSession.user_name == name))
                # A new account has its grace period from its creation.
                out.append((name, as_utc(last) if last else (as_utc(created) if created else None)))
        return out

    # -- assets ----------------------------------------------------------------------------------

    def assets(self) -> dict[str, Any]:
        """Devices, storage and backup targets, privileged accounts (``risk-read``; no PHI)."""
        self.access.authorize(Action.RISK_READ, Resource.archive())
        now = datetime.now(UTC)
        with read_session(self.ctx.engine) as s:
            legacy = set(s.scalars(select(GatewayAllow.ae_title)))
            devices = [{"ae_title": d.ae_title, "name": d.name, "operations": d.operations, "department": d.department,
                        "certificate_expires": as_utc(d.not_after).isoformat(), "expires_in_days": (as_utc(d.not_after) - now).days,
                        "revoked": d.revoked_at is not None, "legacy_gateway": d.ae_title in legacy}
                       for d in s.scalars(select(Device).order_by(Device.ae_title))]
        legacy_only = sorted(legacy - {d["ae_title"] for d in devices})
        settings = self.ctx.settings
        return {
            "devices": devices,
            "legacy_gateway_only": legacy_only,
            "storage": {"kind": settings.storage.kind},
            "backup_targets": [{"name": t.name, "kind": t.kind, "immutable_days": t.immutable_days, "offsite": t.offsite,
                                "offline": t.offline} for t in settings.backup.target],
            "privileged_accounts": [{"name": n, "last_login_or_created": t.isoformat() if t else None}
                                    for n, t in self._privileged_last_login()],
        }

    def record_sanitisation(self, media: str, method: str, reason: str) -> None:
        """Record that a disk, tape, backup medium or key was sanitised or destroyed (NIST SP 800-88 clear/purge/destroy)."""
        media, method, reason = (" ".join(x.split()) for x in (media, method, reason))
        if not media or not method or len(reason) < 5:
            raise ValueError("name the medium, the method (e.g. 'NIST 800-88 purge: crypto-erase') and a reason")
        self.access.authorize(Action.RISK_MANAGE, Resource.archive())
        now = datetime.now(UTC)
        with self.change() as s:
            self.record(s, GovernanceRecorded(self.principal, f"media:{media[:128]}", "media-sanitised", f"{method}; {reason}"[:1000], now))


def _check_level(name: str, value: int) -> None:
    if not 1 <= value <= 5:
        raise ValueError(f"{name} is 1 (rare / negligible) to 5 (almost certain / severe)")


class ReviewScheduler(PeriodicTask):
    """The ``serve`` thread that assembles the routine log review every ``[audit] review_every_days``."""

    NAME = "log-review"
    POLL_S = 300.0

    def enabled(self) -> bool:
        return bool(self.services.archive.settings.audit.review_every_days > 0)

    def tick(self, now: datetime) -> bool:
        """Assemble a review when the last one ended a period or more ago; returns whether one was made."""
        every = timedelta(days=self.services.archive.settings.audit.review_every_days)
        with read_session(self.services.archive.ctx.engine) as s:
            last = s.scalar(select(func.max(LogReview.period_end)))
        if last is not None and now - as_utc(last) < every:
            return False
        self.services.governance.assemble_review(until=now)
        return True
