"""Backup status: per target (last success, last drill, overdue, vault freshness) and per 3-2-1-1-0 rule.

3-2-1-1-0: three copies of the data (the archive and two backups), on two kinds of
media, one off-site, one offline or immutable, and zero errors proven by a restore
drill (US-CERT "Data Backup Options"; NIST SP 800-34 Rev. 1 3.4.2). dicomguard cannot
see where a folder is; ``offsite`` and ``offline`` are the operator's declarations,
and the status says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from dicomguard.config import BackupTargetSettings, Settings
from dicomguard.core.context import ArchiveContext
from dicomguard.index.db import as_utc, read_session
from dicomguard.index.models import BackupRun, Patient


@dataclass
class TargetStatus:
    name: str
    kind: str
    media: str
    offsite: bool
    offline: bool
    immutable: bool
    last_backup: datetime | None = None
    last_snapshot: str | None = None
    last_failure: datetime | None = None
    last_failure_reason: str | None = None
    last_drill: datetime | None = None
    last_drill_problems: int | None = None
    backup_overdue: bool = False
    drill_overdue: bool = False
    vault_stale: bool = False

    @property
    def ok(self) -> bool:
        return not (self.backup_overdue or self.drill_overdue or self.vault_stale or self.last_backup is None
                    or (self.last_failure is not None and (self.last_backup is None or self.last_failure > self.last_backup))
                    or (self.last_drill_problems or 0) > 0)

    def to_json(self) -> dict[str, Any]:
        iso = lambda t: t.isoformat() if t else None  # noqa: E731
        return {"name": self.name, "kind": self.kind, "media": self.media, "offsite": self.offsite, "offline": self.offline,
                "immutable": self.immutable, "last_backup": iso(self.last_backup), "last_snapshot": self.last_snapshot,
                "last_failure": iso(self.last_failure), "last_failure_reason": self.last_failure_reason,
                "last_drill": iso(self.last_drill), "last_drill_problems": self.last_drill_problems,
                "backup_overdue": self.backup_overdue, "drill_overdue": self.drill_overdue, "vault_stale": self.vault_stale,
                "ok": self.ok}


@dataclass(frozen=True)
class RuleStatus:
    rule: str
    ok: bool
    detail: str


@dataclass
class BackupStatus:
    targets: list[TargetStatus] = field(default_factory=list)
    rules: list[RuleStatus] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rules) and all(t.ok for t in self.targets)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "targets": [t.to_json() for t in self.targets],
                "rules": [{"rule": r.rule, "ok": r.ok, "detail": r.detail} for r in self.rules]}


def media_of(t: BackupTargetSettings) -> str:
    if t.kind == "s3":
        return "object-storage"
    return "removable" if t.offline else "disk"


def compute_status(ctx: ArchiveContext, now: datetime | None = None) -> BackupStatus:
    settings: Settings = ctx.settings
    now = now or datetime.now(UTC)
    b = settings.backup
    with read_session(ctx.engine) as s:
        runs = list(s.scalars(select(BackupRun).order_by(BackupRun.finished_at)))
        last_erasure = s.scalar(select(func.max(Patient.erased_at)))
    status = BackupStatus()
    for t in b.target:
        ts = TargetStatus(t.name, t.kind, media_of(t), t.offsite, t.offline, t.kind == "s3" and t.immutable_days > 0)
        vault_pushed: datetime | None = None
        for r in (r for r in runs if r.target == t.name):
            at = as_utc(r.finished_at)
            if r.kind == "backup" and r.ok:
                ts.last_backup, ts.last_snapshot = at, r.snapshot_id
                vault_pushed = at
            elif r.kind == "backup":
                ts.last_failure, ts.last_failure_reason = at, json.loads(r.detail).get("reason")
            elif r.kind == "drill":
                ts.last_drill, ts.last_drill_problems = at, int(json.loads(r.detail).get("problems", 0))
            elif r.kind == "vault" and r.ok:
                vault_pushed = at
        if b.every_hours > 0:
            ts.backup_overdue = ts.last_backup is None or now - ts.last_backup > timedelta(hours=b.every_hours * b.overdue_factor)
        if b.drill_every_days > 0:
            ts.drill_overdue = ts.last_drill is None or now - ts.last_drill > timedelta(days=b.drill_every_days * b.overdue_factor)
        if last_erasure is not None and vault_pushed is not None:
            ts.vault_stale = vault_pushed < as_utc(last_erasure)
        status.targets.append(ts)
    status.rules = _rules(settings, status.targets)
    return status


def _rules(settings: Settings, targets: list[TargetStatus]) -> list[RuleStatus]:
    current = [t for t in targets if t.last_backup is not None and not t.backup_overdue]
    primary_media = "object-storage" if settings.storage.kind == "s3" else "disk"
    copies = 1 + len(current)
    media = sorted({primary_media, *(t.media for t in current)})
    offsite = [t.name for t in current if t.offsite]
    sealed = [t.name for t in current if t.immutable or t.offline]
    drilled = [t for t in targets if t.last_drill is not None]
    clean = [t.name for t in drilled if t.last_drill_problems == 0 and not t.drill_overdue]
    failing = [t.name for t in drilled if (t.last_drill_problems or 0) > 0]
    never = [t.name for t in targets if t.last_drill is None]
    return [
        RuleStatus("3 copies", copies >= 3, f"{copies} current (the archive and {len(current)} target(s) with a backup in time)"
                   + ("" if copies >= 3 else "; add or repair targets")),
        RuleStatus("2 media", len(media) >= 2, f"media: {', '.join(media)}" + ("" if len(media) >= 2 else
                   "; add a target on another kind of media (object storage, removable)")),
        RuleStatus("1 off-site", bool(offsite), f"declared off-site: {', '.join(offsite)}" if offsite else
                   "no current target is declared offsite = true"),
        RuleStatus("1 offline or immutable", bool(sealed), f"immutable or offline: {', '.join(sealed)}" if sealed else
                   "no current target is an Object Lock bucket (immutable_days) or offline media"),
        RuleStatus("0 errors", bool(targets) and not failing and not never and len(clean) == len(targets),
                   ("drills with problems: " + ", ".join(failing) + "; " if failing else "")
                   + ("never drilled: " + ", ".join(never) + "; " if never else "")
                   + f"{len(clean)} of {len(targets)} target(s) drilled clean in time"),
    ]


def gauges(ctx: ArchiveContext) -> bytes:
    """Prometheus text of the backup gauges (no PHI): last success, last drill and its problems, overdue, per target."""
    st = compute_status(ctx)
    lines = [
        "# HELP dicomguard_backup_last_success_timestamp_seconds Time of the last successful backup, per target",
        "# TYPE dicomguard_backup_last_success_timestamp_seconds gauge",
    ]
    lines += [f'dicomguard_backup_last_success_timestamp_seconds{{target="{t.name}"}} {t.last_backup.timestamp() if t.last_backup else 0}'
              for t in st.targets]
    lines += ["# HELP dicomguard_backup_last_drill_timestamp_seconds Time of the last restore drill, per target",
              "# TYPE dicomguard_backup_last_drill_timestamp_seconds gauge"]
    lines += [f'dicomguard_backup_last_drill_timestamp_seconds{{target="{t.name}"}} {t.last_drill.timestamp() if t.last_drill else 0}'
              for t in st.targets]
    lines += ["# HELP dicomguard_backup_last_drill_problems Problems found by the last restore drill, per target",
              "# TYPE dicomguard_backup_last_drill_problems gauge"]
    lines += [f'dicomguard_backup_last_drill_problems{{target="{t.name}"}} {t.last_drill_problems or 0}' for t in st.targets]
    lines += ["# HELP dicomguard_backup_overdue 1 when the target's backup or drill is overdue", "# TYPE dicomguard_backup_overdue gauge"]
    lines += [f'dicomguard_backup_overdue{{target="{t.name}"}} {int(t.backup_overdue or t.drill_overdue)}' for t in st.targets]
    lines += ["# HELP dicomguard_backup_rules_met 3-2-1-1-0 rules met (of 5)", "# TYPE dicomguard_backup_rules_met gauge",
              f"dicomguard_backup_rules_met {sum(r.ok for r in st.rules)}"]
    return ("\n".join(lines) + "\n").encode()
