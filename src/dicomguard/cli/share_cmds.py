"""Sharing (ADR 0010): ``share create|list|show|revoke|send`` and ``peer add|list|remove``.

Every command goes through the share or transfer service as the local operator:
decided by the policies and recorded. The link's token and PIN are printed once
and stored nowhere in the clear.
"""

from __future__ import annotations

from pathlib import Path

import typer

from dicomguard.cli.common import EXIT_FAILED, console, fail, open_archive, print_json
from dicomguard.cli.deid_cmds import OPTION_HELP, PRESET_HELP, parse

share_app = typer.Typer(help="Share a study by link (token + PIN), list, show and revoke links; send to a peer archive.",
                        no_args_is_help=True)
peer_app = typer.Typer(help="Peer archives for site-to-site transfer (mutual TLS, ledger proofs).", no_args_is_help=True)


def link_url(settings, token: str) -> str:  # type: ignore[no-untyped-def]
    """The link a recipient opens: the configured public URL, else this host's HTTPS port."""
    base = settings.sharing.public_url.rstrip("/") or f"https://{settings.network.host}:{settings.network.https_port}"
    return f"{base}/s/{token}"


@share_app.command("create")
def share_create(
    study: str = typer.Option(..., "--study", help="Study Instance UID to share."),
    to: str = typer.Option(..., "--to", help="Who the share is for and why (kept sealed; shown to the owner)."),
    kind: str = typer.Option("external", "--recipient", help="internal | external | research | patient (policies decide on it)."),
    expires: str = typer.Option("72h", "--expires", help="Lifetime: 30m, 72h, 7d (at most [sharing] max_expiry_hours)."),
    series: list[str] = typer.Option([], "--series", help="Share only this series (repeatable)."),
    max_uses: int = typer.Option(None, "--max-uses", help="Openings allowed (each PIN entry that opens the link counts)."),
    download: bool = typer.Option(False, "--download", help="Allow downloading the study as a ZIP of PS3.10 media with a DICOMDIR."),
    deidentify: bool = typer.Option(False, "--deidentify", help="Share a de-identified copy (PS3.15 Annex E); the source is untouched."),
    preset: str = typer.Option(None, "--preset", help=PRESET_HELP),
    option: list[str] = typer.Option([], "--option", help=OPTION_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Create a share link: prints the link and a PIN to give the recipient on another channel (phone, in person)."""
    from dicomguard.identity.tokens import parse_ttl

    try:
        ttl = parse_ttl(expires)
    except ValueError as exc:
        fail(f"--expires: {exc}")
    options = parse(option, preset) if (deidentify or preset or option) else frozenset()
    with open_archive() as archive:
        try:
            created = archive.operator.shares.create(study, recipient=to, recipient_kind=kind, expires_in=ttl, max_uses=max_uses,
                                                     download=download, series=series, deidentify=deidentify or bool(preset or option),
                                                     deid_options=options)
        except ValueError as exc:
            fail(str(exc))
        url = link_url(archive.settings, created.token)
    if as_json:
        print_json(created.to_json(url))
        return
    console.print(f"share {created.id}: {url}", highlight=False, soft_wrap=True)
    console.print(f"PIN: {created.pin}   (give it on another channel: the link alone opens nothing)", highlight=False)
    what = "a de-identified copy" + (" (the policies require it for this recipient)" if created.deidentified_by_policy else "") \
        if created.deidentified else "the study"
    console.print(f"serves {what}; expires {created.expires_at.isoformat()}"
                  + (f"; {created.max_uses} use(s)" if created.max_uses else "") + ("; download allowed" if created.download else ""),
                  highlight=False)
    for uid, why in created.refused:
        console.print(f"  not in the copy: {uid}: {why}", highlight=False)


@share_app.command("list")
def share_list(
    everyone: bool = typer.Option(False, "--everyone", help="Every link the policies let you read, not only yours."),
    include_all: bool = typer.Option(False, "--all", help="Also expired, revoked, used-up and locked links."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Share links: id, state, study, recipient kind, expiry, uses."""
    with open_archive() as archive:
        found = archive.operator.shares.list(everyone=everyone, include_inactive=include_all)
    if as_json:
        print_json([v.to_json() for v in found])
        return
    for v in found:
        console.print(f"{v.id} [{v.state}] study {v.study_uid} -> {v.recipient_kind}{' (de-identified)' if v.deidentified else ''}; "
                      f"expires {v.expires_at.isoformat()}; uses {v.uses}{'/' + str(v.max_uses) if v.max_uses else ''}; "
                      f"by {v.owner}", highlight=False)
    if not found:
        console.print("no share links")


@share_app.command("show")
def share_show(share_id: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")) -> None:
    """One link and every use of it (opened, wrong PIN, downloaded ...) with the recipient's address."""
    with open_archive() as archive:
        v = archive.operator.shares.show(share_id)
    if as_json:
        print_json(v.to_json())
        return
    console.print(f"share {v.id} [{v.state}] by {v.owner} for {v.recipient_kind}: {v.recipient}", highlight=False)
    console.print(f"study {v.study_uid}" + (f" (served as de-identified copy {v.served_study_uid})" if v.deidentified else "")
                  + (f", series {', '.join(v.series)}" if v.series else ""), highlight=False)
    console.print(f"created {v.created_at.isoformat()}, expires {v.expires_at.isoformat()}, uses {v.uses}"
                  f"{'/' + str(v.max_uses) if v.max_uses else ''}, wrong PINs {v.failed_pins}", highlight=False)
    for at, what, address in v.uses_log:
        console.print(f"  {at.isoformat()} {what} from {address}", highlight=False)


@share_app.command("revoke")
def share_revoke(share_id: str = typer.Argument(...), reason: str = typer.Option(..., "--reason", help="Why (recorded).")) -> None:
    """Revoke a link: it and every recipient session stop working at once."""
    with open_archive() as archive:
        try:
            v = archive.operator.shares.revoke(share_id, reason)
        except ValueError as exc:
            fail(str(exc))
    console.print(f"share {v.id} revoked", highlight=False)


@share_app.command("send")
def share_send(
    study: str = typer.Option(..., "--study", help="Study Instance UID to send."),
    peer: str = typer.Option(..., "--to-peer", help="Name of a peer archive (dicomguard peer add)."),
    deidentify: bool = typer.Option(False, "--deidentify", help="Send a de-identified copy (PS3.15 Annex E)."),
    preset: str = typer.Option(None, "--preset", help=PRESET_HELP),
    option: list[str] = typer.Option([], "--option", help=OPTION_HELP),
    wait: float = typer.Option(0.0, "--wait", help="Deliver now and wait up to this many seconds (0: leave it to `serve`)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Queue a study for a peer archive: sent over STOW-RS with mutual TLS by `serve` (or now with --wait), retried until delivered."""
    options = parse(option, preset) if (deidentify or preset or option) else frozenset()
    with open_archive() as archive:
        try:
            job = archive.operator.transfers.send(study, peer, deidentify=deidentify or bool(preset or option), deid_options=options)
        except ValueError as exc:
            fail(str(exc))
        if wait > 0:
            job = archive.operator.transfers.deliver_now(job.id, wait)
    if as_json:
        print_json(job.to_json())
    else:
        console.print(f"transfer {job.id} to {job.peer}: {job.objects} objects, {job.state}"
                      + (f" ({job.last_error})" if job.last_error else ""), highlight=False)
    if wait > 0 and job.state != "delivered":
        raise typer.Exit(EXIT_FAILED)


@share_app.command("queue")
def share_queue(as_json: bool = typer.Option(False, "--json")) -> None:
    """Transfers to peers: state, attempts, last error."""
    with open_archive() as archive:
        jobs = archive.operator.transfers.jobs()
    if as_json:
        print_json([j.to_json() for j in jobs])
        return
    for j in jobs:
        console.print(f"{j.id} -> {j.peer}: {j.objects} objects, {j.state}, {j.attempts} attempt(s)"
                      + (f", last error: {j.last_error}" if j.last_error else ""), highlight=False)
    if not jobs:
        console.print("no transfers")


@peer_app.command("add")
def peer_add(
    name: str = typer.Argument(..., help="A short name (letters, digits, '-', '_')."),
    url: str = typer.Option(..., "--url", help="The peer's DICOMweb root, e.g. https://peer.example.org:8443/dicomweb"),
    ca: Path = typer.Option(..., "--ca", help="PEM file of the CA that issued the peer's server certificate."),
    cert: Path = typer.Option(None, "--cert", help="Client certificate (PEM) the peer issued to this archive (to send to it)."),
    key: Path = typer.Option(None, "--key", help="Its private key (PEM); stored sealed, the file can be deleted afterwards."),
    ledger_key: Path = typer.Option(None, "--ledger-key", help="File with the peer's ledger public key (`dicomguard ledger "
                                    "public-key` on the peer): objects it sends are stored only with inclusion proofs under it."),
    device: str = typer.Option(None, "--device", help="AE title of the device registration (`dicomguard device add`) whose "
                               "certificate the peer presents when it sends to this archive."),
    internal: bool = typer.Option(False, "--internal", help="The peer belongs to this organisation (sending needs no step-up)."),
) -> None:
    """Register a peer archive (administration; recorded)."""
    def text(path: Path | None, what: str) -> str | None:
        if path is None:
            return None
        try:
            return path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"{what}: {exc}")

    with open_archive() as archive:
        try:
            archive.operator.transfers.add_peer(name, url=url, ca_pem=text(ca, "--ca") or "", cert_pem=text(cert, "--cert"),
                                                key_pem=text(key, "--key"), ledger_key=text(ledger_key, "--ledger-key"),
                                                device=device, external=not internal)
        except ValueError as exc:
            fail(str(exc))
    console.print(f"peer {name} added", highlight=False)


@peer_app.command("list")
def peer_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Peer archives: URL, device, whether their objects must carry ledger proofs."""
    with open_archive() as archive:
        peers = archive.operator.transfers.peers()
    if as_json:
        print_json([p.to_json() for p in peers])
        return
    for p in peers:
        console.print(f"{p.name}: {p.url} ({'external' if p.external else 'internal'}; device {p.device or '-'}; "
                      f"{'proofs required' if p.ledger_key else 'no ledger key'})", highlight=False)
    if not peers:
        console.print("no peers")


@peer_app.command("remove")
def peer_remove(name: str = typer.Argument(...)) -> None:
    """Remove a peer (queued transfers to it fail; recorded)."""
    with open_archive() as archive:
        archive.operator.transfers.remove_peer(name)
    console.print(f"peer {name} removed", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(share_app, name="share")
    app.add_typer(peer_app, name="peer")
