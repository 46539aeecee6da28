"""User commands: accounts, roles, MFA, recovery codes, unlock (issue 5).

The CLI acts as the local operator (it holds the archive passphrase). One-time
secrets (password, TOTP secret, recovery codes) are printed once: on stdout as
JSON with ``--json``, otherwise on the terminal.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import segno
import typer
from sqlalchemy import select
from sqlalchemy.orm import Session

from dicomguard.cli.common import (
    EXIT_FAILED,
    console,
    fail,
    open_archive,
    out,
    print_json,
)
from dicomguard.core.access import Principal
from dicomguard.core.archive import Archive
from dicomguard.core.events import SecurityConfigurationChanged
from dicomguard.core.keyring import PURPOSE_IDENTITY
from dicomguard.crypto.blind_index import BlindField
from dicomguard.errors import NotFoundError
from dicomguard.identity import users
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import User

user_app = typer.Typer(help="User accounts, roles, MFA and recovery codes.", no_args_is_help=True)
ROLE_HELP = "One of: " + ", ".join(users.ROLES)


def _operator() -> Principal:
    return Principal.operator()


@contextmanager
def _account_change(archive: Archive, name: str, change: str) -> Iterator[Session]:
    """The write transaction of an account change, with its Security Configuration audit event (no secrets in ``change``)."""
    with write_session(archive.ctx.engine) as s:
        yield s
        archive.ctx.bus.publish(s, SecurityConfigurationChanged(_operator(), f"user:{name}", change, datetime.now(UTC)))


def _admin_errors(exc: Exception) -> None:
    if isinstance(exc, (NotFoundError, users.PrivilegeError)):
        fail(str(exc), EXIT_FAILED)
    if isinstance(exc, ValueError):
        fail(str(exc))
    raise exc


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
    with os.fdopen(fd, "wb") as f:
        segno.make(uri, error="m").save(f, kind=path.suffix.lower()[1:], scale=6)
    console.print(f"QR code for the authenticator app written to {path} (holds the TOTP secret: hand it over, then delete it)",
                  highlight=False)


def _referring_token(archive: Archive, referring_name: str) -> str:
    if not referring_name.strip(" ^=\x00"):
        return ""
    return archive.ctx.indexer.token(BlindField.REFERRING_PHYSICIAN, referring_name).hex()


def _attributes_json(department: str | None, attributes: dict[str, object]) -> dict[str, object]:
    """What the policies will see of the account (no name: the referring physician is a token)."""
    return {"department": department or "", **attributes}


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
    with open_archive() as archive:
        attributes: dict[str, object] = {
            "site": site or "", "modalities": list(modality or ()), "clearances": list(clearance or ()),
            "referring_token": _referring_token(archive, referring_name) if referring_name else "",
        }
        try:
            attributes = users.check_attributes(attributes)
            with _account_change(archive, name, f"account created with role {role}") as s:
                new = users.create_user(
                    s, archive.ctx.keyring.archive_key(PURPOSE_IDENTITY), name, role, department=department, attributes=attributes,
                )
        except (ValueError, NotFoundError) as exc:
            _admin_errors(exc)
    if qr is not None:
        _write_qr(new.provisioning_uri, qr)
    if as_json:
        print_json({"name": new.name, "role": new.role, "department": users.check_department(department), "password": new.password,
                    "totp_secret": new.totp_secret, "provisioning_uri": new.provisioning_uri,
                    "attributes": _attributes_json(users.check_department(department), attributes)})
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
    with open_archive() as archive:
        changes: dict[str, object] = {}
        if site is not None:
            changes["site"] = site
        if modality or clear_modalities:
            changes["modalities"] = list(modality or ())
        if clearance or clear_clearances:
            changes["clearances"] = list(clearance or ())
        if referring_name is not None:
            changes["referring_token"] = _referring_token(archive, referring_name)
        if department is None and not changes:
            fail("nothing to change: give at least one attribute option")
        kwargs: dict[str, object] = dict(changes)
        if department is not None:
            kwargs["department"] = department
        try:
            with _account_change(archive, name, "policy attributes changed: " + ", ".join(sorted(kwargs))) as s:
                result = users.set_attributes(s, _operator(), name, **kwargs)
        except (ValueError, NotFoundError, users.PrivilegeError) as exc:
            _admin_errors(exc)
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
    with open_archive() as archive, read_session(archive.ctx.engine) as s:
        infos = users.list_users(s)
        attributes = {u.name: users.decode_attributes(u.attributes) for u in s.scalars(select(User))}
    if as_json:
        print_json([{"name": u.name, "role": u.role, "roles": list(u.roles), "department": u.department,
                     "disabled": u.disabled, "created_at": u.created_at, "attributes": attributes.get(u.name, {})} for u in infos])
        return
    for u in infos:
        out.print(f"{u.name}\t{','.join(u.roles)}\t{u.department or '-'}\t{'disabled' if u.disabled else 'enabled'}",
                  highlight=False)


def _simple(name: str, change: str, action, message: str) -> None:  # type: ignore[no-untyped-def]
    with open_archive() as archive:
        try:
            with _account_change(archive, name, change) as s:
                result = action(archive, s)
        except (ValueError, NotFoundError, users.PrivilegeError) as exc:
            _admin_errors(exc)
    console.print(message.format(result=result))


@user_app.command("disable")
def disable(name: str = typer.Argument(...)) -> None:
    """Disable an account: its sessions and tokens stop working at once."""
    _simple(name, "account disabled", lambda a, s: users.set_disabled(s, _operator(), name, True), f"{name} disabled; sessions and tokens revoked")


@user_app.command("enable")
def enable(name: str = typer.Argument(...)) -> None:
    """Re-enable a disabled account."""
    _simple(name, "account enabled", lambda a, s: users.set_disabled(s, _operator(), name, False), f"{name} enabled")


@user_app.command("unlock")
def unlock(name: str = typer.Argument(...)) -> None:
    """Clear the failed-login counter and lockout of an account."""
    _simple(name, "account unlocked", lambda a, s: users.unlock(s, _operator(), name), f"{name} unlocked")


@user_app.command("grant")
def grant(name: str = typer.Argument(...), role: str = typer.Option(..., "--role", help=ROLE_HELP)) -> None:
    """Grant an additional role."""
    _simple(name, f"role {role} granted", lambda a, s: users.grant_role(s, _operator(), name, role), f"{name}: role {role} granted")


@user_app.command("revoke")
def revoke(name: str = typer.Argument(...), role: str = typer.Option(..., "--role", help=ROLE_HELP)) -> None:
    """Revoke an additional role (the primary role stays; disable the account to remove all access)."""
    with open_archive() as archive:
        try:
            with _account_change(archive, name, f"role {role} revoked") as s:
                done = users.revoke_role(s, _operator(), name, role)
        except (ValueError, NotFoundError, users.PrivilegeError) as exc:
            _admin_errors(exc)
    if not done:
        fail(f"{name} has no granted role {role}", EXIT_FAILED)
    console.print(f"{name}: role {role} revoked")


@user_app.command("reset-mfa")
def reset_mfa(
    name: str = typer.Argument(...),
    as_json: bool = typer.Option(False, "--json"),
    qr: Path = typer.Option(None, "--qr", help="Write the enrolment QR code of the provisioning URI to this .png or .svg file (mode 600)."),
) -> None:
    """Issue a new TOTP secret (shown once); the old one stops working and sessions end."""
    with open_archive() as archive:
        try:
            with _account_change(archive, name, "TOTP secret replaced") as s:
                secret, uri = users.reset_mfa(s, archive.ctx.keyring.archive_key(PURPOSE_IDENTITY), _operator(), name)
        except (ValueError, NotFoundError, users.PrivilegeError) as exc:
            _admin_errors(exc)
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
    with open_archive() as archive:
        try:
            with _account_change(archive, name, "recovery codes replaced") as s:
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
