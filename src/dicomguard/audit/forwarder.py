"""Forwarding the audit trail to syslog collectors over mutual TLS (RFC 5424 / RFC 5425; IHE ATNA), losing nothing.

The spool is the audit table: each collector has a cursor (``audit_cursors.
forwarded_up_to``) and receives the records after it, in ``seq`` order, in
batches. Delivery is **at-least-once**, with duplicates confined to one narrow
case:

* a batch counts as delivered only when the collector's TCP stack has
  acknowledged every byte of it (Linux ``SIOCOUTQ`` = 0: nothing written is
  still unacknowledged); only then does the cursor move, in the database;
* before each batch (and while idle) the connection is checked for a close
  from the collector, so a collector that was stopped is reconnected to, not
  written into;
* a connection that fails before its batch is acknowledged is closed and the
  batch is resent after reconnection: exponential back-off with jitter
  (0.5 s doubling to ``max_backoff_s``), forever. A collector that is down,
  slow or unreachable delays records but never loses them.

Duplicates are possible only when a connection breaks after the collector
received part of a batch but before all of it was acknowledged, or if this
process dies between the acknowledgement and the cursor update; each message
carries ``[meta sequenceId]`` so a collector can drop them. Exactly-once is not
achievable over RFC 5425 (it has no application acknowledgement), and a
collector that crashes after TCP acknowledged a message but before storing it
loses that message; collectors that need more should use RELP (future work).

One process forwards to a collector at a time: a lease on the cursor row
(renewed every few seconds) keeps several ``serve`` nodes from sending twice.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import select
import socket
import ssl
import struct
import termios
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, update
from sqlalchemy import select as sql_select

from dicomguard.audit.syslog import format_message, frame
from dicomguard.audit.trail import RECORDS_WRITTEN, AuditKeys, utc
from dicomguard.config import AuditSpoolSettings, SyslogCollector
from dicomguard.core.context import ArchiveContext
from dicomguard.crypto.aead import DecryptionError
from dicomguard.errors import ConfigurationError
from dicomguard.index.db import insert_ignore, read_session, write_session
from dicomguard.index.models import AuditCursor, AuditRecord
from dicomguard.pki.tls import client_context

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.25
LEASE_S = 30.0
LEASE_RENEW_S = 10.0
CONNECT_TIMEOUT_S = 10.0
ACCEPTANCE_WAIT_S = 0.5
ERROR_NOTE_INTERVAL_S = 30.0


def collector_name(c: SyslogCollector) -> str:
    return f"{c.host}:{c.port}"


def client_tls(ctx: ArchiveContext, c: SyslogCollector) -> ssl.SSLContext:
    """Mutual TLS to the collector: its CA (default: the archive CA), our client certificate (default: the server's)."""
    from dicomguard.pki.store import load_tls_material

    if bool(c.cert) != bool(c.key):
        raise ConfigurationError(f"[[audit.syslog]] {collector_name(c)}: cert and key go together")
    material = None if (c.ca and c.cert) else load_tls_material(ctx.home, ctx.settings, ctx.keyring)
    try:
        ca = Path(c.ca).read_bytes() if c.ca else material.client_ca_pem  # type: ignore[union-attr]
        if c.cert:
            cert, key = Path(c.cert).read_bytes(), Path(c.key).read_bytes()
        else:
            cert, key = material.server_chain_pem, material.server_key_pem  # type: ignore[union-attr]
    except OSError as exc:
        raise ConfigurationError(f"[[audit.syslog]] {collector_name(c)}: cannot read {exc.filename}: {exc.strerror}") from None
    return client_context(ca, cert, key, check_hostname=True)


def _unacknowledged(sock: socket.socket) -> int:
    """Bytes written to the socket that the peer's TCP has not acknowledged yet (Linux SIOCOUTQ)."""
    try:
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0])
    except OSError:
        return 0  # not supported here: sendall's return is the best we know


class SyslogForwarder:
    """A thread that sends one collector every record after its cursor, in order, reconnecting forever."""

    def __init__(self, ctx: ArchiveContext, collector: SyslogCollector, spool: AuditSpoolSettings | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.ctx = ctx
        self.collector = collector
        self.name = collector_name(collector)
        self.spool = spool or ctx.settings.audit.spool
        self.tls = tls or client_tls(ctx, collector)
        self.keys = AuditKeys.for_archive(ctx)
        self.hostname = socket.gethostname()
        self.procid = str(os.getpid())
        self.owner = f"{self.hostname}:{os.getpid()}:{id(self):x}"[:128]
        self.cursor = 0
        self.sent = 0
        self.connected = False
        self.last_error: str | None = None
        self._sock: ssl.SSLSocket | None = None
        self._stop = threading.Event()
        self._draining = threading.Event()
        self._thread: threading.Thread | None = None
        self._lease_until = 0.0
        self._last_error_note = 0.0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"audit-syslog-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, drain_s: float = 5.0) -> None:
        """Send what is pending for up to ``drain_s`` seconds, then stop (the rest waits in the spool)."""
        self._draining.set()
        RECORDS_WRITTEN.notify()
        if self._thread is not None:
            self._thread.join(timeout=drain_s)
        self._stop.set()
        RECORDS_WRITTEN.notify()
        if self._thread is not None:
            self._thread.join(timeout=self.spool.send_timeout_s + 5)
        self._close(graceful=True)
        self._release()

    # -- the loop --------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        seen = RECORDS_WRITTEN.generation
        while not self._stop.is_set():
            try:
                if not self._hold_lease():
                    self._stop.wait(LEASE_RENEW_S)
                    continue
                if self._sock is None:
                    self._connect()
                    failures = 0
                batch = self._next_batch()
                if not batch:
                    if self._draining.is_set():
                        return
                    if self._peer_closed():
                        self._close()  # the collector went away while we were idle: reconnect before sending
                        continue
                    seen = RECORDS_WRITTEN.wait(seen, IDLE_POLL_S)
                    continue
                if self._peer_closed():
                    raise ConnectionError("collector closed the connection")
                self._send(b"".join(data for _, data in batch))
                if self._peer_closed():
                    # acknowledged by TCP but the collector closed: it may have dropped the batch, so it is resent
                    raise ConnectionError("collector closed the connection during a batch")
                self._advance(batch[-1][0], len(batch))
            except (OSError, ssl.SSLError, ConnectionError, TimeoutError) as exc:
                self._close()
                failures += 1
                self._note_error(_describe(exc))
                if self._draining.is_set():
                    return
                self._stop.wait(self._backoff(failures))
            except Exception:  # noqa: BLE001 - a forwarder must outlive surprises (database restarts, ...)
                log.exception("audit forwarder %s: unexpected error", self.name)
                self._close()
                failures += 1
                self._stop.wait(self._backoff(failures))

    def _backoff(self, failures: int) -> float:
        return min(self.spool.max_backoff_s, 0.5 * 2 ** min(failures - 1, 20)) * random.uniform(0.5, 1.0)

    # -- the collector connection ----------------------------------------------------------

    def _connect(self) -> None:
        c = self.collector
        raw = socket.create_connection((c.host, c.port), timeout=CONNECT_TIMEOUT_S)
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock = self.tls.wrap_socket(raw, server_hostname=c.host)
        except BaseException:
            raw.close()
            raise
        self._sock = sock
        try:
            self._await_acceptance(sock)
        except BaseException:
            self._close()
            raise
        sock.settimeout(self.spool.send_timeout_s)
        self.connected = True
        log.info("audit forwarder connected to %s", self.name)

    @staticmethod
    def _await_acceptance(sock: ssl.SSLSocket) -> None:
        """With TLS 1.3 the server checks our certificate after our handshake is done: give it time to refuse.

        A refusal arrives as an alert or a close within a round trip; silence means
        accepted (rsyslog never writes to its clients). Without this, a batch sent
        into a connection the collector is about to drop would be acknowledged by
        its TCP stack and lost.
        """
        sock.settimeout(ACCEPTANCE_WAIT_S)
        try:
            if sock.recv(1) == b"":
                raise ConnectionError("collector closed the connection after the handshake (client certificate refused?)")
        except TimeoutError:
            return
        except ssl.SSLError as exc:
            raise ConnectionError(f"collector refused the connection (TLS: {exc.reason or exc})") from None

    def _close(self, graceful: bool = False) -> None:
        sock, self._sock = self._sock, None
        self.connected = False
        if sock is not None:
            try:
                if graceful:
                    sock.settimeout(1.0)
                    sock.unwrap()  # TLS close_notify: the collector sees an orderly end, not a truncation
            except (OSError, ssl.SSLError, ValueError):
                pass
            try:
                sock.close()
            except OSError:
                pass

    def _peer_closed(self) -> bool:
        """True when the collector closed (FIN, close_notify or reset); rsyslog never writes to us otherwise."""
        sock = self._sock
        if sock is None:
            return True
        try:
            readable = sock.pending() > 0 or bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True
        if not readable:
            return False
        try:
            sock.setblocking(False)
            return sock.recv(4096) == b""
        except ssl.SSLWantReadError:
            return False  # a TLS record without data (e.g. a TLS 1.3 session ticket)
        except (ssl.SSLError, OSError):
            return True
        finally:
            try:
                sock.settimeout(self.spool.send_timeout_s)
            except OSError:
                pass

    def _send(self, data: bytes) -> None:
        """Write a batch, then wait until the collector's TCP acknowledged all of it."""
        sock = self._sock
        assert sock is not None
        sock.sendall(data)
        deadline = time.monotonic() + self.spool.send_timeout_s
        delay = 0.0005
        while _unacknowledged(sock) > 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"collector acknowledged nothing for {self.spool.send_timeout_s:.0f}s")
            if self._stop.is_set():
                raise ConnectionError("stopping before the collector acknowledged the batch")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    # -- the spool -------------------------------------------------------------------------

    def _next_batch(self) -> list[tuple[int, bytes]]:
        with read_session(self.ctx.engine) as s:
            rows = s.execute(
                sql_select(AuditRecord.seq, AuditRecord.id, AuditRecord.recorded_at, AuditRecord.outcome, AuditRecord.body)
                .where(AuditRecord.seq > self.cursor).order_by(AuditRecord.seq).limit(self.spool.batch)
            ).all()
        out = []
        for seq, record_id, recorded_at, outcome, body in rows:
            try:
                xml = self.keys.open(record_id, body)
            except DecryptionError:
                # An altered row cannot be sent as ours; verify reports it. Skipping keeps the rest flowing.
                log.error("audit forwarder %s: record %d does not authenticate; not sent", self.name, seq)
                continue
            msg = format_message(xml, time=utc(recorded_at), hostname=self.hostname, procid=self.procid, outcome=int(outcome), seq=seq)
            out.append((seq, frame(msg)))
        if not out and rows:
            self._advance(rows[-1][0], 0)
        return out

    def _advance(self, seq: int, count: int) -> None:
        with write_session(self.ctx.engine) as s:
            s.execute(update(AuditCursor).where(AuditCursor.collector == self.name, AuditCursor.owner == self.owner)
                      .values(forwarded_up_to=seq, updated_at=datetime.now(UTC)))
        self.cursor = seq
        self.sent += count

    def _hold_lease(self) -> bool:
        """Acquire or renew (every LEASE_RENEW_S) this collector's lease; reload the cursor on acquisition."""
        now = time.monotonic()
        if self._lease_until and now < self._lease_until - (LEASE_S - LEASE_RENEW_S):
            return True
        still_held = self._lease_until > now
        wall = datetime.now(UTC)
        with write_session(self.ctx.engine) as s:
            insert_ignore(s, AuditCursor, collector=self.name, forwarded_up_to=0, updated_at=wall)
            got = s.execute(
                update(AuditCursor)
                .where(AuditCursor.collector == self.name,
                       or_(AuditCursor.owner.is_(None), AuditCursor.owner == self.owner, AuditCursor.lease_until < wall))
                .values(owner=self.owner, lease_until=wall + timedelta(seconds=LEASE_S))
            ).rowcount == 1
            if got and not still_held:
                # newly acquired: another process may have moved the cursor meanwhile
                self.cursor = int(s.scalar(sql_select(AuditCursor.forwarded_up_to).where(AuditCursor.collector == self.name)) or 0)
        self._lease_until = now + LEASE_S if got else 0.0
        return got

    def _release(self) -> None:
        try:
            with write_session(self.ctx.engine) as s:
                s.execute(update(AuditCursor).where(AuditCursor.collector == self.name, AuditCursor.owner == self.owner)
                          .values(owner=None, lease_until=None))
        except Exception:  # noqa: BLE001 - shutting down; the lease expires by itself
            log.warning("audit forwarder %s: could not release its lease", self.name)
        self._lease_until = 0.0

    def _note_error(self, text: str) -> None:
        self.last_error = text
        now = time.monotonic()
        if now - self._last_error_note < ERROR_NOTE_INTERVAL_S:
            return
        self._last_error_note = now
        log.warning("audit forwarder %s: %s (records wait in the spool)", self.name, text)
        try:
            with write_session(self.ctx.engine) as s:
                s.execute(update(AuditCursor).where(AuditCursor.collector == self.name)
                          .values(last_error=text[:256], last_error_at=datetime.now(UTC)))
        except Exception:  # noqa: BLE001 - the database may be the problem; the log has it
            pass


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


# -- status (CLI and /metrics) ---------------------------------------------------------------


@dataclass(frozen=True)
class CollectorStatus:
    collector: str
    forwarded_up_to: int
    latest: int
    pending: int
    oldest_pending_at: datetime | None
    lag_seconds: float
    lagging: bool
    forwarding_by: str | None
    last_error: str | None
    last_error_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for k in ("oldest_pending_at", "last_error_at"):
            d[k] = d[k].isoformat() if d[k] else None
        return d


def spool_status(ctx: ArchiveContext, now: datetime | None = None) -> tuple[int, list[CollectorStatus]]:
    """(records in the trail, status of each configured collector). Cheap: indexed queries only."""
    now = now or datetime.now(UTC)
    spool = ctx.settings.audit.spool
    out = []
    with read_session(ctx.engine) as s:
        latest = int(s.scalar(sql_select(func.max(AuditRecord.seq))) or 0)
        for c in ctx.settings.audit.syslog:
            name = collector_name(c)
            row = s.get(AuditCursor, name)
            cursor = row.forwarded_up_to if row else 0
            oldest = s.scalar(sql_select(AuditRecord.recorded_at).where(AuditRecord.seq > cursor).order_by(AuditRecord.seq).limit(1))
            oldest = utc(oldest) if oldest is not None else None
            lag = max(0.0, (now - oldest).total_seconds()) if oldest else 0.0
            pending = max(0, latest - cursor)
            owner = row.owner if row and row.lease_until and utc(row.lease_until) > now else None
            out.append(CollectorStatus(
                name, cursor, latest, pending, oldest, lag, pending > spool.warn_records or lag > spool.warn_seconds, owner,
                row.last_error if row else None, utc(row.last_error_at) if row and row.last_error_at else None,
            ))
    return latest, out


def prometheus_text(ctx: ArchiveContext) -> str:
    """The spool gauges in Prometheus text format, for a ``/metrics`` endpoint."""
    total, statuses = spool_status(ctx)
    lines = [
        "# HELP dicomguard_audit_records Audit records in the trail.",
        "# TYPE dicomguard_audit_records gauge",
        f"dicomguard_audit_records {total}",
        "# HELP dicomguard_audit_spool_pending Audit records not yet acknowledged by the collector.",
        "# TYPE dicomguard_audit_spool_pending gauge",
    ]
    lines += [f'dicomguard_audit_spool_pending{{collector="{st.collector}"}} {st.pending}' for st in statuses]
    lines += ["# HELP dicomguard_audit_spool_lag_seconds Age of the oldest record not yet acknowledged by the collector.",
              "# TYPE dicomguard_audit_spool_lag_seconds gauge"]
    lines += [f'dicomguard_audit_spool_lag_seconds{{collector="{st.collector}"}} {st.lag_seconds:.3f}' for st in statuses]
    return "\n".join(lines) + "\n"


def start_forwarders(ctx: ArchiveContext) -> list[SyslogForwarder]:
    """One forwarder thread per configured collector (``dicomguard serve``)."""
    forwarders = [SyslogForwarder(ctx, c) for c in ctx.settings.audit.syslog]
    for f in forwarders:
        f.start()
    return forwarders
