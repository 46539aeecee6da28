"""User accounts: argon2id password hashes (RFC 9106) and TOTP secrets (RFC 6238).

Passwords are generated, shown once, and stored only as argon2id PHC strings.
TOTP secrets must be recoverable to check codes, so they are sealed under the
identity key (wrapped by the KEK) and bound to the user name.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from dicomguard.core.access import (
    Principal,
    PrincipalKind,
    normalize_department,
    normalize_label,
)
from dicomguard.crypto.aead import derive_key, open_sealed, seal
from dicomguard.errors import DicomGuardError, NotFoundError
from dicomguard.identity._common_passwords import COMMON_PASSWORDS
from dicomguard.identity.roles import ROLES
from dicomguard.index.db import as_utc
from dicomguard.index.models import (
    ApiToken,
    AuthFailure,
    AuthSession,
    RecoveryCode,
    User,
    UserRole,
)

_NAME = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")
UNSAFE_TEST_HASH_ENV = "DICOMGUARD_UNSAFE_TEST_PASSWORD_HASH"
"""Set to 1 by the test suite only: passwords and recovery codes hashed with argon2id at 8 MiB, t=1 (verifiable, cheap)."""
log = logging.getLogger(__name__)


@functools.cache
def _hasher() -> PasswordHasher:
    """argon2id with the RFC 9106 recommended parameters; weaker only where the test suite asks, loudly."""
    if os.environ.get(UNSAFE_TEST_HASH_ENV) == "1":
        log.warning("UNSAFE: %s=1: passwords are hashed with test-only argon2id parameters; never set it in production",
                    UNSAFE_TEST_HASH_ENV)
        return PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
    return PasswordHasher()


@dataclass(frozen=True)
class NewUserSecrets:
    """Shown once to the administrator who created the account; never stored in clear."""

    name: str
    role: str
    password: str
    totp_secret: str
    provisioning_uri: str


def _totp_key(identity_key: bytes) -> bytes:
    return derive_key(identity_key, b"dicomguard totp v1")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")


def create_user(
    session: Session,
    identity_key: bytes,
    name: str,
    role: str,
    issuer: str = "dicomguard",
    department: str | None = None,
    attributes: dict[str, object] | None = None,
) -> NewUserSecrets:
    """Create an account. ``attributes`` are its policy attributes (see :func:`check_attributes`)."""
    if not _NAME.match(name):
        raise ValueError("user names are 2-64 characters: lower-case letters, digits, '.', '_', '-'")
    _check_role(role)
    department = check_department(department)
    stored_attributes = encode_attributes(attributes) if attributes else None
    if session.get(User, name) is not None:
        raise ValueError(f"user {name!r} exists")
    password = secrets.token_urlsafe(18)
    totp_secret = pyotp.random_base32(length=32)
    session.add(
        User(
            name=name,
            role=role,
            password_hash=_hasher().hash(password),
            totp_secret=seal(_totp_key(identity_key), totp_secret.encode(), f"users|{name}".encode()),
            disabled=False,
            created_at=datetime.now(UTC),
            department=department,
            attributes=stored_attributes,
        )
    )
    uri = pyotp.TOTP(totp_secret).provisioning_uri(name=name, issuer_name=issuer)
    return NewUserSecrets(name, role, password, totp_secret, uri)


# -- policy attributes ------------------------------------------------------------------------

ATTRIBUTE_KEYS = ("site", "modalities", "referring_token", "clearances")
"""Keys of ``users.attributes`` (a JSON object); the department is a column of its own."""
_MODALITY = re.compile(r"^[A-Z0-9]{1,16}$")
_TOKEN_HEX = re.compile(r"^[0-9a-f]{32}$")
_MAX_ATTRIBUTES_JSON = 2048


def check_department(department: str | None) -> str | None:
    """A department name as stored (``None`` for none): canonical upper case (see ``normalize_department``)."""
    return None if department is None else normalize_department(department) or None


check_label = normalize_label
"""A study label or clearance: lower case, ``[a-z0-9_-]{1,32}``."""


def check_attributes(attributes: dict[str, object]) -> dict[str, object]:
    """Validated, canonical policy attributes: site (str), modalities (upper case), referring_token (hex), clearances."""
    unknown = set(attributes) - set(ATTRIBUTE_KEYS)
    if unknown:
        raise ValueError(f"unknown user attributes {sorted(unknown)}; known: {', '.join(ATTRIBUTE_KEYS)}")
    out: dict[str, object] = {}
    site = str(attributes.get("site") or "").strip()
    if len(site) > 64:
        raise ValueError("a site name has at most 64 characters")
    if site:
        out["site"] = site
    modalities = sorted({str(m).strip().upper() for m in (attributes.get("modalities") or ())})  # type: ignore[attr-defined]
    for m in modalities:
        if not _MODALITY.match(m):
            raise ValueError(f"invalid modality {m!r} (e.g. CT, MR, US)")
    if modalities:
        out["modalities"] = modalities
    token = str(attributes.get("referring_token") or "").strip().lower()
    if token:
        if not _TOKEN_HEX.match(token):
            raise ValueError("referring_token is the hex blind index of a name, not a name")
        out["referring_token"] = token
    clearances = sorted({check_label(str(c)) for c in (attributes.get("clearances") or ())})  # type: ignore[attr-defined]
    if clearances:
        out["clearances"] = clearances
    return out


def encode_attributes(attributes: dict[str, object]) -> str | None:
    value = check_attributes(attributes)
    if not value:
        return None
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    if len(text) > _MAX_ATTRIBUTES_JSON:
        raise ValueError("too many user attributes")
    return text


def decode_attributes(stored: str | None) -> dict[str, object]:
    """The stored policy attributes of an account; malformed or absent: none."""
    if not stored:
        return {}
    try:
        value = json.loads(stored)
    except ValueError:
        return {}
    return {k: v for k, v in value.items() if k in ATTRIBUTE_KEYS} if isinstance(value, dict) else {}


_UNCHANGED: object = object()


def set_attributes(
    session: Session,
    name: str,
    *,
    department: str | None | object = _UNCHANGED,
    **changes: object,
) -> dict[str, object]:
    """Change an account's department and/or policy attributes (keys of :data:`ATTRIBUTE_KEYS`).

    A key given as ``None`` or empty clears it; keys not given stay. Returns the
    resulting attributes (with ``department``). Who may do this is decided by the
    policies (``identity.accounts.AccountService``), not here.
    """
    user = _user(session, name, lock=True)
    if department is not _UNCHANGED:
        user.department = check_department(department)  # type: ignore[arg-type]
    merged = {**decode_attributes(user.attributes), **changes}
    user.attributes = encode_attributes(merged)
    return {"department": user.department or "", **decode_attributes(user.attributes)}


def user_principal(session: Session, name: str) -> Principal:
    """The :class:`Principal` a user's request carries, as the web layer builds it (no session, no MFA)."""
    user = _user(session, name)
    attributes: dict[str, object] = dict(decode_attributes(user.attributes))
    attributes["department"] = user.department or ""
    return Principal(PrincipalKind.USER, name, frozenset(user_roles(session, name)), attributes=attributes)


def totp_secret(identity_key: bytes, user: User) -> str:
    return open_sealed(_totp_key(identity_key), user.totp_secret, f"users|{user.name}".encode()).decode()


def verify_password(user: User, password: str) -> bool:
    try:
        return _hasher().verify(user.password_hash, password)
    except Exception:
        return False


# -- administration: data operations; who may call them is decided in identity.accounts -------------

RECOVERY_CODES = 10
MIN_PASSWORD_LENGTH = 12


@dataclass(frozen=True)
class UserInfo:
    name: str
    role: str
    roles: tuple[str, ...]
    department: str | None
    disabled: bool
    created_at: datetime
    attributes: dict[str, object] = field(default_factory=dict)
    """Policy attributes (site, modalities, referring_token, clearances); no secret, no name."""
    mfa_confirmed: bool = False
    """The account's TOTP authenticator has produced an accepted code (it is set up, not only issued)."""
    locked_until: datetime | None = None
    """Failed logins lock the account until then (``None``: not locked)."""


def _user(session: Session, name: str, lock: bool = False) -> User:
    user = session.get(User, name, with_for_update=lock)
    if user is None:
        raise NotFoundError(f"no user {name!r}")
    return user


def user_roles(session: Session, name: str) -> tuple[str, ...]:
    """The primary role followed by the granted ones, sorted."""
    user = _user(session, name)
    granted = session.scalars(select(UserRole.role).where(UserRole.user_name == name)).all()
    return (user.role, *sorted(set(granted) - {user.role}))


def list_users(session: Session) -> list[UserInfo]:
    grants: dict[str, list[str]] = {}
    for row in session.execute(select(UserRole.user_name, UserRole.role)):
        grants.setdefault(row.user_name, []).append(row.role)
    now = datetime.now(UTC)
    locked = {row.key.removeprefix("user:"): as_utc(row.locked_until)
              for row in session.scalars(select(AuthFailure).where(AuthFailure.key.like("user:%"), AuthFailure.locked_until.is_not(None)))
              if as_utc(row.locked_until) > now}
    return [
        UserInfo(u.name, u.role, (u.role, *sorted(set(grants.get(u.name, ())) - {u.role})), u.department, u.disabled, u.created_at,
                 decode_attributes(u.attributes), u.totp_last_step is not None, locked.get(u.name))
        for u in session.scalars(select(User).order_by(User.name))
    ]


def grant_role(session: Session, name: str, role: str, granted_by: str) -> bool:
    """Grant an additional role; False if the user already holds it."""
    _check_role(role)
    if role in user_roles(session, name):
        return False
    session.add(UserRole(user_name=name, role=role, granted_by=granted_by[:128], granted_at=datetime.now(UTC)))
    return True


def revoke_role(session: Session, name: str, role: str) -> bool:
    """Revoke a granted role (the primary role stays: disable the account instead); False if not granted."""
    _check_role(role)
    _user(session, name)
    result = session.execute(delete(UserRole).where(UserRole.user_name == name, UserRole.role == role))
    return bool(result.rowcount)


def end_sessions(session: Session, name: str, now: datetime | None = None) -> None:
    """Revoke every login session and token of a user, effective at their next request."""
    now = now or datetime.now(UTC)
    session.execute(update(AuthSession).where(AuthSession.user_name == name, AuthSession.revoked_at.is_(None)).values(revoked_at=now))
    session.execute(update(ApiToken).where(ApiToken.user_name == name, ApiToken.revoked_at.is_(None)).values(revoked_at=now))


def set_disabled(session: Session, name: str, disabled: bool) -> None:
    """Disable (sessions and tokens end at once) or re-enable an account."""
    user = _user(session, name, lock=True)
    user.disabled = disabled
    if disabled:
        end_sessions(session, name)


def reset_mfa(session: Session, identity_key: bytes, name: str, issuer: str = "dicomguard") -> tuple[str, str]:
    """A new TOTP secret (the old one stops working); returns (secret, provisioning URI), shown once."""
    user = _user(session, name, lock=True)
    secret = pyotp.random_base32(length=32)
    user.totp_secret = seal(_totp_key(identity_key), secret.encode(), f"users|{name}".encode())
    user.totp_last_step = None
    end_sessions(session, name)
    return secret, pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=issuer)


def unlock(session: Session, name: str) -> None:
    """Clear the failed-login counter and lockout of an account."""
    _user(session, name)
    session.execute(delete(AuthFailure).where(AuthFailure.key == f"user:{name}"))


# Recovery codes: "XXXXXX-YYYYYYYYYYYY"; the id (first group) locates the row, the secret is argon2id-hashed.
_CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_RECOVERY = re.compile(r"^([a-z2-9]{6})-([a-z2-9]{12})$")


def _random(n: int) -> str:
    return "".join(secrets.choice(_CODE_ALPHABET) for _ in range(n))


def new_recovery_codes(session: Session, name: str) -> list[str]:
    """Replace a user's recovery codes with :data:`RECOVERY_CODES` new single-use codes, returned once."""
    _user(session, name)
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_name == name))
    codes, now = [], datetime.now(UTC)
    for _ in range(RECOVERY_CODES):
        code_id, secret = _random(6), _random(12)
        session.add(RecoveryCode(code_id=code_id, user_name=name, code_hash=_hasher().hash(secret), created_at=now))
        codes.append(f"{code_id}-{secret}")
    return codes


def is_recovery_code_shape(code: str) -> bool:
    return bool(_RECOVERY.match(code.strip().lower()))


def use_recovery_code(session: Session, name: str, code: str, now: datetime) -> bool:
    """Consume a recovery code of ``name``; True once per code (the row is locked while checked)."""
    m = _RECOVERY.match(code.strip().lower())
    if not m:
        return False
    row = session.get(RecoveryCode, m.group(1), with_for_update=True)
    if row is None or row.user_name != name or row.used_at is not None:
        return False
    try:
        _hasher().verify(row.code_hash, m.group(2))
    except (VerificationError, InvalidHashError):
        return False
    row.used_at = now
    return True


# -- passwords -------------------------------------------------------------------------------


class PasswordPolicyError(DicomGuardError):
    """A chosen password does not meet the policy (length, common/breached list, contains the user name)."""


def common_passwords() -> frozenset[str]:
    return COMMON_PASSWORDS


def check_password_policy(name: str, password: str) -> None:
    """NIST SP 800-63B 5.1.1.2: a minimum length, no known-common password, no context-specific word (the user name)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"passwords have at least {MIN_PASSWORD_LENGTH} characters")
    lowered = password.lower()
    if lowered in common_passwords() or re.sub(r"[0-9!@#$%^&*.]+$", "", lowered) in common_passwords():
        raise PasswordPolicyError("this password is on the list of common or breached passwords")
    if name.lower() in lowered or any(part and len(part) >= 3 and part in lowered for part in re.split(r"[._-]", name.lower())):
        raise PasswordPolicyError("the password must not contain the user name")


def set_password(session: Session, name: str, new_password: str) -> None:
    """Store a user-chosen password (policy checked) as argon2id; other sessions are ended."""
    check_password_policy(name, new_password)
    user = _user(session, name, lock=True)
    user.password_hash = _hasher().hash(new_password)


def password_needs_rehash(user: User) -> bool:
    try:
        return _hasher().check_needs_rehash(user.password_hash)
    except (InvalidHashError, ValueError):
        return True


def rehash_password(user: User, password: str) -> None:
    """Re-hash with the current parameters (called after a successful login with an older hash)."""
    user.password_hash = _hasher().hash(password)


@functools.cache
def _dummy_hash() -> str:
    """A hash of a random password with the current parameters (computed once, on the first login attempt)."""
    return _hasher().hash(secrets.token_urlsafe(16))


def burn_verification(password: str) -> None:
    """Verify against a dummy hash: a missing account costs the same time as a wrong password."""
    with contextlib.suppress(VerificationError, InvalidHashError):
        _hasher().verify(_dummy_hash(), password)
