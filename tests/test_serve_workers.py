"""``dicomguard serve --workers 2``: a supervisor and two worker processes on shared listening sockets.

Which worker accepts a connection is the kernel's choice; the tests hold
connections open until both workers hold one (seen in ``/proc``: the worker
whose file table has the established socket), so that "both workers serve"
is observed, not assumed.
"""

from __future__ import annotations

import io
import os
import queue
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread

from dicomguard.dimse.server import free_port
from tests.conftest import PASSPHRASE
from tests.dicom_factory import ALICE, BOB, ct_series
from tests.dimse.conftest import DCMTK, dcmtk, issue  # noqa: F401 - the fixture
from tests.web.multipart_util import encode

pytestmark = pytest.mark.slow  # the service as subprocesses; each test runs 10-40 s

START_TIMEOUT_S = 120.0


@dataclass
class Served:
    proc: subprocess.Popen[str]
    dimse_port: int
    https_port: int
    pids: list[int]
    lines: queue.Queue[str]
    stderr: Path

    def expect(self, prefix: str, timeout: float = 60) -> str:
        """The next stdout line starting with ``prefix`` (other lines are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {prefix!r} line; stderr:\n{self.stderr.read_text()[-3000:]}") from None
            if line.startswith(prefix):
                return line


@contextmanager
def serve_workers(tmp_path: Path, n: int = 2) -> Iterator[Served]:
    """``serve --workers n`` in its own session; the whole process group is killed at exit if anything is left."""
    dimse_port, https_port = free_port(), free_port()
    stderr = tmp_path / "serve.stderr"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dicomguard", "serve", "--workers", str(n), "--dimse-port", str(dimse_port),
             "--https-port", str(https_port)],
            stdout=subprocess.PIPE, stderr=err, text=True, env=env, start_new_session=True,
        )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.strip())

    threading.Thread(target=pump, daemon=True).start()
    served = Served(proc, dimse_port, https_port, [], lines, stderr)
    try:
        ready = served.expect("READY", START_TIMEOUT_S)
        served.pids = [int(p) for p in dict(w.split("=") for w in ready.split()[1:])["workers"].split(",")]
        yield served
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        with_group = [pid for pid in _all_pids() if _pgid(pid) == proc.pid]
        for pid in with_group:  # orphaned workers of a killed supervisor keep its process group
            os.kill(pid, signal.SIGKILL)


def _all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # state, ppid, pgrp, ...


def _pgid(pid: int) -> int | None:
    st = _stat(pid)
    return int(st[2]) if st else None


def alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def children(pid: int) -> set[int]:
    return {p for p in _all_pids() if (st := _stat(p)) and int(st[1]) == pid and st[0] != "Z"}


def connections_by_pid(port: int, pids: list[int]) -> dict[int, int]:
    """How many established TCP connections on local ``port`` each process holds (from /proc/net/tcp and its fds)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for row in f:
                cols = row.split()
                if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "01":
                    inodes.add(cols[9])
    held = {}
    for pid in pids:
        links = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                pass
        held[pid] = sum(1 for link in links if link.startswith("socket:[") and link[8:-1] in inodes)
    return held


def until_both_hold(open_one: Callable[[], object], port: int, pids: list[int], tries: int = 24) -> list[object]:
    """Open connections (kept open) until every worker holds one; the kernel picks the acceptor."""
    opened = []
    for _ in range(tries):
        opened.append(open_one())
        time.sleep(0.05)
        if all(connections_by_pid(port, pids).values()):
            return opened
    raise AssertionError(f"after {tries} connections not every worker holds one: {connections_by_pid(port, pids)}")


def tls_association(creds, port: int, *more_contexts: str):  # type: ignore[no-untyped-def]
    """A pynetdicom association over mutual TLS as the device ``creds``: CT storage, verification, ``more_contexts``."""
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage, Verification

    ctx = ssl.create_default_context(cafile=str(creds.ca))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(creds.cert), str(creds.key))
    ae = AE(ae_title=creds.ae)
    for context in (CTImageStorage, Verification, *more_contexts):
        ae.add_requested_context(context)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMGUARD", tls_args=(ctx, None))
    assert assoc.is_established
    return assoc


def web_token(archive, name: str) -> str:  # type: ignore[no-untyped-def]
    from dicomguard.core.keyring import PURPOSE_IDENTITY
    from dicomguard.identity.users import create_user
    from dicomguard.index.db import write_session
    from tests.web.conftest import issue_token

    with write_session(archive.ctx.engine) as s:
        create_user(s, archive.ctx.keyring.archive_key(PURPOSE_IDENTITY), name, "technologist", department="RADIOLOGY",
                    attributes={"modalities": ["CT"]})  # stores and reads back recent CT work
    return issue_token(archive.ctx.engine, name, timedelta(hours=1))


def stop(served: Served) -> str:
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(90) == 0, served.stderr.read_text()[-3000:]
    return served.stderr.read_text()


def application_activity(home: Path) -> list[str]:
    from dicomguard.app.archive import Archive
    from dicomguard.audit.codes import EventIds, EventTypes

    with Archive.open(home, PASSPHRASE) as a:
        from dicomguard.audit.store import AuditStore

        out = []
        for e in AuditStore(a.ctx).iter_all():
            if e.event_id == EventIds.APPLICATION_ACTIVITY.code:
                out.append("start" if EventTypes.APPLICATION_START.code in (e.event_type or "").split() else "stop")
        return out


@pytest.mark.skipif(DCMTK is None, reason="dcmtk (storescu) not installed")
def test_two_workers_share_dimse_and_https_and_stop_cleanly(archive, home: Path, issue, tmp_path: Path) -> None:  # noqa: F811
    creds = issue("CTWORKERS")
    token = web_token(archive, "tech.workers")
    files = []
    for i, data in enumerate(ct_series(ALICE, n=12, size=64, seed=3)):
        files.append(tmp_path / f"{i}.dcm")
        files[-1].write_bytes(data)
    sent: set[str] = {dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in files}
    verify = ssl.create_default_context(cafile=str(home / "tls" / "ca.pem"))
    with serve_workers(tmp_path) as served:
        assert len(set(served.pids)) == 2 and served.proc.pid not in served.pids
        assert children(served.proc.pid) == set(served.pids)  # two workers besides the supervisor

        # DIMSE: associations held open until each worker has accepted one, then C-STOREs on all of them at
        # once, beside two storescu processes (each half of the files; all of them again afterwards: duplicates).
        # Not the same object from two associations at the same moment: on PostgreSQL the loser of that race
        # gets a failure status (unique violation in the index), with or without workers; a known gap.
        assocs = until_both_hold(lambda: tls_association(creds, served.dimse_port), served.dimse_port, served.pids)
        per_assoc = [ct_series(BOB, n=2, size=64, seed=10 + i) for i in range(len(assocs))]
        for series in per_assoc:
            sent |= {dcmread(io.BytesIO(d), stop_before_pixels=True).SOPInstanceUID for d in series}
        statuses: list[int] = []

        def send(assoc, series) -> None:  # type: ignore[no-untyped-def]
            for data in series:
                statuses.append(int(assoc.send_c_store(dcmread(io.BytesIO(data))).Status))
            assoc.release()

        results: list[subprocess.CompletedProcess[str]] = []
        threads = [threading.Thread(target=send, args=(a, s)) for a, s in zip(assocs, per_assoc, strict=True)]
        threads += [threading.Thread(target=lambda h=h: results.append(dcmtk("storescu", creds, served.dimse_port, files=h)))
                    for h in (files[::2], files[1::2])]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert statuses == [0] * sum(map(len, per_assoc))
        assert [r.returncode for r in results] == [0, 0], [(r.stdout + r.stderr)[-2000:] for r in results]
        again = dcmtk("storescu", creds, served.dimse_port, files=files)  # duplicates: acknowledged, stored once
        assert again.returncode == 0, again.stdout + again.stderr

        # HTTPS: clients kept alive until each worker holds one, then one STOW-RS each, concurrently, and QIDO-RS
        def client() -> httpx.Client:
            c = httpx.Client(base_url=f"https://127.0.0.1:{served.https_port}", verify=verify, timeout=60, trust_env=False,
                             headers={"Authorization": f"Bearer {token}"})
            assert c.get("/healthz").status_code == 200
            return c

        clients = until_both_hold(client, served.https_port, served.pids)
        stow_codes: list[int] = []

        # ct_series makes new UIDs on every call: the bodies are built (and their UIDs noted) first
        bodies = [ct_series(ALICE, n=1, size=64, seed=20 + i)[0] for i in range(len(clients))]
        sent |= {dcmread(io.BytesIO(b), stop_before_pixels=True).SOPInstanceUID for b in bodies}

        def stow_one(c: httpx.Client, data: bytes) -> None:
            ctype, body = encode([data])
            stow_codes.append(c.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype}).status_code)

        threads = [threading.Thread(target=stow_one, args=(c, b)) for c, b in zip(clients, bodies, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert stow_codes == [200] * len(clients)
        for c in clients:
            r = c.get("/dicomweb/studies")
            assert r.status_code == 200 and len(r.json()) >= 1
            c.close()

        err = stop(served)
        assert "stopped" in err
    for pid in served.pids:
        assert not alive(pid)
    for secret in ALICE.secrets() + BOB.secrets():
        assert secret not in err  # no PHI in the logs of any process

    from dicomguard.app.archive import Archive
    from dicomguard.core.query import IndexQuery

    with Archive.open(home, PASSPHRASE) as a:
        stored = [i.sop_instance_uid for i in IndexQuery(a.ctx).instances()]
        report = a.operator.verify.run()
    assert sorted(stored) == sorted(sent)  # every object once, whichever worker took it, duplicates included
    assert report.ok, report.problems
    assert application_activity(home).count("start") == 2 and application_activity(home).count("stop") == 2


def test_a_killed_worker_is_restarted_and_sighup_reaches_every_worker(archive, home: Path, tmp_path: Path) -> None:
    token = web_token(archive, "tech.restart")
    verify = ssl.create_default_context(cafile=str(home / "tls" / "ca.pem"))
    with serve_workers(tmp_path) as served:
        victim, survivor = served.pids
        os.kill(victim, signal.SIGKILL)
        restarted = int(served.expect("RESTARTED worker=0").split("pid=")[1])
        assert restarted not in served.pids
        assert served.expect("WORKER-READY worker=0") == f"WORKER-READY worker=0 pid={restarted}"
        assert children(served.proc.pid) == {restarted, survivor}
        assert "exited unexpectedly" in served.stderr.read_text()
        url = f"https://127.0.0.1:{served.https_port}"

        def client() -> httpx.Client:
            c = httpx.Client(base_url=url, verify=verify, trust_env=False, headers={"Authorization": f"Bearer {token}"})
            assert c.get("/healthz").status_code == 200
            return c

        clients = until_both_hold(client, served.https_port, [restarted, survivor])
        for c in clients:  # the restarted worker serves like the other one
            assert c.get("/dicomweb/studies").status_code in (200, 204)
            c.close()

        served.proc.send_signal(signal.SIGHUP)
        reloaded = {served.expect("RELOADED"), served.expect("RELOADED")}
        assert reloaded == {f"RELOADED worker=0 pid={restarted} ok", f"RELOADED worker=1 pid={survivor} ok"}
        stop(served)

    from dicomguard.app.archive import Archive
    from dicomguard.audit.store import AuditStore

    with Archive.open(home, PASSPHRASE) as a:
        changes = [e.message.outcome_description or "" for e in AuditStore(a.ctx).iter_all()
                   if e.event_type and "110129" in e.event_type.split()]
    assert sum(c.startswith("policies reloaded:") for c in changes) == 2  # one record per worker
    # the killed worker never recorded its stop; the others did (3 starts: two workers + the replacement)
    assert sorted(application_activity(home)) == ["start", "start", "start", "stop", "stop"]


def test_workers_stop_when_the_supervisor_is_killed(home: Path, tmp_path: Path) -> None:
    with serve_workers(tmp_path) as served:
        os.kill(served.proc.pid, signal.SIGKILL)
        served.proc.wait(10)
        deadline = time.monotonic() + 60
        while any(alive(pid) for pid in served.pids):
            assert time.monotonic() < deadline, "workers outlived their supervisor"
            time.sleep(0.2)
    assert application_activity(home) == ["start", "start", "stop", "stop"]  # they stopped gracefully


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
def test_workers_need_a_passphrase_without_a_prompt(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DICOMGUARD_PASSPHRASE", "DICOMGUARD_PASSPHRASE_FILE")}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    r = subprocess.run([sys.executable, "-m", "dicomguard", "serve", "--workers", "2", "--dimse-port", str(free_port()),
                        "--https-port", str(free_port())], check=False, capture_output=True, text=True, env=env, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "DICOMGUARD_PASSPHRASE" in r.stderr
