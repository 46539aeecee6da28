"""Audit messages from other systems (other PACS, dcm4chee, modalities): validated, stored and ledgered like ours.

Accepted input, per file (``dicomguard audit import``) or per syslog frame
(``dicomguard audit listen``): a PS3.15 XML AuditMessage, or text with one
message per line, each line either an XML AuditMessage or an RFC 5424 syslog
line carrying one (what a collector such as rsyslog writes, and what
``audit export --format dicom`` writes).

Every message must be valid against the A.5.1 grammar
(:mod:`dicomguard.audit.schema`); the record keeps the exact bytes received
(evidence is not rewritten) and is marked with its origin (``import:FILE``,
``syslog:PEER``). The same message imported twice is stored once (a keyed hash
of its bytes is unique).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from sqlalchemy import select

from dicomguard.audit.message import (
    MAX_MESSAGE_BYTES,
    MessageError,
    from_element,
    parse_tree,
)
from dicomguard.audit.schema import validate
from dicomguard.audit.syslog import BOM, SyslogError, parse_message
from dicomguard.audit.trail import AuditTrail
from dicomguard.index.db import write_session
from dicomguard.index.models import AuditRecord

BATCH = 500


@dataclass
class ImportResult:
    stored: int = 0
    duplicates: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"stored": self.stored, "duplicates": self.duplicates, "rejected": len(self.rejected),
                "rejections": [{"message": label, "reason": reason} for label, reason in self.rejected]}


def split_messages(data: bytes, label: str) -> Iterator[tuple[str, bytes]]:
    """(label, XML bytes) of every message in a file: one XML document, or one message per line."""
    body = data[len(BOM):] if data.startswith(BOM) else data
    stripped = body.strip()
    if stripped.startswith(b"<?xml") or stripped.startswith(b"<AuditMessage"):
        if stripped.count(b"<AuditMessage") <= 1:
            yield label, stripped
            return
    for number, line in enumerate(body.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        where = f"{label}:{number}"
        if line.startswith(b"<") and not line[1:2].isdigit():
            yield where, line
            continue
        try:
            yield where, parse_message(line).payload().strip()
        except SyslogError as exc:
            yield where, b"!" + str(exc).encode()  # rejected below with the reason


class AuditImporter:
    def __init__(self, trail: AuditTrail) -> None:
        self.trail = trail

    def check(self, xml: bytes):  # type: ignore[no-untyped-def]
        """The parsed message, or raises :class:`MessageError` naming the first schema problem."""
        if xml.startswith(b"!"):
            raise MessageError(xml[1:].decode(errors="replace"))
        if len(xml) > MAX_MESSAGE_BYTES:
            raise MessageError("message too large")
        root = parse_tree(xml)
        problems = validate(root)
        if problems:
            raise MessageError(f"not valid against PS3.15 A.5.1: {problems[0]}" + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""))
        return from_element(root)

    def import_messages(self, items: Iterable[tuple[str, bytes]], origin: str) -> ImportResult:
        result = ImportResult()
        batch: list[tuple[str, bytes, object]] = []
        for label, xml in items:
            try:
                batch.append((label, xml, self.check(xml)))
            except (MessageError, ValueError) as exc:
                result.rejected.append((label, str(exc)))
                continue
            if len(batch) >= BATCH:
                self._store(batch, origin, result)
                batch = []
        if batch:
            self._store(batch, origin, result)
        return result

    def _store(self, batch: list[tuple[str, bytes, object]], origin: str, result: ImportResult) -> None:
        keys = self.trail.keys
        tokens = {keys.dedup_token(xml) for _, xml, _ in batch}
        with write_session(self.trail.ctx.engine) as s:
            seen = set(s.scalars(select(AuditRecord.dedup_token).where(AuditRecord.dedup_token.in_(tokens))))
            for _, xml, message in batch:
                token = keys.dedup_token(xml)
                if token in seen:
                    result.duplicates += 1
                    continue
                seen.add(token)
                requestor = message.requestor()  # type: ignore[attr-defined]
                self.trail.record(s, message, origin, user=requestor.user_id if requestor else None,  # type: ignore[arg-type]
                                  patients=message.patient_ids(), xml=xml, dedup=True)  # type: ignore[attr-defined]
                result.stored += 1
