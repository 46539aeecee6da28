"""The forwarder: sends queued objects, oldest first, to the upstream over mutual TLS.

Guarantees:

* an item leaves the queue only after the upstream answered the C-STORE with
  Success, a Warning or "duplicate SOP instance" (PS3.4 B.2.3), or after it
  was set aside as a dead letter (refused permanently ``dead_letter_after``
  times, or its queue file failed authentication) - never silently;
* while the upstream is unreachable, refuses associations or answers "out of
  resources", the head of the queue is retried with exponential back-off and
  jitter (initial delay doubling up to ``max_backoff_s``), so a recovering
  upstream is not hammered by every gateway at once;
* the order of delivery is the order of the sequence numbers (FIFO);
* the plaintext of an item exists only in memory (memfd) while it is sent.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from datetime import UTC, datetime, timedelta

from dicomguard.gateway.config import GatewayConfig
from dicomguard.gateway.queue import CorruptItem, DurableQueue, ItemMeta
from dicomguard.gateway.status import GatewayStats
from dicomguard.gateway.upstream import ContextRefused, Outcome, Pair, UpstreamLink, UpstreamUnavailable, classify

log = logging.getLogger(__name__)

_PLAN_WINDOW = 64  # items whose contexts are proposed together with the head's


def backoff_delay(failures: int, initial: float, cap: float, rng: random.Random) -> float:
    """Exponential back-off with "equal jitter": a delay in [d/2, d], d = min(cap, initial * 2**(failures-1))."""
    ceiling = min(cap, initial * 2 ** min(failures - 1, 32))
    return rng.uniform(ceiling / 2, ceiling)


class Forwarder(threading.Thread):
    """Drains a :class:`DurableQueue` into one :class:`UpstreamLink`."""

    def __init__(self, queue: DurableQueue, config: GatewayConfig, tls: ssl.SSLContext, stats: GatewayStats) -> None:
        super().__init__(name="dicomguard-gateway-forwarder", daemon=True)
        self._queue = queue
        self._config = config
        self._link = UpstreamLink(config, tls)
        self._stats = stats
        self._stopping = threading.Event()
        self._rng = random.Random()
        self._failures = 0
        self._attempts: dict[int, int] = {}

    def stop(self) -> None:
        """Finish the C-STORE in progress, release the association and end the thread."""
        self._stopping.set()
        self._queue.wake()

    def run(self) -> None:
        idle_since = time.monotonic()
        try:
            while not self._stopping.is_set():
                if not self._queue.wait(timeout=0.5):
                    self._failures = 0
                    self._stats.set(state="idle", consecutive_failures=0)
                    if self._link.is_open and time.monotonic() - idle_since > self._config.upstream_idle_release_s:
                        self._link.release()
                    continue
                self._step()
                idle_since = time.monotonic()
        except Exception:  # pragma: no cover - a bug; the process exits and a supervisor restarts it
            log.exception("forwarder stopped by an unexpected error")
            self._stats.set(state="failed", last_error="forwarder crashed (see log)")
            raise
        finally:
            self._link.release()

    def _step(self) -> None:
        head = self._queue.head(_PLAN_WINDOW)
        if not head:
            return
        seq = head[0]
        try:
            meta = self._queue.meta(seq)
        except CorruptItem:
            self._dead_letter(seq, "queue file failed authentication", None)
            return
        if not self._failures:
            self._stats.set(state="forwarding")
        try:
            if not self._link.has(_pair(meta)):
                self._link.ensure(_pair(meta), [_pair(m) for m in self._metas(head[1:])])
        except ContextRefused as exc:
            self._refused(seq, str(exc), None)
            return
        except UpstreamUnavailable as exc:
            self._retry_later(str(exc))
            return
        try:
            with self._queue.plaintext(seq) as path:
                status = self._link.send(path)
        except CorruptItem:
            self._dead_letter(seq, "queue file failed authentication", None)
            return
        outcome = classify(status)
        if outcome is Outcome.DELIVERED:
            self._queue.remove(seq)
            self._attempts.pop(seq, None)
            self._failures = 0
            self._stats.success()
            self._stats.set(state="forwarding", consecutive_failures=0)
        elif outcome is Outcome.TRANSIENT:
            self._retry_later("no response from upstream" if status is None else f"upstream answered 0x{status:04X} (retrying)")
        else:
            self._refused(seq, f"upstream refused the object with status 0x{status:04X}", status)

    def _metas(self, seqs: list[int]) -> list[ItemMeta]:
        out = []
        for s in seqs:
            try:
                out.append(self._queue.meta(s))
            except CorruptItem:
                continue  # dealt with when it reaches the head
        return out

    def _refused(self, seq: int, reason: str, status: int | None) -> None:
        attempts = self._attempts.get(seq, 0) + 1
        self._attempts[seq] = attempts
        if attempts >= self._config.dead_letter_after:
            self._dead_letter(seq, reason, status)
        else:
            self._retry_later(f"{reason} (attempt {attempts} of {self._config.dead_letter_after})")

    def _dead_letter(self, seq: int, reason: str, status: int | None) -> None:
        attempts = self._attempts.pop(seq, 0)
        self._queue.dead_letter(seq, reason, status, attempts)
        self._stats.incr("dead_lettered")
        self._stats.error(f"item {seq} set aside as a dead letter: {reason}")
        log.error("queue item %d set aside as a dead letter: %s", seq, reason)

    def _retry_later(self, reason: str) -> None:
        self._failures += 1
        delay = backoff_delay(self._failures, self._config.initial_backoff_s, self._config.max_backoff_s, self._rng)
        retry_at = datetime.now(UTC) + timedelta(seconds=delay)
        self._stats.error(reason)
        self._stats.set(state="backing-off", consecutive_failures=self._failures, next_retry_at=retry_at.isoformat(timespec="seconds"))
        log.warning("upstream: %s; retrying in %.1f s", reason, delay)
        self._link.release()
        self._stopping.wait(delay)


def _pair(meta: ItemMeta) -> Pair:
    return (meta.sop_class_uid, meta.transfer_syntax_uid)
