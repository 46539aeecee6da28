"""Incident facts for the tests: a full incident with distinctive counts, and one just opened (nothing known yet)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from dicomguard.incident import IncidentFacts, ScopeSummary, TimelineEntry

AWARE = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
"""When the organisation became aware of the breach (opened_at)."""


def scope(*, patients: int = 4242, categories: Mapping[str, int] | None = None) -> ScopeSummary:
    """A breach scope with counts that appear nowhere else (so a rendering can only have them from here)."""
    return ScopeSummary(
        subject="user:snooper",
        since=AWARE - timedelta(days=31),
        until=AWARE - timedelta(hours=1),
        patients=patients,
        studies=5151,
        instances=616161,
        by_action={
            "query": {"patients": patients, "studies": 5151, "events": 7070},
            "retrieve": {"patients": 313, "studies": 414, "events": 8080},
            "export": {"patients": 17, "studies": 19, "events": 23},
        },
        categories=dict(categories) if categories is not None else {"identifiers": patients, "images": 313,
                                                                     "reports": 29},
        shares=3,
        addresses=("192.0.2.44", "198.51.100.7"),
        unchanged_objects=616161,
        integrity_problems=0,
        verified_at=AWARE + timedelta(hours=5),
    )


def full(**changes: object) -> IncidentFacts:
    """An incident with everything known: scope, dates, contact, measures, residents by State."""
    facts = IncidentFacts(
        id=31337,
        title="Unexplained bulk retrieval by a radiology account",
        severity="high",
        status="open",
        opened_at=AWARE,
        occurred_from=AWARE - timedelta(days=12),
        occurred_until=AWARE - timedelta(days=2),
        closed_at=None,
        organisation="Example Imaging Centre",
        contact="Data Protection Officer, dpo@example.org, Example Street 1, Example Town",
        timeline=(
            TimelineEntry(AWARE, "officer", "open", "alert from access-anomaly detection"),
            TimelineEntry(AWARE + timedelta(minutes=20), "officer", "contain-user", "account user:snooper suspended"),
        ),
        scope=scope(),
        measures=("Suspended the account involved", "Revoked the share links it created"),
        residents_by_state={"TX": 4000, "OK": 242},
    )
    return replace(facts, **changes)  # type: ignore[arg-type]


def bare(**changes: object) -> IncidentFacts:
    """An incident just opened: no scope, no dates of the breach, no contact, no measure."""
    facts = IncidentFacts(
        id=8, title="Suspected disclosure", severity="medium", status="open", opened_at=AWARE, occurred_from=None,
        occurred_until=None, closed_at=None, organisation="Example Imaging Centre", contact=None, timeline=(),
        scope=None, measures=(),
    )
    return replace(facts, **changes)  # type: ignore[arg-type]


def notified(facts: IncidentFacts, action: str, at: datetime) -> IncidentFacts:
    """``facts`` with a timeline entry recording the notification ``action`` at ``at``."""
    timeline: Sequence[TimelineEntry] = (*facts.timeline, TimelineEntry(at, "officer", action, "sent"))
    return replace(facts, timeline=timeline)
