"""Fixtures: archive homes on SQLite and on the real PostgreSQL at 127.0.0.1:5432.

Every test that takes ``archive`` or ``home`` runs once per database backend.
PostgreSQL tests get a fresh database each. Where PostgreSQL is unreachable
the PostgreSQL variant is skipped with the reason, except under CI (``CI`` set),
where that is a failure: CI must prove both backends.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

PASSPHRASE = "test passphrase for a throwaway archive"
PG_ADMIN_URL = os.environ.get("DICOMGUARD_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SHARED = Path(__file__).resolve().parents[2] / "shared"


def _pg_available() -> bool:
    import sqlalchemy

    try:
        eng = sqlalchemy.create_engine(PG_ADMIN_URL)
        with eng.connect() as c:
            c.exec_driver_sql("select 1")
        eng.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_available() -> bool:
    return _pg_available()


@pytest.fixture(autouse=True)
def _cheap_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests seal keys with a cheaper argon2id cost (8 MiB, t=1): same code path, faster suite."""
    monkeypatch.setenv("DICOMGUARD_KDF__MEMORY_KIB", "8192")
    monkeypatch.setenv("DICOMGUARD_KDF__TIME_COST", "1")
    monkeypatch.setenv("DICOMGUARD_PASSPHRASE", PASSPHRASE)
    for var in ("DICOMGUARD_PASSPHRASE_FILE", "DICOMGUARD_DATABASE__URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, pg_available: bool) -> Iterator[str]:
    if request.param == "sqlite":
        yield ""
        return
    if not pg_available:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL unreachable at {PG_ADMIN_URL} under CI")
        pytest.skip(f"PostgreSQL unreachable at {PG_ADMIN_URL}")
    import sqlalchemy

    name = f"dgtest_{secrets.token_hex(6)}"
    admin = sqlalchemy.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def home(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    from dicomguard.core.home import init_home

    root = tmp_path / "home"
    init_home(root, PASSPHRASE, "admin", db_url)
    monkeypatch.setenv("DICOMGUARD_HOME", str(root))
    return root


@pytest.fixture
def archive(home: Path) -> Iterator["Archive"]:  # type: ignore[name-defined]  # noqa: F821
    from dicomguard.core.archive import Archive

    a = Archive.open(home, PASSPHRASE)
    try:
        yield a
    finally:
        a.close()


def pydicom_test_file(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    assert path is not None, name
    return Path(path)
