"""A syslog-over-TLS receiver (RFC 5425) for audit messages of other systems (``dicomguard audit listen``).

Mutual TLS with the archive's server certificate; senders must present a
client certificate issued by the archive CA (or the configured client CA), not
one of a revoked device. Each
frame's RFC 5424 message must carry a PS3.15 XML AuditMessage; valid ones are
stored and ledgered with origin ``syslog:<certificate CN>@<address>``
(:mod:`dicomguard.audit.imports`), invalid ones are counted and logged (without
their content) and the connection goes on. A framing error closes the
connection (RFC 5425 4.3.1: the stream cannot be resynchronized).
"""

from __future__ import annotations

import hashlib
import logging
import socket
import ssl
import threading
from dataclasses import dataclass

from sqlalchemy import select

from dicomguard.audit.service import AuditService
from dicomguard.audit.syslog import FrameReader, SyslogError, parse_message
from dicomguard.index.db import read_session
from dicomguard.index.models import Device
from dicomguard.pki.tls import server_context

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 600.0


@dataclass
class ListenerStats:
    connections: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0


def _peer_name(sock: ssl.SSLSocket, address: str) -> str:
    cert = sock.getpeercert() or {}
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return f"{value}@{address}"
    return address


class AuditListener:
    """Receives audit messages over syslog-TLS and imports them through ``audit`` (the service of whoever runs it)."""

    def __init__(self, audit: AuditService, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        ctx = audit.ctx
        if tls is None:
            from dicomguard.pki.store import load_tls_material

            m = load_tls_material(ctx.home, ctx.settings, ctx.keyring)
            tls = server_context(m.server_chain_pem, m.server_key_pem, m.client_ca_pem)
        self.tls = tls
        self.host = host
        self.port = port
        self.audit = audit
        self.engine = ctx.engine
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

    def _revoked(self, sock: ssl.SSLSocket) -> bool:
        """A certificate registered to a device that was revoked may not send audit messages either."""
        der = sock.getpeercert(binary_form=True)
        if not der:
            return True
        digest = hashlib.sha256(der).hexdigest()
        with read_session(self.engine) as s:
            revoked = s.scalar(select(Device.revoked_at).where(Device.cert_sha256 == digest))
        return revoked is not None

    def _serve(self, raw: socket.socket, address: str) -> None:
        try:
            raw.settimeout(HANDSHAKE_TIMEOUT_S)
            sock = self.tls.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.warning("audit listener: TLS handshake with %s failed (%s)", address, getattr(exc, "reason", None) or type(exc).__name__)
            raw.close()
            return
        peer = _peer_name(sock, address)
        if self._revoked(sock):
            log.warning("audit listener: %s presented the certificate of a revoked device; closed", peer)
            sock.close()
            return
        with self._lock:
            self.stats.connections += 1
        reader = FrameReader()
        sock.settimeout(IDLE_TIMEOUT_S)
        try:
            while not self._stop.is_set():
                data = sock.recv(256 * 1024)
                if not data:
                    return
                items = []
                for n, frame_bytes in enumerate(reader.feed(data)):
                    try:
                        items.append((f"{peer}#{n}", parse_message(frame_bytes).payload().strip()))
                    except SyslogError as exc:
                        items.append((f"{peer}#{n}", b"!" + str(exc).encode()))
                if items:
                    result = self.audit.import_messages(items, f"syslog:{peer}"[:128])
                    with self._lock:
                        self.stats.stored += result.stored
                        self.stats.duplicates += result.duplicates
                        self.stats.rejected += len(result.rejected)
                    for _, reason in result.rejected:
                        log.warning("audit listener: message from %s rejected: %s", peer, reason)
        except SyslogError as exc:
            log.warning("audit listener: closing %s: %s", peer, exc)
        except (OSError, ssl.SSLError):
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass
