"""Governance: ``review assemble|list|sign-off``, ``risk add|list|update``, ``assets`` and ``assets sanitise``.

Every command goes through the governance service as the local operator: decided by the
policies and, when it changes something, recorded as evidence (audit trail and ledger).
"""

from __future__ import annotations

import typer

from dicomguard.cli.common import console, fail, open_archive, print_json, time_option

review_app = typer.Typer(help="Routine audit-log review (HIPAA 164.308(a)(1)(ii)(D)): assemble, list, sign off.", no_args_is_help=True)
risk_app = typer.Typer(help="Risk register (NIST SP 800-30), with the risks the archive derives from its own state.",
                       no_args_is_help=True)
assets_app = typer.Typer(help="Asset inventory (devices, storage, backup targets, privileged accounts); media sanitisation.",
                         invoke_without_command=True)


@review_app.command("assemble")
def review_assemble(since: str = typer.Option(None, "--since"), until: str = typer.Option(None, "--until")) -> None:
    """Assemble a review of a period (default: since the last review) from the audit trail; prints its number."""
    with open_archive() as archive:
        try:
            number = archive.operator.governance.assemble_review(time_option(since, "--since"), time_option(until, "--until"))
        except ValueError as exc:
            fail(str(exc))
    console.print(f"log review {number} assembled: sign it off with `dicomguard review sign-off {number} --note ...`", highlight=False)


@review_app.command("list")
def review_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Reviews with their counts and sign-off."""
    with open_archive() as archive:
        found = archive.operator.governance.reviews()
    if as_json:
        print_json(found)
        return
    for r in found:
        signed = f"signed off {r['signed_off_at']} by {r['signed_off_by']}" if r["signed_off_at"] else "NOT SIGNED OFF"
        console.print(f"{r['id']}: {r['since']} .. {r['until']}: {r['summary']} [{signed}]", highlight=False)
    if not found:
        console.print("no log reviews")


@review_app.command("sign-off")
def review_sign_off(review_id: int = typer.Argument(...), note: str = typer.Option(..., "--note")) -> None:
    """Sign a review off: what was looked at and what follows (recorded)."""
    with open_archive() as archive:
        try:
            archive.operator.governance.sign_off(review_id, note)
        except ValueError as exc:
            fail(str(exc))
    console.print(f"log review {review_id} signed off", highlight=False)


@risk_app.command("add")
def risk_add(
    asset: str = typer.Option(..., "--asset"), threat: str = typer.Option(..., "--threat"),
    vulnerability: str = typer.Option("", "--vulnerability"), likelihood: int = typer.Option(..., "--likelihood", help="1-5"),
    impact: int = typer.Option(..., "--impact", help="1-5"), owner: str = typer.Option(..., "--owner"),
    treatment: str = typer.Option("", "--treatment"), due: str = typer.Option(None, "--due", help="ISO date"),
) -> None:
    """Add a risk to the register."""
    with open_archive() as archive:
        try:
            number = archive.operator.governance.add_risk(asset=asset, threat=threat, vulnerability=vulnerability, likelihood=likelihood,
                                                          impact=impact, owner=owner, treatment=treatment, due=time_option(due, "--due"))
        except ValueError as exc:
            fail(str(exc))
    console.print(f"risk {number} added", highlight=False)


@risk_app.command("update")
def risk_update(
    risk_id: int = typer.Argument(...), status: str = typer.Option(None, "--status", help="open | accepted | closed"),
    treatment: str = typer.Option(None, "--treatment"), likelihood: int = typer.Option(None, "--likelihood"),
    impact: int = typer.Option(None, "--impact"), owner: str = typer.Option(None, "--owner"), due: str = typer.Option(None, "--due"),
) -> None:
    """Change a risk (recorded)."""
    with open_archive() as archive:
        try:
            archive.operator.governance.update_risk(risk_id, status=status, treatment=treatment, likelihood=likelihood, impact=impact,
                                                    owner=owner, due=time_option(due, "--due"))
        except ValueError as exc:
            fail(str(exc))
    console.print(f"risk {risk_id} updated", highlight=False)


@risk_app.command("list")
def risk_list(include_closed: bool = typer.Option(False, "--all"), as_json: bool = typer.Option(False, "--json")) -> None:
    """The register and the risks derived from the archive's state, highest score (likelihood x impact) first."""
    with open_archive() as archive:
        found = archive.operator.governance.risks(include_closed=include_closed)
    if as_json:
        print_json([r.to_json() for r in found])
        return
    for r in found:
        console.print(f"{r.id or '-'} [{r.source}] {r.score:2d} (L{r.likelihood} x I{r.impact}) {r.asset}: {r.threat} -- {r.vulnerability}"
                      f" [{r.status}; owner {r.owner}]", highlight=False)
    if not found:
        console.print("no risks")


@assets_app.callback()
def assets(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """The asset inventory: devices (certificate expiry, operations, legacy gateway), storage, backup targets, privileged accounts."""
    if ctx.invoked_subcommand is not None:
        return
    with open_archive() as archive:
        found = archive.operator.governance.assets()
    if as_json:
        print_json(found)
        return
    for d in found["devices"]:
        console.print(f"device {d['ae_title']} ({d['name']}): {d['operations']}; certificate expires in {d['expires_in_days']} days"
                      f"{'; REVOKED' if d['revoked'] else ''}{'; legacy gateway' if d['legacy_gateway'] else ''}", highlight=False)
    for ae in found["legacy_gateway_only"]:
        console.print(f"legacy modality {ae}: plaintext gateway only", highlight=False)
    console.print(f"storage: {found['storage']['kind']}", highlight=False)
    for t in found["backup_targets"]:
        console.print(f"backup target {t['name']} ({t['kind']}, immutable {t['immutable_days']} days)", highlight=False)
    for a in found["privileged_accounts"]:
        console.print(f"privileged account {a['name']} (last login or creation {a['last_login_or_created']})", highlight=False)


@assets_app.command("sanitise")
def assets_sanitise(media: str = typer.Option(..., "--media", help="The disk, tape, backup medium or key retired."),
                    method: str = typer.Option(..., "--method", help="e.g. 'NIST SP 800-88 purge: cryptographic erase'"),
                    reason: str = typer.Option(..., "--reason")) -> None:
    """Record the sanitisation or destruction of a medium or key as evidence (audit trail and ledger)."""
    with open_archive() as archive:
        try:
            archive.operator.governance.record_sanitisation(media, method, reason)
        except ValueError as exc:
            fail(str(exc))
    console.print(f"sanitisation of {media} recorded", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(review_app, name="review")
    app.add_typer(risk_app, name="risk")
    app.add_typer(assets_app, name="assets")
