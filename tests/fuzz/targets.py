"""The fuzz targets: one contract check per parser that takes bytes from outside.

Each target takes arbitrary bytes, runs the parser the way the product does,
and asserts the parser's contract:

* it returns a result or raises **only** the error it declares
  (:class:`RejectedObject`, :class:`MalformedMultipart`, :class:`SyslogError`,
  :class:`MessageError`, :class:`QueryError`); anything else (IndexError,
  KeyError, RecursionError, UnicodeDecodeError, a bare ValueError ...) escapes
  the target and fails the run;
* what it returns is consistent (ranges inside the input, limits respected)
  and no larger than the input allows (no amplification);
* a streaming parser gives the same answer however the bytes are split.

The same functions are driven by hypothesis in the test suite (bounded, see
``README.md``) and by atheris for long coverage-guided runs
(``python -m tests.fuzz.atheris_main TARGET``). Time per input is measured by
the drivers, not here (instrumentation would distort it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from starlette.datastructures import QueryParams

from dicomguard.audit.imports import Unreadable, check_message, split_messages
from dicomguard.audit.message import MAX_MESSAGE_BYTES, AuditMessage, MessageError, to_xml
from dicomguard.audit.syslog import BOM, MAX_FRAME, FrameReader, SyslogError, SyslogMessage, parse_message
from dicomguard.config import LimitSettings
from dicomguard.core.attributes import is_valid_uid
from dicomguard.core.dicom_structure import PREAMBLE_BYTES, FileStructure, walk_part10
from dicomguard.core.hashing import digest_object
from dicomguard.errors import RejectedObject, RejectReason
from dicomguard.web.multipart import MAX_PART_HEADER_BYTES, MAX_PARTS, MalformedMultipart, MultipartReader
from dicomguard.web.qido_params import MATCH_KEYS, MAX_OFFSET, MAX_TEXT, MAX_UIDS, Kind, Level, QidoQuery, QueryError, parse_query

# -- Part 10 structure walk (core/dicom_structure.py) ---------------------------------------------

DEFAULT_LIMITS = LimitSettings()
TIGHT_LIMITS = LimitSettings(max_object_bytes=64 * 1024, max_element_bytes=1024, max_elements=64, max_sequence_depth=3,
                             **({"max_inflated_bytes": 4096} if "max_inflated_bytes" in LimitSettings.model_fields else {}))
_LIMIT_REASONS = {RejectReason.TOO_LARGE, RejectReason.ELEMENT_TOO_LARGE, RejectReason.TOO_MANY_ELEMENTS, RejectReason.TOO_DEEP}


def walk(data: bytes, limits: LimitSettings) -> FileStructure | RejectReason:
    """The walker's answer; fails on any exception other than :class:`RejectedObject`."""
    try:
        structure = walk_part10(data, limits)
    except RejectedObject as exc:
        assert isinstance(exc.reason, RejectReason)
        return exc.reason
    check_structure(data, structure, limits)
    return structure


def check_structure(data: bytes, s: FileStructure, limits: LimitSettings) -> None:
    assert len(data) <= limits.max_object_bytes
    assert PREAMBLE_BYTES + 4 <= s.dataset_offset <= len(data)
    if s.deflated:  # the inflated data set is bounded (no zip bomb), by size and by ratio where the limits say so
        assert len(s.dataset) <= getattr(limits, "max_inflated_bytes", limits.max_object_bytes)
        ratio = getattr(limits, "max_inflation_ratio", None)
        if ratio is not None:
            assert len(s.dataset) <= max(ratio * (len(data) - s.dataset_offset), 1024 * 1024)
    else:
        assert s.dataset.obj is not None and len(s.dataset) == len(data) - s.dataset_offset  # a view, not a copy
    assert 0 <= s.element_count <= limits.max_elements
    if s.pixel_range is not None:
        start, end = s.pixel_range
        assert 0 <= start <= end <= len(s.dataset)
    digest_object(data, s)  # what ingest does next with an accepted structure


def dicom_structure(data: bytes) -> None:
    """Walked under the product's limits and under tight ones; tighter limits only ever refuse more."""
    default = walk(data, DEFAULT_LIMITS)
    tight = walk(data, TIGHT_LIMITS)
    if isinstance(tight, FileStructure):
        assert isinstance(default, FileStructure), f"accepted under tight limits, refused under the defaults ({default})"
        assert (tight.transfer_syntax, tight.dataset_offset, tight.pixel_range, tight.element_count) == (
            default.transfer_syntax, default.dataset_offset, default.pixel_range, default.element_count)
    elif isinstance(default, RejectReason) and default not in _LIMIT_REASONS:
        assert tight == default or tight in _LIMIT_REASONS, (default, tight)


# -- STOW-RS multipart/related (web/multipart.py) ------------------------------------------------

BOUNDARY = "dgfuzz-boundary"
"""The boundary of the raw-bytes target (its corpus bodies use it); the hypothesis tests draw their own."""

Outcome = tuple[str, tuple[tuple[tuple[tuple[str, str], ...], str, bytes], ...]]


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def multipart_outcome(boundary: str, chunks: Iterable[bytes]) -> Outcome:
    """("parts", ...) or ("refused", ...): MalformedMultipart is the only error the reader may raise."""
    reader = MultipartReader(boundary)
    fed = 0
    try:
        try:
            for chunk in chunks:
                reader.feed(chunk)
                fed += len(chunk)
                # Bounded memory: whatever the chunk size, the reader holds at most one header block unparsed.
                assert len(reader._buf) <= MAX_PART_HEADER_BYTES + len(boundary) + 8, len(reader._buf)
            parts = reader.finish()
        except MalformedMultipart:
            return ("refused", ())
        assert 1 <= len(parts) <= MAX_PARTS
        out = []
        for i, part in enumerate(parts):
            assert part.index == i and part.content_type == part.headers.get("content-type", "")
            content = part.content.read()
            assert len(content) == part.content.size
            if len(content) >= 16 and len(set(content)) > 4:  # sealed at rest: the plaintext is not in what the spool keeps
                spool = part.content
                if spool._held is not None:
                    kept = b"".join(spool._held)
                else:
                    spool._file.seek(0)
                    kept = spool._file.read()
                assert content[:16] not in kept
            out.append((tuple(sorted(part.headers.items())), part.content_type, content))
        assert sum(len(c) for _, _, c in out) <= fed  # no amplification
        return ("parts", tuple(out))
    finally:
        reader.close()


def multipart_same_however_split(boundary: str, body: bytes, sizes: Iterable[int] | None = None) -> Outcome:
    whole = multipart_outcome(boundary, [body])
    for size in sizes if sizes is not None else ((1, 7, 1000) if len(body) <= 4096 else (7, 1000)):
        if size < len(body):
            split = multipart_outcome(boundary, chunked(body, size))
            assert split == whole, f"fed in chunks of {size}: {split[0]}, in one piece: {whole[0]}"
    return whole


def multipart(data: bytes) -> None:
    multipart_same_however_split(BOUNDARY, data)


# -- RFC 5425 framing and RFC 5424 messages (audit/syslog.py) ------------------------------------


def frames_outcome(chunks: Iterable[bytes], max_frame: int = MAX_FRAME) -> tuple[list[bytes], bool, int]:
    """(frames, refused, pending bytes): SyslogError is the only error the deframer may raise."""
    reader = FrameReader(max_frame)
    frames: list[bytes] = []
    fed = 0
    try:
        for chunk in chunks:
            fed += len(chunk)
            for frame in reader.feed(chunk):
                assert len(frame) <= max_frame
                frames.append(frame)
            assert reader.pending <= max_frame + 12  # one partial frame and its MSG-LEN at most
    except SyslogError:
        return frames, True, -1
    assert sum(len(f) for f in frames) + reader.pending <= fed
    return frames, False, reader.pending


def check_syslog_message(data: bytes) -> SyslogMessage | None:
    try:
        m = parse_message(data)
    except SyslogError:
        return None
    assert 0 <= m.pri <= 191 and m.version == 1 and 0 <= m.severity <= 7
    assert data.endswith(m.msg) and len(m.msg) < len(data)
    assert m.payload() == (m.msg[len(BOM):] if m.msg.startswith(BOM) else m.msg)
    value = m.sd_param("meta", "sequenceId")
    assert value is None or value in m.structured_data
    return m


def syslog_frames(data: bytes) -> None:
    """The listener's path: deframe (the same however the stream is split), then parse each frame."""
    whole = frames_outcome([data])
    for size in (1, 3, 64) if len(data) <= 4096 else (3, 64):
        if size < len(data):
            assert frames_outcome(chunked(data, size)) == whole, f"chunks of {size}"
    small = frames_outcome([data], max_frame=64)  # the size limit's branch: a prefix of the same frames, then a refusal
    assert small[0] == whole[0][: len(small[0])]
    for frame in whole[0]:
        check_syslog_message(frame)


def syslog_message(data: bytes) -> None:
    """One RFC 5424 line (``audit import`` of a collector's file)."""
    check_syslog_message(data)


# -- PS3.15 audit messages (audit/message.py parse, audit/schema.py, audit/imports.py) -----------


_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def _model_size(m: AuditMessage) -> int:
    """Characters and bytes held by a parsed message, all of which came from the input."""
    total = 0
    stack: list[object] = [m]
    while stack:
        v = stack.pop()
        if isinstance(v, (str, bytes)):
            total += len(v)
        elif isinstance(v, (tuple, list)):
            stack.extend(v)
        elif hasattr(v, "__dataclass_fields__"):
            stack.extend(getattr(v, f) for f in v.__dataclass_fields__)
    return total


def check_audit_message(xml: bytes) -> AuditMessage | None:
    """``check_message`` (parse, A.5.1 validation, model): an AuditMessage or MessageError, nothing else."""
    try:
        m = check_message(xml)
    except MessageError as exc:
        # The reason goes to the log and to the import report: one line, never the sender's own text.
        assert not _CONTROL_CHARS.search(str(exc)), "a MessageError carries control characters (log forging)"
        return None
    assert len(xml) <= MAX_MESSAGE_BYTES
    assert _model_size(m) <= len(xml)  # no entity expansion, no amplification
    canonical = to_xml(m)
    again = check_message(canonical)  # what the archive writes back is valid and reads the same
    assert to_xml(again) == canonical
    return m


def audit_xml(data: bytes) -> None:
    """One message as received (listener), and the same bytes as a file to import (one or more messages)."""
    check_audit_message(data)
    for _, xml in split_messages(data, "fuzz"):
        if isinstance(xml, Unreadable):  # a line that is not a message: its reason is one line, not the sender's text
            assert not _CONTROL_CHARS.search(xml.reason), "a rejection reason carries control characters (log forging)"
            continue
        check_audit_message(xml)


# -- QIDO-RS query parameters (web/qido_params.py) -----------------------------------------------

# The result levels of the six QIDO-RS resources (web/qido.py).
ROUTE_LEVELS: tuple[frozenset[Level], ...] = (
    frozenset({Level.STUDY}), frozenset({Level.SERIES}), frozenset({Level.STUDY, Level.SERIES}),
    frozenset({Level.INSTANCE}), frozenset({Level.SERIES, Level.INSTANCE}), frozenset({Level.STUDY, Level.SERIES, Level.INSTANCE}),
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")
_SHAPES = {
    Kind.DATE: re.compile(r"[0-9]{8}"),
    Kind.TIME: re.compile(r"[0-9]{2}([0-9]{2}([0-9]{2}(\.[0-9]{1,6})?)?)?"),
}


def query_items(data: bytes) -> list[tuple[str, str]]:
    """The query string as the server sees it (Starlette decodes the raw query as Latin-1, then parse_qsl)."""
    return QueryParams(data.decode("latin-1")).multi_items()


def _check_range(value: str, shape: re.Pattern[str]) -> None:
    lo, sep, hi = value.partition("-")
    parts = [p for p in (lo, hi) if p] if sep else [value]
    assert parts and all(shape.fullmatch(p) for p in parts), value


def check_query(q: QidoQuery, levels: frozenset[Level]) -> None:
    assert q.limit is None or 0 <= q.limit <= 10**9
    assert 0 <= q.offset <= MAX_OFFSET
    for keyword, value in q.matches.items():
        key = MATCH_KEYS[keyword]
        assert key.level in levels and keyword in q.returns
        if key.kind is Kind.UID_LIST:
            uids = value.split("\\")
            assert 1 <= len(uids) <= MAX_UIDS and all(is_valid_uid(u) for u in uids)
            continue
        assert len(value) <= MAX_TEXT and not _CONTROL.search(value)
        if key.kind in _SHAPES:
            _check_range(value, _SHAPES[key.kind])
        elif key.kind is Kind.INTEGER:
            assert re.fullmatch(r"[+-]?[0-9]{1,10}", value), value


def parse(items: list[tuple[str, str]], levels: frozenset[Level]) -> QidoQuery | QueryError:
    try:
        q = parse_query(items, set(levels))
    except QueryError as exc:
        return exc
    check_query(q, levels)
    return q


def qido_params(data: bytes) -> None:
    items = query_items(data)
    for levels in ROUTE_LEVELS:
        parse(items, levels)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "dicom_structure": dicom_structure,
    "multipart": multipart,
    "syslog_frames": syslog_frames,
    "syslog_message": syslog_message,
    "audit_xml": audit_xml,
    "qido_params": qido_params,
}
