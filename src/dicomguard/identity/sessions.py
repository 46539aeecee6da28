"""Login sessions: short-lived access tokens, rotating refresh tokens, reuse detection (OAuth 2.0 Security BCP, RFC 9700 4.14).

Guarantees:

* Both tokens are 256 random bits, stored as SHA-256 only (``api_tokens`` with
  ``kind`` ``access`` or ``refresh`` and the session id), so every use is
  checked against server state: logout, disable and revocation act at once.
* A refresh token is single use. Refreshing returns a new access token and a
  new refresh token and revokes the old refresh token. Presenting a revoked
  refresh token again means it was copied: the whole session is revoked.
* Refreshing is not activity: a workstation left alone signs off after the idle
  timeout even if its client keeps refreshing.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from dicomguard.identity.session_policy import DEFAULT_SESSION_POLICY, SessionPolicy
from dicomguard.identity.tokens import (
    TOKEN_BYTES,
    TOKEN_PREFIX,
    InvalidToken,
    end_session,
    token_digest,
)
from dicomguard.index.db import as_utc, write_session
from dicomguard.index.models import ApiToken, AuthSession, User, UserRole


class RefreshTokenReused(InvalidToken):
    """A refresh token was presented again after it was used: it was copied. The session has been ended."""

    def __init__(self, user_name: str) -> None:
        super().__init__()
        self.user_name = user_name


REFRESH_PREFIX = "dgr_"
_REFRESH_SHAPE = re.compile(r"^dgr_[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True)
class SessionTokens:
    """What ``POST /auth/login`` and ``/auth/refresh`` return; shown once."""

    access_token: str
    refresh_token: str
    expires_in: int
    session_id: str

    def as_json(self) -> dict[str, object]:
        return {"access_token": self.access_token, "refresh_token": self.refresh_token, "expires_in": self.expires_in,
                "token_type": "Bearer"}


def _issue(s: Session, user_name: str, session_id: str, now: datetime, expires_at: datetime, policy: SessionPolicy) -> SessionTokens:
    access = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    refresh = REFRESH_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    access_expires = min(now + policy.access_ttl, expires_at)
    s.add(ApiToken(token_sha256=token_digest(access), user_name=user_name, created_at=now, expires_at=access_expires,
                   revoked_at=None, session_id=session_id, kind="access"))
    s.add(ApiToken(token_sha256=token_digest(refresh), user_name=user_name, created_at=now, expires_at=expires_at,
                   revoked_at=None, session_id=session_id, kind="refresh"))
    return SessionTokens(access, refresh, max(1, int((access_expires - now).total_seconds())), session_id)


def open_session(
    s: Session, user_name: str, address: str | None, now: datetime, policy: SessionPolicy = DEFAULT_SESSION_POLICY
) -> SessionTokens:
    """Start a session for an authenticated user, inside the caller's write transaction."""
    session_id, expires_at = _new_session(s, user_name, address, now, policy)
    return _issue(s, user_name, session_id, now, expires_at, policy)


def _new_session(s: Session, user_name: str, address: str | None, now: datetime, policy: SessionPolicy) -> tuple[str, datetime]:
    session_id = secrets.token_hex(16)
    expires_at = now + policy.absolute_lifetime
    s.add(AuthSession(id=session_id, user_name=user_name, created_at=now, last_seen_at=now, expires_at=expires_at,
                      revoked_at=None, address=address, mfa_at=now))  # login confirmed a TOTP code
    s.flush()
    return session_id, expires_at


BROWSER_KIND = "browser"
"""The ``api_tokens.kind`` of a web console's session cookie: accepted only by the console, never as a bearer token."""


def open_browser_session(
    s: Session, user_name: str, address: str | None, now: datetime, policy: SessionPolicy = DEFAULT_SESSION_POLICY
) -> tuple[str, str]:
    """Start a session for a browser: one cookie token that lives as long as the session (no refresh token).

    The token dies with the session: logout, idle sign-off and the absolute
    lifetime apply exactly as to access tokens, so a cookie needs no rotation
    (a rotating cookie would race between a browser's parallel requests).
    Returns ``(token, session id)``.
    """
    session_id, expires_at = _new_session(s, user_name, address, now, policy)
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    s.add(ApiToken(token_sha256=token_digest(token), user_name=user_name, created_at=now, expires_at=expires_at,
                   revoked_at=None, session_id=session_id, kind=BROWSER_KIND))
    return token, session_id


def refresh_session(
    engine: Engine, refresh_token: str, now: datetime | None = None, policy: SessionPolicy = DEFAULT_SESSION_POLICY
) -> SessionTokens:
    """Rotate: new access and refresh tokens, the presented refresh token dies. Reuse revokes the session."""
    if not _REFRESH_SHAPE.match(refresh_token):
        raise InvalidToken()
    now = now or datetime.now(UTC)
    reused: tuple[str, str] | None = None
    with write_session(engine) as s:
        token = s.execute(
            select(ApiToken).where(ApiToken.token_sha256 == token_digest(refresh_token), ApiToken.kind == "refresh")
            .with_for_update()
        ).scalar_one_or_none()
        if token is None or token.session_id is None:
            raise InvalidToken()
        if token.revoked_at is not None:
            reused = (token.session_id, token.user_name)
        else:
            sess = s.get(AuthSession, token.session_id, with_for_update=True)
            user = s.get(User, token.user_name)
            if sess is None or user is None or user.disabled or sess.revoked_at is not None:
                raise InvalidToken()
            roles = {user.role, *s.scalars(select(UserRole.role).where(UserRole.user_name == user.name))}
            if as_utc(sess.expires_at) <= now or now - as_utc(sess.last_seen_at) > policy.idle_for(roles):
                raise InvalidToken()
            token.revoked_at = now
            s.execute(
                update(ApiToken)
                .where(ApiToken.session_id == sess.id, ApiToken.kind == "access", ApiToken.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            return _issue(s, user.name, sess.id, now, as_utc(sess.expires_at), policy)
    end_session(engine, reused[0], now)  # a refresh token was used twice: it was copied
    raise RefreshTokenReused(reused[1])
