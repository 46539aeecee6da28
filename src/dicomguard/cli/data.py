"""Data commands: import, export, ls, show, erase.

Each command is one action of the local operator through the core services:
decided by the policies and recorded in the audit trail like any other
(listing patients is a Query, an export one Export event listing every object).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dicomguard.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, console, fail, open_archive, out, print_json


@contextmanager
def _narrow_if_too_broad() -> Iterator[None]:
    """A listing refused as too broad (``limits.max_search_candidates``, recorded) ends with the reason, not a trace."""
    from dicomguard.errors import SearchTooBroad

    try:
        yield
    except SearchTooBroad as exc:
        fail(str(exc))


def _files(paths: list[Path]) -> Iterator[Path]:
    for p in paths:
        if p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames.sort()
                for name in sorted(filenames):
                    yield Path(dirpath) / name
        else:
            yield p


def _loader(path: Path):  # type: ignore[no-untyped-def]
    from dicomguard.errors import RejectedObject, RejectReason

    def load() -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise RejectedObject(RejectReason.UNREADABLE, f"cannot read file: {exc.strerror}") from None

    return load


def import_cmd(
    paths: list[Path] = typer.Argument(..., help="Files and folders (recursive)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Import DICOM Part 10 files into the archive. Exit 1 if any file was rejected."""
    from dicomguard.core.ingest import IngestStatus

    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        fail(f"no such file or folder: {', '.join(missing)}")
    files = list(_files(paths))
    counts: Counter[str] = Counter()
    rejected: list[dict[str, str]] = []
    with open_archive() as archive, Progress(
        TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, disable=as_json or not console.is_terminal,
    ) as progress:
        task = progress.add_task("import", total=len(files))
        items = ((str(f), _loader(f)) for f in files)
        for outcome in archive.operator.store.ingest_many(items, source="cli-import"):
            if outcome.error is not None:
                counts["rejected"] += 1
                rejected.append({"path": outcome.label, "reason": outcome.error.reason.value, "detail": outcome.error.detail})
            else:
                assert outcome.result is not None
                counts[outcome.result.status.value] += 1
            progress.advance(task)
    summary = {
        "stored": counts[IngestStatus.STORED.value],
        "duplicate": counts[IngestStatus.DUPLICATE.value],
        "rejected": len(rejected),
        "rejections": rejected,
    }
    if as_json:
        print_json(summary)
    else:
        console.print(f"stored {summary['stored']}, duplicate {summary['duplicate']}, rejected {summary['rejected']}")
        for r in rejected:
            console.print(f"  [red]rejected[/] {r['path']}: {r['reason']}: {r['detail']}", highlight=False)
    raise typer.Exit(EXIT_FAILED if rejected else EXIT_OK)


def export_cmd(
    outdir: Path = typer.Argument(..., help="Folder to write DICOM files into."),
    study: str = typer.Option(None, "--study", help="Study Instance UID."),
    series: str = typer.Option(None, "--series", help="Series Instance UID."),
    instance: str = typer.Option(None, "--instance", help="SOP Instance UID."),
    as_json: bool = typer.Option(False, "--json"),
    deidentify: bool = typer.Option(False, "--deidentify", help="Release the study de-identified (PS3.15 Annex E; with --study)."),
    option: list[str] = typer.Option([], "--option", help="With --deidentify: a PS3.15 option in kebab-case (repeatable)."),
    preset: str = typer.Option(None, "--preset", help="With --deidentify: 'research' (see `dicomguard deid --help`)."),
    project: str = typer.Option("default", "--project", help="With --deidentify: the pseudonym project."),
) -> None:
    """Export verified objects as DICOM files: OUTDIR/<study>/<series>/<instance>.dcm (--deidentify: pseudonymous UIDs)."""
    if sum(x is not None for x in (study, series, instance)) != 1:
        fail("give exactly one of --study, --series, --instance")
    if deidentify:
        from dicomguard.cli.deid_cmds import parse, report

        if study is None:
            fail("--deidentify exports a whole study: use --study")
        options = parse(option, preset)
        from dicomguard.errors import NotFoundError

        with open_archive() as archive:
            try:
                run = archive.operator.deid.export_study(study, outdir, options, project)
            except NotFoundError:
                fail("nothing to export: no such object", EXIT_FAILED)
        report(run, as_json, f"exported de-identified into {outdir}")
    elif option or preset:
        fail("--option and --preset need --deidentify")
    from dicomguard.core.access import Action
    from dicomguard.errors import DicomGuardError, NotFoundError

    written: list[str] = []
    failures: list[dict[str, str]] = []
    with open_archive() as archive:
        try:
            plan = archive.operator.retrieve.plan(
                Action.EXPORT, study_uids=[study] if study else (), series_uids=[series] if series else (),
                sop_instance_uids=[instance] if instance else (),
            )
        except NotFoundError:
            fail("nothing to export: no such object", EXIT_FAILED)
        for rec, obj in plan.objects():  # one Export event for the whole plan, recorded before the first file
            if isinstance(obj, DicomGuardError):
                failures.append({"instance": rec.sop_instance_uid, "error": str(obj)})
                continue
            target = outdir / obj.study_uid / obj.series_uid / f"{obj.sop_instance_uid}.dcm"
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".part")
            tmp.write_bytes(obj.data)
            tmp.replace(target)
            written.append(str(target))
    if as_json:
        print_json({"written": written, "failed": failures})
    else:
        console.print(f"exported {len(written)} objects to {outdir}")
        for f in failures:
            console.print(f"  [red]refused[/] {f['instance']}: {f['error']}", highlight=False)
    raise typer.Exit(EXIT_FAILED if failures else EXIT_OK)


LEVELS = ("patients", "studies", "series", "instances")


def ls_cmd(
    level: str = typer.Argument("studies", help="patients | studies | series | instances"),
    patient_id: str = typer.Option(None, "--patient-id", help="Patient ID (wildcards * ? allowed)."),
    name: str = typer.Option(None, "--name", help="Patient name (wildcards allowed, case-insensitive)."),
    study: str = typer.Option(None, "--study", help="Study Instance UID."),
    series: str = typer.Option(None, "--series", help="Series Instance UID."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List what the archive holds."""
    if level not in LEVELS:
        fail(f"level must be one of {', '.join(LEVELS)}")
    from dicomguard.core.query import PatientFilter, StudyFilter

    pf = PatientFilter(patient_id=patient_id, name=name)
    with open_archive() as archive, _narrow_if_too_broad():
        q = archive.operator.query  # one Query record per listing
        if level == "patients":
            rows = [r.to_json() for r in q.find_patients(pf)]
            cols = ["patient_id", "issuer", "name", "birth_date", "sex", "studies", "instances"]
        elif level == "studies":
            rows = [r.to_json() for r in q.find_studies(StudyFilter(patient=pf, study_uid=study))]
            cols = ["uid", "patient_id", "patient_name", "date", "accession_number", "modalities", "series", "instances"]
        elif level == "series":
            rows = [r.to_json() for r in q.find_series(study_uid=study)]
            cols = ["uid", "study_uid", "modality", "number", "description", "instances"]
        else:
            rows = [r.to_json() for r in q.find_instances(study_uid=study, series_uid=series)]
            cols = ["sop_instance_uid", "series_uid", "number", "frames", "transfer_syntax", "size"]
    if as_json:
        print_json(rows)
        return
    table = Table(*cols, title=f"{len(rows)} {level}")
    for r in rows:
        table.add_row(*(", ".join(v) if isinstance(v, list) else "" if v is None else str(v) for v in (r[c] for c in cols)))
    out.print(table)


def show_cmd(
    uid: str = typer.Argument(..., help="A Study, Series or SOP Instance UID."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show one study, series or instance with its children."""
    from dicomguard.errors import NotFoundError

    with open_archive() as archive:
        try:
            doc = archive.operator.query.describe(uid).to_json()  # one Query record
        except NotFoundError:
            fail(f"no study, series or instance {uid}", EXIT_FAILED)
    if as_json:
        print_json(doc)
        return
    table = Table("attribute", "value", title=f"{doc['level']} {uid}")
    for k, v in doc.items():
        if isinstance(v, list) and v and isinstance(v[0], dict):
            v = f"{len(v)} entries"
        table.add_row(k, str(v))
    out.print(table)


def erase_cmd(
    patient: str = typer.Option(..., "--patient", help="Patient ID to erase."),
    reason: str = typer.Option(..., "--reason", help="Why (recorded, sealed)."),
    issuer: str = typer.Option(None, "--issuer", help="Issuer of Patient ID, when the ID is ambiguous."),
    yes: bool = typer.Option(False, "--yes", help="Confirm: this cannot be undone."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Crypto-shred a patient: destroy their data key; their objects become unreadable everywhere."""
    if not yes:
        fail("erasure cannot be undone; repeat with --yes", EXIT_USAGE)
    if not reason.strip():
        fail("--reason must not be empty")
    from dicomguard.core.erase import AmbiguousPatientError
    from dicomguard.errors import NotFoundError

    with open_archive() as archive:
        try:
            result = archive.operator.erase.patient(patient, reason, issuer)
        except NotFoundError:
            fail("no such patient", EXIT_FAILED)
        except AmbiguousPatientError as exc:
            fail(str(exc))
    if as_json:
        print_json({"erased_patients": len(result.patient_refs), "studies": result.studies, "instances": result.instances})
    else:
        console.print(f"erased: {result.studies} studies, {result.instances} instances; the data key is destroyed.")


def register(app: typer.Typer) -> None:
    app.command("import")(import_cmd)
    app.command("export")(export_cmd)
    app.command("ls")(ls_cmd)
    app.command("show")(show_cmd)
    app.command("erase")(erase_cmd)
