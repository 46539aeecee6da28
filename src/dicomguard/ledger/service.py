"""The ledger: appends the leaves the recorder gives it in the action's own transaction,
signs a checkpoint after every appending transaction, proves and witnesses.

Guarantee: an instance is never indexed without its leaf (same transaction), and
every committed state of the log has a signed checkpoint (C2SP tlog-checkpoint)
of its exact size and root. The ledger knows leaves, not events: which event
becomes which leaf is the recorder's table (``app/recorder.py``).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from dicomguard.core.context import ArchiveContext
from dicomguard.core.keyring import META_ARCHIVE_ID, PURPOSE_LEDGER
from dicomguard.errors import NotFoundError
from dicomguard.index.db import connection_of, insert_ignore_statement, read_session, write_session
from dicomguard.index.direct import DirectStatement
from dicomguard.index.models import ArchiveMeta, LedgerCheckpoint, LedgerLeaf, TrustedCheckpoint
from dicomguard.ledger import merkle
from dicomguard.ledger.checkpoint import Checkpoint, CheckpointError, CheckpointSigner, CheckpointVerifier
from dicomguard.ledger.leaves import LeafEntry, with_audit_records
from dicomguard.ledger.proofs import BUNDLE_FORMAT
from dicomguard.ledger.store import Frontier, LedgerStore

_PENDING = "dicomguard.ledger.pending"
_INSERT_CHECKPOINT = DirectStatement(lambda dialect: insert_ignore_statement(dialect, LedgerCheckpoint.__table__))
"""Every append signs one: compiled once, run on the transaction's DBAPI cursor (ADR 0024)."""


def origin_for(archive_id: str) -> str:
    return f"dicomguard/{archive_id}"


class Ledger:
    def __init__(self, engine: Engine, signer: CheckpointSigner) -> None:
        self.engine = engine
        self.signer = signer
        self.verifier: CheckpointVerifier = signer.verifier()
        self._frontier: Frontier | None = None

    @classmethod
    def for_archive(cls, ctx: ArchiveContext) -> Ledger:
        with read_session(ctx.engine) as s:
            archive_id = s.get(ArchiveMeta, META_ARCHIVE_ID)
        assert archive_id is not None
        key = Ed25519PrivateKey.from_private_bytes(ctx.keyring.archive_key(PURPOSE_LEDGER))
        return cls(ctx.engine, CheckpointSigner(origin_for(archive_id.value), key))

    @property
    def origin(self) -> str:
        return self.signer.name

    # -- appending ---------------------------------------------------------------------

    def append(self, session: Session, entry: LeafEntry, audit_records: Sequence[tuple[str, bytes]] = ()) -> None:
        """Queue a leaf in ``session``; it is appended by :meth:`flush`, which the caller runs just before commit.

        ``audit_records``: ``(record id, canonical SHA-256)`` of the audit records of
        the same action, named in the leaf so that each record is bound to the log.
        """
        session.info.setdefault(_PENDING, []).append(with_audit_records(entry, audit_records) if audit_records else entry)

    def flush(self, session: Session) -> None:
        """Append the queued leaves under the ledger's lock and sign a checkpoint of the new tree (inside the transaction).

        The lock (the head row; SQLite's write lock) is held until commit: appends of
        concurrent transactions, and anything ordered after this call in the same
        transaction, are serialized in commit order.
        """
        entries = session.info.pop(_PENDING, [])
        if entries:
            now = datetime.now(UTC)
            size, root, frontier = LedgerStore(session).append(entries, now, self._frontier)
            self._record_checkpoint(session, size, root, now)
            # Only valid once this transaction commits; a rollback leaves a stale size,
            # which the size check under the lock then ignores.
            self._frontier = frontier

    def _record_checkpoint(self, session: Session, size: int, root: bytes, now: datetime) -> bytes:
        note = self.signer.sign(Checkpoint(self.origin, size, root))
        _INSERT_CHECKPOINT.execute(connection_of(session), {"size": size, "note": note, "created_at": now})
        return note

    # -- reading -----------------------------------------------------------------------

    def latest_checkpoint(self) -> bytes:
        """The newest signed checkpoint; signs one for the current tree if it has none yet."""
        with write_session(self.engine) as s:
            store = LedgerStore(s)
            size = store.size(lock=True)
            row = s.scalar(select(LedgerCheckpoint).order_by(LedgerCheckpoint.size.desc()).limit(1))
            if row is not None and row.size == size:
                return row.note
            return self._record_checkpoint(s, size, store.root(size), datetime.now(UTC))

    def prove_instance(self, sop_instance_uid: str) -> dict[str, Any]:
        """A self-contained proof bundle: leaf, inclusion proof, signed checkpoint, public key."""
        note = self.latest_checkpoint()
        cp = self.verifier.verify(note)
        with read_session(self.engine) as s:
            leaf = s.scalar(
                select(LedgerLeaf).where(LedgerLeaf.subject == sop_instance_uid, LedgerLeaf.kind == "instance").order_by(LedgerLeaf.idx).limit(1)
            )
            if leaf is None or leaf.idx >= cp.size:
                raise NotFoundError(f"no ledger entry for {sop_instance_uid}")
            proof = LedgerStore(s).inclusion_proof(leaf.idx, cp.size)
        return {
            "format": BUNDLE_FORMAT,
            "leaf": leaf.data.decode("ascii"),
            "leaf_index": leaf.idx,
            "tree_size": cp.size,
            "inclusion_proof": [base64.b64encode(h).decode() for h in proof],
            "checkpoint": note.decode("utf-8"),
            "public_key": self.verifier.to_verifier_key(),
        }

    def witness(self, session: Session, note: bytes, source: str) -> Checkpoint:
        """Record an externally kept checkpoint as trusted in ``session``, after checking it against the tree.

        Refused if its signature is not ours or if the current tree does not
        contain it (a rolled-back or rewritten archive cannot adopt a witness).
        """
        cp = self.verifier.verify(note)
        store = LedgerStore(session)
        size = store.size()
        if cp.size > size:
            raise CheckpointError(f"checkpoint of size {cp.size} is ahead of the ledger ({size}): rollback?")
        if cp.size and store.root(cp.size) != cp.root_hash:
            raise CheckpointError("checkpoint root differs from the ledger at that size: history rewritten?")
        session.add(TrustedCheckpoint(size=cp.size, note=note, source=source[:256], imported_at=datetime.now(UTC)))
        return cp

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        with read_session(self.engine) as s:
            return LedgerStore(s).consistency_proof(size1, size2)


def verify_consistency_to(store: LedgerStore, cp: Checkpoint, current_size: int, current_root: bytes) -> None:
    """Prove that ``cp`` is a prefix of the current tree (RFC 9162 2.1.4); raises ProofError."""
    if cp.size == 0:
        return
    proof = store.consistency_proof(cp.size, current_size)
    merkle.verify_consistency(cp.size, current_size, cp.root_hash, current_root, proof)
