"""``dicomguard user ...`` with typer's CliRunner (both backends): one-time secrets, roles, disable, MFA reset, unlock."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyotp
import pytest
from typer.testing import CliRunner

from dicomguard.cli.main import app
from dicomguard.core.archive import Archive
from dicomguard.core.keyring import PURPOSE_IDENTITY
from dicomguard.identity.auth import AuthenticationFailed, Authenticator, LoginThrottled
from tests.conftest import PASSPHRASE

runner = CliRunner()


def run(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), catch_exceptions=False)


def _login(home, name: str, password: str, code: str):  # type: ignore[no-untyped-def]
    archive = Archive.open(home, PASSPHRASE)
    try:
        auth = Authenticator(archive.ctx.engine, archive.ctx.bus, archive.ctx.keyring.archive_key(PURPOSE_IDENTITY))
        return auth.login(name, password, code, "10.1.1.1")
    finally:
        archive.close()


def test_user_lifecycle(home) -> None:
    r = run("user", "add", "dr.who", "--role", "radiologist", "--department", "radiology", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["name"] == "dr.who" and doc["role"] == "radiologist" and doc["department"] == "radiology"
    assert len(doc["password"]) >= 16 and doc["provisioning_uri"].startswith("otpauth://totp/")
    totp = pyotp.TOTP(doc["totp_secret"])
    assert run("user", "add", "dr.who", "--role", "radiologist").exit_code == 2  # exists
    assert run("user", "add", "dr.x", "--role", "superuser").exit_code == 2

    assert run("user", "grant", "dr.who", "--role", "cardiologist").exit_code == 0
    listed = {u["name"]: u for u in json.loads(run("user", "list", "--json").stdout)}
    assert listed["dr.who"]["roles"] == ["radiologist", "cardiologist"] and listed["admin"]["role"] == "admin"
    assert "password" not in json.dumps(listed) and doc["totp_secret"] not in json.dumps(listed)
    assert run("user", "revoke", "dr.who", "--role", "cardiologist").exit_code == 0
    assert run("user", "revoke", "dr.who", "--role", "cardiologist").exit_code == 1
    assert json.loads(run("user", "list", "--json").stdout)[1]["roles"] == ["radiologist"]

    _login(home, "dr.who", doc["password"], totp.now())
    assert run("user", "disable", "dr.who").exit_code == 0
    with pytest.raises(AuthenticationFailed):
        _login(home, "dr.who", doc["password"], totp.at(datetime.now(UTC).timestamp() + 30))
    assert run("user", "enable", "dr.who").exit_code == 0

    r = run("user", "reset-mfa", "dr.who", "--json")
    new_secret = json.loads(r.stdout)["totp_secret"]
    assert new_secret != doc["totp_secret"]
    with pytest.raises(AuthenticationFailed):  # old secret dead
        _login(home, "dr.who", doc["password"], totp.now())
    _login(home, "dr.who", doc["password"], pyotp.TOTP(new_secret).now())

    codes = json.loads(run("user", "recovery-codes", "dr.who", "--json").stdout)["recovery_codes"]
    assert len(codes) == 10
    _login(home, "dr.who", doc["password"], codes[0])
    with pytest.raises(AuthenticationFailed):
        _login(home, "dr.who", doc["password"], codes[0])

    assert run("user", "disable", "nobody").exit_code == 1


def test_unlock_after_brute_force(home, monkeypatch) -> None:
    doc = json.loads(run("user", "add", "dr.lock", "--role", "technologist", "--json").stdout)
    from dicomguard.identity import session_policy

    monkeypatch.setattr(session_policy.LoginPolicy, "delay", lambda self, n: session_policy.timedelta(0))
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            _login(home, "dr.lock", "guess", "000000")
    with pytest.raises(LoginThrottled):
        _login(home, "dr.lock", doc["password"], pyotp.TOTP(doc["totp_secret"]).now())
    assert run("user", "unlock", "dr.lock").exit_code == 0
    _login(home, "dr.lock", doc["password"], pyotp.TOTP(doc["totp_secret"]).now())
