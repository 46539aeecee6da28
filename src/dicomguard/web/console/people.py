"""People and devices: accounts (roles, department, MFA, lock), devices (certificate expiry, operations), the gateway
allow-list and the break-glass grants in force; the actions an administrator takes on them.

Each list and each action is one call of its service (``account-read``,
``administer`` ..., decided and recorded there). A new TOTP secret is shown once,
in the response to the POST that made it, never in a URL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from dicomguard.core.access import Action, Resource
from dicomguard.web.console.actions import run_action, view
from dicomguard.web.console.pages import render
from dicomguard.web.console.session import ConsoleCaller, checked_form, console_caller

router = APIRouter()
CERT_SOON = timedelta(days=30)
ACCOUNT_ACTIONS = ("unlock", "disable", "enable")


@router.get("/people")
def people(request: Request, caller: ConsoleCaller = Depends(console_caller)) -> Response:
    def show() -> Response:
        accounts = caller.services.accounts.list()
        allowed = caller.services.operations.permitted([(Action.AUDIT_READ, Resource.audit_log()),
                                                        (Action.ACCOUNT_CHANGE, Resource.account("*"))])
        grants = caller.services.break_glass.in_force() if Action.AUDIT_READ in allowed else None
        return render(request, caller, "people.html", accounts=accounts, grants=grants, now=datetime.now(UTC),
                      can_change=Action.ACCOUNT_CHANGE in allowed)
    return view(request, caller, show)


@router.post("/people/{name}/{action}")
async def account_action(request: Request, name: str, action: str) -> Response:
    form = await checked_form(request)

    def act(caller: ConsoleCaller) -> Response:
        accounts = caller.services.accounts
        if action == "reset-mfa":
            secret, uri = accounts.reset_mfa(name)
            return render(request, caller, "secret_once.html", heading=f"New authenticator secret for {name}",
                          lines=[("TOTP secret", secret), ("Provisioning URI", uri)],
                          note="Shown once. Give it to the user in person; their sessions have ended.")
        if action not in ACCOUNT_ACTIONS:
            raise ValueError("unknown account action")
        getattr(accounts, action)(name)
        return RedirectResponse("/console/people", status_code=303)
    return await run_action(request, form, f"Changing the account {name}", act)


@router.get("/devices")
def devices(request: Request, caller: ConsoleCaller = Depends(console_caller)) -> Response:
    def show() -> Response:
        listed = caller.services.devices.list()
        allowed = caller.services.operations.permitted([(Action.ALLOWLIST_READ, Resource.allow_list()),
                                                        (Action.ALLOWLIST_CHANGE, Resource.allow_list()),
                                                        (Action.DEVICE_REVOKE, Resource.device("*"))])
        allow = caller.services.allow_list.list() if Action.ALLOWLIST_READ in allowed else None
        now = datetime.now(UTC)
        return render(request, caller, "devices.html", devices=listed, allow=allow, now=now, soon=now + CERT_SOON,
                      can_revoke=Action.DEVICE_REVOKE in allowed, can_allow=Action.ALLOWLIST_CHANGE in allowed)
    return view(request, caller, show)


@router.post("/devices/{ae_title}/revoke")
async def revoke_device(request: Request, ae_title: str) -> Response:
    form = await checked_form(request)

    def act(caller: ConsoleCaller) -> Response:
        caller.services.devices.revoke(ae_title)
        return RedirectResponse("/console/devices", status_code=303)
    return await run_action(request, form, f"Revoking the device {ae_title}", act)


@router.post("/devices/allow-list")
async def allow_list_change(request: Request) -> Response:
    form = await checked_form(request)

    def act(caller: ConsoleCaller) -> Response:
        ae, ip = form.get("ae_title", "").strip()[:16], form.get("ip", "").strip()[:64]
        if form.get("change") == "remove":
            caller.services.allow_list.deny(ae, ip or None)
        else:
            caller.services.allow_list.allow(ae, ip)
        return RedirectResponse("/console/devices", status_code=303)
    return await run_action(request, form, "Changing the gateway allow-list", act)
