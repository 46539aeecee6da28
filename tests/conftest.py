"""Fixtures: archive homes on SQLite and on the real PostgreSQL at 127.0.0.1:5432.

Every test that takes ``archive`` or ``home`` runs once per database backend.
A home is a copy of one template home per backend and test process, made by
``dicomguard init`` once (``init_home``): the folder is copied, and on
PostgreSQL the database is cloned with ``CREATE DATABASE ... TEMPLATE``. Each
test therefore gets a fresh, private archive (its own folder and database)
without paying for ``init`` again; the copies share the template's keys, which
no test relies on being unique. Tests that run ``init`` themselves take
``empty_db_url``.

Where PostgreSQL is unreachable the PostgreSQL variant is skipped with the
reason, except under CI (``CI`` set), where that is a failure: CI must prove
both backends. PostgreSQL variants are marked ``slow``: ``pytest -m "not slow"``
is the quick SQLite-only feedback loop.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# CI: property-based tests are derandomized (the same examples every run), so the suite's time and outcome
# do not depend on the draw; locally they search anew each run.
if os.environ.get("CI"):
    settings.register_profile("ci", derandomize=True, database=None)
    settings.load_profile("ci")

PASSPHRASE = "test passphrase for a throwaway archive"
PG_ADMIN_URL = os.environ.get("DICOMGUARD_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SHARED = Path(__file__).resolve().parents[2] / "shared"
BACKENDS = ("sqlite", "postgresql")


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The PostgreSQL variant of every backend-parametrized test is slow (server round trips, database clones)."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("db_backend") == "postgresql":
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def pg_available() -> bool:
    return _pg_available()


# Test-process settings: cheaper argon2id for sealing keys (8 MiB, t=1) and for passwords (see identity/users.py);
# same code paths, the product's defaults untouched. Set before any test builds a hasher.
TEST_ENVIRONMENT = {
    "DICOMGUARD_KDF__MEMORY_KIB": "8192",
    "DICOMGUARD_KDF__TIME_COST": "1",
    "DICOMGUARD_UNSAFE_TEST_PASSWORD_HASH": "1",
    "DICOMGUARD_PASSPHRASE": PASSPHRASE,
}
os.environ.update(TEST_ENVIRONMENT)


@pytest.fixture(autouse=True)
def _test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in TEST_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    for var in ("DICOMGUARD_PASSPHRASE_FILE", "DICOMGUARD_DATABASE__URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(params=BACKENDS)
def db_backend(request: pytest.FixtureRequest, pg_available: bool) -> str:
    if request.param == "postgresql" and not pg_available:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL unreachable at {PG_ADMIN_URL} under CI")
        pytest.skip(f"PostgreSQL unreachable at {PG_ADMIN_URL}")
    return str(request.param)


def _pg_admin():  # type: ignore[no-untyped-def]
    import sqlalchemy

    return sqlalchemy.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


def _pg_url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def empty_db_url(db_backend: str) -> Iterator[str]:
    """A database with nothing in it (``""``: SQLite in the home), for tests that run ``init`` themselves."""
    if db_backend == "sqlite":
        yield ""
        return
    yield from _pg_database(None)


def _pg_database(template: str | None) -> Iterator[str]:
    name = f"dgtest_{secrets.token_hex(6)}"
    admin = _pg_admin()
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield _pg_url(name)
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


class _Templates:
    """One initialized home per backend for this test process, made on first use and removed at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.made: dict[str, tuple[Path, str]] = {}

    def get(self, backend: str) -> tuple[Path, str]:
        if backend not in self.made:
            from dicomguard.app.home import init_home

            root = self.folder / f"template-{backend}"
            database = ""
            if backend == "postgresql":
                database = f"dgtpl_{secrets.token_hex(6)}"
                with _pg_admin().connect() as c:
                    c.exec_driver_sql(f'CREATE DATABASE "{database}"')
            init_home(root, PASSPHRASE, "admin", _pg_url(database) if database else "")
            self.made[backend] = (root, database)
        return self.made[backend]

    def remove(self) -> None:
        for _, database in self.made.values():
            if database:
                with _pg_admin().connect() as c:
                    c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture(scope="session")
def _templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Templates]:
    templates = _Templates(tmp_path_factory.mktemp("templates"))
    yield templates
    templates.remove()


@pytest.fixture
def db_url(db_backend: str, _templates: _Templates) -> Iterator[str]:
    """The database of this test's home: ``""`` (SQLite in the home) or a clone of the template's PostgreSQL database."""
    if db_backend == "sqlite":
        yield ""
        return
    _, template = _templates.get(db_backend)
    yield from _pg_database(template)


@pytest.fixture
def home(tmp_path: Path, db_backend: str, db_url: str, _templates: _Templates, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh archive home (a copy of the template), with ``DICOMGUARD_HOME`` pointing at it."""
    template, template_db = _templates.get(db_backend)
    root = tmp_path / "home"
    shutil.copytree(template, root, symlinks=True)
    if template_db:
        config = root / "config.toml"
        config.write_text(config.read_text(encoding="utf-8").replace(_pg_url(template_db), db_url), encoding="utf-8")
    monkeypatch.setenv("DICOMGUARD_HOME", str(root))
    return root


@pytest.fixture
def archive(home: Path) -> Iterator["Archive"]:  # type: ignore[name-defined]  # noqa: F821
    from dicomguard.app.archive import Archive

    a = Archive.open(home, PASSPHRASE)
    try:
        yield a
    finally:
        a.close()


@pytest.fixture
def events(archive) -> list:  # type: ignore[no-untyped-def,type-arg]
    """Every event the archive publishes from now on, in order."""
    seen: list = []  # type: ignore[type-arg]
    archive.ctx.bus.subscribe(lambda s, e: seen.append(e))
    return seen


def pydicom_test_file(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    assert path is not None, name
    return Path(path)
