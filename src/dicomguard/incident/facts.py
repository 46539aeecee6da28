"""The facts of an incident, as incident response hands them to the notification reports.

Frozen values, filled by the caller from the incident record and its breach
scope; this package reads them and never looks anything up. They hold counts,
categories, names of accounts and devices and free text written by the
response team, never a patient identifier: the breach scope is counts only.

Every datetime must be timezone-aware: the deadlines compare them (GDPR
Art. 33(1) counts 72 hours from awareness; 45 CFR 164.404(b) counts 60 calendar
days from discovery), and a naive time would silently shift them.

Free text (``title``, timeline ``detail``, ``measures``) is copied into the
reports as written: ``measures`` also go into the letters to patients, so write
them for an outside reader. The timeline doubles as the record of the breach
that GDPR Art. 33(5) asks the controller to keep, and of the notifications
made (NIST SP 800-61r3, CSF 2.0 RS.CO-02): a notification counts as done only
when an entry with one of the ``NOTIFIED_*`` actions records it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from dicomguard.incident.errors import IncidentReportError

NOTIFIED_AUTHORITY: Final = "notified-authority"
"""Timeline action: the supervisory authority was notified (GDPR Art. 33(1))."""
NOTIFIED_INDIVIDUALS: Final = "notified-individuals"
"""Timeline action: the affected individuals were notified (GDPR Art. 34(1); 45 CFR 164.404)."""
NOTIFIED_MEDIA: Final = "notified-media"
"""Timeline action: prominent media outlets were notified (45 CFR 164.406)."""
NOTIFIED_HHS: Final = "notified-hhs"
"""Timeline action: the Secretary of HHS was notified through the breach portal (45 CFR 164.408)."""
NOTIFICATION_ACTIONS: Final = (NOTIFIED_AUTHORITY, NOTIFIED_INDIVIDUALS, NOTIFIED_MEDIA, NOTIFIED_HHS)

CLOSED: Final = "closed"
"""The ``status`` of an incident whose investigation is over."""


def require_aware(name: str, value: datetime | None) -> None:
    """Refuse a naive datetime: deadlines computed from it would depend on the host's clock zone."""
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise IncidentReportError(f"{name} must be a timezone-aware datetime")


def _require_count(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise IncidentReportError(f"{name} must be a non-negative integer")


@dataclass(frozen=True)
class TimelineEntry:
    """One step of the response: who did what, when (GDPR Art. 33(5) documentation; NIST SP 800-61r3)."""

    at: datetime
    actor: str
    action: str
    """A step name such as ``contain-user`` or ``note``; a ``NOTIFIED_*`` constant records a notification."""
    detail: str

    def __post_init__(self) -> None:
        require_aware("timeline entry time", self.at)


@dataclass(frozen=True)
class ScopeSummary:
    """What the audit trail shows was exposed by one account or device over a period: counts only.

    ``by_action`` maps an action ("query", "retrieve", "export", "share") to
    ``{"patients": n, "studies": n, "events": n}``; ``categories`` maps a data
    category ("identifiers", "images", "reports") to the number of patients whose
    data of that category was exposed. ``addresses`` are the network addresses the
    data was reached from. The integrity fields are ``None`` until the stored
    objects have been verified.
    """

    subject: str
    since: datetime
    until: datetime
    patients: int
    studies: int
    instances: int
    by_action: Mapping[str, Mapping[str, int]]
    categories: Mapping[str, int]
    shares: int
    addresses: Sequence[str]
    unchanged_objects: int | None
    integrity_problems: int | None
    verified_at: datetime | None

    def __post_init__(self) -> None:
        require_aware("scope since", self.since)
        require_aware("scope until", self.until)
        require_aware("scope verified_at", self.verified_at)
        if self.until < self.since:
            raise IncidentReportError("scope until is before since")
        for name in ("patients", "studies", "instances", "shares", "unchanged_objects", "integrity_problems"):
            _require_count(f"scope {name}", getattr(self, name))
        for action, counts in self.by_action.items():
            for key, count in counts.items():
                _require_count(f"scope by_action {action} {key}", count)
        for category, count in self.categories.items():
            _require_count(f"scope category {category}", count)
        if isinstance(self.addresses, str):
            raise IncidentReportError("scope addresses must be a sequence of addresses, not one string")


@dataclass(frozen=True)
class IncidentFacts:
    """Everything the notifications need to know about one incident.

    ``opened_at`` is the awareness time: when the controller became aware of the
    breach (GDPR Art. 33(1)), which HIPAA calls discovery (45 CFR 164.404(a)(2)).
    ``occurred_from``/``occurred_until`` bound the breach itself, when known.
    ``contact`` is the DPO or privacy officer contact (GDPR Art. 33(3)(b);
    45 CFR 164.404(c)(1)(E)); ``None`` leaves it for a person to write.
    ``measures`` are the containment and mitigation steps taken.
    ``residents_by_state`` (State or jurisdiction -> number of affected residents)
    decides media notice (45 CFR 164.406); ``None`` when not known.
    """

    id: int
    title: str
    severity: str
    status: str
    opened_at: datetime
    occurred_from: datetime | None
    occurred_until: datetime | None
    closed_at: datetime | None
    organisation: str
    contact: str | None
    timeline: Sequence[TimelineEntry]
    scope: ScopeSummary | None
    measures: Sequence[str]
    residents_by_state: Mapping[str, int] | None = None

    def __post_init__(self) -> None:
        for name in ("opened_at", "occurred_from", "occurred_until", "closed_at"):
            require_aware(name, getattr(self, name))
        start, end = self.occurred_from, self.occurred_until
        if start is not None and end is not None and end < start:
            raise IncidentReportError("occurred_until is before occurred_from")
        if isinstance(self.measures, str):
            raise IncidentReportError("measures must be a sequence of steps, not one string")
        for state, count in (self.residents_by_state or {}).items():
            _require_count(f"residents of {state}", count)

    def notified_at(self, action: str) -> datetime | None:
        """When the timeline first records ``action`` (a ``NOTIFIED_*`` constant), or ``None``."""
        times = [entry.at for entry in self.timeline if entry.action == action]
        return min(times) if times else None

    @property
    def individuals(self) -> int | None:
        """How many individuals are affected, as far as known: the scope's patients, or more residents if counted."""
        counts = []
        if self.scope is not None:
            counts.append(self.scope.patients)
        if self.residents_by_state is not None:
            counts.append(sum(self.residents_by_state.values()))
        return max(counts) if counts else None
