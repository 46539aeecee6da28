"""``dicomguard user ...`` with typer's CliRunner (both backends): one-time secrets, roles, disable, MFA reset, unlock."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyotp
import pytest
from typer.testing import CliRunner

from dicomguard.app.archive import Archive
from dicomguard.cli.main import app
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
    assert doc["name"] == "dr.who" and doc["role"] == "radiologist" and doc["department"] == "RADIOLOGY"  # canonical form
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


def test_qr_enrolment_file_is_private_and_never_overwritten(home, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import io
    import stat

    import segno

    qr = tmp_path / "enrol.png"
    r = run("user", "add", "t.qr", "--role", "technologist", "--qr", str(qr), "--json")
    assert r.exit_code == 0, r.output
    uri = json.loads(r.stdout)["provisioning_uri"]  # the QR notice goes to stderr
    assert stat.S_IMODE(qr.stat().st_mode) == 0o600
    expected = io.BytesIO()
    segno.make(uri, error="m").save(expected, kind="png", scale=6)
    assert qr.read_bytes() == expected.getvalue()  # the code of this user's own provisioning URI
    again = run("user", "reset-mfa", "t.qr", "--qr", str(qr))
    assert again.exit_code == 2 and "never written over" in again.output
    assert run("user", "add", "t.qr2", "--role", "technologist", "--qr", str(tmp_path / "enrol.txt")).exit_code == 2


def test_account_changes_are_security_configuration_audit_events(home) -> None:  # type: ignore[no-untyped-def]
    from dicomguard.audit.store import AuditStore

    assert run("user", "add", "dr.audit", "--role", "radiologist").exit_code == 0
    assert run("user", "grant", "dr.audit", "--role", "cardiologist").exit_code == 0
    assert run("user", "set", "dr.audit", "--department", "cardiology").exit_code == 0
    assert run("user", "disable", "dr.audit").exit_code == 0
    archive = Archive.open(home, PASSPHRASE)
    try:
        changes = [e for e in AuditStore(archive.ctx).iter_all() if e.event_type and "110129" in e.event_type.split()]
        descriptions = [e.message.outcome_description for e in changes]
    finally:
        archive.close()
    assert descriptions[-4:] == ["account created with role radiologist", "role cardiologist granted",
                                 "policy attributes changed: department", "account disabled"]
    assert all("password" not in (d or "") for d in descriptions)


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
