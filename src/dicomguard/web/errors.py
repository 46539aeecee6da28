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

from dicomguard.core.access import AccessDenied
from dicomguard.errors import (
    DicomGuardError,
    IntegrityError,
    NotFoundError,
    RejectedObject,
)
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
            406: "not-acceptable", 413: "payload-too-large", 415: "unsupported-media-type", 501: "not-implemented"}


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return problem(exc.status_code, _REASONS.get(exc.status_code, "error"), str(exc.detail or ""), exc.headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    names = sorted({str(e.get("loc", ("", ""))[-1]) for e in exc.errors()})
    return problem(400, "bad-request", f"invalid {', '.join(names)}: path parameters must be DICOM UIDs")


async def _query_error(request: Request, exc: Exception) -> JSONResponse:
    return problem(400, "bad-request", str(exc))


async def _access_denied(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AccessDenied)
    return problem(403, "forbidden", f"not permitted to {exc.action.value}")


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


def install(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(QueryError, _query_error)
    app.add_exception_handler(MalformedMultipart, _query_error)
    app.add_exception_handler(AccessDenied, _access_denied)
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(IntegrityError, _integrity)
    app.add_exception_handler(InvalidToken, _invalid_token)
    app.add_exception_handler(RejectedObject, _rejected)
    app.add_exception_handler(DicomGuardError, _internal)
