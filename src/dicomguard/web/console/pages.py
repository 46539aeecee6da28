"""Rendering console pages: one Jinja2 environment (autoescaped), the menu the policies allow, the response headers.

Every page is HTML rendered on the server with no script at all, so the
Content-Security-Policy can forbid scripts outright (``default-src 'none'``, no
``unsafe-inline``): a value that slipped through escaping still could not run
(defence in depth behind Jinja2's autoescaping). Charts are inline SVG drawn on
the server. Pages are never cached (``no-store``), never framed
(``frame-ancestors 'none'``) and send no Referer.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from dicomguard.core.access import Action, Resource
from dicomguard.web.console.session import CSRF_FIELD, ConsoleCaller

CONSOLE_CSP = ("default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; "
               "base-uri 'none'")
PAGE_HEADERS = {"Content-Security-Policy": CONSOLE_CSP, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                "X-Frame-Options": "DENY"}

templates = Environment(loader=PackageLoader("dicomguard.web", "templates"), autoescape=select_autoescape(["html"]),
                        trim_blocks=True, lstrip_blocks=True)

MENU: tuple[tuple[str, str, Action | None, Resource | None], ...] = (
    ("Overview", "/console/overview", Action.AUDIT_READ, Resource.audit_log()),
    ("Alerts", "/console/alerts", Action.ALERTS_READ, Resource.archive()),
    ("Audit", "/console/audit", Action.AUDIT_READ, Resource.audit_log()),
    ("People", "/console/people", Action.ACCOUNT_READ, Resource.account("*")),
    ("Devices", "/console/devices", Action.DEVICE_READ, Resource.device("*")),
    ("Incidents", "/console/incidents", Action.INCIDENT_READ, Resource.incident("*")),
    ("Risks", "/console/risks", Action.RISK_READ, Resource.archive()),
    ("Posture", "/console/posture", Action.POSTURE_READ, Resource.archive()),
    ("Backups", "/console/backups", Action.BACKUP_READ, Resource.archive()),
    ("Studies", "/console/studies", None, None),  # everyone may search: the results are what the policies let them see
    ("Shares", "/console/shares", None, None),  # one's own links
)


def menu(caller: ConsoleCaller) -> list[dict[str, str]]:
    """The pages this user's policies allow (asked, not recorded; each page decides again when opened)."""
    allowed = caller.services.operations.permitted((a, r) for _, _, a, r in MENU if a is not None and r is not None)
    return [{"label": label, "href": href} for label, href, action, _ in MENU if action is None or action in allowed]


def home(caller: ConsoleCaller) -> str:
    """Where a user lands after sign-in: the overview for whom may read it, else the study search."""
    return menu(caller)[0]["href"]


def render(request: Request, caller: ConsoleCaller | None, name: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    page = {"path": request.url.path, "csrf_field": CSRF_FIELD}
    if caller is not None:
        page.update(user=caller.name, roles=", ".join(sorted(caller.services.principal.roles)), csrf=caller.csrf,
                    menu=menu(caller))
    html = templates.get_template(f"console/{name}").render(page=page, **values)
    return HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)


def message(request: Request, caller: ConsoleCaller | None, status: int, heading: str, text: str) -> HTMLResponse:
    """A page that says only what went wrong (a refusal renders nothing of the page that was asked for)."""
    return render(request, caller, "message.html", status, heading=heading, text=text)
