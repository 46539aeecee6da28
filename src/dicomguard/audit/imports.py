"""Audit messages from other systems (other PACS, dcm4chee, modalities): validated, stored and ledgered like ours.

Accepted input, per file (``dicomguard audit import``) or per syslog frame
(``dicomguard audit listen``): a PS3.15 XML AuditMessage, or text with one
message per line, each line either an XML AuditMessage or an RFC 5424 syslog
line carrying one (what a collector such as rsyslog writes, and what
``audit export --format dicom`` writes).

Every message must be valid against the A.5.1 grammar
(:mod:`dicomguard.audit.schema`); the record keeps the exact bytes received
(evidence is not rewritten) and is marked with its origin (``import:FILE``,
``syslog:AE@ADDRESS``, :mod:`dicomguard.audit.origin`), so that it is always
shown as asserted by its source. The same message imported twice is stored
once (a keyed hash of its bytes is unique).

A device sending over syslog-TLS asserts what a message claims; whether it may
claim events of others is decided per message (``audit-send`` on
:func:`claims_of`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
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


@dataclass(frozen=True)
class Unreadable:
    """A line or frame that could not be read as a message, with the reason (never the sender's bytes).

    Passed beside the messages, not inside them: no payload can pass for a rejection
    and have its own text written into the log or the import report.
    """

    reason: str


ImportItem = tuple[str, "bytes | Unreadable"]
"""(label, XML bytes or why there are none) of one message offered for import."""


@dataclass
class ImportResult:
    stored: int = 0
    duplicates: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"stored": self.stored, "duplicates": self.duplicates, "rejected": len(self.rejected),
                "rejections": [{"message": label, "reason": reason} for label, reason in self.rejected]}


_WIDE_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")


def split_messages(data: bytes, label: str) -> Iterator[ImportItem]:
    """(label, XML bytes) of every message in a file: one XML document, or one message per line."""
    if data.startswith(_WIDE_BOMS):
        # UTF-16/UTF-32 (XML 1.0 4.3.3): one document, decoded and checked by the parser, never split by bytes.
        yield label, data
        return
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
            yield where, Unreadable(str(exc))  # rejected below with the reason


def check_message(xml: bytes) -> AuditMessage:
    """The parsed message, or raises :class:`MessageError` naming the first schema problem."""
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


@dataclass(frozen=True)
class Claims:
    """Who a message names besides its sender, as far as deciding ``audit-send`` needs (PS3.15 A.5.1)."""

    others: tuple[str, ...]
    """ActiveParticipant UserIDs and the AuditSourceID that are not the sender, in message order."""
    as_archive: bool
    """The message would pass for this archive's own: its AuditSourceID or its requestor is the archive."""

    @property
    def about_others(self) -> bool:
        return bool(self.others)


def claims_of(message: AuditMessage, sender: str, archive: Collection[str]) -> Claims:
    """What ``message`` claims beyond its ``sender`` (a device's AE title); ``archive``: this archive's AE title and
    AuditSourceID.

    Each ActiveParticipant's UserID and the AuditSourceID must be the sender for a
    message to be about the sender alone, with one exception: this archive may be
    named as a participant that is not the requestor (e.g. the Destination of
    instances a modality sent here). AlternativeUserID is not consulted: it would
    let a message claim ``UserID=dr.smith, AlternativeUserID=AETITLES=CT1``.
    """
    others: list[str] = []
    as_archive = False
    for p in message.participants:
        uid = p.user_id.strip()
        if uid == sender or (uid in archive and not p.requestor):
            continue
        as_archive = as_archive or uid in archive
        if uid not in others:
            others.append(uid)
    source = message.source_id.strip()
    if source != sender:
        as_archive = as_archive or source in archive
        if source not in others:
            others.append(source)
    return Claims(tuple(others), as_archive)
