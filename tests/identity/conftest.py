"""Identity fixtures: the real HTTPS server of ``tests/web`` (both database backends) and login helpers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pyotp
import pytest
from sqlalchemy import update

from dicomguard.core.keyring import PURPOSE_IDENTITY
from dicomguard.identity.users import create_user
from dicomguard.index.db import write_session
from dicomguard.index.models import User
from tests.web.conftest import web  # noqa: F401 - fixture reused here


@dataclass
class Account:
    name: str
    password: str
    secret: str

    def code(self, steps: int = 0) -> str:
        return pyotp.TOTP(self.secret).at(datetime.now(UTC) + timedelta(seconds=30 * steps))


def add_user(archive, name: str, role: str = "radiologist", department: str | None = None) -> Account:  # type: ignore[no-untyped-def]
    with write_session(archive.ctx.engine) as s:
        new = create_user(s, archive.ctx.keyring.archive_key(PURPOSE_IDENTITY), name, role, department=department)
    return Account(name, new.password, new.totp_secret)


def forget_totp_step(archive, name: str) -> None:  # type: ignore[no-untyped-def]
    """Let a test log the same user in again within one 30-second step (replay protection is tested on its own)."""
    with write_session(archive.ctx.engine) as s:
        s.execute(update(User).where(User.name == name).values(totp_last_step=None))


def login(http: httpx.Client, account: Account, password: str | None = None, code: str | None = None) -> httpx.Response:
    return http.post("/auth/login", json={"username": account.name, "password": account.password if password is None else password,
                                          "totp": account.code() if code is None else code})


@pytest.fixture
def dr(web) -> Account:  # type: ignore[no-untyped-def]  # noqa: F811
    return add_user(web.archive, "dr.house", "radiologist")
