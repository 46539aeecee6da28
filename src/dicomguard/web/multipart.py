"""Streaming multipart/related reader for STOW-RS request bodies (RFC 2046 section 5.1.1, RFC 2387; PS3.18 8.6.1.2).

Guarantees:

* **Bounded memory.** The body is parsed as it arrives, never into one big
  buffer: a part's sealed content waits in memory up to 1 MiB, and while the
  request holds less than :data:`MAX_HELD_BYTES` so, else in a temporary file.
  Headers of a part are capped (:data:`MAX_PART_HEADER_BYTES`), and so is the
  number of parts.
* **No plaintext PHI at rest, even transiently.** Each part is encrypted with
  AES-256-GCM under a key that exists only in this process's memory for the
  duration of one request before it touches a temporary file; the file is
  anonymous (unlinked at creation). A crash leaves nothing readable.
* **All or nothing framing.** A body whose framing is broken (no boundary, no
  closing delimiter, garbage after a delimiter) raises :class:`MalformedMultipart`
  before any part is handed to ingest, so nothing of it is stored.
"""

from __future__ import annotations

import re
import struct
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAX_PART_HEADER_BYTES = 16 * 1024
MAX_PARTS = 10_000
MAX_PREAMBLE_BYTES = 64 * 1024
_SEGMENT = 1024 * 1024
_MEMORY_SPOOL = 1024 * 1024
"""A part's sealed segments wait in memory up to this size, past it in an anonymous file."""
MAX_HELD_BYTES = 64 * 1024 * 1024
"""At most this much of one request's parts waits in memory (:class:`RequestMemory`)."""
# RFC 2046 5.1.1: 1-70 characters from bchars, not ending in a space.
_BOUNDARY = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")


class MalformedMultipart(ValueError):
    """The body is not a well-formed multipart/related message."""


def valid_boundary(boundary: str) -> bool:
    return bool(_BOUNDARY.match(boundary))


class RequestMemory:
    """The bytes of one request's parts held in memory while they wait for ingest, bounded by a limit.

    Taken by the thread that parses the body, given back by the thread that stores the parts: a client that sends
    parts faster than they are stored fills anonymous spool files (bounded by the request's size limit), not the
    server's memory."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._held = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bool:
        with self._lock:
            if self._held + n > self._limit:
                return False
            self._held += n
            return True

    def give(self, n: int) -> None:
        with self._lock:
            self._held -= n

    @property
    def held(self) -> int:
        return self._held


class EncryptedSpool:
    """One part's content, sealed in 1 MiB AES-GCM segments while it waits for ingest: in memory while it is small
    and the request's :class:`RequestMemory` allows, else in an anonymous temporary file."""

    def __init__(self, aead: AESGCM, part_index: int, memory: RequestMemory) -> None:
        self._aead = aead
        self._part = part_index
        self._memory = memory
        self._held: list[bytes] | None = []
        """Sealed segments kept as they are while they fit in :data:`_MEMORY_SPOOL` (no copy into a file buffer)."""
        self._held_bytes = 0
        self._file: IO[bytes] | None = None
        """Past that, every sealed segment goes to an anonymous temporary file (unlinked at creation)."""
        self._pending = bytearray()
        self._segments = 0
        self.size = 0

    def _nonce(self, segment: int) -> bytes:
        # Unique per (request key, part, segment): 4 + 8 bytes.
        return struct.pack(">IQ", self._part, segment)

    def _seal(self, plain: bytes | bytearray | memoryview) -> None:
        sealed = self._aead.encrypt(self._nonce(self._segments), plain, None)
        self._segments += 1
        if self._held is not None and self._held_bytes + len(sealed) <= _MEMORY_SPOOL and self._memory.take(len(sealed)):
            self._held.append(sealed)
            self._held_bytes += len(sealed)
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
            for held in self._held or ():
                self._write_segment(held)
            self._held = None
            self._memory.give(self._held_bytes)
            self._held_bytes = 0
        self._write_segment(sealed)

    def _write_segment(self, sealed: bytes) -> None:
        assert self._file is not None
        self._file.write(struct.pack(">I", len(sealed)))
        self._file.write(sealed)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Seal ``data`` by whole segments; only a tail shorter than a segment waits in memory. Whole segments are
        sealed straight from the caller's buffer (a body's bytes are copied as few times as possible)."""
        view = memoryview(data)
        self.size += len(view)
        if self._pending:
            take = min(len(view), _SEGMENT - len(self._pending))
            self._pending += view[:take]
            view = view[take:]
            if len(self._pending) < _SEGMENT:
                return
            self._seal(self._pending)
            self._pending = bytearray()
        while len(view) >= _SEGMENT:
            self._seal(view[:_SEGMENT])
            view = view[_SEGMENT:]
        self._pending += view

    def finish(self) -> None:
        if self._pending:
            self._seal(self._pending)
            self._pending = bytearray()

    def read(self) -> bytes:
        """The whole content (decrypted); the caller holds one part in memory at a time."""
        if self._held is not None:
            sealed: Iterable[bytes] = self._held
        else:
            assert self._file is not None
            self._file.seek(0)
            sealed = (self._file.read(struct.unpack(">I", self._file.read(4))[0]) for _ in range(self._segments))
        segments = [self._aead.decrypt(self._nonce(i), segment, None) for i, segment in enumerate(sealed)]
        if len(segments) == 1:
            return segments[0]
        return b"".join(segments)

    def close(self) -> None:
        self._pending = bytearray()
        if self._held is not None:
            self._memory.give(self._held_bytes)
            self._held, self._held_bytes = [], 0
        if self._file is not None:
            self._file.close()


@dataclass
class ReceivedPart:
    index: int
    headers: dict[str, str]
    content: EncryptedSpool
    content_type: str = field(default="")


class MultipartReader:
    """Incremental parser: :meth:`feed` chunks as they arrive, then :meth:`finish`."""

    _PREAMBLE, _AFTER_DELIMITER, _HEADERS, _BODY, _DONE = range(5)

    def __init__(self, boundary: str) -> None:
        self._delimiter = b"\r\n--" + boundary.encode("ascii")
        # The first delimiter may start the body without a CRLF: pretend one precedes it.
        self._buf = bytearray(b"\r\n")
        self._state = self._PREAMBLE
        self._seen_preamble = 0
        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))
        self._memory = RequestMemory(MAX_HELD_BYTES)
        self._current: ReceivedPart | None = None
        self.parts: list[ReceivedPart] = []

    def feed(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self._buf += chunk
        while self._step():
            pass

    def _step(self) -> bool:
        """Advance the state machine once; False when more data is needed."""
        buf, d = self._buf, self._delimiter
        if self._state == self._PREAMBLE:
            i = buf.find(d)
            if i < 0:
                keep = len(d) - 1
                self._seen_preamble += max(0, len(buf) - keep)
                if self._seen_preamble > MAX_PREAMBLE_BYTES:
                    raise MalformedMultipart("no multipart boundary found at the start of the body")
                del buf[: max(0, len(buf) - keep)]
                return False
            # Every limit below holds however the body is split into chunks (here: a whole preamble in one chunk).
            if self._seen_preamble + i > MAX_PREAMBLE_BYTES:
                raise MalformedMultipart("no multipart boundary found at the start of the body")
            del buf[: i + len(d)]
            self._state = self._AFTER_DELIMITER
            return True
        if self._state == self._AFTER_DELIMITER:
            if len(buf) < 2:
                return False
            if buf[:2] == b"--":
                self._state = self._DONE
                buf.clear()
                return False
            eol = buf.find(b"\r\n")
            if eol > 1024 or (eol < 0 and len(buf) > 1025):  # 1025: the last byte may be the CR of the CRLF
                raise MalformedMultipart("boundary line is not terminated")
            if eol < 0:
                return False
            if buf[:eol].strip(b" \t"):
                raise MalformedMultipart("unexpected characters after a boundary")
            del buf[: eol + 2]
            self._state = self._HEADERS
            return True
        if self._state == self._HEADERS:
            if buf[:2] == b"\r\n":
                end, skip = 0, 2  # no header fields
            else:
                end, skip = buf.find(b"\r\n\r\n"), 4
            if end < 0:
                if len(buf) > MAX_PART_HEADER_BYTES + 3:  # + 3: the end of the buffer may be the start of CRLF CRLF
                    raise MalformedMultipart("part headers are too long")
                return False
            if end > MAX_PART_HEADER_BYTES:
                raise MalformedMultipart("part headers are too long")
            headers = _parse_headers(bytes(buf[:end]))
            del buf[: end + skip]
            if len(self.parts) >= MAX_PARTS:
                raise MalformedMultipart(f"more than {MAX_PARTS} parts")
            index = len(self.parts)
            self._current = ReceivedPart(index, headers, EncryptedSpool(self._aead, index, self._memory), headers.get("content-type", ""))
            self.parts.append(self._current)
            self._state = self._BODY
            return True
        if self._state == self._BODY:
            assert self._current is not None
            i = buf.find(d)
            if i < 0:
                keep = len(d) - 1
                if len(buf) > keep:
                    with memoryview(buf) as view:  # released before the buffer is cut
                        self._current.content.write(view[: len(buf) - keep])
                    del buf[: len(buf) - keep]
                return False
            with memoryview(buf) as view:
                self._current.content.write(view[:i])
            self._current.content.finish()
            self._current = None
            del buf[: i + len(d)]
            self._state = self._AFTER_DELIMITER
            return True
        # _DONE: the epilogue is ignored (RFC 2046 5.1.1).
        buf.clear()
        return False

    @property
    def complete_parts(self) -> int:
        """How many parts, from the first, have arrived whole (their content will not change any more)."""
        return len(self.parts) - (self._current is not None)

    def finish(self) -> list[ReceivedPart]:
        if self._state != self._DONE:
            raise MalformedMultipart("the body ends before the closing boundary")
        if not self.parts:
            raise MalformedMultipart("the body holds no parts")
        return self.parts

    def close(self) -> None:
        for part in self.parts:
            part.content.close()


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    if not block:
        return headers
    try:
        text = block.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedMultipart("part headers are not ASCII") from None
    for line in text.split("\r\n"):
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or name != name.strip():
            raise MalformedMultipart("malformed part header line")
        headers[name.strip().lower()] = value.strip()
    return headers
