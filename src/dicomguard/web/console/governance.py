"""Incidents, risks, posture and backups: the officer's pages over the incident, governance, posture and backup services.

Read-only views; the actions (containment, notifications, risk treatment,
drills) stay with ``dicomguard incident|risk|backup`` and ``/incidents``, which
carry the step-up and the typed reasons they need. Each page is one call of its
service, decided by the policies (``incident-read``, ``risk-read``,
``posture-read``, ``backup-read``).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from dicomguard.core.access import Action, Resource
from dicomguard.web.console.actions import view
from dicomguard.web.console.pages import render
from dicomguard.web.console.session import ConsoleCaller, console_caller

router = APIRouter()


@router.get("/incidents")
def incidents(request: Request, closed: bool = False, caller: ConsoleCaller = Depends(console_caller)) -> Response:
    return view(request, caller, lambda: render(request, caller, "incidents.html",
                                                incidents=caller.services.incidents.list(include_closed=closed), closed=closed))


@router.get("/incidents/{incident_id}")
def incident(request: Request, incident_id: int, caller: ConsoleCaller = Depends(console_caller)) -> Response:
    return view(request, caller, lambda: render(request, caller, "incident.html", incident=caller.services.incidents.show(incident_id)))


@router.get("/risks")
def risks(request: Request, caller: ConsoleCaller = Depends(console_caller)) -> Response:
    def show() -> Response:
        listed = sorted(caller.services.governance.risks(), key=lambda r: -r.score)
        allowed = caller.services.operations.permitted([(Action.LOG_REVIEW, Resource.archive())])
        reviews = caller.services.governance.reviews()[:5] if Action.LOG_REVIEW in allowed else None
        return render(request, caller, "risks.html", risks=listed, reviews=reviews)
    return view(request, caller, show)


@router.get("/posture")
def posture(request: Request, caller: ConsoleCaller = Depends(console_caller)) -> Response:
    def show() -> Response:
        p = caller.services.posture.assess()
        findings = sorted(p.findings, key=lambda f: f.satisfied)
        return render(request, caller, "posture.html", posture=p, findings=findings, score=round(100 * p.score))
    return view(request, caller, show)


@router.get("/backups")
def backups(request: Request, caller: ConsoleCaller = Depends(console_caller)) -> Response:
    return view(request, caller, lambda: render(request, caller, "backups.html", status=caller.services.backups.status()))
