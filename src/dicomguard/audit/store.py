"""Reading the audit table: filters, decryption, entries. People read it through ``audit.service.AuditService``.

:class:`AuditStore` decrypts records without asking anyone; it serves the
audited reader, verification and benchmarks, never an adapter directly.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, TextIO

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from dicomguard.audit.codes import EVENT_NAMES, NAME_OF_EVENT, Code, EventIds
from dicomguard.audit.message import AuditMessage, format_time, from_xml
from dicomguard.audit.origin import Origin
from dicomguard.audit.trail import AuditKeys, utc
from dicomguard.core.context import ArchiveContext
from dicomguard.crypto.aead import DecryptionError
from dicomguard.index.db import read_session
from dicomguard.index.models import AuditPatient, AuditRecord

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(value: str, now: datetime | None = None) -> datetime:
    """A time for ``--since``/``--until``: ISO 8601 (date or date-time; UTC if no offset) or relative (``7d``, ``12h``)."""
    v = value.strip()
    m = _RELATIVE.match(v)
    if m:
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    try:
        t = datetime.fromisoformat(v[:-1] + "+00:00" if v.endswith("Z") else v)
    except ValueError:
        raise ValueError(f"not a time: {value!r} (use ISO 8601 like 2026-01-31T08:00 or a span like 7d, 12h)") from None
    return utc(t)


def event_code(name: str) -> str:
    """EventID code for ``--event``: a code (110104), a short name (instances-transferred) or the DICOM name."""
    n = name.strip()
    if n in EVENT_NAMES:
        return EVENT_NAMES[n].code
    for c in EventIds.all():
        if n == c.code or n.lower() == c.meaning.lower():
            return c.code
    raise ValueError(f"unknown event {name!r}; one of: {', '.join(EVENT_NAMES)}")


@dataclass(frozen=True)
class AuditFilter:
    user: str | None = None
    patient: str | None = None
    event: str | None = None
    outcome: int | None = None
    failures_only: bool = False
    since: datetime | None = None
    until: datetime | None = None
    study: str | None = None
    origin: str | None = None
    limit: int | None = None
    newest_first: bool = False

    def describe(self) -> str:
        """The filters as recorded in the Audit Log Used message (sealed like every record)."""
        d = {k: (format_time(v) if isinstance(v, datetime) else v) for k, v in self.__dict__.items() if v not in (None, False)}
        return json.dumps(d, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    id: str
    recorded_at: datetime
    event_time: datetime
    event_id: str
    event_type: str | None
    action: str | None
    outcome: int
    origin: str
    xml: bytes = field(repr=False)
    damaged: bool = False
    """The sealed message does not authenticate (altered at rest): only the clear columns are shown."""

    @cached_property
    def message(self) -> AuditMessage:
        if self.damaged:
            return AuditMessage(Code(self.event_id, "", ""), self.event_time, self.outcome, (), "", self.action,
                                outcome_description="DAMAGED: the sealed record does not authenticate; run dicomguard verify")
        return from_xml(self.xml)

    @property
    def event_name(self) -> str:
        return NAME_OF_EVENT.get(self.event_id, self.event_id)

    @property
    def user(self) -> str:
        """The requestor's UserID: of an imported record, the user its source *claims* (see :attr:`asserted_by`)."""
        r = self.message.requestor()
        return r.user_id if r else ""

    @cached_property
    def source(self) -> Origin:
        return Origin.parse(self.origin)

    @property
    def asserted_by(self) -> str | None:
        """``None`` for the archive's own observation; else who asserts this imported record (``device CT1 (...)``)."""
        return self.source.asserted_by

    def summary(self) -> dict[str, Any]:
        m = self.message
        return {
            "seq": self.seq,
            "id": self.id,
            "time": format_time(self.event_time),
            "recorded": format_time(self.recorded_at),
            "event": self.event_name,
            "event_id": self.event_id,
            "event_types": [c.code for c in m.event_types],
            "action": self.action or "",
            "outcome": self.outcome,
            "user": self.user,
            "address": (m.requestor().nap_id if m.requestor() else None) or "",
            "participants": [p.user_id for p in m.participants],
            "patients": m.patient_ids(),
            "studies": m.study_uids(),
            "description": m.outcome_description or "",
            "origin": self.origin,
            "asserted_by": self.asserted_by,
            **({"damaged": True} if self.damaged else {}),
        }


CSV_COLUMNS = ("seq", "time", "event", "event_id", "event_types", "action", "outcome", "user", "address", "patients",
               "studies", "description", "origin", "asserted_by", "id")


def csv_lines(entries: Iterable[AuditEntry]) -> Iterator[str]:
    """Entries as CSV lines (``CSV_COLUMNS``; several patients or studies joined with ``;``), one at a time. They hold PHI."""
    line = io.StringIO()
    w = csv.writer(line, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for e in itertools.chain((None,), entries):
        if e is not None:
            d = e.summary()
            d["event_types"] = " ".join(d["event_types"])
            d["patients"] = ";".join(d["patients"])
            d["studies"] = ";".join(d["studies"])
            w.writerow([d[c] for c in CSV_COLUMNS])
        yield line.getvalue()
        line.seek(0)
        line.truncate()


def write_csv(entries: Iterable[AuditEntry], out: TextIO) -> None:
    """Entries as CSV to ``out`` (:func:`csv_lines`)."""
    out.writelines(csv_lines(entries))


class AuditStore:
    """Decrypting reader of the audit table. Use :class:`AuditReader` for anything a person asked for."""

    def __init__(self, ctx: ArchiveContext, keys: AuditKeys | None = None) -> None:
        self.ctx = ctx
        self.keys = keys or AuditKeys.for_archive(ctx)

    def _select(self, f: AuditFilter) -> Select[Any]:
        stmt = select(AuditRecord).order_by(AuditRecord.seq.desc() if f.newest_first else AuditRecord.seq)
        if f.user:
            stmt = stmt.where(AuditRecord.user_token == self.keys.user_token(f.user))
        if f.patient:
            stmt = stmt.where(AuditRecord.seq.in_(select(AuditPatient.record_seq).where(AuditPatient.token == self.keys.patient_token(f.patient))))
        if f.event:
            stmt = stmt.where(AuditRecord.event_id == event_code(f.event))
        if f.outcome is not None:
            stmt = stmt.where(AuditRecord.outcome == f.outcome)
        if f.failures_only:
            stmt = stmt.where(AuditRecord.outcome != 0)
        if f.since is not None:
            stmt = stmt.where(AuditRecord.event_time >= f.since)
        if f.until is not None:
            stmt = stmt.where(AuditRecord.event_time < f.until)
        if f.origin:
            stmt = stmt.where(AuditRecord.origin == f.origin)
        if f.limit is not None and not f.study:
            stmt = stmt.limit(f.limit)
        return stmt

    def rows(self, s: Session, f: AuditFilter) -> list[AuditRecord]:
        return list(s.scalars(self._select(f)))

    def page(self, s: Session, f: AuditFilter, before_seq: int | None, size: int) -> list[AuditRecord]:
        """Up to ``size`` rows matching ``f`` (its limit and study aside), newest first, older than ``before_seq``."""
        stmt = self._select(replace(f, limit=None, study=None, newest_first=True))
        if before_seq is not None:
            stmt = stmt.where(AuditRecord.seq < before_seq)
        return list(s.scalars(stmt.limit(size)))

    def decode(self, row: AuditRecord) -> AuditEntry:
        try:
            xml, damaged = self.keys.open(row.id, row.body), False
        except DecryptionError:
            xml, damaged = b"", True  # shown as damaged, never hidden: one altered row must not stop a review
        return AuditEntry(row.seq, row.id, utc(row.recorded_at), utc(row.event_time), row.event_id, row.event_type, row.action,
                          int(row.outcome), row.origin, xml, damaged)

    def entries(self, rows: list[AuditRecord], f: AuditFilter) -> list[AuditEntry]:
        out = [self.decode(r) for r in rows]
        if f.study:
            out = [e for e in out if f.study in e.message.study_uids()]
            if f.limit is not None:
                out = out[: f.limit]
        return out

    def iter_all(self, batch: int = 1000, after: int = 0) -> Iterator[AuditEntry]:
        """Every record (after ``seq`` ``after``) in ``seq`` order (internal use: verification, detection, benchmarks)."""
        last = after
        while True:
            with read_session(self.ctx.engine) as s:
                rows = list(s.scalars(select(AuditRecord).where(AuditRecord.seq > last).order_by(AuditRecord.seq).limit(batch)))
            if not rows:
                return
            for r in rows:
                yield self.decode(r)
            last = rows[-1].seq
