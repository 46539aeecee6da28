"""Group commit: concurrent ingests of one process share one index transaction, and so do events recorded alone.

Every stored object is acknowledged only after the index transaction that makes it
visible, with its ledger leaf and audit record, committed (and its blob is on disk).
Each such commit costs a durable write of the database's log (an fsync of SQLite's WAL,
a flush of PostgreSQL's) and the transaction's fixed work: the write lock, the ledger
head, the checkpoint. When several associations or clients store at once, their threads
would queue for the write lock and pay all of that one after the other.

Here the first thread to arrive leads: it takes every entry queued at that moment (its
own included, at most :data:`GROUP_LIMIT`) and runs them as one transaction; threads
arriving meanwhile queue, and the next of them leads the next group once the first
commits. A lone ingest leads a group of one at once, so it waits for nothing. Each
entry's outcome (or exception) is handed back to its own thread; nothing is
acknowledged before the group's commit. (The technique is the classic one of database
logs: Gawlick and Kinkade, "Varieties of concurrency control in IMS/VS Fast Path", 1985;
DeWitt et al., "Implementation techniques for main memory database systems", 1984.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

_T = TypeVar("_T")

GROUP_LIMIT = 64
"""Entries one transaction takes at most: bounds a group's memory and how long its first entry waits."""


@dataclass(eq=False)
class GroupEntry(Generic[_T]):
    """One thread's share of a group: ``work`` is what the leader runs for it; the outcome comes back here."""

    work: Any
    result: _T | None = None
    error: BaseException | None = None
    done: bool = field(default=False)


class GroupCommit(Generic[_T]):
    """A leader/follower queue per process: ``commit(entries)`` runs a group and sets each entry's outcome."""

    def __init__(self, commit: Callable[[Sequence[GroupEntry[_T]]], None], limit: int = GROUP_LIMIT) -> None:
        self._commit = commit
        self._limit = limit
        self._cond = threading.Condition()
        self._queue: list[GroupEntry[_T]] = []
        self._leading = False

    def run(self, work: Any) -> _T:
        """Queue ``work``, take part in a group, and return its outcome (or raise its exception)."""
        entry: GroupEntry[_T] = GroupEntry(work)
        with self._cond:
            self._queue.append(entry)
            while True:
                while self._leading and not entry.done:
                    self._cond.wait()
                if entry.done:
                    break
                self._leading = True
                group, self._queue = self._queue[:self._limit], self._queue[self._limit:]
                self._cond.release()
                try:
                    self._run_group(group)
                finally:
                    self._cond.acquire()
                    self._leading = False
                    self._cond.notify_all()
        if entry.error is not None:
            raise entry.error
        return entry.result  # type: ignore[return-value]

    def _run_group(self, group: list[GroupEntry[_T]]) -> None:
        try:
            self._commit(group)
        except BaseException as exc:  # the commit function sets outcomes itself; this is its own failure, for all
            for e in group:
                if not e.done:
                    e.error, e.done = exc, True
        for e in group:
            if not e.done:
                e.error, e.done = RuntimeError("the group commit set no outcome for this entry"), True
