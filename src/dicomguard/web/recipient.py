"""The share-link recipient's pages under ``/s/`` (ADR 0010): PIN, study page, ZIP download, close.

Security properties:

1. Two factors on two channels: ``GET /s/{token}`` shows the same PIN page for
   every token, known or not (no oracle); ``POST /s/{token}`` checks link and PIN
   in the core (:class:`ShareGate`), which records every attempt and locks the
   link after a few wrong PINs. Attempts are also throttled per network address
   here (NIST SP 800-63B 5.2.2), so nobody can spray PINs across links.
2. The session is an HttpOnly, Secure, SameSite=Strict ``__Host-`` cookie of 256
   random bits (stored as SHA-256 only); it authenticates GET and HEAD requests
   only (:func:`dicomguard.web.auth.share_principal`). Forms accept only
   same-origin POSTs (``Origin``/``Sec-Fetch-Site``), so no other site can open
   or close a share in the recipient's browser.
3. Every read is an ordinary request of the share principal through the core
   services: the policies decide it, the audit trail records it with the
   recipient's address. The study page asks for the study by the link's scope,
   never by a UID from the URL.
4. Pages carry their own Content-Security-Policy (no script at all; images,
   styles and forms from this origin only), ``no-store`` and ``no-referrer``: the
   token never leaks in a Referer header, and nothing with PHI is cached.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from dicomguard.app.archive import Archive
from dicomguard.app.services import Services
from dicomguard.core.access import Action, PrincipalKind
from dicomguard.core.services.shares import WRONG_LINK_OR_PIN, ShareRefused
from dicomguard.errors import DicomGuardError
from dicomguard.web.auth import SHARE_COOKIE, share_principal
from dicomguard.web.forms import read_form, same_origin

router = APIRouter(prefix="/s", include_in_schema=False)

PAGE_CSP = ("default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; "
            "base-uri 'none'")
FRAMES_PER_SERIES = 6
"""Rendered frames shown per series on the study page (evenly spread); the viewer and the download have them all."""

_templates = Environment(loader=PackageLoader("dicomguard.web", "templates"), autoescape=select_autoescape(["html"]))


class AttemptThrottle:
    """At most ``limit`` PIN attempts per address per ``window_s`` (a sliding window, in memory, per process)."""

    def __init__(self, limit: int = 10, window_s: float = 60.0, max_addresses: int = 10_000) -> None:
        self.limit, self.window_s, self.max_addresses = limit, window_s, max_addresses
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, address: str) -> bool:
        now = time.monotonic()
        with self._lock:
            if len(self._seen) >= self.max_addresses:  # bounded memory: forget the stalest addresses
                for key in [k for k, q in self._seen.items() if not q or now - q[-1] > self.window_s]:
                    del self._seen[key]
                if len(self._seen) >= self.max_addresses:
                    return False
            attempts = self._seen.setdefault(address, deque())
            while attempts and now - attempts[0] > self.window_s:
                attempts.popleft()
            if len(attempts) >= self.limit:
                return False
            attempts.append(now)
            return True


def _page(name: str, status: int = 200, **values: Any) -> HTMLResponse:
    html = _templates.get_template(name).render(**values)
    return HTMLResponse(html, status_code=status, headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-store"})


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def recipient_services(request: Request) -> Services:
    """The share recipient of the session cookie, or a page saying the share is closed (401)."""
    principal = share_principal(request)
    if principal is None:
        raise HTTPException(401, "no open share: open the link you were given and enter its PIN")
    request.state.principal = principal
    archive: Archive = request.app.state.archive
    return archive.services(principal)


@router.get("/static/share.css")
def stylesheet() -> Response:
    from importlib import resources

    css = resources.files("dicomguard.web").joinpath("static/share.css").read_bytes()
    return Response(css, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})


@router.get("/view")
def study_page(request: Request, caller: Services = Depends(recipient_services)) -> HTMLResponse:
    """The shared study: its series with a few rendered frames each, the viewer and the download if allowed."""
    principal = caller.principal
    study_uid = str(principal.attributes["studies"][0])  # type: ignore[index]
    archive: Archive = request.app.state.archive
    with caller.query.one_query("SERIES") as one:
        studies = caller.query.find_studies(_study_filter(study_uid))
        series = caller.query.find_series(study_uid)
        instances = caller.query.find_instances(study_uid=study_uid)
        one.results = len(instances)
    if not studies:
        return _page("share_message.html", 404, heading="Nothing to show",
                     message="The shared study is no longer in the archive. Ask the person who shared it.")
    by_series: dict[str, list[Any]] = {}
    for inst in sorted(instances, key=lambda i: (i.number is None, i.number or 0, i.sop_instance_uid)):
        by_series.setdefault(inst.series_uid, []).append(inst)
    shown = []
    for se in sorted(series, key=lambda s: (s.number is None, s.number or 0, s.uid)):
        members = by_series.get(se.uid, [])
        step = max(1, len(members) // FRAMES_PER_SERIES)
        frames = [{"uid": i.sop_instance_uid, "number": i.number if i.number is not None else ""}
                  for i in members[::step][:FRAMES_PER_SERIES]]
        shown.append({"uid": se.uid, "number": se.number, "modality": se.modality, "description": se.description,
                      "count": len(members), "frames": frames})
    st = studies[0]
    archive.share_gate.note(principal, "viewed")
    return _page("share_view.html", study={"uid": st.uid, "description": st.description, "date": st.date,
                                           "modalities": ", ".join(st.modalities)},
                 series=shown, instances=len(instances), deidentified=bool(principal.attributes.get("deidentified")),
                 download=bool(principal.attributes.get("download")), viewer=bool(getattr(request.app.state, "viewer", None)),
                 expires="when the link expires or is withdrawn")


def _study_filter(study_uid: str) -> Any:
    from dicomguard.core.query import StudyFilter

    return StudyFilter(study_uid=study_uid)


@router.get("/download")
def download(request: Request, caller: Services = Depends(recipient_services)) -> Response:
    """The study as a ZIP of PS3.10 media with a DICOMDIR, streamed (decided as ``export``; recorded as PS3.15 Export)."""
    from dicomguard.media import stream_study_media

    principal = caller.principal
    study_uid = str(principal.attributes["studies"][0])  # type: ignore[index]
    try:
        plan = caller.retrieve.plan(Action.EXPORT, study_uids=[study_uid])
    except DicomGuardError:
        return _page("share_message.html", 403, heading="Download not available",
                     message="This share does not allow downloading, or the study is no longer available.")
    request.app.state.archive.share_gate.note(principal, "downloaded")

    def objects() -> Iterator[memoryview | bytes]:
        for obj in plan.verified():
            yield obj.data

    return StreamingResponse(stream_study_media(objects()), media_type="application/zip",
                             headers={"Content-Disposition": 'attachment; filename="study.zip"', "Cache-Control": "no-store"})


@router.post("/logout")
def close(request: Request) -> Response:
    """End the recipient's session (the link stays usable with its PIN until it expires)."""
    same_origin(request)
    secret = request.cookies.get(SHARE_COOKIE)
    if secret and len(secret) <= 128:
        request.app.state.archive.share_gate.end(secret)
    response = _page("share_message.html", heading="Share closed", message="You can close this page.")
    response.delete_cookie(SHARE_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


@router.get("/{token}")
def pin_page(token: str) -> HTMLResponse:
    """The PIN page: the same for every token (whether a link exists is not told before its PIN)."""
    if not _plausible(token):
        return _page("share_message.html", 404, heading="Not a share link", message=WRONG_LINK_OR_PIN)
    return _page("share_pin.html", token=token, message=None)


@router.post("/{token}")
async def open_share(request: Request, token: str) -> Response:
    """Check link and PIN; on success set the session cookie and go to the study page."""
    same_origin(request)
    if not _plausible(token):
        return _page("share_message.html", 404, heading="Not a share link", message=WRONG_LINK_OR_PIN)
    pin = await _form_pin(request)
    address = _address(request)
    throttle = getattr(request.app.state, "share_throttle", None)
    if throttle is None:
        throttle = request.app.state.share_throttle = AttemptThrottle()
    if not throttle.allow(address):
        return _page("share_pin.html", 429, token=token, message="Too many attempts from your network. Wait a minute and try again.")
    archive: Archive = request.app.state.archive
    try:
        opened = await run_in_threadpool(archive.share_gate.open, token, pin, address)
    except ShareRefused as refused:
        status = 403 if refused.public != WRONG_LINK_OR_PIN else 401
        return _page("share_pin.html", status, token=token, message=refused.public)
    assert opened.principal.kind is PrincipalKind.SHARE
    response = RedirectResponse("/s/view", status_code=303)
    max_age = max(1, int((opened.expires_at.timestamp() - time.time())))
    response.set_cookie(SHARE_COOKIE, opened.session, max_age=max_age, path="/", secure=True, httponly=True, samesite="strict")
    return response


MAX_FORM_BYTES = 1024


async def _form_pin(request: Request) -> str:
    """The ``pin`` field of a small urlencoded body (422 unless it is 6 to 12 digits)."""
    values = (await read_form(request, MAX_FORM_BYTES, 4)).get("pin", [""])
    pin = values[0].strip()
    if len(values) != 1 or not pin.isdigit() or len(pin) > 12:
        raise HTTPException(422, "the PIN is 6 to 12 digits")
    return pin


def _plausible(token: str) -> bool:
    """A token is 43 URL-safe base64 characters (256 bits); anything else is not worth a database look-up."""
    return 40 <= len(token) <= 64 and all(c.isalnum() or c in "-_" for c in token)
