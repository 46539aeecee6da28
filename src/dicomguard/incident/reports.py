"""Breach-notification reports built from the facts of an incident.

Three kinds:

* ``gdpr-art33``: the notification to the supervisory authority (GDPR Art. 33(3),
  with the reasons for a delay past 72 hours, 33(1), and phased information, 33(4));
* ``hipaa-164.404``: the content of the notice to each individual
  (45 CFR 164.404(c)(1)(A)-(E), with the deadline of 164.404(b) and the methods of
  164.404(d));
* ``hhs``: what the HHS breach portal asks for (45 CFR 164.408).

Every element a provision requires is a field with a stable key, listed in
``REQUIRED_FIELDS``; what the archive cannot know is a field to complete
(``to_complete``), never a guess presented as a fact. A report holds counts and
categories, never a patient identifier: the breach scope has nothing else. It
is one of the outputs of the post-incident notification activity of NIST
SP 800-61r3 (CSF 2.0 RS.CO-02, RS.CO-03).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Final

from dicomguard.incident import gdpr, hipaa
from dicomguard.incident.errors import IncidentReportError
from dicomguard.incident.facts import IncidentFacts, require_aware
from dicomguard.incident.model import Field, Report
from dicomguard.incident.render import render_html, render_text

GDPR_ART33: Final = gdpr.KIND
HIPAA_164_404: Final = hipaa.NOTICE_KIND
HHS: Final = hipaa.HHS_KIND
KINDS: Final = (GDPR_ART33, HIPAA_164_404, HHS)

REQUIRED_FIELDS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType({
    GDPR_ART33: gdpr.REQUIRED,
    HIPAA_164_404: hipaa.NOTICE_REQUIRED,
    HHS: hipaa.HHS_REQUIRED,
})
"""The keys of the fields each kind must hold: one per element its provision requires."""

_BUILDERS: Final[Mapping[str, Callable[[IncidentFacts, datetime], Report]]] = {
    GDPR_ART33: gdpr.build,
    HIPAA_164_404: hipaa.build_notice,
    HHS: hipaa.build_hhs,
}

__all__ = ["GDPR_ART33", "HHS", "HIPAA_164_404", "KINDS", "REQUIRED_FIELDS", "Field", "Report", "build_report",
           "render_html", "render_text"]


def build_report(kind: str, facts: IncidentFacts, now: datetime) -> Report:
    """The report ``kind`` (one of ``KINDS``) for ``facts`` as they stand at ``now`` (timezone-aware)."""
    builder = _BUILDERS.get(kind)
    if builder is None:
        raise IncidentReportError(f"unknown report kind {kind!r}; known: {', '.join(KINDS)}")
    require_aware("now", now)
    report = builder(facts, now)
    keys = report.keys
    missing = [key for key in REQUIRED_FIELDS[kind] if key not in keys]
    if missing or len(set(keys)) != len(keys):
        raise AssertionError(f"report {kind} lacks {missing} or repeats a key")  # a bug here, not bad input
    return report
