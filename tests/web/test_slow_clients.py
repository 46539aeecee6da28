"""Slow clients over real HTTPS: a trickled request head is cut off, a stalled body ends in 408 and stores nothing.

The server runs with short limits (1 s head, 1 s body idle); every client here is
a raw TLS socket so the test controls exactly what is sent and when.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from dicomguard.core.query import IndexQuery
from tests.dicom_factory import ALICE, ct_series
from tests.web.conftest import WebServer, start_server
from tests.web.multipart_util import encode

pytestmark = pytest.mark.slow  # waits out the slow-client deadlines

HEAD_TIMEOUT_S = BODY_TIMEOUT_S = 1.0


@pytest.fixture
def strict_web(archive) -> Iterator[WebServer]:  # type: ignore[no-untyped-def]
    net = archive.settings.network.model_copy(update={"header_timeout_s": HEAD_TIMEOUT_S, "body_idle_timeout_s": BODY_TIMEOUT_S})
    archive.ctx.settings = archive.settings.model_copy(update={"network": net})
    server, stop = start_server(archive)
    try:
        yield server
    finally:
        stop()


def _connect(web: WebServer) -> ssl.SSLSocket:
    url = urlparse(web.url)
    ctx = ssl.create_default_context(cafile=web.ca)
    raw = socket.create_connection((url.hostname, url.port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=url.hostname)


def _closed_within(sock: ssl.SSLSocket, seconds: float) -> tuple[bool, bytes]:
    """Read until the server closes the connection (True) or ``seconds`` pass (False); returns what was read."""
    sock.settimeout(seconds)
    received = b""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                return True, received
            received += chunk
    except (TimeoutError, socket.timeout):
        return False, received
    except (ssl.SSLError, ConnectionResetError):
        return True, received
    return False, received


def _response(sock: ssl.SSLSocket) -> bytes:
    """One whole response (head and Content-Length body) from a kept-alive connection."""
    sock.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        rest += sock.recv(65536)
    return head + b"\r\n\r\n" + rest


def test_a_trickled_request_head_is_cut_off(strict_web) -> None:  # type: ignore[no-untyped-def]
    with _connect(strict_web) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        started = time.monotonic()
        for _ in range(2):  # keep trickling header bytes: activity alone does not extend the deadline
            time.sleep(0.4)
            sock.sendall(b"X-Slow: a\r\n")
        closed, data = _closed_within(sock, 5)
        assert closed and data == b"" and time.monotonic() - started < HEAD_TIMEOUT_S + 2.5
    # a prompt client on a kept-alive connection is unaffected, request after request
    with _connect(strict_web) as sock:
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert _response(sock).startswith(b"HTTP/1.1 200")
            time.sleep(HEAD_TIMEOUT_S * 0.6)  # idle between requests is the keep-alive timeout's business


def test_a_stalled_stow_body_ends_in_408_and_stores_nothing(strict_web) -> None:  # type: ignore[no-untyped-def]
    token = strict_web.token("tech.slow", "technologist")
    ctype, body = encode(ct_series(ALICE, n=2))
    head = (f"POST /dicomweb/studies HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with _connect(strict_web) as sock:
        sock.sendall(head + body[: len(body) // 2])  # then nothing
        closed, data = _closed_within(sock, BODY_TIMEOUT_S + 5)
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert b"connection: close" in data.lower() and b"strict-transport-security" in data.lower()
    assert closed
    assert IndexQuery(strict_web.archive.ctx).instances() == []
    # the same upload sent promptly is stored
    with strict_web.http(token) as http:
        assert http.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype}).status_code == 200
    assert len(IndexQuery(strict_web.archive.ctx).instances()) == 2
