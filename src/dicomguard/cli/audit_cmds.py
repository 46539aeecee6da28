"""``dicomguard audit``: search, report, export, import, forwarding status, syslog-TLS listener.

Reading the trail (search, report, export) is authorized (``audit-read``; the
CLI runs as the local operator) and recorded as Audit Log Used; importing
(``audit-import``) stores each accepted message with its origin, ledgered.
Every output shows an imported record as asserted by its source
(``asserted_by``), never as the archive's own observation.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import typer

from dicomguard.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    console,
    fail,
    open_archive,
    print_json,
    serve_listener,
    time_option,
)

audit_app = typer.Typer(help="Audit trail (DICOM PS3.15 A.5, IHE ATNA): search, report, export, import, forwarding.",
                        no_args_is_help=True)

FORMATS = ("json", "csv", "xml")


def _filter(**kwargs):  # type: ignore[no-untyped-def]
    from dicomguard.audit.store import AuditFilter, event_code

    if kwargs.get("event"):
        try:
            event_code(kwargs["event"])
        except ValueError as exc:
            fail(str(exc))
    return AuditFilter(**kwargs)


def _warn_damaged(entries) -> None:  # type: ignore[no-untyped-def]
    damaged = [e.seq for e in entries if e.damaged]
    if damaged:
        console.print(f"[red]{len(damaged)} records do not authenticate (altered at rest): {damaged[:20]}; run dicomguard verify[/]",
                      highlight=False)


@audit_app.command("search")
def search_cmd(
    user: str = typer.Option(None, "--user", help="UserID of the requesting user or device (AE title)."),
    patient: str = typer.Option(None, "--patient", help="Patient ID (exact)."),
    event: str = typer.Option(None, "--event", help="Event: a name (query, instances-transferred, security-alert, ...) or code."),
    since: str = typer.Option(None, "--since", help="From this time (ISO 8601, UTC if no offset) or span back from now (7d, 12h)."),
    until: str = typer.Option(None, "--until", help="Before this time (same forms)."),
    study: str = typer.Option(None, "--study", help="Study Instance UID."),
    failures: bool = typer.Option(False, "--failures", help="Only events whose outcome is not success."),
    origin: str = typer.Option(None, "--origin", help="'local', or the origin of imported messages."),
    limit: int = typer.Option(None, "--limit", min=1, help="At most N records (oldest first)."),
    fmt: str = typer.Option("json", "--format", help="json | csv | xml (one PS3.15 AuditMessage per line)."),
) -> None:
    """Search the audit trail. Output holds patient identifiers: treat it as PHI."""
    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}")
    flt = _filter(user=user, patient=patient, event=event, since=time_option(since, "--since"), until=time_option(until, "--until"),
                  study=study, failures_only=failures, origin=origin, limit=limit)
    from dicomguard.audit.store import write_csv

    with open_archive() as archive:
        entries = archive.operator.audit.search(flt)
        if fmt == "json":
            print_json([e.summary() for e in entries])
        elif fmt == "xml":
            for e in entries:
                if not e.damaged:
                    sys.stdout.write(e.xml.decode("utf-8") + "\n")
        else:
            write_csv(entries, sys.stdout)
        sys.stdout.flush()
    asserted = sum(1 for e in entries if e.asserted_by is not None)
    console.print(f"{len(entries)} audit records" + (f", {asserted} of them asserted by other systems (asserted_by), not observed "
                                                      "by this archive" if asserted else ""))
    _warn_damaged(entries)


@audit_app.command("report")
def report_cmd(
    period: str = typer.Option("7d", "--period", help="How far back from --until: 7d, 24h, 30d ..."),
    out: Path = typer.Option(..., "--out", help="HTML file to write; the CSV is written beside it (.csv)."),
    until: str = typer.Option(None, "--until", help="End of the period (default: now)."),
) -> None:
    """Routine log review: accesses per user, failed logins, lockouts, refusals, break-glass, exports, integrity, top patients."""
    from dicomguard.audit.report import review, write_report
    from dicomguard.audit.store import parse_when

    end = time_option(until, "--until") or datetime.now(UTC)
    try:
        start = parse_when(period, now=end)
    except ValueError as exc:
        fail(f"--period: {exc}")
    with open_archive() as archive:
        entries = archive.operator.audit.read(_filter(since=start, until=end), f"report --period {period}")
        r = review(entries, start, end)
        html_path, csv_path = write_report(r, out, f"dicomguard audit review ({archive.settings.archive.ae_title})")
    console.print(f"{r.records} records reviewed; report written to {html_path} and {csv_path} (they contain PHI)")


@audit_app.command("export")
def export_cmd(
    fmt: str = typer.Option(..., "--format", help="fhir (R4 AuditEvent Bundle, IHE BALP) | dicom (PS3.15 XML, one per line)."),
    out: Path = typer.Option(..., "--out", help="File to write."),
    since: str = typer.Option(None, "--since", help="From this time or span back (7d)."),
    until: str = typer.Option(None, "--until", help="Before this time."),
) -> None:
    """Export the audit trail for another audit repository."""
    from dicomguard.audit.fhir import audit_event, bundle
    from dicomguard.audit.message import format_time

    if fmt not in ("fhir", "dicom"):
        fail("--format must be fhir or dicom")
    flt = _filter(since=time_option(since, "--since"), until=time_option(until, "--until"))
    with open_archive() as archive:
        entries = archive.operator.audit.read(flt, f"export --format {fmt}")
        tmp = out.with_name(out.name + ".part")
        with open(tmp, "w", encoding="utf-8") as f:
            if fmt == "fhir":
                events = [audit_event(e.id, e.message, e.origin) for e in entries if not e.damaged]
                json.dump(bundle(events, f"dicomguard-audit-{datetime.now(UTC):%Y%m%d%H%M%S}", format_time(datetime.now(UTC))), f, indent=1)
                f.write("\n")
            else:
                for e in entries:
                    if not e.damaged:
                        f.write(e.xml.decode("utf-8") + "\n")
        tmp.chmod(0o600)
        tmp.replace(out)
    console.print(f"{len(entries)} audit records exported to {out} (it contains PHI)")
    _warn_damaged(entries)


@audit_app.command("import")
def import_cmd(
    files: list[Path] = typer.Argument(..., help="PS3.15 XML audit messages: one per file, or one per line (XML or RFC 5424 syslog)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Import audit messages of other systems: validated, stored, ledgered, marked with their origin."""
    from dicomguard.audit.imports import ImportResult, split_messages
    from dicomguard.audit.origin import file_origin

    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        fail(f"no such file: {', '.join(missing)}")
    total = ImportResult()
    with open_archive() as archive:
        audit = archive.operator.audit
        for path in files:
            r = audit.import_messages(split_messages(path.read_bytes(), path.name), file_origin(path.name))
            total.stored += r.stored
            total.duplicates += r.duplicates
            total.rejected += r.rejected
    if as_json:
        print_json(total.to_json())
    else:
        console.print(f"stored {total.stored}, duplicate {total.duplicates}, rejected {len(total.rejected)}")
        for label, reason in total.rejected:
            console.print(f"  [red]rejected[/] {label}: {reason}", highlight=False)
    raise typer.Exit(EXIT_FAILED if total.rejected else EXIT_OK)


@audit_app.command("status")
def status_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
    """Spool size and lag per syslog collector, and which process runs each background task. Exit 1 if a collector lags."""
    from dicomguard.app.leases import lease_status
    from dicomguard.audit.forwarder import spool_status

    with open_archive() as archive:
        total, statuses = spool_status(archive.ctx)
        leases = lease_status(archive.ctx.engine)
    if as_json:
        print_json({"records": total, "collectors": [s.to_json() for s in statuses], "leases": [x.to_json() for x in leases]})
    else:
        console.print(f"{total} audit records")
        if not statuses:
            console.print("no \\[[audit.syslog]] collector configured", highlight=False)
        for s in statuses:
            state = "[red]LAGGING[/]" if s.lagging else "[green]ok[/]"
            console.print(f"  {s.collector}: {state} sent up to {s.forwarded_up_to}, {s.pending} pending, lag {s.lag_seconds:.1f}s"
                          + (f", forwarding by {s.forwarding_by}" if s.forwarding_by else ", no forwarder running")
                          + (f"; last error {s.last_error} at {s.last_error_at:%Y-%m-%d %H:%M:%S}" if s.last_error and s.last_error_at else ""),
                          highlight=False)
        for x in leases:  # background tasks: one process of the archive runs each (app/leases.py)
            console.print(f"  task {x.name}: " + (f"run by {x.holder}" if x.holder else "not running"), highlight=False)
    raise typer.Exit(EXIT_FAILED if any(s.lagging for s in statuses) else EXIT_OK)


@audit_app.command("listen")
def listen_cmd(
    port: int = typer.Option(6514, "--port", help="TCP port (RFC 5425: 6514)."),
    host: str = typer.Option(None, "--host", help="Address to bind; default from config."),
) -> None:
    """Receive PS3.15 audit messages from registered devices over syslog-TLS (mutual TLS) until SIGTERM.

    Each message is the sending device's assertion, decided per message (device operations audit, audit-relay).
    """
    from dicomguard.audit.listener import AuditListener

    st = serve_listener(lambda archive: AuditListener(archive.ctx, archive.services, host or archive.settings.network.host, port),
                        "dicomguard audit listen", "audit", "receiving audit messages (syslog over TLS)")
    console.print(f"stopped: {st.connections} connections ({st.refused_peers} peers refused), {st.stored} stored, "
                  f"{st.duplicates} duplicates, {st.rejected} rejected")


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
