"""Offline scoring of audit trails from other systems: learn on a baseline period, score what follows.

The result is defined on the trail sorted by time (ties in file order): the
events before ``baseline_until`` train a :class:`~dicomguard.detect.detector.Detector`,
the rest are observed in order. Computing it that way means learning and scoring
only start after the last line is parsed, with one core idle while they run.

Trails are nearly in time order (a syslog collector writes in arrival order, a
little off the sources' clocks), so learning and scoring run *while* the worker
processes still parse (:class:`InOrderScoring`): an event is scored once no line
still to come may be earlier, which holds while every line is at most
:data:`REORDER_WINDOW` earlier than the latest line before it (the watermark
technique of stream processing: Akidau et al., "The Dataflow Model", PVLDB 8(12),
2015). A line further back ends the shortcut and the sorted-trail computation
runs instead: the same alerts either way, only the time differs. Tests compare
both paths on in-order, jittered and shuffled trails.
"""

from __future__ import annotations

import gc
import heapq
import os
import time as _time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from dicomguard.detect.context import Context, load_context_dir
from dicomguard.detect.detector import Alert, Detector
from dicomguard.detect.events import AccessEvent, _start_reading

REORDER_WINDOW: Final = timedelta(minutes=15)
"""How much earlier than the latest line before it a line may be and still be scored while the trail is read."""


class InOrderScoring:
    """Learning and scoring fed one event at a time in file order, giving the result of the sorted trail.

    Invariant (the watermark ``latest - REORDER_WINDOW`` never decreases): every event taken is at or after the
    watermark of its arrival, so an event earlier than the current watermark has nothing left to wait for. Such
    events are scored in (time, arrival) order, which is the stable sort's order; learning starts once the
    watermark reaches ``baseline_until``, when no baseline event can still come. :meth:`take` answers ``False``
    for an event that breaks the invariant: the caller must then compute the result from the sorted trail.
    """

    def __init__(self, context: Context, baseline_until: datetime, alert_budget_per_1000_user_days: float) -> None:
        self.detector = Detector(context, alert_budget_per_1000_user_days)
        self.baseline_events = 0
        self.fit_seconds = 0.0
        self._until = baseline_until
        self._baseline: list[tuple[datetime, int, AccessEvent]] = []
        self._held: list[tuple[datetime, int, AccessEvent]] = []  # heap of events waiting for the watermark
        self._latest: datetime | None = None
        self._arrived = 0  # arrival number: the tie-break of equal times (file order)
        self._fitted = False

    def take(self, e: AccessEvent) -> bool:
        """Take the next event of the trail; ``False`` (and nothing taken) if it came too late for this shortcut."""
        t = e.time
        latest = self._latest
        if latest is None or t > latest:
            latest = self._latest = t
        elif t < latest - REORDER_WINDOW:
            return False
        self._arrived += 1
        if self._fitted or t >= self._until:
            heapq.heappush(self._held, (t, self._arrived, e))
        else:
            self._baseline.append((t, self._arrived, e))
        mark = latest - REORDER_WINDOW
        if not self._fitted:
            if mark < self._until:
                return True
            self._fit()
        held, observe = self._held, self.detector.observe
        while held and held[0][0] < mark:
            observe(heapq.heappop(held)[2])
        return True

    def finish(self) -> Detector:
        """The trail is over: learn if not done yet, score every event still held, close the open alerts."""
        if not self._fitted:
            self._fit()
        held, observe = self._held, self.detector.observe
        while held:
            observe(heapq.heappop(held)[2])
        self.detector.flush()
        return self.detector

    def _fit(self) -> None:
        started = _time.perf_counter()
        self._baseline.sort()  # (time, arrival): arrival numbers are unique, events are never compared
        self.baseline_events = len(self._baseline)
        self.detector.fit([e for _, _, e in self._baseline])
        self._baseline = []
        self._fitted = True
        self.fit_seconds = _time.perf_counter() - started


@contextmanager
def _without_cycle_collection() -> Iterator[None]:
    """Python's cycle collector paused (and restored after): scoring allocates a few tuples per event, none in a
    reference cycle, and each collection pass re-examines every object already allocated (a million-event trail
    kept in memory). Acyclic garbage is still freed at once by reference counting. Worker processes forked meanwhile
    inherit the pause."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def detect_offline(audit_files: Iterable[str | Path] | str | Path, context_dir: str | Path,
                   baseline_until: datetime, *, alert_budget_per_1000_user_days: float = 1.0,
                   workers: int | None = None) -> tuple[list[Alert], dict[str, object]]:
    """Train on the events before ``baseline_until``, score those after; (alerts, statistics).

    The trail is parsed by ``workers`` processes (default: one per core); learning and scoring run
    in this process, because explanations link users (an access explained by a colleague's), while
    the workers parse when the trail is nearly in time order (see :class:`InOrderScoring`).
    ``statistics["in_order"]`` says whether that shortcut held to the end.
    """
    with _without_cycle_collection():
        return _detect_offline(audit_files, context_dir, baseline_until, alert_budget_per_1000_user_days, workers)


def _detect_offline(audit_files: Iterable[str | Path] | str | Path, context_dir: str | Path, baseline_until: datetime,
                    alert_budget_per_1000_user_days: float, workers: int | None) -> tuple[list[Alert], dict[str, object]]:
    started = _time.perf_counter()
    workers = workers or os.cpu_count() or 1
    # The worker processes parse while this one loads the context. A context that does not load is still the error
    # raised (before any of the trail's), as when the context was loaded first.
    reading = _start_reading(audit_files, workers)
    try:
        context = load_context_dir(context_dir)
        streamed: InOrderScoring | None = InOrderScoring(context, baseline_until, alert_budget_per_1000_user_days)
        events: list[AccessEvent] = []  # every event, for the sorted-trail computation if the shortcut ends
        for e in reading:
            events.append(e)
            if streamed is not None:
                try:
                    if not streamed.take(e):
                        streamed = None
                except Exception:
                    # Learning or scoring failed: the sorted-trail computation below fails the same way, after
                    # the trail has been read entirely, so that an error in the trail is the one reported first.
                    streamed = None
    finally:
        reading.close()
    parsed = _time.perf_counter()
    if streamed is not None:
        detector = streamed.finish()
        baseline_events, fit_seconds = streamed.baseline_events, streamed.fit_seconds
    else:
        events.sort(key=lambda e: e.time)  # stable: events of the same time stay in file order
        baseline_events = sum(1 for e in events if e.time < baseline_until)
        detector = Detector(context, alert_budget_per_1000_user_days)
        fit_started = _time.perf_counter()
        detector.fit(events[:baseline_events])
        fit_seconds = _time.perf_counter() - fit_started
        for e in events[baseline_events:]:
            detector.observe(e)
        detector.flush()
    done = _time.perf_counter()
    seconds = done - started
    return detector.alerts, {
        "events": len(events), "baseline_events": baseline_events, "scored_events": len(events) - baseline_events,
        "explained_share": detector.explained_share(), "seconds": seconds,
        "events_per_second": len(events) / seconds if seconds else 0.0,
        # With the shortcut, learning (and most scoring) overlaps the parsing: the phases do not add up.
        "parse_seconds": parsed - started, "fit_seconds": fit_seconds, "after_parse_seconds": done - parsed,
        "in_order": streamed is not None,
        "threshold": detector.threshold, "alerts": len(detector.alerts), "calibration": detector.calibration,
        "workers": workers,
    }
