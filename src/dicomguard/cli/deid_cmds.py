"""De-identification (PS3.15 Annex E): ``deid`` for files and folders, ``deid reidentify`` for the archive's operator.

``export --deidentify`` (in ``data.py``) releases an archived study the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import typer

from dicomguard.cli.common import EXIT_FAILED, EXIT_OK, console, fail, open_archive, print_json

OPTION_HELP = ("PS3.15 option in kebab-case (repeatable): retain-safe-private, retain-uids, retain-device-identity, "
               "retain-institution-identity, retain-patient-characteristics, retain-longitudinal-full-dates, "
               "retain-longitudinal-modified-dates, clean-descriptors, clean-structured-content, clean-graphics, clean-pixel-data")
PRESET_HELP = "research = basic profile + modified dates, patient characteristics, clean descriptors/structured content/graphics/pixels"


def parse(option: list[str], preset: str | None):  # type: ignore[no-untyped-def]
    from dicomguard.deid.options import parse_options

    try:
        return parse_options(option, preset)
    except ValueError as exc:
        fail(str(exc))


def report(run, as_json: bool, what: str) -> None:  # type: ignore[no-untyped-def]
    if as_json:
        print_json(run.to_json())
    else:
        console.print(f"{what}: {len(run.written)} released, {len(run.refused)} refused (project {run.project}; options "
                      f"{', '.join(run.options) or 'basic profile'})", highlight=False)
        for source, reason in run.refused:
            console.print(f"  [red]refused[/] {source}: {reason}", highlight=False)
    raise typer.Exit(EXIT_FAILED if run.refused else EXIT_OK)


def _files(inputs: list[Path]) -> Iterator[tuple[str, bytes]]:
    for root in inputs:
        paths = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in paths:
            yield str(path), path.read_bytes()


def deid_cmd(
    inputs: list[Path] = typer.Argument(None, help="DICOM files or folders (need not be in the archive)."),
    out: Path = typer.Option(None, "--out", help="Folder for the de-identified files: OUT/<study>/<series>/<instance>.dcm."),
    option: list[str] = typer.Option([], "--option", help=OPTION_HELP),
    preset: str = typer.Option(None, "--preset", help=PRESET_HELP),
    project: str = typer.Option("default", "--project", help="Pseudonyms are stable per project and unlinkable across projects."),
    reidentify: str = typer.Option(None, "--reidentify", help="Instead: resolve this pseudonymous Patient ID of --project "
                                   "to the archive's patient (recorded as a Security Alert)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """De-identify DICOM files (PS3.15 Annex E, burned-in text removed); exit 1 naming each object that could not be released clean."""
    if reidentify is not None:
        with open_archive() as archive:
            found = archive.operator.deid.reidentify(project, reidentify)
        if as_json:
            print_json({"project": project, "pseudonym": reidentify, "patient_ids": found})
        else:
            console.print("\n".join(found) if found else "no patient of this archive has that pseudonym", highlight=False)
        raise typer.Exit(EXIT_OK if found else EXIT_FAILED)
    if not inputs or out is None:
        fail("give INPUT... and --out DIR (or --reidentify PSEUDONYM)")
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        fail(f"no such file or folder: {', '.join(missing)}")
    options = parse(option, preset)
    with open_archive() as archive:
        run = archive.operator.deid.files(_files(inputs), out, options, project)
    report(run, as_json, f"de-identified into {out}")


def register(app: typer.Typer) -> None:
    app.command("deid")(deid_cmd)
