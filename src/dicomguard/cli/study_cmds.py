"""Study commands: the access attributes policies read of a study (labels, department).

The CLI acts as the local operator; the change is a ``study-change`` action of
the core (``StudyService.set_access``), recorded as a Security Configuration
alert in the audit trail in the transaction of the change. Labels are lower case,
``[a-z0-9_-]{1,32}`` (e.g. ``vip``, ``deidentified``); departments are compared
in canonical upper case.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from dicomguard.cli.common import EXIT_FAILED, console, fail, open_archive, print_json

if TYPE_CHECKING:
    from dicomguard.core.access import StudyAccess

study_app = typer.Typer(help="Study access attributes read by the policies: labels and department.", no_args_is_help=True)


def _change(study_uid: str, department: str | None = None, add: list[str] | None = None, remove: list[str] | None = None) -> StudyAccess:
    from dicomguard.errors import NotFoundError

    with open_archive() as archive:
        try:
            return archive.operator.studies.set_access(study_uid, department=department, add_labels=add or (), remove_labels=remove or ())
        except NotFoundError as exc:
            fail(str(exc), EXIT_FAILED)
        except ValueError as exc:
            fail(str(exc))


@study_app.command("label")
def label(
    study_uid: str = typer.Argument(..., help="Study Instance UID."),
    add: list[str] = typer.Option(None, "--add", help="Label to add, e.g. vip; repeatable."),
    remove: list[str] = typer.Option(None, "--remove", help="Label to remove; repeatable."),
    as_json: bool = typer.Option(False, "--json", help="Print the resulting labels as JSON."),
) -> None:
    """Add or remove labels of a study (e.g. ``vip``: only users cleared for it may read the study)."""
    labels = sorted(_change(study_uid, add=add, remove=remove).labels)
    if as_json:
        print_json({"study_uid": study_uid, "labels": labels})
        return
    console.print(f"study {study_uid}: labels {', '.join(labels) or '(none)'}", highlight=False)


@study_app.command("department")
def department(
    study_uid: str = typer.Argument(..., help="Study Instance UID."),
    name: str = typer.Argument(..., help="Department, e.g. RADIOLOGY; '' clears it."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Set the department of a study (whose radiologists, cardiologists and devices may read it)."""
    value = _change(study_uid, department=name).department
    if as_json:
        print_json({"study_uid": study_uid, "department": value})
        return
    console.print(f"study {study_uid}: department {value or '(none)'}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(study_app, name="study")
