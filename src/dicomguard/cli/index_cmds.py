"""Index maintenance: ``dicomguard index backfill`` (ADR 0017)."""

from __future__ import annotations

from dataclasses import asdict

import typer

from dicomguard.cli.common import console, open_archive, print_json

index_app = typer.Typer(help="Index maintenance.", no_args_is_help=True)


@index_app.command("backfill")
def backfill(as_json: bool = typer.Option(False, "--json", help="Machine-readable counts.")) -> None:
    """Give rows written by earlier versions the blind indexes this one writes (safe to stop and run again)."""
    with open_archive() as archive:
        done = archive.operator.index_maintenance.backfill()
    if as_json:
        print_json(asdict(done))
        return
    console.print(f"{done.patients} patient rows given suffix indexes, {done.studies} study rows given Study Date indexes, "
                  f"{done.instances} instance rows given their layout; leading-wildcard searches now narrow by suffix indexes.")
    if done.unreadable:
        console.print(f"[yellow]{done.unreadable} rows or objects did not open or verify[/]: run dicomguard verify.")


def register(app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")
