"""Bearer tokens for DICOMweb (RFC 6750): random, stored as SHA-256 only, checked against the index on every use.

Guarantees:

* **Unguessable.** A token is 256 random bits from :mod:`secrets`, URL-safe
  base64 encoded (RFC 4648 section 5) behind a fixed prefix that secret
  scanners can recognise.
* **Useless if the index leaks.** Only the SHA-256 of the token is stored. The
  token has 256 bits of entropy, so a fast hash is sufficient (no password
  stretching is needed) and a stolen ``api_tokens`` table cannot be replayed.
* **Revocable at once.** :func:`verify_token` reads the database on *every*
  request: a revoked or expired token, or a token of a disabled or deleted
  user, stops working at its next use. There is no signature that would stay
  valid until it expires.
* **No timing oracle.** The lookup key is the SHA-256 of the presented token:
  an attacker who varies the token cannot steer the compared bytes (that
  would need SHA-256 preimages), and the found row's hash is compared again in
  constant time (:func:`hmac.compare_digest`).
* **One opaque error.** Unknown, malformed, expired, revoked and disabled all
  raise :class:`InvalidToken` with the same message (like Fernet's
  ``InvalidToken``): the reason is not disclosed to the caller.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, bindparam, select, update
from sqlalchemy.orm import Session

from dicomguard.errors import DicomGuardError, NotFoundError
from dicomguard.identity.session_policy import DEFAULT_SESSION_POLICY, SessionPolicy
from dicomguard.identity.users import decode_attributes
from dicomguard.index.db import as_utc, read_session, write_session
from dicomguard.index.models import ApiToken, AuthSession, User, UserRole

TOKEN_PREFIX = "dgt_"
TOKEN_BYTES = 32  # 256 bits
MAX_TTL = timedelta(days=30)
MIN_TTL = timedelta(minutes=1)
# prefix + 43 characters of unpadded URL-safe base64 (32 bytes).
_TOKEN_SHAPE = re.compile(r"^dgt_[A-Za-z0-9_-]{43}$")
_TTL = re.compile(r"^([1-9][0-9]{0,5})([mhd])$")
_TTL_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


class InvalidToken(DicomGuardError):
    """The bearer token is not (or no longer) valid. Deliberately says nothing more."""

    def __init__(self) -> None:
        super().__init__("invalid or expired token")


@dataclass(frozen=True)
class TokenPrincipal:
    """Who a valid token speaks for, as read from the index at verification time."""

    user_name: str
    role: str
    expires_at: datetime
    roles: frozenset[str] = frozenset()
    """The primary role and the granted ones (read at verification time)."""
    session_id: str | None = None
    """The login session of an access token; None for an API token."""
    department: str | None = None
    attributes: dict[str, object] = field(default_factory=dict)
    """Policy attributes of the account (site, modalities, referring_token, clearances)."""
    mfa_at: datetime | None = None
    """Last TOTP confirmation of the session (login or step-up); None for an API token."""
    scopes: tuple[str, ...] | None = None
    """Actions a scoped API token is limited to; None: unscoped."""


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def parse_ttl(text: str) -> timedelta:
    """``15m``, ``8h``, ``1d`` -> timedelta; between one minute and 30 days."""
    m = _TTL.match(text.strip())
    if not m:
        raise ValueError("ttl is a number followed by m, h or d (e.g. 15m, 8h, 1d)")
    ttl = timedelta(**{_TTL_UNITS[m.group(2)]: int(m.group(1))})
    _check_ttl(ttl)
    return ttl


def _check_ttl(ttl: timedelta) -> None:
    if ttl < MIN_TTL or ttl > MAX_TTL:
        raise ValueError("ttl must be between 1 minute and 30 days")


TOKEN_SCOPES = ("store", "query", "retrieve", "export", "audit-read", "administer")
"""Actions an API token can be limited to (``--scope``); the policies still decide within them."""


def check_scopes(scopes: Iterable[str] | None) -> tuple[str, ...] | None:
    """Canonical scopes (sorted, known actions only); ``None`` or empty input: unscoped."""
    if not scopes:
        return None
    wanted = sorted({s.strip().lower() for s in scopes if s.strip()})
    unknown = [s for s in wanted if s not in TOKEN_SCOPES]
    if unknown:
        raise ValueError(f"unknown scope {unknown[0]!r}; one of {', '.join(TOKEN_SCOPES)}")
    return tuple(wanted) or None


def create_token(s: Session, user_name: str, ttl: timedelta, scopes: Iterable[str] | None = None) -> str:
    """Issue a token for an existing, enabled user in ``s``; returns it once (only its hash is stored).

    With ``scopes`` the token can be used only for those actions (e.g. ``store``
    for an upload service: a stolen token cannot read anything back); the
    user's roles and the policies still decide within them. Who may issue one
    is decided by ``identity.accounts.AccountService``.
    """
    _check_ttl(ttl)
    scoped = check_scopes(scopes)
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    now = datetime.now(UTC)
    user = s.get(User, user_name)
    if user is None or user.disabled:
        raise NotFoundError(f"no enabled user {user_name!r}")
    s.add(ApiToken(token_sha256=token_digest(token), user_name=user_name, created_at=now, expires_at=now + ttl, revoked_at=None,
                   scopes=",".join(scoped) if scoped else None))
    return token


_KINDS = {False: (None, "access"), True: ("browser",)}


def verify_token(
    engine: Engine, token: str, now: datetime | None = None, policy: SessionPolicy = DEFAULT_SESSION_POLICY, *,
    browser: bool = False,
) -> TokenPrincipal:
    """The principal of a valid token; raises :class:`InvalidToken` otherwise (reads the index every time).

    Access tokens of a login session are also refused when the session was
    logged out or revoked, has been idle longer than the idle timeout of the
    user's roles (the session is then signed off) or is past its absolute
    lifetime. Refresh tokens are never accepted as bearer tokens. ``browser``
    selects the other kind: a web console's session cookie, accepted nowhere
    else (and no bearer token is accepted as a console cookie).
    """
    if not _TOKEN_SHAPE.match(token):
        raise InvalidToken()  # malformed: refused without a database round trip
    digest = token_digest(token)
    now = now or datetime.now(UTC)
    with read_session(engine) as s:
        # One statement per request: a row per role granted beyond the account's own (at least one row).
        rows = s.connection().execute(_TOKEN_ROWS, {"digest": digest}).all()
    row = rows[0] if rows else None
    if row is None or not hmac.compare_digest(bytes(row.token_sha256), digest):
        raise InvalidToken()
    granted = [r.granted_role for r in rows if r.granted_role is not None]
    expires_at = as_utc(row.expires_at)
    if row.revoked_at is not None or expires_at <= now or row.disabled or row.kind not in _KINDS[browser]:
        raise InvalidToken()
    roles = frozenset({row.role, *granted})
    if row.session_id is not None:
        if row.session_revoked_at is not None or row.session_expires_at is None:
            raise InvalidToken()
        if as_utc(row.session_expires_at) <= now:
            raise InvalidToken()  # absolute lifetime
        last_seen = as_utc(row.last_seen_at)
        if now - last_seen > policy.idle_for(roles):
            end_session(engine, row.session_id, now)  # automatic sign-off
            raise InvalidToken()
        if now - last_seen >= policy.touch_interval:
            with write_session(engine) as s:
                s.execute(
                    update(AuthSession)
                    .where(AuthSession.id == row.session_id, AuthSession.last_seen_at < now)
                    .values(last_seen_at=now)
                )
    mfa_at = as_utc(row.mfa_at) if row.session_id is not None and row.mfa_at is not None else None
    scopes = tuple(filter(None, row.scopes.split(","))) if row.scopes is not None else None
    return TokenPrincipal(row.name, row.role, expires_at, roles, row.session_id, row.department, decode_attributes(row.attributes), mfa_at,
                          scopes)


_TOKEN_ROWS = (
    select(
        ApiToken.token_sha256, ApiToken.expires_at, ApiToken.revoked_at, ApiToken.kind, ApiToken.session_id, ApiToken.scopes,
        User.name, User.role, User.disabled, User.department, User.attributes,
        AuthSession.revoked_at.label("session_revoked_at"), AuthSession.expires_at.label("session_expires_at"),
        AuthSession.last_seen_at, AuthSession.mfa_at, UserRole.role.label("granted_role"),
    )
    .join(User, User.name == ApiToken.user_name)
    .outerjoin(AuthSession, AuthSession.id == ApiToken.session_id)
    .outerjoin(UserRole, UserRole.user_name == User.name)
    .where(ApiToken.token_sha256 == bindparam("digest"))
)
"""A token's row with its account and session, once per role granted to the account beyond its own (once if none)."""


def end_session(engine: Engine, session_id: str, now: datetime | None = None) -> None:
    """Revoke a login session and every token issued in it (logout, idle sign-off, refresh-token reuse)."""
    now = now or datetime.now(UTC)
    with write_session(engine) as s:
        s.execute(update(AuthSession).where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None)).values(revoked_at=now))
        s.execute(update(ApiToken).where(ApiToken.session_id == session_id, ApiToken.revoked_at.is_(None)).values(revoked_at=now))


def token_owner(s: Session, token: str) -> str | None:
    """The account a token (live or not) was issued to, or None."""
    return s.scalar(select(ApiToken.user_name).where(ApiToken.token_sha256 == token_digest(token)))


def revoke_token(s: Session, token: str) -> bool:
    """Revoke one token in ``s``; True if it existed and was not already revoked."""
    result = s.execute(
        update(ApiToken)
        .where(ApiToken.token_sha256 == token_digest(token), ApiToken.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def revoke_user_tokens(s: Session, user_name: str) -> int:
    """Revoke every live token of a user in ``s`` (e.g. when a laptop is lost); returns how many."""
    result = s.execute(
        update(ApiToken)
        .where(ApiToken.user_name == user_name, ApiToken.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
