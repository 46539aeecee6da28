"""The audit trail as a service: reading it (itself audited) and importing other systems' messages.

Reading (``dicomguard audit search|report|export``, the console): only a
principal allowed ``audit-read`` (by default the security officer; the local
operator) may read. Every read first commits an ``AuditLogUsed`` event (PS3.15
A.5.3.2) and only then selects the records, so the trail cannot be read without
leaving a trace; a refused reader is recorded as a Security Alert.

Importing a file (``dicomguard audit import``): ``audit-import`` is decided once
per batch. Receiving (the syslog-TLS listener, as the sending device):
``audit-send`` is decided per message, on whether it claims events of others
(:func:`dicomguard.audit.imports.claims_of`); a refused message is recorded
as a Security Alert naming the sender (what it claimed appears only in the
alert's description, never indexed as the act of whom it named) and rejected
with its reason, and the other messages go on. Either way each message valid
against PS3.15 A.5.1 becomes one ``AuditMessageImported`` event, stored verbatim
with its origin (shown as *asserted by* it, :mod:`dicomguard.audit.origin`) and
bound to a ledger leaf of its own; a message already stored (same keyed hash of
its bytes) is counted as a duplicate, an invalid one is rejected with its reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy import select

from dicomguard.audit.activity import HourCounts, last_day
from dicomguard.audit.imports import ImportItem, ImportResult, Unreadable, check_message, claims_of
from dicomguard.audit.message import AuditMessage, MessageError
from dicomguard.audit.origin import MAX_ORIGIN
from dicomguard.audit.store import AuditEntry, AuditFilter, AuditStore
from dicomguard.audit.trail import AuditKeys
from dicomguard.core.access import Action, Resource
from dicomguard.core.access_control import AccessControl
from dicomguard.core.context import ArchiveContext
from dicomguard.core.events import AuditLogUsed, AuditMessageImported
from dicomguard.core.service import Service
from dicomguard.index.db import read_session
from dicomguard.index.models import AuditRecord

IMPORT_BATCH = 500
"""Messages stored per transaction during an import."""


REFUSED_SEND = "audit-send refused: "
"""How a message the policy refused is named in an import's rejections (the listener counts them)."""


class AuditStream:
    """The entries of one recorded read, newest first, fetched and decrypted ``PAGE`` rows at a time."""

    PAGE = 500

    def __init__(self, ctx: ArchiveContext, store: AuditStore, f: AuditFilter, scan_limit: int | None) -> None:
        self.ctx, self.store, self.filter, self.scan_limit = ctx, store, f, scan_limit
        self.truncated = False
        """The scan limit ended the stream before the trail did (it applies to a study filter only: the others are in SQL)."""

    def __iter__(self) -> Iterator[AuditEntry]:
        f, before, given, scanned = self.filter, None, 0, 0
        while f.limit is None or given < f.limit:
            with read_session(self.ctx.engine) as s:
                rows = self.store.page(s, f, before, self.PAGE)
            if not rows:
                return
            before = rows[-1].seq
            for entry in self.store.entries(rows, replace(f, limit=None)):
                yield entry
                given += 1
                if f.limit is not None and given >= f.limit:
                    return
            scanned += len(rows)
            if f.study and self.scan_limit is not None and scanned >= self.scan_limit:
                self.truncated = True
                return


class AuditService(Service):
    def __init__(self, ctx: ArchiveContext, access: AccessControl, keys: AuditKeys | None = None) -> None:
        super().__init__(ctx, access)
        self.store = AuditStore(ctx, keys)

    # -- reading ---------------------------------------------------------------------------

    def read(self, f: AuditFilter, purpose: str) -> list[AuditEntry]:
        """Authorize ``audit-read``, record Audit Log Used, then return the matching entries."""
        self.access.authorize(Action.AUDIT_READ, Resource.audit_log())  # refusal: Security Alert + AccessDenied
        # The use is committed before anything is read: a read may be recorded and then fail, never the reverse.
        # (Selecting in a separate snapshot keeps SQLite's write lock short during a long review.)
        self.record_alone(AuditLogUsed(self.principal, f"{purpose} {f.describe()}"[:1024], datetime.now(UTC)))
        with read_session(self.ctx.engine) as s:
            rows = self.store.rows(s, f)
        return self.store.entries(rows, f)

    def search(self, f: AuditFilter) -> list[AuditEntry]:
        return self.read(f, "search")

    def stream(self, f: AuditFilter, purpose: str, *, scan_limit: int | None = None) -> AuditStream:
        """Like :meth:`read`, newest first, decrypted a page at a time (memory bounded whatever the trail's size).

        Authorized and recorded before it returns. ``scan_limit`` bounds how many
        records are opened when a filter is applied after decryption (the study):
        past it the stream ends and says so (``truncated``), so no search can make
        the archive decrypt the whole trail.
        """
        self.access.authorize(Action.AUDIT_READ, Resource.audit_log())
        self.record_alone(AuditLogUsed(self.principal, f"{purpose} {f.describe()}"[:1024], datetime.now(UTC)))
        return AuditStream(self.ctx, self.store, f, scan_limit)

    def activity(self) -> list[HourCounts]:
        """Accesses and refusals per hour of the last day against the usual pattern (``audit-read``).

        Counts only (:mod:`dicomguard.audit.activity`): no record is opened and no
        person is named, so no Audit Log Used is recorded for them.
        """
        self.access.authorize(Action.AUDIT_READ, Resource.audit_log())
        return last_day(self.ctx.engine)

    # -- importing -------------------------------------------------------------------------

    def import_messages(self, items: Iterable[ImportItem], origin: str) -> ImportResult:
        """Validate and store ``(label, XML bytes)`` messages of another system read from a file, marked with ``origin``."""
        self.access.authorize(Action.AUDIT_IMPORT, Resource.audit_log())
        return self._import(items, origin, None)

    def receive(self, items: Iterable[ImportItem], origin: str) -> ImportResult:
        """Messages the principal itself sends (a device over syslog-TLS): each decided as ``audit-send``, then stored.

        A message is *about others* when an ActiveParticipant or its AuditSourceID
        is not the principal, and *as the archive* when it would pass for this
        archive's own (:func:`claims_of`); the policies decide whether the
        principal may assert it (by default: a device registered for ``audit``
        only about itself, one registered for ``audit-relay`` about anyone but
        never as the archive, any other device nothing). A refusal is recorded and
        rejects that message alone.
        """
        return self._import(items, origin, self._may_send)

    def _may_send(self, xml: bytes, message: AuditMessage) -> str | None:
        """``None`` if the principal may assert ``message``; else the reason, after recording the refusal."""
        st = self.ctx.settings
        claims = claims_of(message, self.principal.name, {st.archive.ae_title, st.audit.source_id or st.archive.ae_title})
        resource = Resource.audit_message(self.store.keys.dedup_token(xml).hex(), about_others=claims.about_others,
                                          as_archive=claims.as_archive)
        decision = self.access.decide(Action.AUDIT_SEND, resource)
        if decision.allowed:
            return None
        reason = decision.reason
        if claims.others:  # what it claimed, as words in the alert only: never indexed as the act of whom it names
            others = claims.others
            named = ", ".join(repr(o[:64]) for o in others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
            reason += f"; the message asserts events of {named}, not only of {self.principal.name}"
        if claims.as_archive:
            reason += "; it would pass for this archive's own record"
        self.access.record_refusal(Action.AUDIT_SEND, resource, reason)  # a Security Alert naming the sender
        return f"{REFUSED_SEND}{reason}"

    def _import(self, items: Iterable[ImportItem], origin: str,
                may: Callable[[bytes, AuditMessage], str | None] | None) -> ImportResult:
        result = ImportResult()
        origin = origin[:MAX_ORIGIN]
        batch: list[tuple[str, bytes, AuditMessage]] = []
        for label, xml in items:
            if isinstance(xml, Unreadable):
                result.rejected.append((label, xml.reason))
                continue
            try:
                message = check_message(xml)
            except (MessageError, ValueError) as exc:
                result.rejected.append((label, str(exc)))
                continue
            refused = may(xml, message) if may is not None else None
            if refused is not None:
                result.rejected.append((label, refused))
                continue
            batch.append((label, xml, message))
            if len(batch) >= IMPORT_BATCH:
                self._store(batch, origin, result)
                batch = []
        if batch:
            self._store(batch, origin, result)
        return result

    def _store(self, batch: list[tuple[str, bytes, AuditMessage]], origin: str, result: ImportResult) -> None:
        """Store a batch in one transaction; if that fails, each message alone, so one bad message loses no other."""
        try:
            self._store_together(batch, origin, result)
        except (MessageError, ValueError, OverflowError, TypeError, LookupError):
            for item in batch:
                try:
                    self._store_together([item], origin, result)
                except (MessageError, ValueError, OverflowError, TypeError, LookupError) as exc:
                    result.rejected.append((item[0], f"cannot be stored ({type(exc).__name__})"))

    def _store_together(self, batch: list[tuple[str, bytes, AuditMessage]], origin: str, result: ImportResult) -> None:
        keys = self.store.keys
        stored = duplicates = 0
        tokens = {keys.dedup_token(xml) for _, xml, _ in batch}
        now = datetime.now(UTC)
        with self.change() as s:
            seen = set(s.scalars(select(AuditRecord.dedup_token).where(AuditRecord.dedup_token.in_(tokens))))
            for _, xml, message in batch:
                token = keys.dedup_token(xml)
                if token in seen:
                    duplicates += 1
                    continue
                seen.add(token)
                self.record(s, AuditMessageImported(self.principal, origin, xml, message, now))
                stored += 1
        result.stored += stored  # counted once the transaction committed
        result.duplicates += duplicates
