"""HTML forms: same-origin check and a bounded ``application/x-www-form-urlencoded`` reader (for the browser pages).

Cross-site request forgery is refused in two independent ways where a session
exists (OWASP CSRF Prevention Cheat Sheet): the browser's own ``Sec-Fetch-Site``
/ ``Origin`` headers must name this origin, and the console's forms carry a token
bound to the session (:mod:`dicomguard.web.console.session`). Bodies are read
with a size and field-count bound before anything is parsed, so a form cannot
exhaust memory.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import HTTPException, Request

FORM_TYPE = "application/x-www-form-urlencoded"


def same_origin(request: Request) -> None:
    """403 unless the request comes from this origin (a cross-site POST is refused before anything happens)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise HTTPException(403, "cross-site request refused")
    origin = request.headers.get("origin")
    if origin is not None and origin != "null" and origin.rstrip("/") != str(request.base_url).rstrip("/"):
        raise HTTPException(403, "cross-origin request refused")


async def read_form(request: Request, max_bytes: int = 16 * 1024, max_fields: int = 32) -> dict[str, list[str]]:
    """The fields of a small urlencoded body: 415 for another type, 413 past ``max_bytes``, 400 past ``max_fields``."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != FORM_TYPE:
        raise HTTPException(415, f"forms are {FORM_TYPE}")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise HTTPException(413, "form too large")
    try:
        return parse_qs(body.decode("utf-8"), max_num_fields=max_fields, keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, "malformed form") from None
