"""Changes to pynetdicom's internals, made once per process and only on the series they were written against.

The archive replaces a few of pynetdicom 3.0's internals for speed (ADR 0018, ADR 0020). Each replacement
depends on names inside that version, so each is installed through :class:`ProcessPatch`: once, under a
lock, only if pynetdicom is the 3.0 series and the names it replaces are the ones it expects; otherwise
nothing changes and a warning says what keeps pynetdicom's own behaviour.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pynetdicom

log = logging.getLogger(__name__)

SERIES = "3.0."


class ProcessPatch:
    """One replacement of pynetdicom internals for this process (``install`` is idempotent and thread-safe)."""

    def __init__(self, otherwise: str) -> None:
        self._otherwise = otherwise
        """What stays pynetdicom's own when the patch cannot be installed (for the warning)."""
        self._installed = False
        self._lock = threading.Lock()

    def install(self, fits: Callable[[], bool], apply: Callable[[], None]) -> bool:
        """``apply`` once if pynetdicom is the expected series and ``fits()``; True if installed (now or before)."""
        with self._lock:
            if self._installed:
                return True
            version = getattr(pynetdicom, "__version__", "")
            if not version.startswith(SERIES) or not fits():
                log.warning("pynetdicom %s is not the %sx series: %s", version or "(unknown)", SERIES, self._otherwise)
                return False
            apply()
            self._installed = True
            return True
