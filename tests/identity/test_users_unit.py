"""Account administration, password policy, TOTP replay and session checks with an injected clock (both backends)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dicomguard.core.access import AccessDenied, Principal, PrincipalKind
from dicomguard.core.events import UserAuthentication
from dicomguard.core.keyring import PURPOSE_IDENTITY
from dicomguard.identity import users
from dicomguard.identity.auth import AuthenticationFailed, Authenticator
from dicomguard.identity.session_policy import LoginPolicy, SessionPolicy
from dicomguard.identity.sessions import refresh_session
from dicomguard.identity.tokens import InvalidToken, verify_token
from dicomguard.index.db import read_session
from tests.identity.conftest import add_user


def _auth(archive, **kw) -> Authenticator:  # type: ignore[no-untyped-def]
    return Authenticator(archive.ctx.engine, archive.ctx.bus, archive.ctx.keyring.archive_key(PURPOSE_IDENTITY), **kw)


def _user(name: str, *roles: str) -> Principal:
    return Principal(PrincipalKind.USER, name, frozenset(roles))


@pytest.mark.parametrize(
    "password",
    ["short", "elevenchars", "password1234", "Password2026!", "iloveyou12345", "Qwertyuiop!!", "dr.house.rocks.2026", "HOUSE-is-fine-really"],
)
def test_password_policy_rejects(password: str) -> None:
    with pytest.raises(users.PasswordPolicyError):
        users.check_password_policy("dr.house", password)


@pytest.mark.parametrize("password", ["correct horse battery staple", "vT9#q2LmX8!rPz", "Lungs-and-hearts-2026"])
def test_password_policy_accepts(password: str) -> None:
    users.check_password_policy("dr.house", password)


def test_common_password_list_is_bundled() -> None:
    assert len(users.common_passwords()) >= 300
    assert {"123456", "password", "qwerty", "letmein"} <= users.common_passwords()


def test_self_grant_and_non_admin_grant_are_refused(archive) -> None:
    """Decided by the policies (admin-administer, no-self-administration), not by code: refused alike everywhere."""
    add_user(archive, "dr.house")
    add_user(archive, "it.admin", "admin")
    house = archive.services(_user("dr.house", "radiologist")).accounts
    admin = archive.services(_user("it.admin", "admin")).accounts
    with pytest.raises(AccessDenied):
        house.grant_role("dr.house", "admin")
    with pytest.raises(AccessDenied, match="no-self-administration"):  # an admin cannot elevate themselves either
        admin.grant_role("it.admin", "radiologist")
    with pytest.raises(AccessDenied):
        house.grant_role("it.admin", "security_officer")
    with pytest.raises(AccessDenied, match="no-self-administration"):
        admin.enable("it.admin")
    assert admin.grant_role("dr.house", "cardiologist")
    with pytest.raises(ValueError):
        archive.operator.accounts.grant_role("dr.house", "superuser")
    with read_session(archive.ctx.engine) as s:
        assert users.user_roles(s, "dr.house") == ("radiologist", "cardiologist")


def test_totp_step_cannot_be_reused_within_the_window(archive) -> None:
    acct = add_user(archive, "dr.house")
    auth, now = _auth(archive), datetime.now(UTC)
    code_next = acct.code(1)
    auth.login("dr.house", acct.password, code_next, "10.0.0.1", now)  # a +1 step code is accepted ...
    with pytest.raises(AuthenticationFailed):  # ... and then the current step (earlier) is refused
        auth.login("dr.house", acct.password, acct.code(0), "10.0.0.1", now)


def test_reset_mfa_kills_the_old_secret(archive) -> None:
    acct = add_user(archive, "dr.house")
    secret, uri = archive.operator.accounts.reset_mfa("dr.house")
    assert secret != acct.secret and uri.startswith("otpauth://totp/")
    auth = _auth(archive)
    with pytest.raises(AuthenticationFailed):
        auth.login("dr.house", acct.password, acct.code(), None)
    acct.secret = secret
    auth.login("dr.house", acct.password, acct.code(), None)


def test_session_clock_idle_and_absolute(archive) -> None:
    acct = add_user(archive, "dr.house")
    policy = SessionPolicy(access_ttl=timedelta(hours=1), idle_timeout=timedelta(minutes=15), absolute_lifetime=timedelta(hours=12))
    auth, t0 = _auth(archive, sessions=policy), datetime.now(UTC)
    tokens = auth.login("dr.house", acct.password, acct.code(), None, t0)
    assert verify_token(archive.ctx.engine, tokens.access_token, t0 + timedelta(minutes=14), policy).session_id == tokens.session_id
    # Activity at +14 min moved the idle deadline; +28 is 14 minutes after it.
    assert verify_token(archive.ctx.engine, tokens.access_token, t0 + timedelta(minutes=28), policy)
    with pytest.raises(InvalidToken):  # idle 16 minutes
        verify_token(archive.ctx.engine, tokens.access_token, t0 + timedelta(minutes=44), policy)
    with pytest.raises(InvalidToken):  # and signed off for good
        verify_token(archive.ctx.engine, tokens.access_token, t0 + timedelta(minutes=29), policy)


def test_absolute_lifetime_with_activity(archive) -> None:
    acct = add_user(archive, "dr.house")
    policy = SessionPolicy(access_ttl=timedelta(minutes=5), idle_timeout=timedelta(minutes=15), absolute_lifetime=timedelta(minutes=30))
    auth, t0 = _auth(archive, sessions=policy), datetime.now(UTC)
    tokens = auth.login("dr.house", acct.password, acct.code(), None, t0)
    t = t0
    for _ in range(6):  # active every 4 minutes, refreshing the access token
        t += timedelta(minutes=4)
        tokens = refresh_session(archive.ctx.engine, tokens.refresh_token, t, policy)
        verify_token(archive.ctx.engine, tokens.access_token, t, policy)
    t += timedelta(minutes=4)  # 28 minutes: still in
    tokens = refresh_session(archive.ctx.engine, tokens.refresh_token, t, policy)
    assert tokens.expires_in <= 120  # the access token never outlives the session
    with pytest.raises(InvalidToken):
        verify_token(archive.ctx.engine, tokens.access_token, t0 + timedelta(minutes=30, seconds=1), policy)
    with pytest.raises(InvalidToken):
        refresh_session(archive.ctx.engine, tokens.refresh_token, t0 + timedelta(minutes=31), policy)


def test_each_failure_publishes_an_event(archive) -> None:
    acct = add_user(archive, "dr.house")
    seen: list = []
    archive.ctx.bus.subscribe(lambda s, e: seen.append(e))
    auth = _auth(archive, limits=LoginPolicy(delay_base=timedelta(0)))
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            auth.login("dr.house", "wrong", acct.code(), "10.9.9.9")
    kinds = [e.kind for e in seen if isinstance(e, UserAuthentication)]
    assert kinds == ["failure"] * 4 + ["lockout"]


def test_a_token_speaks_for_the_account_role_and_every_role_granted_at_verification_time(archive) -> None:  # type: ignore[no-untyped-def]
    """One statement reads the token, its account and the granted roles (a row per granted role): none, one or two
    granted give exactly those, a revoked one is gone at the next request, another account's grants never count."""
    from dicomguard.identity.tokens import create_token
    from dicomguard.index.db import write_session

    add_user(archive, "dr.roles")
    add_user(archive, "dr.other")
    with write_session(archive.ctx.engine) as s:
        token = create_token(s, "dr.roles", timedelta(hours=1))
        users.grant_role(s, "dr.other", "researcher", "it.admin")
    engine = archive.ctx.engine
    assert verify_token(engine, token).roles == {"radiologist"}
    with write_session(engine) as s:
        users.grant_role(s, "dr.roles", "cardiologist", "it.admin")
        users.grant_role(s, "dr.roles", "sonographer", "it.admin")
    principal = verify_token(engine, token)
    assert principal.roles == {"radiologist", "cardiologist", "sonographer"} and principal.role == "radiologist"
    assert principal.user_name == "dr.roles"
    with write_session(engine) as s:
        users.revoke_role(s, "dr.roles", "sonographer")
    assert verify_token(engine, token).roles == {"radiologist", "cardiologist"}
    with pytest.raises(InvalidToken):
        verify_token(engine, token[:-1] + ("A" if token[-1] != "A" else "B"))
