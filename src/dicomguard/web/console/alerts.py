"""Alerts: the list with filters, one alert with why and its evidence, containment, release and disposition.

The list shows no patient (``DetectionService.alerts``); opening one alert shows
its patients, explanation and evidence and is recorded (it reads PHI). Containing
the alert's user, releasing them and disposing of the alert go through the
detection service, decided by the policies (``alerts-handle``) and recorded with
the alert.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from dicomguard.web.console.actions import run_action, view
from dicomguard.web.console.pages import render
from dicomguard.web.console.session import ConsoleCaller, checked_form, console_caller

router = APIRouter()
STATUSES = ("open", "acknowledged", "resolved")
SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3}


@router.get("/alerts")
def alerts(request: Request, status: str = "unresolved", severity: str = "", caller: ConsoleCaller = Depends(console_caller)) -> Response:
    def show() -> Response:
        found = caller.services.detection.alerts(status=status if status in STATUSES else None)
        if status == "unresolved":
            found = [a for a in found if a.status != "resolved"]
        if severity:
            found = [a for a in found if a.severity == severity]
        found.sort(key=lambda a: (SEVERITY_ORDER.get(a.severity, 9), -a.id))
        return render(request, caller, "alerts.html", alerts=found, status=status, severity=severity,
                      statuses=("unresolved", *STATUSES, "all"), severities=tuple(SEVERITY_ORDER))
    return view(request, caller, show)


@router.get("/alerts/{alert_id}")
def alert(request: Request, alert_id: int, caller: ConsoleCaller = Depends(console_caller)) -> Response:
    return view(request, caller, lambda: render(request, caller, "alert.html", alert=caller.services.detection.show(alert_id)))


def _back(alert_id: int) -> Response:
    return RedirectResponse(f"/console/alerts/{alert_id}", status_code=303)


@router.post("/alerts/{alert_id}/contain")
async def contain(request: Request, alert_id: int) -> Response:
    form = await checked_form(request)

    def act(caller: ConsoleCaller) -> Response:
        caller.services.detection.contain(alert_id, form.get("level", "suspend"), form.get("note", "")[:2000])
        return _back(alert_id)
    return await run_action(request, form, "Containing a user", act)


@router.post("/alerts/{alert_id}/release")
async def release(request: Request, alert_id: int) -> Response:
    form = await checked_form(request)

    def act(caller: ConsoleCaller) -> Response:
        caller.services.detection.release(form.get("user", "")[:256], form.get("reason", "")[:2000])
        return _back(alert_id)
    return await run_action(request, form, "Releasing a containment", act)


@router.post("/alerts/{alert_id}/handle")
async def handle(request: Request, alert_id: int) -> Response:
    form = await checked_form(request)

    def act(caller: ConsoleCaller) -> Response:
        action = form.get("action", "")
        disposition = form.get("disposition") or None
        caller.services.detection.handle(alert_id, action, disposition if action == "resolve" else None, form.get("note", "")[:2000])
        return _back(alert_id)
    return await run_action(request, form, "Handling an alert", act)
