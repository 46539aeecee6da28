"""Incident response (NIST SP 800-61r3): ``incident open|list|show|contain|release|verify|scope|report|notify|close``.

Every command goes through the incident service as the local operator: decided by the
policies and recorded in the incident's timeline and the audit trail.
"""

from __future__ import annotations

import csv
import io
import sys
from datetime import UTC, datetime
from pathlib import Path

import typer

from dicomguard.cli.common import EXIT_FAILED, console, fail, open_archive, print_json, time_option

incident_app = typer.Typer(help="Incident response: contain in one command, scope a breach, draft the notifications.",
                           no_args_is_help=True)


@incident_app.command("open")
def incident_open(
    title: str = typer.Option(..., "--title", help="What is suspected (sealed at rest)."),
    severity: str = typer.Option("high", "--severity", help="low | medium | high | critical"),
    description: str = typer.Option("", "--description"),
    aware_at: str = typer.Option(None, "--aware-at", help="When the organisation became aware (ISO time; default now): "
                                 "the GDPR 72 hours and HIPAA 60 days run from here."),
) -> None:
    """Open an incident; prints its number."""
    with open_archive() as archive:
        try:
            number = archive.operator.incidents.open(title, severity=severity, description=description,
                                                     aware_at=time_option(aware_at, "--aware-at"))
        except ValueError as exc:
            fail(str(exc))
    console.print(f"incident {number} opened", highlight=False)


@incident_app.command("list")
def incident_list(include_closed: bool = typer.Option(False, "--all"), as_json: bool = typer.Option(False, "--json")) -> None:
    """Open incidents (with --all, closed ones too)."""
    with open_archive() as archive:
        found = archive.operator.incidents.list(include_closed=include_closed)
    if as_json:
        print_json([i.to_json() for i in found])
        return
    for i in found:
        console.print(f"{i.id} [{i.status}] {i.severity}: {i.title} (aware {i.aware_at.isoformat()})", highlight=False)
    if not found:
        console.print("no incidents")


@incident_app.command("show")
def incident_show(incident_id: int = typer.Argument(...), as_json: bool = typer.Option(False, "--json")) -> None:
    """An incident and its timeline (who did what, when; containments in force)."""
    with open_archive() as archive:
        i = archive.operator.incidents.show(incident_id)
        deadlines = archive.operator.incidents.deadlines(incident_id)
    if as_json:
        print_json({**i.to_json(), "deadlines": deadlines})
        return
    console.print(f"incident {i.id} [{i.status}] {i.severity}: {i.title}", highlight=False)
    for d in deadlines:
        console.print(f"  deadline {d['name']}: {d['due']} [{d['status']}] ({d['citation']})", highlight=False)
    for st in i.steps:
        console.print(f"  {st.id} {st.at.isoformat()} {st.by}: {st.kind} {st.target}{' [in force]' if st.active else ''} {st.detail}",
                      highlight=False)


@incident_app.command("contain")
def incident_contain(
    incident_id: int = typer.Argument(...),
    user: str = typer.Option(None, "--user", help="Disable the account, end its sessions, revoke its tokens and share links."),
    device: str = typer.Option(None, "--device", help="Revoke the device's certificate, remove it from the gateway allow-list."),
    network: str = typer.Option(None, "--network", help="Refuse connections from this CIDR (HTTPS and DIMSE)."),
    archive_mode: str = typer.Option(None, "--archive", help="read-only: refuse stores and changes, keep reading for care."),
    reason: str = typer.Option(..., "--reason", help="Why (recorded)."),
) -> None:
    """One containment step; `incident release` undoes it with a reason."""
    if sum(x is not None for x in (user, device, network, archive_mode)) != 1:
        fail("contain one thing: --user, --device, --network or --archive read-only")
    if archive_mode is not None and archive_mode != "read-only":
        fail("--archive takes read-only")
    with open_archive() as archive:
        svc = archive.operator.incidents
        try:
            if user is not None:
                step = svc.contain_user(incident_id, user, reason)
            elif device is not None:
                step = svc.contain_device(incident_id, device, reason)
            elif network is not None:
                step = svc.contain_network(incident_id, network, reason)
            else:
                step = svc.read_only(incident_id, reason)
        except ValueError as exc:
            fail(str(exc))
    console.print(f"step {step}: contained", highlight=False)


@incident_app.command("release")
def incident_release(incident_id: int = typer.Argument(...), step: int = typer.Option(..., "--step"),
                     reason: str = typer.Option(..., "--reason")) -> None:
    """End a containment in force."""
    with open_archive() as archive:
        try:
            archive.operator.incidents.release(incident_id, step, reason)
        except ValueError as exc:
            fail(str(exc))
    console.print(f"step {step} released", highlight=False)


@incident_app.command("rotate-keys")
def incident_rotate_keys(incident_id: int = typer.Argument(...)) -> None:
    """Rotate the key-encryption key now (as `keys rotate`) and record it in the incident's timeline."""
    from dicomguard.cli.common import ask_passphrase

    with open_archive() as archive:
        rotation = archive.operator.keys.rotate(ask_passphrase())
        archive.operator.incidents.record_key_rotation(incident_id, rotation.new_kek_id, rotation.rewrapped)
    console.print(f"keys re-wrapped under KEK {rotation.new_kek_id}", highlight=False)


@incident_app.command("verify")
def incident_verify(incident_id: int = typer.Argument(...)) -> None:
    """Run a full integrity verification now and record its result in the incident (the scope reports it)."""
    with open_archive() as archive:
        report = archive.operator.verify.run()
        problems = len(report.problems)
        archive.operator.incidents.record_verification(incident_id, report.objects_checked, problems)
    console.print(f"verified {report.objects_checked} objects: {problems} problem(s)", highlight=False)
    if problems:
        raise typer.Exit(EXIT_FAILED)


@incident_app.command("scope")
def incident_scope(
    incident_id: int = typer.Argument(...),
    user: str = typer.Option(None, "--user"),
    device: str = typer.Option(None, "--device"),
    network: str = typer.Option(None, "--network"),
    share: str = typer.Option(None, "--share", help="A share link's id: what its recipients read (an API token: scope its --user)."),
    since: str = typer.Option(..., "--since", help="ISO time or a period back from now (e.g. 30d)."),
    until: str = typer.Option(None, "--until", help="ISO time (default now)."),
    fmt: str = typer.Option("json", "--format", help="json | csv | html"),
    out: Path = typer.Option(None, "--out", help="Write here instead of standard output (the patient list is PHI)."),
) -> None:
    """Which patients and studies a user, device or network queried, retrieved, exported or shared (recorded: it reads the audit trail)."""
    if fmt not in ("json", "csv", "html"):
        fail("--format is json, csv or html")
    start, end = time_option(since, "--since"), time_option(until, "--until") or datetime.now(UTC)
    with open_archive() as archive:
        try:
            result = archive.operator.incidents.scope(incident_id, user=user, device=device, network=network, share=share,
                                                      since=start, until=end)  # type: ignore[arg-type]
        except ValueError as exc:
            fail(str(exc))
    if fmt == "json":
        import json

        text = json.dumps(result.to_json(), indent=2)
    elif fmt == "csv":
        buf = io.StringIO()
        csv.writer(buf).writerows(result.csv_rows())
        text = buf.getvalue()
    else:
        from dicomguard.app.incidents import scope_html

        text = scope_html(incident_id, result)
    if out is not None:
        out.write_text(text, encoding="utf-8")
        out.chmod(0o600)
        console.print(f"{len(result.patients)} patients, {len(result.studies)} studies, {len(result.shares)} shares -> {out}",
                      highlight=False)
    else:
        sys.stdout.write(text + ("\n" if not text.endswith("\n") else ""))


@incident_app.command("report")
def incident_report(
    incident_id: int = typer.Argument(...),
    kind: str = typer.Option(..., "--format", help="gdpr-art33 | hipaa-164.404 | hhs"),
    render: str = typer.Option("text", "--as", help="text | html | json"),
    organisation: str = typer.Option("", "--organisation", help="The controller / covered entity's name."),
    contact: str = typer.Option(None, "--contact", help="Contact point (DPO, privacy officer); left to complete if not given."),
    out: Path = typer.Option(None, "--out"),
) -> None:
    """Draft a breach notification from the incident (timeline, scope, measures); fields a person must write are marked."""
    with open_archive() as archive:
        try:
            text = archive.operator.incidents.report(incident_id, kind, render=render, organisation=organisation, contact=contact)
        except ValueError as exc:
            fail(str(exc))
    if out is not None:
        out.write_text(text, encoding="utf-8")
        console.print(f"{kind} report -> {out}", highlight=False)
    else:
        sys.stdout.write(text + ("\n" if not text.endswith("\n") else ""))


@incident_app.command("letters")
def incident_letters(
    incident_id: int = typer.Argument(...),
    out: Path = typer.Option(..., "--out", help="Folder for one letter per affected patient (they name the patient: PHI)."),
    organisation: str = typer.Option("", "--organisation"),
    contact: str = typer.Option(None, "--contact"),
) -> None:
    """Plain-language letters to the patients of the last scope (GDPR Art. 34, HIPAA 164.404(c)); fields to complete marked."""
    with open_archive() as archive:
        try:
            letters = archive.operator.incidents.letters(incident_id, organisation=organisation, contact=contact)
        except ValueError as exc:
            fail(str(exc))
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    for number, (_, text) in enumerate(sorted(letters.items()), start=1):
        target = out / f"letter-{number:05d}.txt"  # no Patient ID in a file name: names end up in listings and backups
        target.write_text(text, encoding="utf-8")
        target.chmod(0o600)
    console.print(f"{len(letters)} letters -> {out}", highlight=False)


@incident_app.command("notify")
def incident_notify(incident_id: int = typer.Argument(...),
                    what: str = typer.Option(..., "--sent", help="authority | individuals | media | hhs"),
                    note: str = typer.Option("", "--note")) -> None:
    """Record that a notification was sent (its deadline then shows as met)."""
    with open_archive() as archive:
        try:
            archive.operator.incidents.note(incident_id, f"notified-{what}", note)
        except ValueError as exc:
            fail(str(exc))
    console.print(f"incident {incident_id}: {what} notified", highlight=False)


@incident_app.command("close")
def incident_close(incident_id: int = typer.Argument(...), reason: str = typer.Option(..., "--reason")) -> None:
    """Close an incident (every containment released first)."""
    with open_archive() as archive:
        try:
            archive.operator.incidents.close(incident_id, reason)
        except ValueError as exc:
            fail(str(exc))
    console.print(f"incident {incident_id} closed", highlight=False)


def posture_cmd(
    fmt: str = typer.Option("html", "--format", help="html | csv | oscal | json"),
    out: Path = typer.Option(None, "--out", help="Write here instead of standard output."),
) -> None:
    """The security posture: configuration and records against NIST CSF 2.0 and HIPAA, gaps first; exit 1 if any gap."""
    from dicomguard.app.posture import posture_csv, posture_html, posture_json, posture_oscal

    if fmt not in ("html", "csv", "oscal", "json"):
        fail("--format is html, csv, oscal or json")
    with open_archive() as archive:
        posture = archive.operator.posture.assess()
        name = archive.settings.archive.ae_title
    import json

    text = {"html": lambda: posture_html(posture, name), "csv": lambda: posture_csv(posture),
            "oscal": lambda: json.dumps(posture_oscal(posture, name), indent=2), "json": lambda: posture_json(posture)}[fmt]()
    if out is not None:
        out.write_text(text, encoding="utf-8")
        console.print(f"posture: {len(posture.findings) - len(posture.gaps)}/{len(posture.findings)} satisfied -> {out}", highlight=False)
    else:
        sys.stdout.write(text + ("\n" if not text.endswith("\n") else ""))
    if posture.gaps:
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    app.add_typer(incident_app, name="incident")
    app.command("posture")(posture_cmd)
