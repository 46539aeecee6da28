"""``dicomguard verify``: check everything the archive claims, report every problem.

Full verification:

1. the log (``ledger.verify``): leaves contiguous, every stored node and root
   recomputed from the leaf bytes (RFC 9162 2.1.1); every signed checkpoint's
   signature and root; every trusted checkpoint (witnessed, or passed with
   ``--trusted-checkpoint`` from outside the home) contained in the current tree
   (rollback and history rewrites fail here, even if the attacker re-signed);
2. every audit record against the leaf that binds it (``audit.verify``);
3. every index row against its signed leaf (identity, digests, blob id), and every sealed
   patient, study and series row against its patient's key;
4. every blob: decrypted under its object's identity, both digests recomputed
   and compared with the leaf; misplaced blobs are named by their header salt
   (``core.integrity``);
5. blobs that no index row claims.

``--since`` and ``--sample`` limit step 4, never the others. The run is one
``IntegrityChecked`` event; each problem is also an ``IntegrityViolation``
alert (recorded in the ledger where the log is whole).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from dicomguard.audit.verify import check_audit_trail
from dicomguard.core.access import Action, Resource
from dicomguard.core.access_control import AccessControl
from dicomguard.core.context import ArchiveContext
from dicomguard.core.events import IntegrityChecked, IntegrityViolation
from dicomguard.core.integrity import ProblemKind, VerifyReport, check_blob, check_index_rows
from dicomguard.core.service import Service
from dicomguard.errors import DicomGuardError
from dicomguard.index.db import read_session
from dicomguard.index.models import IngestJournal, Instance
from dicomguard.ledger.checkpoint import CheckpointVerifier
from dicomguard.ledger.service import Ledger
from dicomguard.ledger.verify import check_checkpoints, check_log, check_trusted, trusted_notes

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


def verify_archive(
    ctx: ArchiveContext,
    verifier: CheckpointVerifier,
    *,
    since_size: int | None = None,
    sample: int | None = None,
    trusted_notes_from_outside: list[tuple[str, bytes]] | None = None,
    progress: Progress | None = None,
    workers: int = 0,
) -> VerifyReport:
    """Verify the archive (no authorization, no record: see :class:`VerifyService`). ``workers``: 0 = one per core."""
    workers = workers or min(8, (os.cpu_count() or 1) + 1)
    mode = "sample" if sample is not None else "since" if since_size is not None else "full"
    report = VerifyReport(mode=mode)
    started = time.perf_counter()
    with read_session(ctx.engine) as s:
        view = check_log(s, report)
        check_audit_trail(ctx, s, view.audit, report)
        check_checkpoints(s, verifier, view.tree, report)
        check_trusted(verifier, view.tree, trusted_notes(s) + list(trusted_notes_from_outside or []), report)
        check_index_rows(ctx, s, report)
        rows = list(s.scalars(select(Instance)))
        journal = set(s.scalars(select(IngestJournal.blob_id)))
    leaves = view.instances
    by_salt = {r.blob_salt: r.sop_instance_uid for r in rows if r.blob_salt}
    _check_rows_against_leaves(rows, leaves, report)
    def check(row: Instance) -> int:
        check_blob(ctx, row, leaves.get(row.sop_instance_uid, (None, {}))[1], by_salt, report)
        return row.size

    # AES-GCM and SHA-256 release the GIL: threads use every core on large objects.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for size in pool.map(check, _select(rows, leaves, since_size, sample)):
            report.objects_checked += 1
            if progress:
                progress(size)
            report.bytes_checked += size
    if mode == "full":
        known = {r.blob_id for r in rows} | journal
        for blob_id in ctx.store.iter_ids():
            if blob_id not in known:
                report.add(ProblemKind.UNKNOWN_BLOB, blob_id, "a blob no index row refers to")
    report.seconds = time.perf_counter() - started
    return report


_LEAF_FIELDS = (
    ("series_uid", lambda r: r.series_uid),
    ("study_uid", lambda r: r.study_uid),
    ("sop_class_uid", lambda r: r.sop_class_uid),
    ("pixel_sha256", lambda r: r.pixel_sha256.hex()),
    ("header_sha256", lambda r: r.header_sha256.hex()),
    ("blob_id", lambda r: r.blob_id),
)


def _check_rows_against_leaves(rows: list[Instance], leaves: dict[str, tuple[int, dict[str, Any]]], report: VerifyReport) -> None:
    seen = set()
    for row in rows:
        seen.add(row.sop_instance_uid)
        entry = leaves.get(row.sop_instance_uid)
        if entry is None:
            report.add(ProblemKind.INDEX_ROW_UNLEDGERED, row.sop_instance_uid, "index row has no ledger entry")
            continue
        changed = [name for name, get in _LEAF_FIELDS if entry[1].get(name) != get(row)]
        if changed:
            report.add(ProblemKind.INDEX_ROW_ALTERED, row.sop_instance_uid, "differs from its ledger entry in " + ", ".join(changed))
    for uid in leaves.keys() - seen:
        report.add(ProblemKind.INDEX_ROW_MISSING, uid, "ledgered object has no index row")


def _select(rows: list[Instance], leaves: dict[str, tuple[int, dict[str, Any]]], since: int | None, sample: int | None) -> list[Instance]:
    live = [r for r in rows if not r.erased]
    if since is not None:
        live = [r for r in live if leaves.get(r.sop_instance_uid, (since, {}))[0] >= since]
    if sample is not None and sample < len(live):
        live = random.SystemRandom().sample(live, sample)
    return live


class VerifyService(Service):
    def __init__(self, ctx: ArchiveContext, access: AccessControl, ledger: Ledger) -> None:
        super().__init__(ctx, access)
        self.ledger = ledger

    def run(
        self,
        *,
        verifier: CheckpointVerifier | None = None,
        since_size: int | None = None,
        sample: int | None = None,
        trusted_notes_from_outside: list[tuple[str, bytes]] | None = None,
        progress: Progress | None = None,
    ) -> VerifyReport:
        """Verify the archive (``verify``; see the module), then record the run and raise each problem as an alert.

        ``verifier``: a pinned ledger public key (``--public-key``); default: the archive's own.
        """
        self.access.authorize(Action.VERIFY, Resource.archive())
        report = verify_archive(self.ctx, verifier or self.ledger.verifier, since_size=since_size, sample=sample,
                                trusted_notes_from_outside=trusted_notes_from_outside, progress=progress)
        self._record(report)
        return report

    def _record(self, report: VerifyReport) -> None:
        now = datetime.now(UTC)
        try:
            with self.change() as s:
                for p in report.problems:
                    self.record(s, IntegrityViolation(p.subject[:64], p.kind.value, now))
                self.record(s, IntegrityChecked(self.principal, report.mode, report.objects_checked, report.leaves_checked,
                                                len(report.problems), now))
        except (DicomGuardError, SQLAlchemyError):
            # A broken log cannot take new entries: the findings go to the log stream instead.
            for p in report.problems:
                log.error("integrity problem %s on %s (the ledger could not record it)", p.kind.value, p.subject)
            if not report.problems:
                raise
