"""``dicomguard serve``: both listeners up, no PHI in its logs, graceful stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from dicomguard.dimse.server import free_port
from tests.dicom_factory import ALICE, ct_series
from tests.dimse.conftest import dcmtk


def test_serve_runs_dimse_and_https_and_stops_gracefully(home: Path, issue, tmp_path) -> None:
    creds = issue("CTSERVE")
    dimse_port, https_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dicomguard", "serve", "--dimse-port", str(dimse_port), "--https-port", str(https_port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stdout is not None
        line = ""
        for line in proc.stdout:
            if line.startswith("READY"):
                break
        assert line.startswith("READY"), proc.stderr.read() if proc.stderr else ""
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
    finally:
        if proc.poll() is None:
            proc.kill()
    from dicomguard.core.archive import Archive
    from dicomguard.ledger.verify import verify_archive
    from tests.conftest import PASSPHRASE

    with Archive.open(home, PASSPHRASE) as a:
        stored = len(a.query.instances())
        report = verify_archive(a.ctx, a.ledger.verifier)
    assert report.ok, report.problems  # whatever was acknowledged is whole; nothing half-stored
    assert stored <= 20
