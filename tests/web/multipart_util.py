"""An independent multipart/related splitter for tests (not the server's parser)."""

from __future__ import annotations


def boundary_of(content_type: str) -> str:
    for item in content_type.split(";"):
        name, _, value = item.strip().partition("=")
        if name.lower() == "boundary":
            return value.strip('"')
    raise AssertionError(f"no boundary in {content_type!r}")


def split(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """(headers, payload) of every part; asserts the closing delimiter is present."""
    delimiter = b"--" + boundary_of(content_type).encode()
    assert body.rstrip(b"\r\n").endswith(delimiter + b"--"), "multipart body not closed"
    chunks = body.split(b"\r\n" + delimiter)
    first = chunks[0]
    assert first.startswith(delimiter)
    chunks[0] = first[len(delimiter):]
    parts = []
    for chunk in chunks:
        if chunk.startswith(b"--"):
            break
        assert chunk.startswith(b"\r\n")
        head, _, payload = chunk[2:].partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode().split("\r\n"):
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        parts.append((headers, payload))
    return parts


def encode(parts: list[bytes], boundary: str = "dgtestboundary", content_type: str = "application/dicom") -> tuple[str, bytes]:
    body = b"".join(b"\r\n--" + boundary.encode() + f"\r\nContent-Type: {content_type}\r\n\r\n".encode() + p for p in parts)
    body += b"\r\n--" + boundary.encode() + b"--\r\n"
    return f'multipart/related; type="application/dicom"; boundary={boundary}', body
