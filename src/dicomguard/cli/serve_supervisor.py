"""``dicomguard serve --workers N``: one supervisor, N worker processes on shared listening sockets.

Design (docs/operations.md "Several worker processes"):

* The **supervisor** binds and ``listen()``-s the DIMSE and HTTPS sockets once
  (ports fixed before any worker starts, a privileged port bound once), then
  starts N workers (``dicomguard serve --worker ...``, a fresh interpreter,
  not a fork of a threaded process). It never opens the archive, never reads
  the passphrase and holds no key: each worker unseals the key-encryption key
  itself from ``DICOMGUARD_PASSPHRASE``/``_FILE`` exactly as ``serve`` does
  (the environment is inherited; nothing secret goes through a pipe or argv).
  An interactive prompt is impossible with N > 1, so one of the two is required.
* Each **worker** is today's ``serve`` on inherited sockets: the kernel hands
  each new connection to whichever worker accepts it first (both sockets are
  non-blocking, so a worker that loses the race goes back to waiting). Each
  worker records its own Application Activity start and stop, reloads the
  policies on SIGHUP, signs periodic checkpoints (idempotent under the ledger
  lock) and runs the syslog forwarders (a lease on each collector's cursor
  keeps two workers from sending the same records).
* Writes from several processes: the ledger and the audit sequence are taken
  under the database write lock (``BEGIN IMMEDIATE`` on SQLite, row locks on
  PostgreSQL), so there is one writer sequence; SQLite's ``busy_timeout`` (60 s)
  queues writers of different processes.
* **Signals**: SIGTERM/SIGINT are forwarded as SIGTERM (graceful stop of every
  worker; exit 0 if every worker stopped cleanly), SIGHUP is forwarded to every
  worker (each reloads and records the reload).
* **Crashes**: a worker that dies after it was ready is restarted at once
  (logged); more than ``MAX_RESTARTS`` restarts within ``RESTART_WINDOW_S``
  stop the whole service (exit 1), so a crash loop does not spin forever. A
  worker that dies before it is ready (bad configuration, wrong passphrase)
  stops the service with its exit code.
* **Supervisor gone**: every worker holds the read end of a "lifeline" pipe
  whose only write end is the supervisor's; when the supervisor dies (even by
  SIGKILL) the workers read end-of-file and stop gracefully.

Protocol on stdout, one line each (the single-process ``serve`` prints the same
READY line without ``workers=``): ``READY dimse=P https=P workers=PID,PID``,
``RESTARTED worker=I pid=PID`` then ``WORKER-READY worker=I pid=PID``, ``RELOADED worker=I pid=PID ok|refused``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 40.0  # a worker's own stop takes up to ~30 s (DIMSE grace, HTTPS, forwarders)
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
BACKLOG = 128


@dataclass(frozen=True)
class WorkerChannel:
    """What a worker inherits: its slot and four file descriptors (``--worker`` is ``slot:dimse:https:lifeline:status``)."""

    slot: int
    dimse_fd: int
    https_fd: int
    lifeline_fd: int
    status_fd: int

    def arg(self) -> str:
        return f"{self.slot}:{self.dimse_fd}:{self.https_fd}:{self.lifeline_fd}:{self.status_fd}"

    @classmethod
    def parse(cls, value: str) -> WorkerChannel:
        slot, dimse, https, lifeline, status = (int(x) for x in value.split(":"))
        return cls(slot, dimse, https, lifeline, status)

    def report(self, line: str) -> None:
        """One line to the supervisor (shorter than PIPE_BUF, so lines of several workers never interleave)."""
        try:
            os.write(self.status_fd, f"{line}\n".encode())
        except OSError:  # the supervisor is gone; the lifeline stops us
            pass

    def watch_lifeline(self, on_orphaned) -> None:  # type: ignore[no-untyped-def]
        """Call ``on_orphaned`` (from a daemon thread) once the supervisor has gone away."""

        def watch() -> None:
            while True:
                try:
                    if os.read(self.lifeline_fd, 64) == b"":
                        break
                except InterruptedError:
                    continue
                except OSError:
                    break
            log.warning("the serve supervisor has gone away: stopping this worker")
            on_orphaned()

        threading.Thread(target=watch, name="lifeline", daemon=True).start()


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket (SO_REUSEADDR, like pynetdicom and uvicorn), inheritable by the workers."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
    return sock


class Supervisor:
    def __init__(self, workers: int, dimse: socket.socket, https: socket.socket) -> None:
        self.n = workers
        self.dimse, self.https = dimse, https
        self.lifeline_r, self.lifeline_w = os.pipe()  # the write end never leaves this process
        self.status_r, self.status_w = os.pipe()
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.ready: dict[int, int] = {}  # slot -> pid that reported READY
        self.changed = threading.Event()
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.restarts: deque[float] = deque()
        self.lock = threading.Lock()
        self.announced = False  # the READY line is out

    # -- workers ---------------------------------------------------------------------

    def spawn(self, slot: int) -> subprocess.Popen[bytes]:
        channel = WorkerChannel(slot, self.dimse.fileno(), self.https.fileno(), self.lifeline_r, self.status_w)
        cmd = [sys.executable, "-m", "dicomguard", "serve", "--worker", channel.arg()]
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, close_fds=True,
            pass_fds=(channel.dimse_fd, channel.https_fd, channel.lifeline_fd, channel.status_fd),
        )
        self.procs[slot] = proc
        log.info("worker %d started (pid %d)", slot, proc.pid)
        return proc

    def _read_status(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self.status_r, 4096)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                self._on_status(line.decode(errors="replace").split())

    def _on_status(self, words: list[str]) -> None:
        if len(words) < 3 or not words[1].isdigit() or not words[2].isdigit():
            return
        kind, slot, pid = words[0], int(words[1]), int(words[2])
        if kind == "READY":
            with self.lock:
                self.ready[slot] = pid
                announce = self.announced
            if announce:  # a restarted worker (the first ones are announced by the READY line)
                print(f"WORKER-READY worker={slot} pid={pid}", flush=True)
            self.changed.set()
        elif kind == "RELOADED":
            outcome = words[3] if len(words) > 3 else "ok"
            print(f"RELOADED worker={slot} pid={pid} {outcome}", flush=True)

    def signal_all(self, sig: int) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    pass

    def stop_all(self) -> bool:
        """SIGTERM every worker, wait, SIGKILL the ones still there. True if every worker exited with 0."""
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        clean = True
        for slot, proc in self.procs.items():
            try:
                code = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d (pid %d) did not stop in time: killed", slot, proc.pid)
                proc.kill()
                code = proc.wait()
            if code != 0:
                clean = False
                log.error("worker %d (pid %d) stopped with exit status %s", slot, proc.pid, code)
        return clean

    # -- main loop -------------------------------------------------------------------

    def run(self, dimse_port: int, https_port: int) -> int:
        from dicomguard.cli.common import console

        # Handlers touch only events the main thread never waits on: setting ``changed`` here could deadlock with
        # the main thread interrupted inside ``changed.wait`` holding its lock. The loops poll at most 0.5 s apart.
        def request_stop(*_: object) -> None:
            self.stop_requested.set()

        def request_reload(*_: object) -> None:
            self.reload_requested.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, request_stop)
        signal.signal(signal.SIGHUP, request_reload)
        threading.Thread(target=self._read_status, name="worker-status", daemon=True).start()
        for slot in range(self.n):
            self.spawn(slot)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:  # start-up: every worker ready, or a reason to give up
            with self.lock:
                ready = all(self.ready.get(s) == p.pid for s, p in self.procs.items())
            if ready:
                break
            for slot, proc in self.procs.items():
                if proc.poll() is not None:
                    console.print(f"[bold red]error:[/] worker {slot} exited with status {proc.returncode} before it was ready")
                    self.stop_all()
                    return proc.returncode if proc.returncode > 0 else 1
            if self.stop_requested.is_set() or time.monotonic() > deadline:
                if not self.stop_requested.is_set():
                    console.print("[bold red]error:[/] the workers did not become ready in time")
                return 0 if self.stop_all() and self.stop_requested.is_set() else 1
            self.changed.wait(0.2)
            self.changed.clear()
        pids = ",".join(str(self.procs[s].pid) for s in sorted(self.procs))
        console.print(f"dicomguard serve: {self.n} workers (pids {pids}) on DIMSE-TLS port {dimse_port} and HTTPS port {https_port}")
        print(f"READY dimse={dimse_port} https={https_port} workers={pids}", flush=True)
        with self.lock:
            self.announced = True
        while not self.stop_requested.is_set():
            self.changed.wait(0.5)
            self.changed.clear()
            if self.stop_requested.is_set():
                break
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self.signal_all(signal.SIGHUP)
            for slot, proc in list(self.procs.items()):
                if proc.poll() is None or self.stop_requested.is_set():
                    continue
                now = time.monotonic()
                while self.restarts and now - self.restarts[0] > RESTART_WINDOW_S:
                    self.restarts.popleft()
                if len(self.restarts) >= MAX_RESTARTS:
                    console.print(f"[bold red]error:[/] worker {slot} (pid {proc.pid}) exited with status {proc.returncode}; "
                                  f"{MAX_RESTARTS} restarts within {RESTART_WINDOW_S:.0f} s already: stopping the service")
                    self.stop_all()
                    return 1
                self.restarts.append(now)
                log.warning("worker %d (pid %d) exited unexpectedly with status %s: restarting it", slot, proc.pid, proc.returncode)
                console.print(f"worker {slot} (pid {proc.pid}) exited unexpectedly with status {proc.returncode}: restarting "
                              f"({len(self.restarts)} of at most {MAX_RESTARTS} within {RESTART_WINDOW_S:.0f} s)")
                new = self.spawn(slot)
                print(f"RESTARTED worker={slot} pid={new.pid}", flush=True)
        console.print("stopping: every worker finishes its in-flight operations ...")
        clean = self.stop_all()
        console.print("stopped" if clean else "stopped (a worker did not stop cleanly)")
        return 0 if clean else 1


def supervise(workers: int, host: str, dimse_port: int, https_port: int) -> int:
    """Bind both listening sockets, run ``workers`` workers until SIGTERM/SIGINT; the exit status."""
    from dicomguard.cli.common import fail

    if not (os.environ.get("DICOMGUARD_PASSPHRASE") or os.environ.get("DICOMGUARD_PASSPHRASE_FILE")):
        fail("serve --workers N needs DICOMGUARD_PASSPHRASE or DICOMGUARD_PASSPHRASE_FILE (each worker unseals the keys itself)")
    sockets: list[socket.socket] = []
    try:
        for what, port in (("DIMSE", dimse_port), ("HTTPS", https_port)):
            try:
                sockets.append(listen(host, port))
            except OSError as exc:
                fail(f"cannot listen for {what} on {host}:{port}: {exc.strerror}")
        dimse, https = sockets
        return Supervisor(workers, dimse, https).run(dimse.getsockname()[1], https.getsockname()[1])
    finally:
        for sock in sockets:
            sock.close()
