"""The plaintext DIMSE listener for legacy modalities (Storage SCP and Verification SCP).

Security properties:

* **One interface.** It binds the single configured address; wildcard
  addresses are refused (:func:`.config.check_listen_host`).
* **Default deny, fail closed.** An A-ASSOCIATE-RQ (PS3.8 7.1.1) is accepted
  only when its calling AE title *and* the TCP peer address form an
  allow-listed pair; anyone else receives an A-ASSOCIATE-RJ, rejected
  permanent, "calling AE title not recognized" (PS3.8 9.3.4, Table 9-21),
  the same answer whether the title or the address was wrong. If the
  allow-list cannot be read, the request is rejected (transient). pynetdicom
  accepts any calling AE by default and keeps going when a handler raises, so
  the decision is taken in an ``EVT_REQUESTED`` handler that rejects
  explicitly, recorded on the association, and checked again on
  ``EVT_ACCEPTED`` and before every operation (a ``deny`` takes effect within
  a running association).
* **Success means durable.** A C-STORE is answered Success (PS3.4 B.2.3)
  only after the object is in the encrypted queue (fsync'd) or, in
  pass-through mode, confirmed by the upstream. Full queue, full disk or any
  error: 0xA700 "Refused: Out of Resources", so the modality keeps its copy
  and retries.
* **No PHI in logs.** Refusals are logged with AE title, address and a
  reason; pynetdicom's identifier logging is switched off.

Receiving: with ``spool="disk"`` (fast; pynetdicom's
``STORE_RECV_CHUNKED_DATASET``) the dataset is streamed to a plaintext spool
file in a private (0700) folder while it arrives, encrypted into the queue as
soon as it is complete and unlinked at once; a crash inside that window leaves
a spool file, which the next start deletes. The folder is on the memory file
system (``/dev/shm``) unless the operator names another
(:func:`dicomguard.gateway.runner.spool_folder`), so by default plaintext never
reaches a disk. With ``spool="memory"`` the dataset is held in memory only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from dicomguard.dimse.contexts import AcceptorContexts
from dicomguard.gateway.allowlist import AllowList
from dicomguard.gateway.config import GatewayConfig, normalize_ip
from dicomguard.gateway.queue import DurableQueue, Incoming, QueueFull
from dicomguard.gateway.status import GatewayStats

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # PS3.4 Table B.2-1: Refused, out of resources (the SCU retries)
NOT_AUTHORIZED = 0x0124  # PS3.7 Annex C (general statuses): Refused, not authorized
_APPROVED = "_dicomguard_gateway_peer"
REJECT_LINGER_S = 5.0


class StoreSink(Protocol):
    """Where an accepted object goes: the queue, or straight upstream (pass-through)."""

    def store(self, assoc: Association, source: Path | bytes, incoming: Incoming) -> int: ...

    def closed(self, assoc: Association) -> None: ...


class QueueSink:
    """Store-and-forward: Success once the object is durably queued."""

    def __init__(self, queue: DurableQueue, stats: GatewayStats) -> None:
        self._queue = queue
        self._stats = stats

    def store(self, assoc: Association, source: Path | bytes, incoming: Incoming) -> int:
        try:
            if isinstance(source, Path):
                self._queue.put_file(source, incoming)
            else:
                self._queue.put_bytes(source, incoming)
        except QueueFull:
            log.warning("refused a C-STORE from %s: the queue is full", incoming.calling_ae)
            return OUT_OF_RESOURCES
        except OSError as exc:
            log.error("refused a C-STORE from %s: cannot write the queue (%s)", incoming.calling_ae, os.strerror(exc.errno or 0))
            return OUT_OF_RESOURCES
        self._stats.incr("received")
        return SUCCESS

    def closed(self, assoc: Association) -> None:
        return None


def purge_spool(spool: Path) -> int:
    """Delete plaintext spool files left by a crash; returns how many. Creates the folder ``0700``."""
    spool.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(spool, 0o700)
    removed = 0
    for entry in os.scandir(spool):
        if entry.is_file(follow_symlinks=False):
            os.unlink(entry.path)
            removed += 1
    return removed


class Listener:
    """The plaintext Storage/Verification SCP of the gateway."""

    def __init__(self, config: GatewayConfig, allowlist: AllowList, sink: StoreSink, stats: GatewayStats, spool: Path | None) -> None:
        self._config = config
        self._allow = allowlist
        self._sink = sink
        self._stats = stats
        self._spool = spool
        self._server: ThreadedAssociationServer | None = None
        self._saved: tuple[bool, bool, bool, str | None] | None = None
        ae = AE(config.ae_title)
        ae.maximum_pdu_size = config.max_pdu
        ae.maximum_associations = config.max_associations
        ae.require_called_aet = True
        ae.acse_timeout = 30.0
        ae.dimse_timeout = config.idle_timeout_s
        ae.network_timeout = config.idle_timeout_s
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES[:2])
        self._ae = ae

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Bind and serve in background threads.

        Sets pynetdicom's receive mode and, for the disk spool, tempfile's
        folder (pynetdicom creates its chunk files with ``NamedTemporaryFile()``):
        process-wide settings, restored by :meth:`close`.
        """
        self._saved = (
            _config.LOG_REQUEST_IDENTIFIERS, _config.LOG_RESPONSE_IDENTIFIERS, _config.STORE_RECV_CHUNKED_DATASET, tempfile.tempdir
        )
        _config.LOG_REQUEST_IDENTIFIERS = False
        _config.LOG_RESPONSE_IDENTIFIERS = False
        _config.STORE_RECV_CHUNKED_DATASET = self._spool is not None
        if self._spool is not None:
            purge_spool(self._spool)
            tempfile.tempdir = str(self._spool)
        handlers: list[tuple[Any, Callable[..., Any]]] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_closed),
            (evt.EVT_ABORTED, self._on_closed),
        ]
        self._server = self._ae.start_server(self._config.listen, block=False, evt_handlers=handlers)
        self._server.contexts = AcceptorContexts(self._server.contexts)  # no deepcopy per association

    def stop_accepting(self) -> None:
        """Close the listening socket; established associations go on."""
        if self._server is not None:
            server, self._server = self._server, None
            server.shutdown()

    def active(self) -> int:
        """Established associations (a connection that never completed its A-ASSOCIATE holds no store)."""
        return sum(1 for a in self._ae.active_associations if a.is_acceptor and a.is_established)

    def wait_idle(self, timeout: float) -> bool:
        """Wait for in-flight associations to end (the modality releases); True if none is left."""
        deadline = time.monotonic() + timeout
        while self.active() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.active() == 0

    def close(self) -> None:
        """Abort what is left, restore process-wide settings, and remove the spool folder (and any file left in it)."""
        self.stop_accepting()
        for assoc in self._ae.active_associations:
            assoc.abort()
        if self._saved is not None:
            (_config.LOG_REQUEST_IDENTIFIERS, _config.LOG_RESPONSE_IDENTIFIERS, _config.STORE_RECV_CHUNKED_DATASET, tempfile.tempdir) = self._saved
            self._saved = None
        if self._spool is not None:
            purge_spool(self._spool)  # nothing received is left in plaintext, and the folder itself goes
            with contextlib.suppress(OSError):
                self._spool.rmdir()

    # -- handlers -----------------------------------------------------------------------

    def _peer(self, assoc: Association) -> tuple[str, str]:
        ae = str(assoc.requestor.primitive.calling_ae_title if assoc.requestor.primitive else assoc.requestor.ae_title)
        return ae.strip(), str(assoc.requestor.address)

    def _on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        ae, ip = self._peer(assoc)
        try:
            allowed = self._allow.is_allowed(ae, ip)
        except Exception as exc:  # fail closed: the database is unreachable or broken
            log.error("association from %r at %s rejected: allow-list unavailable (%s)", ae, ip, type(exc).__name__)
            self._reject(assoc, result=0x02, diagnostic=0x01)
            return
        if not allowed:
            log.warning("association from calling AE %r at %s rejected: not allow-listed", ae, ip)
            self._reject(assoc, result=0x01, diagnostic=0x03)
            return
        setattr(assoc, _APPROVED, (ae, normalize_ip(ip)))

    def _reject(self, assoc: Association, result: int, diagnostic: int) -> None:
        self._stats.incr("refused_associations")
        # A refused peer that keeps the connection open holds a thread only this long (PS3.8 9.1.5, ARTIM).
        assoc.dul.artim_timer.timeout = REJECT_LINGER_S
        assoc.acse.send_reject(result, 0x01, diagnostic)
        # Wait until the A-ASSOCIATE-RJ has been sent and the peer closed (or ARTIM expired):
        # without this the socket is closed first and the peer only sees a dropped connection.
        assoc.kill()

    def _approved(self, assoc: Association) -> bool:
        return getattr(assoc, _APPROVED, None) is not None

    def _on_accepted(self, event: evt.Event) -> None:
        if not self._approved(event.assoc):  # only reachable if _on_requested itself failed
            log.error("aborting an association that was accepted without an allow-list decision")
            event.assoc.abort()

    def _still_allowed(self, assoc: Association) -> bool | None:
        """Re-check before each operation; None if the allow-list cannot be read."""
        peer = getattr(assoc, _APPROVED, None)
        if peer is None:
            return False
        try:
            return self._allow.is_allowed(*peer)
        except Exception as exc:
            log.error("allow-list unavailable (%s)", type(exc).__name__)
            return None

    def _on_echo(self, event: evt.Event) -> int:
        allowed = self._still_allowed(event.assoc)
        return SUCCESS if allowed else (OUT_OF_RESOURCES if allowed is None else NOT_AUTHORIZED)

    def _on_store(self, event: evt.Event) -> int:
        assoc = event.assoc
        spooled: Path | None = None
        with contextlib.suppress(AttributeError):
            if event.dataset_path is not None:  # spool="disk": pynetdicom wrote the dataset to a file
                spooled = Path(event.dataset_path)
        try:
            allowed = self._still_allowed(assoc)
            if not allowed:
                self._stats.incr("refused_stores")
                if allowed is False:
                    ae, ip = getattr(assoc, _APPROVED, ("?", "?"))
                    log.warning("C-STORE from %r at %s refused: no longer allow-listed", ae, ip)
                    return NOT_AUTHORIZED
                return OUT_OF_RESOURCES
            ae, ip = getattr(assoc, _APPROVED)
            req = event.request
            incoming = Incoming(
                sop_class_uid=str(req.AffectedSOPClassUID),
                sop_instance_uid=str(req.AffectedSOPInstanceUID),
                transfer_syntax_uid=str(event.context.transfer_syntax),
                calling_ae=ae,
                peer_ip=ip,
            )
            source: Path | bytes
            if spooled is not None:
                size = spooled.stat().st_size
                source = spooled
            else:
                source = event.encoded_dataset(include_meta=True)
                size = len(source)
            if size > self._config.max_object_bytes:
                self._stats.incr("refused_stores")
                log.warning("C-STORE from %r refused: object larger than the limit (%d bytes)", ae, size)
                return OUT_OF_RESOURCES
            return self._sink.store(assoc, source, incoming)
        except Exception as exc:  # never Success for an object that is not safe
            log.error("C-STORE failed in the gateway (%s)", type(exc).__name__)
            return OUT_OF_RESOURCES
        finally:
            if spooled is not None:
                with contextlib.suppress(FileNotFoundError):
                    spooled.unlink()  # pynetdicom unlinks too, later; shorten the plaintext window

    def _on_closed(self, event: evt.Event) -> None:
        with contextlib.suppress(Exception):
            self._sink.closed(event.assoc)
