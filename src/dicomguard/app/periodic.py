"""A ``serve`` thread that runs one task every few seconds or minutes until ``serve`` stops."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)


class PeriodicTask(ABC):
    """Subclasses set ``NAME`` and ``POLL_S`` and implement :meth:`tick`; a failed tick is logged and retried next time.

    The first tick comes one poll after the start, so a start records nothing beyond its own start.
    """

    NAME = "periodic"
    POLL_S = 60.0

    def __init__(self, services: Any) -> None:
        self.services = services
        self._thread: threading.Thread | None = None

    def enabled(self) -> bool:
        return True

    @abstractmethod
    def tick(self, now: datetime) -> object:
        """One round of the task (``serve`` calls it every ``POLL_S`` seconds)."""

    def start(self, stop: threading.Event) -> None:
        if not self.enabled():
            return
        self._thread = threading.Thread(target=self._loop, args=(stop,), name=self.NAME, daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.POLL_S):
            try:
                self.tick(datetime.now(UTC))
            except Exception:  # keep serving; the next tick retries
                log.exception("%s failed", self.NAME)
