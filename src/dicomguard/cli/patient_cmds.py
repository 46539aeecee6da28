"""Patient-identity conflicts: list them, and reconcile one with a recorded decision.

The same Patient ID (with its issuer) that arrives with different demographics is
kept as separate patient rows, each showing only what its own objects say, and
raised as a Security Alert. ``patient conflicts`` lists the open ones without PHI
(surrogate references, which fields differ, the departments of each side's
studies, the sender); ``patient resolve`` records the decision and its reason as a
Patient Record audit event (``PatientIdentityService``).
"""

from __future__ import annotations

import typer

from dicomguard.cli.common import EXIT_FAILED, console, fail, open_archive, print_json

patient_app = typer.Typer(help="Patient-identity conflicts: one Patient ID with different demographics.", no_args_is_help=True)


@patient_app.command("conflicts")
def conflicts(
    include_resolved: bool = typer.Option(False, "--all", help="Also list resolved conflicts."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List patient-identity conflicts (open ones unless --all): no names or IDs are printed."""
    with open_archive() as archive:
        found = archive.operator.patients.conflicts(include_resolved)
    if as_json:
        print_json([c.to_json() for c in found])
        return
    if not found:
        console.print("no open patient-identity conflicts" if not include_resolved else "no patient-identity conflicts")
        return
    for c in found:
        state = f"resolved {c.resolution} by {c.resolved_by}" if c.resolution else "open"
        console.print(
            f"{c.id}: {', '.join(c.fields) or 'demographics'} differ; patient {c.patient_ref} ({', '.join(c.departments) or '-'}) "
            f"vs {c.other_ref} ({', '.join(c.other_departments) or '-'}); sent by {c.source} at {c.created_at.isoformat()}; {state}",
            highlight=False,
        )


@patient_app.command("resolve")
def resolve(
    conflict_id: int = typer.Argument(..., help="Conflict number, from 'patient conflicts'."),
    decision: str = typer.Option(..., "--as", help="same-person or different-persons."),
    reason: str = typer.Option(..., "--reason", help="Why (recorded, sealed, in the audit trail)."),
    as_json: bool = typer.Option(False, "--json", help="Print the resolved conflict as JSON."),
) -> None:
    """Decide a patient-identity conflict. The patient rows stay apart either way; the decision is recorded."""
    from dicomguard.core.services.patients import Decision
    from dicomguard.errors import NotFoundError

    if decision not in {d.value for d in Decision}:
        fail("--as must be same-person or different-persons")
    with open_archive() as archive:
        try:
            record = archive.operator.patients.resolve(conflict_id, Decision(decision), reason)
        except NotFoundError as exc:
            fail(str(exc), EXIT_FAILED)
        except ValueError as exc:
            fail(str(exc))
    if as_json:
        print_json(record.to_json())
        return
    console.print(f"conflict {record.id}: resolved as {record.resolution}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(patient_app, name="patient")
