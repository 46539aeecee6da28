"""Breach notifications from the facts of an incident: reports, deadlines and letters to patients.

Incident response (NIST SP 800-61r3) opens an incident, contains an account or
device and computes the breach scope from the audit trail; this package turns
those facts (:class:`IncidentFacts`, counts and categories only) into what the
law asks the organisation to send:

* :func:`build_report` - the notification to the supervisory authority
  (``gdpr-art33``: GDPR Art. 33(1), 33(3), 33(4), 33(5)), the content of the
  notice to individuals (``hipaa-164.404``: 45 CFR 164.404(b)-(d), 164.406) and
  the report to the Secretary of HHS (``hhs``: 45 CFR 164.408); rendered by
  :meth:`Report.to_json`, :func:`render_html` and :func:`render_text`, with every
  field the archive cannot know marked to complete;
* :func:`deadlines` - when each notification is due (72 hours, 60 days, the end
  of the calendar year) and whether the timeline records it as made;
* :func:`patient_letter` - the plain-language letter to one person (GDPR
  Art. 34(2); 45 CFR 164.404(c)).

Use::

    facts = IncidentFacts(id=7, title=..., opened_at=aware_at, scope=ScopeSummary(...), ...)
    report = build_report("gdpr-art33", facts, datetime.now(UTC))
    report.to_complete                    # the fields a person must still write
    html = render_html(report)
    for deadline in deadlines(facts, datetime.now(UTC)): ...
    letter = patient_letter(facts, patient_name=name)

This package is a control: it imports nothing from dicomguard but
:mod:`dicomguard.errors`; finding the facts, access decisions and audit of who
drafted what are the caller's.
"""

from __future__ import annotations

from dicomguard.incident.deadlines import (
    GDPR_AUTHORITY,
    GDPR_INDIVIDUALS,
    HIPAA_INDIVIDUALS,
    HIPAA_MEDIA,
    Deadline,
    deadlines,
)
from dicomguard.incident.deadlines import HHS as HHS_DEADLINE
from dicomguard.incident.errors import IncidentReportError
from dicomguard.incident.facts import (
    NOTIFICATION_ACTIONS,
    NOTIFIED_AUTHORITY,
    NOTIFIED_HHS,
    NOTIFIED_INDIVIDUALS,
    NOTIFIED_MEDIA,
    IncidentFacts,
    ScopeSummary,
    TimelineEntry,
)
from dicomguard.incident.letters import LANGUAGES, patient_letter
from dicomguard.incident.reports import (
    GDPR_ART33,
    HHS,
    HIPAA_164_404,
    KINDS,
    REQUIRED_FIELDS,
    Field,
    Report,
    build_report,
    render_html,
    render_text,
)

__all__ = [
    "GDPR_ART33", "GDPR_AUTHORITY", "GDPR_INDIVIDUALS", "HHS", "HHS_DEADLINE", "HIPAA_164_404", "HIPAA_INDIVIDUALS",
    "HIPAA_MEDIA", "KINDS", "LANGUAGES", "NOTIFICATION_ACTIONS", "NOTIFIED_AUTHORITY", "NOTIFIED_HHS",
    "NOTIFIED_INDIVIDUALS", "NOTIFIED_MEDIA", "REQUIRED_FIELDS", "Deadline", "Field", "IncidentFacts",
    "IncidentReportError", "Report", "ScopeSummary", "TimelineEntry", "build_report", "deadlines", "patient_letter",
    "render_html", "render_text",
]
