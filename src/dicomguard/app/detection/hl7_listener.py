"""An HL7 v2 MLLP receiver over mutual TLS (``dicomguard context listen-hl7``): the detector's context feed.

A hospital interface engine sends ADT, ORM/OMI and MFN messages (HL7 v2.5.1 Chapters 3, 4 and 8) framed by
MLLP (HL7 v2.5.1 Appendix C.4) inside TLS (the archive's server certificate, a client certificate required;
there is no plaintext mode: the messages are PHI and their sender decides what the detector believes). The peer is the
registered, unrevoked, unexpired device whose certificate it presented; any other peer is refused and recorded as a
Node Authentication alert (:class:`dicomguard.pki.listener.MutualTlsListener`). Each batch of messages is then applied
through *that device's* services (:meth:`DetectionService.apply_hl7`), which decide ``context-feed`` (by the
shipped policies: only a device registered with the operation ``context-feed``) and record the change.

Every message is acknowledged in order (original mode, HL7 v2.5.1 2.9.2): AA only once the update is
committed, AE for a message that is wrong (the reason names the segment and field, never a value), AR for one
not accepted (a message type not mapped, a device not permitted), AE "could not be committed" when the
database failed (the sender resends). A framing error or a frame over :data:`MAX_MESSAGE_BYTES` closes the
connection and applies nothing of the broken frame; so does a connection closed mid-frame. At most
:data:`MAX_CONNECTIONS` connections at once, each closed after :data:`IDLE_TIMEOUT_S` without data or after
:data:`MAX_REFUSED` refused messages (each refusal is a recorded Security Alert: a device that may not feed
cannot flood the trail). Revocation takes effect before the next batch. Message content is never logged.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from dicomguard.app.detection.service import DetectionService
from dicomguard.core.access import AccessDenied, Principal
from dicomguard.core.context import ArchiveContext
from dicomguard.core.services.operations import OperationsService
from dicomguard.detect.hl7v2 import (
    INTERNAL_ERROR,
    MAX_MESSAGE_BYTES,
    FramingError,
    MllpReader,
    Outcome,
    ack,
    frame,
)
from dicomguard.pki.devices import DeviceInfo
from dicomguard.pki.listener import MutualTlsListener

log = logging.getLogger(__name__)

IDLE_TIMEOUT_S = 600.0
"""A connection without data for this long is closed (interface engines reconnect on their own)."""
MAX_CONNECTIONS = 16
"""Connections served at once; further ones are closed at accept, before the TLS handshake."""
MAX_BATCH = 100
"""Messages applied in one transaction (those that arrived together); the ACKs follow its commit."""
MAX_REFUSED = 10
"""Messages a connection may have refused by the policy before it is closed."""
NOT_PERMITTED = "not permitted to update the detection context (context-feed)"
NOT_COMMITTED = "the update could not be committed: send it again"


@dataclass
class Hl7Stats:
    connections: int = 0
    refused_peers: int = 0
    busy: int = 0
    applied: int = 0
    errors: int = 0
    rejected: int = 0
    framing_errors: int = 0


class PeerServices(Protocol):
    """What the listener uses of one peer's services (``app.services.Services``)."""

    @property
    def detection(self) -> DetectionService: ...

    @property
    def operations(self) -> OperationsService: ...


class Hl7Listener(MutualTlsListener):
    """Receives HL7 v2 context messages over MLLP and mutual TLS, each batch applied as its sending device."""

    LABEL = "HL7 listener"

    def __init__(self, ctx: ArchiveContext, services: Callable[[Principal], PeerServices], host: str, port: int,
                 tls: ssl.SSLContext | None = None, *, max_connections: int = MAX_CONNECTIONS,
                 idle_timeout_s: float = IDLE_TIMEOUT_S, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        super().__init__(ctx, services, host, port, tls, max_connections=max_connections)
        self.idle_timeout_s = idle_timeout_s
        self.max_message_bytes = max_message_bytes
        self.stats = Hl7Stats()

    def receive(self, sock: ssl.SSLSocket, device: DeviceInfo, address: str) -> None:
        peer = f"{device.ae_title}@{address}"
        detection = self.services(device.principal(address)).detection
        reader = MllpReader(self.max_message_bytes)
        sock.settimeout(self.idle_timeout_s)
        number = refused = 0
        while not self._stop.is_set():
            data = sock.recv(64 * 1024)
            if not data:
                if reader.in_frame:
                    log.warning("HL7 listener: %s closed mid-frame; the unfinished message is not applied", peer)
                return
            try:
                messages = reader.feed(data)
            except FramingError as exc:
                self._count(framing_errors=1)
                log.warning("HL7 listener: closing %s: %s (the stream cannot be resynchronised)", peer, exc)
                return
            if not messages:
                continue
            if not self.registry.still_valid(device.ae_title, device.cert_sha256):
                log.warning("HL7 listener: %s was revoked; closed", peer)
                return
            for start in range(0, len(messages), MAX_BATCH):
                batch = messages[start:start + MAX_BATCH]
                outcomes = self._apply(detection, batch, peer)
                for data_i, outcome in zip(batch, outcomes, strict=True):
                    number += 1
                    if outcome.ack != "AA":
                        log.warning("HL7 listener: message %s#%d answered %s: %s", peer, number, outcome.ack, outcome.reason)
                    sock.sendall(frame(ack(data_i, outcome)))
                refused += sum(o.reason == NOT_PERMITTED for o in outcomes)
                if refused >= MAX_REFUSED:
                    log.warning("HL7 listener: closing %s: %d messages refused by the policy", peer, refused)
                    return

    def _apply(self, detection: DetectionService, batch: list[bytes], peer: str) -> list[Outcome]:
        try:
            outcomes = detection.apply_hl7(batch)
        except AccessDenied:  # recorded by the service's decision
            outcomes = [Outcome("AR", NOT_PERMITTED, INTERNAL_ERROR)] * len(batch)
        except Exception:
            log.exception("HL7 listener: a batch of %s could not be applied", peer)
            outcomes = [Outcome("AE", NOT_COMMITTED, INTERNAL_ERROR)] * len(batch)
        self._count(applied=sum(o.ack == "AA" for o in outcomes), errors=sum(o.ack == "AE" for o in outcomes),
                    rejected=sum(o.ack == "AR" for o in outcomes))
        return outcomes
