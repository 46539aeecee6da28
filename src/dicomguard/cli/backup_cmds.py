"""Backups (ADR 0007): ``backup run|drill|list|status`` and ``restore``.

``restore`` works without a home to open (the home may be what was destroyed): the
target is found in a copy of the old configuration (``--config``), or given as a
folder (``--folder``).
"""

from __future__ import annotations

import getpass
import os
import sys
from datetime import datetime
from pathlib import Path

import typer

from dicomguard.cli.common import EXIT_FAILED, ask_passphrase, console, fail, open_archive, print_json

backup_app = typer.Typer(help="Backups to folders and Object-Lock S3, restore drills, 3-2-1-1-0 status.", no_args_is_help=True)


@backup_app.command("run")
def run_cmd(
    target: str = typer.Option(None, "--target", help="One configured target (default: every target)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary (objects, bytes, new bytes, seconds)."),
) -> None:
    """Write a consistent snapshot to the target(s): new blobs, encrypted index, key vault, signed manifest. Exit 1 if one failed."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    with open_archive() as archive:
        with Progress(TextColumn("backing up"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=console,
                      disable=as_json or not console.is_terminal) as progress:
            task = progress.add_task("backup", total=None)
            outcomes = archive.operator.backups.run(target, progress=lambda n: progress.advance(task, n))
    if as_json:
        print_json([o.to_json() for o in outcomes])
    else:
        for o in outcomes:
            if o.ok and o.result:
                r = o.result
                console.print(f"[green]{o.target}[/]: snapshot {r.snapshot_id}: {r.objects} objects, {r.bytes / 1e6:.1f} MB "
                              f"({r.new_objects} new, {r.new_bytes / 1e6:.1f} MB) in {r.seconds:.2f}s", highlight=False)
            else:
                console.print(f"[red]{o.target}[/]: backup failed: {o.error}", highlight=False)
    raise typer.Exit(0 if all(o.ok for o in outcomes) else EXIT_FAILED)


@backup_app.command("drill")
def drill_cmd(
    target: str = typer.Option(None, "--target", help="One configured target (default: every target)."),
    snapshot: str = typer.Option(None, "--snapshot", help="A snapshot id (default: the newest)."),
    as_json: bool = typer.Option(False, "--json", help="Print the reports as JSON."),
) -> None:
    """Restore a snapshot into a scratch home and verify every object against the ledger; report RPO and RTO. Exit 1 on any problem."""
    with open_archive() as archive:
        reports = archive.operator.backups.drill(target, snapshot)
    if as_json:
        print_json([r.to_json() for r in reports])
    else:
        for r in reports:
            j = r.to_json()
            state = "[green]0 errors[/]" if r.ok else f"[red]{len(r.problems)} problem(s)[/]"
            console.print(f"{r.target} {r.snapshot_id}: {r.objects} objects ({r.bytes / 1e6:.1f} MB) verified, RPO {r.rpo_s / 3600:.2f} h, "
                          f"RTO {r.rto_s:.2f} s ({j['verify_mb_per_s']} MB/s): {state}", highlight=False)
            for p in r.problems:
                console.print(f"  [red]{p.kind.value}[/] {p.subject}: {p.detail}", highlight=False)
    raise typer.Exit(0 if all(r.ok for r in reports) else EXIT_FAILED)


@backup_app.command("list")
def list_cmd(
    target: str = typer.Option(None, "--target", help="One configured target (default: every target)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Complete snapshots per target, and whether the archive's ledger records each."""
    with open_archive() as archive:
        found = archive.operator.backups.snapshots(target)
    if as_json:
        print_json([{"target": f.target, "snapshot": f.snapshot_id, "recorded_in_ledger": f.recorded} for f in found])
        return
    for f in found:
        mark = "" if f.recorded else "  [red]not recorded in the ledger[/]"
        console.print(f"{f.target}  {f.snapshot_id}{mark}", highlight=False)


@backup_app.command("status")
def status_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Last success and drill per target, overdue targets, and each 3-2-1-1-0 rule. Exit 1 unless everything is met."""
    with open_archive() as archive:
        st = archive.operator.backups.status()
    if as_json:
        print_json(st.to_json())
    else:
        for t in st.targets:
            flags = [f for f, on in (("backup overdue", t.backup_overdue), ("drill overdue", t.drill_overdue),
                                     ("key vault older than the last erasure", t.vault_stale)) if on]
            console.print(f"{'[green]ok[/]' if t.ok else '[red]!![/]'} {t.name} ({t.kind}, {t.media}"
                          f"{', immutable' if t.immutable else ''}{', off-site' if t.offsite else ''}{', offline' if t.offline else ''}): "
                          f"last backup {t.last_backup.isoformat() if t.last_backup else 'never'}, last drill "
                          f"{t.last_drill.isoformat() if t.last_drill else 'never'}"
                          f"{f' ({t.last_drill_problems} problems)' if t.last_drill_problems else ''}"
                          f"{'; ' + ', '.join(flags) if flags else ''}", highlight=False)
        for r in st.rules:
            console.print(f"{'[green]met[/]' if r.ok else '[red]NOT met[/]'}  {r.rule}: {r.detail}", highlight=False)
    raise typer.Exit(0 if st.ok else EXIT_FAILED)


def restore_cmd(
    home: Path = typer.Option(..., "--home", help="The new home to restore into (must not exist or be empty)."),
    target: str = typer.Option(None, "--target", help="A target named in --config."),
    config: Path = typer.Option(None, "--config", help="A copy of the old home's config.toml (default: $DICOMGUARD_HOME's)."),
    folder: Path = typer.Option(None, "--folder", help="Restore from this backup folder (no configuration needed)."),
    snapshot: str = typer.Option(None, "--snapshot", help="A snapshot id (default: the newest)."),
    at: datetime = typer.Option(None, "--at", help="The newest snapshot taken at or before this ISO 8601 time."),
    recovery: bool = typer.Option(False, "--recovery-key", help="Open the keys with the recovery key instead of the passphrase "
                                  "(DICOMGUARD_RECOVERY_KEY or prompt); the restored home is sealed under DICOMGUARD_NEW_PASSPHRASE."),
    database: str = typer.Option("", "--database", help="Restore the index into this (empty) database instead of SQLite in the home."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Restore a snapshot into a NEW home; erased patients stay tombstones; the result passes `dicomguard verify` and serves."""
    from dicomguard.app.backup.restore import Unlock, restore_home
    from dicomguard.crypto.recovery import parse_key
    from dicomguard.errors import ConfigurationError, DicomGuardError, UnsealError

    if (snapshot is not None) and (at is not None):
        fail("use either --snapshot or --at")
    try:
        backup_target = _restore_target(target, config, folder, home)
    except ConfigurationError as exc:
        fail(str(exc))
    if recovery:
        text = os.environ.get("DICOMGUARD_RECOVERY_KEY") or (getpass.getpass("Recovery key: ") if sys.stdin.isatty() else "")
        new_passphrase = os.environ.get("DICOMGUARD_NEW_PASSPHRASE") or (
            getpass.getpass("New passphrase for the restored home: ") if sys.stdin.isatty() else "")
        if not text or not new_passphrase:
            fail("--recovery-key needs DICOMGUARD_RECOVERY_KEY and DICOMGUARD_NEW_PASSPHRASE (no terminal to prompt on)")
        try:
            unlock = Unlock(recovery_key=parse_key(text), new_passphrase=new_passphrase)
        except ValueError as exc:
            fail(str(exc))
    else:
        unlock = Unlock(passphrase=ask_passphrase())
    try:
        result = restore_home(backup_target, home.expanduser().absolute(), unlock, snapshot_id=snapshot, at=at, database=database)
    except UnsealError:
        fail("the key vault does not open with this passphrase or recovery key", EXIT_FAILED)
    except (DicomGuardError, ValueError) as exc:
        fail(str(exc), EXIT_FAILED)
    summary = {"home": str(result.home), "target": result.target, "snapshot": result.snapshot_id, "created": result.created.isoformat(),
               "objects": result.objects, "bytes": result.bytes, "tombstoned_patients": result.tombstoned_patients,
               "seconds": round(result.seconds, 3)}
    if as_json:
        print_json(summary)
        return
    console.print(f"[green]restored[/] snapshot {result.snapshot_id} of {result.target} into {result.home}: {result.objects} objects "
                  f"({result.bytes / 1e6:.1f} MB), {result.tombstoned_patients} erased patient(s) kept as tombstones, "
                  f"{result.seconds:.1f}s", highlight=False)
    console.print(f"check it with: DICOMGUARD_HOME={result.home} dicomguard verify", highlight=False)


def _restore_target(name: str | None, config: Path | None, folder: Path | None, new_home: Path):  # type: ignore[no-untyped-def]
    from dicomguard.app.backup.targets import open_target, target_settings
    from dicomguard.config import CONFIG_FILE, load_settings, resolve_home
    from dicomguard.errors import ConfigurationError
    from dicomguard.storage.backup_targets import FolderTarget

    if folder is not None:
        if name or config:
            raise ConfigurationError("use --folder, or --target with --config, not both")
        return FolderTarget("folder", folder.expanduser().absolute())
    if not name:
        raise ConfigurationError("name the backup: --target NAME (with --config) or --folder PATH")
    source_home = config.expanduser().absolute().parent if config else resolve_home()
    if config is not None and config.name != CONFIG_FILE:
        raise ConfigurationError(f"--config must be a {CONFIG_FILE} (a copy kept with the backup credentials)")
    if source_home == new_home.expanduser().absolute():
        raise ConfigurationError("the configuration must come from outside the new home")
    settings = load_settings(source_home)
    return open_target(target_settings(settings, name)[0], source_home)


def register(app: typer.Typer) -> None:
    app.add_typer(backup_app, name="backup")
    app.command("restore")(restore_cmd)

