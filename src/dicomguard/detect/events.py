"""Access events read from a DICOM audit trail (PS3.15 A.5), the input of access-anomaly detection.

Each line of an audit file is one AuditMessage (PS3.15 A.5.1) or one RFC 5424
syslog message carrying one in its MSG part (IHE ITI-20). The XML is untrusted:
it is parsed with no DTD, no entity expansion, no network access and no huge-tree
mode, and a line longer than :data:`MAX_LINE_BYTES` is refused before parsing,
so a hostile line can cost neither memory (billion laughs) nor a request
(external entities) nor a file read (XXE).

Event IDs map to actions as PS3.15 A.5.3 defines them: 110103 DICOM Instances
Accessed (view), 110104 DICOM Instances Transferred (retrieve; the archive
receiving instances, action code C, is a store, not an access), 110106 Export,
110112 Query, 110114 User Authentication (login; a non-zero outcome is a failed
login) and 110113 Security Alert typed Emergency Override Started (110127) or
HL7 ActReason BTG (break-glass). Other messages are not accesses and parse to
``None``. Patient IDs are PHI: events keep them in memory only.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import queue
import threading
from collections.abc import Generator, Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, BinaryIO, Final, NamedTuple

from lxml import etree

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

MAX_LINE_BYTES: Final = 1024 * 1024
"""Longest line accepted (the archive's own bound on one audit message, PS3.15 A.5 gives none)."""

ACCESS_ACTIONS: Final = frozenset({"query", "retrieve", "export", "view", "break-glass"})
"""Actions that read patient data; logins and other events are context, not accesses."""

_EVENT_ACTIONS: Final = {"110103": "view", "110104": "retrieve", "110106": "export", "110112": "query"}
_BREAK_GLASS_TYPES: Final = frozenset({"110127", "BTG"})
_PATIENT_ID_TYPE: Final = "2"  # RFC 3881 Patient Number (PS3.16 CID 404)
_STUDY_ID_TYPE: Final = "110180"  # Study Instance UID
_SECURITY_RESOURCE_ROLE: Final = "13"  # the Alert Subject of a Security Alert (A.5.3.11)
_NOT_ACCEPTED: Final = (b"<!DOCTYPE", b"<!ENTITY")
_BOM: Final = b"\xef\xbb\xbf"


class AccessEvent(NamedTuple):
    """One access (or login) by one user, as the audit trail recorded it.

    Immutable. A named tuple rather than a frozen dataclass: offline scoring builds one per line of the trail
    in the process that learns and scores, from the fields worker processes send, and a tuple is built from
    them in one step (a frozen dataclass sets each field through ``object.__setattr__``).
    """

    time: datetime
    user: str
    action: str
    patients: tuple[str, ...]
    study_uids: tuple[str, ...] = ()
    instances: int = 0
    address: str | None = None
    workstation: str | None = None
    outcome: int = 0
    reason: str | None = None
    event_id: str = ""


def _parser() -> etree.XMLParser:
    # Hardened: no DTD loaded or validated, entities never resolved, no network, libxml2's size limits kept.
    # No table of xml:id attributes either: nothing looks elements up by ID.
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False, remove_comments=True, remove_pis=True, collect_ids=False)


_PARSER: Final = _parser()


def _xml_of(line: bytes) -> bytes:
    """The XML of a line: the line itself, or the MSG of an RFC 5424 message (section 6: HEADER SP SD [SP MSG])."""
    if line.startswith(_BOM):
        line = line[3:]
    if line.startswith((b"<?xml", b"<AuditMessage")):
        return line
    if not (line.startswith(b"<") and line[1:2].isdigit()):
        raise ValueError("neither an AuditMessage nor an RFC 5424 syslog message")
    # Skip PRI+VERSION, TIMESTAMP, HOSTNAME, APP-NAME, PROCID, MSGID: six space-separated fields.
    pos = 0
    for _ in range(6):
        pos = line.find(b" ", pos) + 1
        if pos == 0:
            raise ValueError("syslog header truncated")
    # STRUCTURED-DATA: "-" or SD-ELEMENTs whose PARAM-VALUEs may hold escaped '"', '\' and ']' (RFC 5424 6.3.3).
    if line[pos:pos + 1] == b"-":
        pos += 1
    else:
        pos = _end_of_structured_data(line, pos)
    msg = line[pos + 1:] if line[pos:pos + 1] == b" " else line[pos:]
    if msg.startswith(_BOM):
        msg = msg[3:]
    if not msg:
        raise ValueError("syslog message carries no audit message")
    return msg


def _end_of_structured_data(line: bytes, pos: int) -> int:
    """Where the SD-ELEMENTs starting at ``pos`` end: after the ``]`` outside a quoted PARAM-VALUE that no ``[``
    follows. Inside a value a backslash escapes the next octet ('"', '\\', ']'); outside, both are plain octets.

    Jumps between the octets that matter (bytes.find runs in C) instead of stepping through every octet in Python.
    """
    n = len(line)
    while True:
        quote = line.find(b'"', pos)
        close = line.find(b"]", pos)
        if close < 0:
            raise ValueError("syslog structured data not terminated")
        if 0 <= quote < close:  # a value opens before the next ']': skip to the quote that closes it
            pos = quote + 1
            while True:
                quote = line.find(b'"', pos)
                if quote < 0:
                    raise ValueError("syslog structured data not terminated")
                escape = line.find(b"\\", pos, quote)
                if escape < 0:
                    pos = quote + 1
                    break
                pos = escape + 2  # the escaped octet, a quote or not, is part of the value
            continue
        pos = close + 1
        if pos >= n or line[pos] != 0x5B:
            return pos


def _parse_time(value: str | None) -> datetime:
    if not value:
        raise ValueError("EventDateTime missing")
    v = value.strip()
    if v.endswith(("Z", "z")):
        v = v[:-1] + "+00:00"
    try:
        t = datetime.fromisoformat(v)
    except ValueError:
        raise ValueError("EventDateTime is not an xs:dateTime") from None
    if t.tzinfo is UTC:
        return t  # what astimezone(UTC) returns for a time already in UTC (the common "Z" form), without the call
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _int(value: str | None) -> int:
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


def _alert_reason(po: etree._Element) -> str | None:
    for d in po.iterchildren("ParticipantObjectDetail"):
        if d.get("type") == "Alert Description":
            try:
                return base64.b64decode(d.get("value", ""), validate=False).decode("utf-8", "replace")
            except ValueError:
                return None
    return None


_Row = tuple[datetime, str, str, tuple[str, ...], tuple[str, ...], int, str | None, str | None, int, str | None, str]
"""An event's fields in :class:`AccessEvent` order: what parsing produces, and what worker processes send back."""


def parse_xml(data: bytes, event_id: str = "") -> AccessEvent | None:
    """The access an AuditMessage records, or ``None`` when it records no access (raises ValueError if malformed)."""
    row = _row_of_xml(data, event_id)
    return None if row is None else AccessEvent._make(row)


def _row_of_xml(data: bytes, event_id: str) -> _Row | None:
    """:func:`parse_xml`'s fields, same checks, same errors; no event object is built (a worker sends plain tuples)."""
    if len(data) > MAX_LINE_BYTES:
        raise ValueError(f"message longer than {MAX_LINE_BYTES} bytes")
    if _NOT_ACCEPTED[0] in data or _NOT_ACCEPTED[1] in data:
        raise ValueError("DTDs and entities are not accepted")
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"not well-formed XML ({exc.msg})") from None
    if root.tag != "AuditMessage":
        raise ValueError("not a DICOM AuditMessage")
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise ValueError("DTDs and entities are not accepted")  # a UTF-16 document hides its DOCTYPE from the byte test

    # Every element access creates a Python proxy (the main cost of extraction): each is asked for once.
    ev = root[0] if len(root) else None
    if ev is None or ev.tag != "EventIdentification":
        ev = root.find("EventIdentification")
    if ev is None:
        raise ValueError("EventIdentification missing")
    code = ""
    types: list[str] = []
    description: str | None = None
    for child in ev:
        tag = child.tag
        if tag == "EventID":
            code = child.get("csd-code", "")
        elif tag == "EventTypeCode":
            types.append(child.get("csd-code", ""))
            types.append((child.get("originalText") or child.get("displayName") or "").lower())
        elif tag == "EventOutcomeDescription":
            description = child.text
    if not code:
        raise ValueError("EventID missing")
    outcome = _int(ev.get("EventOutcomeIndicator"))

    reason: str | None = None
    if code in _EVENT_ACTIONS:
        action = _EVENT_ACTIONS[code]
        if code == "110104" and ev.get("EventActionCode") == "C":
            return None  # the archive received instances (a store), nobody read anything
    elif code == "110114":
        if "110123" in types:
            return None  # logout
        action = "login" if outcome == 0 else "login-failed"
    elif code == "110113":
        if not (_BREAK_GLASS_TYPES.intersection(types) or any("break-glass" in t or "break the glass" in t for t in types)):
            return None  # other security alerts (our own anomaly alerts among them) are not accesses
        action = "break-glass"
        if description and ": " in description:
            reason = description.split(": ", 1)[1]
    else:
        return None

    user: str | None = None
    address: str | None = None
    workstation: str | None = None
    patients: list[str] = []
    studies: list[str] = []
    instances = 0
    # Every child in document order, the two kinds picked by tag: cheaper than a tag-filtered iterchildren().
    for el in root:
        tag = el.tag
        if tag == "ActiveParticipant":
            if user is None and el.get("UserIsRequestor") in ("true", "1"):
                user = el.get("UserID")
                address = el.get("NetworkAccessPointID")
                alt = el.get("AlternativeUserID")
                workstation = alt if alt and not alt.startswith("AETITLES=") else None
            continue
        if tag != "ParticipantObjectIdentification":
            continue
        # The first ParticipantObjectIDTypeCode child. PS3.15 puts it first, where indexing finds it without the
        # iterator and tag matcher iterchildren() builds per call; anywhere else, iterchildren() looks further
        # (it runs in C; find() goes through lxml's Python ElementPath, several times slower per message).
        id_type = el[0] if len(el) else None
        if id_type is not None and id_type.tag != "ParticipantObjectIDTypeCode":
            id_type = next(el.iterchildren("ParticipantObjectIDTypeCode"), None)
        type_code = id_type.get("csd-code", "") if id_type is not None else ""
        object_id = el.get("ParticipantObjectID", "")
        if type_code == _PATIENT_ID_TYPE or (el.get("ParticipantObjectTypeCode") == "1"
                                             and el.get("ParticipantObjectTypeCodeRole") == "1"):
            pid = object_id.split("^", 1)[0].strip()  # CX: the ID before ^^^issuer
            if pid and pid not in patients:
                patients.append(pid)
        elif type_code == _STUDY_ID_TYPE:
            if object_id not in studies:
                studies.append(object_id)
            for sop in el.iter("SOPClass"):
                instances += _int(sop.get("NumberOfInstances"))
        elif action == "break-glass" and el.get("ParticipantObjectTypeCodeRole") == _SECURITY_RESOURCE_ROLE:
            reason = _alert_reason(el) or reason
    if user is None:
        first = root.find("ActiveParticipant")
        if first is None:
            raise ValueError("no ActiveParticipant")
        user = first.get("UserID")
        address = first.get("NetworkAccessPointID")
    if not user:
        raise ValueError("requesting user has no UserID")
    return (_parse_time(ev.get("EventDateTime")), user, action, tuple(patients), tuple(studies), instances,
            address, workstation, outcome, reason, event_id)


def _line_bytes(line: str | bytes) -> bytes:
    return line.encode("utf-8") if isinstance(line, str) else line


def event_id_of(line: bytes) -> str:
    """Stable evidence id: SHA-256 of the line as stored (without its line ending), first 128 bits."""
    return hashlib.sha256(line).hexdigest()[:32]


def parse_audit_line(line: str | bytes, line_number: int | None = None) -> AccessEvent | None:
    """One audit line as an access event; ``None`` for messages that are not accesses.

    Raises ValueError("line N: reason") (or just the reason when no line number is given).
    """
    data = _line_bytes(line)
    try:
        row = _row_of_line(data)
    except ValueError as exc:
        if line_number is None:
            raise
        raise ValueError(f"line {line_number}: {exc}") from None
    return None if row is None else AccessEvent._make(row)


def _row_of_line(line: bytes) -> _Row | None:
    """:func:`parse_audit_line`'s fields for a line of bytes (its line ending included or not); errors unnumbered."""
    data = line.rstrip(b"\r\n")
    if len(data) > MAX_LINE_BYTES:
        raise ValueError(f"line longer than {MAX_LINE_BYTES} bytes")
    return _row_of_xml(_xml_of(data.lstrip()), event_id_of(data))


def _rows_of(f: BinaryIO, end: float, label: str, lines: list[int] | None = None) -> Iterator[_Row]:
    """Event fields of the lines of ``f`` that start before byte ``end``; errors as "LABEL:LINE: reason".

    ``lines[0]`` is set to the number of lines read (blank ones included) when the range is exhausted.
    """
    number = 0
    pos = f.tell()  # then counted from the lines read: tell() costs a call per line
    limit = MAX_LINE_BYTES + 3
    while pos < end:
        line = f.readline(limit)
        if not line:
            break
        pos += len(line)
        number += 1
        if len(line) > MAX_LINE_BYTES + 2 and not line.endswith(b"\n"):
            raise ValueError(f"{label}:{number}: line longer than {MAX_LINE_BYTES} bytes")
        if not line.strip():
            continue
        try:
            row = _row_of_line(line)
        except ValueError as exc:
            raise ValueError(f"{label}:{number}: {exc}") from None
        if row is not None:
            yield row
    if lines is not None:
        lines[0] = number


def read_audit_files(paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str], *,
                     workers: int = 1) -> Iterator[AccessEvent]:
    """Access events of audit files, in file order; blank lines skipped.

    Raises ValueError("FILE:LINE: reason") for the first malformed or over-long line (in file
    order): a detector fed a trail it cannot read entirely must say so rather than score what
    remains. With ``workers`` > 1 the files are cut into line-aligned byte ranges parsed by that
    many processes (the same events, the same first error), for offline scoring of large trails.
    """
    reading = _start_reading(paths, workers)
    try:
        yield from reading
    finally:
        reading.close()


class _Reading(Iterator[AccessEvent]):
    """Events of audit files being read: in file order, as :func:`read_audit_files` yields them.

    Reading by worker processes starts on creation, so the caller can do other work (load the
    context) while they parse; :meth:`close` stops them (also when not every event was taken).
    """

    def __init__(self, paths: list[str | os.PathLike[str]], workers: int) -> None:
        self._workers: _RangeParsers | None = None
        # Ranges need seekable regular files; a pipe or a small trail is read by this process.
        if workers > 1 and all(os.path.isfile(p) for p in paths) and sum(os.path.getsize(p) for p in paths) > _MIN_CHUNK:
            self._events = self._parallel(paths, workers)
        else:
            self._events = self._serial(paths)

    def __next__(self) -> AccessEvent:
        return next(self._events)

    def close(self) -> None:
        """Stop reading: worker processes are terminated; the events not yet taken are dropped."""
        self._events.close()
        self._stop()

    def _stop(self) -> None:
        if self._workers is not None:
            self._workers.stop()
            self._workers = None

    @staticmethod
    def _serial(paths: list[str | os.PathLike[str]]) -> Generator[AccessEvent, None, None]:
        for path in paths:
            with open(path, "rb") as f:
                yield from map(AccessEvent._make, _rows_of(f, math.inf, os.fspath(path)))

    def _parallel(self, paths: list[str | os.PathLike[str]], workers: int) -> Generator[AccessEvent, None, None]:
        tasks: list[tuple[str, int, int]] = []
        file_of: list[int] = []
        for index, path in enumerate(paths):
            name = os.fspath(path)
            size = os.path.getsize(name)
            # Eight ranges per worker: the first arrives early (the caller works on it while the rest are parsed)
            # and the last ones are small (no worker idles long at the end).
            step = max(_MIN_CHUNK // 2, -(-size // (workers * 8)))
            for a in range(0, max(size, 1), step):
                tasks.append((name, a, min(size, a + step)))
                file_of.append(index)
        self._workers = _RangeParsers(tasks, workers)
        return self._collect(self._workers.results(), tasks, file_of, len(paths))

    def _collect(self, results: Iterator[tuple[list[_Row], int, tuple[int, str] | None]], tasks: list[tuple[str, int, int]],
                 file_of: list[int], files: int) -> Generator[AccessEvent, None, None]:
        lines_before = [0] * files
        for (name, _, _), index, (rows, lines, error) in zip(tasks, file_of, results, strict=True):
            if error is not None:
                self._stop()
                raise ValueError(f"{name}:{lines_before[index] + error[0]}: {error[1]}")
            lines_before[index] += lines
            yield from map(AccessEvent._make, rows)
        self._stop()


def _start_reading(paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str], workers: int) -> _Reading:
    """Start reading audit files (see :func:`read_audit_files`); the caller must :meth:`_Reading.close` it."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    return _Reading(list(paths), workers)


# -- parallel reading -------------------------------------------------------------------------------------------

_MIN_CHUNK: Final = 2 * 1024 * 1024
_WORKER_NICENESS: Final = 10
"""Parsing processes yield the CPU to the one that learns and scores: that one is the critical path (scoring is
sequential), the parsers are usually ahead of it."""


def _skip_partial_line(f: BinaryIO, start: int) -> None:
    """Position ``f`` at the first line that starts at or after ``start`` (bounded reads: no line is held whole)."""
    if start == 0:
        return
    f.seek(start - 1)
    while True:
        rest = f.readline(64 * 1024)
        if not rest or rest.endswith(b"\n"):
            return


class _RangeParsers:
    """Forked processes parsing byte ranges, each its share in order, each answering through its own pipe.

    Nothing the parent waits on is shared with a worker: killing the workers when reading stops early
    cannot leave the parent blocked on a lock a killed worker held. ``multiprocessing.Pool.terminate``
    can: its workers share one result queue lock, and a worker killed while sending a result keeps it
    taken, so the pool's task thread, and with it ``terminate``, waits forever.
    """

    def __init__(self, tasks: list[tuple[str, int, int]], workers: int) -> None:
        import multiprocessing

        # fork: the workers inherit the loaded modules (no re-import per process); they only read files.
        context = multiprocessing.get_context("fork")
        self._count = len(tasks)
        self._processes: list[BaseProcess] = []
        receivers: list[Connection] = []
        for w in range(min(workers, len(tasks))):
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=_parse_ranges, args=(tasks[w::workers], sender), daemon=True,
                                      name=f"detect-parse-{w}")
            process.start()
            sender.close()  # the worker holds the only sending end: its exit is the end of its results
            self._processes.append(process)
            receivers.append(receiver)
        # Results are taken off the pipes as they come (as a pool's result thread does), so the workers never
        # wait for the caller; threads are started after the last fork, so no worker inherits one.
        self._arrived: list[queue.SimpleQueue[object]] = [queue.SimpleQueue() for _ in receivers]
        for receiver, arrived in zip(receivers, self._arrived, strict=True):
            threading.Thread(target=_take_results, args=(receiver, arrived), daemon=True, name="detect-parse-results").start()

    def results(self) -> Iterator[tuple[list[_Row], int, tuple[int, str] | None]]:
        """Each range's result, in task order; raises what a worker raised, or RuntimeError if one died."""
        for index in range(self._count):
            result = self._arrived[index % len(self._arrived)].get()
            if result is _WORKER_ENDED:
                raise RuntimeError("an audit parsing process ended before its ranges were parsed")
            if isinstance(result, BaseException):
                raise result
            yield result  # type: ignore[misc]

    def stop(self) -> None:
        """Kill the workers that still run and reap them; the result threads end at their pipes' end."""
        for process in self._processes:
            if process.exitcode is None:
                process.kill()
        for process in self._processes:
            process.join()
            process.close()
        self._processes = []


_WORKER_ENDED: Final = object()


def _parse_ranges(tasks: list[tuple[str, int, int]], results: Connection) -> None:
    """A worker's body: its ranges parsed in order, each result sent; stops at the first failing range."""
    os.nice(_WORKER_NICENESS)
    for task in tasks:
        try:
            result: object = _chunk_events(task)
        except Exception as exc:  # e.g. the file went away: the parent raises it as a pool would
            result = exc
        results.send(result)
        if isinstance(result, Exception) or result[2] is not None:  # type: ignore[index]
            break
    results.close()


def _take_results(receiver: Connection, arrived: queue.SimpleQueue[object]) -> None:
    """A worker's results onto ``arrived`` until its pipe ends, then :data:`_WORKER_ENDED`: the reader never waits
    on a worker that is gone, whatever ended it."""
    try:
        while True:
            arrived.put(receiver.recv())
    except (EOFError, OSError):  # the worker finished or was killed (a partial message reads as EOF)
        pass
    except Exception as exc:  # a result that does not unpickle: an error for the reader
        arrived.put(RuntimeError(f"a result of an audit parsing process could not be read ({type(exc).__name__})"))
    finally:
        arrived.put(_WORKER_ENDED)
        receiver.close()


def _chunk_events(task: tuple[str, int, int]) -> tuple[list[_Row], int, tuple[int, str] | None]:
    """One worker's range: (event fields, lines that start in it, first error as (line in range, reason))."""
    path, start, end = task
    with open(path, "rb") as f:
        _skip_partial_line(f, start)
        lines = [0]
        try:
            out = list(_rows_of(f, end, "", lines))
        except ValueError as exc:
            where, reason = str(exc)[1:].split(": ", 1)  # ":LINE: reason", LINE counted from the range's start
            return [], 0, (int(where), reason)
        return out, lines[0], None
