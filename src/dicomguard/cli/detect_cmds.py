"""Access-anomaly detection: ``context import|import-fhir|listen-hl7``, ``alerts list|show|ack|resolve|release``, offline ``detect``.

``detect`` scores audit logs of other systems without an archive (it opens none and records
nothing: its input and output are the operator's files); everything else goes through the
archive's detection service, decided and recorded.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import typer

from dicomguard.cli.common import EXIT_FAILED, EXIT_OK, console, fail, open_archive, print_json, serve_listener

context_app = typer.Typer(help="Context for access-anomaly detection: users, patients, orders (CSV, FHIR R4, or an HL7 v2 feed).",
                          no_args_is_help=True)
alerts_app = typer.Typer(help="Access-anomaly alerts: list, read, acknowledge, resolve, release containment.", no_args_is_help=True)


@context_app.command("import")
def context_import(
    kind: str = typer.Argument(..., help="users (user_id,name,role,department,home_address) | patients (patient_id,name,address,"
                               "vip) | orders (accession,patient_id,study_uid,modality,ordering_user,department,ordered_at,reading_group)"),
    file: Path = typer.Argument(..., help="UTF-8 CSV file with a header row."),
) -> None:
    """Import detection context (PHI, sealed in the index); a bad line refuses the whole file, naming the line."""
    from dicomguard.detect.context import ContextError

    with open_archive() as archive:
        try:
            rows = archive.operator.detection.import_context(kind, file)
        except (ContextError, ValueError, OSError) as exc:
            fail(str(exc), EXIT_FAILED)
    console.print(f"imported {rows} {kind}", highlight=False)


@context_app.command("import-fhir")
def context_import_fhir(
    file: Path = typer.Argument(..., help="HL7 FHIR R4 JSON: a Bundle, one resource, or NDJSON (bulk export). Practitioner and "
                                "PractitionerRole -> users, Patient -> patients, ServiceRequest and ImagingStudy -> orders."),
) -> None:
    """Import detection context from FHIR R4 (PHI, sealed in the index); anything wrong refuses the whole file, naming the entry."""
    from dicomguard.detect.context import ContextError

    with open_archive() as archive:
        try:
            counts = archive.operator.detection.import_fhir(file)
        except (ContextError, ValueError, OSError) as exc:
            fail(str(exc), EXIT_FAILED)
    console.print("imported " + ", ".join(f"{n} {kind}" for kind, n in counts.items()), highlight=False)


@context_app.command("listen-hl7")
def context_listen_hl7(
    port: int = typer.Option(None, "--port", help="TCP port; default: setting detection.hl7_port (2575, the IANA port of HL7 MLLP)."),
    host: str = typer.Option(None, "--host", help="Address to bind; default from config."),
) -> None:
    """Receive HL7 v2 ADT, ORM/OMI and MFN^M02 messages over MLLP with mutual TLS until SIGTERM; each updates the context.

    Only registered devices allowed to feed context (device operation context-feed) are applied; every message is
    acknowledged (AA once committed, AE/AR with the segment and field at fault).
    """
    from dicomguard.app.detection.hl7_listener import Hl7Listener

    st = serve_listener(lambda archive: Hl7Listener(archive.ctx, archive.services, host or archive.settings.network.host,
                                                    archive.settings.detection.hl7_port if port is None else port),
                        "dicomguard context listen-hl7", "hl7", "receiving HL7 v2 context messages (MLLP over TLS)")
    console.print(f"stopped: {st.connections} connections ({st.refused_peers} peers refused, {st.busy} over the limit), "
                  f"{st.applied} applied, {st.errors} errors (AE), {st.rejected} rejected (AR), {st.framing_errors} framing errors",
                  highlight=False)


@alerts_app.command("list")
def alerts_list(
    include_all: bool = typer.Option(False, "--all", help="Also acknowledged and resolved alerts."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Alerts: user, kind, severity, time span, containment (patients and reasons: `alerts show`)."""
    with open_archive() as archive:
        found = archive.operator.detection.alerts(None if include_all else "open")
    if as_json:
        print_json([a.to_json() for a in found])
        return
    for a in found:
        console.print(f"{a.id}: {a.severity} {a.kind} by {a.user} {a.start.isoformat()}..{a.end.isoformat()} [{a.status}"
                      f"{', ' + a.disposition if a.disposition else ''}] containment {a.containment}", highlight=False)
    if not found:
        console.print("no alerts")


@alerts_app.command("show")
def alerts_show(alert_id: int = typer.Argument(...), as_json: bool = typer.Option(False, "--json")) -> None:
    """One alert with its patients, explanation and evidence (recorded: it shows PHI)."""
    with open_archive() as archive:
        a = archive.operator.detection.show(alert_id)
    if as_json:
        print_json(a.to_json())
        return
    console.print(f"alert {a.id}: {a.severity} {a.kind} by {a.user}, {a.start.isoformat()}..{a.end.isoformat()}, {a.status}, "
                  f"containment {a.containment}", highlight=False)
    console.print(f"patients: {', '.join(a.patients)}", highlight=False)
    console.print(f"why: {a.explanation}", highlight=False)
    for item in a.evidence:
        console.print(f"  - {item}", highlight=False)
    for note in a.notes:
        console.print(f"  note: {note}", highlight=False)


@alerts_app.command("ack")
def alerts_ack(alert_id: int = typer.Argument(...), note: str = typer.Option("", "--note")) -> None:
    """Acknowledge an alert (someone is on it)."""
    with open_archive() as archive:
        archive.operator.detection.handle(alert_id, "acknowledge", None, note)
    console.print(f"alert {alert_id} acknowledged")


@alerts_app.command("resolve")
def alerts_resolve(
    alert_id: int = typer.Argument(...),
    disposition: str = typer.Option(..., "--disposition", help="true-positive | false-positive (a false positive feeds back)."),
    note: str = typer.Option("", "--note"),
) -> None:
    """Resolve an alert with a disposition."""
    with open_archive() as archive:
        try:
            archive.operator.detection.handle(alert_id, "resolve", disposition, note)
        except ValueError as exc:
            fail(str(exc))
    console.print(f"alert {alert_id} resolved ({disposition})")


@alerts_app.command("release")
def alerts_release(user: str = typer.Argument(...), reason: str = typer.Option(..., "--reason")) -> None:
    """End a user's containment (re-enables an account the containment disabled)."""
    with open_archive() as archive:
        try:
            level = archive.operator.detection.release(user, reason)
        except ValueError as exc:
            fail(str(exc))
    console.print(f"{user}: {level} containment released", highlight=False)


def detect_cmd(
    audit: list[Path] = typer.Option(..., "--audit", help="PS3.15 A.5 AuditMessage XML, one per line (or RFC 5424 syslog lines)."),
    context: Path = typer.Option(..., "--context", help="Folder with users.csv, patients.csv, orders.csv."),
    baseline_until: datetime = typer.Option(..., "--baseline-until", help="Learn from events before this ISO 8601 time, score after."),
    out: Path = typer.Option(..., "--out", help="alerts.jsonl: one JSON object per alert."),
    budget: float = typer.Option(1.0, "--budget", help="Alerts per 1,000 user-days the thresholds are calibrated to."),
    workers: int = typer.Option(0, "--workers", min=0, max=256, help="Processes parsing the logs (0: one per core)."),
) -> None:
    """Score audit logs of other systems offline (opens no archive); exit 0 with or without alerts, 2 on bad input."""
    from dicomguard.detect.context import ContextError
    from dicomguard.detect.offline import detect_offline

    try:
        alerts, stats = detect_offline(audit, context, baseline_until, alert_budget_per_1000_user_days=budget,
                                       workers=workers or None)
    except (ContextError, ValueError, OSError) as exc:
        fail(str(exc))
    tmp = out.with_name(out.name + ".part")
    with tmp.open("w", encoding="utf-8") as f:
        for a in alerts:
            f.write(json.dumps(a.to_json()) + "\n")
    tmp.replace(out)
    console.print(f"{len(alerts)} alerts from {stats.get('events', 0)} events ({stats.get('explained_share', 0):.1%} explained) "
                  f"in {stats.get('seconds', 0):.1f}s -> {out}", highlight=False)
    raise typer.Exit(EXIT_OK)


def register(app: typer.Typer) -> None:
    app.add_typer(context_app, name="context")
    app.add_typer(alerts_app, name="alerts")
    app.command("detect")(detect_cmd)

