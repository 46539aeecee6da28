"""Real-time scoring inside ``serve``: every access in the audit trail, own and imported, scored as it is recorded.

The trail is the one stream every access goes through (DICOMweb, DIMSE, CLI, and ATNA
messages of other systems imported by the listener), so the engine reads it, not the
adapters: at start it learns from ``[detection] baseline_days`` of the trail, then it polls
for records newer than the last it scored (every ``poll_s``, 0.5 s by default), parses each
PS3.15 message into an access event, and hands it to the detector. Alerts go through
:class:`DetectionService` as the ``detector`` operator, so they are decided, recorded as
Security Alerts (and forwarded), and contained like any other action. The decrypted trail
and the context stay in this process's memory; nothing is written in clear.
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
from dicomguard.app.services import Services
from dicomguard.audit.store import AuditStore
from dicomguard.index.db import read_session
from dicomguard.index.models import AuditRecord

log = logging.getLogger(__name__)


class DetectionEngine:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.ctx = services.archive.ctx
        self.detector: Any = None
        self.last_seq = 0
        self.scored = 0
        self.alerts_raised = 0
        self._thread: threading.Thread | None = None

    def build(self, now: datetime | None = None) -> bool:
        """Load the context and learn the baseline; False when detection is off or no context was imported."""
        from dicomguard.detect.context import context_from_texts
        from dicomguard.detect.detector import Detector

        settings = self.ctx.settings.detection
        if not settings.enabled:
            return False
        files = self.services.detection.context_files()
        if not any(k in files for k in ("users", "patients", "orders")):
            return False
        context = context_from_texts(files.get("users", ""), files.get("patients", ""), files.get("orders", ""),
                                     explained_pairs=[tuple(p) for p in files.get(FEEDBACK, [])])
        self.detector = Detector(context, alert_budget_per_1000_user_days=settings.budget_per_1000_user_days)
        since = (now or datetime.now(UTC)) - timedelta(days=settings.baseline_days)
        with read_session(self.ctx.engine) as s:
            learn_until = s.scalar(select(func.max(AuditRecord.seq))) or 0  # what is recorded later is scored, not learned
        store = AuditStore(self.ctx)
        baseline = []
        for entry in store.iter_all():
            if entry.seq > learn_until:
                break
            self.last_seq = entry.seq
            if entry.event_time >= since:
                event = self._event(entry)
                if event is not None:
                    baseline.append(event)
        self.detector.fit(baseline)
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

    def poll(self) -> int:
        """Score the records committed since the last poll; returns how many alerts were raised."""
        raised = 0
        for entry in AuditStore(self.ctx).iter_all(after=self.last_seq):
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
        """Learn and then score in a thread (a long trail must not delay serving); False when detection is off."""
        settings = self.ctx.settings.detection
        if not settings.enabled or not any(k in self.services.detection.context_files() for k in ("users", "patients", "orders")):
            return False
        self._thread = threading.Thread(target=self._loop, args=(stop,), name="detection", daemon=True)
        self._thread.start()
        return True

    def _loop(self, stop: threading.Event) -> None:
        try:
            if not self.build():
                return
        except Exception:  # a broken context must not stop serve; the failure is in the log
            log.exception("access-anomaly detection could not start")
            return
        poll_s = self.ctx.settings.detection.poll_s
        while not stop.wait(poll_s):
            started = time.monotonic()
            try:
                self.poll()
            except Exception:
                log.exception("access-anomaly scoring failed; retrying")
            if time.monotonic() - started > 5 * poll_s:
                log.warning("access-anomaly scoring is slower than the audit trail grows")

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
