"""Real-time scoring inside ``serve``: every access in the audit trail, own and imported, scored as it is recorded.

The trail is the one stream every access goes through (DICOMweb, DIMSE, CLI, and ATNA
messages of other systems imported by the listener), so the engine reads it, not the
adapters: at start it learns from ``[detection] baseline_days`` of the trail, then it polls
for records newer than the last it scored (every ``poll_s``, 0.5 s by default), parses each
PS3.15 message into an access event, and hands it to the detector. Alerts go through
:class:`DetectionService` as the ``detector`` operator, so they are decided, recorded as
Security Alerts (and forwarded), and contained like any other action. The decrypted trail
and the context stay in this process's memory; nothing is written in clear.

With several ``serve`` nodes on one database only the holder of the ``detection`` lease
(:mod:`dicomguard.app.leases`) learns and scores, so each access is scored once and each
alert raised once. The holder saves the last ``seq`` it scored in the lease's cursor after
each batch; a standby that acquires the lease (the holder stopped, or died and its lease
expired) learns up to that cursor and scores from the record after it, so a failover
neither raises an alert again nor skips a record. Open alert windows are not carried
over: a misuse that goes on across a failover raises a new alert for its new events, as
after a restart. A holder that cannot renew stops scoring before its lease expires, and
drops its detector (the standby keeps no decrypted trail). Delivery is at-least-once in
one narrow case: a holder that dies after raising an alert and before saving the cursor
of that batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from dicomguard.app.detection.service import FEEDBACK
from dicomguard.app.leases import Lease
from dicomguard.app.services import Services
from dicomguard.audit.store import AuditStore
from dicomguard.index.db import as_utc, read_session
from dicomguard.index.models import AuditRecord

log = logging.getLogger(__name__)

LEASE_NAME = "detection"
RESUME_WITHIN = timedelta(days=1)
"""A saved cursor is resumed only if the first record after it is this recent: after a longer stop (detection off,
every node down) the records in between are learned, as on a first start, instead of scored and contained all at once."""
FENCE_MARGIN_S = 5.0
"""A batch ends this long (at most a renewal period) before the lease runs out: the last alert's transaction fits in it."""


class DetectionEngine:
    CONTEXT_CHECK_S = 5.0
    """How often the scorer checks whether the stored context changed (an HL7 v2 feed, an import, a false-positive
    disposition) and, if it did, reloads it under what it learned."""
    _context_version: Any = None
    _context_checked = 0.0

    def __init__(self, services: Services) -> None:
        self.services = services
        self.ctx = services.archive.ctx
        self.detector: Any = None
        self.last_seq = 0
        self.scored = 0
        self.alerts_raised = 0
        self._thread: threading.Thread | None = None
        self.lease: Lease | None = None

    def build(self, now: datetime | None = None, until: int | None = None) -> bool:
        """Load the context and learn the baseline; False when detection is off or no context was imported.

        The baseline ends at audit ``seq`` ``until`` (a lease's cursor: a previous holder scored up to there),
        or else at the last record committed now; scoring starts after it.
        """
        from dicomguard.detect.context import context_from_texts
        from dicomguard.detect.detector import Detector

        settings = self.ctx.settings.detection
        if not settings.enabled:
            return False
        self._context_version = self.services.detection.context_version()
        self._context_checked = time.monotonic()
        files = self.services.detection.context_files()
        if not any(k in files for k in ("users", "patients", "orders")):
            return False
        context = context_from_texts(files.get("users", ""), files.get("patients", ""), files.get("orders", ""),
                                     explained_pairs=[tuple(p) for p in files.get(FEEDBACK, [])])
        detector = Detector(context, alert_budget_per_1000_user_days=settings.budget_per_1000_user_days)
        since = (now or datetime.now(UTC)) - timedelta(days=settings.baseline_days)
        with read_session(self.ctx.engine) as s:
            learn_until = s.scalar(select(func.max(AuditRecord.seq))) or 0  # what is recorded later is scored, not learned
        if until is not None:
            learn_until = min(learn_until, until)
        store = AuditStore(self.ctx)
        baseline = []
        for entry in store.iter_all():
            if entry.seq > learn_until:
                break
            if entry.event_time >= since:
                event = self._event(entry)
                if event is not None:
                    baseline.append(event)
        detector.fit(baseline)
        self.detector, self.last_seq = detector, learn_until  # only a fitted detector is ever in use
        return True

    @staticmethod
    def _event(entry: Any) -> Any:
        from dicomguard.detect.events import parse_audit_line

        if entry.damaged or not entry.xml:
            return None
        try:
            return parse_audit_line(entry.xml.decode("utf-8", "replace"))
        except ValueError:
            return None

    def _reload_context(self) -> None:
        """Swap in the stored context if it changed since it was loaded (checked every ``CONTEXT_CHECK_S``): the
        explainer and the signatures are rebuilt from it, what was learned (colleagues, explained accesses,
        thresholds) is kept, so no re-learning of the trail. A context that does not load keeps the previous one."""
        from dicomguard.detect.context import context_from_texts

        if self.detector is None or time.monotonic() - self._context_checked < self.CONTEXT_CHECK_S:
            return
        self._context_checked = time.monotonic()
        version = self.services.detection.context_version()
        if version == self._context_version:
            return
        self._context_version = version
        files = self.services.detection.context_files()
        try:
            context = context_from_texts(files.get("users", ""), files.get("patients", ""), files.get("orders", ""),
                                         explained_pairs=[tuple(p) for p in files.get(FEEDBACK, [])])
        except ValueError:
            log.exception("access-anomaly detection: the changed context does not load; the previous one stays in use")
            return
        self.detector.replace_context(context)

    def poll(self, deadline: float | None = None) -> int:
        """Score the records committed since the last poll (until ``deadline``, monotonic); returns how many alerts were raised."""
        self._reload_context()
        raised = 0
        for entry in AuditStore(self.ctx).iter_all(after=self.last_seq):
            if deadline is not None and time.monotonic() >= deadline:
                break  # the lease must be renewed first (fencing); the rest is scored by the next poll
            self.last_seq = entry.seq
            event = self._event(entry)
            if event is None:
                continue
            self.scored += 1
            raised += self._raise(self.detector.observe(event))
        return raised

    def _raise(self, alerts: Iterable[Any]) -> int:
        count = 0
        for a in alerts:
            self.services.detection.raise_alert(a.user, a.kind, a.severity, a.start, a.end, tuple(a.patients), a.explanation,
                                                list(a.evidence))
            count += 1
        self.alerts_raised += count
        return count

    def start(self, stop: threading.Event) -> bool:
        """Learn and then score in a thread (a long trail must not delay serving); False when detection is off.

        Without any context yet (a site fed only by HL7 v2) the thread waits for the first import or message.
        """
        if not self.ctx.settings.detection.enabled:
            return False
        self._thread = threading.Thread(target=self._loop, args=(stop,), name="detection", daemon=True)
        self._thread.start()
        return True

    def _loop(self, stop: threading.Event) -> None:
        lease = self.lease = Lease(self.ctx.engine, LEASE_NAME)
        lease.try_hold()
        lease.keep()  # a standby keeps trying to acquire it
        try:
            self._hold_and_score(stop, lease)
        finally:
            lease.release()

    def _hold_and_score(self, stop: threading.Event, lease: Lease) -> None:
        poll_s = self.ctx.settings.detection.poll_s
        built_for = 0  # the lease acquisition the detector was built in
        learned_at = time.monotonic()
        while not stop.is_set():
            if not lease.held():
                self.detector = None  # another node scores (or this one cannot renew): keep no decrypted trail
                stop.wait(poll_s)
                continue
            if built_for != lease.acquisitions or self.detector is None:
                try:
                    if not self.build(until=self._resume_from(lease.cursor)):
                        stop.wait(self.CONTEXT_CHECK_S)  # no context yet: the first import or HL7 message starts it
                        continue
                except Exception:  # a broken context must not stop serve; the failure is in the log
                    log.exception("access-anomaly detection could not start")
                    return
                built_for = lease.acquisitions
                learned_at = time.monotonic()
                lease.save_cursor(self.last_seq)
                continue
            if time.monotonic() - learned_at >= self.ctx.settings.detection.relearn_every_h * 3600:
                learned_at = time.monotonic()
                self._relearn()
                continue
            started = time.monotonic()
            before = self.last_seq
            try:
                self.poll(deadline=started + lease.remaining() - min(FENCE_MARGIN_S, lease.renew_s))
            except Exception:
                log.exception("access-anomaly scoring failed; retrying")
            if self.last_seq != before:
                lease.save_cursor(self.last_seq)  # the successor resumes after it
            if time.monotonic() - started > 5 * poll_s:
                log.warning("access-anomaly scoring is slower than the audit trail grows")
            stop.wait(poll_s)

    def _relearn(self) -> None:
        """Learn again from the last ``baseline_days`` up to the last scored record (colleagues, consult pairs, models,
        threshold: behaviour drifts, and false-positive dispositions join the explanations), then go on scoring after
        it; open alert windows carry over, so a session in progress stays one alert."""
        previous, scored_until = self.detector, self.last_seq
        try:
            if self.build(until=scored_until):
                self.detector.carry_open_alerts(previous)
                return
        except Exception:
            log.exception("access-anomaly detection could not learn again; the previous models stay in use")
        self.detector, self.last_seq = previous, scored_until

    def _resume_from(self, cursor: str | None) -> int | None:
        """The seq a previous holder scored up to, if scoring should resume after it (None: learn all, as on a first start)."""
        if cursor is None or not cursor.isdigit():
            return None
        seq = int(cursor)
        with read_session(self.ctx.engine) as s:
            following = s.scalar(select(AuditRecord.recorded_at).where(AuditRecord.seq > seq).order_by(AuditRecord.seq).limit(1))
        if following is not None and datetime.now(UTC) - as_utc(following) > RESUME_WITHIN:
            log.warning("access-anomaly detection was stopped for more than %s: records since are learned, not scored", RESUME_WITHIN)
            return None
        return seq

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
