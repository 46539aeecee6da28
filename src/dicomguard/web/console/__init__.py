"""The security console under ``/console`` (ADR 0012): server-rendered pages over the core services, no script.

One more thin adapter, like DICOMweb: each page parses its form, calls one
service as the signed-in user (who is decided and recorded there) and renders
the answer. Properties are listed where they are enforced: sign-in, cookie and
CSRF in :mod:`.session`, headers and escaping in :mod:`.pages`, step-up and
refusals in :mod:`.actions`.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from dicomguard.web.console import alerts, audit, governance, overview, people, signin, studies
from dicomguard.web.console.session import COOKIE, SignInRequired, cookie_options

PREFIX = "/console"
PAGE_MODULES = (signin, overview, alerts, audit, people, governance, studies)
router = APIRouter(prefix=PREFIX, include_in_schema=False)
for module in PAGE_MODULES:
    router.include_router(module.router)


@router.get("/static/console.css")
def stylesheet() -> Response:
    css = resources.files("dicomguard.web").joinpath("static/console.css").read_bytes()
    return Response(css, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})


@router.get("/static/icon.svg")
def icon() -> Response:
    svg = resources.files("dicomguard.web").joinpath("static/console-icon.svg").read_bytes()
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})


async def _sign_in(request: Request, exc: Exception) -> Response:
    """No live session: pages go to the sign-in page (saying why, if a session just ended); forms answer 401."""
    if request.method not in ("GET", "HEAD"):
        return Response("sign in again: your console session has ended", status_code=401, media_type="text/plain")
    ended = COOKIE in request.cookies
    response = RedirectResponse("/console/login" + ("?signed_out=idle" if ended else ""), status_code=303)
    if ended:
        response.delete_cookie(COOKIE, **cookie_options())  # type: ignore[arg-type]
    return response


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.add_exception_handler(SignInRequired, _sign_in)
