"""Policy commands: check, list and test the archive's Cedar policies (ADR 0003).

``policy check`` validates a folder of ``.cedar`` files exactly as the archive
does at start (parse, type-check against the schema, unique ids), without
starting anything. ``policy test`` asks the running policy set one question
("may this principal do this to this resource?") and explains the answer: the
deciding policies, their files, the reason and the attributes the decision
was made on. It never prints a patient's name or ID.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from dicomguard.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    console,
    fail,
    open_archive,
    out,
    print_json,
)
from dicomguard.core.access import NO_MFA_AGE, Action, RequestContext, Resource

if TYPE_CHECKING:
    from dicomguard.app.policies import Explanation
    from dicomguard.policy.engine import LoadedPolicy, PolicyEngine

policy_app = typer.Typer(help="Cedar authorization policies: check, list, test.", no_args_is_help=True)

_ACTIONS = ", ".join(a.value for a in Action)
_STUDY_ACTIONS = frozenset({Action.QUERY, Action.RETRIEVE, Action.EXPORT, Action.SHARE})


def _home_policy_directory() -> Path:
    from dicomguard.app.policies import policy_directory
    from dicomguard.config import load_settings, resolve_home
    from dicomguard.errors import ConfigurationError

    home = resolve_home()
    try:
        settings = load_settings(home)
    except ConfigurationError as exc:
        fail(str(exc))
    return policy_directory(home, settings)


def _load(directory: Path) -> PolicyEngine:
    from dicomguard.policy.engine import PolicyEngine, PolicyError

    try:
        return PolicyEngine.load(directory)
    except PolicyError as exc:
        fail(str(exc))


def _policy_json(p: LoadedPolicy) -> dict[str, object]:
    return {"id": p.id, "effect": p.effect, "file": p.file, "annotations": dict(p.annotations)}


# -- check / list ---------------------------------------------------------------------


@policy_app.command("check")
def check(
    directory: Path = typer.Argument(None, help="Folder of .cedar files (default: the archive's HOME/policies)."),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout."),
) -> None:
    """Validate a folder of policy files as the archive does at start; exit 2 naming the bad file."""
    from dicomguard.policy.engine import PolicyEngine, PolicyError

    folder = directory if directory is not None else _home_policy_directory()
    try:
        engine = PolicyEngine.load(folder)
    except PolicyError as exc:
        if as_json:
            print_json({"directory": str(folder), "valid": False, "error": str(exc)})
        fail(str(exc))
    files: dict[str, list[dict[str, object]]] = {}
    for p in engine.policies.values():
        files.setdefault(p.file, []).append(_policy_json(p))
    if as_json:
        print_json({"directory": str(folder), "valid": True, "files": files})
        return
    console.print(f"[green]valid[/]: {len(engine.policies)} policies in {len(files)} files of {folder}", highlight=False)
    for name in sorted(files):
        out.print(name, highlight=False, soft_wrap=True)
        for p in files[name]:
            out.print(f"  {p['id']}\t{p['effect']}", highlight=False, soft_wrap=True)


@policy_app.command("list")
def list_(
    directory: Path = typer.Option(None, "--dir", help="Folder of .cedar files (default: the archive's HOME/policies)."),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout."),
) -> None:
    """List the policies: id, effect, file and annotations."""
    engine = _load(directory if directory is not None else _home_policy_directory())
    rows = [_policy_json(p) for p in engine.policies.values()]
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table("id", "effect", "file", "annotations", title=f"{len(rows)} policies")
    for r in rows:
        notes = ", ".join(f"{k}={v}" for k, v in r["annotations"].items() if k != "id")  # type: ignore[attr-defined]
        table.add_row(str(r["id"]), str(r["effect"]), str(r["file"]), notes)
    out.print(table)


# -- test -----------------------------------------------------------------------------


def _resource_label(r: Resource) -> str:
    if r.kind == "patient":
        return f"patient (archive reference {r.patient_ref})"  # the surrogate reference, never the Patient ID
    if r.kind == "study":
        return f"study {r.study_uid}"
    return f"{r.kind} {r.uid}" if r.uid and r.uid != r.kind else r.kind


def _context_json(c: RequestContext) -> dict[str, object]:
    doc = c.to_cedar()
    if c.mfa_age_s >= NO_MFA_AGE:
        doc["mfa_age"] = None  # no interactive session: never fresh
    return doc


@policy_app.command("test")
def test(
    principal_spec: str = typer.Option(..., "--principal", help="user:NAME, device:AE_TITLE or operator."),
    action_name: str = typer.Option(..., "--action", help=f"One of: {_ACTIONS}."),
    resource_spec: str = typer.Option(
        ..., "--resource",
        help="study:STUDY_UID, patient:PATIENT_ID, account:NAME, device:AE_TITLE, archive, audit-log, "
             "audit-message:about-itself|about-others|as-archive (for audit-send), allow-list or policy-set.",
    ),
    issuer: str = typer.Option(None, "--issuer", help="Issuer of Patient ID, when several patients share the ID."),
    mfa_age: int = typer.Option(None, "--mfa-age", min=0, help="Seconds since the user's last TOTP confirmation (default: no session)."),
    emergency: bool = typer.Option(False, "--emergency", help="As if the principal held a break-glass grant for the resource's patient."),
    studies_in_window: int = typer.Option(
        None, "--studies-in-window", min=0,
        help="Distinct studies retrieved/exported in the step-up window, this one included (default: 1 for retrieve/export).",
    ),
    external: bool = typer.Option(False, "--external", help="For share: the destination is outside the organisation."),
    policies: Path = typer.Option(None, "--policies", help="Test a draft folder of .cedar files instead of the archive's."),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout."),
) -> None:
    """Would PRINCIPAL be allowed ACTION on RESOURCE? Explains the decision; exit 0 allowed, 1 denied."""
    try:
        action = Action(action_name)
    except ValueError:
        fail(f"unknown action {action_name!r}; one of: {_ACTIONS}")
    draft = _load(policies) if policies is not None else None
    from dicomguard.errors import NotFoundError

    with open_archive() as archive:
        try:
            explanation = archive.operator.policies.explain(
                principal_spec, action, resource_spec, issuer=issuer, mfa_age=mfa_age, emergency=emergency,
                studies_in_window=studies_in_window, external=external, draft=draft,
            )
        except (ValueError, NotFoundError) as exc:
            fail(str(exc))
    _report(explanation, as_json)
    raise typer.Exit(EXIT_OK if explanation.decision.allowed else EXIT_FAILED)


def _report(e: Explanation, as_json: bool) -> None:
    from dicomguard.policy.engine import principal_entity, resource_entity

    principal, action, resource, context, decision, known = e.principal, e.action, e.resource, e.context, e.decision, e.policies
    notes = list(e.notes)
    deciding = [
        _policy_json(known[pid]) if pid in known else {"id": pid, "effect": "?", "file": "?", "annotations": {}}
        for pid in decision.policies
    ]
    p_entity = principal_entity(principal)
    r_entity = resource_entity(resource) or {"uid": {"type": resource.kind, "id": resource.uid}, "attrs": {}}
    if resource.kind == "patient":
        r_entity = {**r_entity, "uid": {"type": "Patient", "id": resource.patient_ref}}
    if action in _STUDY_ACTIONS and resource.kind != "study":
        notes.append(f"{action.value} applies to studies: the schema admits no other resource, so this is denied")
    verdict = "ALLOW" if decision.allowed else "DENY"
    doc = {
        "decision": verdict,
        "allowed": decision.allowed,
        "reason": decision.reason,
        "policies": deciding,
        "step_up": decision.step_up,
        "break_glass": decision.break_glass,
        "principal": {"label": principal.label(), "type": p_entity["uid"]["type"], "attributes": p_entity["attrs"]},  # type: ignore[index]
        "action": action.value,
        "resource": {"label": _resource_label(resource), "type": r_entity["uid"]["type"], "attributes": r_entity["attrs"]},  # type: ignore[index]
        "context": _context_json(context),
        "notes": notes,
    }
    if as_json:
        print_json(doc)
        return
    colour = "green" if decision.allowed else "red"

    def line(text: str, markup: bool = False) -> None:
        out.print(text, highlight=False, markup=markup, soft_wrap=True)

    line(f"[bold {colour}]{verdict}[/] {principal.label()} {action.value} {_resource_label(resource)}", markup=True)
    line(f"  reason    : {decision.reason}")
    if deciding:
        line("  deciding policies:")
        for p in deciding:
            marks = [f"{k}={v}" for k, v in p["annotations"].items() if k != "id"]  # type: ignore[attr-defined]
            line(f"    {p['id']}  ({p['effect']}, {p['file']})" + (f"  [{', '.join(marks)}]" if marks else ""))
    else:
        line("  deciding policies: none (default deny: no policy permits it)")
    if decision.step_up:
        line("  step-up   : a fresh TOTP confirmation (POST /auth/step-up) would permit it")
    if decision.break_glass:
        line("  emergency : permitted only under a break-glass grant (marked in the audit trail)")
    line(f"  principal : {doc['principal']['attributes']}")  # type: ignore[index]
    line(f"  resource  : {doc['resource']['attributes']}")  # type: ignore[index]
    line(f"  context   : {doc['context']}")
    for note in notes:
        line(f"  note      : {note}")


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy")

