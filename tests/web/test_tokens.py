"""Bearer tokens: 256-bit, stored as SHA-256 only, verified against the index on every use; the token CLI."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from dicomguard.cli.main import app
from dicomguard.core.keyring import PURPOSE_IDENTITY
from dicomguard.errors import NotFoundError
from dicomguard.identity.tokens import (
    InvalidToken,
    parse_ttl,
    verify_token,
)
from dicomguard.identity.users import create_user
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import ApiToken, User
from tests.web.conftest import issue_token, revoke_all, revoke_one

runner = CliRunner()
SHAPE = re.compile(r"^dgt_[A-Za-z0-9_-]{43}$")


def _user(archive, name: str, role: str = "radiologist") -> None:
    with write_session(archive.ctx.engine) as s:
        create_user(s, archive.ctx.keyring.archive_key(PURPOSE_IDENTITY), name, role)


def test_token_is_random_and_stored_only_as_its_hash(archive) -> None:
    _user(archive, "dr.hash")
    tokens = {issue_token(archive.ctx.engine, "dr.hash", timedelta(hours=1)) for _ in range(20)}
    assert len(tokens) == 20 and all(SHAPE.match(t) for t in tokens)
    with read_session(archive.ctx.engine) as s:
        rows = s.scalars(select(ApiToken)).all()
    assert {bytes(r.token_sha256) for r in rows} == {hashlib.sha256(t.encode()).digest() for t in tokens}
    for r in rows:
        assert all(t.encode() not in bytes(r.token_sha256) for t in tokens)
    p = verify_token(archive.ctx.engine, next(iter(tokens)))
    assert (p.user_name, p.role) == ("dr.hash", "radiologist")


def test_unknown_and_disabled_users_get_no_token(archive) -> None:
    with pytest.raises(NotFoundError):
        issue_token(archive.ctx.engine, "ghost", timedelta(hours=1))
    _user(archive, "dr.off")
    with write_session(archive.ctx.engine) as s:
        s.execute(update(User).where(User.name == "dr.off").values(disabled=True))
    with pytest.raises(NotFoundError):
        issue_token(archive.ctx.engine, "dr.off", timedelta(hours=1))


def test_expiry_revocation_and_disabling_are_checked_at_each_use(archive) -> None:
    _user(archive, "dr.life")
    engine = archive.ctx.engine
    token = issue_token(engine, "dr.life", timedelta(minutes=15))
    verify_token(engine, token)
    with pytest.raises(InvalidToken):
        verify_token(engine, token, now=datetime.now(UTC) + timedelta(minutes=16))
    other = issue_token(engine, "dr.life", timedelta(hours=1))
    assert revoke_one(engine, token) and not revoke_one(engine, token)
    with pytest.raises(InvalidToken):
        verify_token(engine, token)
    verify_token(engine, other)
    with write_session(engine) as s:
        s.execute(update(User).where(User.name == "dr.life").values(disabled=True))
    with pytest.raises(InvalidToken):
        verify_token(engine, other)
    with write_session(engine) as s:
        s.execute(update(User).where(User.name == "dr.life").values(disabled=False))
    verify_token(engine, other)
    assert revoke_all(engine, "dr.life") == 1
    with pytest.raises(InvalidToken):
        verify_token(engine, other)


@pytest.mark.parametrize("bad", ["", "dgt_", "x" * 47, "dgt_" + "!" * 43, "dgt_" + "A" * 42 + "\x00", "Bearer dgt_" + "A" * 43])
def test_malformed_tokens_are_invalid_with_one_message(archive, bad: str) -> None:
    with pytest.raises(InvalidToken) as exc:
        verify_token(archive.ctx.engine, bad)
    assert str(exc.value) == "invalid or expired token"


@pytest.mark.parametrize(("text", "expected"), [("15m", timedelta(minutes=15)), ("8h", timedelta(hours=8)), ("1d", timedelta(days=1)), ("30d", timedelta(days=30))])
def test_parse_ttl(text: str, expected: timedelta) -> None:
    assert parse_ttl(text) == expected


@pytest.mark.parametrize("text", ["31d", "0m", "721h", "15", "m", "-5m", "1.5h", "15 m", "1w", "99999999d"])
def test_parse_ttl_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_ttl(text)


def test_cli_token_create_prints_only_the_token(home, archive) -> None:
    r = runner.invoke(app, ["token", "create", "--user", "admin", "--ttl", "8h"])
    assert r.exit_code == 0, r.output
    token = r.stdout.strip()
    assert SHAPE.match(token) and r.stdout == token + "\n"
    principal = verify_token(archive.ctx.engine, token)
    assert principal.user_name == "admin"
    assert timedelta(hours=7, minutes=59) < principal.expires_at - datetime.now(UTC) <= timedelta(hours=8)
    assert runner.invoke(app, ["token", "create", "--user", "admin", "--ttl", "31d"]).exit_code == 2
    assert runner.invoke(app, ["token", "create", "--user", "ghost"]).exit_code == 1
    assert principal.scopes is None  # unscoped: the user's full rights
    scoped = runner.invoke(app, ["token", "create", "--user", "admin", "--scope", "Store", "--scope", "query"])
    assert scoped.exit_code == 0 and verify_token(archive.ctx.engine, scoped.stdout.strip()).scopes == ("query", "store")
    assert runner.invoke(app, ["token", "create", "--user", "admin", "--scope", "teleport"]).exit_code == 2
    r = runner.invoke(app, ["token", "revoke"], input=token + "\n")
    assert r.exit_code == 0, r.output
    with pytest.raises(InvalidToken):
        verify_token(archive.ctx.engine, token)
    assert runner.invoke(app, ["token", "revoke"], input=token + "\n").exit_code == 1
    default = runner.invoke(app, ["token", "create", "--user", "admin"]).stdout.strip()
    assert verify_token(archive.ctx.engine, default).expires_at - datetime.now(UTC) <= timedelta(minutes=15)
    assert runner.invoke(app, ["token", "revoke", "--user", "admin"]).exit_code == 0
    with pytest.raises(InvalidToken):
        verify_token(archive.ctx.engine, default)
