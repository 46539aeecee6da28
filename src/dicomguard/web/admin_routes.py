"""Administration over HTTPS under ``/admin``: erasure, accounts, devices, the gateway allow-list, study access attributes.

Like every other route, these only parse input and call one method of the
caller's services, which asks the policy engine and records the change in its
transaction. Nothing here decides who may administer: by default the ``admin``
role (never on its own account) and, for erasure, only with a second-factor
confirmation at most 300 seconds old (``step-up-erase`` in ``guards.cedar``);
a policy edit changes that for the CLI and HTTPS alike. A stale confirmation
(or an API token, which has none) is answered with the RFC 9470 challenge (401
``insufficient_user_authentication``); the client confirms a fresh TOTP code at
``POST /auth/step-up`` and retries. A refusal is 403 (recorded by the core);
an unknown account, device or study is 404; an invalid value is 400.

One-time secrets (a new account's password and TOTP secret, recovery codes, an
issued device key) are in the response body once, never in a URL or a log, and
every response carries ``Cache-Control: no-store``.

The routes are plain ``def``: FastAPI runs them in the thread pool (they write the index).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, StringConstraints

from dicomguard.identity.users import UserInfo
from dicomguard.web.auth import Caller
from dicomguard.web.errors import problem

router = APIRouter(prefix="/admin", tags=["administration"])
_ERRORS = {400: {"description": "Invalid value"}, 401: {"description": "Invalid token, or a fresh TOTP confirmation is required"},
           403: {"description": "Not permitted by the policies"},
           404: {"description": "No such account, device or study (said only to a caller permitted to administer)"}}
_NAME = r"^[a-z][a-z0-9._-]{1,63}$"
# Text fields: no control characters in one-line values (names, departments, labels ... end up in records and logs),
# no NUL anywhere (PostgreSQL refuses it in text: a 500 instead of a 400, found by schemathesis).
Line = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]*$")]
Text = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$")]
_AE = r"^[A-Za-z0-9_.\-]{1,16}$"


@contextmanager
def _invalid_is_400() -> Iterator[None]:
    """A ``ValueError`` of the core names the rule a value broke (never the value): 400 with its text."""
    try:
        yield
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


# -- erasure ---------------------------------------------------------------------------------


class EraseRequest(BaseModel):
    patient_id: Line = Field(max_length=64, description="Patient ID (0010,0020)")
    reason: Text = Field("", max_length=2000, description="Why the patient is erased (recorded, sealed)")
    issuer: Line | None = Field(None, max_length=64, description="Issuer of Patient ID (0010,0021), when ambiguous")


class EraseResponse(BaseModel):
    patient_refs: list[str] = Field(description="Internal (pseudonymous) references of the erased patient records")
    studies: int
    instances: int


@router.post(
    "/erase",
    summary="Crypto-shred one patient (admin, with a TOTP confirmation at most 300 s old)",
    response_model=EraseResponse,
    responses={400: {"description": "Reason missing"},
               401: {"description": "Invalid token, or a fresh TOTP confirmation is required (RFC 9470; POST /auth/step-up)"},
               403: {"description": "Not permitted to erase"}, 404: {"description": "No such patient"},
               409: {"description": "The Patient ID exists under several issuers: name the issuer"}},
)
def erase(body: EraseRequest, caller: Caller) -> JSONResponse:
    try:
        result = caller.erase.patient(body.patient_id, body.reason, body.issuer or None)
    except ValueError as exc:  # raised after authorization, before anything is touched
        return problem(400, "bad-request", str(exc))
    return JSONResponse({"patient_refs": list(result.patient_refs), "studies": result.studies, "instances": result.instances})


# -- accounts --------------------------------------------------------------------------------


class NewUser(BaseModel):
    name: str = Field(pattern=_NAME, description="Account name (lower case)")
    role: Line = Field(max_length=32)
    department: Line | None = Field(None, max_length=64)
    site: Line | None = Field(None, max_length=64)
    modalities: list[Line] | None = Field(None, max_length=32)
    referring_name: Line | None = Field(None, max_length=256, description="Stored only as a keyed hash (blind index)")
    clearances: list[Line] | None = Field(None, max_length=32)


class UserChange(BaseModel):
    """Attributes to change; absent ones stay, an empty string or list clears."""

    department: Line | None = Field(None, max_length=64)
    site: Line | None = Field(None, max_length=64)
    modalities: list[Line] | None = Field(None, max_length=32)
    referring_name: Line | None = Field(None, max_length=256)
    clearances: list[Line] | None = Field(None, max_length=32)


class RoleRequest(BaseModel):
    role: Line = Field(max_length=32)


def _user_json(u: UserInfo) -> dict[str, object]:
    return {"name": u.name, "role": u.role, "roles": list(u.roles), "department": u.department, "disabled": u.disabled,
            "created_at": u.created_at.isoformat(), "attributes": u.attributes}


@router.get("/users", summary="Every account, its roles, state and policy attributes (no secret)", responses=_ERRORS)
def list_users(caller: Caller) -> JSONResponse:
    return JSONResponse([_user_json(u) for u in caller.accounts.list()])


@router.post("/users", status_code=201, summary="Create an account: its one-time password and TOTP secret, shown once",
             responses=_ERRORS)
def create_user(body: NewUser, caller: Caller) -> JSONResponse:
    with _invalid_is_400():
        created = caller.accounts.create(body.name, body.role, department=body.department, site=body.site,
                                         modalities=body.modalities, referring_name=body.referring_name, clearances=body.clearances)
    s = created.secrets
    return JSONResponse({"name": s.name, "role": s.role, "password": s.password, "totp_secret": s.totp_secret,
                         "provisioning_uri": s.provisioning_uri, "attributes": {"department": created.department, **created.attributes}},
                        status_code=201)


@router.patch("/users/{name}", summary="Change an account's policy attributes", responses=_ERRORS)
def change_user(name: str, body: UserChange, caller: Caller) -> JSONResponse:
    with _invalid_is_400():
        result = caller.accounts.set_attributes(name, department=body.department, site=body.site, modalities=body.modalities,
                                                referring_name=body.referring_name, clearances=body.clearances)
    return JSONResponse({"name": name, "attributes": result})


@router.post("/users/{name}/disable", status_code=204, summary="Disable an account: its sessions and tokens end at once",
             responses=_ERRORS)
def disable_user(name: str, caller: Caller) -> Response:
    caller.accounts.disable(name)
    return Response(status_code=204)


@router.post("/users/{name}/enable", status_code=204, summary="Re-enable an account", responses=_ERRORS)
def enable_user(name: str, caller: Caller) -> Response:
    caller.accounts.enable(name)
    return Response(status_code=204)


@router.post("/users/{name}/unlock", status_code=204, summary="Clear an account's failed-login counter and lockout",
             responses=_ERRORS)
def unlock_user(name: str, caller: Caller) -> Response:
    caller.accounts.unlock(name)
    return Response(status_code=204)


@router.post("/users/{name}/roles", summary="Grant an additional role", responses=_ERRORS)
def grant_role(name: str, body: RoleRequest, caller: Caller) -> JSONResponse:
    with _invalid_is_400():
        granted = caller.accounts.grant_role(name, body.role)
    return JSONResponse({"name": name, "role": body.role, "granted": granted})


@router.delete("/users/{name}/roles/{role}", status_code=204, summary="Revoke a granted role", responses=_ERRORS)
def revoke_role(name: str, role: str, caller: Caller) -> Response:
    with _invalid_is_400():
        if not caller.accounts.revoke_role(name, role):
            raise HTTPException(404, f"{name} has no granted role {role}")
    return Response(status_code=204)


@router.post("/users/{name}/reset-mfa", summary="A new TOTP secret for the account (shown once); its sessions end",
             responses=_ERRORS)
def reset_mfa(name: str, caller: Caller) -> JSONResponse:
    secret, uri = caller.accounts.reset_mfa(name)
    return JSONResponse({"name": name, "totp_secret": secret, "provisioning_uri": uri})


@router.post("/users/{name}/recovery-codes", summary="Ten new single-use recovery codes (shown once)", responses=_ERRORS)
def recovery_codes(name: str, caller: Caller) -> JSONResponse:
    return JSONResponse({"name": name, "recovery_codes": caller.accounts.new_recovery_codes(name)})


# -- devices ---------------------------------------------------------------------------------


class NewDevice(BaseModel):
    ae_title: str = Field(pattern=_AE)
    name: Line = Field(max_length=128)
    operations: list[Line] = Field(default_factory=lambda: ["echo", "store"], max_length=8)
    department: Line | None = Field(None, max_length=64, description="None: an archive-wide peer")
    move_destination: Line | None = Field(None, max_length=270, description="HOST:PORT where C-MOVE may send to this AE")
    cert_pem: Text | None = Field(None, max_length=65536, description="Register this certificate (hospital CA) instead of issuing one")


@router.get("/devices", summary="Every enrolled device", responses=_ERRORS)
def list_devices(caller: Caller) -> JSONResponse:
    return JSONResponse([
        {"ae_title": d.ae_title, "name": d.name, "operations": list(d.operations), "cert_sha256": d.cert_sha256,
         "not_after": d.not_after.isoformat(), "revoked": d.revoked, "move_destination": d.move_destination, "department": d.department}
        for d in caller.devices.list()
    ])


@router.post("/devices", status_code=201, summary="Enrol a device: its certificate and key (shown once)", responses=_ERRORS)
def add_device(body: NewDevice, caller: Caller) -> JSONResponse:
    destination = None
    if body.move_destination:
        host, _, port = body.move_destination.rpartition(":")
        if not host or not port.isdigit():
            raise HTTPException(400, "move_destination is HOST:PORT")
        destination = (host, int(port))
    with _invalid_is_400():
        creds = caller.devices.add(body.ae_title, body.name, operations=tuple(body.operations),
                                   cert_pem=body.cert_pem.encode() if body.cert_pem else None, move_destination=destination,
                                   department=body.department)
    return JSONResponse({"ae_title": body.ae_title, "cert_pem": creds.cert_pem.decode(), "ca_pem": creds.ca_pem.decode(),
                         "key_pem": creds.key_pem.decode() if creds.key_pem else None}, status_code=201)


@router.post("/devices/{ae_title}/revoke", status_code=204, summary="Revoke a device's certificate", responses=_ERRORS)
def revoke_device(ae_title: str, caller: Caller) -> Response:
    caller.devices.revoke(ae_title)
    return Response(status_code=204)


# -- gateway allow-list ----------------------------------------------------------------------


class AllowRequest(BaseModel):
    ae_title: Line = Field(max_length=16)
    ip: Line = Field(max_length=64)


class DenyRequest(BaseModel):
    ae_title: Line = Field(max_length=16)
    ip: Line | None = Field(None, max_length=64, description="None: every address of the AE title")


@router.get("/gateway/allow-list", summary="The legacy gateway's allowed (AE title, address) pairs", responses=_ERRORS)
def allow_list(caller: Caller) -> JSONResponse:
    return JSONResponse([{"ae_title": e.ae_title, "ip": e.ip, "created_at": e.created_at.isoformat()} for e in caller.allow_list.list()])


@router.post("/gateway/allow-list", summary="Allow a legacy modality (AE title at an address)", responses=_ERRORS)
def allow(body: AllowRequest, caller: Caller) -> JSONResponse:
    return JSONResponse({"added": caller.allow_list.allow(body.ae_title, body.ip)})


@router.post("/gateway/allow-list/deny", summary="Remove a modality from the allow-list", responses=_ERRORS)
def deny(body: DenyRequest, caller: Caller) -> JSONResponse:
    return JSONResponse({"removed": caller.allow_list.deny(body.ae_title, body.ip)})


# -- study access attributes -----------------------------------------------------------------


class StudyAccessChange(BaseModel):
    department: Line | None = Field(None, max_length=64, description="'' clears it")
    add_labels: list[Line] = Field(default_factory=list, max_length=32)
    remove_labels: list[Line] = Field(default_factory=list, max_length=32)


@router.post("/studies/{study}/access", summary="Change a study's department or labels (e.g. vip)", responses=_ERRORS)
def study_access(study: str, body: StudyAccessChange, caller: Caller) -> JSONResponse:
    with _invalid_is_400():
        access = caller.studies.set_access(study, department=body.department, add_labels=body.add_labels,
                                           remove_labels=body.remove_labels)
    return JSONResponse({"study_uid": study, "department": access.department, "labels": sorted(access.labels)})
