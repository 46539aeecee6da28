"""Routine log review (HIPAA 164.308(a)(1)(ii)(D); NIST CSF DE.CM): one period's trail, summarized.

Sections: accesses per user, failed logins, lockouts, refused requests,
break-glass uses, exports, integrity alerts, top patients accessed. Counts are
of audit messages, classified by their DICOM codes (PS3.15 A.5.3), so messages
imported from other systems are counted the same way as ours.

Messages imported from other systems are what those systems *claim*: every
table has an origin column, ``archive`` for the archive's own observations and
``asserted by <source>`` for imported ones, and a user's activity is counted
separately per origin (a ``dr.smith`` asserted by a device is not merged into
the ``dr.smith`` the archive saw).

Written as a self-contained HTML page and a CSV beside it (long format:
``section,subject,metric,value,origin``), both built only from the decrypted trail.
"""

from __future__ import annotations

import csv
import html
import io
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from dicomguard.audit.codes import ActionCode, EventIds, EventTypes
from dicomguard.audit.message import format_time
from dicomguard.audit.store import AuditEntry

_ACCESS_EVENTS = {EventIds.INSTANCES_ACCESSED.code, EventIds.EXPORT.code}
_REFUSAL_TYPES = {EventTypes.USE_OF_RESTRICTED_FUNCTION.code, EventTypes.NODE_AUTHENTICATION.code}
TOP_PATIENTS = 10


def _instances(e: AuditEntry) -> int:
    return sum(sc.count for o in e.message.objects if o.is_study for d in o.descriptions for sc in d.sop_classes)


def is_access(e: AuditEntry) -> bool:
    """Patient data delivered to someone: read transfers, accesses, exports (not stores, not deletions)."""
    if e.event_id in _ACCESS_EVENTS:
        return e.action != ActionCode.DELETE
    return e.event_id == EventIds.INSTANCES_TRANSFERRED.code and e.action == ActionCode.READ


def _types(e: AuditEntry) -> set[str]:
    return set((e.event_type or "").split())


@dataclass
class UserActivity:
    queries: int = 0
    accesses: int = 0
    instances: int = 0
    exports: int = 0
    stores: int = 0
    refused: int = 0
    patients: set[str] = field(default_factory=set)


def origin(e: AuditEntry) -> str:
    """``archive``, or ``asserted by <source>`` for a message imported from another system."""
    return e.source.label


@dataclass
class Review:
    since: datetime
    until: datetime
    records: int = 0
    users: dict[tuple[str, str], UserActivity] = field(default_factory=lambda: defaultdict(UserActivity))
    """Activity per (user, origin)."""
    failed_logins: list[AuditEntry] = field(default_factory=list)
    lockouts: list[AuditEntry] = field(default_factory=list)
    refused: list[AuditEntry] = field(default_factory=list)
    break_glass: list[AuditEntry] = field(default_factory=list)
    exports: list[AuditEntry] = field(default_factory=list)
    integrity: list[AuditEntry] = field(default_factory=list)
    damaged: list[AuditEntry] = field(default_factory=list)
    patient_accesses: Counter[str] = field(default_factory=Counter)
    patient_users: dict[str, set[tuple[str, str]]] = field(default_factory=lambda: defaultdict(set))

    def top_patients(self, n: int = TOP_PATIENTS) -> list[tuple[str, int, int]]:
        return [(pid, count, len(self.patient_users[pid])) for pid, count in self.patient_accesses.most_common(n)]


def review(entries: list[AuditEntry], since: datetime, until: datetime) -> Review:
    r = Review(since, until)
    for e in entries:
        r.records += 1
        if e.damaged:
            r.damaged.append(e)
            continue
        types = _types(e)
        user = (e.user or "unknown", origin(e))
        act = r.users[user]
        if e.event_id == EventIds.QUERY.code:
            act.queries += 1
        if e.event_id in (EventIds.INSTANCES_TRANSFERRED.code, EventIds.IMPORT.code) and e.action == ActionCode.CREATE:
            act.stores += 1
        if is_access(e):
            act.accesses += 1
            act.instances += _instances(e)
            for pid in e.message.patient_ids():
                act.patients.add(pid)
                r.patient_accesses[pid] += 1
                r.patient_users[pid].add(user)
        if e.event_id == EventIds.EXPORT.code:
            act.exports += 1
            r.exports.append(e)
        if e.event_id == EventIds.USER_AUTHENTICATION.code and e.outcome != 0:
            (r.lockouts if EventTypes.LOCKOUT.code in types else r.failed_logins).append(e)
        elif EventTypes.LOCKOUT.code in types:
            r.lockouts.append(e)
        if e.event_id == EventIds.SECURITY_ALERT.code:
            if types & _REFUSAL_TYPES and e.outcome != 0:
                act.refused += 1
                r.refused.append(e)
            if EventTypes.INTEGRITY_VIOLATION.code in types:
                r.integrity.append(e)
        if EventTypes.EMERGENCY_OVERRIDE_STARTED.code in types:
            r.break_glass.append(e)
    return r


# -- rendering --------------------------------------------------------------------------


def csv_text(r: Review) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["section", "subject", "metric", "value", "origin"])
    w.writerow(["period", "", "since", format_time(r.since), ""])
    w.writerow(["period", "", "until", format_time(r.until), ""])
    w.writerow(["period", "", "records", r.records, ""])
    for (user, source), a in sorted(r.users.items()):
        for metric in ("queries", "accesses", "instances", "exports", "stores", "refused"):
            w.writerow(["accesses", user, metric, getattr(a, metric), source])
        w.writerow(["accesses", user, "patients", len(a.patients), source])
    for section, items in (("failed_logins", r.failed_logins), ("lockouts", r.lockouts), ("refused", r.refused),
                           ("break_glass", r.break_glass), ("exports", r.exports), ("integrity", r.integrity), ("damaged", r.damaged)):
        w.writerow([section, "", "count", len(items), ""])
        for e in items:
            w.writerow([section, e.user, format_time(e.event_time), e.message.outcome_description or e.event_name, origin(e)])
    for pid, count, users in r.top_patients():
        w.writerow(["top_patients", pid, "accesses", count, ""])
        w.writerow(["top_patients", pid, "users", users, ""])
    return buf.getvalue()


def _table(headers: list[str], rows: list[list[object]]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body or f'<tr><td colspan={len(headers)}>none</td></tr>'}</tbody></table>"


def _events(items: list[AuditEntry]) -> str:
    return _table(["time", "user", "address", "event", "outcome", "patients", "description", "origin"], [
        [format_time(e.event_time), e.user, e.summary()["address"], e.event_name, e.outcome, ", ".join(e.message.patient_ids()),
         e.message.outcome_description or "", origin(e)] for e in items
    ])


def html_text(r: Review, title: str) -> str:
    esc = html.escape
    users = _table(["user", "origin", "queries", "accesses", "instances", "exports", "stores", "refused", "patients"], [
        [u, source, a.queries, a.accesses, a.instances, a.exports, a.stores, a.refused, len(a.patients)]
        for (u, source), a in sorted(r.users.items())
    ])
    sections = [
        ("Accesses per user", users),
        (f"Failed logins ({len(r.failed_logins)})", _events(r.failed_logins)),
        (f"Lockouts ({len(r.lockouts)})", _events(r.lockouts)),
        (f"Refused requests ({len(r.refused)})", _events(r.refused)),
        (f"Break-glass uses ({len(r.break_glass)})", _events(r.break_glass)),
        (f"Exports ({len(r.exports)})", _events(r.exports)),
        (f"Integrity alerts ({len(r.integrity)})", _events(r.integrity)),
        (f"Records that fail authentication ({len(r.damaged)})", _events(r.damaged)),
        (f"Top {TOP_PATIENTS} patients accessed", _table(["patient ID", "accesses", "distinct users"], [list(t) for t in r.top_patients()])),
    ]
    body = "".join(f"<h2>{esc(h)}</h2>{t}" for h, t in sections)
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{esc(title)}</title><style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:1.5em}}"
        "td,th{border:1px solid #999;padding:.2em .5em;text-align:left}th{background:#eee}</style></head><body>"
        f"<h1>{esc(title)}</h1><p>Period {esc(format_time(r.since))} to {esc(format_time(r.until))}: {r.records} audit records. "
        "This report contains patient identifiers: handle it as PHI. Rows whose origin reads <em>asserted by</em> are "
        "messages imported from another system: what that system claims, not what this archive observed.</p>"
        f"{body}</body></html>"
    )


def write_report(r: Review, out: Path, title: str) -> tuple[Path, Path]:
    """Write ``out`` (HTML) and ``out`` with a ``.csv`` suffix, owner-readable only (they hold PHI)."""
    csv_path = out.with_suffix(".csv")
    for path, text in ((out, html_text(r, title)), (csv_path, csv_text(r))):
        tmp = path.with_name(path.name + ".part")
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o600)
        tmp.replace(path)
    return out, csv_path
