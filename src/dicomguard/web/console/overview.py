"""The overview: what needs attention now, each item linking to its page.

Open alerts by severity, the posture findings that are gaps (integrity
verification, audit forwarding lag, certificates, log review, backups ...), the
backup targets and the 3-2-1-1-0 rule, and three charts: accesses per hour
against the usual pattern, refused requests per hour, alerts per week. The page
needs ``audit-read``; each other part is shown only if the policies permit its
own action (asked first, so a missing right is not recorded as a refusal on
every visit), and read through its service.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from dicomguard.core.access import Action, Resource
from dicomguard.web.console.actions import view
from dicomguard.web.console.charts import bar_chart
from dicomguard.web.console.pages import home, render
from dicomguard.web.console.session import ConsoleCaller, console_caller

router = APIRouter()
SEVERITIES = ("critical", "high", "medium", "low")
FINDING_PAGES = {"alerts-reviewed": "/console/alerts", "certificates": "/console/devices", "backup-drill": "/console/backups",
                 "risks": "/console/risks", "incidents": "/console/incidents", "mfa-enrolled": "/console/people",
                 "audit-forwarding": "/console/audit", "log-review": "/console/posture"}
WEEKS = 8
STATUS_FINDINGS = ("integrity-verified", "audit-forwarding", "certificates", "log-review", "alerts-reviewed", "backup-drill")
"""Shown whatever their state: what an officer checks every morning (the other findings appear when they are gaps)."""


@router.get("/")
def landing(caller: ConsoleCaller = Depends(console_caller)) -> Response:
    return RedirectResponse(home(caller), status_code=303)


def _alert_parts(caller: ConsoleCaller, now: datetime) -> dict[str, Any]:
    alerts = caller.services.detection.alerts(status=None)
    open_ = Counter(a.severity for a in alerts if a.status != "resolved")
    week0 = (now - timedelta(days=now.weekday())).date()
    weeks = [week0 - timedelta(weeks=n) for n in range(WEEKS - 1, -1, -1)]
    per_week = Counter((a.start.date() - timedelta(days=a.start.weekday())) for a in alerts)
    return {"open": [{"severity": s, "count": open_.get(s, 0)} for s in SEVERITIES if s in open_ or s in ("high", "medium")],
            "open_total": sum(open_.values()),
            "chart": bar_chart("Alerts per week", f"Access-anomaly alerts raised per week, the last {WEEKS} weeks",
                               [w.strftime("%d %b") for w in weeks], [float(per_week.get(w, 0)) for w in weeks], css="alert")}


@router.get("/overview")
def overview(request: Request, caller: ConsoleCaller = Depends(console_caller)) -> Response:
    def show() -> Response:
        services = caller.services
        hours = services.audit.activity()  # decides audit-read: the page is the officer's
        allowed = services.operations.permitted([(Action.ALERTS_READ, Resource.archive()), (Action.POSTURE_READ, Resource.archive()),
                                                 (Action.BACKUP_READ, Resource.archive())])
        now = datetime.now(UTC)
        labels = [h.start.strftime("%H:00") for h in hours]
        values: dict[str, Any] = {
            "accesses": bar_chart("Accesses per hour", "Accesses to images per hour over the last 24 hours (UTC), bars, "
                                  "against the usual count for that hour, line", labels, [float(h.accesses) for h in hours],
                                  [h.usual for h in hours], label_every=3),
            "refused": bar_chart("Refused requests per hour", "Requests refused per hour over the last 24 hours (UTC)", labels,
                                 [float(h.refused) for h in hours], css="refused", label_every=3),
            "accesses_total": sum(h.accesses for h in hours), "refused_total": sum(h.refused for h in hours),
        }
        if Action.ALERTS_READ in allowed:
            values["alerts"] = _alert_parts(caller, now)
        if Action.POSTURE_READ in allowed:
            posture = services.posture.assess()
            by_id = {f.id: f for f in posture.findings}
            values["posture"] = {
                "score": round(100 * posture.score), "gaps": len(posture.gaps),
                "status": [{"title": by_id[i].title, "ok": by_id[i].satisfied, "evidence": by_id[i].evidence,
                            "href": FINDING_PAGES.get(i, "/console/posture")} for i in STATUS_FINDINGS if i in by_id],
                "other_gaps": [{"title": f.title, "evidence": f.evidence, "href": FINDING_PAGES.get(f.id, "/console/posture")}
                               for f in posture.gaps if f.id not in STATUS_FINDINGS]}
        if Action.BACKUP_READ in allowed:
            values["backups"] = services.backups.status()
        return render(request, caller, "overview.html", **values)

    return view(request, caller, show)
