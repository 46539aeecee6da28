"""Fuzz targets: RFC 5425 octet-counting frames and RFC 5424 messages (audit/syslog.py), from any device on the listener.

Contract: the deframer yields frames or raises :class:`SyslogError`, the same
whatever way the stream is split, buffers at most one frame, and never yields
more than it was fed; :func:`parse_message` returns a message whose fields lie
inside the input or raises :class:`SyslogError`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dicomguard.audit.syslog import FrameReader, format_message, frame, parse_message
from tests.fuzz._harness import budget, mutants, seed_bytes, seed_params, timed
from tests.fuzz.targets import chunked, frames_outcome, syslog_frames, syslog_message

FRAMES, MESSAGE = "syslog_frames", "syslog_message"


@pytest.mark.parametrize("path", seed_params(FRAMES))
def test_frame_seed_corpus(path: Path) -> None:
    timed(syslog_frames, path.read_bytes(), FRAMES)


@pytest.mark.parametrize("path", seed_params(MESSAGE))
def test_message_seed_corpus(path: Path) -> None:
    timed(syslog_message, path.read_bytes(), MESSAGE)


@budget(0.5)
@given(st.binary(max_size=256) | st.from_regex(rb"\A[0-9]{1,12} [\x00-\xff]{0,64}\Z"))
def test_arbitrary_streams(data: bytes) -> None:
    timed(syslog_frames, data, FRAMES)


@budget(1.0)
@given(mutants(seed_bytes(FRAMES)))
def test_mutated_streams(data: bytes) -> None:
    timed(syslog_frames, data, FRAMES)


@budget(0.5)
@given(st.binary(max_size=256) | st.from_regex(rb"\A<[0-9]{1,3}>[0-9]{1,2}( [!-~]{1,8}){5} [\x00-\xff]{0,64}\Z"))
def test_arbitrary_messages(data: bytes) -> None:
    timed(syslog_message, data, MESSAGE)


@budget(1.0)
@given(mutants(seed_bytes(MESSAGE)))
def test_mutated_messages(data: bytes) -> None:
    timed(syslog_message, data, MESSAGE)


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


_sd = st.lists(st.tuples(st.text("abcxyz@.", min_size=1, max_size=8),
                         st.lists(st.tuples(st.text("abcdefghij", min_size=1, max_size=8), st.text(max_size=12)), max_size=3)),
               max_size=3)


@budget(1.0)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=5), st.integers(1, 50), _sd)
def test_frames_round_trip_however_split(payloads: list[bytes], size: int, sd) -> None:  # type: ignore[no-untyped-def]
    """What a sender frames is what the listener yields, however TCP splits it; structured data parses back."""
    elements = "".join("[" + sid + "".join(f' {name}="{escape(value)}"' for name, value in params) + "]" for sid, params in sd) or "-"
    messages = [b"<86>1 2026-01-05T10:00:00.000000Z host app 42 IHE+RFC-3881 " + elements.encode() + b" " + p for p in payloads]
    stream = b"".join(frame(m) for m in messages)
    assert frames_outcome(chunked(stream, size)) == (messages, False, 0)
    for m, p in zip(messages, payloads, strict=True):
        parsed = parse_message(m)
        assert parsed.msg == p and parsed.structured_data == elements
        for sid, params in sd:  # the first element with that SD-ID and that PARAM-NAME, escapes as sent (RFC 5424 6.3.3)
            for name, _ in params:
                expected = next(escape(v) for s, ps in sd if s == sid for n, v in ps if n == name)
                assert parsed.sd_param(sid, name) == expected


@budget(0.5)
@given(st.binary(max_size=64), st.text(max_size=20), st.integers(0, 12), st.none() | st.integers(1, 2**40))
def test_format_then_parse_round_trip(xml: bytes, host: str, outcome: int, seq: int | None) -> None:
    line = format_message(xml, time=datetime(2026, 1, 1, tzinfo=UTC), hostname=host, procid="1", outcome=outcome, seq=seq)
    m = parse_message(line)
    assert m.payload() == xml and m.facility == 10
    assert (m.sd_param("meta", "sequenceId") is None) == (seq is None)
    reader = FrameReader()
    assert list(reader.feed(frame(line))) == [line] and reader.pending == 0
