"""The DIMSE listener: TLS with client certificates, device binding, limits (PS3.15 B.1, PS3.8).

Security properties:

* TLS 1.2+ with a client certificate from the trusted CA is required; the TLS
  handshake runs in the connection's own thread with a deadline, so a slow or
  plaintext client cannot stall the listener (pynetdicom would handshake in the
  accept loop).
* The calling AE title must be the one the certificate is bound to, and the
  certificate registered and unrevoked (checked at association and before every
  operation; a revocation also aborts running associations within seconds).
* Refusals (plaintext, bad handshake, unknown or mismatched device) are recorded
  as Node Authentication security alerts through the core.
* pynetdicom's identifier logging is off (``app/bootstrap.py``): no PHI in logs.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import threading

from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer

from dicomguard.app.archive import Archive
from dicomguard.core.access import Principal, PrincipalKind
from dicomguard.core.network_blocks import is_blocked
from dicomguard.dimse import part10, pdu_reads, quiet_reactor, whole_messages
from dicomguard.dimse.contexts import AcceptorContexts, add_supported_contexts
from dicomguard.dimse.query import handle_find
from dicomguard.dimse.retrieve import handle_get, handle_move
from dicomguard.dimse.session import Sessions
from dicomguard.dimse.sockets import disable_nagle
from dicomguard.dimse.store import handle_store
from dicomguard.pki.devices import DeviceRegistry, PeerRefused
from dicomguard.pki.store import load_tls_material
from dicomguard.pki.tls import client_context, server_context

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 10.0
REVOCATION_SWEEP_S = 2.0


def _record_refusal(archive: Archive, who: str, address: str, reason: str) -> None:
    """The unverified peer, named by what it claimed, as a refused connection (Node Authentication alert)."""
    principal = Principal(PrincipalKind.DEVICE, who[:64] or "unknown", frozenset(), address)
    try:
        archive.services(principal).operations.connection_refused(reason)
    except Exception:  # the refusal itself must not crash the listener
        log.exception("could not record a refused association")


class GuardedAssociationServer(ThreadedAssociationServer):
    """Accepts TCP in the listener thread, does the TLS handshake in the connection thread."""

    on_handshake_failure = staticmethod(lambda address, reason: None)

    def get_request(self):  # type: ignore[no-untyped-def]
        request, address = self.socket.accept()  # no TLS here: never block the accept loop on a peer
        disable_nagle(request)  # C-GET sub-operations and C-FIND responses must not wait for delayed ACKs
        return request, address

    def process_request_thread(self, request, client_address):  # type: ignore[no-untyped-def]
        ctx = self.ssl_context
        if ctx is not None:
            try:
                request.settimeout(HANDSHAKE_TIMEOUT_S)
                request = ctx.wrap_socket(request, server_side=True)
                request.settimeout(None)
            except (ssl.SSLError, OSError) as exc:
                reason = "plaintext or failed TLS handshake" + (f" ({exc.reason})" if isinstance(exc, ssl.SSLError) and exc.reason else "")
                self.on_handshake_failure(client_address[0], reason)
                try:
                    request.close()
                except OSError:
                    pass
                return
        super().process_request_thread(request, client_address)


class InheritedSocketServer(GuardedAssociationServer):
    """:class:`GuardedAssociationServer` on a listening socket bound by someone else (``serve --workers N``).

    pynetdicom's server binds its own socket from an address; here the supervisor
    has bound and ``listen()``-ed it once and every worker process accepts on its
    inherited copy. ``listening_socket`` is set on a per-server subclass
    (:meth:`DimseService.start`). The socket is non-blocking: several processes
    wake up for one connection and all but one find nothing to accept, which
    socketserver treats as "no request" (``OSError`` from :meth:`get_request`)
    instead of blocking the accept loop (and ``shutdown()``) until the next one.
    """

    listening_socket: socket.socket

    def server_bind(self) -> None:
        self.socket.close()  # the fresh unbound socket TCPServer made
        self.socket = self.listening_socket
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()[:2]

    def server_activate(self) -> None:
        """Already listening (the supervisor called ``listen()``)."""


class DimseService:
    """The DIMSE SCP of the archive: start/stop it alongside DICOMweb in ``dicomguard serve``."""

    def __init__(self, archive: Archive, host: str, port: int, listening_socket: socket.socket | None = None) -> None:
        self.archive = archive
        self.listening_socket = listening_socket  # inherited from the ``serve --workers`` supervisor, else bind
        self.host = host
        self.port = port
        self.registry = DeviceRegistry(archive.ctx.engine)
        self.sessions = Sessions(archive, self.registry)
        self._material = load_tls_material(archive.home, archive.settings, archive.ctx.keyring)
        self._server: GuardedAssociationServer | None = None
        self._stop = threading.Event()
        net = archive.settings.network
        self.ae = AE(ae_title=archive.settings.archive.ae_title)
        self.ae.maximum_pdu_size = net.max_pdu
        self.ae.maximum_associations = net.max_associations
        self.ae.network_timeout = net.idle_timeout_s
        self.ae.acse_timeout = 30
        self.ae.dimse_timeout = net.idle_timeout_s
        self.ae.require_called_aet = True
        add_supported_contexts(self.ae)
        quiet_reactor.install()  # accepted associations wait for work instead of polling (ADR 0018)
        whole_messages.install()  # messages leave in large writes, stored data sets as stored (ADR 0020)
        part10.install()  # C-STORE data sets arrive as their Part 10 files (ADR 0020)
        pdu_reads.install()  # PDUs are read in whole TLS records (ADR 0020)

    # -- association control -------------------------------------------------------

    def _on_requested(self, event) -> None:  # type: ignore[no-untyped-def]
        assoc = event.assoc
        address = str(assoc.requestor.address)
        calling = assoc.requestor.primitive.calling_ae_title.strip()
        try:
            if is_blocked(self.archive.ctx.engine, address):
                raise PeerRefused("connections from this network are refused (incident containment)")
            sock = assoc.dul.socket.socket
            der = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
            device = self.registry.authenticate(der, calling)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, PeerRefused) else f"device check failed ({type(exc).__name__})"
            if not isinstance(exc, PeerRefused):
                log.exception("device authentication error")
            log.warning("association from %s (%s) refused: %s", calling, address, reason)
            _record_refusal(self.archive, calling, address, reason)
            assoc.acse.send_reject(0x01, 0x01, 0x03)  # rejected-permanent, calling AE title not recognised
            evt.trigger(assoc, evt.EVT_REJECTED, {})
            assoc.kill()
            return
        self.sessions.open(assoc, device, address)
        part10.receive_as_part10(assoc)

    def _on_closed(self, event) -> None:  # type: ignore[no-untyped-def]
        self.sessions.close(event.assoc)

    def _tls_for_destination(self) -> ssl.SSLContext:
        m = self._material
        return client_context(m.client_ca_pem, m.server_chain_pem, m.server_key_pem, check_hostname=False)

    def _handlers(self) -> list[tuple[object, object]]:
        ae_title = self.archive.settings.archive.ae_title
        max_find = self.archive.settings.limits.max_find_results
        return [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_RELEASED, self._on_closed),
            (evt.EVT_ABORTED, self._on_closed),
            (evt.EVT_CONN_CLOSE, self._on_closed),
            (evt.EVT_C_ECHO, lambda e: 0x0000 if self.sessions.get(e.assoc) else 0x0124),
            (evt.EVT_C_STORE, lambda e: handle_store(e, self.sessions)),
            (evt.EVT_C_FIND, lambda e: handle_find(e, self.sessions, ae_title, max_find)),
            (evt.EVT_C_GET, lambda e: handle_get(e, self.sessions)),
            (evt.EVT_C_MOVE, lambda e: handle_move(e, self.sessions, self.registry, self._tls_for_destination)),
        ]

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        m = self._material
        ctx = server_context(m.server_chain_pem, m.server_key_pem, m.client_ca_pem)
        server_class: type[GuardedAssociationServer] = GuardedAssociationServer
        if self.listening_socket is not None:
            server_class = type("InheritedSocketServer", (InheritedSocketServer,), {"listening_socket": self.listening_socket})
        server = self.ae.make_server(
            (self.host, self.port), ae_title=self.ae.ae_title, ssl_context=ctx, evt_handlers=self._handlers(),
            server_class=server_class,
        )
        server.on_handshake_failure = lambda address, reason: (
            log.warning("connection from %s refused: %s", address, reason),
            _record_refusal(self.archive, "", address, reason),
        )
        server.contexts = AcceptorContexts(server.contexts)
        self.port = server.server_address[1]
        self._server = server
        self.ae._servers.append(server)  # so that AE.shutdown() and server.shutdown() find it
        threading.Thread(target=server.serve_forever, name="dimse-listener", daemon=True).start()
        threading.Thread(target=self._sweep_revoked, name="dimse-revocation", daemon=True).start()
        log.info("DIMSE listening on %s:%d (TLS, client certificates required)", self.host, self.port)

    def _sweep_revoked(self) -> None:
        while not self._stop.wait(REVOCATION_SWEEP_S):
            revoked = set(self.sessions.revoked_associations())
            for assoc in list(self.ae.active_associations):
                if id(assoc) in revoked:
                    log.warning("aborting association of a revoked device")
                    assoc.abort()

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop accepting; let running associations finish their current operation, then close."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        for assoc in list(self.ae.active_associations):
            assoc.join(timeout=grace_s)
            if assoc.is_alive():
                assoc.abort()


def _ephemeral_low() -> int:
    """First port of the kernel's ephemeral range (Linux ``net.ipv4.ip_local_port_range``; 32768 if unreadable)."""
    try:
        return int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing on ``host`` is bound to, chosen below the ephemeral range (for tests and benchmarks).

    Outgoing connections take their local ports from the ephemeral range, so a port
    picked there (``bind(0)``) can be taken by any client between the check and the
    listener's bind, or while a listener restarts on the same port. Below that range
    only another listener can take it.
    """
    low = _ephemeral_low()
    if low > 11024:
        for _ in range(100):
            port = random.randint(10000, low - 1)
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
