"""The backup service: run, drill, list, status, and the key-vault push after an erasure (ADR 0007).

Each method is decided by the policies (``backup-run``, ``backup-drill``,
``backup-read``) and records its outcome in the same transaction as its
``backup_runs`` row: ``BackupCompleted`` / ``BackupDrilled`` (ledger leaf + audit
Security Alert), or ``BackupFailed`` (a Security Alert forwarded to the collectors)
for a failure, a drill with problems, or an overdue target.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from dicomguard.app.backup.drill import DrillProblem, DrillReport, drill, recorded_snapshots
from dicomguard.app.backup.snapshot import Progress, SnapshotResult, list_snapshots, take_snapshot
from dicomguard.app.backup.status import BackupStatus, compute_status
from dicomguard.app.backup.targets import open_target, target_settings
from dicomguard.app.backup.vault import VAULT_NAME, build_vault
from dicomguard.config import BackupTargetSettings
from dicomguard.core.access import Action, Resource
from dicomguard.core.access_control import AccessControl
from dicomguard.core.context import ArchiveContext
from dicomguard.core.events import BackupCompleted, BackupDrilled, BackupFailed, Event, PatientErased
from dicomguard.core.service import Service
from dicomguard.errors import DicomGuardError
from dicomguard.index.models import BackupRun
from dicomguard.ledger.service import Ledger

log = logging.getLogger(__name__)


@dataclass
class BackupOutcome:
    target: str
    ok: bool
    result: SnapshotResult | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "ok": self.ok, **(self.result.to_json() if self.result else {}), "error": self.error}


@dataclass(frozen=True)
class SnapshotInfo:
    target: str
    snapshot_id: str
    recorded: bool
    """The live ledger records this snapshot's backup (a snapshot it does not know is suspect)."""


class BackupService(Service):
    def __init__(self, ctx: ArchiveContext, access: AccessControl, ledger: Ledger) -> None:
        super().__init__(ctx, access)
        self.ledger = ledger

    def _targets(self, name: str | None) -> list[BackupTargetSettings]:
        return target_settings(self.ctx.settings, name)

    def run(self, target: str | None = None, progress: Progress | None = None) -> list[BackupOutcome]:
        """Back up to one target or all (``backup-run``); a failing target does not stop the others."""
        self.access.authorize(Action.BACKUP_RUN, Resource.archive())
        outcomes = []
        for t in self._targets(target):
            started = datetime.now(UTC)
            try:
                result = take_snapshot(self.ctx, open_target(t, self.ctx.home), retention_days=t.retention_days,
                                       vault_lock_days=t.vault_lock_days, progress=progress)
            except (DicomGuardError, OSError) as exc:
                reason = str(exc) or type(exc).__name__
                self._failed(t.name, "backup", reason, started)
                outcomes.append(BackupOutcome(t.name, False, error=reason))
                continue
            now = datetime.now(UTC)
            with self.change() as s:
                s.add(BackupRun(target=t.name, kind="backup", snapshot_id=result.snapshot_id, started_at=started, finished_at=now,
                                ok=True, detail=json.dumps(result.to_json())))
                self.record(s, BackupCompleted(self.principal, t.name, result.snapshot_id, result.manifest_sha256,
                                               result.checkpoint_size, result.objects, result.bytes, result.new_bytes, now))
            outcomes.append(BackupOutcome(t.name, True, result))
        return outcomes

    def _failed(self, target: str, operation: str, reason: str, started: datetime) -> None:
        now = datetime.now(UTC)
        with self.change() as s:
            s.add(BackupRun(target=target, kind=operation, snapshot_id=None, started_at=started, finished_at=now, ok=False,
                            detail=json.dumps({"reason": reason[:1000]})))
            self.record(s, BackupFailed(self.principal, target, operation, reason[:1000], now))

    def drill(self, target: str | None = None, snapshot: str | None = None) -> list[DrillReport]:
        """Restore-drill the newest (or the named) snapshot of one target or all (``backup-drill``)."""
        self.access.authorize(Action.BACKUP_DRILL, Resource.archive())
        reports = []
        for t in self._targets(target):
            started = datetime.now(UTC)
            try:
                report = drill(self.ctx, self.ledger, open_target(t, self.ctx.home), snapshot)
            except (DicomGuardError, OSError) as exc:
                reason = str(exc) or type(exc).__name__
                self._failed(t.name, "drill", reason, started)
                failed = DrillReport(t.name, snapshot or "")
                failed.add(DrillProblem.RESTORE_FAILED, t.name, reason)
                reports.append(failed)
                continue
            now = datetime.now(UTC)
            with self.change() as s:
                detail = report.to_json()
                s.add(BackupRun(target=t.name, kind="drill", snapshot_id=report.snapshot_id or None, started_at=started,
                                finished_at=now, ok=report.ok, detail=json.dumps({**detail, "problems": len(report.problems),
                                                                                   "problem_list": detail["problems"][:50]})))
                self.record(s, BackupDrilled(self.principal, t.name, report.snapshot_id, report.objects, len(report.problems),
                                             report.rpo_s, report.rto_s, now))
                if not report.ok:
                    first = report.problems[0]
                    self.record(s, BackupFailed(self.principal, t.name, "drill", f"{len(report.problems)} problem(s), first: "
                                                f"{first.kind.value} {first.subject}: {first.detail}"[:1000], now))
            reports.append(report)
        return reports

    def snapshots(self, target: str | None = None) -> list[SnapshotInfo]:
        """Complete snapshots per target, and whether the live ledger records each (``backup-read``)."""
        self.access.authorize(Action.BACKUP_READ, Resource.archive())
        found = []
        for t in self._targets(target):
            recorded = recorded_snapshots(self.ctx, t.name)
            found += [SnapshotInfo(t.name, sid, sid in recorded) for sid in list_snapshots(open_target(t, self.ctx.home))]
        return found

    def status(self) -> BackupStatus:
        """Per target and per 3-2-1-1-0 rule (``backup-read``)."""
        self.access.authorize(Action.BACKUP_READ, Resource.archive())
        return compute_status(self.ctx)

    def alert_overdue(self, already: set[str]) -> list[str]:
        """Record a ``BackupFailed`` alert for each overdue target not in ``already`` (``serve``'s scheduler)."""
        self.access.authorize(Action.BACKUP_READ, Resource.archive())
        raised = []
        for t in compute_status(self.ctx).targets:
            what = "backup" if t.backup_overdue else "drill" if t.drill_overdue else None
            if what and f"{t.name}:{what}" not in already:
                self.record_alone(BackupFailed(self.principal, t.name, what, f"{what} overdue", datetime.now(UTC)))
                raised.append(f"{t.name}:{what}")
        return raised


def push_vault(ctx: ArchiveContext) -> list[tuple[str, str | None]]:
    """After an erasure: rewrite the key vault on every target, so no restore brings the patient back (ADR 0007).

    Part of the erasure (which was decided and recorded); returns (target, error or None).
    A target that cannot be reached is retried by the next backup run, and ``backup status``
    names it (``vault_stale``) until then.
    """
    from dicomguard.index.db import write_session

    results: list[tuple[str, str | None]] = []
    if not ctx.settings.backup.target:
        return results
    vault = build_vault(ctx)
    for t in ctx.settings.backup.target:
        started = datetime.now(UTC)
        error = None
        try:
            target = open_target(t, ctx.home)
            target.replace(VAULT_NAME, vault, lock_days=t.vault_lock_days)
            target.prune_vault_history()
        except (DicomGuardError, OSError) as exc:
            error = str(exc) or type(exc).__name__
            log.error("key vault not pushed to backup target %s after an erasure: %s", t.name, error)
        with write_session(ctx.engine) as s:
            s.add(BackupRun(target=t.name, kind="vault", snapshot_id=None, started_at=started, finished_at=datetime.now(UTC),
                            ok=error is None, detail=json.dumps({"reason": error} if error else {})))
        results.append((t.name, error))
    return results



def vault_sync(ctx: ArchiveContext) -> Callable[[Session, Event], None]:
    """Event-bus subscriber: once a transaction that erased a patient commits, push the key vault to every target."""

    def on_event(session: Session, event: Event) -> None:
        if isinstance(event, PatientErased) and ctx.settings.backup.target:
            sa_event.listen(session, "after_commit", lambda _s: push_vault(ctx), once=True)

    return on_event
