"""Login, sessions and their attacks over real HTTPS (httpx), on SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime, timedelta

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, update

from dicomguard.core.events import UserAuthentication
from dicomguard.identity import users
from dicomguard.identity.tokens import token_digest
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import ApiToken, AuthSession, User
from tests.identity.conftest import add_user, forget_totp_step, login


def _auth_events(events, kind: str | None = None) -> list[UserAuthentication]:
    return [e for e in events if isinstance(e, UserAuthentication) and (kind is None or e.kind == kind)]


def _session_of(archive, token: str) -> str:
    with read_session(archive.ctx.engine) as s:
        return s.scalar(select(ApiToken.session_id).where(ApiToken.token_sha256 == token_digest(token)))


def test_login_then_qido_then_logout(web, dr, events) -> None:
    with web.http() as http:
        r = login(http, dr)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) >= {"access_token", "refresh_token", "expires_in"}
        assert 0 < body["expires_in"] <= 300
        assert r.headers["cache-control"] == "no-store"
        bearer = {"Authorization": f"Bearer {body['access_token']}"}
        assert http.get("/dicomweb/studies", headers=bearer).status_code in (200, 204)
        assert _auth_events(events, "login")[-1].user == "dr.house"
        assert http.post("/auth/logout", headers=bearer).status_code == 204
        assert _auth_events(events, "logout")
        # A logged-out user's tokens die at once, refresh token included.
        assert http.get("/dicomweb/studies", headers=bearer).status_code == 401
        assert http.post("/auth/refresh", json={"refresh_token": body["refresh_token"]}).status_code == 401
    # Only hashes are stored.
    with read_session(web.archive.ctx.engine) as s:
        assert s.scalar(select(ApiToken).where(ApiToken.token_sha256 == body["access_token"].encode())) is None


def test_login_endpoints_are_in_the_openapi_document(web) -> None:
    with web.http() as http:
        paths = http.get("/openapi.json").json()["paths"]
    assert {"/auth/login", "/auth/refresh", "/auth/logout", "/auth/password"} <= set(paths)


@pytest.mark.parametrize("attack", ["none", "expired", "tampered", "forged", "refresh-as-bearer", "disabled-user", "logged-out"])
def test_invalid_session_tokens_are_401(web, dr, attack) -> None:
    with web.http() as http:
        tokens = login(http, dr).json()
        token = tokens["access_token"]
        if attack == "expired":
            with write_session(web.archive.ctx.engine) as s:
                s.execute(update(ApiToken).where(ApiToken.token_sha256 == token_digest(token))
                          .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        elif attack == "tampered":
            token = token[:-1] + ("A" if token[-1] != "A" else "B")
        elif attack == "forged":
            token = "dgt_" + secrets.token_urlsafe(32)
        elif attack == "refresh-as-bearer":
            token = tokens["refresh_token"]
        elif attack == "disabled-user":
            with write_session(web.archive.ctx.engine) as s:
                users.set_disabled(s, "dr.house", True)
        elif attack == "logged-out":
            assert http.post("/auth/logout", headers={"Authorization": f"Bearer {token}"}).status_code == 204
        headers = {} if attack == "none" else {"Authorization": f"Bearer {token}"}
        r = http.get("/dicomweb/studies", headers=headers)
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith('Bearer realm="dicomguard"')
        if attack == "disabled-user":  # the refresh token is dead too
            assert http.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401


def test_failures_are_opaque_and_audited(web, dr, events) -> None:
    with web.http() as http:
        wrong_password = login(http, dr, password="not the password")
        wrong_code = login(http, dr, code="000000" if dr.code() != "000000" else "111111")
        unknown = http.post("/auth/login", json={"username": "nobody", "password": "x", "totp": "123456"})
    for r in (wrong_password, wrong_code, unknown):
        assert r.status_code == 401
        assert r.json() == {"error": "unauthorized", "detail": "authentication failed"}
    failures = _auth_events(events, "failure")
    assert [e.user for e in failures] == ["dr.house", "dr.house", "nobody"]
    assert all(e.address == "127.0.0.1" and dr.password not in e.reason for e in failures)


def test_replayed_totp_is_refused(web, dr, events) -> None:
    code = dr.code()
    with web.http() as http:
        first = login(http, dr, code=code)
        assert first.status_code == 200
        http.post("/auth/logout", headers={"Authorization": f"Bearer {first.json()['access_token']}"})
        assert login(http, dr, code=code).status_code == 401  # same code, even after logout
        assert login(http, dr, code=dr.code(-1)).status_code == 401  # an earlier step is refused too
    assert _auth_events(events, "failure")


def test_disabled_user_cannot_log_in(web, dr) -> None:
    with write_session(web.archive.ctx.engine) as s:
        users.set_disabled(s, "dr.house", True)
    with web.http() as http:
        assert login(http, dr).status_code == 401


def test_brute_force_locks_the_account_and_unlock_restores(web, dr, events) -> None:
    with web.http() as http:
        for _ in range(3):
            assert login(http, dr, password="guess").status_code == 401
        throttled = login(http, dr, password="guess")
        assert throttled.status_code == 429  # progressive delay after 3 failures
        time.sleep(int(throttled.headers["retry-after"]) + 0.1)
        assert login(http, dr, password="guess").status_code == 401  # 4th
        r = login(http, dr, password="guess")
        assert r.status_code == 429
        time.sleep(int(r.headers["retry-after"]) + 0.1)
        assert login(http, dr, password="guess").status_code == 401  # 5th: locked now
        assert _auth_events(events, "lockout")
        locked = login(http, dr)  # the correct password and code are refused while locked
        assert locked.status_code == 429
        assert 800 <= int(locked.headers["retry-after"]) <= 900
        with write_session(web.archive.ctx.engine) as s:
            users.unlock(s, "dr.house")
        forget_totp_step(web.archive, "dr.house")
        assert login(http, dr).status_code == 200


def test_lockout_expires(web, dr) -> None:
    from dicomguard.index.models import AuthFailure

    with web.http() as http:
        for _ in range(5):
            with write_session(web.archive.ctx.engine) as s:  # skip the progressive delay
                s.execute(update(AuthFailure).values(next_allowed_at=None))
            assert login(http, dr, password="guess").status_code == 401
        assert login(http, dr).status_code == 429
        with write_session(web.archive.ctx.engine) as s:  # 15 minutes later
            s.execute(update(AuthFailure).values(locked_until=datetime.now(UTC) - timedelta(seconds=1)))
        assert login(http, dr).status_code == 200


def test_per_address_lockout(web, dr, events) -> None:
    with web.http() as http:
        for i in range(20):  # one failure per (unknown) account: no account lock, but the address adds up
            assert http.post("/auth/login", json={"username": f"spray{i}", "password": "Winter2026!", "totp": "123456"}).status_code == 401
        assert _auth_events(events, "lockout")[-1].user == "spray19"
        assert login(http, dr).status_code == 429


def test_idle_timeout_signs_the_session_off(web, dr) -> None:
    with web.http() as http:
        token = login(http, dr).json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        assert http.get("/dicomweb/studies", headers=bearer).status_code in (200, 204)
        session_id = _session_of(web.archive, token)
        with write_session(web.archive.ctx.engine) as s:  # 16 minutes without a request
            s.execute(update(AuthSession).where(AuthSession.id == session_id)
                      .values(last_seen_at=datetime.now(UTC) - timedelta(minutes=16)))
        assert http.get("/dicomweb/studies", headers=bearer).status_code == 401
    with read_session(web.archive.ctx.engine) as s:
        assert s.get(AuthSession, session_id).revoked_at is not None  # signed off, not just refused once


def test_absolute_lifetime_ends_the_session(web, dr) -> None:
    with web.http() as http:
        tokens = login(http, dr).json()
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        session_id = _session_of(web.archive, tokens["access_token"])
        with write_session(web.archive.ctx.engine) as s:
            s.execute(update(AuthSession).where(AuthSession.id == session_id)
                      .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        assert http.get("/dicomweb/studies", headers=bearer).status_code == 401
        assert http.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401


def test_refresh_rotates_and_reuse_revokes_the_session(web, dr) -> None:
    with web.http() as http:
        first = login(http, dr).json()
        r = http.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert r.status_code == 200
        second = r.json()
        assert second["refresh_token"] != first["refresh_token"]
        assert http.get("/dicomweb/studies", headers={"Authorization": f"Bearer {second['access_token']}"}).status_code in (200, 204)
        # The old access token died with the rotation; the old refresh token is dead.
        assert http.get("/dicomweb/studies", headers={"Authorization": f"Bearer {first['access_token']}"}).status_code == 401
        assert http.post("/auth/refresh", json={"refresh_token": first["refresh_token"]}).status_code == 401
        # That reuse revoked the whole session: the new tokens are dead too.
        assert http.get("/dicomweb/studies", headers={"Authorization": f"Bearer {second['access_token']}"}).status_code == 401
        assert http.post("/auth/refresh", json={"refresh_token": second["refresh_token"]}).status_code == 401


def test_recovery_code_works_once(web, dr) -> None:
    with write_session(web.archive.ctx.engine) as s:
        codes = users.new_recovery_codes(s, "dr.house")
    assert len(codes) == 10 and len(set(codes)) == 10
    with read_session(web.archive.ctx.engine) as s:
        from dicomguard.index.models import RecoveryCode

        stored = s.scalars(select(RecoveryCode.code_hash)).all()
    assert all(h.startswith("$argon2id$") for h in stored) and not any(c.split("-")[1] in h for c in codes for h in stored)
    with web.http() as http:
        assert login(http, dr, code=codes[0]).status_code == 200
        assert login(http, dr, code=codes[0]).status_code == 401
        assert login(http, dr, code=codes[1]).status_code == 200


def test_password_change_enforces_the_policy(web, dr) -> None:
    with web.http() as http:
        other = login(http, dr, code=dr.code(-1)).json()["access_token"]  # another session, e.g. a stolen one
        token = login(http, dr).json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}

        def change(new: str, code: str):  # type: ignore[no-untyped-def]
            return http.post("/auth/password", headers=bearer,
                             json={"current_password": dr.password, "new_password": new, "totp": code})

        for weak in ("short1!", "Password2026!", "qwertyuiop123", "dr.house-is-a-doctor", "my house and my garden"):
            assert change(weak, dr.code(1)).status_code == 400, weak
        assert change("correct horse battery staple", dr.code(1)).status_code == 204
        assert http.get("/dicomweb/studies", headers=bearer).status_code in (200, 204)  # this session stays
        assert http.get("/dicomweb/studies", headers={"Authorization": f"Bearer {other}"}).status_code == 401
        assert login(http, dr).status_code == 401  # old password (and the code step is used)
        forget_totp_step(web.archive, "dr.house")
        assert login(http, dr, password="correct horse battery staple").status_code == 200


def test_password_change_is_no_unthrottled_password_oracle(web, dr, events) -> None:
    """A stolen access token guessing the current password is counted, delayed and locked out like logins."""
    with web.http() as http:
        bearer = {"Authorization": f"Bearer {login(http, dr).json()['access_token']}"}

        def change(current: str):  # type: ignore[no-untyped-def]
            return http.post("/auth/password", headers=bearer,
                             json={"current_password": current, "new_password": "correct horse battery staple", "totp": dr.code(1)})

        statuses = []
        for guess in range(8):
            r = change(f"guess-number-{guess}")
            statuses.append(r.status_code)
            if r.status_code == 429:
                assert int(r.headers["Retry-After"]) >= 1
        assert statuses[:3] == [401, 401, 401] and 429 in statuses  # delayed after 3 failures, then locked
        # while throttled even the right password is refused, and the account's login is throttled too
        assert change(dr.password).status_code == 429
        assert login(http, dr, code=dr.code(2)).status_code == 429
    failures = _auth_events(events, "failure") + _auth_events(events, "lockout")
    assert len([e for e in failures if "password change" in e.reason or e.kind == "lockout"]) >= 4


@pytest.fixture
def production_password_hash(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The product's password hashing (RFC 9106 parameters) instead of the suite's cheap one."""
    monkeypatch.delenv(users.UNSAFE_TEST_HASH_ENV)
    users._hasher.cache_clear()
    yield
    users._hasher.cache_clear()


def test_argon2_parameters_are_upgraded_on_login(web, dr, production_password_hash) -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(dr.password)
    with write_session(web.archive.ctx.engine) as s:
        s.execute(update(User).where(User.name == "dr.house").values(password_hash=weak))
    with web.http() as http:
        assert login(http, dr).status_code == 200
    with read_session(web.archive.ctx.engine) as s:
        stored = s.get(User, "dr.house").password_hash
    assert stored != weak and stored.startswith("$argon2id$")
    assert not PasswordHasher().check_needs_rehash(stored)
    assert PasswordHasher().verify(stored, dr.password)


def test_api_tokens_still_work(web) -> None:
    token = web.token("dr.api", "radiologist")
    with web.http(token) as http:
        assert http.get("/dicomweb/studies").status_code in (200, 204)


def test_granted_role_reaches_the_principal(web) -> None:
    add_user(web.archive, "sec.one", "security_officer")
    acct = add_user(web.archive, "sec.two", "technologist")
    with web.http() as http:
        token = login(http, acct).json()["access_token"]
        assert http.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 403
        with write_session(web.archive.ctx.engine) as s:
            users.grant_role(s, "sec.two", "security_officer", "operator:test")
        assert http.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 200
