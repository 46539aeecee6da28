"""User commands: accounts, roles, MFA, recovery codes, unlock (issue 5).

The CLI acts as the local operator (it holds the archive passphrase). One-time
secrets (password, TOTP secret, recovery codes) are printed once: on stdout as
JSON with ``--json``, otherwise on the terminal.
"""

from __future__ import annotations

import typer

from dicomguard.cli.common import (
    EXIT_FAILED,
    console,
    fail,
    open_archive,
    out,
    print_json,
)
from dicomguard.core.access import Principal
from dicomguard.core.keyring import PURPOSE_IDENTITY
from dicomguard.errors import NotFoundError
from dicomguard.identity import users
from dicomguard.index.db import read_session, write_session

user_app = typer.Typer(help="User accounts, roles, MFA and recovery codes.", no_args_is_help=True)
ROLE_HELP = "One of: " + ", ".join(users.ROLES)


def _operator() -> Principal:
    return Principal.operator()


def _admin_errors(exc: Exception) -> None:
    if isinstance(exc, (NotFoundError, users.PrivilegeError)):
        fail(str(exc), EXIT_FAILED)
    if isinstance(exc, ValueError):
        fail(str(exc))
    raise exc


@user_app.command("add")
def add(
    name: str = typer.Argument(..., help="Unique account name (lower case)."),
    role: str = typer.Option(..., "--role", help=ROLE_HELP),
    department: str = typer.Option(None, "--department", help="Department or site of the user."),
    as_json: bool = typer.Option(False, "--json", help="Print the one-time secrets as JSON."),
) -> None:
    """Create an account; prints its one-time password, TOTP secret and provisioning URI once."""
    with open_archive() as archive:
        try:
            with write_session(archive.ctx.engine) as s:
                new = users.create_user(s, archive.ctx.keyring.archive_key(PURPOSE_IDENTITY), name, role, department=department)
        except (ValueError, NotFoundError) as exc:
            _admin_errors(exc)
    if as_json:
        print_json({"name": new.name, "role": new.role, "department": department, "password": new.password,
                    "totp_secret": new.totp_secret, "provisioning_uri": new.provisioning_uri})
        return
    console.print(f"[green]User {new.name}[/] ({new.role}) created. Shown [bold]once[/]:")
    console.print(f"  password    : {new.password}")
    console.print(f"  TOTP secret : {new.totp_secret}")
    console.print(f"  TOTP URI    : {new.provisioning_uri}")


@user_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="JSON on stdout.")) -> None:
    """List accounts, their roles and state (no secrets)."""
    with open_archive() as archive, read_session(archive.ctx.engine) as s:
        infos = users.list_users(s)
    if as_json:
        print_json([{"name": u.name, "role": u.role, "roles": list(u.roles), "department": u.department,
                     "disabled": u.disabled, "created_at": u.created_at} for u in infos])
        return
    for u in infos:
        out.print(f"{u.name}\t{','.join(u.roles)}\t{u.department or '-'}\t{'disabled' if u.disabled else 'enabled'}",
                  highlight=False)


def _simple(action, message: str) -> None:  # type: ignore[no-untyped-def]
    with open_archive() as archive:
        try:
            with write_session(archive.ctx.engine) as s:
                result = action(archive, s)
        except (ValueError, NotFoundError, users.PrivilegeError) as exc:
            _admin_errors(exc)
    console.print(message.format(result=result))


@user_app.command("disable")
def disable(name: str = typer.Argument(...)) -> None:
    """Disable an account: its sessions and tokens stop working at once."""
    _simple(lambda a, s: users.set_disabled(s, _operator(), name, True), f"{name} disabled; sessions and tokens revoked")


@user_app.command("enable")
def enable(name: str = typer.Argument(...)) -> None:
    """Re-enable a disabled account."""
    _simple(lambda a, s: users.set_disabled(s, _operator(), name, False), f"{name} enabled")


@user_app.command("unlock")
def unlock(name: str = typer.Argument(...)) -> None:
    """Clear the failed-login counter and lockout of an account."""
    _simple(lambda a, s: users.unlock(s, _operator(), name), f"{name} unlocked")


@user_app.command("grant")
def grant(name: str = typer.Argument(...), role: str = typer.Option(..., "--role", help=ROLE_HELP)) -> None:
    """Grant an additional role."""
    _simple(lambda a, s: users.grant_role(s, _operator(), name, role), f"{name}: role {role} granted")


@user_app.command("revoke")
def revoke(name: str = typer.Argument(...), role: str = typer.Option(..., "--role", help=ROLE_HELP)) -> None:
    """Revoke an additional role (the primary role stays; disable the account to remove all access)."""
    with open_archive() as archive:
        try:
            with write_session(archive.ctx.engine) as s:
                done = users.revoke_role(s, _operator(), name, role)
        except (ValueError, NotFoundError, users.PrivilegeError) as exc:
            _admin_errors(exc)
    if not done:
        fail(f"{name} has no granted role {role}", EXIT_FAILED)
    console.print(f"{name}: role {role} revoked")


@user_app.command("reset-mfa")
def reset_mfa(name: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")) -> None:
    """Issue a new TOTP secret (shown once); the old one stops working and sessions end."""
    with open_archive() as archive:
        try:
            with write_session(archive.ctx.engine) as s:
                secret, uri = users.reset_mfa(s, archive.ctx.keyring.archive_key(PURPOSE_IDENTITY), _operator(), name)
        except (ValueError, NotFoundError, users.PrivilegeError) as exc:
            _admin_errors(exc)
    if as_json:
        print_json({"name": name, "totp_secret": secret, "provisioning_uri": uri})
        return
    console.print(f"New TOTP secret for {name}, shown [bold]once[/]:")
    console.print(f"  TOTP secret : {secret}")
    console.print(f"  TOTP URI    : {uri}")


@user_app.command("recovery-codes")
def recovery_codes(name: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")) -> None:
    """Replace the user's recovery codes with 10 new single-use codes (shown once, stored hashed)."""
    with open_archive() as archive:
        try:
            with write_session(archive.ctx.engine) as s:
                codes = users.new_recovery_codes(s, _operator(), name)
        except (ValueError, NotFoundError, users.PrivilegeError) as exc:
            _admin_errors(exc)
    if as_json:
        print_json({"name": name, "recovery_codes": codes})
        return
    console.print(f"Recovery codes for {name}, each usable once, shown [bold]once[/]:")
    for code in codes:
        out.print(code, highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(user_app, name="user")
