"""Interactive login: password (argon2id) + TOTP (RFC 6238) or a recovery code, throttling, lockout, audit events.

Guarantees:

* **One opaque failure.** Unknown user, wrong password, wrong or replayed code,
  disabled account: all raise :class:`AuthenticationFailed` (HTTP 401) with the
  same message, and a missing account costs the same argon2 verification.
* **No TOTP replay.** The accepted time step is stored per user; a code of that
  step or an earlier one is refused (RFC 6238 5.2), also within the ±1 step window.
* **Throttling.** Failures are counted per account and per source address
  (counted for unknown names too, so throttling does not reveal which names
  exist). See :mod:`dicomguard.identity.session_policy` for the thresholds.
  Refused attempts raise :class:`LoginThrottled` (HTTP 429, ``Retry-After``).
  An administrator clears an account's lockout with ``dicomguard user unlock``.
* **Audited.** Every success, failure, lockout and logout publishes a
  ``UserAuthentication`` event inside the transaction that records it; so does
  a reused refresh token (the session it ends). A password change is a
  Security Configuration event in the transaction that changes it.
"""

from __future__ import annotations

import hmac
import math
from dataclasses import dataclass
from datetime import UTC, datetime

import pyotp
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from dicomguard.core.access import Principal, PrincipalKind
from dicomguard.core.events import EventBus, SecurityConfigurationChanged, UserAuthentication
from dicomguard.errors import DicomGuardError
from dicomguard.identity import users
from dicomguard.identity.session_policy import (
    DEFAULT_LOGIN_POLICY,
    DEFAULT_SESSION_POLICY,
    LoginPolicy,
    SessionPolicy,
)
from dicomguard.identity.sessions import RefreshTokenReused, SessionTokens, open_browser_session, open_session, refresh_session
from dicomguard.identity.tokens import InvalidToken, end_session, verify_token
from dicomguard.index.db import as_utc, write_session
from dicomguard.index.models import ApiToken, AuthFailure, AuthSession, User

TOTP_WINDOW = 1  # RFC 6238 5.2: accept one step of clock drift either way
STEP_UP_MAX_AGE_S = 300
"""How long a step-up confirmation counts: mirrors ``context.mfa_age <= 300`` of the shipped ``guards.cedar``."""


class AuthenticationFailed(DicomGuardError):
    """Login refused. Deliberately does not say which factor failed."""

    def __init__(self) -> None:
        super().__init__("authentication failed")


class LoginThrottled(DicomGuardError):
    """Too many failed logins (account or address): try again after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("too many failed logins; try again later")
        self.retry_after = max(1, retry_after)


@dataclass(frozen=True)
class Authenticator:
    """The login service of one archive: its index, event bus and identity key."""

    engine: Engine
    bus: EventBus
    identity_key: bytes
    sessions: SessionPolicy = DEFAULT_SESSION_POLICY
    limits: LoginPolicy = DEFAULT_LOGIN_POLICY

    # -- login -----------------------------------------------------------------------------

    def login(self, username: str, password: str, code: str, address: str | None, now: datetime | None = None) -> SessionTokens:
        outcome = self._login(username, password, code, address, now, browser=False)
        assert isinstance(outcome, SessionTokens)
        return outcome

    def login_browser(self, username: str, password: str, code: str, address: str | None,
                      now: datetime | None = None) -> tuple[str, str]:
        """Like :meth:`login`, for a web console: ``(cookie token, session id)`` (:func:`sessions.open_browser_session`)."""
        outcome = self._login(username, password, code, address, now, browser=True)
        assert isinstance(outcome, tuple)
        return outcome

    def _login(self, username: str, password: str, code: str, address: str | None, now: datetime | None, *,
               browser: bool) -> SessionTokens | tuple[str, str]:
        now = now or datetime.now(UTC)
        name = username.strip()[:64]
        if not name.isprintable():
            # No account has a control character in its name: answered like any unknown account
            # (and never sent to the database, where a NUL is an error rather than a miss).
            name = ""
        keys = [f"user:{name}"] + ([f"addr:{address}"] if address else [])
        outcome: SessionTokens | tuple[str, str] | LoginThrottled | AuthenticationFailed
        with write_session(self.engine) as s:
            wait = self._throttled(s, keys, now)
            if wait is not None:
                self._publish(s, name, "failure", now, address, "attempt while throttled or locked")
                outcome = LoginThrottled(wait)
            else:
                user = s.get(User, name, with_for_update=True) if name else None
                if self._factors_ok(s, user, password, code, now):
                    assert user is not None
                    if users.password_needs_rehash(user):
                        users.rehash_password(user, password)
                    self._clear_account_failures(s, keys)
                    if browser:
                        outcome = open_browser_session(s, user.name, address, now, self.sessions)
                    else:
                        outcome = open_session(s, user.name, address, now, self.sessions)
                    self._publish(s, user.name, "login", now, address, "web console" if browser else "")
                else:
                    outcome = self._failed(s, name, keys, now, address, "invalid credentials")
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _factors_ok(self, s: Session, user: User | None, password: str, code: str, now: datetime) -> bool:
        if user is None:
            users.burn_verification(password)  # same cost as a real check
            return False
        password_ok = users.verify_password(user, password)
        if not password_ok or user.disabled:
            return False
        return self.check_second_factor(s, user, code, now)

    def check_second_factor(self, s: Session, user: User, code: str, now: datetime) -> bool:
        """A fresh TOTP code (its step recorded) or an unused recovery code (consumed). Caller holds the user row lock."""
        code = (code or "").strip()
        if users.is_recovery_code_shape(code):
            return users.use_recovery_code(s, user.name, code, now)
        if not (len(code) == 6 and code.isdigit()):
            return False
        totp = pyotp.TOTP(users.totp_secret(self.identity_key, user))
        current = totp.timecode(now)
        for step in range(current - TOTP_WINDOW, current + TOTP_WINDOW + 1):
            if hmac.compare_digest(totp.generate_otp(step), code):
                if user.totp_last_step is not None and step <= user.totp_last_step:
                    return False  # replayed (or older than one already used)
                user.totp_last_step = step
                return True
        return False

    # -- throttling ------------------------------------------------------------------------

    def _throttled(self, s: Session, keys: list[str], now: datetime) -> int | None:
        waits = []
        for key in keys:
            row = s.get(AuthFailure, key)
            if row is None:
                continue
            for until in (row.locked_until, row.next_allowed_at):
                if until is not None and as_utc(until) > now:
                    waits.append(math.ceil((as_utc(until) - now).total_seconds()))
        return max(waits) if waits else None

    def _clear_account_failures(self, s: Session, keys: list[str]) -> None:
        """After a success: the account's counter only (``keys[0]``); the address keeps its count."""
        counter = s.get(AuthFailure, keys[0])
        if counter is not None:
            s.delete(counter)

    def _failed(self, s: Session, name: str, keys: list[str], now: datetime, address: str | None, reason: str) -> AuthenticationFailed:
        """Count a failed attempt against the account and the address, and publish it (as a lockout once it locks)."""
        locked = self._count_failure(s, keys, now)
        self._publish(s, name, "lockout" if locked else "failure", now, address, "too many failed logins" if locked else reason)
        return AuthenticationFailed()

    def _count_failure(self, s: Session, keys: list[str], now: datetime) -> bool:
        """Count a failure for the account and the address; True if this one locked the account or address."""
        locked = False
        for key in keys:
            row = s.get(AuthFailure, key, with_for_update=True)
            if row is None:
                row = AuthFailure(key=key, count=0, last_at=now)
                s.add(row)
            elif now - as_utc(row.last_at) > self.limits.failure_window or (
                row.locked_until is not None and as_utc(row.locked_until) <= now
            ):
                row.count, row.locked_until, row.next_allowed_at = 0, None, None  # expired: start again
            row.count += 1
            row.last_at = now
            threshold = self.limits.lock_after if key.startswith("user:") else self.limits.address_lock_after
            if row.count >= threshold:
                row.locked_until = now + self.limits.lock_duration
                locked = True
            elif key.startswith("user:") and row.count >= self.limits.delay_after:
                row.next_allowed_at = now + self.limits.delay(row.count)
        return locked

    # -- step-up ---------------------------------------------------------------------------

    def step_up(self, session_id: str, user_name: str, code: str, address: str | None, now: datetime | None = None) -> datetime:
        """Confirm a fresh TOTP code inside a login session: the session's ``mfa_at`` becomes ``now``.

        Same guarantees as :meth:`login`: the code is replay-protected (its step is
        recorded, so the code that opened the session cannot be reused), failures
        count towards the account's and address's throttling and lockout, and every
        outcome is published as a ``UserAuthentication`` event. Only TOTP codes are
        accepted (a recovery code is for a lost authenticator, not for confirmations).
        Raises :class:`AuthenticationFailed` or :class:`LoginThrottled`.
        """
        now = now or datetime.now(UTC)
        keys = [f"user:{user_name}"] + ([f"addr:{address}"] if address else [])
        outcome: datetime | LoginThrottled | AuthenticationFailed
        with write_session(self.engine) as s:
            wait = self._throttled(s, keys, now)
            if wait is not None:
                self._publish(s, user_name, "failure", now, address, "step-up attempt while throttled or locked")
                outcome = LoginThrottled(wait)
            else:
                user = s.get(User, user_name, with_for_update=True)
                session = s.get(AuthSession, session_id, with_for_update=True)
                code = (code or "").strip()
                live = (
                    user is not None and not user.disabled and session is not None and session.user_name == user_name
                    and session.revoked_at is None and as_utc(session.expires_at) > now
                )
                if live and len(code) == 6 and code.isdigit() and self.check_second_factor(s, user, code, now):  # type: ignore[arg-type]
                    assert session is not None
                    session.mfa_at = now
                    self._clear_account_failures(s, keys)
                    self._publish(s, user_name, "login", now, address, "step-up: TOTP confirmed in the session")
                    outcome = now
                else:
                    outcome = self._failed(s, user_name, keys, now, address, "step-up refused: invalid code")
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    # -- refresh -----------------------------------------------------------------------------

    def refresh(self, refresh_token: str, address: str | None, now: datetime | None = None) -> SessionTokens:
        """Rotate the session's tokens (``sessions.refresh_session``). A reused refresh token ends the session and is
        published as a failed authentication (the token was copied). Raises :class:`InvalidToken`."""
        try:
            return refresh_session(self.engine, refresh_token, now, self.sessions)
        except RefreshTokenReused as exc:
            with write_session(self.engine) as s:
                self._publish(s, exc.user_name, "failure", now or datetime.now(UTC), address,
                              "refresh token used twice: the session was ended")
            raise

    # -- logout and password change --------------------------------------------------------

    def logout(self, access_token: str, address: str | None, now: datetime | None = None, *, browser: bool = False) -> None:
        """End the session of an access token (``browser``: of a console cookie) at once (all of its tokens die)."""
        now = now or datetime.now(UTC)
        principal = verify_token(self.engine, access_token, now, self.sessions, browser=browser)
        if principal.session_id is None:
            raise InvalidToken()  # API tokens are revoked with ``dicomguard token revoke``
        end_session(self.engine, principal.session_id, now)
        with write_session(self.engine) as s:
            self._publish(s, principal.user_name, "logout", now, address)

    def change_password(self, user_name: str, current: str, new: str, code: str, address: str | None,
                        now: datetime | None = None, keep_session: str | None = None) -> None:
        """Change one's own password: current password and a fresh second factor, then the policy.

        Every other login session of the user ends (a thief's session dies with the old password).
        A wrong current password or code counts like a failed login, against the account
        and the address, with the same delays and lockout (NIST SP 800-63B 5.2.2): a
        stolen access token is no unthrottled password oracle. Raises
        :class:`AuthenticationFailed` or :class:`LoginThrottled`.
        """
        now = now or datetime.now(UTC)
        users.check_password_policy(user_name, new)
        keys = [f"user:{user_name}"] + ([f"addr:{address}"] if address else [])
        outcome: LoginThrottled | AuthenticationFailed | None = None
        with write_session(self.engine) as s:
            wait = self._throttled(s, keys, now)
            if wait is not None:
                self._publish(s, user_name, "failure", now, address, "password change attempt while throttled or locked")
                outcome = LoginThrottled(wait)
            elif self._factors_ok(s, s.get(User, user_name, with_for_update=True), current, code, now):
                self._clear_account_failures(s, keys)
                users.set_password(s, user_name, new)
                self.bus.publish(s, SecurityConfigurationChanged(Principal(PrincipalKind.USER, user_name, address=address),
                                                                 f"user:{user_name}", "password changed by its owner; other sessions ended",
                                                                 now))
                others = select(AuthSession.id).where(AuthSession.user_name == user_name, AuthSession.revoked_at.is_(None))
                if keep_session is not None:
                    others = others.where(AuthSession.id != keep_session)
                ids = list(s.scalars(others))
                if ids:
                    s.execute(update(AuthSession).where(AuthSession.id.in_(ids)).values(revoked_at=now))
                    s.execute(update(ApiToken).where(ApiToken.session_id.in_(ids), ApiToken.revoked_at.is_(None))
                              .values(revoked_at=now))
            else:
                outcome = self._failed(s, user_name, keys, now, address, "password change refused")
        if outcome is not None:
            raise outcome

    def _publish(self, s: Session, user: str, kind: str, now: datetime, address: str | None, reason: str = "") -> None:
        self.bus.publish(s, UserAuthentication(user or "-", kind, now, address, reason))

