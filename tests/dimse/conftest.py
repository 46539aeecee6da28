"""Fixtures for DIMSE tests with real dcmtk peers over mutual TLS."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from dicomguard.dimse.server import DimseService
from dicomguard.index.db import write_session
from dicomguard.pki.devices import DeviceRegistry
from dicomguard.pki.store import load_tls_material

DCMTK = shutil.which("storescu")


@dataclass(frozen=True)
class Creds:
    ae: str
    key: Path
    cert: Path
    ca: Path

    def tls(self) -> list[str]:
        return ["+tls", str(self.key), str(self.cert), "+cf", str(self.ca)]


@pytest.fixture
def dimse(archive):
    if DCMTK is None:
        pytest.fail("dcmtk is not installed (apt-get install dcmtk); scripts/test.sh installs it")
    svc = DimseService(archive, "127.0.0.1", 0)
    svc.start()
    try:
        yield svc
    finally:
        svc.stop(grace_s=2)


@pytest.fixture
def issue(archive, tmp_path):
    material = load_tls_material(archive.home, archive.settings, archive.ctx.keyring)

    def _issue(
        ae: str, operations: tuple[str, ...] = ("echo", "store", "query", "retrieve"), move: tuple[str, int] | None = None,
        department: str | None = None,
    ) -> Creds:
        """A registered device and its credentials; ``department`` None: an archive-wide peer."""
        with write_session(archive.ctx.engine) as s:  # test set-up: registered directly, no administration record
            creds = DeviceRegistry.add(s, ae, f"test {ae}", authority=material.authority, ca_pem=material.client_ca_pem,
                                       operations=operations, move_destination=move, department=department)
        d = tmp_path / f"dev-{ae}"
        d.mkdir()
        (d / "key.pem").write_bytes(creds.key_pem or b"")
        (d / "cert.pem").write_bytes(creds.cert_pem)
        (d / "ca.pem").write_bytes(creds.ca_pem)
        return Creds(ae, d / "key.pem", d / "cert.pem", d / "ca.pem")

    return _issue


def dcmtk(
    tool: str, creds: Creds | None, port: int, *args: str, files: list[Path] = (), called: str = "DICOMGUARD", timeout: float = 60  # type: ignore[assignment]
) -> subprocess.CompletedProcess[str]:
    cmd = [tool, *(creds.tls() if creds else []), "-aet", creds.ae if creds else "NOCERT", "-aec", called, *args, "127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def tunnel(tmp_path):
    """stunnel in client mode: lets dcmtk tools without TLS support (getscu, movescu) speak mutual TLS."""
    procs: list[subprocess.Popen[bytes]] = []

    def _open(creds: Creds, target_port: int) -> int:
        import socket
        import time

        from dicomguard.dimse.server import free_port

        local = free_port()
        conf = tmp_path / f"stunnel-{creds.ae}-{local}.conf"
        conf.write_text(
            "foreground = yes\npid =\ndebug = 3\n[dicom]\nclient = yes\n"
            f"accept = 127.0.0.1:{local}\nconnect = 127.0.0.1:{target_port}\n"
            f"cert = {creds.cert}\nkey = {creds.key}\nCAfile = {creds.ca}\nverifyChain = yes\ncheckIP = 127.0.0.1\n"
            "sslVersionMin = TLSv1.2\n"
        )
        proc = subprocess.Popen([shutil.which("stunnel4") or "stunnel", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", local)) == 0:
                    return local
            time.sleep(0.05)
        raise RuntimeError("stunnel did not start")

    yield _open
    for p in procs:
        p.terminate()
        p.wait(timeout=10)


def plain(tool: str, ae: str, port: int, *args: str, called: str = "DICOMGUARD", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool, "-aet", ae, "-aec", called, *args, "127.0.0.1", str(port)], capture_output=True, text=True, timeout=timeout)
