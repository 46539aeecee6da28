"""``dicomguard``: entry point and archive-wide commands (init, keys)."""

from __future__ import annotations

import os
import secrets

import typer

from dicomguard.cli import (
    audit_cmds,
    backup_cmds,
    data,
    deid_cmds,
    detect_cmds,
    device_cmds,
    gateway_cmds,
    governance_cmds,
    incident_cmds,
    index_cmds,
    ledger_cmds,
    patient_cmds,
    policy_cmds,
    serve_cmds,
    share_cmds,
    study_cmds,
    token_cmds,
    user_cmds,
)
from dicomguard.cli.common import (
    EXIT_USAGE,
    ask_passphrase,
    console,
    fail,
    open_archive,
    print_json,
    setup_logging,
)

app = typer.Typer(
    name="dicomguard",
    help="Encrypted, write-once, tamper-evident DICOM archive.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="Key hierarchy management.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
data.register(app)
ledger_cmds.register(app)
index_cmds.register(app)
device_cmds.register(app)
gateway_cmds.register(app)
token_cmds.register(app)
serve_cmds.register(app)
audit_cmds.register(app)
user_cmds.register(app)
policy_cmds.register(app)
study_cmds.register(app)
patient_cmds.register(app)
backup_cmds.register(app)
deid_cmds.register(app)
detect_cmds.register(app)
share_cmds.register(app)
incident_cmds.register(app)
governance_cmds.register(app)


@app.callback()
def _main() -> None:
    setup_logging()


@app.command()
def init(
    admin: str = typer.Option(..., "--admin", help="Name of the first administrator account."),
    database: str = typer.Option("", "--database", help="SQLAlchemy URL of the index (default: SQLite in the home)."),
    generate_passphrase: bool = typer.Option(
        False, "--generate-passphrase", help="Generate the archive passphrase and show it once."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the one-time secrets as JSON."),
) -> None:
    """Create a new archive home: configuration, sealed keys, index, first administrator."""
    from dicomguard.app.home import init_home
    from dicomguard.config import resolve_home
    from dicomguard.errors import ConfigurationError

    home = resolve_home()
    passphrase = secrets.token_urlsafe(24) if generate_passphrase else ask_passphrase(confirm=True)
    try:
        result = init_home(home, passphrase, admin, database)
    except (ConfigurationError, ValueError) as exc:
        fail(str(exc))
    a = result.admin
    if as_json:
        doc = {"home": str(home), "admin": a.name, "password": a.password, "totp_secret": a.totp_secret,
               "recovery_key": result.recovery_key}
        if generate_passphrase:
            doc["passphrase"] = passphrase
        print_json(doc)
        return
    console.print(f"[green]Archive created[/] at {home}")
    console.print("These secrets are shown [bold]once[/]; they are not stored in clear anywhere:")
    if generate_passphrase:
        console.print(f"  archive passphrase : {passphrase}")
    console.print(f"  administrator      : {a.name}")
    console.print(f"  password           : {a.password}")
    console.print(f"  TOTP secret        : {a.totp_secret}")
    console.print(f"  TOTP URI           : {a.provisioning_uri}")
    console.print(f"  recovery key       : {result.recovery_key}")
    console.print("Keep the recovery key offline (a safe): with a backup it restores the archive without the passphrase.")


@keys_app.command("rotate")
def keys_rotate(
    change_passphrase: bool = typer.Option(False, "--change-passphrase", help="Seal the new KEK under a new passphrase."),
) -> None:
    """Issue a new key-encryption key and re-wrap every key under it (blobs are not re-encrypted)."""
    passphrase = ask_passphrase()
    new_passphrase = None
    if change_passphrase:
        new_passphrase = os.environ.get("DICOMGUARD_NEW_PASSPHRASE") or None
        if new_passphrase is None:
            fail("set DICOMGUARD_NEW_PASSPHRASE to the new passphrase", EXIT_USAGE)
    with open_archive() as archive:
        try:
            rotation = archive.operator.keys.rotate(passphrase, new_passphrase)
        except ValueError as exc:
            fail(str(exc))
    console.print(f"KEK {rotation.old_kek_id} replaced by {rotation.new_kek_id}; {rotation.rewrapped} keys re-wrapped; "
                  "the old KEK no longer opens anything.")


@keys_app.command("recovery-key")
def keys_recovery_key(replace: bool = typer.Option(False, "--replace", help="Issue a new one (the old one opens older vaults only).")) -> None:
    """Issue the recovery key that opens backups without the passphrase, and show it once (homes made before it existed)."""
    passphrase = ask_passphrase()
    with open_archive() as archive:
        try:
            printed = archive.operator.keys.new_recovery_key(passphrase, replace)
        except ValueError as exc:
            fail(str(exc))
    console.print(f"recovery key (shown once; keep it offline, e.g. in a safe): {printed}")


if __name__ == "__main__":
    app()
