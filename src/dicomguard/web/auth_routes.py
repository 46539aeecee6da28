"""Login, token refresh, logout and password change (issue 5) under ``/auth``.

The routes only parse input and call :class:`dicomguard.identity.auth.Authenticator`
(one core for every entry point). Failures are opaque: 401 for any wrong
factor or invalid token (RFC 6750 3.1 challenge), 429 with ``Retry-After``
(RFC 6585 4) while an account or address is throttled or locked. Bodies never
echo the submitted values. Responses carry ``Cache-Control: no-store``
(RFC 6749 5.1) like every response of the application.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from dicomguard.core.archive import Archive
from dicomguard.core.keyring import PURPOSE_IDENTITY
from dicomguard.identity.auth import AuthenticationFailed, Authenticator, LoginThrottled
from dicomguard.identity.sessions import refresh_session
from dicomguard.identity.tokens import InvalidToken
from dicomguard.identity.users import PasswordPolicyError
from dicomguard.web.auth import _bearer, verified_user
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
        auth = Authenticator(archive.ctx.engine, archive.ctx.bus, archive.ctx.keyring.archive_key(PURPOSE_IDENTITY))
        state.authenticator = auth
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
        tokens = refresh_session(auth.engine, body.refresh_token, policy=auth.sessions)
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
    responses={400: {"description": "The new password does not meet the policy"}, 401: {"description": "Authentication failed"}},
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
    return Response(status_code=204)
