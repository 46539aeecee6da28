"""When each notification is due, and whether the timeline shows it was made.

* Supervisory authority: 72 hours after awareness (GDPR Art. 33(1)); a later
  notification must give the reasons for the delay.
* Individuals, GDPR: "without undue delay" when the breach is likely to result in
  a high risk (Art. 34(1)); the article sets no number of hours, so this deadline
  runs from awareness and is never reported overdue, only open or met. Art. 34(3)
  lists when it is not needed.
* Individuals, HIPAA: without unreasonable delay and at the latest 60 calendar
  days after discovery (45 CFR 164.404(b)).
* Media: same limit, only when more than 500 residents of one State or
  jurisdiction are affected (45 CFR 164.406); listed only when
  ``residents_by_state`` says so.
* Secretary of HHS: 500 or more individuals, within the 60 days of individual
  notice (45 CFR 164.408(b)); fewer, within 60 days after the end of the
  calendar year of discovery (164.408(c)). An unknown count takes the earlier
  rule.

A deadline is ``met`` only when a timeline entry records the notification with
the matching ``NOTIFIED_*`` action (NIST SP 800-61r3, CSF 2.0 RS.CO-02: the
notification of stakeholders is part of the record); otherwise it is ``open``
until ``due`` and ``overdue`` after. Every deadline is listed whatever law
applies to the organisation: the caller keeps the regimes that bind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

from dicomguard.incident._text import when
from dicomguard.incident.facts import (
    NOTIFIED_AUTHORITY,
    NOTIFIED_HHS,
    NOTIFIED_INDIVIDUALS,
    NOTIFIED_MEDIA,
    IncidentFacts,
    require_aware,
)

Status = Literal["met", "open", "overdue"]

GDPR_AUTHORITY: Final = "gdpr-authority"
GDPR_INDIVIDUALS: Final = "gdpr-individuals"
HIPAA_INDIVIDUALS: Final = "hipaa-individuals"
HIPAA_MEDIA: Final = "hipaa-media"
HHS: Final = "hhs"

AUTHORITY_PERIOD: Final = timedelta(hours=72)
"""GDPR Art. 33(1): notify the supervisory authority within 72 hours of awareness."""
HIPAA_PERIOD: Final = timedelta(days=60)
"""45 CFR 164.404(b), 164.406(b), 164.408(b): at the latest 60 calendar days after discovery."""
MEDIA_THRESHOLD: Final = 500
"""45 CFR 164.406(a): media notice when *more than* 500 residents of a State or jurisdiction are affected."""
HHS_THRESHOLD: Final = 500
"""45 CFR 164.408(b): immediate notice to HHS when 500 *or more* individuals are affected."""


@dataclass(frozen=True)
class Deadline:
    """One notification duty: its stable ``name``, when it is due, the rule, and where it stands at ``now``."""

    name: str
    due: datetime
    citation: str
    status: Status
    note: str


def deadlines(facts: IncidentFacts, now: datetime) -> list[Deadline]:
    """Every notification deadline of the incident at ``now`` (timezone-aware), in the order above."""
    require_aware("now", now)
    aware = facts.opened_at
    found = [
        _deadline(facts, now, GDPR_AUTHORITY, aware + AUTHORITY_PERIOD, "GDPR Art. 33(1)", NOTIFIED_AUTHORITY,
                  f"Notify the supervisory authority within 72 hours of awareness ({when(aware)}), unless the breach "
                  "is unlikely to result in a risk to the rights and freedoms of the persons concerned. A later "
                  "notification must state the reasons for the delay."),
        _gdpr_individuals(facts, now),
        _deadline(facts, now, HIPAA_INDIVIDUALS, aware + HIPAA_PERIOD, "45 CFR 164.404(b)", NOTIFIED_INDIVIDUALS,
                  f"Notify each affected individual without unreasonable delay; 60 calendar days after discovery "
                  f"({when(aware)}) is the outer limit, not a grace period. Only a law-enforcement request can "
                  "postpone it (45 CFR 164.412)."),
    ]
    media = _media_states(facts)
    if media:
        listed = ", ".join(f"{state}: {count}" for state, count in media)
        found.append(_deadline(facts, now, HIPAA_MEDIA, aware + HIPAA_PERIOD, "45 CFR 164.406", NOTIFIED_MEDIA,
                               f"More than {MEDIA_THRESHOLD} residents of a State or jurisdiction are affected "
                               f"({listed}): notify prominent media outlets serving it, with the content of the "
                               "individual notice, without unreasonable delay."))
    found.append(_hhs(facts, now))
    return found


def hhs_due(facts: IncidentFacts) -> tuple[datetime, str, str]:
    """When HHS must be notified, the rule that says so, and why that rule (45 CFR 164.408(b), (c))."""
    aware = facts.opened_at
    count = facts.individuals
    if count is None:
        return (aware + HIPAA_PERIOD, "45 CFR 164.408(b)",
                "The number of individuals is not known yet: the earlier deadline (500 or more) is assumed.")
    if count >= HHS_THRESHOLD:
        return (aware + HIPAA_PERIOD, "45 CFR 164.408(b)",
                (f"{count} individuals (500 or more): notify the Secretary at the same time as the individuals, "
                "at the latest 60 days after discovery."))
    year_end = aware.replace(year=aware.year + 1, month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    return (year_end + HIPAA_PERIOD, "45 CFR 164.408(c)",
            (f"{count} individuals (fewer than 500): log the breach and notify the Secretary within 60 days after the "
            f"end of calendar year {aware.year}, together with the other small breaches discovered that year."))


def _deadline(facts: IncidentFacts, now: datetime, name: str, due: datetime, citation: str, action: str,
              note: str) -> Deadline:
    done = facts.notified_at(action)
    if done is not None:
        late = f" That is {_late(done - due)} after the deadline." if done > due else ""
        return Deadline(name, due, citation, "met", f"{note} Done at {when(done)}.{late}")
    return Deadline(name, due, citation, "overdue" if now > due else "open", note)


def _gdpr_individuals(facts: IncidentFacts, now: datetime) -> Deadline:
    note = ("Art. 34(1) sets no number of hours: when the breach is likely to result in a high risk to the persons "
            "concerned, tell them without undue delay, counted from awareness. It is not needed when Art. 34(3) "
            "applies (the data was unintelligible to whoever obtained it, later measures removed the high risk, or a "
            "public communication replaces individual letters because they would take disproportionate effort). "
            "Encryption at rest does not help when the data was obtained through the archive itself.")
    done = facts.notified_at(NOTIFIED_INDIVIDUALS)
    if done is not None:
        return Deadline(GDPR_INDIVIDUALS, facts.opened_at, "GDPR Art. 34(1)", "met", f"{note} Done at {when(done)}.")
    return Deadline(GDPR_INDIVIDUALS, facts.opened_at, "GDPR Art. 34(1)", "open", note)


def _media_states(facts: IncidentFacts) -> list[tuple[str, int]]:
    residents = facts.residents_by_state or {}
    return sorted((state, count) for state, count in residents.items() if count > MEDIA_THRESHOLD)


def _hhs(facts: IncidentFacts, now: datetime) -> Deadline:
    due, citation, why = hhs_due(facts)
    return _deadline(facts, now, HHS, due, citation, NOTIFIED_HHS, why)


def _late(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} minutes"
    hours = minutes // 60
    return f"{hours // 24} days {hours % 24} hours" if hours >= 24 else f"{hours} hours"
