"""For clinicians: a study search limited to what the policies let them see, and Share from a study.

The search is a POSTed form (patient names and IDs stay out of URLs) answered by
:meth:`QueryService.find_studies`: the same visibility and the same Query record
as QIDO-RS and C-FIND. Sharing calls :meth:`ShareService.create`, so the policies
decide for the person sharing exactly as for ``dicomguard share create``: a fresh
second factor for an external recipient (the form asks for it when needed), a
de-identified copy for a research recipient whatever the toggle says. The link
and PIN are shown once, on the page that answers the POST.
"""

from __future__ import annotations

import re
from datetime import timedelta

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from dicomguard.core.query import PatientFilter, StudyFilter
from dicomguard.core.services.shares import RECIPIENT_KINDS
from dicomguard.errors import NotFoundError
from dicomguard.web.console.actions import run_action, view
from dicomguard.web.console.pages import render
from dicomguard.web.console.session import ConsoleCaller, checked_form, console_caller
from dicomguard.web.share_routes import link_url

router = APIRouter()
_UID = re.compile(r"^[0-9.]{1,64}$")
_DATE = re.compile(r"^(\d{8})?(-(\d{8})?)?$")
EXPIRY_CHOICES = (("24", "1 day"), ("72", "3 days"), ("168", "1 week"), ("720", "30 days"))
MAX_RESULTS = 200


def _filter(form: dict[str, str]) -> StudyFilter:
    date = form.get("date", "").strip().replace("/", "")
    if date and not _DATE.match(date):
        raise ValueError("date: YYYYMMDD, or a range YYYYMMDD-YYYYMMDD")
    patient = PatientFilter(patient_id=form.get("patient_id", "").strip()[:64] or None, name=form.get("name", "").strip()[:64] or None)
    return StudyFilter(patient=patient, study_date=date or None, modality=form.get("modality", "").strip().upper()[:16] or None,
                       accession_number=form.get("accession", "").strip()[:16] or None)


def _study_uid(form: dict[str, str]) -> str:
    uid = form.get("study", "").strip()
    if not _UID.match(uid):
        raise ValueError("not a Study Instance UID")
    return uid


@router.get("/studies")
def studies_page(request: Request, caller: ConsoleCaller = Depends(console_caller)) -> Response:
    return view(request, caller, lambda: render(request, caller, "studies.html", form={}, studies=None))


@router.post("/studies")
async def search(request: Request) -> Response:
    form = await checked_form(request)

    def act(caller: ConsoleCaller) -> Response:
        flt = _filter(form)
        q = caller.services.query
        with q.one_query("STUDY") as one:
            found = q.find_studies(flt)
            one.results = len(found)
        found.sort(key=lambda s: (s.date, s.time), reverse=True)
        return render(request, caller, "studies.html", form=form, studies=found[:MAX_RESULTS], more=len(found) > MAX_RESULTS)
    return await run_action(request, form, "Searching studies", act)


@router.post("/studies/share")
async def share_form(request: Request) -> Response:
    """The share form of one study (the study as the search showed it; an invisible one is 'not found')."""
    form = await checked_form(request)

    def act(caller: ConsoleCaller) -> Response:
        uid = _study_uid(form)
        found = caller.services.query.find_studies(StudyFilter(study_uid=uid))
        if not found:
            raise NotFoundError("no such study")
        return render(request, caller, "share_form.html", study=found[0], kinds=RECIPIENT_KINDS, expiries=EXPIRY_CHOICES)
    return await run_action(request, form, "Sharing a study", act)


@router.post("/shares")
async def create_share(request: Request) -> Response:
    form = await checked_form(request)

    def act(caller: ConsoleCaller) -> Response:
        hours = form.get("expires_hours", "72")
        if hours not in dict(EXPIRY_CHOICES):
            raise ValueError("expiry: one of the listed choices")
        created = caller.services.shares.create(
            _study_uid(form), recipient=form.get("to", "")[:500], recipient_kind=form.get("recipient", "external"),
            expires_in=timedelta(hours=int(hours)), download=form.get("download") == "on", deidentify=form.get("deidentify") == "on")
        return render(request, caller, "share_done.html", created=created, link=link_url(request, created.token))
    return await run_action(request, form, "Sharing a study", act)


@router.get("/shares")
def shares(request: Request, caller: ConsoleCaller = Depends(console_caller)) -> Response:
    """The user's share links with their state and uses (each one decided as ``share-read``)."""
    return view(request, caller, lambda: render(request, caller, "shares.html", shares=caller.services.shares.list(include_inactive=True)))


@router.post("/shares/{share_id}/revoke")
async def revoke_share(request: Request, share_id: str) -> Response:
    form = await checked_form(request)

    def act(caller: ConsoleCaller) -> Response:
        caller.services.shares.revoke(share_id[:32], form.get("reason", "") or "withdrawn from the console")
        return RedirectResponse("/console/shares", status_code=303)
    return await run_action(request, form, "Withdrawing a share link", act)
