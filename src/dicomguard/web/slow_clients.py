"""Slow-client protection for the HTTPS listener (slowloris and slow-body attacks).

uvicorn bounds the time *between* requests on a kept-alive connection
(``timeout_keep_alive``) and asyncio bounds the TLS handshake, but nothing
bounds how long a client may take to send a request head or its body: a few
hundred connections trickling one byte every few seconds would hold every
worker slot (CWE-400, "slowloris"). Two guards close that gap:

* :func:`head_deadline_protocol` — the HTTP protocol closes a connection whose
  request line and headers are not complete ``header_timeout_s`` after the
  request started (or after the connection was made);
* :class:`BodyIdleTimeoutMiddleware` — while a request body is being received,
  a pause longer than ``body_idle_timeout_s`` ends the request with ``408
  Request Timeout`` and ``Connection: close``. The application sees a client
  disconnect, so a half-received STOW-RS upload is discarded like any broken
  connection: nothing half-stored.

Neither limit applies to responses: a slow *reader* of a large WADO-RS
response is paced by TCP flow control, not by these guards.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


def head_deadline_protocol(base: type, header_timeout_s: float) -> type:
    """A subclass of uvicorn's HTTP protocol ``base`` that enforces a deadline on each request head."""

    class HeadDeadlineProtocol(base):  # type: ignore[misc, valid-type]
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_head_deadline()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._head_timer is None:
                self._arm_head_deadline()  # the next request on a kept-alive connection

        def on_headers_complete(self) -> None:
            self._disarm_head_deadline()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_deadline()
            super().connection_lost(exc)

        def _arm_head_deadline(self) -> None:
            self._head_timer = self.loop.call_later(header_timeout_s, self._head_deadline_passed)

        def _disarm_head_deadline(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_deadline_passed(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                peer = self.client[0] if self.client else "?"
                log.warning("closing a connection from %s: request head not complete within %.0f s", peer, header_timeout_s)
                self.transport.close()

    HeadDeadlineProtocol.__name__ = f"HeadDeadline{base.__name__}"
    return HeadDeadlineProtocol


class BodyIdleTimeoutMiddleware:
    """Ends a request whose body stalls for longer than ``timeout_s`` (408, connection closed)."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = False
        timed_out = False
        response_started = False

        async def guarded_receive() -> Message:
            nonlocal body_done, timed_out
            if body_done:
                return await receive()  # e.g. a streaming response listening for disconnect: no deadline
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except TimeoutError:
                timed_out = body_done = True
                peer = scope.get("client") or ("?",)
                log.warning("request body from %s stalled for %.0f s: request ended (408)", peer[0], self.timeout_s)
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if timed_out and not response_started:
                return  # the 408 below replaces whatever the application answers to the "disconnect"
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, tracking_send)
        except Exception:
            if not timed_out:
                raise
        if timed_out and not response_started:
            body = b'{"error":"request-timeout","detail":"the request body stalled"}'
            await send({"type": "http.response.start", "status": 408, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close"),
            ]})
            await send({"type": "http.response.body", "body": body})
