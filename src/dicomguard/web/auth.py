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


def authenticated_services(request: Request) -> Services:
    """FastAPI dependency (runs in the thread pool: it reads the index): the caller's services, or 401."""
    user = verified_user(request)
    principal = principal_for(request, user)
    request.state.principal = principal
    archive: Archive = request.app.state.archive
    return archive.services(principal)


def metrics_reader(request: Request) -> Services:
    """``/metrics`` holds no PHI but shows activity: readable by whom the policies permit ``metrics-read`` (403 otherwise)."""
    services = authenticated_services(request)
    services.operations.permit_metrics()
    return services


Caller = Annotated[Services, Depends(authenticated_services)]
"""Route parameter type: the authenticated caller's services."""
