"""The overview's numbers: hourly counts from the audit table (both databases) and the chart geometry drawn from them."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from dicomguard.audit.activity import BASELINE_DAYS, last_day
from dicomguard.audit.codes import EventIds
from dicomguard.index.db import write_session
from dicomguard.index.models import AuditRecord
from dicomguard.web.console.charts import HEIGHT, bar_chart

NOW = datetime(2026, 12, 3, 10, 30, tzinfo=UTC)


def _rows(archive, times: list[tuple[datetime, str, int]]) -> None:  # type: ignore[no-untyped-def]
    """Bare audit rows (counts only read the clear columns), numbered far above the archive's own."""
    with write_session(archive.ctx.engine) as s:
        for n, (at, event, outcome) in enumerate(times):
            s.add(AuditRecord(seq=10_000_000 + n, id=secrets.token_hex(16), recorded_at=at, event_time=at, event_id=event,
                              event_type=None, action="R", outcome=outcome, origin="local", user_token=None, dedup_token=None,
                              body=b"counts-only"))


def test_hourly_accesses_refusals_and_the_usual_pattern(archive) -> None:  # type: ignore[no-untyped-def]
    query, moved, login = EventIds.QUERY.code, EventIds.INSTANCES_TRANSFERRED.code, EventIds.USER_AUTHENTICATION.code
    rows = []
    for day in range(1, BASELINE_DAYS + 1):  # the previous week: 2 accesses at 09:xx every day -> usual 2.0 at 09:00
        rows += [(NOW.replace(hour=9, minute=5) - timedelta(days=day), query, 0)] * 2
    rows += [(NOW.replace(hour=9, minute=10), query, 0), (NOW.replace(hour=9, minute=50), moved, 0)]  # today 09:xx: 2 accesses
    rows += [(NOW.replace(minute=1), moved, 0)] * 5 + [(NOW.replace(minute=2), query, 4)]  # this hour: 6 accesses, one refused
    rows += [(NOW.replace(minute=3), login, 4)] * 3  # failed logins: refused, not accesses
    rows += [(NOW - timedelta(days=BASELINE_DAYS + 2), query, 0)]  # before the baseline week: counted nowhere
    _rows(archive, rows)
    hours = last_day(archive.ctx.engine, NOW)
    assert len(hours) == 24 and hours[-1].start == NOW.replace(minute=0) and hours[0].start == NOW.replace(minute=0) - timedelta(hours=23)
    current, nine = hours[-1], next(h for h in hours if h.start.hour == 9)
    assert (current.accesses, current.refused) == (6, 4)
    assert (nine.accesses, nine.refused, nine.usual) == (2, 0, 2.0)
    assert sum(h.accesses for h in hours) == 8 and all(h.usual == 0 for h in hours if h.start.hour != 9)


def test_bars_scale_to_the_largest_value_and_the_usual_line_too() -> None:
    chart = bar_chart("t", "d", ["a", "b", "c"], [0.0, 5.0, 10.0], usual=[20.0, 0.0, 0.0], label_every=2)
    assert chart.max_value == 20.0
    heights = [b["h"] for b in chart.bars]
    assert heights[0] == 0 and heights[2] == 2 * heights[1] and heights[2] < HEIGHT
    assert [lbl["text"] for lbl in chart.labels] == ["a", "c"]
    first_point_y = float(chart.line.split()[0].split(",")[1])
    assert first_point_y < min(b["y"] for b in chart.bars)  # the usual 20 is drawn above the tallest bar
    empty = bar_chart("t", "d", ["a"], [0.0])
    assert empty.max_value == 1.0 and empty.bars[0]["h"] == 0 and empty.line == ""
