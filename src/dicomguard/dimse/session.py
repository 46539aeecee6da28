"""Per-association state: which verified device is on the other end, and its rate budget.

Every DIMSE operation passes :meth:`Sessions.gate`: the device's certificate
must still be valid (revocation takes effect for running associations at
their next operation) and under its rate limit; then the operation runs as
that device's services.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from dicomguard.app.archive import Archive
from dicomguard.app.services import Services
from dicomguard.pki.devices import DeviceInfo, DeviceRegistry


class GateRefused(Exception):
    """The operation may not proceed (revoked, rate limited, no verified device)."""


@dataclass
class _Bucket:
    """Token bucket: ``rate`` operations per minute, bursts up to the same number."""

    rate: float
    tokens: float
    stamp: float = field(default_factory=time.monotonic)

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate / 60.0)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


_RECHECK_S = 1.0


@dataclass
class Session:
    device: DeviceInfo
    address: str
    services: Services
    checked_at: float = 0.0


class Sessions:
    def __init__(self, archive: Archive, registry: DeviceRegistry) -> None:
        self.archive = archive
        self.registry = registry
        self._by_assoc: dict[int, Session] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def open(self, assoc: object, device: DeviceInfo, address: str) -> Session:
        session = Session(device, address, self.archive.services(device.principal(address)))
        with self._lock:
            self._by_assoc[id(assoc)] = session
        return session

    def close(self, assoc: object) -> None:
        with self._lock:
            self._by_assoc.pop(id(assoc), None)

    def get(self, assoc: object) -> Session | None:
        with self._lock:
            return self._by_assoc.get(id(assoc))

    def gate(self, assoc: object) -> Session:
        session = self.get(assoc)
        if session is None:
            raise GateRefused("no verified device on this association")
        now = time.monotonic()
        if now - session.checked_at > _RECHECK_S:
            # Re-read revocation at most once a second per association; the sweep in
            # the server aborts associations of revoked devices within seconds anyway.
            if not self.registry.still_valid(session.device.ae_title, session.device.cert_sha256):
                raise GateRefused(f"device {session.device.ae_title} was revoked")
            session.checked_at = now
        rate = float(self.archive.settings.network.rate_limit_per_minute)
        with self._lock:
            bucket = self._buckets.setdefault(session.device.ae_title, _Bucket(rate, rate))
            ok = bucket.take()
        if not ok:
            raise GateRefused(f"device {session.device.ae_title} exceeded {int(rate)} operations per minute")
        return session

    def revoked_associations(self) -> list[int]:
        with self._lock:
            items = list(self._by_assoc.items())
        return [key for key, s in items if not self.registry.still_valid(s.device.ae_title, s.device.cert_sha256)]
