"""A TCP listener for registered devices only: mutual TLS, the peer identified by its certificate, refusals recorded.

The skeleton shared by the listeners that take messages from other systems (the audit
repository, RFC 5425; the HL7 v2 context feed, MLLP): TLS with the archive's server
certificate and a client certificate required (there is no plaintext mode); the peer is the
registered, unrevoked, unexpired device whose certificate it presented
(:meth:`DeviceRegistry.identify`); any other peer is refused and recorded as a Node
Authentication alert (PS3.15 A.5.3.9) through services of a principal named by the
certificate's CN, never trusted for anything else. What a verified device then sends is the
subclass's :meth:`MutualTlsListener.receive`, acting through *that device's* services.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from dicomguard.core.access import Principal, PrincipalKind
from dicomguard.core.context import ArchiveContext
from dicomguard.pki.devices import DeviceInfo, DeviceRegistry, PeerRefused
from dicomguard.pki.tls import server_context

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 10.0


def common_name(sock: ssl.SSLSocket) -> str:
    """The CN of the peer's certificate (only to name a refused peer in the record)."""
    cert = sock.getpeercert() or {}
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


class MutualTlsListener(ABC):
    """Accept, handshake, identify the device, then :meth:`receive`; subclasses set ``LABEL`` and implement it.

    ``services`` builds the services of one verified principal (``Archive.services``): the listener never acts
    as whoever started it. ``stats`` must have ``connections`` and ``refused_peers`` counters.
    """

    LABEL: ClassVar[str] = "listener"
    stats: Any

    def __init__(self, ctx: ArchiveContext, services: Callable[[Principal], Any], host: str, port: int,
                 tls: ssl.SSLContext | None = None, *, max_connections: int | None = None) -> None:
        if tls is None:
            from dicomguard.pki.store import load_tls_material

            m = load_tls_material(ctx.home, ctx.settings, ctx.keyring)
            tls = server_context(m.server_chain_pem, m.server_key_pem, m.client_ca_pem)
        if tls.verify_mode != ssl.CERT_REQUIRED:
            raise ValueError(f"the {self.LABEL} needs a TLS context that requires client certificates")
        self.tls = tls
        self.host = host
        self.port = port
        self.services = services
        self.registry = DeviceRegistry(ctx.engine)
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections) if max_connections else None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: socket.socket | None = None

    def start(self) -> None:
        server = socket.create_server((self.host, self.port), reuse_port=False)
        server.settimeout(0.5)
        self.port = server.getsockname()[1]
        self._server = server
        threading.Thread(target=self._accept, name=self.LABEL.replace(" ", "-"), daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.close()

    def _count(self, **changes: int) -> None:
        with self._lock:
            for name, n in changes.items():
                setattr(self.stats, name, getattr(self.stats, name) + n)

    def _accept(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                conn, addr = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._slots is not None and not self._slots.acquire(blocking=False):
                self._count(busy=1)
                log.warning("%s: connection from %s closed: %d connections already open", self.LABEL, addr[0], self.max_connections)
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn, addr[0]), name=f"{self.LABEL.replace(' ', '-')}-conn",
                             daemon=True).start()

    def _refuse(self, who: str, address: str, reason: str) -> None:
        """An unverified peer, named by its certificate's CN, as a refused connection (Node Authentication alert)."""
        self._count(refused_peers=1)
        log.warning("%s: %s@%s refused: %s", self.LABEL, who or "unknown", address, reason)
        try:
            principal = Principal(PrincipalKind.DEVICE, who[:64] or "unknown", frozenset(), address)
            self.services(principal).operations.connection_refused(f"{self.LABEL}: {reason}")
        except Exception:  # the refusal itself must not crash the listener
            log.exception("%s: could not record a refused sender", self.LABEL)

    def _serve(self, raw: socket.socket, address: str) -> None:
        try:
            try:
                raw.settimeout(HANDSHAKE_TIMEOUT_S)
                sock = self.tls.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                log.warning("%s: TLS handshake with %s failed (%s)", self.LABEL, address,
                            getattr(exc, "reason", None) or type(exc).__name__)
                raw.close()
                return
            try:
                try:
                    device = self.registry.identify(sock.getpeercert(binary_form=True))
                except (PeerRefused, ValueError) as exc:
                    self._refuse(common_name(sock), address, str(exc) if isinstance(exc, PeerRefused) else "unreadable certificate")
                    return
                self._count(connections=1)
                self.receive(sock, device, address)
            except (OSError, ssl.SSLError):
                pass
            finally:
                try:
                    sock.close()
                except OSError:
                    pass
        finally:
            if self._slots is not None:
                self._slots.release()

    @abstractmethod
    def receive(self, sock: ssl.SSLSocket, device: DeviceInfo, address: str) -> None:
        """Read what the verified ``device`` sends until it closes, misbehaves or the listener stops."""
