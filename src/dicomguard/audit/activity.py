"""Hourly activity of the audit trail, counted in the database: accesses, refusals, and the usual pattern.

What a security console draws (NIST SP 800-92 4.3, trend review): per hour of the
last day, how many accesses to images were recorded (PS3.15 A.5.3 Query,
Instances Accessed, Instances Transferred, Export, Begin Transferring), how many
requests of any kind were refused (EventOutcomeIndicator not 0), and the usual
count for that hour of the day (the mean over the previous week). Counts only:
no record is decrypted and nothing identifies a person, so building it reads no
PHI. Per process, the week's pattern is counted once an hour and the completed
hours of the last day at most every five minutes, so a page costs one grouped
count over the current hour.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, case, func, select

from dicomguard.audit.codes import EventIds
from dicomguard.index.db import is_sqlite, read_session
from dicomguard.index.models import AuditRecord

ACCESS_EVENTS = (EventIds.QUERY.code, EventIds.INSTANCES_ACCESSED.code, EventIds.INSTANCES_TRANSFERRED.code,
                 EventIds.EXPORT.code, EventIds.BEGIN_TRANSFERRING.code)
BASELINE_DAYS = 7


@dataclass(frozen=True)
class HourCounts:
    start: datetime
    accesses: int
    refused: int
    usual: float
    """Mean accesses in this hour of the day over the previous week."""


def _hour_key(engine: Engine) -> Any:
    if is_sqlite(engine):
        return func.strftime("%Y-%m-%dT%H", AuditRecord.event_time)
    return func.to_char(func.timezone("UTC", AuditRecord.event_time), 'YYYY-MM-DD"T"HH24')


def _grouped(engine: Engine, since: datetime, until: datetime) -> dict[str, tuple[int, int]]:
    """hour key -> (accesses, refused) between ``since`` and ``until``, in one grouped count."""
    key = _hour_key(engine).label("hour")
    stmt = (
        select(key,
               func.sum(case((AuditRecord.event_id.in_(ACCESS_EVENTS), 1), else_=0)),
               func.sum(case((AuditRecord.outcome != 0, 1), else_=0)))
        .where(AuditRecord.event_time >= since, AuditRecord.event_time < until)
        .group_by(key)
    )
    with read_session(engine) as s:
        return {row[0]: (int(row[1] or 0), int(row[2] or 0)) for row in s.execute(stmt)}


@dataclass
class _Cached:
    at: float
    counts: dict[str, tuple[int, int]]


_cache: weakref.WeakKeyDictionary[Engine, dict[str, _Cached]] = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()
COMPLETED_TTL_S = 300.0
"""Completed hours are counted again at most this often (a late import can still add to them); the current hour, always."""


def _cached(engine: Engine, key: str, ttl_s: float, count: Callable[[], dict[str, tuple[int, int]]]) -> dict[str, tuple[int, int]]:
    now = time.monotonic()
    with _cache_lock:
        entries = _cache.setdefault(engine, {})
        hit = entries.get(key)
    if hit is not None and now - hit.at <= ttl_s:
        return hit.counts
    counts = count()
    with _cache_lock:
        entries = _cache.setdefault(engine, {})
        if len(entries) > 16:
            entries.clear()
        entries[key] = _Cached(now, counts)
    return counts


def _usual(engine: Engine, day_start: datetime) -> dict[int, float]:
    """hour of day -> mean accesses over the ``BASELINE_DAYS`` before ``day_start`` (counted once per hour)."""
    counts = _cached(engine, "usual " + day_start.strftime("%Y-%m-%dT%H"), 3600.0,
                     lambda: _grouped(engine, day_start - timedelta(days=BASELINE_DAYS), day_start))
    per_hour: dict[int, float] = {}
    for hour_key, (accesses, _) in counts.items():
        hour = int(hour_key[-2:])
        per_hour[hour] = per_hour.get(hour, 0.0) + accesses / BASELINE_DAYS
    return per_hour


def last_day(engine: Engine, now: datetime | None = None) -> list[HourCounts]:
    """The 24 hours ending with the current one, oldest first."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    current = now.replace(minute=0, second=0, microsecond=0)
    start = current - timedelta(hours=23)
    live = dict(_cached(engine, "done " + start.strftime("%Y-%m-%dT%H"), COMPLETED_TTL_S, lambda: _grouped(engine, start, current)))
    live.update(_grouped(engine, current, current + timedelta(hours=1)))
    usual = _usual(engine, start)
    hours = []
    for n in range(24):
        t = start + timedelta(hours=n)
        accesses, refused = live.get(t.strftime("%Y-%m-%dT%H"), (0, 0))
        hours.append(HourCounts(t, accesses, refused, round(usual.get(t.hour, 0.0), 1)))
    return hours
