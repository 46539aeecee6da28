"""Sign-in and sign-out pages of the console (see :mod:`dicomguard.web.console.session` for the properties)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from dicomguard.identity.auth import AuthenticationFailed, LoginThrottled
from dicomguard.identity.tokens import InvalidToken
from dicomguard.web.auth_routes import authenticator
from dicomguard.web.console.pages import home, render
from dicomguard.web.console.session import (
    COOKIE,
    LOGIN_COOKIE,
    LOGIN_COOKIE_AGE_S,
    address,
    caller_of,
    checked_form,
    checked_login_form,
    cookie_options,
    form_token,
    login_form_token,
)

router = APIRouter()


def _login_page(request: Request, status: int = 200, error: str | None = None, notice: str | None = None) -> Response:
    secret = login_form_token()
    response = render(request, None, "login.html", status, csrf=form_token(secret, b"dicomguard console login v1"), error=error,
                      notice=notice)
    response.set_cookie(LOGIN_COOKIE, secret, max_age=LOGIN_COOKIE_AGE_S, **cookie_options())  # type: ignore[arg-type]
    return response


@router.get("/login")
def login_page(request: Request, signed_out: str | None = None) -> Response:
    notice = {"idle": "You were signed out after a period without activity.", "bye": "You are signed out."}.get(signed_out or "")
    return _login_page(request, notice=notice)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await checked_login_form(request)
    name, password, code = form.get("username", ""), form.get("password", ""), form.get("totp", "")
    try:
        secret, _ = await run_in_threadpool(authenticator(request).login_browser, name[:64], password[:1024], code[:64],
                                            address(request))
    except AuthenticationFailed:
        return _login_page(request, 401, "Sign-in failed: check your name, password and code.")
    except LoginThrottled as exc:
        return _login_page(request, 429, f"Too many failed sign-ins: try again in {exc.retry_after} s.")
    caller = await run_in_threadpool(caller_of, request, secret)  # the landing page follows the new user's policies
    response = RedirectResponse(await run_in_threadpool(home, caller), status_code=303)
    response.set_cookie(COOKIE, secret, **cookie_options())  # type: ignore[arg-type]  # a browser-session cookie: no Max-Age
    response.delete_cookie(LOGIN_COOKIE, **cookie_options())  # type: ignore[arg-type]
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    await checked_form(request)
    secret = request.cookies.get(COOKIE, "")
    try:
        await run_in_threadpool(authenticator(request).logout, secret, address(request), browser=True)
    except InvalidToken:
        pass  # already ended: signing out again is harmless
    response = RedirectResponse("/console/login?signed_out=bye", status_code=303)
    response.delete_cookie(COOKIE, **cookie_options())  # type: ignore[arg-type]
    return response
