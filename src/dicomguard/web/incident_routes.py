"""Incident response over HTTPS under ``/incidents`` (NIST SP 800-61r3): open, contain, release, scope, report, close.

The routes parse and call the caller's incident service, which asks the policies
(``incident-respond`` needs a security officer with a TOTP at most 300 s old: the
RFC 9470 challenge until then; ``incident-read``) and records every step in the
incident's timeline and the audit trail. The scope response lists patient
identifiers (the officer needs them to notify): ``Cache-Control: no-store`` like
every response.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field, StringConstraints

from dicomguard.web.admin_routes import Line, _invalid_is_400
from dicomguard.web.auth import Caller

router = APIRouter(prefix="/incidents", tags=["incident response"])
_ERRORS = {400: {"description": "Invalid value, or a step that does not apply (closed incident, nothing to release)"},
           401: {"description": "Invalid token, or a fresh TOTP confirmation is required"},
           403: {"description": "Not permitted by the policies"}, 404: {"description": "No such incident, user or device"}}
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:/-]{1,64}$")]


class OpenRequest(BaseModel):
    title: Line = Field(min_length=1, max_length=300)
    severity: str = Field("high", pattern=r"^(low|medium|high|critical)$")
    description: Line = Field("", max_length=4000)
    aware_at: datetime | None = Field(None, description="When the organisation became aware (default now)")


class ContainRequest(BaseModel):
    user: Name | None = None
    device: Name | None = None
    network: Name | None = Field(None, description="CIDR, e.g. 10.20.0.0/16")
    archive: str | None = Field(None, pattern=r"^read-only$")
    reason: Line = Field(min_length=5, max_length=500)


class ReleaseRequest(BaseModel):
    step: int = Field(ge=1)
    reason: Line = Field(min_length=5, max_length=500)


class ScopeRequest(BaseModel):
    user: Name | None = None
    device: Name | None = None
    network: Name | None = None
    share: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")] | None = None
    since: datetime
    until: datetime | None = None


class CloseRequest(BaseModel):
    reason: Line = Field(min_length=5, max_length=500)


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise HTTPException(400, "times carry a time zone (e.g. 2026-12-01T08:00:00Z)")
    return value


@router.post("", status_code=201, responses=_ERRORS, summary="Open an incident (security officer, fresh TOTP)")
def open_incident(body: OpenRequest, caller: Caller) -> dict[str, Any]:
    with _invalid_is_400():
        number = caller.incidents.open(body.title, severity=body.severity, description=body.description, aware_at=_aware(body.aware_at))
    return caller.incidents.show(number).to_json()


@router.get("", responses=_ERRORS, summary="Open incidents (all=true: closed ones too)")
def list_incidents(caller: Caller, all: bool = False) -> list[dict[str, Any]]:  # noqa: A002 - the query parameter's name
    return [i.to_json() for i in caller.incidents.list(include_closed=all)]


@router.get("/{incident_id}", responses=_ERRORS, summary="An incident and its timeline")
def show_incident(incident_id: int, caller: Caller) -> dict[str, Any]:
    return caller.incidents.show(incident_id).to_json()


@router.post("/{incident_id}/contain", responses=_ERRORS, summary="One containment step: a user, a device, a network or read-only")
def contain(incident_id: int, body: ContainRequest, caller: Caller) -> dict[str, Any]:
    targets = [x for x in (body.user, body.device, body.network, body.archive) if x is not None]
    if len(targets) != 1:
        raise HTTPException(400, "contain one thing: user, device, network or archive read-only")
    svc = caller.incidents
    with _invalid_is_400():
        if body.user is not None:
            step = svc.contain_user(incident_id, body.user, body.reason)
        elif body.device is not None:
            step = svc.contain_device(incident_id, body.device, body.reason)
        elif body.network is not None:
            step = svc.contain_network(incident_id, body.network, body.reason)
        else:
            step = svc.read_only(incident_id, body.reason)
    return {"step": step}


@router.post("/{incident_id}/release", responses=_ERRORS, summary="End a containment in force, with a reason")
def release(incident_id: int, body: ReleaseRequest, caller: Caller) -> dict[str, Any]:
    with _invalid_is_400():
        caller.incidents.release(incident_id, body.step, body.reason)
    return {"released": body.step}


@router.post("/{incident_id}/scope", responses=_ERRORS, summary="Breach scope of a user, device or network (patient identifiers)")
def scope(incident_id: int, body: ScopeRequest, caller: Caller) -> dict[str, Any]:
    with _invalid_is_400():
        result = caller.incidents.scope(incident_id, user=body.user, device=body.device, network=body.network, share=body.share,
                                        since=_aware(body.since) or body.since, until=_aware(body.until) or datetime.now(UTC))
    return result.to_json()


@router.get("/{incident_id}/report", responses=_ERRORS, summary="A breach-notification draft (counts only; fields to complete marked)")
def report(incident_id: int, caller: Caller, format: str = "gdpr-art33") -> dict[str, Any]:  # noqa: A002 - the query parameter's name
    import json

    with _invalid_is_400():
        return json.loads(caller.incidents.report(incident_id, format, render="json"))  # type: ignore[no-any-return]


@router.post("/{incident_id}/close", responses=_ERRORS, summary="Close an incident (every containment released first)")
def close(incident_id: int, body: CloseRequest, caller: Caller) -> dict[str, Any]:
    with _invalid_is_400():
        return caller.incidents.close(incident_id, body.reason).to_json()
