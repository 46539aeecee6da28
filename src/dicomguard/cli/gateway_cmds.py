"""``dicomguard gateway``: run the legacy-modality gateway and manage its allow-list and queue.

``dicomguard gateway --upstream HOST:PORT --upstream-ae AE --cert ... --key ... --ca ...``
runs the gateway; ``allow``, ``deny``, ``list``, ``status`` and ``requeue`` are
subcommands (see :mod:`dicomguard.gateway`).
"""

from __future__ import annotations

from pathlib import Path

import typer

from dicomguard.cli.common import EXIT_FAILED, console, fail, open_archive, out, print_json
from dicomguard.gateway.config import DEFAULT_GATEWAY_AE, DEFAULT_LISTEN

gateway_app = typer.Typer(
    help="Legacy-modality gateway: plaintext DIMSE from allow-listed modalities in, mutual TLS to an upstream archive out.",
)


@gateway_app.callback(invoke_without_command=True)
def gateway(
    ctx: typer.Context,
    listen: str = typer.Option(DEFAULT_LISTEN, "--listen", help="HOST:PORT of the one interface modalities send to (no wildcard)."),
    upstream: str = typer.Option(None, "--upstream", help="HOST:PORT of the upstream archive's DICOM TLS port."),
    upstream_ae: str = typer.Option(None, "--upstream-ae", help="Called AE title of the upstream archive."),
    cert: Path = typer.Option(None, "--cert", help="The gateway's client certificate (PEM), bound to --ae."),
    key: Path = typer.Option(None, "--key", help="Its private key (PEM, unencrypted, mode 600)."),
    ca: Path = typer.Option(None, "--ca", help="CA certificate(s) that sign the upstream's server certificate (PEM)."),
    ae: str = typer.Option(DEFAULT_GATEWAY_AE, "--ae", help="The gateway's AE title (called by modalities, calling upstream)."),
    upstream_name: str = typer.Option(None, "--upstream-name", help="Name to verify in the upstream certificate (default: the upstream host)."),
    pass_through: bool = typer.Option(False, "--pass-through", help="Forward each C-STORE synchronously; keep no local queue."),
    spool: str = typer.Option("disk", "--spool", help="Receive into a private spool file ('disk': streamed, on /dev/shm by default) or memory only ('memory')."),
    spool_dir: Path = typer.Option(None, "--spool-dir", help="Parent folder of the spool (default /dev/shm, a memory file system; a folder on a disk gets plaintext on that disk)."),
    initial_backoff: float = typer.Option(0.5, "--initial-backoff", help="First retry delay in seconds."),
    max_backoff: float = typer.Option(60.0, "--max-backoff", help="Longest retry delay in seconds."),
    dead_letter_after: int = typer.Option(3, "--dead-letter-after", help="Permanent refusals before an object becomes a dead letter."),
    upstream_timeout: float = typer.Option(60.0, "--upstream-timeout", help="Seconds to wait for the upstream (connect, responses)."),
    max_queue_gb: float = typer.Option(100.0, "--max-queue-gb", help="Refuse new objects (0xA700) when the queue holds this much."),
    shutdown_grace: float = typer.Option(30.0, "--shutdown-grace", help="Seconds open associations get to finish on SIGTERM."),
) -> None:
    """Run the gateway (without a subcommand). Stops gracefully on SIGTERM or Ctrl-C."""
    if ctx.invoked_subcommand is not None:
        return
    missing = [n for n, v in (("--upstream", upstream), ("--upstream-ae", upstream_ae), ("--cert", cert), ("--key", key), ("--ca", ca)) if not v]
    if missing:
        fail(f"the gateway needs {', '.join(missing)} (mutual TLS to the upstream is mandatory)")
    from dicomguard.gateway.config import GatewayConfig, GatewayError, GatewayFailed, parse_host_port
    from dicomguard.gateway.runner import run_gateway

    with open_archive() as archive:
        s = archive.settings
        try:
            config = GatewayConfig(
                listen=parse_host_port(listen, "--listen"), upstream=parse_host_port(upstream, "--upstream"), upstream_ae=upstream_ae,
                cert_file=cert, key_file=key, ca_file=ca, ae_title=ae, upstream_server_name=upstream_name, pass_through=pass_through,
                spool=spool, spool_dir=spool_dir, initial_backoff_s=initial_backoff, max_backoff_s=max_backoff,  # type: ignore[arg-type]
                dead_letter_after=dead_letter_after, upstream_timeout_s=upstream_timeout, max_queue_bytes=int(max_queue_gb * 1024**3),
                max_object_bytes=s.limits.max_object_bytes, max_pdu=s.network.max_pdu, max_associations=s.network.max_associations,
                idle_timeout_s=s.network.idle_timeout_s, shutdown_grace_s=shutdown_grace,
            )
            run_gateway(archive, config, on_ready=lambda message: console.print(message, highlight=False, soft_wrap=True))
        except GatewayFailed as exc:
            fail(str(exc), EXIT_FAILED)
        except GatewayError as exc:
            fail(str(exc))
    console.print("gateway stopped")


@gateway_app.command("allow")
def allow(
    ae: str = typer.Option(..., "--ae", help="The modality's calling AE title."),
    ip: str = typer.Option(..., "--ip", help="The modality's source IP address."),
) -> None:
    """Allow a legacy modality: associations from this AE title at this address are accepted."""
    from dicomguard.gateway.config import GatewayError

    with open_archive() as archive:
        try:
            added = archive.operator.allow_list.allow(ae, ip)
        except GatewayError as exc:
            fail(str(exc))
    console.print(f"{ae.strip()} at {ip} " + ("allowed" if added else "was already allowed"))


@gateway_app.command("deny")
def deny(
    ae: str = typer.Option(..., "--ae", help="The modality's calling AE title."),
    ip: str = typer.Option(None, "--ip", help="Only this address (default: every address of the AE title)."),
) -> None:
    """Remove a modality from the allow-list; takes effect at its next association or operation."""
    from dicomguard.gateway.config import GatewayError

    with open_archive() as archive:
        try:
            removed = archive.operator.allow_list.deny(ae, ip)
        except GatewayError as exc:
            fail(str(exc))
    if not removed:
        fail(f"{ae.strip()}{' at ' + ip if ip else ''} was not allowed", EXIT_FAILED)
    console.print(f"removed {removed} allow-list entr{'y' if removed == 1 else 'ies'} of {ae.strip()}")


@gateway_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json")) -> None:
    """List the allow-listed (AE title, IP) pairs."""
    with open_archive() as archive:
        entries = archive.operator.allow_list.list()
    rows = [{"ae_title": e.ae_title, "ip": e.ip, "created_at": e.created_at.isoformat()} for e in entries]
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table("AE title", "IP", "since", title=f"{len(rows)} allowed modalities")
    for r in rows:
        table.add_row(r["ae_title"], r["ip"], r["created_at"][:19])
    out.print(table)


@gateway_app.command("status")
def status(as_json: bool = typer.Option(False, "--json")) -> None:
    """Queue length, bytes, oldest item, dead letters, last success and error (no passphrase needed)."""
    from dicomguard.config import resolve_home
    from dicomguard.gateway.runner import queue_folder
    from dicomguard.gateway.status import read_status

    report = read_status(queue_folder(resolve_home()))
    if as_json:
        print_json(report)
        return
    age = report["oldest_item_age_s"]
    lines = [
        ("running", "yes" if report["running"] else "no"),
        ("state", report["state"]),
        ("queued", f"{report['queue_length']} objects, {report['queue_bytes']} bytes"),
        ("oldest", "-" if age is None else f"{age:.0f} s"),
        ("dead letters", str(report["dead_letters"])),
        ("delivered", f"{report['gateway'].get('delivered', '-')} (since the gateway started)"),
        ("last success", report["last_success_at"] or "-"),
        ("last error", f"{report['last_error']} ({report['last_error_at']})" if report["last_error"] else "-"),
    ]
    if report["next_retry_at"]:
        lines.append(("next retry", report["next_retry_at"]))
    for name, value in lines:
        out.print(f"{name:>13}: {value}", highlight=False, soft_wrap=True)


@gateway_app.command("requeue")
def requeue() -> None:
    """Move dead letters back into the queue (after fixing the upstream). The gateway must be stopped."""
    from dicomguard.config import resolve_home
    from dicomguard.gateway.config import GatewayError
    from dicomguard.gateway.queue import QueueLock, requeue_dead
    from dicomguard.gateway.runner import queue_folder

    folder = queue_folder(resolve_home())
    try:
        with QueueLock(folder):
            moved = requeue_dead(folder)
    except GatewayError as exc:
        fail(f"{exc}; stop the gateway first")
    console.print(f"{moved} dead letters queued again")


def register(app: typer.Typer) -> None:
    app.add_typer(gateway_app, name="gateway")
