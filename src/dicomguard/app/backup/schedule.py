"""Backups and drills on the schedule of ``[backup]`` inside ``serve`` (ADR 0007).

A thread wakes every minute (sooner for short test periods), backs up each target
whose last success is older than ``every_hours`` (a failed target is retried after
an hour at most), drills each whose last drill is older than ``drill_every_days``,
and raises one ``BackupFailed`` Security Alert per overdue target and period. Every
run goes through :class:`BackupService` as the ``serve`` operator, so it is decided
and recorded like a run from the command line.

With several ``serve`` nodes on one database, only the holder of the
``backup-scheduler`` lease (:mod:`dicomguard.app.leases`) runs the schedule;
the overdue targets already alerted are kept in the lease's cursor, so a node
taking over does not alert them again.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime, timedelta

from dicomguard.app.backup.status import compute_status
from dicomguard.app.leases import Lease
from dicomguard.app.services import Services

log = logging.getLogger(__name__)

RETRY_AFTER = timedelta(hours=1)


class BackupScheduler:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.ctx = services.archive.ctx
        self._alerted: set[str] = set()
        self._thread: threading.Thread | None = None
        self.lease: Lease | None = None

    @property
    def enabled(self) -> bool:
        b = self.ctx.settings.backup
        return bool(b.target) and (b.every_hours > 0 or b.drill_every_days > 0)

    def interval_s(self) -> float:
        b = self.ctx.settings.backup
        periods = [p for p in (b.every_hours * 3600, b.drill_every_days * 86400) if p > 0]
        return max(0.5, min([60.0, *(p / 4 for p in periods)]))

    def start(self, stop: threading.Event) -> None:
        if not self.enabled:
            return
        self.lease = Lease(self.ctx.engine, "backup-scheduler")
        self._thread = threading.Thread(target=self._loop, args=(stop,), name="backup-scheduler", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self, stop: threading.Event) -> None:
        lease = self.lease
        assert lease is not None
        lease.try_hold()
        lease.keep()
        seen = 0
        try:
            while not stop.wait(self.interval_s()):
                if not lease.held():
                    continue  # another node runs the schedule (or this one cannot renew: it must not act)
                if lease.acquisitions != seen:  # (re)acquired: what the previous holder alerted is in the cursor
                    seen = lease.acquisitions
                    try:
                        self._alerted = set(json.loads(lease.cursor)) if lease.cursor else set()
                    except (ValueError, TypeError):
                        self._alerted = set()  # unreadable: alert again rather than stay silent
                alerted = set(self._alerted)
                try:
                    self.tick(datetime.now(UTC))
                except Exception:  # the scheduler must outlive one bad run; the run itself recorded its failure
                    log.exception("scheduled backup step failed")
                if self._alerted != alerted:
                    lease.save_cursor(json.dumps(sorted(self._alerted)))
        finally:
            lease.release()  # after the last run ended: a standby takes over without waiting for expiry

    def tick(self, now: datetime) -> None:
        b = self.ctx.settings.backup
        status = compute_status(self.ctx, now)
        for t in status.targets:
            last_try = max((x for x in (t.last_backup, t.last_failure) if x is not None), default=None)
            due = b.every_hours > 0 and (t.last_backup is None or now - t.last_backup >= timedelta(hours=b.every_hours))
            retry_wait = min(RETRY_AFTER, timedelta(hours=b.every_hours)) if b.every_hours > 0 else RETRY_AFTER
            if due and (last_try is None or t.last_failure is None or t.last_failure < (t.last_backup or t.last_failure)
                        or now - t.last_failure >= retry_wait):
                self.services.backups.run(t.name)
            drill_due = b.drill_every_days > 0 and t.last_backup is not None and (
                t.last_drill is None or now - t.last_drill >= timedelta(days=b.drill_every_days))
            if drill_due:
                self.services.backups.drill(t.name)
        # one alert per overdue target and kind until it recovers
        overdue_now = {f"{t.name}:{k}" for t in compute_status(self.ctx).targets
                       for k, on in (("backup", t.backup_overdue), ("drill", t.drill_overdue)) if on}
        self._alerted &= overdue_now
        self._alerted |= set(self.services.backups.alert_overdue(self._alerted))
