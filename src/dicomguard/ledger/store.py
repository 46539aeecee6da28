"""The Merkle tree persisted in the index database (same transaction as the ingest).

Appends take a row lock on ``ledger_head`` (``SELECT ... FOR UPDATE``; on SQLite
the ``BEGIN IMMEDIATE`` write lock), so concurrent writers in several processes
form one sequence. Every complete subtree hash is stored, which makes a proof
one indexed query and at most about 2*log2(n) rows (RFC 9162 2.1.3, 2.1.4).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, bindparam, or_, select
from sqlalchemy.orm import Session

from dicomguard.index.db import connection_of
from dicomguard.index.direct import DirectStatement
from dicomguard.index.models import LedgerHead, LedgerLeaf, LedgerNode
from dicomguard.ledger import merkle

_CHUNK = 500  # rows per IN (...) query

# Compiled once and run on the transaction's DBAPI cursor (ADR 0024): every ingest appends, and SQLAlchemy's
# per-execution work cost more than SQLite's own.
_head = LedgerHead.__table__
_SIZE = DirectStatement(select(_head.c.size).where(_head.c.id == 1))
_SIZE_LOCKED = DirectStatement(select(_head.c.size).where(_head.c.id == 1).with_for_update())
_SET_SIZE = DirectStatement(_head.update().where(_head.c.id == 1).values(size=bindparam("new_size")))
_INSERT_LEAVES = DirectStatement(LedgerLeaf.__table__.insert())
_INSERT_NODES = DirectStatement(LedgerNode.__table__.insert())


@dataclass(frozen=True)
class Frontier:
    """The right edge of a tree of ``size`` leaves: all an appender needs (RFC 9162 2.1.1)."""

    size: int
    nodes: dict[merkle.NodeId, bytes]

    @classmethod
    def of(cls, appender: merkle.TreeAppender) -> Frontier:
        ids = merkle.frontier_nodes(appender.size)
        return cls(appender.size, dict(zip(ids, appender.frontier_hashes(), strict=True)))

    def reader(self) -> merkle.NodeReader:
        return lambda level, index: self.nodes[(level, index)]


class LedgerStore:
    def __init__(self, session: Session) -> None:
        self.s = session

    def size(self, lock: bool = False) -> int:
        value = (_SIZE_LOCKED if lock else _SIZE).scalar(connection_of(self.s))
        return int(value or 0)

    def nodes(self, ids: Iterable[merkle.NodeId]) -> dict[merkle.NodeId, bytes]:
        wanted = list(dict.fromkeys(ids))
        found: dict[merkle.NodeId, bytes] = {}
        for i in range(0, len(wanted), _CHUNK):
            chunk = wanted[i : i + _CHUNK]
            # One OR of primary-key equalities: both SQLite and PostgreSQL answer it from the
            # primary key index (a row-value IN list makes SQLite scan the table).
            rows = self.s.execute(
                select(LedgerNode.level, LedgerNode.idx, LedgerNode.hash).where(
                    or_(*(and_(LedgerNode.level == lvl, LedgerNode.idx == idx) for lvl, idx in chunk))
                )
            )
            found.update({(lvl, idx): h for lvl, idx, h in rows})
        return found

    def _reader(self, ids: list[merkle.NodeId]) -> merkle.NodeReader:
        found = self.nodes(ids)

        def get(level: int, index: int) -> bytes:
            try:
                return found[(level, index)]
            except KeyError:
                raise merkle.ProofError(f"ledger node ({level}, {index}) is missing") from None

        return get

    def append(
        self, entries: list[tuple[str, str, bytes]], now: datetime, frontier: Frontier | None = None
    ) -> tuple[int, bytes, Frontier]:
        """Append (kind, subject, leaf bytes) entries; returns the new size, root and frontier.

        ``frontier`` is the caller's cached right edge; it is used only if it
        is for exactly the size found under the lock, else the edge is read.
        """
        size = self.size(lock=True)
        if frontier is not None and frontier.size == size:
            reader: merkle.NodeReader | None = frontier.reader()
        else:
            reader = self._reader(merkle.frontier_nodes(size)) if size else None
        appender = merkle.TreeAppender(size, reader)
        new_nodes = appender.append(merkle.leaf_hash(data) for _, _, data in entries)
        conn = connection_of(self.s)
        _INSERT_LEAVES.execute_many(
            conn,
            [{"idx": size + i, "kind": k, "subject": sub, "data": d, "created_at": now} for i, (k, sub, d) in enumerate(entries)],
        )
        _INSERT_NODES.execute_many(conn, [{"level": lvl, "idx": idx, "hash": h} for lvl, idx, h in new_nodes])
        _SET_SIZE.execute(conn, {"new_size": appender.size})
        return appender.size, appender.root(), Frontier.of(appender)

    def root(self, size: int) -> bytes:
        return merkle.root(size, self._reader(merkle.frontier_nodes(size)))

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return merkle.inclusion_proof(index, size, self._reader(merkle.nodes_needed_for_inclusion(index, size)))

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        return merkle.consistency_proof(size1, size2, self._reader(merkle.nodes_needed_for_consistency(size1, size2)))
