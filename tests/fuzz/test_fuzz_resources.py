"""Named hostile inputs, one runner: each parser refuses (or parses) them within a time and a memory bound.

The fuzz targets bound memory structurally (buffers, output no larger than the
input); this table measures it on the inputs built to hurt: bombs, lies about
lengths, nesting, floods. Memory is the peak of Python allocations
(``tracemalloc``) during the call, input excluded.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from dicomguard.audit.imports import check_message
from dicomguard.audit.message import MessageError
from dicomguard.audit.syslog import FrameReader, SyslogError, frame, parse_message
from dicomguard.config import LimitSettings
from dicomguard.errors import RejectReason
from dicomguard.web.multipart import MalformedMultipart, MultipartReader
from dicomguard.web.qido_params import Level, QueryError, parse_query
from tests.fuzz import dicom_gen as g
from tests.fuzz.seeds import MINIMAL_XML
from tests.fuzz.targets import TIGHT_LIMITS, query_items, walk

KIB, MIB = 1024, 1024 * 1024
ALL_LEVELS = {Level.STUDY, Level.SERIES, Level.INSTANCE}


@dataclass(frozen=True)
class Attack:
    build: Callable[[], bytes]
    run: Callable[[bytes], object]  # returns the outcome; raises only on a contract violation
    max_ms: float
    max_peak: int


def _deflate_bomb() -> bytes:
    return g.part10(bytes(32 * MIB), g.DEFLATED_LE)  # about 32 KiB that inflate to 32 MiB (part10 deflates)


def _refused(reason: RejectReason, limits: LimitSettings = TIGHT_LIMITS) -> Callable[[bytes], object]:
    def run(data: bytes) -> object:
        got = walk(data, limits)
        assert got == reason, got
        return got
    return run


def _multipart(chunk: int, refused: bool) -> Callable[[bytes], object]:
    def run(data: bytes) -> object:
        reader = MultipartReader("b")
        try:
            for at in range(0, len(data), chunk):  # as the server feeds it: one chunk in memory at a time
                reader.feed(data[at : at + chunk])
            parts = reader.finish()
        except MalformedMultipart:
            assert refused
            return "refused"
        finally:
            reader.close()
        assert not refused
        return len(parts)
    return run


def _frames(data: bytes) -> object:
    reader = FrameReader()
    try:
        frames = list(reader.feed(data))
    except SyslogError:
        return "refused"
    assert reader.pending <= len(data)
    return frames


def _audit(data: bytes) -> object:
    with pytest.raises(MessageError):
        check_message(data)
    return "refused"


def _qido_refused(data: bytes) -> object:
    with pytest.raises(QueryError):
        parse_query(query_items(data), ALL_LEVELS)
    return "refused"


def _nested(depth: int) -> bytes:
    node: g.Node = g.Element(0x00100010, b"PN", b"X^Y\0")
    for _ in range(depth):
        node = g.Sequence(0x00081115, b"SQ", (g.Item((node,), undefined=True),), undefined=True)
    return g.encode((node,), g.EXPLICIT_LE)


ATTACKS: dict[str, Attack] = {
    # Part 10 structure walk
    # zlib's output buffer costs about 2 MiB whatever the bomb; what matters is that 32 MiB are never allocated
    "deflate bomb (32 KiB -> 32 MiB)": Attack(_deflate_bomb, _refused(RejectReason.TOO_LARGE), 2000, 4 * MIB),
    "element claiming 4 GiB": Attack(lambda: g.encode((g.Element(0x00100010, b"UT", b"x", length=0xFFFFFFF0),), g.EXPLICIT_LE),
                                     _refused(RejectReason.TRUNCATED), 100, 64 * KIB),
    "sequences nested 200 deep": Attack(lambda: _nested(200), _refused(RejectReason.TOO_DEEP), 500, 256 * KIB),
    "50,000 empty elements (limit 1,000)": Attack(
        lambda: g.encode([g.Element(0x00091010, b"UN", b"")] * 50_000, g.EXPLICIT_LE),
        _refused(RejectReason.TOO_MANY_ELEMENTS, TIGHT_LIMITS.model_copy(update={"max_object_bytes": MIB, "max_elements": 1000})),
        1000, 256 * KIB),
    # multipart/related
    # the part is sealed in 1 MiB segments and spooled to an anonymous file: a few MiB whatever its size
    "32 MiB part in 64 KiB chunks": Attack(lambda: b"--b\r\n\r\n" + bytes(32 * MIB) + b"\r\n--b--", _multipart(64 * KIB, False),
                                           5000, 6 * MIB),
    "1 MiB header block without its end": Attack(lambda: b"--b\r\nX: " + b"a" * MIB, _multipart(64 * KIB, True), 1000, 256 * KIB),
    "1 MiB preamble without a boundary": Attack(lambda: b"x" * MIB, _multipart(64 * KIB, True), 1000, 256 * KIB),
    "10,001 empty parts": Attack(lambda: b"--b\r\n\r\n" + b"\r\n--b\r\n\r\n" * 10_000 + b"\r\n--b--", _multipart(64 * KIB, True),
                                 10_000, 48 * MIB),
    # RFC 5425 / RFC 5424
    "frame claiming 4 MiB, 100 bytes sent": Attack(lambda: b"4194304 " + b"x" * 100, _frames, 100, 64 * KIB),
    "MSG-LEN of 11 digits": Attack(lambda: b"99999999999 x", _frames, 100, 64 * KIB),
    "128 KiB of '[' in structured data": Attack(  # was quadratic: about 5 minutes
        lambda: frame(b"<85>1 - h a - m " + b"[" * (128 * KIB) + b"=] x"),
        lambda data: [parse_message(f).sd_param("meta", "sequenceId") for f in _frames(data)], 2000, 8 * MIB),
    # audit XML
    "billion laughs": Attack(lambda: b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
                             b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]><AuditMessage>&c;</AuditMessage>', _audit, 200, 1 * MIB),
    "DOCTYPE in UTF-16 (hidden from a byte search)": Attack(
        lambda: ('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
                 + MINIMAL_XML.decode().replace('UserID="x"', 'UserID="&e;"')).encode("utf-16"), _audit, 200, 256 * KIB),
    "elements nested 100,000 deep": Attack(lambda: b"<a>" * 100_000 + b"</a>" * 100_000, _audit, 2000, 1 * MIB),
    "message over 1 MiB": Attack(lambda: MINIMAL_XML.replace(b'UserID="x"', b'UserID="' + b"x" * MIB + b'"'), _audit, 200, 256 * KIB),
    "year of 4,400 digits": Attack(lambda: MINIMAL_XML.replace(b'EventDateTime="2026', b'EventDateTime="' + b"9" * 4400), _audit,
                                   200, 256 * KIB),
    # QIDO-RS
    "1,001 UIDs": Attack(lambda: b"StudyInstanceUID=" + b",".join(b"1.2.%d" % i for i in range(1001)), _qido_refused, 500, 4 * MIB),
    "100,000 parameters": Attack(lambda: b"&".join([b"PatientID="] + [b"limit=1"] * 100_000), _qido_refused, 2000, 64 * MIB),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_hostile_input_is_handled_within_bounds(name: str) -> None:
    attack = ATTACKS[name]
    data = attack.build()
    start = time.perf_counter()
    attack.run(data)
    ms = (time.perf_counter() - start) * 1000
    if ms > attack.max_ms:  # one slow run may be the machine
        start = time.perf_counter()
        attack.run(data)
        ms = min(ms, (time.perf_counter() - start) * 1000)
    assert ms <= attack.max_ms, f"{name}: {ms:.0f} ms (bound {attack.max_ms:.0f} ms)"
    tracemalloc.start()  # a second run for memory: tracing slows allocation-heavy code down
    try:
        attack.run(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= attack.max_peak, f"{name}: peak {peak / MIB:.1f} MiB (bound {attack.max_peak / MIB:.1f} MiB)"
