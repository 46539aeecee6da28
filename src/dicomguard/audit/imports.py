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

from collections.abc import Iterator
from dataclasses import dataclass, field

from dicomguard.audit.message import (
    MAX_MESSAGE_BYTES,
    AuditMessage,
    MessageError,
    from_element,
    parse_tree,
)
from dicomguard.audit.schema import validate
from dicomguard.audit.syslog import BOM, SyslogError, parse_message


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


def check_message(xml: bytes) -> AuditMessage:
    """The parsed message, or raises :class:`MessageError` naming the first schema problem."""
    if xml.startswith(b"!"):
        raise MessageError(xml[1:].decode(errors="replace"))
    if len(xml) > MAX_MESSAGE_BYTES:
        raise MessageError("message too large")
    root = parse_tree(xml)
    problems = validate(root)
    if problems:
        raise MessageError(f"not valid against PS3.15 A.5.1: {problems[0]}" + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""))
    try:
        return from_element(root)
    except MessageError:
        raise
    except (ValueError, OverflowError, TypeError, LookupError) as exc:  # e.g. bad base64 in a detail: one message fails alone
        raise MessageError(f"a value of the message cannot be read ({type(exc).__name__})") from None
