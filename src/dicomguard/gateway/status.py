"""Gateway status: counters kept by the running gateway, written to ``status.json``.

``dicomguard gateway status`` reads that file and the queue folder; it needs
neither the passphrase nor the database, so monitoring can run with the
least privilege (read access to the queue folder). Nothing here is PHI:
counts, times, addresses of the gateway and upstream, DIMSE status codes and
error classes. Objects are never named, not even by UID.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dicomguard.gateway.queue import age_seconds, queue_in_use, scan
from dicomguard.storage.filesystem import write_private_file

STATUS_FILE = "status.json"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class GatewayStats:
    """Thread-safe counters and states of one running gateway."""

    COUNTERS = ("received", "refused_associations", "refused_stores", "delivered", "dead_lettered", "upstream_failures")

    def __init__(self, **fixed: Any) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, Any] = {
            "pid": os.getpid(),
            "started_at": _now(),
            "state": "starting",
            "last_success_at": None,
            "last_error": None,
            "last_error_at": None,
            "next_retry_at": None,
            **{c: 0 for c in self.COUNTERS},
            **fixed,
        }

    def incr(self, counter: str, n: int = 1) -> None:
        with self._lock:
            self._data[counter] += n

    def set(self, **values: Any) -> None:
        with self._lock:
            self._data.update(values)

    def success(self) -> None:
        with self._lock:
            self._data["delivered"] += 1
            self._data["last_success_at"] = _now()
            self._data["next_retry_at"] = None

    def error(self, message: str) -> None:
        """Record an upstream problem. ``message`` must be free of PHI (codes and error classes only)."""
        with self._lock:
            self._data["upstream_failures"] += 1
            self._data["last_error"] = message[:300]
            self._data["last_error_at"] = _now()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._data, updated_at=_now())


def write_status(folder: Path, stats: GatewayStats) -> None:
    """Atomically replace ``status.json`` (temp, fsync, rename)."""
    write_private_file(folder / STATUS_FILE, json.dumps(stats.snapshot(), indent=2).encode("utf-8"))


def read_status(folder: Path) -> dict[str, Any]:
    """What ``gateway status`` shows: the queue as found on disk, plus the running gateway's report."""
    q = scan(folder)
    report: dict[str, Any] = {}
    try:
        report = json.loads((folder / STATUS_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        pass
    running = queue_in_use(folder)
    age = age_seconds(q.oldest_mtime)
    return {
        "running": running,
        "queue_folder": str(folder),
        "queue_length": q.length,
        "queue_bytes": q.bytes,
        "oldest_item_age_s": None if age is None else round(age, 1),
        "dead_letters": q.dead_letters,
        "state": report.get("state") if running else ("stopped" if report else "never started"),
        "last_success_at": report.get("last_success_at"),
        "last_error": report.get("last_error"),
        "last_error_at": report.get("last_error_at"),
        "next_retry_at": report.get("next_retry_at") if running else None,
        "gateway": report,
    }
