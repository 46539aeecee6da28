"""``dicomguard verify``: check everything the archive claims, report every problem.

Full verification (issue 3, point 5):

1. the log: leaves contiguous, every stored node and root recomputed from the
   leaf bytes (RFC 9162 2.1.1);
2. every signed checkpoint: Ed25519 signature, and its root equals the
   recomputed root at its size (a truncated or rewritten log fails here);
3. every trusted checkpoint (witnessed, or passed with ``--trusted-checkpoint``
   from outside the home): signature, then the current tree must *contain* it
   (rollback and history rewrites fail here, even if the attacker re-signed);
4. every index row against its signed leaf (identity, digests, blob id);
5. every blob: decrypted under its object's identity, both digests recomputed
   and compared with the leaf; misplaced blobs are named by their header salt;
6. blobs that no index row claims.

The result lists every problem with the object it concerns; nothing stops at
the first failure (like tuf's ``get_verification_result``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from dicomguard.audit.verify import check_audit_trail
from dicomguard.core.context import ArchiveContext
from dicomguard.core.dicom_structure import walk_part10
from dicomguard.core.events import IntegrityViolation
from dicomguard.core.hashing import digest_object
from dicomguard.core.retrieve import READ_LIMITS
from dicomguard.crypto.aead import DecryptionError
from dicomguard.crypto.blob_cipher import blob_identity, blob_salt, decrypt_blob
from dicomguard.errors import DicomGuardError, ErasedError, RejectedObject
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import IngestJournal, Instance, LedgerCheckpoint, LedgerHead, LedgerLeaf, LedgerNode, TrustedCheckpoint
from dicomguard.ledger import merkle
from dicomguard.ledger.checkpoint import CheckpointError, CheckpointVerifier
from dicomguard.ledger.leaves import KIND_INSTANCE, decode
from dicomguard.storage.base import BlobMissingError

log = logging.getLogger(__name__)


class ProblemKind(StrEnum):
    PIXEL_CHANGED = "pixel-changed"
    HEADER_CHANGED = "header-changed"
    BLOB_MISSING = "blob-missing"
    BLOB_SWAPPED = "blob-swapped"
    BLOB_ALTERED = "blob-altered"
    UNKNOWN_BLOB = "unknown-blob"
    INDEX_ROW_ALTERED = "index-row-altered"
    INDEX_ROW_MISSING = "index-row-missing"
    INDEX_ROW_UNLEDGERED = "index-row-unledgered"
    LEDGER_TRUNCATED = "ledger-truncated"
    LEDGER_FORKED = "ledger-forked"
    CHECKPOINT_SIGNATURE_BAD = "checkpoint-signature-bad"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    subject: str
    detail: str


@dataclass
class VerifyReport:
    mode: str
    tree_size: int = 0
    leaves_checked: int = 0
    checkpoints_checked: int = 0
    trusted_checked: int = 0
    objects_checked: int = 0
    bytes_checked: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, kind: ProblemKind, subject: str, detail: str) -> None:
        self.problems.append(Problem(kind, subject, detail))

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        d["problems"] = [{"kind": p.kind.value, "subject": p.subject, "detail": p.detail} for p in self.problems]
        return d


Progress = Callable[[int], None]


def verify_archive(
    ctx: ArchiveContext,
    verifier: CheckpointVerifier,
    *,
    since_size: int | None = None,
    sample: int | None = None,
    trusted_notes: list[tuple[str, bytes]] | None = None,
    progress: Progress | None = None,
    raise_alerts: bool = True,
) -> VerifyReport:
    """Verify the archive; ``since_size``/``sample`` limit the blob checks, never the log checks."""
    mode = "sample" if sample is not None else "since" if since_size is not None else "full"
    report = VerifyReport(mode=mode)
    started = time.perf_counter()
    with read_session(ctx.engine) as s:
        tree = _check_log(s, report)
        check_audit_trail(ctx, s, report)  # audit trail (issue 6): every record against its ledger leaf
        _check_checkpoints(s, verifier, tree, report)
        notes = [(f"witnessed #{t.id} ({t.source})", t.note) for t in s.scalars(select(TrustedCheckpoint))]
        _check_trusted(verifier, tree, notes + list(trusted_notes or []), report)
        leaves = _instance_leaves(s)
        rows = list(s.scalars(select(Instance)))
        journal = set(s.scalars(select(IngestJournal.blob_id)))
    by_salt = {r.blob_salt: r.sop_instance_uid for r in rows if r.blob_salt}
    _check_rows_against_leaves(rows, leaves, report)
    selected = _select(rows, leaves, since_size, sample)
    for row in selected:
        _check_blob(ctx, row, leaves.get(row.sop_instance_uid, (None, {}))[1], by_salt, report)
        report.objects_checked += 1
        if progress:
            progress(row.size)
        report.bytes_checked += row.size
    if mode == "full":
        known = {r.blob_id for r in rows} | journal
        for blob_id in ctx.store.iter_ids():
            if blob_id not in known:
                report.add(ProblemKind.UNKNOWN_BLOB, blob_id, "a blob no index row refers to")
    report.seconds = time.perf_counter() - started
    if raise_alerts and report.problems:
        _raise_alerts(ctx, report)
    return report


def _check_log(s, report: VerifyReport) -> merkle.MemoryTree:  # type: ignore[no-untyped-def]
    """Recompute the tree from the leaf bytes and compare with the stored nodes."""
    head = s.scalar(select(LedgerHead.size).where(LedgerHead.id == 1)) or 0
    tree = merkle.MemoryTree()
    expected = 0
    for idx, data in s.execute(select(LedgerLeaf.idx, LedgerLeaf.data).order_by(LedgerLeaf.idx)):
        if idx != expected:
            report.add(ProblemKind.LEDGER_TRUNCATED, f"leaf {expected}", f"leaves {expected}..{idx - 1} are missing")
            break
        tree.append(data)
        expected += 1
    report.leaves_checked = tree.size
    report.tree_size = tree.size
    if head != tree.size:
        report.add(ProblemKind.LEDGER_TRUNCATED, "ledger", f"head says {head} leaves, {tree.size} are present")
    for level, idx, h in s.execute(select(LedgerNode.level, LedgerNode.idx, LedgerNode.hash)):
        try:
            good = tree.node(level, idx)
        except IndexError:
            continue  # a node beyond a truncation is reported by the truncation
        if good != h:
            report.add(ProblemKind.LEDGER_FORKED, f"node {level}/{idx}", "stored subtree hash differs from the leaves")
    return tree


def _check_note(verifier: CheckpointVerifier, tree: merkle.MemoryTree, label: str, note: bytes, report: VerifyReport, trusted: bool) -> None:
    try:
        cp = verifier.verify(note)
    except CheckpointError as exc:
        report.add(ProblemKind.CHECKPOINT_SIGNATURE_BAD, label, str(exc))
        return
    if cp.size > tree.size:
        kind = ProblemKind.ROLLBACK if trusted else ProblemKind.LEDGER_TRUNCATED
        report.add(kind, label, f"checkpoint covers {cp.size} entries, the ledger holds {tree.size}")
    elif tree.root(cp.size) != cp.root_hash:
        report.add(ProblemKind.LEDGER_FORKED, label, f"root at size {cp.size} differs from the signed one: history rewritten")


def _check_checkpoints(s, verifier: CheckpointVerifier, tree: merkle.MemoryTree, report: VerifyReport) -> None:  # type: ignore[no-untyped-def]
    for size, note in s.execute(select(LedgerCheckpoint.size, LedgerCheckpoint.note).order_by(LedgerCheckpoint.size)):
        _check_note(verifier, tree, f"checkpoint {size}", note, report, trusted=False)
        report.checkpoints_checked += 1


def _check_trusted(verifier: CheckpointVerifier, tree: merkle.MemoryTree, notes: list[tuple[str, bytes]], report: VerifyReport) -> None:
    for label, note in notes:
        _check_note(verifier, tree, label, note, report, trusted=True)
        report.trusted_checked += 1


def _instance_leaves(s) -> dict[str, tuple[int, dict[str, Any]]]:  # type: ignore[no-untyped-def]
    out: dict[str, tuple[int, dict[str, Any]]] = {}
    for idx, data in s.execute(select(LedgerLeaf.idx, LedgerLeaf.data).where(LedgerLeaf.kind == KIND_INSTANCE).order_by(LedgerLeaf.idx)):
        try:
            doc = decode(data)
        except ValueError:
            continue  # altered leaf bytes already fail the root checks
        out.setdefault(doc.get("sop_instance_uid", ""), (idx, doc))
    return out


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


def _check_blob(ctx: ArchiveContext, row: Instance, leaf: dict[str, Any], by_salt: dict[bytes, str], report: VerifyReport) -> None:
    uid = row.sop_instance_uid
    try:
        blob = ctx.store.read(row.blob_id)
    except BlobMissingError:
        report.add(ProblemKind.BLOB_MISSING, uid, f"blob {row.blob_id} is missing")
        return
    try:
        key = ctx.keyring.patient_key(row.patient_ref)
        data = decrypt_blob(key, blob_identity(uid, row.series_uid, row.study_uid, row.patient_ref), blob)
    except ErasedError:
        return
    except (DecryptionError, DicomGuardError):
        owner = by_salt.get(blob_salt(blob[:64]) or b"")
        if owner is not None and owner != uid:
            report.add(ProblemKind.BLOB_SWAPPED, uid, f"its blob file holds the blob of {owner}")
        else:
            report.add(ProblemKind.BLOB_ALTERED, uid, "blob fails authentication (ciphertext altered or replaced)")
        return
    try:
        digests = digest_object(data, walk_part10(data, READ_LIMITS))
    except RejectedObject as exc:
        report.add(ProblemKind.HEADER_CHANGED, uid, f"decrypted object is malformed: {exc}")
        return
    want_pixel = leaf.get("pixel_sha256", row.pixel_sha256.hex())
    want_header = leaf.get("header_sha256", row.header_sha256.hex())
    if digests.pixel_sha256.hex() != want_pixel:
        report.add(ProblemKind.PIXEL_CHANGED, uid, "pixel data differs from the ledgered digest")
    if digests.header_sha256.hex() != want_header:
        report.add(ProblemKind.HEADER_CHANGED, uid, "header differs from the ledgered digest")


def _raise_alerts(ctx: ArchiveContext, report: VerifyReport) -> None:
    """Each problem becomes a security event (audit Security Alert, and a ledger entry where the log is whole)."""
    now = datetime.now(UTC)
    try:
        with write_session(ctx.engine) as s:
            for p in report.problems:
                ctx.bus.publish(s, IntegrityViolation(p.subject[:64], p.kind.value, now))
    except (DicomGuardError, SQLAlchemyError):
        # A broken log cannot take new entries: the alerts go to the log stream instead.
        for p in report.problems:
            log.error("integrity problem %s on %s (ledger could not record it)", p.kind.value, p.subject)
