"""Integrity commands: verify, and the ledger (checkpoints, witnesses, proofs)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from dicomguard.cli.common import EXIT_FAILED, EXIT_OK, console, fail, open_archive, print_json

ledger_app = typer.Typer(help="Integrity ledger: checkpoints, witnesses, proofs.", no_args_is_help=True)


def _since_size(value: str | None) -> int | None:
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    from dicomguard.ledger.checkpoint import Checkpoint, CheckpointError

    try:
        body = Path(value).read_bytes().split(b"\n\n", 1)[0] + b"\n"
        return Checkpoint.from_body(body).size
    except (OSError, CheckpointError) as exc:
        fail(f"--since takes a tree size or a checkpoint file: {exc}")


def verify_cmd(
    since: str = typer.Option(None, "--since", help="Only check objects added after this checkpoint (file or tree size)."),
    sample: int = typer.Option(None, "--sample", min=1, help="Check a random sample of N objects."),
    trusted: list[Path] = typer.Option([], "--trusted-checkpoint", help="Checkpoint kept outside the home (repeatable)."),
    public_key: Path = typer.Option(None, "--public-key", help="Pin the ledger public key (verifier key file)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report."),
) -> None:
    """Verify every object, the index and the ledger. Exit 0 only when everything holds."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from dicomguard.ledger.checkpoint import CheckpointError, CheckpointVerifier

    if since is not None and sample is not None:
        fail("use either --since or --sample")
    notes = []
    for path in trusted:
        try:
            notes.append((f"trusted file {path.name}", path.read_bytes()))
        except OSError as exc:
            fail(f"cannot read {path}: {exc.strerror}")
    verifier = None
    if public_key is not None:
        try:
            verifier = CheckpointVerifier.from_verifier_key(public_key.read_text().strip())
        except (OSError, CheckpointError) as exc:
            fail(f"bad --public-key: {exc}")
    since_size = _since_size(since)
    with open_archive() as archive:
        with Progress(TextColumn("verifying"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=console,
                      disable=as_json or not console.is_terminal) as progress:
            task = progress.add_task("verify", total=None)
            report = archive.operator.verify.run(verifier=verifier, since_size=since_size, sample=sample,
                                                 trusted_notes_from_outside=notes, progress=lambda n: progress.advance(task, n))
    if as_json:
        print_json(report.to_json())
    else:
        mb = report.bytes_checked / 1e6
        console.print(
            f"{report.mode} verify: {report.objects_checked} objects ({mb:.1f} MB), {report.leaves_checked} ledger entries, "
            f"{report.checkpoints_checked} checkpoints, {report.trusted_checked} trusted checkpoints in {report.seconds:.2f}s"
        )
        for p in report.problems:
            console.print(f"  [red]{p.kind.value}[/] {p.subject}: {p.detail}", highlight=False)
        console.print("[green]all good[/]" if report.ok else f"[red]{len(report.problems)} problems[/]")
    raise typer.Exit(EXIT_OK if report.ok else EXIT_FAILED)


@ledger_app.command("checkpoint")
def checkpoint_cmd(export: Path = typer.Option(..., "--export", help="Folder to write the latest checkpoint into.")) -> None:
    """Write the latest signed checkpoint for a witness outside the archive."""
    with open_archive() as archive:
        note = archive.ledger.latest_checkpoint()
        cp = archive.ledger.verifier.verify(note)
    export.mkdir(parents=True, exist_ok=True)
    target = export / f"checkpoint-{cp.size}.txt"
    target.write_bytes(note)
    console.print(f"checkpoint of size {cp.size} written to {target}")
    typer.echo(str(target))


@ledger_app.command("witness")
def witness_cmd(import_: Path = typer.Option(..., "--import", help="Checkpoint file to trust.")) -> None:
    """Record an external checkpoint as trusted (after checking it against the ledger)."""
    from dicomguard.ledger.checkpoint import CheckpointError

    with open_archive() as archive:
        try:
            cp = archive.operator.ledger.witness(import_.read_bytes(), source=str(import_))
        except CheckpointError as exc:
            fail(f"checkpoint refused: {exc}", EXIT_FAILED)
    console.print(f"trusted checkpoint of size {cp.size} recorded")


@ledger_app.command("prove")
def prove_cmd(
    instance: str = typer.Option(..., "--instance", help="SOP Instance UID."),
    out: Path = typer.Option(..., "--out", help="Proof bundle file to write."),
) -> None:
    """Write a self-contained proof that an object is in the ledger."""
    with open_archive() as archive:
        bundle = archive.ledger.prove_instance(instance)
    out.write_text(json.dumps(bundle, indent=2) + "\n")
    console.print(f"proof bundle for {instance} (entry {bundle['leaf_index']} of {bundle['tree_size']}) written to {out}")


@ledger_app.command("check-proof")
def check_proof_cmd(
    bundle: Path = typer.Argument(..., help="Proof bundle file."),
    public_key: Path = typer.Option(..., "--public-key", help="The archive's ledger public key (verifier key file)."),
    dicom: Path = typer.Option(None, "--dicom", help="Also check that this DICOM file is the archived object."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Verify a proof bundle offline, without access to the archive."""
    from dicomguard.errors import DicomGuardError
    from dicomguard.ledger.proofs import check_bundle

    try:
        proven = check_bundle(bundle.read_bytes(), public_key.read_text(), dicom.read_bytes() if dicom else None)
    except (OSError, DicomGuardError) as exc:
        if as_json:
            print_json({"ok": False, "error": str(exc)})
            raise typer.Exit(EXIT_FAILED) from None
        fail(f"proof does not verify: {exc}", EXIT_FAILED)
    if as_json:
        print_json({"ok": True, "leaf": proven.leaf, "leaf_index": proven.index, "tree_size": proven.checkpoint.size})
    else:
        console.print(
            f"[green]verified[/]: {proven.leaf.get('sop_instance_uid')} is entry {proven.index} of the signed tree of "
            f"size {proven.checkpoint.size} ({proven.checkpoint.origin})" + ("; the DICOM file matches" if dicom else "")
        )


@ledger_app.command("public-key")
def public_key_cmd(out: Path = typer.Option(..., "--out", help="File to write the verifier key into.")) -> None:
    """Export the ledger's public key (a signed-note verifier key)."""
    with open_archive() as archive:
        key = archive.ledger.verifier.to_verifier_key()
    out.write_text(key + "\n")
    console.print(f"ledger public key written to {out}")


def register(app: typer.Typer) -> None:
    app.command("verify")(verify_cmd)
    app.add_typer(ledger_app, name="ledger")
