"""The console's sign-in: a session cookie, a CSRF token bound to it, step-up inside a form.

Security properties (NIST SP 800-63B 7.1, OWASP Session Management and CSRF cheat sheets):

1. Sign-in is password + TOTP through the same :class:`Authenticator` as
   ``POST /auth/login`` (throttling, lockout, replay protection, audit). The
   session is a login session of its own kind (``browser``): its cookie token is
   accepted by the console only, never as a bearer token, and no bearer token is
   accepted as a cookie. Idle sign-off and the absolute lifetime are the
   session's, so the configured ``[sessions]`` timeouts hold for the console.
2. The cookie is ``__Host-`` prefixed, ``Secure; HttpOnly; SameSite=Strict``,
   with no ``Max-Age``: it dies with the browser, and the server ends it sooner.
3. Every state-changing form carries a token derived from the cookie
   (HMAC-SHA256 keyed by the session secret: a synchronizer token that needs no
   server state) and must come from this origin (``Sec-Fetch-Site``/``Origin``).
   The sign-in form itself is protected by a short-lived pre-session cookie and
   the same double check (login CSRF).
4. Step-up (RFC 9470): where a policy asks for a fresh second factor, the form
   is shown again with a TOTP field; the code is confirmed in the session
   (:meth:`Authenticator.step_up`) and the action retried through its service.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from fastapi import HTTPException, Request

from dicomguard.app.archive import Archive
from dicomguard.app.services import Services
from dicomguard.identity.tokens import InvalidToken, verify_token
from dicomguard.web.auth import principal_for
from dicomguard.web.forms import FORM_TYPE, read_form, same_origin

COOKIE = "__Host-dicomguard-console"
LOGIN_COOKIE = "__Host-dicomguard-login"
"""Pre-session cookie of the sign-in form (login CSRF); lives 10 minutes."""
LOGIN_COOKIE_AGE_S = 600
CSRF_FIELD = "csrf"


class SignInRequired(Exception):
    """No live console session: GET pages redirect to the sign-in page, forms answer 401."""


@dataclass
class ConsoleCaller:
    """The signed-in user of one console request: their services and the session's form token."""

    services: Services
    session_id: str
    csrf: str

    @property
    def name(self) -> str:
        return self.services.principal.name


def form_token(secret: str, purpose: bytes = b"dicomguard console form v1") -> str:
    """The CSRF token bound to a cookie secret (HMAC-SHA256; nobody without the HttpOnly cookie can compute it)."""
    return base64.urlsafe_b64encode(hmac.new(secret.encode(), purpose, hashlib.sha256).digest()).decode().rstrip("=")


def cookie_options() -> dict[str, object]:
    return {"path": "/", "secure": True, "httponly": True, "samesite": "strict"}


def address(request: Request) -> str | None:
    return request.client.host if request.client else None


def console_caller(request: Request) -> ConsoleCaller:
    """FastAPI dependency (thread pool: it reads the index): the signed-in user, or :class:`SignInRequired`."""
    return caller_of(request, request.cookies.get(COOKIE))


def caller_of(request: Request, secret: str | None) -> ConsoleCaller:
    """The user of a console cookie secret (:func:`console_caller`; also right after sign-in, before the browser has it)."""
    if not secret or len(secret) > 128:
        raise SignInRequired()
    archive: Archive = request.app.state.archive
    try:
        user = verify_token(archive.ctx.engine, secret, policy=request.app.state.session_policy, browser=True)
    except InvalidToken:
        raise SignInRequired() from None
    assert user.session_id is not None
    principal = principal_for(request, user)
    request.state.principal = principal
    return ConsoleCaller(archive.services(principal), user.session_id, form_token(secret))


async def checked_form(request: Request) -> dict[str, str]:
    """A state-changing form of a signed-in user: same origin, the session's CSRF token, bounded size (else 403/413)."""
    fields = await _own_form(request)
    secret = request.cookies.get(COOKIE) or ""
    sent = fields.get(CSRF_FIELD, [""])
    if not secret or len(sent) != 1 or not _same(sent[0], form_token(secret)):
        raise HTTPException(403, "the form's security token is missing or stale: reload the page and try again")
    return {k: v[0] for k, v in fields.items() if len(v) == 1 and k != CSRF_FIELD}


async def _own_form(request: Request, max_bytes: int = 16 * 1024, max_fields: int = 32) -> dict[str, list[str]]:
    """A form from this origin (403 otherwise; a body of another type is a form without its token: 403 too)."""
    same_origin(request)
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != FORM_TYPE:
        raise HTTPException(403, "not a form of this console")
    return await read_form(request, max_bytes, max_fields)


def _same(sent: str, expected: str) -> bool:
    """Constant-time comparison of a submitted token (as UTF-8: a non-ASCII value is simply wrong, not an error)."""
    return hmac.compare_digest(sent.encode("utf-8", "surrogatepass"), expected.encode())


def login_form_token() -> str:
    return secrets.token_urlsafe(32)


async def checked_login_form(request: Request) -> dict[str, str]:
    """The sign-in form: same origin and the pre-session cookie's token (login CSRF)."""
    fields = await _own_form(request, max_bytes=4096, max_fields=8)
    expected = request.cookies.get(LOGIN_COOKIE) or ""
    sent = fields.get(CSRF_FIELD, [""])
    if not expected or len(sent) != 1 or not _same(sent[0], form_token(expected, b"dicomguard console login v1")):
        raise HTTPException(403, "the sign-in form expired: reload the page and try again")
    return {k: v[0] for k, v in fields.items() if len(v) == 1 and k != CSRF_FIELD}
