"""Audit: search the trail, a patient's access history ("who saw my images"), CSV export. Every read is itself recorded.

Searches are POSTed forms, never query strings: a Patient ID or a name in a URL
would land in browser history, proxies and logs (no PHI in URLs). Each search
goes through :meth:`AuditService.search`, which decides ``audit-read`` and
records an Audit Log Used event (PS3.15 A.5.3.2) with the filters before reading.
Results come newest first, at most ``PAGE_LIMIT`` per search; the CSV export
holds up to ``EXPORT_LIMIT`` records, streamed a page at a time (never a file on
disk, never the whole export in memory: the browser's download shows its
progress). A study is matched inside the sealed records, so a search by study
opens at most ``SCAN_LIMIT`` records and says so when it stopped there.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from dicomguard.audit.codes import EVENT_NAMES
from dicomguard.audit.store import AuditEntry, AuditFilter, csv_lines, event_code, parse_when
from dicomguard.web.console.actions import run_action, view
from dicomguard.web.console.pages import render
from dicomguard.web.console.session import ConsoleCaller, checked_form, console_caller

router = APIRouter()
PAGE_LIMIT = 200
EXPORT_LIMIT = 100_000
SCAN_LIMIT = 50_000
OUTCOMES = {"": None, "success": 0, "minor-failure": 4, "serious-failure": 8, "major-failure": 12}
FIELDS = ("user", "patient", "study", "event", "outcome", "failures", "since", "until")


def _time(form: dict[str, str], key: str) -> datetime | None:
    value = form.get(key, "").strip()
    if not value:
        return None
    try:
        return parse_when(value)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None


def audit_filter(form: dict[str, str], limit: int) -> AuditFilter:
    """The search form as an :class:`AuditFilter` (``ValueError`` naming the field that is not valid)."""
    event = form.get("event", "").strip() or None
    if event:
        event_code(event)
    outcome = form.get("outcome", "")
    if outcome not in OUTCOMES:
        raise ValueError("outcome: not one of the listed outcomes")
    return AuditFilter(user=form.get("user", "").strip()[:256] or None, patient=form.get("patient", "").strip()[:64] or None,
                       study=form.get("study", "").strip()[:64] or None, event=event, outcome=OUTCOMES[outcome],
                       failures_only=form.get("failures") == "on", since=_time(form, "since"), until=_time(form, "until"),
                       limit=limit, newest_first=True)


def _page(request: Request, caller: ConsoleCaller, form: dict[str, str], entries: list[AuditEntry] | None, **more: Any) -> Response:
    rows = [e.summary() for e in entries] if entries is not None else None
    return render(request, caller, "audit.html", form={k: form.get(k, "") for k in FIELDS}, rows=rows, limit=PAGE_LIMIT,
                  events=sorted(EVENT_NAMES), outcomes=tuple(OUTCOMES), **more)


@router.get("/audit")
def audit_page(request: Request, caller: ConsoleCaller = Depends(console_caller)) -> Response:
    """The empty search form (reads nothing, but only for whom the policies let read the trail)."""
    def show() -> Response:
        caller.services.audit.activity()  # decides audit-read, reads counts only
        return _page(request, caller, {}, None)
    return view(request, caller, show)


@router.post("/audit")
async def search(request: Request) -> Response:
    form = await checked_form(request)

    def act(caller: ConsoleCaller) -> Response:
        audit = caller.services.audit
        if form.get("format") == "csv":
            stream = audit.stream(audit_filter(form, EXPORT_LIMIT), "console export", scan_limit=SCAN_LIMIT)
            return StreamingResponse(csv_lines(stream), media_type="text/csv; charset=utf-8",
                                     headers={"Content-Disposition": 'attachment; filename="audit.csv"', "Cache-Control": "no-store"})
        stream = audit.stream(audit_filter(form, PAGE_LIMIT), "console search", scan_limit=SCAN_LIMIT)
        entries = list(stream)
        return _page(request, caller, form, entries, truncated=SCAN_LIMIT if stream.truncated else None)
    return await run_action(request, form, "Searching the audit trail", act)


@router.get("/audit/patient")
def patient_page(request: Request, caller: ConsoleCaller = Depends(console_caller)) -> Response:
    def show() -> Response:
        caller.services.audit.activity()
        return render(request, caller, "patient_history.html", patient="", people=None)
    return view(request, caller, show)


@router.post("/audit/patient")
async def patient_history(request: Request) -> Response:
    """Who accessed one patient's images, and when: one line per user or device (PS3.15 events naming the patient)."""
    form = await checked_form(request)

    def act(caller: ConsoleCaller) -> Response:
        patient = form.get("patient", "").strip()[:64]
        if not patient:
            raise ValueError("enter a Patient ID")
        people: dict[str, dict[str, Any]] = defaultdict(lambda: {"count": 0, "events": set(), "refused": 0})
        records = 0
        for e in caller.services.audit.stream(AuditFilter(patient=patient, limit=EXPORT_LIMIT, newest_first=True), "patient history"):
            records += 1
            d = e.summary()
            p = people[d["user"] or "(unknown)"]
            p["count"] += 1
            p["events"].add(d["event"])
            p["refused"] += d["outcome"] != 0
            p["first"] = d["time"]
            p.setdefault("last", d["time"])
            if d["address"]:
                p.setdefault("addresses", set()).add(d["address"])
        listed = [{"user": u, **v, "events": ", ".join(sorted(v["events"])), "addresses": ", ".join(sorted(v.get("addresses", ())))}
                  for u, v in sorted(people.items(), key=lambda kv: kv[1]["last"], reverse=True)]
        return render(request, caller, "patient_history.html", patient=patient, people=listed, records=records)
    return await run_action(request, form, "Reading a patient's access history", act)
