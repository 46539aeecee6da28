"""A ``serve`` thread that runs one task every few seconds or minutes until ``serve`` stops."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from typing import Any

from dicomguard.app.leases import Lease

log = logging.getLogger(__name__)


class PeriodicTask(ABC):
    """Subclasses set ``NAME`` and ``POLL_S`` and implement :meth:`tick`; a failed tick is logged and retried next time.

    The first tick comes one poll after the start, so a start records nothing beyond its own start. A task that
    must run once per archive (``ONCE_PER_ARCHIVE``, the default) ticks only in the process holding its lease
    (:mod:`dicomguard.app.leases`): with several ``serve`` nodes on one database, one node runs it and another
    takes over within ``LEASE_S + RENEW_S`` when that node dies. Per-node work sets ``ONCE_PER_ARCHIVE = False``.
    """

    NAME = "periodic"
    POLL_S = 60.0
    ONCE_PER_ARCHIVE = True

    def __init__(self, services: Any) -> None:
        self.services = services
        self.lease: Lease | None = None
        self._thread: threading.Thread | None = None

    def enabled(self) -> bool:
        return True

    @abstractmethod
    def tick(self, now: datetime) -> object:
        """One round of the task (``serve`` calls it every ``POLL_S`` seconds)."""

    def start(self, stop: threading.Event) -> None:
        if not self.enabled():
            return
        if self.ONCE_PER_ARCHIVE:
            self.lease = Lease(self.services.archive.ctx.engine, self.NAME)
        self._thread = threading.Thread(target=self._loop, args=(stop,), name=self.NAME, daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self, stop: threading.Event) -> None:
        lease = self.lease
        if lease is not None:
            lease.try_hold()
            lease.keep()
        try:
            while not stop.wait(self.POLL_S):
                if lease is not None and not lease.held():
                    continue  # another node runs the task (or this one cannot renew: it must not act)
                try:
                    self.tick(datetime.now(UTC))
                except Exception:  # keep serving; the next tick retries
                    log.exception("%s failed", self.NAME)
        finally:
            if lease is not None:
                lease.release()  # after the last tick ended: a standby takes over without waiting for expiry
