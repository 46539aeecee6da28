"""The framing of a STOW-RS request body: multipart/related (RFC 2387, RFC 2046 5.1.1) of application/dicom
parts (PS3.18 8.6.1.2, 10.5.1.1), sent with HTTP/1.1 chunked transfer coding (RFC 9112 7.1).

Security properties:

* **Unambiguous framing.** The boundary is 32 random hex digits (128 bits)
  drawn per request, and every part is checked not to contain the delimiter
  before it is sent, so a crafted object cannot end its part early and smuggle
  a part of its own into the request (RFC 2046 5.1.1 requires the boundary not
  to occur in the encapsulated content).
* **Bounded memory.** A part's header and its content are written to the
  socket separately; the content is never copied or concatenated, so the
  client holds one object (the caller's) at a time.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

DICOM = "application/dicom"
PROVENANCE = "application/vnd.dicomguard.provenance+json"

Write = Callable[[bytes | memoryview], None]


class BoundaryCollision(Exception):
    """A part contains the delimiter (probability 2**-128 by chance): the request must be abandoned."""


def new_boundary() -> str:
    """A fresh RFC 2046 boundary: ``dicomguard-`` + 128 random bits in hex (43 characters, all bchars)."""
    return "dicomguard-" + secrets.token_hex(16)


def content_type(boundary: str) -> str:
    """The request's Content-Type (PS3.18 10.5.1.1): multipart/related of application/dicom parts."""
    return f'multipart/related; type="{DICOM}"; boundary={boundary}'


class ChunkedMultipartWriter:
    """Writes multipart/related parts as HTTP/1.1 chunks through ``write`` (one chunk per part)."""

    def __init__(self, boundary: str, write: Write) -> None:
        self._dash = b"--" + boundary.encode("ascii")
        self._search = re.compile(re.escape(self._dash))
        self._write = write
        self.parts = 0

    def part(self, media_type: str, content: bytes | bytearray | memoryview) -> None:
        """One part ``--B CRLF Content-Type: t CRLF CRLF content CRLF`` (the CRLF opens the next delimiter)."""
        view = memoryview(content)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")  # raises TypeError for a non-contiguous buffer
        if self._search.search(view) is not None:
            raise BoundaryCollision("a part contains the multipart delimiter")
        head = self._dash + f"\r\nContent-Type: {media_type}\r\n\r\n".encode("ascii")
        size = len(head) + view.nbytes + 2
        self._write(f"{size:X}\r\n".encode("ascii") + head)
        self._write(view)
        self._write(b"\r\n\r\n")  # the part's closing CRLF, then the chunk's
        self.parts += 1

    def close(self) -> None:
        """The closing delimiter ``--B--`` and the last (zero-length) chunk with an empty trailer."""
        tail = self._dash + b"--\r\n"
        self._write(f"{len(tail):X}\r\n".encode("ascii") + tail + b"\r\n0\r\n\r\n")
