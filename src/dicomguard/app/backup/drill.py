"""Restore drills (ADR 0007): the "0 errors" of 3-2-1-1-0, proven by restoring, not assumed.

A drill restores a snapshot's index into a scratch home beside the live one (blobs are
read from the target where they are), then runs the archive's full verification on
it: every blob decrypted under its object's identity and both digests recomputed
against the ledger, the Merkle tree rebuilt from the leaves and every signed
checkpoint checked. It then ties the snapshot to the live archive: the manifest's
signed checkpoint must be a prefix of today's ledger (RFC 9162 2.1.4 consistency
proof), the manifest must be the one the live ledger recorded for that snapshot, and
no snapshot the ledger recorded for the target may be missing from it (a rollback).
Every problem is named. RPO is the age of the snapshot; RTO the measured time.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import select

from dicomguard.app.backup.restore import RestoreError, TargetBlobView, Unlock, restore_snapshot
from dicomguard.app.backup.snapshot import ManifestError, list_snapshots
from dicomguard.app.backup.vault import VaultError
from dicomguard.app.verify import verify_archive
from dicomguard.core.context import ArchiveContext
from dicomguard.core.integrity import Findings, Problem
from dicomguard.errors import DicomGuardError
from dicomguard.index.db import read_session
from dicomguard.index.models import LedgerHead, LedgerLeaf
from dicomguard.ledger.checkpoint import CheckpointError
from dicomguard.ledger.merkle import ProofError
from dicomguard.ledger.service import Ledger, verify_consistency_to
from dicomguard.ledger.store import LedgerStore
from dicomguard.storage.backup_targets import BackupTarget


class DrillProblem(StrEnum):
    NO_SNAPSHOT = "no-snapshot"
    MANIFEST_INVALID = "manifest-invalid"
    MANIFEST_UNKNOWN = "manifest-unknown"
    SNAPSHOT_MISSING = "snapshot-missing"
    RESTORE_FAILED = "restore-failed"
    CHECKPOINT_INVALID = "checkpoint-invalid"
    LEDGER_INCONSISTENT = "ledger-inconsistent"


@dataclass
class DrillReport(Findings):
    target: str
    snapshot_id: str = ""
    objects: int = 0
    bytes: int = 0
    rpo_s: float = 0.0
    rto_s: float = 0.0
    problems: list[Problem] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        mbps = self.bytes / 1e6 / self.rto_s if self.rto_s else 0.0
        return {"target": self.target, "snapshot": self.snapshot_id, "ok": self.ok, "objects": self.objects, "bytes": self.bytes,
                "rpo_s": round(self.rpo_s, 1), "rto_s": round(self.rto_s, 3), "verify_mb_per_s": round(mbps, 1),
                "problems": self.problems_json()}


def recorded_snapshots(ctx: ArchiveContext, target: str) -> dict[str, str]:
    """Snapshot id -> manifest SHA-256, for every ``backup-completed`` leaf of ``target`` in the live ledger."""
    found: dict[str, str] = {}
    with read_session(ctx.engine) as s:
        for subject, data in s.execute(select(LedgerLeaf.subject, LedgerLeaf.data).where(LedgerLeaf.kind == "event")):
            if b'"backup-completed"' not in data:
                continue
            doc = json.loads(data)
            if doc.get("event") == "backup-completed" and doc.get("target") == target:
                found[subject] = doc.get("manifest_sha256", "")
    return found


def drill(ctx: ArchiveContext, ledger: Ledger, target: BackupTarget, snapshot_id: str | None = None) -> DrillReport:
    """Restore ``snapshot_id`` (default: the newest) from ``target`` into a scratch home and verify it (see the module)."""
    report = DrillReport(target.name)
    started = time.perf_counter()
    snapshots = list_snapshots(target)
    recorded = recorded_snapshots(ctx, target.name)
    if not snapshots:
        report.add(DrillProblem.NO_SNAPSHOT, target.name, "the target holds no complete snapshot")
        return report
    chosen = snapshot_id or snapshots[-1]
    report.snapshot_id = chosen
    newest_recorded = max(recorded, default="")
    if snapshot_id is None and newest_recorded > chosen:
        missing = sorted(s for s in recorded if s > chosen and s not in snapshots)
        report.add(DrillProblem.SNAPSHOT_MISSING, missing[0] if missing else newest_recorded,
                   f"the ledger records {len(missing) or 1} newer snapshot(s) of {target.name} than the newest there ({chosen}): "
                   "deleted or rolled back")
    scratch = Path(tempfile.mkdtemp(prefix=".drill-", dir=ctx.home))
    try:
        try:
            restored = restore_snapshot(target, scratch / "home", Unlock(kek=ctx.keyring.kek), snapshot_id=chosen, copy_blobs=False)
        except (ManifestError, RestoreError, VaultError, DicomGuardError) as exc:
            kind = DrillProblem.MANIFEST_INVALID if isinstance(exc, ManifestError) else DrillProblem.RESTORE_FAILED
            report.add(kind, chosen, str(exc))
            report.rto_s = time.perf_counter() - started
            return report
        want = recorded.get(chosen)
        if want is None:
            report.add(DrillProblem.MANIFEST_UNKNOWN, chosen, "the live ledger records no backup with this manifest "
                       "(forged, or written by another archive)")
        elif want != restored.manifest_sha256:
            report.add(DrillProblem.MANIFEST_UNKNOWN, chosen, "the manifest differs from the one the live ledger recorded")
        report.rpo_s = (datetime.now(UTC) - restored.created).total_seconds()
        _check_checkpoint(ctx, ledger, restored.checkpoint_note, chosen, report)
        from dicomguard.app.archive import Archive  # the scratch home is opened like any home

        view = TargetBlobView(target, restored.blob_ids)
        with Archive.open(restored.home, kek=ctx.keyring.kek, store=view) as scratch_archive:  # type: ignore[arg-type]
            verified = verify_archive(scratch_archive.ctx, ledger.verifier)
        report.problems.extend(verified.problems)
        report.objects = verified.objects_checked
        report.bytes = verified.bytes_checked
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report.rto_s = time.perf_counter() - started
    return report


def _check_checkpoint(ctx: ArchiveContext, ledger: Ledger, note: str, snapshot_id: str, report: DrillReport) -> None:
    try:
        cp = ledger.verifier.verify(note.encode("utf-8"))
    except CheckpointError as exc:
        report.add(DrillProblem.CHECKPOINT_INVALID, snapshot_id, f"the manifest's checkpoint does not verify: {exc}")
        return
    with read_session(ctx.engine) as s:
        store = LedgerStore(s)
        size = s.scalar(select(LedgerHead.size).where(LedgerHead.id == 1)) or 0
        try:
            if cp.size > size:
                raise ProofError(f"checkpoint of size {cp.size} is ahead of today's ledger ({size})")
            verify_consistency_to(store, cp, size, store.root(size))
        except ProofError as exc:
            report.add(DrillProblem.LEDGER_INCONSISTENT, snapshot_id, f"the snapshot's ledger is not a prefix of today's: {exc}")

