"""Administration over HTTPS under ``/admin``: patient erasure (crypto-shredding, GDPR art. 17).

Like every other route, this one only parses input and calls the caller's
:class:`dicomguard.core.client.ArchiveClient`, which asks the policy engine:
by default only the ``admin`` role may erase, and only with a second-factor
confirmation at most 300 seconds old (``step-up-erase`` in ``guards.cedar``).
A stale confirmation (or an API token, which has none) is answered with the
RFC 9470 challenge (401 ``insufficient_user_authentication``); the client
confirms a fresh TOTP code at ``POST /auth/step-up`` and retries. Refusals are
recorded by the core (``AccessRefused``); the erasure itself is recorded as
Study Deleted and Patient Record (delete) audit messages.

The route is a plain ``def``: FastAPI runs it in the thread pool (the erasure
writes the index and deletes blobs).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from dicomguard.web.auth import authenticated_client
from dicomguard.web.errors import problem

router = APIRouter(prefix="/admin", tags=["administration"])


class EraseRequest(BaseModel):
    patient_id: str = Field(max_length=64, description="Patient ID (0010,0020)")
    reason: str = Field("", max_length=2000, description="Why the patient is erased (recorded, sealed)")
    issuer: str | None = Field(None, max_length=64, description="Issuer of Patient ID (0010,0021), when ambiguous")


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
def erase(body: EraseRequest, request: Request) -> JSONResponse:
    client = authenticated_client(request)
    try:
        result = client.erase_patient(body.patient_id, body.reason, body.issuer or None)
    except ValueError as exc:  # raised after authorization, before anything is touched
        return problem(400, "bad-request", str(exc))
    return JSONResponse({"patient_refs": list(result.patient_refs), "studies": result.studies, "instances": result.instances})
