"""``dicomguard serve``: DIMSE over mutual TLS and DICOMweb over HTTPS, together, until SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import typer

from dicomguard.cli.common import console, fail, open_archive

log = logging.getLogger(__name__)
CHECKPOINT_INTERVAL_S = 60.0
POLL_S = 0.2
"""How often the main loop looks at the stop and reload flags the signal handlers set."""


def serve(
    dimse_port: int = typer.Option(None, "--dimse-port", help="DIMSE (TLS) port; default from config (11112)."),
    https_port: int = typer.Option(None, "--https-port", help="DICOMweb (HTTPS) port; default from config (8443)."),
    host: str = typer.Option(None, "--host", help="Address to bind; default from config (127.0.0.1)."),
    workers: int = typer.Option(1, "--workers", min=1, max=64,
                                help="Worker processes sharing the listening sockets (1: this process serves)."),
    worker: str = typer.Option(None, "--worker", hidden=True, help="Internal: run as a worker of the supervisor."),
) -> None:
    """Run the archive's network services. Stops gracefully on SIGTERM or Ctrl-C; SIGHUP reloads the policy files.

    With ``--workers N`` (N > 1) this process is a supervisor that binds both
    ports once and runs N worker processes on them (``serve_supervisor``); with
    the default of 1 it serves itself, in this process, as it always did.
    """
    if worker is not None:
        from dicomguard.cli.serve_supervisor import WorkerChannel

        _serve(None, None, None, WorkerChannel.parse(worker))
        return
    if workers > 1:
        from dicomguard.cli.common import fail
        from dicomguard.cli.serve_supervisor import supervise
        from dicomguard.config import load_settings, resolve_home
        from dicomguard.errors import ConfigurationError

        try:
            net = load_settings(resolve_home()).network
        except ConfigurationError as exc:
            fail(str(exc))
        raise typer.Exit(supervise(workers, host or net.host, net.dimse_port if dimse_port is None else dimse_port,
                                   net.https_port if https_port is None else https_port))
    _serve(dimse_port, https_port, host)


def _serve(dimse_port: int | None, https_port: int | None, host: str | None, channel=None) -> None:  # type: ignore[no-untyped-def]
    """Serve until SIGTERM/SIGINT: in this process, or as worker ``channel.slot`` on the supervisor's sockets."""
    import socket

    from dicomguard._allocator import keep_large_buffers
    from dicomguard.audit.forwarder import start_forwarders
    from dicomguard.core.access import Principal
    from dicomguard.dimse.server import DimseService
    from dicomguard.web.server import serve_https

    # The signal handlers only set flags: a handler runs on the main thread between two bytecodes, and a
    # threading.Event.set() there deadlocks when the main thread was interrupted while holding that Event's
    # lock (inside Event.wait). The main loop polls the flags; ``stop`` tells the other threads, set by the loop.
    stop = threading.Event()
    requested = {"stop": False, "reload": False}

    def request_stop(*_: object) -> None:
        requested["stop"] = True

    def request_reload(*_: object) -> None:
        requested["reload"] = True

    keep_large_buffers()  # large objects reuse memory instead of faulting it in again (``_allocator``)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, request_stop)
    signal.signal(signal.SIGHUP, request_reload)
    dimse_sock = https_sock = None
    if channel is not None:
        dimse_sock, https_sock = socket.socket(fileno=channel.dimse_fd), socket.socket(fileno=channel.https_fd)
        host = dimse_sock.getsockname()[0]
        dimse_port, https_port = dimse_sock.getsockname()[1], https_sock.getsockname()[1]
        channel.watch_lifeline(request_stop)
    with open_archive() as archive:
        # The process itself, started by the operator, records its start and stop and reloads the policies.
        serve_services = archive.services(Principal.operator("serve"))
        forwarders = start_forwarders(archive.ctx)  # audit trail to the [[audit.syslog]] collectors
        net = archive.settings.network
        host = host or net.host
        dimse = DimseService(archive, host, dimse_port if dimse_port is not None else net.dimse_port, dimse_sock)
        try:
            dimse.start()
        except OSError as exc:
            fail(f"cannot listen for DIMSE on {host}:{dimse.port}: {exc.strerror}")
        ready = threading.Event()
        web_stop = threading.Event()
        web = threading.Thread(
            target=serve_https, args=(archive, host, https_port if https_port is not None else net.https_port),
            kwargs={"ready": ready, "stop": web_stop, "listening_socket": https_sock}, name="https", daemon=True,
        )
        web.start()
        if not ready.wait(30) or not web.is_alive():
            dimse.stop(grace_s=1)
            fail("the HTTPS listener did not start (port in use?)")
        ae = archive.settings.archive.ae_title
        if channel is not None:
            ae = f"{ae} worker {channel.slot} (pid {os.getpid()})"
        console.print(f"dicomguard {ae}: DIMSE-TLS on {host}:{dimse.port}, DICOMweb on https://{host}:{https_port or net.https_port}/dicomweb")
        serve_services.operations.application("dicomguard serve", started=True)  # each worker records its own
        from dicomguard.app.backup.schedule import BackupScheduler
        from dicomguard.app.detection.engine import DetectionEngine
        from dicomguard.app.governance import ReviewScheduler
        from dicomguard.app.ingest_recovery import IngestRecovery
        from dicomguard.app.transfers import TransferWorker
        scheduler = BackupScheduler(serve_services)
        reviews = ReviewScheduler(serve_services)
        detection = DetectionEngine(archive.services(Principal.operator("detector")))
        transfers = TransferWorker(serve_services)
        recovery = IngestRecovery(serve_services)
        if channel is None or channel.slot == 0:  # one scheduler, detector and transfer worker per archive host
            scheduler.start(stop)
            transfers.start(stop)
            reviews.start(stop)
            recovery.start(stop)
            if detection.start(stop):
                console.print("access-anomaly detection: scoring every access in the audit trail (once context is imported)")
        if channel is None:
            print(f"READY dimse={dimse.port} https={https_port or net.https_port}", flush=True)
        else:
            channel.report(f"READY {channel.slot} {os.getpid()}")
        next_checkpoint = time.monotonic() + CHECKPOINT_INTERVAL_S
        while not requested["stop"]:
            time.sleep(min(POLL_S, max(0.0, next_checkpoint - time.monotonic())))  # lock-free, interrupted by signals
            if requested["stop"]:
                break
            if requested["reload"]:
                requested["reload"] = False
                reloaded = _reload_policies(serve_services)
                if channel is not None:
                    channel.report(f"RELOADED {channel.slot} {os.getpid()} {'ok' if reloaded else 'refused'}")
            if time.monotonic() >= next_checkpoint:
                next_checkpoint += CHECKPOINT_INTERVAL_S
                try:
                    archive.ledger.latest_checkpoint()  # a signed checkpoint on a timer, for witnesses
                except Exception:  # keep serving; the next tick retries
                    log.exception("periodic checkpoint failed")
        stop.set()  # the backup scheduler and the detector end their loops
        console.print("stopping: refusing new associations, finishing in-flight operations ...")
        dimse.stop(grace_s=10)
        web_stop.set()
        web.join(timeout=15)
        scheduler.join(timeout=30)
        detection.join(timeout=10)
        transfers.join(timeout=30)
        reviews.join(timeout=30)
        recovery.join(timeout=30)
        serve_services.operations.application("dicomguard serve", started=False)
        archive.ledger.latest_checkpoint()
        for forwarder in forwarders:
            forwarder.stop(drain_s=5.0)  # what is not sent in time waits in the spool for the next start
        console.print("stopped")


def _reload_policies(services) -> bool:  # type: ignore[no-untyped-def]
    """SIGHUP: load the policy files again. A set that does not validate is refused and the running one stays.

    Either way the attempt is recorded (a Security Configuration alert naming the
    policy set by its SHA-256, or the validation error).
    """
    from dicomguard.policy.engine import PolicyError

    try:
        engine = services.policies.reload()
    except PolicyError as exc:
        log.error("policy reload refused, the running policies stay: %s", exc)
        return False
    console.print(f"policies reloaded: {len(engine.policies)} policies from {engine.files} files, sha256 {engine.fingerprint}",
                  highlight=False)
    return True


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
