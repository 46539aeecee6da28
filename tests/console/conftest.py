"""Console fixtures: the archive over real HTTPS with two studies, four accounts and a cookie-keeping console client."""

from __future__ import annotations

import html
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.browser import browser  # noqa: F401  (the browser fixture of these tests)
from tests.dicom_factory import ALICE, BOB, DEPARTMENT, ct_series, dataset_of
from tests.identity.conftest import Account, add_user, forget_totp_step
from tests.web.conftest import WebServer, start_server

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Site:
    server: WebServer
    alice_study: str
    bob_study: str
    accounts: dict[str, Account] = field(default_factory=dict)

    @property
    def archive(self):  # type: ignore[no-untyped-def]
        return self.server.archive

    def client(self) -> ConsoleClient:
        return ConsoleClient(self)


class ConsoleClient:
    """A browser stand-in: keeps cookies, sends the page's CSRF token and this origin with every form."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.http = httpx.Client(base_url=site.server.url, verify=ssl.create_default_context(cafile=site.server.ca), timeout=60,
                                 trust_env=False, follow_redirects=False)
        self.csrf = ""
        self.origin = site.server.url

    def get(self, path: str, **kw) -> httpx.Response:  # type: ignore[no-untyped-def]
        r = self.http.get(path, **kw)
        self._remember(r)
        return r

    def _remember(self, r: httpx.Response) -> None:
        m = _CSRF.search(r.text) if r.headers.get("content-type", "").startswith("text/html") else None
        if m:
            self.csrf = html.unescape(m.group(1))

    def post(self, path: str, data: dict[str, str] | None = None, *, csrf: bool = True, origin: bool = True) -> httpx.Response:
        fields = dict(data or {})
        if csrf:
            fields.setdefault("csrf", self.csrf)
        headers = {"Origin": self.origin} if origin else {}
        r = self.http.post(path, data=fields, headers=headers)
        self._remember(r)
        return r

    def sign_in(self, account: Account, code: str | None = None) -> httpx.Response:
        forget_totp_step(self.site.archive, account.name)
        self.get("/console/login")
        r = self.post("/console/login", {"username": account.name, "password": account.password,
                                         "totp": code if code is not None else account.code()})
        if r.status_code == 303:
            self.get(r.headers["location"])  # like a browser: the landing page carries the session's form token
        return r

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def site(archive) -> Iterator[Site]:  # type: ignore[no-untyped-def]
    """ALICE's and BOB's CT studies (department RADIOLOGY); an officer, a radiologist, a technologist and an administrator."""
    alice, bob = ct_series(ALICE, n=3, size=32, seed=31), ct_series(BOB, n=2, size=32, seed=32)
    for data in alice + bob:
        archive.operator.store.ingest(data)
    server, stop = start_server(archive)
    s = Site(server, str(dataset_of(alice[0]).StudyInstanceUID), str(dataset_of(bob[0]).StudyInstanceUID))
    s.accounts = {
        "officer": add_user(archive, "sec.officer", "security_officer"),
        "rad": add_user(archive, "dr.rad", "radiologist", DEPARTMENT),
        "tech": add_user(archive, "t.tech", "technologist", DEPARTMENT),
        "admin": add_user(archive, "it.admin", "admin"),
    }
    try:
        yield s
    finally:
        stop()


@pytest.fixture
def client(site: Site) -> Iterator[ConsoleClient]:
    c = site.client()
    try:
        yield c
    finally:
        c.close()
