"""Bearer-token authentication for every DICOMweb route (RFC 6750; PS3.18 8.1.6 security considerations).

Each request is authenticated on its own: the token is looked up in the index
(:func:`dicomguard.identity.tokens.verify_token`), so revocation, expiry and a
disabled account take effect at the next request. The verified user becomes a
:class:`Principal` and every action then goes through
``archive.services(principal)``, which authorizes and records it (zero trust:
the network a request came from grants nothing).

Both kinds of bearer token are accepted: API tokens (``dicomguard token
create``) and access tokens of a login session (``POST /auth/login``), whose
session is checked too (logout, idle timeout, absolute lifetime).

Tokens are accepted only in the ``Authorization`` header, never in the query
string (RFC 6750 2.3 is optional and leaks tokens into logs and histories).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from dicomguard.app.archive import Archive
from dicomguard.app.services import Services
from dicomguard.core.access import Principal, PrincipalKind
from dicomguard.identity.tokens import InvalidToken, TokenPrincipal, verify_token
from dicomguard.pki.devices import DeviceRegistry, PeerRefused
from dicomguard.web.errors import unauthorized


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization")
    if header is None:
        raise unauthorized(None)
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("invalid_request")
    return token.strip()


def verified_user(request: Request) -> TokenPrincipal:
    archive: Archive = request.app.state.archive
    try:
        return verify_token(archive.ctx.engine, _bearer(request), policy=request.app.state.session_policy)
    except InvalidToken:
        raise unauthorized() from None


def principal_for(request: Request, user: TokenPrincipal) -> Principal:
    address = request.client.host if request.client else None
    roles = user.roles or frozenset({user.role})
    attributes: dict[str, object] = {
        k: v for k, v in user.attributes.items() if k in ("site", "modalities", "referring_token", "clearances")
    }
    attributes["department"] = user.department or ""
    if user.session_id:
        attributes["session"] = user.session_id
    if user.mfa_at is not None:
        attributes["mfa_at"] = user.mfa_at
    if user.scopes is not None:
        attributes["token_scopes"] = user.scopes
    return Principal(PrincipalKind.USER, user.user_name, roles, address=address, attributes=attributes)


SHARE_COOKIE = "__Host-dicomguard-share"
"""A share-link recipient's session (ADR 0010): ``__Host-`` prefixed, so Secure, Path=/ and no Domain (RFC 6265bis 4.1.3.2)."""
_SHARE_COOKIE_METHODS = frozenset({"GET", "HEAD"})


def share_principal(request: Request) -> Principal | None:
    """The share-link recipient of the request's session cookie, for reads only; ``None`` without a live session.

    The cookie is HttpOnly and SameSite=Strict, and it authenticates only GET and
    HEAD requests: a recipient reads, and no other site can make its browser write.
    """
    secret = request.cookies.get(SHARE_COOKIE)
    if not secret or len(secret) > 128 or request.method not in _SHARE_COOKIE_METHODS:
        return None
    archive: Archive = request.app.state.archive
    return archive.share_gate.principal(secret, request.client.host if request.client else "unknown")


CLIENT_CERT_SCOPE_KEY = "dicomguard.client_cert"
"""Where the HTTPS server puts the connection's verified client certificate (DER) in the ASGI scope."""


def device_principal(request: Request) -> Principal | None:
    """The registered device (or peer archive) whose certificate the TLS connection presented, or ``None``.

    The handshake already verified the certificate against the archive's CA; here it
    must also be registered, unrevoked and unexpired (checked on every request, so a
    revocation takes effect at once). A presented but unregistered certificate is 401.
    """
    der = request.scope.get(CLIENT_CERT_SCOPE_KEY)
    if not der:
        return None
    archive: Archive = request.app.state.archive
    try:
        device = DeviceRegistry(archive.ctx.engine).identify(der)
    except PeerRefused:
        raise unauthorized() from None
    return device.principal(request.client.host if request.client else None)


def authenticated_services(request: Request) -> Services:
    """FastAPI dependency (runs in the thread pool: it reads the index): the caller's services, or 401.

    A bearer token first; without an ``Authorization`` header, a registered device's client certificate
    (mutual TLS), then a share-link recipient's session cookie.
    """
    archive: Archive = request.app.state.archive
    if request.headers.get("authorization") is None:
        other = device_principal(request) or share_principal(request)
        if other is not None:
            request.state.principal = other
            return archive.services(other)
    user = verified_user(request)
    principal = principal_for(request, user)
    request.state.principal = principal
    return archive.services(principal)


def metrics_reader(request: Request) -> Services:
    """``/metrics`` holds no PHI but shows activity: readable by whom the policies permit ``metrics-read`` (403 otherwise)."""
    services = authenticated_services(request)
    services.operations.permit_metrics()
    return services


Caller = Annotated[Services, Depends(authenticated_services)]
"""Route parameter type: the authenticated caller's services."""
