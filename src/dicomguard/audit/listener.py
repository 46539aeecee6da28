"""A syslog-over-TLS receiver (RFC 5425) for audit messages of other systems (``dicomguard audit listen``).

Mutual TLS with the archive's server certificate; the peer is the registered,
unrevoked, unexpired device whose certificate it presented, any other peer is
refused and recorded as a Node Authentication alert
(:class:`dicomguard.pki.listener.MutualTlsListener`). Each message is then
*that device's* assertion: it is received through
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
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from dicomguard.audit.imports import ImportItem, Unreadable
from dicomguard.audit.origin import device_origin
from dicomguard.audit.service import REFUSED_SEND, AuditService
from dicomguard.audit.syslog import FrameReader, SyslogError, parse_message
from dicomguard.core.access import Principal
from dicomguard.core.context import ArchiveContext
from dicomguard.core.services.operations import OperationsService
from dicomguard.pki.devices import DeviceInfo
from dicomguard.pki.listener import MutualTlsListener

log = logging.getLogger(__name__)

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


class AuditListener(MutualTlsListener):
    """Receives audit messages over syslog-TLS, each as the assertion of the device that sent it."""

    LABEL = "audit listener"

    def __init__(self, ctx: ArchiveContext, services: Callable[[Principal], PeerServices], host: str, port: int,
                 tls: ssl.SSLContext | None = None) -> None:
        super().__init__(ctx, services, host, port, tls)
        self.stats = ListenerStats()

    def receive(self, sock: ssl.SSLSocket, device: DeviceInfo, address: str) -> None:
        peer = f"{device.ae_title}@{address}"
        audit = self.services(device.principal(address)).audit
        origin = device_origin(device.ae_title, address)
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
                    self._count(stored=result.stored, duplicates=result.duplicates, rejected=len(result.rejected))
                    for label, reason in result.rejected:
                        log.warning("audit listener: message %s rejected: %s", label, reason)
                    refused += sum(reason.startswith(REFUSED_SEND) for _, reason in result.rejected)
                    if refused >= MAX_REFUSED_SENDS:
                        log.warning("audit listener: closing %s: %d messages refused by the policy", peer, refused)
                        return
        except SyslogError as exc:
            log.warning("audit listener: closing %s: %s", peer, exc)
