"""ASGI middleware: path guard, security headers, metrics and a PHI-free access log.

Pure ASGI (no request buffering), so streamed STOW bodies and WADO responses
pass through untouched.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import MutableMapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dicomguard.web.metrics import UNMATCHED, WebMetrics

access_log = logging.getLogger("dicomguard.web.access")

MAX_PATH_BYTES = 2048
MAX_QUERY_BYTES = 16 * 1024
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
# Encoded '/', '\', NUL and '.', a raw backslash: none occurs in a DICOMweb URL, all occur in traversal attempts.
_FORBIDDEN_IN_PATH = (b"%2f", b"%5c", b"%00", b"%2e", b"\\")

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
)


async def _reject(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"error": "bad-request" if status == 400 else "uri-too-long", "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class PathGuardMiddleware:
    """400 for any path with dot segments, encoded separators/dots/NUL or non-printable bytes, before routing.

    UID path parameters are validated again by the routes; this guard makes
    traversal attempts fail uniformly, whatever route they aim at.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw: bytes = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
        if len(scope.get("query_string", b"")) > MAX_QUERY_BYTES:
            await _reject(send, 414, "query string too long")
            return
        lower = raw.lower()
        if (
            len(raw) > MAX_PATH_BYTES
            or any(b < 0x21 or b > 0x7E for b in raw)
            or any(x in lower for x in _FORBIDDEN_IN_PATH)
            or any(seg in (b".", b"..") for seg in raw.split(b"/"))
        ):
            await _reject(send, 400, "invalid request path")
            return
        await self.app(scope, receive, send)


class SecurityHeadersMiddleware:
    """HSTS (RFC 6797), nosniff, no-store (responses hold PHI: never cached), no framing, no referrer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ObservabilityMiddleware:
    """Request metrics and one access-log line per request: method, route template, status, duration, user.

    Never logged: query strings (they hold patient names), UIDs (templates only),
    tokens and bodies.
    """

    def __init__(self, app: ASGIApp, metrics: WebMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self._record(scope, status, time.perf_counter() - start)

    def _record(self, scope: MutableMapping[str, Any], status: int, seconds: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or UNMATCHED
        method = scope.get("method", "")
        method = method if method in _METHODS else "OTHER"
        self.metrics.observe(method, template, status, seconds)
        state = scope.get("state") or {}
        principal = state.get("principal")
        client = scope.get("client") or ("-", 0)
        access_log.info(
            "%s %s %s %d %.1fms user=%s", client[0], method, template, status, seconds * 1000,
            principal.label() if principal is not None else "-",
        )


class NetworkBlockMiddleware:
    """403 for every request from a network an incident contains (``incident contain --network``), before routing."""

    def __init__(self, app: ASGIApp, engine: Any) -> None:
        self.app = app
        self.engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            from dicomguard.core.network_blocks import is_blocked

            client = scope.get("client")
            if client and is_blocked(self.engine, client[0]):
                body = json.dumps({"error": "forbidden", "detail": "requests from this network are refused"}).encode()
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
