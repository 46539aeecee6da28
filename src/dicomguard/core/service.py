"""The shape of every service: authorize -> act -> record, the record in the action's own transaction.

A service is built for one principal (:class:`AccessControl`) and exposes one
method per action. Each method:

1. asks :meth:`AccessControl.authorize` (a refusal is recorded and raised);
2. changes state inside :meth:`Service.change`, a write transaction;
3. publishes the action's event with :meth:`Service.record` in that same
   transaction. The recorder subscribed to the bus (built by the composition
   root) writes the audit records and the ledger leaf before it commits, so an
   action and its record commit together or not at all.

Reads that return PHI record their event and commit it *before* the data is
returned: a crash can lose an answer, never the trace of one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial

from sqlalchemy.orm import Session

from dicomguard.core.access import Principal
from dicomguard.core.access_control import AccessControl
from dicomguard.core.context import ArchiveContext
from dicomguard.core.events import Event
from dicomguard.core.group_commit import GroupEntry
from dicomguard.index.db import write_session


class Service:
    """Base of the services: the archive context and one principal's access control."""

    def __init__(self, ctx: ArchiveContext, access: AccessControl) -> None:
        self.ctx = ctx
        self.access = access

    @property
    def principal(self) -> Principal:
        return self.access.principal

    @contextmanager
    def change(self) -> Iterator[Session]:
        """The write transaction of an action: committed with its records on success, rolled back on any error."""
        with write_session(self.ctx.engine) as s:
            yield s

    def record(self, session: Session, event: Event) -> None:
        """Publish the action's event inside its transaction (the recorder writes audit record and ledger leaf)."""
        self.ctx.bus.publish(session, event)

    def record_alone(self, event: Event) -> None:
        """An event with no state change of its own (a query, an access), committed before this returns.

        Events recorded alone by concurrent threads of the process share one transaction (``core.group_commit``):
        each commit costs a durable write of the database's log, the write lock and a ledger checkpoint, which
        concurrent queries otherwise paid one after the other. A group whose commit fails records each event alone,
        so one that cannot be recorded fails only its own caller."""
        self.ctx.group_commit("records", partial(_commit_records, self.ctx)).run(event)


def _commit_records(ctx: ArchiveContext, group: Sequence[GroupEntry[None]]) -> None:
    try:
        with write_session(ctx.engine) as s:
            for entry in group:
                ctx.bus.publish(s, entry.work)
    except Exception:
        if len(group) == 1:
            raise
        for entry in group:
            try:
                with write_session(ctx.engine) as s:
                    ctx.bus.publish(s, entry.work)
            except Exception as exc:  # noqa: BLE001 - this entry's own failure, raised in its own thread
                entry.error = exc
            entry.done = True
        return
    for entry in group:
        entry.done = True
