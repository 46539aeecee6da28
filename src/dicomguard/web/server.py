"""HTTPS listener for the DICOMweb app: uvicorn with the archive's TLS material.

TLS: 1.2 minimum, forward-secret AEAD suites only, no compression or
renegotiation (the hardened context of :mod:`dicomguard.pki.tls`, RFC 9325).
The server key is unwrapped from the index by the KEK and handed to OpenSSL
through an in-memory file: it never exists in clear on disk. Client
certificates are requested but optional: browsers and viewers authenticate
with bearer tokens or a share link's session, while a device or a peer archive
(site-to-site transfer, ADR 0010) may present a certificate issued by the
archive's CA; a presented certificate must verify (else the handshake fails) and
is matched to its device registration on every request
(:func:`dicomguard.web.auth.device_principal`).

Logging: uvicorn's own access log is off (it prints query strings, which may
hold patient names); :class:`dicomguard.web.middleware.ObservabilityMiddleware`
writes one line per request with the route template instead. ``X-Forwarded-*``
headers are not trusted (the client address in audit events is the peer's).

Slow clients: a request head must be complete within ``network.header_timeout_s``
and a request body may not stall longer than ``network.body_idle_timeout_s``
(:mod:`dicomguard.web.slow_clients`).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

import uvicorn

from dicomguard.app.archive import Archive
from dicomguard.errors import ConfigurationError
from dicomguard.pki.store import load_tls_material
from dicomguard.pki.tls import server_context
from dicomguard.web.app import create_app
from dicomguard.web.auth import CLIENT_CERT_SCOPE_KEY
from dicomguard.web.slow_clients import head_deadline_protocol

log = logging.getLogger(__name__)


def _http_protocol() -> type:
    """uvicorn's fastest available HTTP/1.1 protocol (httptools, else h11), to be given a head deadline."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return HttpToolsProtocol
    except ImportError:  # httptools not installed
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol


def https_context(archive: Archive) -> ssl.SSLContext:
    """Server TLS context; a client certificate is requested, optional, and verified against the archive's CA if sent."""
    material = load_tls_material(archive.home, archive.settings, archive.ctx.keyring)
    ctx = server_context(material.server_chain_pem, material.server_key_pem, client_ca_pem=material.client_ca_pem)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def client_certificate_protocol(base: type) -> type:
    """A subclass of uvicorn's HTTP protocol ``base`` that puts the connection's verified client certificate in each scope."""

    class ClientCertificateProtocol(base):  # type: ignore[misc, valid-type]
        _client_cert: bytes | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            ssl_object = transport.get_extra_info("ssl_object")
            self._client_cert = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.scope[CLIENT_CERT_SCOPE_KEY] = self._client_cert

    ClientCertificateProtocol.__name__ = f"ClientCertificate{base.__name__}"
    return ClientCertificateProtocol


class _Server(uvicorn.Server):
    """uvicorn server that reports readiness and stops when asked (from any thread)."""

    def __init__(self, config: uvicorn.Config, ready: threading.Event | None, stop: threading.Event | None) -> None:
        super().__init__(config)
        self._ready = ready
        self._stop = stop

    async def startup(self, sockets: list | None = None) -> None:  # type: ignore[type-arg]
        await super().startup(sockets)
        if self.started and self._ready is not None:
            self._ready.set()

    async def on_tick(self, counter: int) -> bool:
        if self._stop is not None and self._stop.is_set():
            self.should_exit = True
        return await super().on_tick(counter)


def serve_https(
    archive: Archive,
    host: str,
    port: int,
    *,
    ready: threading.Event | None = None,
    stop: threading.Event | None = None,
    listening_socket: socket.socket | None = None,
) -> None:
    """Serve DICOMweb over HTTPS until ``stop`` is set (or SIGINT/SIGTERM in the main thread).

    ``ready`` is set once the socket listens. Raises :class:`ConfigurationError`
    if the address cannot be bound. With ``listening_socket`` (a worker of
    ``serve --workers N``) uvicorn accepts on that already listening socket and
    binds nothing; ``host`` and ``port`` are then only informative.
    """
    app = create_app(archive)
    # uvicorn's access log prints query strings (patient names): off, whatever the logging configuration says.
    logging.getLogger("uvicorn.access").disabled = True
    context = https_context(archive)
    factory: Callable[[uvicorn.Config, Callable[[], ssl.SSLContext]], ssl.SSLContext] = lambda _config, _default: context
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_context_factory=factory,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        log_config=None,
        lifespan="off",
        timeout_graceful_shutdown=5,
        http=head_deadline_protocol(client_certificate_protocol(_http_protocol()), archive.settings.network.header_timeout_s),
    )
    server = _Server(config, ready, stop)
    try:
        server.run(sockets=[listening_socket] if listening_socket is not None else None)
    except SystemExit:
        # uvicorn exits the process when it cannot bind; in a library call that is a configuration error.
        raise ConfigurationError(f"cannot serve HTTPS on {host}:{port}") from None
