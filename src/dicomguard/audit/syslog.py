"""Syslog for audit messages: RFC 5424 messages, RFC 5425 octet-counting frames (IHE ITI-20 "Record Audit Event").

A message is ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG`` with
PRI = facility 10 (security/authorization, "authpriv") * 8 + a severity derived
from the outcome, MSGID ``IHE+RFC-3881`` (IHE ITI TF-2 3.20.6.1), and MSG the
UTF-8 XML audit message preceded by a byte-order mark (RFC 5424 6.4). The
structured data carries ``[meta sequenceId="N"]`` (RFC 5424 7.3.1): the
record's sequence number (wrapping at 2**31 - 1), with which a collector can
spot gaps and drop the duplicates at-least-once delivery may produce.

Over TLS each message is framed as ``MSG-LEN SP SYSLOG-MSG`` (RFC 5425 4.3).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from dicomguard.audit.message import format_time

FACILITY_AUTHPRIV = 10
MSGID = "IHE+RFC-3881"
APP_NAME = "dicomguard"
BOM = b"\xef\xbb\xbf"
MAX_FRAME = 4 * 1024 * 1024
"""Largest message a listener accepts (RFC 5425 requires >= 2,048 octets; audit messages can reach hundreds of KiB)."""
SEQUENCE_WRAP = 2**31 - 1

# Severity by EventOutcomeIndicator (RFC 5424 6.2.1): notice, warning, error, critical.
SEVERITY = {0: 5, 4: 4, 8: 3, 12: 2}
# SD-ID and PARAM-NAME are SD-NAMEs of 1 to 32 characters (RFC 5424 6.3.2, 6.3.3): the bound also keeps the search
# linear (an unbounded name makes "[[[[...=]" backtrack quadratically over a frame of up to MAX_FRAME bytes).
_SD_ELEMENT = re.compile(r'\[([^ \]="]{1,32})((?: [^ =\]"]{1,32}="(?:[^"\\]|\\.)*")*)\]')
_SD_PARAM = re.compile(r' ([^ =\]"]{1,32})="((?:[^"\\]|\\.)*)"')
_HEADER = re.compile(rb"^<(\d{1,3})>(\d{1,2}) (\S+) (\S+) (\S+) (\S+) (\S+) ")


class SyslogError(ValueError):
    """Not an RFC 5424 message or not a valid RFC 5425 frame."""


def _field(value: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces (RFC 5424 6), ``-`` when empty."""
    cleaned = "".join(ch if 33 <= ord(ch) <= 126 else "_" for ch in value)[:limit]
    return cleaned or "-"


def sequence_id(seq: int) -> int:
    return (seq - 1) % SEQUENCE_WRAP + 1


def format_message(xml: bytes, *, time: datetime, hostname: str, procid: str, outcome: int, seq: int | None,
                   app_name: str = APP_NAME) -> bytes:
    """One RFC 5424 message carrying one XML audit message."""
    pri = FACILITY_AUTHPRIV * 8 + SEVERITY.get(outcome, 4)
    sd = f'[meta sequenceId="{sequence_id(seq)}"]' if seq is not None else "-"
    header = f"<{pri}>1 {format_time(time)} {_field(hostname, 255)} {_field(app_name, 48)} {_field(procid, 128)} {MSGID} {sd} "
    return header.encode("ascii") + BOM + xml


def frame(message: bytes) -> bytes:
    """RFC 5425 octet counting."""
    return str(len(message)).encode("ascii") + b" " + message


@dataclass(frozen=True)
class SyslogMessage:
    pri: int
    version: int
    timestamp: str
    hostname: str
    app_name: str
    procid: str
    msgid: str
    structured_data: str
    msg: bytes

    @property
    def facility(self) -> int:
        return self.pri // 8

    @property
    def severity(self) -> int:
        return self.pri % 8

    def payload(self) -> bytes:
        """MSG without its byte-order mark."""
        return self.msg[len(BOM):] if self.msg.startswith(BOM) else self.msg

    def sd_param(self, sd_id: str, name: str) -> str | None:
        """The value of PARAM-NAME ``name`` in SD-ELEMENT ``sd_id`` (escapes left as sent)."""
        for element in _SD_ELEMENT.finditer(self.structured_data):
            if element.group(1) == sd_id:
                for param in _SD_PARAM.finditer(element.group(2)):
                    if param.group(1) == name:
                        return param.group(2)
        return None


def _structured_data(data: bytes, i: int) -> int:
    """Index just past the STRUCTURED-DATA starting at ``data[i]`` (``-`` or one or more SD-ELEMENTs)."""
    if data[i : i + 1] == b"-":
        return i + 1
    if data[i : i + 1] != b"[":
        raise SyslogError("structured data must be '-' or start with '['")
    while i < len(data) and data[i : i + 1] == b"[":
        i += 1
        in_quotes = False
        while True:
            if i >= len(data):
                raise SyslogError("unterminated structured data")
            c = data[i : i + 1]
            if in_quotes:
                if c == b"\\":
                    i += 2
                    continue
                if c == b'"':
                    in_quotes = False
            elif c == b'"':
                in_quotes = True
            elif c == b"]":
                i += 1
                break
            i += 1
    return i


def parse_message(data: bytes) -> SyslogMessage:
    """Parse one RFC 5424 message (the payload of a frame, or one line of a collector's file)."""
    m = _HEADER.match(data)
    if m is None:
        raise SyslogError("not an RFC 5424 header")
    pri, version = int(m.group(1)), int(m.group(2))
    if pri > 191 or version != 1:
        raise SyslogError("bad PRI or VERSION")
    start = m.end()
    end = _structured_data(data, start)
    sd = data[start:end].decode("utf-8", "replace")
    if end < len(data) and data[end : end + 1] != b" ":
        raise SyslogError("no space after structured data")
    msg = data[end + 1 :] if end < len(data) else b""
    ts, host, app, procid, msgid = (g.decode("ascii", "replace") for g in m.groups()[2:7])
    return SyslogMessage(pri, version, ts, host, app, procid, msgid, sd, msg)


class FrameReader:
    """Incremental RFC 5425 deframer: feed bytes, iterate complete messages."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._buf += data
        while True:
            space = self._buf.find(b" ", 0, 12)
            if space < 0:
                if len(self._buf) >= 12 or not bytes(self._buf).isdigit() and self._buf:
                    raise SyslogError("bad frame: no MSG-LEN")
                return
            digits = bytes(self._buf[:space])
            if not digits.isdigit() or digits.startswith(b"0"):
                raise SyslogError("bad frame: MSG-LEN is not a number")
            length = int(digits)
            if length > self.max_frame:
                raise SyslogError(f"frame of {length} octets exceeds the limit of {self.max_frame}")
            if len(self._buf) < space + 1 + length:
                return
            message = bytes(self._buf[space + 1 : space + 1 + length])
            del self._buf[: space + 1 + length]
            yield message

    @property
    def pending(self) -> int:
        return len(self._buf)
