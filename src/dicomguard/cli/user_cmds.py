"""User commands: accounts, roles, MFA, recovery codes, unlock.

Each command is one call of the account service as the local operator:
decided by the policies (``account-create``, ``account-change``,
``account-read``) and recorded in the audit trail in the transaction of the
change. One-time secrets (password, TOTP secret, recovery codes) are printed
once: on stdout as JSON with ``--json``, otherwise on the terminal.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer

from dicomguard.cli.common import (
    EXIT_FAILED,
    console,
    fail,
    open_archive,
    out,
    print_json,
)
from dicomguard.identity.roles import ROLES

if TYPE_CHECKING:
    from dicomguard.identity.accounts import AccountService

user_app = typer.Typer(help="User accounts, roles, MFA and recovery codes.", no_args_is_help=True)
ROLE_HELP = "One of: " + ", ".join(ROLES)
T = TypeVar("T")


@contextmanager
def _accounts() -> Iterator[AccountService]:
    """The account service of the local operator; unknown accounts exit 1, invalid values 2."""
    from dicomguard.errors import NotFoundError

    with open_archive() as archive:
        try:
            yield archive.operator.accounts
        except NotFoundError as exc:
            fail(str(exc), EXIT_FAILED)
        except ValueError as exc:
            fail(str(exc))


def _run(action: Callable[[AccountService], T]) -> T:
    with _accounts() as accounts:
        return action(accounts)


# Policy attribute options shared by ``user add`` and ``user set`` (read by the Cedar policies).
_DEPARTMENT_HELP = "Department of the user (compared exactly with a study's department by the policies)."
_SITE_HELP = "Site (hospital) of the user."
_MODALITY_HELP = "A modality the user works on (technologists, sonographers), e.g. CT; repeatable."
_REFERRING_HELP = ("Referring Physician's Name under which this physician refers studies, e.g. 'DOE^JOHN'. "
                   "Only its keyed hash (blind index) is stored, never the name.")
_CLEARANCE_HELP = "A study label the user is cleared to read, e.g. vip; repeatable."


_QR_HELP = "Write the enrolment QR code of the provisioning URI to this .png or .svg file (mode 600)."


def _write_qr(uri: str, path: Path) -> None:
    """The provisioning URI as a QR code an authenticator app scans. It holds the TOTP secret: created mode 600, never overwritten."""
    if path.suffix.lower() not in (".png", ".svg"):
        fail("--qr must name a .png or .svg file")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        fail(f"{path} exists; the QR code holds a secret and is never written over another file")
    import segno

    with os.fdopen(fd, "wb") as f:
        segno.make(uri, error="m").save(f, kind=path.suffix.lower()[1:], scale=6)
    console.print(f"QR code for the authenticator app written to {path} (holds the TOTP secret: hand it over, then delete it)",
                  highlight=False)


@user_app.command("add")
def add(
    name: str = typer.Argument(..., help="Unique account name (lower case)."),
    role: str = typer.Option(..., "--role", help=ROLE_HELP),
    department: str = typer.Option(None, "--department", help=_DEPARTMENT_HELP),
    site: str = typer.Option(None, "--site", help=_SITE_HELP),
    modality: list[str] = typer.Option(None, "--modality", help=_MODALITY_HELP),
    referring_name: str = typer.Option(None, "--referring-name", help=_REFERRING_HELP),
    clearance: list[str] = typer.Option(None, "--clearance", help=_CLEARANCE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the one-time secrets as JSON."),
    qr: Path = typer.Option(None, "--qr", help=_QR_HELP),
) -> None:
    """Create an account; prints its one-time password, TOTP secret and provisioning URI once."""
    created = _run(lambda accounts: accounts.create(
        name, role, department=department, site=site, modalities=modality or None, referring_name=referring_name,
        clearances=clearance or None,
    ))
    new = created.secrets
    if qr is not None:
        _write_qr(new.provisioning_uri, qr)
    if as_json:
        # What the policies will see of the account (no name: the referring physician is a token).
        print_json({"name": new.name, "role": new.role, "department": created.department or None, "password": new.password,
                    "totp_secret": new.totp_secret, "provisioning_uri": new.provisioning_uri,
                    "attributes": {"department": created.department, **created.attributes}})
        return
    console.print(f"[green]User {new.name}[/] ({new.role}) created. Shown [bold]once[/]:")
    console.print(f"  password    : {new.password}")
    console.print(f"  TOTP secret : {new.totp_secret}")
    console.print(f"  TOTP URI    : {new.provisioning_uri}")


@user_app.command("set")
def set_(
    name: str = typer.Argument(..., help="Account name."),
    department: str = typer.Option(None, "--department", help=_DEPARTMENT_HELP + " '' clears it."),
    site: str = typer.Option(None, "--site", help=_SITE_HELP + " '' clears it."),
    modality: list[str] = typer.Option(None, "--modality", help=_MODALITY_HELP + " Replaces the list."),
    clear_modalities: bool = typer.Option(False, "--clear-modalities", help="Remove every modality."),
    referring_name: str = typer.Option(None, "--referring-name", help=_REFERRING_HELP + " '' clears it."),
    clearance: list[str] = typer.Option(None, "--clearance", help=_CLEARANCE_HELP + " Replaces the list."),
    clear_clearances: bool = typer.Option(False, "--clear-clearances", help="Remove every clearance."),
    as_json: bool = typer.Option(False, "--json", help="Print the resulting attributes as JSON."),
) -> None:
    """Change the policy attributes of an account (department, site, modalities, referring physician, clearances).

    Options not given stay as they are. Effective at the user's next request.
    """
    if modality and clear_modalities:
        fail("give either --modality or --clear-modalities")
    if clearance and clear_clearances:
        fail("give either --clearance or --clear-clearances")
    modalities = [] if clear_modalities else (modality or None)
    clearances = [] if clear_clearances else (clearance or None)
    if department is None and site is None and modalities is None and clearances is None and referring_name is None:
        fail("nothing to change: give at least one attribute option")
    result = _run(lambda accounts: accounts.set_attributes(
        name, department=department, site=site, modalities=modalities, referring_name=referring_name, clearances=clearances,
    ))
    if as_json:
        print_json({"name": name, "attributes": result})
        return
    console.print(f"{name}: attributes updated", highlight=False)
    for key, value in result.items():
        shown = ",".join(value) if isinstance(value, list) else value  # type: ignore[arg-type]
        console.print(f"  {key:<16}: {shown or '-'}", highlight=False)


@user_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="JSON on stdout.")) -> None:
    """List accounts, their roles and state (no secrets)."""
    infos = _run(lambda accounts: accounts.list())
    if as_json:
        print_json([{"name": u.name, "role": u.role, "roles": list(u.roles), "department": u.department,
                     "disabled": u.disabled, "created_at": u.created_at, "attributes": u.attributes} for u in infos])
        return
    for u in infos:
        out.print(f"{u.name}\t{','.join(u.roles)}\t{u.department or '-'}\t{'disabled' if u.disabled else 'enabled'}",
                  highlight=False)


@user_app.command("disable")
def disable(name: str = typer.Argument(...)) -> None:
    """Disable an account: its sessions and tokens stop working at once."""
    _run(lambda accounts: accounts.disable(name))
    console.print(f"{name} disabled; sessions and tokens revoked")


@user_app.command("enable")
def enable(name: str = typer.Argument(...)) -> None:
    """Re-enable a disabled account."""
    _run(lambda accounts: accounts.enable(name))
    console.print(f"{name} enabled")


@user_app.command("unlock")
def unlock(name: str = typer.Argument(...)) -> None:
    """Clear the failed-login counter and lockout of an account."""
    _run(lambda accounts: accounts.unlock(name))
    console.print(f"{name} unlocked")


@user_app.command("grant")
def grant(name: str = typer.Argument(...), role: str = typer.Option(..., "--role", help=ROLE_HELP)) -> None:
    """Grant an additional role."""
    _run(lambda accounts: accounts.grant_role(name, role))
    console.print(f"{name}: role {role} granted")


@user_app.command("revoke")
def revoke(name: str = typer.Argument(...), role: str = typer.Option(..., "--role", help=ROLE_HELP)) -> None:
    """Revoke an additional role (the primary role stays; disable the account to remove all access)."""
    if not _run(lambda accounts: accounts.revoke_role(name, role)):
        fail(f"{name} has no granted role {role}", EXIT_FAILED)
    console.print(f"{name}: role {role} revoked")


@user_app.command("reset-mfa")
def reset_mfa(
    name: str = typer.Argument(...),
    as_json: bool = typer.Option(False, "--json"),
    qr: Path = typer.Option(None, "--qr", help="Write the enrolment QR code of the provisioning URI to this .png or .svg file (mode 600)."),
) -> None:
    """Issue a new TOTP secret (shown once); the old one stops working and sessions end."""
    secret, uri = _run(lambda accounts: accounts.reset_mfa(name))
    if qr is not None:
        _write_qr(uri, qr)
    if as_json:
        print_json({"name": name, "totp_secret": secret, "provisioning_uri": uri})
        return
    console.print(f"New TOTP secret for {name}, shown [bold]once[/]:")
    console.print(f"  TOTP secret : {secret}")
    console.print(f"  TOTP URI    : {uri}")


@user_app.command("recovery-codes")
def recovery_codes(name: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")) -> None:
    """Replace the user's recovery codes with 10 new single-use codes (shown once, stored hashed)."""
    codes = _run(lambda accounts: accounts.new_recovery_codes(name))
    if as_json:
        print_json({"name": name, "recovery_codes": codes})
        return
    console.print(f"Recovery codes for {name}, each usable once, shown [bold]once[/]:")
    for code in codes:
        out.print(code, highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(user_app, name="user")
