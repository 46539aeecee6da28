"""Core exceptions -> HTTP statuses (PS3.18 8.5 status codes), in one place.

Like pynetdicom's ``attempt`` context manager for DIMSE statuses, the adapter
translates the core's error family into its protocol; no route decides this
on its own. Bodies are small JSON objects ``{"error": ..., "detail": ...}``
that never echo request values (they may be PHI) and never include stack
traces. Refusals that could tell whether an object exists (IDOR oracle) are
answered like "not found" by the WADO routes themselves (see ``wado.py``).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from dicomguard.core.access import AccessDenied, StepUpRequired
from dicomguard.core.break_glass import BreakGlassRefused
from dicomguard.core.erase import AmbiguousPatientError
from dicomguard.errors import (
    DicomGuardError,
    IntegrityError,
    InvalidContinuation,
    NotFoundError,
    RejectedObject,
    SearchTooBroad,
)
from dicomguard.gateway.config import GatewayError
from dicomguard.identity.auth import STEP_UP_MAX_AGE_S
from dicomguard.identity.tokens import InvalidToken
from dicomguard.web.multipart import MalformedMultipart
from dicomguard.web.qido_params import QueryError

log = logging.getLogger(__name__)

BEARER_CHALLENGE = 'Bearer realm="dicomguard"'


def problem(status: int, error: str, detail: str = "", headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": error} | ({"detail": detail} if detail else {})
    return JSONResponse(body, status_code=status, headers=headers)


def not_acceptable(detail: str) -> HTTPException:
    return HTTPException(406, detail)


def bad_request(detail: str) -> HTTPException:
    return HTTPException(400, detail)


def unauthorized(error_code: str | None = "invalid_token") -> HTTPException:
    """RFC 6750 3.1: no error code when the request carried no credentials at all."""
    challenge = BEARER_CHALLENGE + (f', error="{error_code}"' if error_code else "")
    return HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": challenge})


_REASONS = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found", 405: "method-not-allowed",
            406: "not-acceptable", 409: "conflict", 413: "payload-too-large", 415: "unsupported-media-type", 501: "not-implemented"}


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return problem(exc.status_code, _REASONS.get(exc.status_code, "error"), str(exc.detail or ""), exc.headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(tuple(e.get("loc", ()))[:1] == ("body",) for e in errors):
        fields = sorted({str(e["loc"][-1]) for e in errors if len(e.get("loc", ())) > 1 and e["loc"][0] == "body"})
        what = f"missing or invalid {', '.join(fields)}" if fields else "the body must be a JSON object"
        return problem(400, "bad-request", f"invalid request body: {what}")
    names = sorted({str(e.get("loc", ("", ""))[-1]) for e in errors})
    return problem(400, "bad-request", f"invalid {', '.join(names)}: path parameters must be DICOM UIDs")


async def _query_error(request: Request, exc: Exception) -> JSONResponse:
    return problem(400, "bad-request", str(exc))


async def _access_denied(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AccessDenied)
    return problem(403, "forbidden", f"not permitted to {exc.action.value}")


STEP_UP_DESCRIPTION = "a TOTP confirmation at most 300 seconds old is required: POST /auth/step-up"


def step_up_challenge() -> str:
    """RFC 9470 3: the step-up challenge, with the acceptable authentication age."""
    return (f'{BEARER_CHALLENGE}, error="insufficient_user_authentication", '
            f'error_description="{STEP_UP_DESCRIPTION}", max_age={STEP_UP_MAX_AGE_S}')


async def _step_up_required(request: Request, exc: Exception) -> JSONResponse:
    """RFC 9470: refused until the user confirms a fresh second factor; the client steps up and retries."""
    assert isinstance(exc, StepUpRequired)
    return problem(401, "insufficient_user_authentication",
                   f"{exc.action.value} needs a recent second-factor confirmation (POST /auth/step-up, then retry)",
                   {"WWW-Authenticate": step_up_challenge()})


async def _break_glass_refused(request: Request, exc: Exception) -> JSONResponse:
    # The core's messages name the rule broken (reason too short), never the submitted values.
    return problem(400, "bad-request", str(exc))


async def _ambiguous(request: Request, exc: Exception) -> JSONResponse:
    return problem(409, "conflict", "the Patient ID exists under several issuers: name the issuer")


async def _too_broad(request: Request, exc: Exception) -> JSONResponse:
    """PS3.18 Table 11.9.3-1: 413, repeat with paging or a narrower query; the detail says how (no count of what matched)."""
    return problem(413, "payload-too-large", str(exc))


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return problem(404, "not-found")


async def _integrity(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, IntegrityError)
    return problem(
        500, "integrity-failure",
        f"object {exc.uid} failed integrity verification and is withheld; a security alert was raised",
    )


async def _invalid_token(request: Request, exc: Exception) -> JSONResponse:
    e = unauthorized()
    return problem(401, "unauthorized", str(e.detail), e.headers)


async def _rejected(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RejectedObject)
    return problem(400, "bad-request", exc.reason.value)


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    # The message of a core error may name UIDs but no PHI; still, the client gets no detail.
    log.error("request failed: %s", type(exc).__name__)
    return problem(500, "internal-error")


INVALID_REQUEST = {"description": "Invalid request: a parameter or the body does not validate (nothing was done)"}


def _document_400_not_422(app: FastAPI) -> None:
    """The OpenAPI document says what :func:`_validation_error` answers: 400, not FastAPI's default 422."""
    generate = app.openapi

    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            document = generate()
            for operations in document.get("paths", {}).values():
                for operation in operations.values():
                    responses = operation.get("responses", {})
                    if responses.pop("422", None) is not None:
                        responses.setdefault("400", INVALID_REQUEST)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    _document_400_not_422(app)
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(QueryError, _query_error)
    app.add_exception_handler(MalformedMultipart, _query_error)
    app.add_exception_handler(AccessDenied, _access_denied)
    app.add_exception_handler(StepUpRequired, _step_up_required)  # the most specific class wins (MRO lookup)
    app.add_exception_handler(BreakGlassRefused, _break_glass_refused)
    app.add_exception_handler(AmbiguousPatientError, _ambiguous)
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(SearchTooBroad, _too_broad)
    app.add_exception_handler(InvalidContinuation, _query_error)
    app.add_exception_handler(IntegrityError, _integrity)
    app.add_exception_handler(InvalidToken, _invalid_token)
    app.add_exception_handler(RejectedObject, _rejected)
    app.add_exception_handler(GatewayError, _query_error)  # an AE title or address that is not one: 400 naming the rule
    app.add_exception_handler(DicomGuardError, _internal)
