"""Security posture (NIST CSF 2.0, HIPAA Security Rule 164.308-316): what the archive's configuration and records show.

Each check reads the archive's actual state, not a questionnaire: the loaded Cedar policies,
the accounts and devices, the audit collectors and their lag, the backup drills, the last
integrity verification, the alerts and incidents. Each finding names the CSF 2.0 subcategories
and HIPAA standards it evidences (mapping after NIST SP 800-66r2). Renderings: a readable HTML
page with the gaps first, CSV, and OSCAL 1.1 assessment results (validated against
compliance-trestle's models in the tests). Reading the posture reads no PHI (``posture-read``).
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from dicomguard import __version__
from dicomguard.audit.codes import EventIds, EventTypes
from dicomguard.core.access import Action, Resource
from dicomguard.core.service import Service
from dicomguard.index.db import as_utc, read_session
from dicomguard.index.models import AlertRow, AuditRecord, BackupRun, Device, GatewayAllow, Incident, LogReview, Risk, User

STEP_UP_GUARDS = ("step-up-erase", "step-up-bulk-retrieve", "step-up-external-share", "step-up-contained", "step-up-incident-response")
"""Guards that make the second factor count for the riskiest actions: removing one is a posture gap."""
CERT_WARNING = timedelta(days=30)
ALERT_REVIEW = timedelta(days=7)
VERIFY_EVERY = timedelta(days=7)
INCIDENT_OPEN_TOO_LONG = timedelta(days=30)
HIGH_RISK = 15
"""Likelihood x impact (1-25) from which an open register risk is a posture gap."""


@dataclass(frozen=True)
class Finding:
    id: str
    title: str
    satisfied: bool
    evidence: str
    csf: tuple[str, ...]
    hipaa: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "status": "satisfied" if self.satisfied else "not-satisfied",
                "evidence": self.evidence, "csf": list(self.csf), "hipaa": list(self.hipaa)}


@dataclass(frozen=True)
class Posture:
    assessed_at: datetime
    findings: tuple[Finding, ...]

    @property
    def gaps(self) -> list[Finding]:
        return [f for f in self.findings if not f.satisfied]

    @property
    def score(self) -> float:
        return sum(f.satisfied for f in self.findings) / len(self.findings) if self.findings else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"assessed_at": self.assessed_at.isoformat(), "score": round(self.score, 3), "findings": [f.to_json() for f in self.findings]}


class PostureService(Service):
    def assess(self) -> Posture:
        """Every check, now (``posture-read``)."""
        self.access.authorize(Action.POSTURE_READ, Resource.archive())
        now = datetime.now(UTC)
        checks: list[Callable[[datetime], Finding]] = [
            self._transport, self._at_rest, self._step_up, self._mfa_enrolled, self._default_deny, self._forwarding,
            self._backups, self._integrity, self._alerts, self._certificates, self._log_review, self._incidents, self._risks,
        ]
        return Posture(now, tuple(check(now) for check in checks))

    def _transport(self, now: datetime) -> Finding:
        with read_session(self.ctx.engine) as s:
            legacy = int(s.scalar(select(func.count()).select_from(GatewayAllow)) or 0)
        evidence = "DICOMweb only over HTTPS and DIMSE only over mutual TLS (TLS 1.2+, AEAD suites)"
        if legacy:
            evidence += f"; {legacy} legacy modality address(es) allowed on the plaintext gateway (its LAN leg is unencrypted)"
        return Finding("tls-in-transit", "PHI is encrypted in transit", legacy == 0, evidence, ("PR.DS-02",), ("164.312(e)(1)",))

    def _at_rest(self, now: datetime) -> Finding:
        kind = self.ctx.settings.storage.kind
        return Finding("encryption-at-rest", "PHI is encrypted at rest", True,
                       f"every object AES-256-GCM under a per-patient key wrapped by the KEK; identifying index columns sealed "
                       f"or blind-indexed; storage: {kind}", ("PR.DS-01",), ("164.312(a)(2)(iv)",))

    def _step_up(self, now: datetime) -> Finding:
        loaded = set(self.ctx.authorizer.policies) if hasattr(self.ctx.authorizer, "policies") else set()
        missing = [g for g in STEP_UP_GUARDS if g not in loaded]
        evidence = "a fresh TOTP is required for erasure, bulk retrieval, external sharing, contained users and incident response"
        if missing:
            evidence = f"step-up guards missing from the loaded policies: {', '.join(missing)}"
        return Finding("mfa-step-up", "A second factor guards the riskiest actions", not missing, evidence, ("PR.AA-03",),
                       ("164.312(d)",))

    def _mfa_enrolled(self, now: datetime) -> Finding:
        with read_session(self.ctx.engine) as s:
            rows = list(s.execute(select(User.name, User.totp_secret).where(User.disabled.is_(False))))
        without = sorted(name for name, secret in rows if not secret)
        evidence = f"{len(rows)} enabled account(s), every one with TOTP" if not without else \
            f"enabled accounts without a second factor: {', '.join(without[:20])}"
        return Finding("mfa-enrolled", "Every interactive account has a second factor", not without, evidence, ("PR.AA-03",),
                       ("164.312(d)", "164.308(a)(5)(ii)(D)"))

    def _default_deny(self, now: datetime) -> Finding:
        policies = getattr(self.ctx.authorizer, "policies", {})
        permits = sum(1 for p in policies.values() if p.effect == "permit")
        forbids = len(policies) - permits
        return Finding("default-deny", "Access is denied unless a policy permits it", True,
                       f"Cedar: default deny; {permits} permit and {forbids} forbid policies loaded and validated",
                       ("PR.AA-05",), ("164.312(a)(1)", "164.308(a)(4)"))

    def _forwarding(self, now: datetime) -> Finding:
        from dicomguard.audit.forwarder import spool_status

        if not self.ctx.settings.audit.syslog:
            return Finding("audit-forwarding", "Audit records reach a central collector", False,
                           "no [[audit.syslog]] collector configured: the trail lives only in this archive",
                           ("DE.CM-09", "PR.PS-04"), ("164.312(b)",))
        _, collectors = spool_status(self.ctx, now)
        late = [c.name for c in collectors if c.lagging]
        evidence = f"{len(collectors)} collector(s) over mutual TLS" + (f"; lagging: {', '.join(late)}" if late else ", none lagging")
        return Finding("audit-forwarding", "Audit records reach a central collector", not late, evidence, ("DE.CM-09", "PR.PS-04"),
                       ("164.312(b)",))

    def _backups(self, now: datetime) -> Finding:
        settings = self.ctx.settings.backup
        targets = [t.name for t in settings.target]
        if not targets:
            return Finding("backup-drill", "Backups are restore-tested", False, "no [[backup.target]] configured",
                           ("PR.DS-11", "RC.RP-03"), ("164.308(a)(7)(ii)(A)", "164.308(a)(7)(ii)(D)"))
        problems = []
        horizon = timedelta(days=max(settings.drill_every_days, 1) * settings.overdue_factor)
        with read_session(self.ctx.engine) as s:
            for name in targets:
                last = s.scalar(select(BackupRun).where(BackupRun.target == name, BackupRun.kind == "drill")
                                .order_by(BackupRun.finished_at.desc(), BackupRun.id.desc()).limit(1))
                if last is None:
                    problems.append(f"{name}: never drilled")
                elif not last.ok:
                    problems.append(f"{name}: the last drill failed ({as_utc(last.finished_at).date()})")
                elif now - as_utc(last.finished_at) > horizon:
                    problems.append(f"{name}: last drill {as_utc(last.finished_at).date()} is overdue")
        evidence = "; ".join(problems) if problems else f"every target ({', '.join(targets)}) drilled recently with 0 errors"
        return Finding("backup-drill", "Backups are restore-tested", not problems, evidence, ("PR.DS-11", "RC.RP-03"),
                       ("164.308(a)(7)(ii)(A)", "164.308(a)(7)(ii)(D)"))

    def _integrity(self, now: datetime) -> Finding:
        code = EventTypes.INTEGRITY_CHECKED.code
        with read_session(self.ctx.engine) as s:
            last = s.execute(select(AuditRecord.event_time, AuditRecord.outcome)
                             .where(AuditRecord.event_id == EventIds.SECURITY_ALERT.code, AuditRecord.event_type.contains(code))
                             .order_by(AuditRecord.seq.desc()).limit(1)).first()
        if last is None:
            ok, evidence = False, "the archive was never verified (dicomguard verify)"
        else:
            at, outcome = as_utc(last[0]), int(last[1])
            ok = outcome == 0 and now - at <= VERIFY_EVERY
            evidence = f"last verification {at.isoformat()}: " + ("no problem" if outcome == 0 else "problems found") + \
                ("" if now - at <= VERIFY_EVERY else f"; older than {VERIFY_EVERY.days} days")
        return Finding("integrity-verified", "Stored images are verified untouched", ok, evidence, ("PR.DS-01", "DE.CM-09"),
                       ("164.312(c)(1)", "164.312(c)(2)"))

    def _alerts(self, now: datetime) -> Finding:
        with read_session(self.ctx.engine) as s:
            stale = int(s.scalar(select(func.count()).select_from(AlertRow).where(AlertRow.status == "open",
                                                                                     AlertRow.created_at < now - ALERT_REVIEW)) or 0)
            open_ = int(s.scalar(select(func.count()).select_from(AlertRow).where(AlertRow.status == "open")) or 0)
        evidence = f"{open_} open alert(s), {stale} unreviewed for more than {ALERT_REVIEW.days} days"
        return Finding("alerts-reviewed", "Access-anomaly alerts are reviewed within a week", stale == 0, evidence,
                       ("DE.AE-02", "RS.MA-02"), ("164.308(a)(1)(ii)(D)",))

    def _certificates(self, now: datetime) -> Finding:
        with read_session(self.ctx.engine) as s:
            rows = list(s.execute(select(Device.ae_title, Device.not_after).where(Device.revoked_at.is_(None))))
        soon = sorted(f"{ae} ({as_utc(t).date()})" for ae, t in rows if as_utc(t) - now < CERT_WARNING)
        evidence = f"{len(rows)} device certificate(s) in force" + (f"; expiring within 30 days or expired: {', '.join(soon[:20])}"
                                                                     if soon else ", none expiring within 30 days")
        return Finding("certificates", "Device certificates are current", not soon, evidence, ("PR.AA-01", "ID.AM-01"),
                       ("164.312(d)", "164.310(d)(1)"))

    def _log_review(self, now: datetime) -> Finding:
        every = self.ctx.settings.audit.review_every_days
        with read_session(self.ctx.engine) as s:
            last = s.scalar(select(LogReview).where(LogReview.signed_off_at.is_not(None)).order_by(LogReview.signed_off_at.desc()).limit(1))
            unsigned = int(s.scalar(select(func.count()).select_from(LogReview).where(LogReview.signed_off_at.is_(None))) or 0)
        horizon = timedelta(days=max(every, 1) * 1.5)
        if last is None:
            ok, evidence = False, "no log review was ever signed off (dicomguard review sign-off)"
        else:
            at = as_utc(last.signed_off_at)  # type: ignore[arg-type]
            ok = now - at <= horizon
            evidence = f"last review signed off {at.date()} by {last.signed_off_by}" + ("" if ok else "; overdue")
        if unsigned:
            evidence += f"; {unsigned} review(s) waiting for sign-off"
        return Finding("log-review", "Audit logs are reviewed and signed off on a schedule", ok, evidence, ("DE.AE-02", "GV.OV-01"),
                       ("164.308(a)(1)(ii)(D)", "164.308(a)(8)"))

    def _incidents(self, now: datetime) -> Finding:
        with read_session(self.ctx.engine) as s:
            long_open = int(s.scalar(select(func.count()).select_from(Incident).where(
                Incident.status == "open", Incident.opened_at < now - INCIDENT_OPEN_TOO_LONG)) or 0)
        return Finding("incidents", "Incidents are brought to a close", long_open == 0,
                       f"{long_open} incident(s) open for more than {INCIDENT_OPEN_TOO_LONG.days} days", ("RS.MA-01", "RS.MA-05"),
                       ("164.308(a)(6)(ii)",))


    def _risks(self, now: datetime) -> Finding:
        with read_session(self.ctx.engine) as s:
            rows = list(s.scalars(select(Risk).where(Risk.status == "open")))
        high = [r for r in rows if r.likelihood * r.impact >= HIGH_RISK]
        late = [r for r in rows if r.due is not None and as_utc(r.due) < now]
        evidence = f"{len(rows)} open risk(s) in the register, {len(high)} scored {HIGH_RISK} or more, {len(late)} past their due date"
        return Finding("risks", "High risks are treated and none is past due", not high and not late, evidence, ("ID.RA-05", "ID.RA-06"),
                       ("164.308(a)(1)(ii)(A)", "164.308(a)(1)(ii)(B)"))


def posture_csv(posture: Posture) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", "title", "status", "evidence", "csf", "hipaa"])
    for f in sorted(posture.findings, key=lambda f: f.satisfied):
        writer.writerow([f.id, f.title, "satisfied" if f.satisfied else "not-satisfied", f.evidence, " ".join(f.csf), " ".join(f.hipaa)])
    return buf.getvalue()


def posture_oscal(posture: Posture, archive_name: str) -> dict[str, Any]:
    """OSCAL 1.1 ``assessment-results``: one result, one observation and one finding per check (targets: CSF 2.0 subcategories)."""
    at = posture.assessed_at.isoformat()
    observations, findings = [], []
    for f in posture.findings:
        obs_id = str(uuid.uuid4())
        observations.append({"uuid": obs_id, "title": f.title, "description": f.evidence, "methods": ["TEST"], "collected": at,
                             "props": [{"name": "check-id", "ns": "https://dicomguard.org/ns/oscal", "value": f.id}]})
        findings.append({
            "uuid": str(uuid.uuid4()), "title": f.title, "description": f.evidence,
            "props": [{"name": "hipaa", "ns": "https://dicomguard.org/ns/oscal", "value": h} for h in f.hipaa],
            "target": {"type": "objective-id", "target-id": f.csf[0].lower().replace(".", "_"),
                       "status": {"state": "satisfied" if f.satisfied else "not-satisfied"}},
            "related-observations": [{"observation-uuid": obs_id}],
        })
    return {"assessment-results": {
        "uuid": str(uuid.uuid4()),
        "metadata": {"title": f"dicomguard security posture of {archive_name}", "last-modified": at, "version": __version__,
                     "oscal-version": "1.1.2"},
        "import-ap": {"href": "#dicomguard-posture-checks"},
        "results": [{"uuid": str(uuid.uuid4()), "title": "Automated posture assessment",
                     "description": "Checks of the archive's configuration and records against NIST CSF 2.0 and the HIPAA Security Rule.",
                     "start": at, "reviewed-controls": {"control-selections": [{"include-all": {}}]},
                     "observations": observations, "findings": findings}],
    }}


_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Security posture</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<style>body{font-family:sans-serif;margin:2rem}table{border-collapse:collapse}td,th{border:1px solid #999;padding:.3rem .5rem;vertical-align:top}
.gap{background:#fbeaea}.ok{background:#eaf6ea}</style></head><body>
<h1>Security posture of {{ name }}</h1><p>Assessed {{ p.assessed_at.isoformat() }}: {{ (p.score * 100)|round|int }} % of checks satisfied,
{{ p.gaps|length }} gap(s).</p>
<table><tr><th>status</th><th>check</th><th>evidence</th><th>NIST CSF 2.0</th><th>HIPAA</th></tr>
{% for f in findings %}<tr class="{{ 'ok' if f.satisfied else 'gap' }}"><td>{{ 'satisfied' if f.satisfied else 'GAP' }}</td>
<td>{{ f.title }}</td><td>{{ f.evidence }}</td><td>{{ f.csf|join(', ') }}</td><td>{{ f.hipaa|join(', ') }}</td></tr>{% endfor %}
</table></body></html>
"""


def posture_html(posture: Posture, archive_name: str) -> str:
    """A standalone page, gaps first (no script, escaped)."""
    from jinja2 import Environment

    findings = sorted(posture.findings, key=lambda f: f.satisfied)
    return Environment(autoescape=True).from_string(_PAGE).render(p=posture, findings=findings, name=archive_name)


def posture_json(posture: Posture) -> str:
    return json.dumps(posture.to_json(), indent=2)
