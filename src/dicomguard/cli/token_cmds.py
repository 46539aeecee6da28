"""Token commands: issue and revoke DICOMweb bearer tokens.

``token create`` prints only the token on stdout (messages go to stderr) so a
script can capture it: ``TOKEN=$(dicomguard token create --user dr.who)``.
"""

from __future__ import annotations

import sys

import typer

from dicomguard.cli.common import EXIT_FAILED, console, fail, open_archive

TOKEN_SCOPES = ("store", "query", "retrieve", "export", "audit-read", "administer")  # identity.tokens.TOKEN_SCOPES (checked there)

token_app = typer.Typer(help="Bearer tokens for DICOMweb (HTTPS).", no_args_is_help=True)


@token_app.command("create")
def create(
    user: str = typer.Option(..., "--user", help="The account the token speaks for."),
    ttl: str = typer.Option("15m", "--ttl", help="Lifetime: 15m, 8h, 1d ... (at most 30d)."),
    scope: list[str] = typer.Option(
        None, "--scope", help=f"Limit the token to this action; repeatable ({', '.join(TOKEN_SCOPES)}). Default: the user's full rights.",
    ),
) -> None:
    """Issue a token for an enabled user; prints the token (shown once, stored only as SHA-256).

    A service account should get a scoped token: ``--scope store`` makes an upload
    service write-only (a stolen token reads nothing back).
    """
    from dicomguard.errors import NotFoundError
    from dicomguard.identity.tokens import check_scopes, parse_ttl

    try:
        lifetime = parse_ttl(ttl)
        scopes = check_scopes(scope)
    except ValueError as exc:
        fail(str(exc))
    with open_archive() as archive:
        try:
            token = archive.operator.accounts.create_token(user, lifetime, scopes)
        except NotFoundError as exc:
            fail(str(exc), EXIT_FAILED)
    sys.stdout.write(token + "\n")
    sys.stdout.flush()
    console.print(f"token for {user} valid for {ttl}" + (f", limited to {', '.join(scopes)}" if scopes else ""))


@token_app.command("revoke")
def revoke(
    user: str = typer.Option(None, "--user", help="Revoke every live token of this user."),
) -> None:
    """Revoke a token read from stdin (keeps it out of process lists), or all tokens of --user."""
    from dicomguard.errors import NotFoundError

    with open_archive() as archive:
        if user:
            try:
                n = archive.operator.accounts.revoke_tokens(user)
            except NotFoundError as exc:
                fail(str(exc), EXIT_FAILED)
            console.print(f"{n} tokens of {user} revoked")
            return
        token = sys.stdin.readline().strip()
        if not token:
            fail("give --user, or the token on stdin")
        if not archive.operator.accounts.revoke_token(token):
            fail("no such live token", EXIT_FAILED)
    console.print("token revoked")


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
