"""Notification deadlines: GDPR Art. 33(1) and 34(1); 45 CFR 164.404(b), 164.406, 164.408(b) and (c)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dicomguard.incident import (
    GDPR_AUTHORITY,
    GDPR_INDIVIDUALS,
    HHS_DEADLINE,
    HIPAA_INDIVIDUALS,
    HIPAA_MEDIA,
    NOTIFIED_AUTHORITY,
    NOTIFIED_HHS,
    NOTIFIED_INDIVIDUALS,
    NOTIFIED_MEDIA,
    Deadline,
    IncidentReportError,
    TimelineEntry,
    deadlines,
)
from tests.incident_reports.facts import AWARE, bare, full, notified, scope


def one(items: list[Deadline], name: str) -> Deadline:
    [found] = [item for item in items if item.name == name]
    return found


def test_the_notification_actions_are_stable_names() -> None:
    assert (NOTIFIED_AUTHORITY, NOTIFIED_INDIVIDUALS, NOTIFIED_MEDIA, NOTIFIED_HHS) == (
        "notified-authority", "notified-individuals", "notified-media", "notified-hhs")


def test_supervisory_authority_within_72_hours_of_awareness() -> None:
    due = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)
    assert one(deadlines(full(), AWARE), GDPR_AUTHORITY).due == due
    assert one(deadlines(full(), AWARE), GDPR_AUTHORITY).citation == "GDPR Art. 33(1)"
    assert one(deadlines(full(), due - timedelta(minutes=1)), GDPR_AUTHORITY).status == "open"
    assert one(deadlines(full(), due), GDPR_AUTHORITY).status == "open"
    assert one(deadlines(full(), due + timedelta(seconds=1)), GDPR_AUTHORITY).status == "overdue"


def test_met_only_when_the_timeline_records_the_notification() -> None:
    due = AWARE + timedelta(hours=72)
    said = full(timeline=(TimelineEntry(AWARE, "officer", "note", "notified-authority by phone, form to follow"),))
    assert one(deadlines(said, due + timedelta(hours=1)), GDPR_AUTHORITY).status == "overdue"
    done = notified(full(), NOTIFIED_AUTHORITY, AWARE + timedelta(hours=30))
    assert one(deadlines(done, AWARE + timedelta(hours=1)), GDPR_AUTHORITY).status == "met"
    assert one(deadlines(done, due + timedelta(days=10)), GDPR_AUTHORITY).status == "met"
    late = one(deadlines(notified(full(), NOTIFIED_AUTHORITY, due + timedelta(hours=5)), due + timedelta(days=1)),
               GDPR_AUTHORITY)
    assert late.status == "met" and "5 hours after the deadline" in late.note
    # Each notification is its own: informing the authority does not inform the individuals.
    assert one(deadlines(done, AWARE + timedelta(days=61)), HIPAA_INDIVIDUALS).status == "overdue"


def test_gdpr_individuals_without_undue_delay_has_no_fixed_hours() -> None:
    deadline = one(deadlines(full(), AWARE + timedelta(days=365)), GDPR_INDIVIDUALS)
    assert deadline.citation == "GDPR Art. 34(1)"
    assert deadline.status == "open"
    assert "without undue delay" in deadline.note and "no number of hours" in deadline.note
    assert "34(3)" in deadline.note
    done = notified(full(), NOTIFIED_INDIVIDUALS, AWARE + timedelta(days=3))
    assert one(deadlines(done, AWARE + timedelta(days=4)), GDPR_INDIVIDUALS).status == "met"


def test_hipaa_individuals_within_60_calendar_days_of_discovery() -> None:
    deadline = one(deadlines(full(), AWARE), HIPAA_INDIVIDUALS)
    assert deadline.due == datetime(2025, 4, 30, 9, 0, tzinfo=UTC)
    assert deadline.citation == "45 CFR 164.404(b)"
    assert one(deadlines(full(), deadline.due), HIPAA_INDIVIDUALS).status == "open"
    assert one(deadlines(full(), deadline.due + timedelta(seconds=1)), HIPAA_INDIVIDUALS).status == "overdue"
    done = notified(full(), NOTIFIED_INDIVIDUALS, AWARE + timedelta(days=20))
    assert one(deadlines(done, deadline.due + timedelta(days=1)), HIPAA_INDIVIDUALS).status == "met"


@pytest.mark.parametrize(("residents", "listed"), [
    (None, False),
    ({"TX": 500}, False),
    ({"TX": 400, "OK": 400}, False),  # more than 500 in all, but not in one State
    ({"TX": 501}, True),
    ({"TX": 12, "OK": 9000}, True),
])
def test_media_only_above_500_residents_of_one_state(residents: dict[str, int] | None, listed: bool) -> None:
    items = deadlines(full(residents_by_state=residents), AWARE)
    media = [item for item in items if item.name == HIPAA_MEDIA]
    assert bool(media) == listed
    if media:
        assert media[0].citation == "45 CFR 164.406"
        assert media[0].due == AWARE + timedelta(days=60)
        assert "TX" not in media[0].note or residents == {"TX": 501}
        done = notified(full(residents_by_state=residents), NOTIFIED_MEDIA, AWARE + timedelta(days=2))
        assert one(deadlines(done, AWARE + timedelta(days=90)), HIPAA_MEDIA).status == "met"


def test_hhs_500_or_more_within_60_days() -> None:
    facts = full(scope=scope(patients=500), residents_by_state=None)
    deadline = one(deadlines(facts, AWARE), HHS_DEADLINE)
    assert deadline.citation == "45 CFR 164.408(b)"
    assert deadline.due == AWARE + timedelta(days=60)


@pytest.mark.parametrize(("aware", "due"), [
    (datetime(2025, 3, 1, 9, 0, tzinfo=UTC), datetime(2026, 3, 2, 0, 0, tzinfo=UTC)),  # by the end of 1 March 2026
    (datetime(2023, 12, 31, 23, 0, tzinfo=UTC), datetime(2024, 3, 1, 0, 0, tzinfo=UTC)),  # leap year: end of 29 Feb
])
def test_hhs_fewer_than_500_within_60_days_after_the_end_of_the_calendar_year(aware: datetime, due: datetime) -> None:
    facts = full(opened_at=aware, scope=scope(patients=499), residents_by_state=None, occurred_from=None,
                 occurred_until=None)
    deadline = one(deadlines(facts, aware), HHS_DEADLINE)
    assert deadline.citation == "45 CFR 164.408(c)"
    assert deadline.due == due
    assert one(deadlines(facts, due + timedelta(seconds=1)), HHS_DEADLINE).status == "overdue"
    done = notified(facts, NOTIFIED_HHS, due - timedelta(days=1))
    assert one(deadlines(done, due + timedelta(days=1)), HHS_DEADLINE).status == "met"


def test_hhs_with_an_unknown_count_takes_the_earlier_rule() -> None:
    deadline = one(deadlines(bare(), AWARE), HHS_DEADLINE)
    assert deadline.citation == "45 CFR 164.408(b)"
    assert deadline.due == AWARE + timedelta(days=60)


def test_residents_counted_beyond_the_scope_raise_the_count() -> None:
    facts = full(scope=scope(patients=300), residents_by_state={"TX": 450, "OK": 100})
    assert one(deadlines(facts, AWARE), HHS_DEADLINE).citation == "45 CFR 164.408(b)"


def test_naive_now_is_refused() -> None:
    with pytest.raises(IncidentReportError):
        deadlines(full(), datetime(2025, 3, 2, 9, 0))
