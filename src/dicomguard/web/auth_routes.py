"""Login, token refresh, logout, password change, step-up and break-glass under ``/auth``.

The routes only parse input and call :class:`dicomguard.identity.auth.Authenticator`
(one core for every entry point). Failures are opaque: 401 for any wrong
factor or invalid token (RFC 6750 3.1 challenge), 429 with ``Retry-After``
(RFC 6585 4) while an account or address is throttled or locked. Bodies never
echo the submitted values. Responses carry ``Cache-Control: no-store``
(RFC 6749 5.1) like every response of the application.

``/auth/step-up`` answers the RFC 9470 challenge (401 ``insufficient_user_authentication``,
see :mod:`dicomguard.web.errors`): a fresh TOTP code renews the session's MFA time.
``/auth/break-glass`` claims emergency access to one patient through the core
(:meth:`dicomguard.core.services.break_glass.BreakGlassService.claim`), which decides, records and alerts.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from dicomguard.app.archive import Archive
from dicomguard.identity.auth import (
    STEP_UP_MAX_AGE_S,
    AuthenticationFailed,
    Authenticator,
    LoginThrottled,
)
from dicomguard.identity.tokens import InvalidToken
from dicomguard.identity.users import PasswordPolicyError
from dicomguard.web.auth import Caller, _bearer, verified_user
from dicomguard.web.errors import problem, unauthorized

router = APIRouter(prefix="/auth", tags=["authentication"])


class LoginRequest(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)
    totp: str = Field(max_length=64, description="A 6-digit TOTP code (RFC 6238) or a single-use recovery code")


class RefreshRequest(BaseModel):
    refresh_token: str = Field(max_length=128)


class PasswordChange(BaseModel):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)
    totp: str = Field(max_length=64)


class StepUpRequest(BaseModel):
    totp: str = Field(max_length=64, description="A fresh 6-digit TOTP code (RFC 6238); a code already used is refused")


class StepUpResponse(BaseModel):
    mfa_at: str = Field(description="When the session's second factor was confirmed (ISO 8601, UTC)")
    max_age: int = Field(description="Seconds the confirmation satisfies step-up policies")


class BreakGlassRequest(BaseModel):
    patient_id: str = Field(max_length=64, description="Patient ID (0010,0020)")
    reason: str = Field("", max_length=2000, description="Typed justification; required (see policy.break_glass_min_reason)")
    issuer: str | None = Field(None, max_length=64, description="Issuer of Patient ID (0010,0021), when ambiguous")


class BreakGlassResponse(BaseModel):
    grant_id: str
    expires_at: str


class TokenResponse(BaseModel):
    access_token: str
    refresh_token: str
    expires_in: int = Field(description="Seconds until the access token expires")
    token_type: str = "Bearer"


def authenticator(request: Request) -> Authenticator:
    state = request.app.state
    auth = getattr(state, "authenticator", None)
    if auth is None:
        archive: Archive = state.archive
        auth = state.authenticator = archive.authenticator(state.session_policy)
    return auth


def _address(request: Request) -> str | None:
    return request.client.host if request.client else None


def _login_failed() -> JSONResponse:
    return problem(401, "unauthorized", "authentication failed")


def _throttled(exc: LoginThrottled) -> JSONResponse:
    return problem(429, "too-many-requests", "too many failed logins; try again later", {"Retry-After": str(exc.retry_after)})


@router.post(
    "/login",
    summary="Password + TOTP (or recovery code) -> short-lived access token and refresh token",
    response_model=TokenResponse,
    responses={401: {"description": "Authentication failed (which factor is not said)"},
               429: {"description": "Throttled or locked out; see Retry-After"}},
)
def login(body: LoginRequest, request: Request) -> JSONResponse:
    try:
        tokens = authenticator(request).login(body.username, body.password, body.totp, _address(request))
    except AuthenticationFailed:
        return _login_failed()
    except LoginThrottled as exc:
        return _throttled(exc)
    return JSONResponse(tokens.as_json())


@router.post(
    "/refresh",
    summary="Rotate the refresh token: new access and refresh tokens; reuse of an old refresh token ends the session",
    response_model=TokenResponse,
    responses={401: {"description": "Invalid, expired or reused refresh token"}},
)
def refresh(body: RefreshRequest, request: Request) -> JSONResponse:
    auth = authenticator(request)
    try:
        tokens = auth.refresh(body.refresh_token, _address(request))
    except InvalidToken:
        raise unauthorized() from None
    return JSONResponse(tokens.as_json())


@router.post("/logout", status_code=204, summary="End the session of the bearer access token at once",
             responses={401: {"description": "Invalid token"}})
def logout(request: Request) -> Response:
    try:
        authenticator(request).logout(_bearer(request), _address(request))
    except InvalidToken:
        raise unauthorized() from None
    return Response(status_code=204)


@router.post(
    "/password",
    status_code=204,
    summary="Change one's own password (current password + fresh TOTP; at least 12 characters, not common, not the name)",
    responses={400: {"description": "The new password does not meet the policy"}, 401: {"description": "Authentication failed"},
               429: {"description": "Throttled or locked out (failures count like logins); see Retry-After"}},
)
def change_password(body: PasswordChange, request: Request) -> Response:
    user = verified_user(request)
    try:
        authenticator(request).change_password(user.user_name, body.current_password, body.new_password, body.totp,
                                               _address(request), keep_session=user.session_id)
    except PasswordPolicyError as exc:
        return problem(400, "bad-request", str(exc))
    except AuthenticationFailed:
        return _login_failed()
    except LoginThrottled as exc:
        return _throttled(exc)
    return Response(status_code=204)


@router.post(
    "/step-up",
    summary="Confirm a fresh TOTP code in the current login session (RFC 9470 step-up), e.g. before an erasure",
    response_model=StepUpResponse,
    responses={400: {"description": "The bearer token is an API token: step-up needs a login session"},
               401: {"description": "Invalid token, or wrong or replayed code"},
               429: {"description": "Throttled or locked out; see Retry-After"}},
)
def step_up(body: StepUpRequest, request: Request) -> JSONResponse:
    user = verified_user(request)
    if user.session_id is None:
        return problem(400, "bad-request", "step-up needs a login session (POST /auth/login); API tokens cannot step up")
    try:
        mfa_at = authenticator(request).step_up(user.session_id, user.user_name, body.totp, _address(request))
    except AuthenticationFailed:
        return _login_failed()
    except LoginThrottled as exc:
        return _throttled(exc)
    return JSONResponse({"mfa_at": mfa_at.isoformat(), "max_age": STEP_UP_MAX_AGE_S})


@router.post(
    "/break-glass",
    status_code=201,
    summary="Claim time-boxed emergency access to one patient, with a typed reason (alerted and audited)",
    response_model=BreakGlassResponse,
    responses={400: {"description": "Reason missing or too short"}, 401: {"description": "Invalid token"},
               403: {"description": "The role may not claim break-glass"}},
)
def break_glass(body: BreakGlassRequest, caller: Caller) -> JSONResponse:
    """A Patient ID the archive does not hold is answered like one it holds (201, a grant that opens nothing)."""
    grant = caller.break_glass.claim(body.patient_id, body.reason, body.issuer or None)
    return JSONResponse(grant.to_json(), status_code=201)
