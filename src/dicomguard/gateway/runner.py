"""Wiring and lifecycle of a running gateway: start, serve, shut down gracefully.

Shutdown on SIGTERM/SIGINT, in this order: stop accepting associations; let
associations in progress finish their stores (up to ``shutdown_grace_s``, then
abort them - an aborted C-STORE was never acknowledged, so the modality resends
it); stop the forwarder after its C-STORE in flight; release the upstream
association; write the final status. Everything acknowledged is in the queue.
"""

from __future__ import annotations

import hashlib
import logging
import signal
import ssl
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from cryptography import x509

from dicomguard.app.archive import Archive
from dicomguard.core.keyring import PURPOSE_INDEX
from dicomguard.dimse import quiet_reactor
from dicomguard.gateway.allowlist import AllowList
from dicomguard.gateway.config import QUEUE_DIR, GatewayConfig, GatewayError, GatewayFailed
from dicomguard.gateway.forwarder import Forwarder
from dicomguard.gateway.listener import Listener, QueueSink, StoreSink
from dicomguard.gateway.passthrough import PassThroughSink
from dicomguard.gateway.queue import DurableQueue, QueueLock, queue_key
from dicomguard.gateway.status import GatewayStats, write_status
from dicomguard.gateway.upstream import pynetdicom_settings
from dicomguard.pki.authority import ae_title_of
from dicomguard.pki.tls import client_context

log = logging.getLogger(__name__)

SPOOL_SUBDIR = "dicomguard-gateway-spool"
STATUS_INTERVAL_S = 1.0


def queue_folder(home: Path) -> Path:
    return home / QUEUE_DIR


MEMORY_FS = frozenset({"tmpfs", "ramfs"})


def filesystem_type(path: Path) -> str | None:
    """The type of the file system holding ``path`` (from /proc/mounts), or None if unknown."""
    try:
        mounts = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    best, kind = "", None
    resolved = str(path.resolve())
    for line in mounts:
        fields = line.split()
        if len(fields) >= 3 and (resolved == fields[1] or resolved.startswith(fields[1].rstrip("/") + "/")) and len(fields[1]) >= len(best):
            best, kind = fields[1], fields[2]
    return kind


def spool_folder(config: GatewayConfig, home: Path) -> Path | None:
    """Where received plaintext is spooled until encrypted; ``None``: in memory only.

    Secure by default: without ``spool_dir`` the spool is a private folder on a
    memory file system (``/dev/shm``) so plaintext never reaches a disk; where
    there is none, datasets are held in memory. A ``spool_dir`` on a persistent
    disk is honoured (it is faster for very large objects) but logged as a warning.
    The folder name is per home: purged at start, never shared with another gateway.
    """
    if config.spool == "memory":
        return None
    name = f"{SPOOL_SUBDIR}-{hashlib.sha256(str(home).encode()).hexdigest()[:12]}"
    if config.spool_dir is None:
        shm = Path("/dev/shm")
        return shm / name if shm.is_dir() and filesystem_type(shm) in MEMORY_FS else None
    if filesystem_type(config.spool_dir) not in MEMORY_FS:
        log.warning("the gateway spool %s is not on a memory file system: received plaintext reaches that disk until "
                    "it is encrypted (seconds); prefer a tmpfs or --spool memory", config.spool_dir)
    return config.spool_dir / name


def load_client_tls(config: GatewayConfig) -> ssl.SSLContext:
    """The mutual-TLS client context (PS3.15 B.1) from the operator's certificate, key and upstream CA."""
    try:
        mode = config.key_file.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise GatewayError(f"{config.key_file} is accessible by other users; chmod 600 it")
        cert_pem = config.cert_file.read_bytes()
        key_pem = config.key_file.read_bytes()
        ca_pem = config.ca_file.read_bytes()
    except OSError as exc:
        raise GatewayError(f"cannot read TLS files: {exc.strerror} ({exc.filename})") from exc
    try:
        bound = ae_title_of(x509.load_pem_x509_certificate(cert_pem))
        ctx = client_context(ca_pem, cert_pem, key_pem, check_hostname=True)
    except (ValueError, ssl.SSLError) as exc:
        raise GatewayError(f"unusable TLS material: {exc}") from exc
    if bound != config.ae_title:
        log.warning("the client certificate names %r, the gateway calls as %r: a dicomguard upstream will refuse it", bound, config.ae_title)
    return ctx


def run_gateway(
    archive: Archive, config: GatewayConfig, stop: threading.Event | None = None, on_ready: Callable[[str], None] | None = None
) -> None:
    """Run until ``stop`` is set or SIGTERM/SIGINT arrives (signals only when called from the main thread).

    ``on_ready`` receives a one-line description once the listener is bound.
    """
    stop = stop or threading.Event()
    folder = queue_folder(archive.home)
    operations = archive.operator.operations
    with QueueLock(folder), pynetdicom_settings():
        operations.application("dicomguard gateway", started=True)
        try:
            _serve(archive, config, folder, stop, on_ready)
        finally:
            operations.application("dicomguard gateway", started=False)


def _serve(archive: Archive, config: GatewayConfig, folder: Path, stop: threading.Event, on_ready: Callable[[str], None] | None) -> None:
    # The modalities' associations wait for work instead of polling, and every association (the upstream one too)
    # gets a pause handshake that holds: pynetdicom's can let a reactor take the answer to a C-STORE (ADR 0018).
    quiet_reactor.install()
    tls = load_client_tls(config)
    mode = "pass-through" if config.pass_through else "store-and-forward"
    stats = GatewayStats(
        mode=mode, ae_title=config.ae_title, listen=f"{config.listen[0]}:{config.listen[1]}",
        upstream=f"{config.upstream[0]}:{config.upstream[1]}", upstream_ae=config.upstream_ae,
    )
    forwarder: Forwarder | None = None
    passthrough: PassThroughSink | None = None
    sink: StoreSink
    if config.pass_through:
        sink = passthrough = PassThroughSink(config, tls, stats)
    else:
        queue = DurableQueue(folder, queue_key(archive.ctx.keyring.archive_key(PURPOSE_INDEX)), config.max_queue_bytes)
        sink = QueueSink(queue, stats)
        forwarder = Forwarder(queue, config, tls, stats)
    spool = spool_folder(config, archive.home)
    listener = Listener(config, AllowList(archive.ctx.engine), sink, stats, spool)
    try:
        listener.start()
    except OSError as exc:
        listener.close()
        raise GatewayError(f"cannot listen on {config.listen[0]}:{config.listen[1]}: {exc.strerror}") from exc
    signalled: list[int] = []
    restore = _install_signal_handlers(stop, signalled)
    crashed = False
    try:
        if forwarder is not None:
            forwarder.start()
        stats.set(state="idle")
        write_status(folder, stats)
        host, port = listener.address
        if on_ready is not None:
            on_ready(f"gateway {config.ae_title} ({mode}) listening on {host}:{port} (plaintext), forwarding to {stats.snapshot()['upstream']} over mutual TLS")
        next_status = time.monotonic() + STATUS_INTERVAL_S
        while not stop.wait(min(SIGNAL_POLL_S, STATUS_INTERVAL_S)):
            if signalled:
                log.warning("received %s: shutting down", signal.Signals(signalled[0]).name)
                stop.set()
                break
            if time.monotonic() < next_status:
                continue
            next_status += STATUS_INTERVAL_S
            write_status(folder, stats)
            if forwarder is not None and not forwarder.is_alive():
                crashed = True  # accepting objects nobody forwards helps no one: stop, let the supervisor restart us
                break
    finally:
        listener.stop_accepting()
        stats.set(state="stopping")
        write_status(folder, stats)
        if not listener.wait_idle(config.shutdown_grace_s):
            log.warning("aborting associations still open after %.0f s", config.shutdown_grace_s)
        listener.close()
        if forwarder is not None:
            forwarder.stop()
            forwarder.join(timeout=config.upstream_timeout_s + 5)
        if passthrough is not None:
            passthrough.close()
        stats.set(state="failed" if crashed else "stopped", next_retry_at=None)
        write_status(folder, stats)
        restore()
    if crashed:
        raise GatewayFailed("the forwarder stopped unexpectedly; the queue is intact, restart the gateway")


SIGNAL_POLL_S = 0.2
"""How often the main loop looks at the flag the signal handlers set."""


def _install_signal_handlers(stop: threading.Event, signalled: list[int]) -> Callable[[], None]:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: FrameType | None) -> None:
        # No lock here (no logging, no Event.set): the main thread may be interrupted inside ``stop.wait`` holding
        # the Event's lock. The main loop notices the flag within a poll and sets ``stop`` itself.
        signalled.append(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for s, h in previous.items():
            signal.signal(s, h)

    return restore

