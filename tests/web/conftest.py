"""A real HTTPS DICOMweb server on 127.0.0.1 (both database backends), users, tokens and clients."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from dicomguard.core.keyring import PURPOSE_IDENTITY
from dicomguard.dimse.server import free_port
from dicomguard.identity.tokens import create_token
from dicomguard.identity.users import create_user
from dicomguard.index.db import write_session
from dicomguard.pki.store import CA_FILE, TLS_DIR
from dicomguard.web.server import serve_https
from tests.dicom_factory import DEPARTMENT


@dataclass
class WebServer:
    archive: object
    url: str
    ca: str
    sessions: list[requests.Session] = field(default_factory=list)

    @property
    def dicomweb(self) -> str:
        return self.url + "/dicomweb"

    def user(self, name: str, role: str, department: str | None = DEPARTMENT) -> None:
        """A user of the generated studies' department unless told otherwise."""
        with write_session(self.archive.ctx.engine) as s:  # type: ignore[attr-defined]
            create_user(s, self.archive.ctx.keyring.archive_key(PURPOSE_IDENTITY), name, role, department=department)  # type: ignore[attr-defined]

    def token(self, name: str, role: str | None = None, ttl: timedelta = timedelta(hours=1), department: str | None = DEPARTMENT) -> str:
        if role is not None:
            self.user(name, role, department)
        with write_session(self.archive.ctx.engine) as s:  # type: ignore[attr-defined]
            return create_token(s, name, ttl)

    def http(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        verify = ssl.create_default_context(cafile=self.ca)
        return httpx.Client(base_url=self.url, verify=verify, headers=headers, timeout=30, trust_env=False)

    def dicomweb_client(self, token: str) -> DICOMwebClient:
        session = requests.Session()
        session.verify = self.ca
        session.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise replace the archive CA
        self.sessions.append(session)
        return DICOMwebClient(url=self.dicomweb, session=session, headers={"Authorization": f"Bearer {token}"})


def start_server(archive) -> tuple[WebServer, Callable[[], None]]:  # type: ignore[no-untyped-def]
    port = free_port()
    ready, stop = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            serve_https(archive, "127.0.0.1", port, ready=ready, stop=stop)
        except BaseException as exc:  # noqa: BLE001 - reported by the fixture
            failures.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="dicomweb-test-server", daemon=True)
    thread.start()
    assert ready.wait(20), "HTTPS server did not start"
    assert not failures, failures

    def stop_server() -> None:
        stop.set()
        thread.join(20)
        assert not thread.is_alive(), "HTTPS server did not stop"

    ca = str(Path(archive.home) / TLS_DIR / CA_FILE)
    return WebServer(archive, f"https://127.0.0.1:{port}", ca), stop_server


@pytest.fixture
def web(archive) -> Iterator[WebServer]:  # type: ignore[no-untyped-def]
    server, stop = start_server(archive)
    try:
        yield server
    finally:
        for session in server.sessions:  # idle TLS connections would delay the graceful shutdown
            session.close()
        stop()


def issue_token(engine, user: str, ttl: timedelta, scopes=None) -> str:  # type: ignore[no-untyped-def]
    """A token issued directly in the index (test set-up: no administration record)."""
    with write_session(engine) as s:
        return create_token(s, user, ttl, scopes)


def revoke_one(engine, token: str) -> bool:  # type: ignore[no-untyped-def]
    from dicomguard.identity.tokens import revoke_token

    with write_session(engine) as s:
        return revoke_token(s, token)


def revoke_all(engine, user: str) -> int:  # type: ignore[no-untyped-def]
    from dicomguard.identity.tokens import revoke_user_tokens

    with write_session(engine) as s:
        return revoke_user_tokens(s, user)
