"""User accounts: argon2id password hashes (RFC 9106) and TOTP secrets (RFC 6238).

Passwords are generated, shown once, and stored only as argon2id PHC strings.
TOTP secrets must be recoverable to check codes, so they are sealed under the
identity key (wrapped by the KEK) and bound to the user name.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import pyotp
from argon2 import PasswordHasher
from sqlalchemy.orm import Session

from dicomguard.crypto.aead import derive_key, open_sealed, seal
from dicomguard.index.models import User

ROLES = (
    "radiologist",
    "cardiologist",
    "technologist",
    "sonographer",
    "referring_physician",
    "researcher",
    "security_officer",
    "admin",
)
_NAME = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")
_hasher = PasswordHasher()  # argon2id, RFC 9106 recommended parameters


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


def create_user(session: Session, identity_key: bytes, name: str, role: str, issuer: str = "dicomguard") -> NewUserSecrets:
    if not _NAME.match(name):
        raise ValueError("user names are 2-64 characters: lower-case letters, digits, '.', '_', '-'")
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    password = secrets.token_urlsafe(18)
    totp_secret = pyotp.random_base32(length=32)
    session.add(
        User(
            name=name,
            role=role,
            password_hash=_hasher.hash(password),
            totp_secret=seal(_totp_key(identity_key), totp_secret.encode(), f"users|{name}".encode()),
            disabled=False,
            created_at=datetime.now(UTC),
        )
    )
    uri = pyotp.TOTP(totp_secret).provisioning_uri(name=name, issuer_name=issuer)
    return NewUserSecrets(name, role, password, totp_secret, uri)


def totp_secret(identity_key: bytes, user: User) -> str:
    return open_sealed(_totp_key(identity_key), user.totp_secret, f"users|{user.name}".encode()).decode()


def verify_password(user: User, password: str) -> bool:
    try:
        return _hasher.verify(user.password_hash, password)
    except Exception:
        return False
