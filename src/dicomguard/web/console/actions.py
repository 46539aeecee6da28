"""Running a console action through its service, with the answers a person needs: step-up, refusal, not found, invalid.

The route has already checked the form (origin, CSRF token). Here the action
runs in the thread pool as the signed-in user; the service decides and records
it. When a policy asks for a fresh second factor (RFC 9470, ``@step_up``
guards), the same form comes back with a TOTP field and every value the user
entered; the code is confirmed in the session and the action runs again, decided
anew. A refusal shows nothing of what was asked for (403), and an unknown or
invisible object answers the same 404.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from dicomguard.core.access import AccessDenied, StepUpRequired
from dicomguard.errors import NotFoundError, SearchTooBroad
from dicomguard.identity.auth import AuthenticationFailed, LoginThrottled
from dicomguard.web.auth_routes import authenticator
from dicomguard.web.console.pages import message, render
from dicomguard.web.console.session import ConsoleCaller, address, console_caller

TOTP_FIELD = "step_up_totp"


def _step_up_page(request: Request, caller: ConsoleCaller, form: dict[str, str], what: str, error: str | None) -> Response:
    fields = {k: v for k, v in form.items() if k != TOTP_FIELD}
    return render(request, caller, "step_up.html", 401, action=request.url.path, fields=fields, what=what, error=error,
                  totp_field=TOTP_FIELD)


def _run(request: Request, form: dict[str, str], what: str, act: Callable[[ConsoleCaller], Response]) -> Response:
    caller = console_caller(request)
    code = form.get(TOTP_FIELD, "").strip()
    if code:
        try:
            authenticator(request).step_up(caller.session_id, caller.name, code, address(request))
        except AuthenticationFailed:
            return _step_up_page(request, caller, form, what, "That code was not accepted (wrong, or already used). "
                                                              "Wait for the next code and try again.")
        except LoginThrottled as exc:
            return _step_up_page(request, caller, form, what, f"Too many failed attempts: try again in {exc.retry_after} s.")
        caller = console_caller(request)  # the principal now carries the new confirmation time
    try:
        return act(caller)
    except StepUpRequired:
        return _step_up_page(request, caller, form, what, None)
    except (AccessDenied, NotFoundError, ValueError, SearchTooBroad) as exc:
        return _refused(request, caller, exc, "do this")


async def run_action(request: Request, form: dict[str, str], what: str, act: Callable[[ConsoleCaller], Response]) -> Response:
    """Run ``act`` as the signed-in user (thread pool), turning core refusals into pages; ``what`` names it for step-up."""
    return await run_in_threadpool(_run, request, form, what, act)


def view(request: Request, caller: ConsoleCaller, show: Callable[[], Response]) -> Response:
    """A page: refusals and misses become the same short pages as for actions (nothing of the page is rendered)."""
    try:
        return show()
    except StepUpRequired:
        return message(request, caller, 401, "Confirm your identity",
                       "This page needs a recent second-factor confirmation. Confirm it from a form, then open the page again.")
    except (AccessDenied, NotFoundError, ValueError, SearchTooBroad) as exc:
        return _refused(request, caller, exc, "see this page")


def _refused(request: Request, caller: ConsoleCaller, exc: Exception, what: str) -> Response:
    """403 for a refusal (recorded by the core), one 404 for what is absent or invisible, 400 naming the rule broken."""
    if isinstance(exc, AccessDenied):
        return message(request, caller, 403, "Not permitted", f"The policies do not permit you to {what}. It has been recorded.")
    if isinstance(exc, NotFoundError):
        return message(request, caller, 404, "Not found", "There is no such item, or it is not visible to you.")
    if isinstance(exc, SearchTooBroad):
        return message(request, caller, 413, "Search too broad", str(exc))
    return message(request, caller, 400, "Cannot do that", str(exc))
