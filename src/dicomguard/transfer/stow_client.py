"""STOW-RS client (PS3.18 10.5): push DICOM objects to a peer's DICOMweb root over mutually authenticated TLS.

``POST {root}/studies`` with ``Content-Type: multipart/related;
type="application/dicom"; boundary=...`` (PS3.18 10.5.1, RFC 2387), one
``application/dicom`` part per object and, optionally, a last
``application/vnd.dicomguard.provenance+json`` part (:mod:`.provenance`),
``Accept: application/dicom+json``; the answer is read as PS3.18 10.5.3
(:mod:`.stow_response`).

Security properties:

* **Only the authenticated peer gets the PHI.** The URL must be ``https``; the
  caller's context verifies the peer (use :func:`client_context`: exactly one
  CA, host name checked, TLS 1.2+, RFC 8446 / RFC 5246). Redirects are never
  followed (a 3xx is a permanent failure), so an answer cannot send the
  objects to another host.
* **Bounded memory.** The body is streamed with chunked transfer coding (RFC
  9112 7.1), one object at a time, never copied: a Content-Length would need
  every object's size before the first byte is sent, i.e. a second pass over
  the objects (or all of them in memory) with ``objects`` being any iterable,
  such as a generator that reads them one by one from the archive. The
  response body is bounded too.
* **All or nothing on a cut.** If the caller's iterable raises, or the
  connection fails, the body is left unterminated and the connection closed:
  a receiver that checks framing (dicomguard does, ``web/multipart.py``)
  stores nothing of it, and the error tells the queue whether to retry
  (:mod:`.errors`).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Iterable, Mapping
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from dicomguard.transfer.errors import (
    NotAuthorized,
    PayloadTooLarge,
    PeerBusy,
    PeerUnreachable,
    RequestRejected,
    ResponseNotUnderstood,
    RetryableTransferError,
    TlsFailure,
    TransferError,
)
from dicomguard.transfer.multipart_body import DICOM, PROVENANCE, BoundaryCollision, ChunkedMultipartWriter, content_type, new_boundary
from dicomguard.transfer.stow_response import MAX_RESPONSE_BYTES, StowOutcome, parse_response
from dicomguard.transfer.tls import classify_tls_error, client_context

__all__ = ["DEFAULT_TIMEOUT_S", "USER_AGENT", "client_context", "send_instances"]

DEFAULT_TIMEOUT_S = 300.0
"""Per socket operation (connect, each send, the wait for the answer), not for the whole request: the
peer ingests the whole body before it answers, which for a large batch takes minutes."""

USER_AGENT = "dicomguard-transfer/1"
MAX_RETRY_AFTER_S = 86400.0
_RESERVED_HEADERS = frozenset({
    "host", "content-type", "content-length", "transfer-encoding", "connection", "expect", "accept", "te", "trailer", "upgrade",
})
_RETRYABLE_STATUS = frozenset({408, 425, 429})
_PERMANENT_5XX = frozenset({501, 505})


def _target(url: str) -> tuple[str, int, str]:
    """(host, port, path of ``/studies``) of a DICOMweb root URL; ValueError unless it is a plain https URL."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise ValueError("the peer's DICOMweb root must be an https URL")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise ValueError("the peer's DICOMweb root must not hold credentials, a query or a fragment")
    if not parts.hostname:
        raise ValueError("the peer's DICOMweb root has no host")
    port = parts.port or 443  # ValueError for an invalid port
    return parts.hostname, port, parts.path.rstrip("/") + "/studies"


def _check_headers(headers: Mapping[str, str] | None) -> list[tuple[str, str]]:
    out = []
    for name, value in (headers or {}).items():
        if name.strip().lower() in _RESERVED_HEADERS:
            raise ValueError(f"header {name!r} is set by the STOW-RS client itself")
        out.append((name, value))
    return out


def _retry_after(value: str | None) -> float | None:
    """RFC 9110 10.2.3: delta-seconds or an HTTP-date; clamped to [0, one day]."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _detail(body: bytes) -> str:
    text = body[:2048].decode("utf-8", "replace")
    return "".join(c for c in text if c.isprintable())[:512]


def _connection_error(exc: BaseException, stage: str) -> TransferError:
    """Map a socket/TLS/HTTP exception to a retryable or permanent :class:`TransferError`."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TlsFailure(f"TLS failure {stage}: the peer's certificate did not verify ({exc.verify_message})")
    if isinstance(exc, ssl.SSLError) and classify_tls_error(exc):
        return TlsFailure(f"TLS failure {stage}: {exc.reason or type(exc).__name__}")
    if isinstance(exc, TimeoutError | socket.timeout):
        return PeerUnreachable(f"timed out {stage}")
    if isinstance(exc, ConnectionRefusedError):
        return PeerUnreachable(f"connection refused {stage}")
    if isinstance(exc, socket.gaierror):
        return PeerUnreachable(f"host name did not resolve {stage}")
    if isinstance(exc, http.client.HTTPException) and not isinstance(exc, http.client.RemoteDisconnected | http.client.IncompleteRead):
        return ResponseNotUnderstood(f"the peer does not speak HTTP/1.1 ({type(exc).__name__}) {stage}")
    return PeerUnreachable(f"connection failed {stage}: {type(exc).__name__}")


def _status_error(status: int, reason: str, headers: http.client.HTTPMessage, body: bytes) -> TransferError:
    detail = _detail(body)
    what = f"HTTP {status} {reason}".strip()
    if status in _RETRYABLE_STATUS or (500 <= status <= 599 and status not in _PERMANENT_5XX):
        return PeerBusy(f"peer answered {what}", status=status, detail=detail, retry_after_s=_retry_after(headers.get("retry-after")))
    if status in (401, 403):
        return NotAuthorized(f"peer refused our credentials: {what}", status=status, detail=detail)
    if status == 413:
        return PayloadTooLarge(f"peer refused the request size: {what}", status=status, detail=detail)
    if 300 <= status <= 399:
        return RequestRejected(f"peer answered {what}; redirects are not followed", status=status, detail=detail)
    return RequestRejected(f"peer answered {what}", status=status, detail=detail)


def _read_body(response: http.client.HTTPResponse) -> bytes:
    declared = response.getheader("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        raise ResponseNotUnderstood(f"response of {declared} bytes exceeds {MAX_RESPONSE_BYTES}", status=response.status)
    body = response.read(MAX_RESPONSE_BYTES + 1)
    if len(body) > MAX_RESPONSE_BYTES:
        raise ResponseNotUnderstood(f"response exceeds {MAX_RESPONSE_BYTES} bytes", status=response.status)
    return body


class _SendFailed(Exception):
    def __init__(self, cause: OSError | http.client.HTTPException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _Socket:
    """The connection's writes, with network errors wrapped so they cannot be confused with the caller's."""

    def __init__(self, conn: http.client.HTTPSConnection) -> None:
        self._conn = conn

    def send(self, data: bytes | memoryview) -> None:
        try:
            self._conn.send(data)
        except (OSError, http.client.HTTPException) as exc:
            raise _SendFailed(exc) from exc

    def end_headers(self) -> None:
        try:
            self._conn.endheaders()
        except (OSError, http.client.HTTPException) as exc:
            raise _SendFailed(exc) from exc


def send_instances(
    url: str,
    objects: Iterable[bytes | bytearray | memoryview],
    *,
    ssl_context: ssl.SSLContext,
    provenance: bytes | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    headers: Mapping[str, str] | None = None,
) -> StowOutcome:
    """Store ``objects`` (DICOM Part 10 files) at the DICOMweb root ``url`` in one STOW-RS request.

    Returns the per-instance outcome of a 200, 202 or 409 response. Raises
    :class:`~dicomguard.transfer.errors.RetryableTransferError` (unreachable,
    timed out, 408/429/5xx with its ``Retry-After``) or
    :class:`~dicomguard.transfer.errors.PermanentTransferError` (TLS
    verification or refused client certificate, 401/403, 413, other 4xx,
    an unreadable response); ``ValueError`` for a bad URL, header, empty
    object or provenance, or a context that does not verify the peer and its
    host name. Exceptions raised by ``objects`` itself (an ``OSError`` of the
    archive's storage too) propagate unchanged after the connection is closed:
    the request is then incomplete and stores nothing.
    """
    host, port, path = _target(url)
    extra = _check_headers(headers)
    if ssl_context.verify_mode != ssl.CERT_REQUIRED or not ssl_context.check_hostname:
        raise ValueError("the TLS context must verify the peer's certificate and host name (see client_context)")
    if provenance is not None and not provenance:
        raise ValueError("the provenance part is empty")
    boundary = new_boundary()
    conn = http.client.HTTPSConnection(host, port, context=ssl_context, timeout=timeout_s)
    try:
        try:
            conn.connect()
        except (OSError, http.client.HTTPException) as exc:
            raise _connection_error(exc, "connecting to the peer") from exc
        conn.putrequest("POST", path, skip_accept_encoding=True)
        conn.putheader("Content-Type", content_type(boundary))
        conn.putheader("Accept", "application/dicom+json")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.putheader("User-Agent", USER_AGENT)
        for name, value in extra:
            conn.putheader(name, value)
        sent, send_error = 0, None
        sock = _Socket(conn)
        writer = ChunkedMultipartWriter(boundary, sock.send)
        try:
            sock.end_headers()
            for obj in objects:  # the caller's errors, OSError included, are not network errors: they propagate
                if not len(obj):
                    raise ValueError("an object to send is empty")
                writer.part(DICOM, obj)
                sent += 1
            if provenance is not None:
                writer.part(PROVENANCE, provenance)
            writer.close()
        except BoundaryCollision:
            raise RetryableTransferError("an object contains the random multipart boundary; a retry draws another") from None
        except _SendFailed as failed:
            send_error = failed.cause  # the peer may have answered early (401, 413) and closed: read that answer first
        try:
            response = conn.getresponse()
            body = _read_body(response)
        except (OSError, http.client.HTTPException) as exc:
            first = exc if isinstance(exc, ssl.SSLError) and classify_tls_error(exc) else (send_error or exc)
            raise _connection_error(first, "sending the request" if send_error else "waiting for the answer") from exc
        if send_error is not None and (200 <= response.status <= 299 or response.status == 409):
            # A store response to a body that was cut short would not cover what the caller meant to send.
            raise PeerUnreachable("the connection failed while sending the request", status=response.status)
        if response.status in (200, 202, 409):
            return parse_response(response.status, response.getheader("content-type"), body,
                                  parts_sent=sent, provenance_sent=provenance is not None)
        raise _status_error(response.status, response.reason, response.msg, body)
    finally:
        conn.close()
