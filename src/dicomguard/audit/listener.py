"""A syslog-over-TLS receiver (RFC 5425) for audit messages of other systems (``dicomguard audit listen``).

Mutual TLS with the archive's server certificate. The peer is the registered,
unrevoked, unexpired device whose certificate it presented
(:meth:`DeviceRegistry.identify`); any other peer (no registered certificate,
a revoked or expired one) is refused and recorded as a Node Authentication
alert. Each message is then *that device's* assertion: it is received through
the device's own services (:meth:`AuditService.receive`), which decide per
message whether the device may send it (``audit-send``: a device may assert
events about itself only when registered for ``audit``, about others when
registered for ``audit-relay``; by default neither) and store an accepted one
with origin ``syslog:<AE title>@<address>`` (:mod:`dicomguard.audit.origin`),
shown everywhere as asserted by that device.

Each frame's RFC 5424 message must carry a PS3.15 XML AuditMessage; invalid or
refused ones are counted and logged (without their content) and the connection
goes on. A framing error closes the connection (RFC 5425 4.3.1: the stream
cannot be resynchronized). Revocation takes effect before the next packet.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from dicomguard.audit.imports import ImportItem, Unreadable
from dicomguard.audit.origin import device_origin
from dicomguard.audit.service import REFUSED_SEND, AuditService
from dicomguard.audit.syslog import FrameReader, SyslogError, parse_message
from dicomguard.core.access import Principal, PrincipalKind
from dicomguard.core.context import ArchiveContext
from dicomguard.core.services.operations import OperationsService
from dicomguard.pki.devices import DeviceRegistry, PeerRefused
from dicomguard.pki.tls import server_context

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 600.0
MAX_REFUSED_SENDS = 10
"""Messages a connection may have refused by the policy (each a recorded Security Alert) before it is closed:
a device that may not assert what it sends cannot flood the trail with alerts (decided in batches of this size)."""


@dataclass
class ListenerStats:
    connections: int = 0
    refused_peers: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0


class PeerServices(Protocol):
    """What the listener uses of one peer's services (``app.services.Services``)."""

    @property
    def audit(self) -> AuditService: ...

    @property
    def operations(self) -> OperationsService: ...


def _common_name(sock: ssl.SSLSocket) -> str:
    cert = sock.getpeercert() or {}
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


class AuditListener:
    """Receives audit messages over syslog-TLS, each as the assertion of the device that sent it.

    ``services`` builds the services of one verified principal (``Archive.services``):
    the listener never imports as whoever started it.
    """

    def __init__(self, ctx: ArchiveContext, services: Callable[[Principal], PeerServices], host: str, port: int,
                 tls: ssl.SSLContext | None = None) -> None:
        if tls is None:
            from dicomguard.pki.store import load_tls_material

            m = load_tls_material(ctx.home, ctx.settings, ctx.keyring)
            tls = server_context(m.server_chain_pem, m.server_key_pem, m.client_ca_pem)
        self.tls = tls
        self.host = host
        self.port = port
        self.services = services
        self.registry = DeviceRegistry(ctx.engine)
        self.stats = ListenerStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: socket.socket | None = None

    def start(self) -> None:
        server = socket.create_server((self.host, self.port), reuse_port=False)
        server.settimeout(0.5)
        self.port = server.getsockname()[1]
        self._server = server
        threading.Thread(target=self._accept, name="audit-listener", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.close()

    def _accept(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                conn, addr = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn, addr[0]), name="audit-listener-conn", daemon=True).start()

    def _refuse(self, who: str, address: str, reason: str) -> None:
        """An unverified peer, named by its certificate's CN, as a refused connection (Node Authentication alert)."""
        with self._lock:
            self.stats.refused_peers += 1
        log.warning("audit listener: %s@%s refused: %s", who or "unknown", address, reason)
        try:
            principal = Principal(PrincipalKind.DEVICE, who[:64] or "unknown", frozenset(), address)
            self.services(principal).operations.connection_refused(f"audit listener: {reason}")
        except Exception:  # the refusal itself must not crash the listener
            log.exception("could not record a refused audit sender")

    def _serve(self, raw: socket.socket, address: str) -> None:
        try:
            raw.settimeout(HANDSHAKE_TIMEOUT_S)
            sock = self.tls.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.warning("audit listener: TLS handshake with %s failed (%s)", address, getattr(exc, "reason", None) or type(exc).__name__)
            raw.close()
            return
        try:
            device = self.registry.identify(sock.getpeercert(binary_form=True))
        except (PeerRefused, ValueError) as exc:
            self._refuse(_common_name(sock), address, str(exc) if isinstance(exc, PeerRefused) else "unreadable certificate")
            sock.close()
            return
        peer = f"{device.ae_title}@{address}"
        audit = self.services(device.principal(address)).audit
        origin = device_origin(device.ae_title, address)
        with self._lock:
            self.stats.connections += 1
        reader = FrameReader()
        sock.settimeout(IDLE_TIMEOUT_S)
        number = refused = 0
        try:
            while not self._stop.is_set():
                data = sock.recv(256 * 1024)
                if not data:
                    return
                items: list[ImportItem] = []
                for frame_bytes in reader.feed(data):
                    number += 1
                    try:
                        items.append((f"{peer}#{number}", parse_message(frame_bytes).payload().strip()))
                    except SyslogError as exc:
                        items.append((f"{peer}#{number}", Unreadable(str(exc))))
                if not items:
                    continue
                if not self.registry.still_valid(device.ae_title, device.cert_sha256):
                    log.warning("audit listener: %s was revoked; closed", peer)
                    return
                for start in range(0, len(items), MAX_REFUSED_SENDS):
                    result = audit.receive(items[start:start + MAX_REFUSED_SENDS], origin)
                    with self._lock:
                        self.stats.stored += result.stored
                        self.stats.duplicates += result.duplicates
                        self.stats.rejected += len(result.rejected)
                    for label, reason in result.rejected:
                        log.warning("audit listener: message %s rejected: %s", label, reason)
                    refused += sum(reason.startswith(REFUSED_SEND) for _, reason in result.rejected)
                    if refused >= MAX_REFUSED_SENDS:
                        log.warning("audit listener: closing %s: %d messages refused by the policy", peer, refused)
                        return
        except SyslogError as exc:
            log.warning("audit listener: closing %s: %s", peer, exc)
        except (OSError, ssl.SSLError):
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass
