"""``dicomguard serve``: both listeners up, no PHI in its logs, graceful stop on SIGTERM."""

from __future__ import annotations

import signal
import ssl
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from dicomguard.core.query import IndexQuery
from dicomguard.dimse.server import free_port
from tests.dicom_factory import ALICE, ct_series
from tests.dimse.conftest import dcmtk
from tests.serve_process import serve_process, stop_gracefully

pytestmark = pytest.mark.slow  # dicomguard serve as a subprocess


def test_serve_runs_dimse_and_https_and_stops_gracefully(home: Path, issue, tmp_path) -> None:
    creds = issue("CTSERVE")
    dimse_port, https_port = free_port(), free_port()
    with serve_process(dimse_port, https_port) as proc:
        r = httpx.get(f"https://127.0.0.1:{https_port}/healthz", verify=ssl.create_default_context(cafile=str(home / "tls" / "ca.pem")))
        assert r.status_code == 200
        files = []
        for i, data in enumerate(ct_series(ALICE, n=20, size=128)):
            p = tmp_path / f"{i}.dcm"
            p.write_bytes(data)
            files.append(p)
        # SIGTERM while a store is in flight: the store completes or is refused cleanly
        result: dict[str, subprocess.CompletedProcess[str]] = {}
        t = threading.Thread(target=lambda: result.setdefault("r", dcmtk("storescu", creds, dimse_port, files=files)))
        t.start()
        proc.send_signal(signal.SIGTERM)
        t.join(timeout=60)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "stopped" in out + err
        for secret in ALICE.secrets():
            assert secret not in out + err  # no PHI in logs
    from dicomguard.app.archive import Archive
    from tests.conftest import PASSPHRASE

    with Archive.open(home, PASSPHRASE) as a:
        stored = len(IndexQuery(a.ctx).instances())
        report = a.operator.verify.run()
    assert report.ok, report.problems  # whatever was acknowledged is whole; nothing half-stored
    assert stored <= 20


def test_sighup_reloads_policies_and_a_broken_set_is_refused(home: Path) -> None:
    from datetime import timedelta

    from dicomguard.app.archive import Archive
    from dicomguard.audit.store import AuditStore
    from dicomguard.core.keyring import PURPOSE_IDENTITY
    from dicomguard.identity.users import create_user
    from dicomguard.index.db import write_session
    from tests.conftest import PASSPHRASE
    from tests.dicom_factory import DEPARTMENT
    from tests.web.conftest import issue_token

    with Archive.open(home, PASSPHRASE) as a:
        a.operator.store.ingest(ct_series(ALICE, n=1)[0])
        with write_session(a.ctx.engine) as s:
            create_user(s, a.ctx.keyring.archive_key(PURPOSE_IDENTITY), "r.search", "researcher", department=DEPARTMENT)
        token = issue_token(a.ctx.engine, "r.search", timedelta(hours=1))
    https_port = free_port()
    verify = ssl.create_default_context(cafile=str(home / "tls" / "ca.pem"))

    def studies_seen() -> int:
        r = httpx.get(f"https://127.0.0.1:{https_port}/dicomweb/studies", headers={"Authorization": f"Bearer {token}"}, verify=verify)
        assert r.status_code in (200, 204), r.text
        return 0 if r.status_code == 204 else len(r.json())

    def eventually(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
        import time

        deadline = time.monotonic() + 15
        while not predicate():
            assert time.monotonic() < deadline, what
            time.sleep(0.2)

    with serve_process(https_port=https_port) as proc:
        assert studies_seen() == 0  # researchers read de-identified studies only
        local = home / "policies" / "zz-local.cedar"
        local.write_text('permit (principal, action, resource) when { principal.nonsense };')
        proc.send_signal(signal.SIGHUP)
        import time

        time.sleep(1.5)
        assert proc.poll() is None and studies_seen() == 0  # refused: the running policies stay, nothing opens
        local.write_text('@id("research-reads-radiology")\npermit (principal is User, action == Action::"query", resource is Study)\n'
                         'when { principal.roles.contains("researcher") && resource.department == "RADIOLOGY" };')
        proc.send_signal(signal.SIGHUP)
        eventually(lambda: studies_seen() == 1, "the reloaded policy takes effect")
        stop_gracefully(proc)
    with Archive.open(home, PASSPHRASE) as a:
        changes = [e.message.outcome_description or "" for e in AuditStore(a.ctx).iter_all()
                   if e.event_type and "110129" in e.event_type.split()]
    assert any("refused" in c and "zz-local.cedar" in c for c in changes)
    assert any(c.startswith("policies reloaded:") and "sha256" in c for c in changes)


def test_accepted_associations_have_nagle_off() -> None:
    """A sent object's last segment must not wait for the peer's delayed ACK (up to 40 ms per C-GET sub-operation)."""
    import socket as socket_module
    from types import SimpleNamespace

    from dicomguard.dimse.server import GuardedAssociationServer

    listener = socket_module.create_server(("127.0.0.1", 0))
    client = socket_module.create_connection(listener.getsockname())
    try:
        accepted, _ = GuardedAssociationServer.get_request(SimpleNamespace(socket=listener))  # type: ignore[arg-type]
        with accepted:
            assert accepted.getsockopt(socket_module.IPPROTO_TCP, socket_module.TCP_NODELAY) != 0
    finally:
        client.close()
        listener.close()


def test_associations_the_archive_opens_have_nagle_off() -> None:
    """C-MOVE sub-associations: the EVT_CONN_OPEN handler turns Nagle off on the connection pynetdicom opened."""
    import socket as socket_module
    from types import SimpleNamespace

    from dicomguard.dimse.sockets import on_connection_open

    listener = socket_module.create_server(("127.0.0.1", 0))
    client = socket_module.create_connection(listener.getsockname())
    try:
        assert client.getsockopt(socket_module.IPPROTO_TCP, socket_module.TCP_NODELAY) == 0
        on_connection_open(SimpleNamespace(assoc=SimpleNamespace(dul=SimpleNamespace(socket=SimpleNamespace(socket=client)))))
        assert client.getsockopt(socket_module.IPPROTO_TCP, socket_module.TCP_NODELAY) != 0
    finally:
        client.close()
        listener.close()
