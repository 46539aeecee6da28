"""Bearer-token authentication for every DICOMweb route (RFC 6750; PS3.18 8.1.6 security considerations).

Each request is authenticated on its own: the token is looked up in the index
(:func:`dicomguard.identity.tokens.verify_token`), so revocation, expiry and a
disabled account take effect at the next request. The verified user becomes a
:class:`Principal` and every data access then goes through
``archive.client(principal)``, which authorizes and records it (zero trust:
the network a request came from grants nothing).

Both kinds of bearer token are accepted: API tokens (``dicomguard token
create``) and access tokens of a login session (``POST /auth/login``), whose
session is checked too (logout, idle timeout, absolute lifetime).

Tokens are accepted only in the ``Authorization`` header, never in the query
string (RFC 6750 2.3 is optional and leaks tokens into logs and histories).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from dicomguard.core.access import Principal, PrincipalKind
from dicomguard.core.archive import Archive
from dicomguard.core.client import ArchiveClient
from dicomguard.identity.tokens import InvalidToken, TokenPrincipal, verify_token
from dicomguard.web.errors import unauthorized

METRICS_ROLES = frozenset({"admin", "security_officer"})


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


def authenticated_client(request: Request) -> ArchiveClient:
    """FastAPI dependency (runs in the thread pool: it reads the index): the caller's ArchiveClient or 401."""
    user = verified_user(request)
    principal = principal_for(request, user)
    request.state.principal = principal
    archive: Archive = request.app.state.archive
    return archive.client(principal)


def metrics_reader(request: Request) -> TokenPrincipal:
    """``/metrics`` holds no PHI but shows activity: only admin and security_officer tokens may read it (403 otherwise)."""
    user = verified_user(request)
    if not (user.roles or {user.role}) & METRICS_ROLES:
        raise HTTPException(403, "metrics are readable by the admin and security_officer roles only")
    return user


Client = Annotated[ArchiveClient, Depends(authenticated_client)]
"""Route parameter type: the authenticated caller's ArchiveClient."""
