"""The DICOMweb application (PS3.18): STOW-RS, QIDO-RS and WADO-RS under ``/dicomweb``, plus health and metrics.

Security properties, in request order:

1. Path guard: traversal and odd bytes are refused before routing (400).
2. CORS only for the configured origins (``[network] cors_origins``; empty: no
   CORS headers at all; ``*`` is refused at start).
3. Every DICOMweb route authenticates a bearer token against the index (else a
   registered device's client certificate, else a share-link recipient's
   cookie for reads: :mod:`dicomguard.web.auth`) and acts through
   ``archive.services(principal)`` (authorization and access events in the
   core). ``/healthz`` needs no token and returns no data. Requests from a
   network an incident contains are refused before routing.
4. Core exceptions become statuses in one place (:mod:`dicomguard.web.errors`).
5. Every response carries HSTS, nosniff and ``Cache-Control: no-store``.
6. The security console's pages under ``/console`` authenticate by their own
   session cookie, never by a bearer token (:mod:`dicomguard.web.console`, ADR 0012).

OpenAPI: ``/openapi.json`` documents the non-DICOMweb endpoints only
(``/healthz``, ``/metrics``, ``/auth/*``, ``/admin/*``). DICOMweb routes are excluded from it on purpose:
their bodies (multipart/related DICOM, DICOM JSON) are specified by PS3.18 and
the archive's conformance statement, which OpenAPI cannot express faithfully.
There is no Swagger UI (it would load third-party scripts).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.responses import Response
from starlette.middleware.cors import CORSMiddleware

from dicomguard import __version__
from dicomguard.app.archive import Archive
from dicomguard.errors import ConfigurationError
from dicomguard.identity.session_policy import session_policy_from
from dicomguard.web import (
    admin_routes,
    auth_routes,
    console,
    errors,
    incident_routes,
    qido,
    recipient,
    share_routes,
    stow,
    viewer,
    wado,
)
from dicomguard.web.auth import metrics_reader
from dicomguard.web.metrics import WebMetrics
from dicomguard.web.middleware import (
    NetworkBlockMiddleware,
    ObservabilityMiddleware,
    PathGuardMiddleware,
    SecurityHeadersMiddleware,
)
from dicomguard.web.slow_clients import BodyIdleTimeoutMiddleware


def create_app(archive: Archive) -> FastAPI:
    origins = list(archive.settings.network.cors_origins)
    if any(o.strip() == "*" for o in origins):
        raise ConfigurationError("[network] cors_origins must list origins; '*' is refused")
    app = FastAPI(
        title="dicomguard",
        version=__version__,
        summary="Encrypted, tamper-evident DICOM archive: DICOMweb (PS3.18) under /dicomweb",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.archive = archive
    app.state.session_policy = session_policy_from(archive.settings.sessions)  # bad [sessions] values stop the start
    app.state.metrics = WebMetrics()
    errors.install(app)
    for module in (stow, qido, wado):
        app.include_router(module.router)  # each router carries the /dicomweb prefix in its route templates
    app.include_router(auth_routes.router)  # /auth: login, refresh, logout, password, step-up, break-glass (in the OpenAPI document)
    app.include_router(admin_routes.router)  # /admin: erase, accounts, devices, allow-list, study attributes (in the OpenAPI document)
    app.include_router(share_routes.router)  # /shares: create, list, show, revoke share links (in the OpenAPI document)
    app.include_router(incident_routes.router)  # /incidents: open, contain, release, scope, report, close (in the OpenAPI document)
    console.install(app)  # /console: the security console's pages (not in the OpenAPI document)
    app.include_router(recipient.router)  # /s/: a share link's recipient: PIN page, study page, download (not in the OpenAPI document)
    # /viewer and the OHIF app's root-relative files, behind the archive's authentication; 404 at /viewer if not installed.
    viewer_dir = Path(archive.settings.sharing.viewer_dir) if archive.settings.sharing.viewer_dir else viewer.default_viewer_dir()
    app.state.viewer = viewer_dir
    app.include_router(viewer.viewer_router(viewer_dir))

    @app.get("/healthz", tags=["operations"], summary="Liveness: the process serves requests (no authentication, no data)")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics (bearer token of a principal the policies permit metrics-read: admin, security_officer)",
        response_class=Response,
        dependencies=[Depends(metrics_reader)],
    )
    def metrics() -> Response:
        from dicomguard.app.backup.status import gauges

        body, content_type = app.state.metrics.exposition()
        return Response(body + gauges(archive.ctx), media_type=content_type)

    # Added innermost first: the last one added is the outermost.
    app.add_middleware(NetworkBlockMiddleware, engine=archive.ctx.engine)
    app.add_middleware(PathGuardMiddleware)
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Accept", "Content-Type"],
            expose_headers=["Warning", "Content-Location"],
            allow_credentials=False,
            max_age=600,
        )
    app.add_middleware(BodyIdleTimeoutMiddleware, timeout_s=archive.settings.network.body_idle_timeout_s)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(ObservabilityMiddleware, metrics=app.state.metrics)
    return app
