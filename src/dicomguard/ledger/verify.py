"""Verification of the log itself: leaves, stored nodes, signed and trusted checkpoints (``dicomguard verify``).

1. leaves contiguous, every stored node and root recomputed from the leaf bytes
   (RFC 9162 2.1.1);
2. every signed checkpoint: Ed25519 signature, and its root equals the
   recomputed root at its size (a truncated or rewritten log fails here);
3. every trusted checkpoint (witnessed, or passed with ``--trusted-checkpoint``
   from outside the home): signature, then the current tree must *contain* it
   (rollback and history rewrites fail here, even if the attacker re-signed).

The ledger verifies the log alone; what the leaves say of the index, the blobs
and the audit trail is checked by ``app/verify.py`` with :func:`instance_leaves`
and :func:`audit_bindings`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicomguard.core.integrity import ProblemKind, VerifyReport
from dicomguard.index.models import LedgerCheckpoint, LedgerHead, LedgerLeaf, LedgerNode, TrustedCheckpoint
from dicomguard.ledger import merkle
from dicomguard.ledger.checkpoint import CheckpointError, CheckpointVerifier
from dicomguard.ledger.leaves import KIND_INSTANCE, audit_hashes, decode


@dataclass
class LogView:
    """What one pass over the leaves learned: the recomputed tree, and what the leaves say of objects and audit records."""

    tree: merkle.MemoryTree
    instances: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    """The first leaf of each stored object: ``{SOP Instance UID: (leaf index, decoded leaf)}``."""
    audit: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Every audit record the log binds: ``{record id: (leaf index, canonical SHA-256 hex)}``."""


def check_log(s: Session, report: VerifyReport) -> LogView:
    """Recompute the tree from the leaf bytes and compare with the stored nodes (one pass over the leaves)."""
    head = s.scalar(select(LedgerHead.size).where(LedgerHead.id == 1)) or 0
    view = LogView(merkle.MemoryTree())
    tree = view.tree
    expected, gap = 0, False
    for idx, kind, data in s.execute(select(LedgerLeaf.idx, LedgerLeaf.kind, LedgerLeaf.data).order_by(LedgerLeaf.idx)):
        if not gap and idx != expected:
            report.add(ProblemKind.LEDGER_TRUNCATED, f"leaf {expected}", f"leaves {expected}..{idx - 1} are missing")
            gap = True  # the tree ends here; the leaves beyond still say what they bind
        if not gap:
            tree.append(data)
            expected += 1
        if kind == KIND_INSTANCE or b'"audit' in data:
            _read_leaf(view, idx, data)
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
    return view


def _read_leaf(view: LogView, idx: int, data: bytes) -> None:
    try:
        doc = decode(data)
    except ValueError:
        return  # altered leaf bytes already fail the root checks
    if doc.get("kind") == KIND_INSTANCE:
        view.instances.setdefault(doc.get("sop_instance_uid", ""), (idx, doc))
    for record_id, digest in audit_hashes(doc):
        view.audit[record_id] = (idx, digest)


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


def check_checkpoints(s: Session, verifier: CheckpointVerifier, tree: merkle.MemoryTree, report: VerifyReport) -> None:
    for size, note in s.execute(select(LedgerCheckpoint.size, LedgerCheckpoint.note).order_by(LedgerCheckpoint.size)):
        _check_note(verifier, tree, f"checkpoint {size}", note, report, trusted=False)
        report.checkpoints_checked += 1


def check_trusted(verifier: CheckpointVerifier, tree: merkle.MemoryTree, notes: list[tuple[str, bytes]], report: VerifyReport) -> None:
    for label, note in notes:
        _check_note(verifier, tree, label, note, report, trusted=True)
        report.trusted_checked += 1


def trusted_notes(s: Session) -> list[tuple[str, bytes]]:
    """The witnessed checkpoints stored in the index, labelled for the report."""
    return [(f"witnessed #{t.id} ({t.source})", t.note) for t in s.scalars(select(TrustedCheckpoint))]
