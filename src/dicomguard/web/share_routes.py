"""Share links over HTTPS under ``/shares`` (ADR 0010): create, list, show, revoke.

The routes parse and call the caller's share service, which asks the policies
(``share`` on the study with the recipient's kind in the request context;
``share-read``/``share-revoke`` on the link) and records the change. Sharing
outside the organisation needs a second-factor confirmation at most 300 seconds
old (``step-up-external-share``): the RFC 9470 challenge (401) until then. A
study or link the caller may not see is 404, exactly like one that does not
exist. The link's token and PIN are in the creation response once, never in a
URL the archive logs.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StringConstraints

from dicomguard.web.admin_routes import Line, _invalid_is_400
from dicomguard.web.auth import Caller

router = APIRouter(prefix="/shares", tags=["sharing"])
_ERRORS = {400: {"description": "Invalid value"}, 401: {"description": "Invalid token, or a fresh TOTP confirmation is required"},
           403: {"description": "Not permitted by the policies"}, 404: {"description": "No such study or share link (or not visible)"}}
UidText = Annotated[str, StringConstraints(pattern=r"^[0-9.]{1,64}$")]


def link_url(request: Request, token: str) -> str:
    """The recipient's link: the configured public URL, else the origin this request came to."""
    base = request.app.state.archive.settings.sharing.public_url.rstrip("/") or str(request.base_url).rstrip("/")
    return f"{base}/s/{token}"


class ShareRequest(BaseModel):
    study: UidText = Field(description="Study Instance UID")
    to: Line = Field(min_length=1, max_length=500, description="Who the share is for and why (sealed; shown to the owner)")
    recipient: str = Field("external", pattern=r"^(internal|external|research|patient)$",
                           description="The recipient's kind: the policies decide on it (step-up, de-identification)")
    expires_hours: int = Field(72, ge=1, le=24 * 365)
    series: list[UidText] = Field(default_factory=list, max_length=1000)
    max_uses: int | None = Field(None, ge=1, le=1000)
    download: bool = False
    deidentify: bool = False
    preset: str | None = Field(None, pattern=r"^[a-z-]{1,32}$")
    options: list[Annotated[str, StringConstraints(pattern=r"^[a-z-]{1,48}$")]] = Field(default_factory=list, max_length=16)


class RevokeRequest(BaseModel):
    reason: Line = Field(min_length=1, max_length=300)


@router.post("", status_code=201, responses=_ERRORS, summary="Share a study by link: the link and its PIN, once")
def create_share(request: Request, body: ShareRequest, caller: Caller) -> JSONResponse:
    from dicomguard.deid.options import parse_options

    with _invalid_is_400():
        options = parse_options(body.options, body.preset) if (body.deidentify or body.preset or body.options) else frozenset()
        created = caller.shares.create(body.study, recipient=body.to, recipient_kind=body.recipient,
                                       expires_in=timedelta(hours=body.expires_hours), max_uses=body.max_uses, download=body.download,
                                       series=body.series, deidentify=body.deidentify or bool(body.preset or body.options),
                                       deid_options=options)
    return JSONResponse(created.to_json(link_url(request, created.token)), status_code=201)


@router.get("", responses=_ERRORS, summary="Share links: the caller's own, or (everyone=true) all it may read")
def list_shares(caller: Caller, everyone: bool = False, all: bool = False) -> list[dict[str, Any]]:  # noqa: A002 - the query parameter's name
    return [v.to_json() for v in caller.shares.list(everyone=everyone, include_inactive=all)]


@router.get("/{share_id}", responses=_ERRORS, summary="One share link with its uses")
def show_share(share_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")], caller: Caller) -> dict[str, Any]:
    return caller.shares.show(share_id).to_json()


@router.post("/{share_id}/revoke", responses=_ERRORS, summary="Revoke a share link and end its recipients' sessions at once")
def revoke_share(share_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")], body: RevokeRequest,
                 caller: Caller) -> dict[str, Any]:
    with _invalid_is_400():
        return caller.shares.revoke(share_id, body.reason).to_json()
