"""The installed OHIF viewer, a real HTTPS archive serving it, and Debian's Chromium.

Nothing is downloaded here: the viewer comes from ``scripts/install-viewer.sh``
(``$DICOMGUARD_VIEWER_DIR`` or its default folder) and the browser from the
``chromium`` Debian package. Where either is missing the tests skip with the
reason, except under CI (``CI`` set), where the install steps have run and a
missing piece is a failure.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request

from dicomguard.app.services import Services
from dicomguard.identity.tokens import verify_token
from dicomguard.web import server as web_server
from dicomguard.web.app import create_app
from dicomguard.web.auth import authenticated_services, principal_for
from dicomguard.web.viewer import default_viewer_dir, viewer_router
from tests.web.conftest import WebServer, start_server

CHROMIUM = Path("/usr/bin/chromium")


def _missing(reason: str) -> None:
    (pytest.fail if os.environ.get("CI") else pytest.skip)(reason)


@pytest.fixture(scope="session")
def viewer_dir() -> Path:
    folder = default_viewer_dir()
    if folder is None:
        _missing("the OHIF viewer is not installed (scripts/install-viewer.sh; DICOMGUARD_VIEWER_DIR names its folder)")
    assert folder is not None
    return folder


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.is_file():
        _missing(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium; scripts/test.sh installs it)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("the playwright Python package is not installed")
    return CHROMIUM


def route_paths(routes: list[Any]) -> set[str]:
    """Path templates of routes, through included routers."""
    out: set[str] = set()
    for route in routes:
        if hasattr(route, "original_router"):
            out |= route_paths(route.original_router.routes)
        elif getattr(route, "path", None):
            out.add(route.path)
    return out


def app_with_viewer(archive, viewer: Path | None) -> FastAPI:  # type: ignore[no-untyped-def]
    """The archive's application with the viewer mounted (by the test until the composition root mounts it itself)."""
    app = create_app(archive)
    if "/viewer" not in route_paths(app.routes):
        app.include_router(viewer_router(viewer))
    return app


def sign_in_as(app: FastAPI, token: str) -> None:
    """Test stand-in for the share-link cookie: every request is served as the holder of ``token``.

    The override verifies the token exactly as a bearer token is verified, so
    the viewer's requests are authorized (and recorded) as that user's; only
    the transport of the credential differs from production.
    """
    archive = app.state.archive

    def as_token_holder(request: Request) -> Services:
        user = verify_token(archive.ctx.engine, token, policy=request.app.state.session_policy)
        principal = principal_for(request, user)
        request.state.principal = principal
        return archive.services(principal)

    app.dependency_overrides[authenticated_services] = as_token_holder


CSP_REPORT_PATH = "/__test-csp-report"


class ReportCsp:
    """Test-only ASGI wrapper: adds ``report-uri`` to every CSP the app sends, enforcement unchanged.

    The browser then POSTs every violation, including those inside workers
    (which no page script can observe), to :data:`CSP_REPORT_PATH`.
    """

    def __init__(self, app: Any, reports: list[dict]) -> None:
        self.app = app
        self.reports = reports

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == CSP_REPORT_PATH and scope["method"] == "POST":
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            try:
                self.reports.append(json.loads(body or b"{}"))
            except ValueError:
                self.reports.append({"unparsed": body[:2000].decode("utf-8", "replace")})
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return

        async def add_report_uri(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    (k, v + f"; report-uri {CSP_REPORT_PATH}".encode() if k.lower() == b"content-security-policy" else v)
                    for k, v in message.get("headers", [])
                ]
            await send(message)

        await self.app(scope, receive, add_report_uri)


@dataclass
class ViewerServer:
    web: WebServer
    app: FastAPI
    csp_reports: list[dict] = field(default_factory=list)


@pytest.fixture
def viewer_web(archive, viewer_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ViewerServer]:  # type: ignore[no-untyped-def]
    """The product's HTTPS server (TLS context, head deadline, middleware) serving the archive plus the viewer."""
    built: list[FastAPI] = []
    reports: list[dict] = []

    def create(a):  # type: ignore[no-untyped-def]
        app = app_with_viewer(a, viewer_dir)
        app.add_middleware(ReportCsp, reports=reports)  # outermost: sees the final headers
        built.append(app)
        return app

    monkeypatch.setattr(web_server, "create_app", create)
    server, stop = start_server(archive)
    try:
        yield ViewerServer(server, built[0], reports)
    finally:
        stop()
