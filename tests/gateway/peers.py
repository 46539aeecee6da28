"""Real peers for the gateway tests: a test CA, Orthanc as the TLS upstream, the gateway as a subprocess.

Orthanc 1.10 (Debian) runs with DICOM TLS only on its DICOM port, requires a
client certificate from the test CA, and answers REST on 127.0.0.1 only.
dcmtk's ``storescu``/``echoscu`` play the legacy modality (plaintext).
Everything is bounded by timeouts and killed in ``finally``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from dicomguard.dimse.server import free_port
from tests.dicom_factory import write_files

ORTHANC = "/usr/sbin/Orthanc"
GATEWAY_AE = "DICOMGUARD-GW"
MODALITY_AE = "LEGACY_CT"


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass(frozen=True)
class PkiFiles:
    """A test CA, Orthanc's server certificate and the gateway's client certificate (bound to its AE)."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.folder / "orthanc.pem"

    @property
    def server_key(self) -> Path:
        return self.folder / "orthanc.key"

    @property
    def client_cert(self) -> Path:
        return self.folder / "gateway.pem"

    @property
    def client_key(self) -> Path:
        return self.folder / "gateway.key"


def private_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


class OrthancServer:
    """Orthanc with DICOM TLS (mutual) on ``dicom_port`` and plain REST on 127.0.0.1:``http_port``."""

    def __init__(self, folder: Path, pki: PkiFiles) -> None:
        self.folder = folder
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        storage = folder / "storage"
        config = {
            "Name": "dicomguard-gateway-test",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "Plugins": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": "ORTHANC",
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(pki.server_cert),
            "DicomTlsPrivateKey": str(pki.server_key),
            "DicomTlsTrustedCertificates": str(pki.ca),
            "DicomTlsRemoteCertificateRequired": True,
            "DicomAlwaysAllowStore": True,
            "OverwriteInstances": False,
            "StableAge": 1,
        }
        self.config_path = folder / "orthanc.json"
        self.config_path.write_text(json.dumps(config, indent=2))
        self.log_path = folder / "orthanc.log"

    def start(self) -> None:
        assert self.proc is None
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([ORTHANC, str(self.config_path)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_until(self._up, 15, what="Orthanc REST API")

    def _up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"Orthanc exited: {self.log_path.read_text()[-2000:]}")
        try:
            self.get("/system")
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()  # storage is a throwaway folder; SIGTERM costs ~3 s
            self.proc.wait(10)
            self.proc = None

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as rsp:
            return rsp.read()  # type: ignore[no-any-return]

    def instances(self) -> list[str]:
        return json.loads(self.get("/instances"))  # type: ignore[no-any-return]

    def sop_instance_uids(self) -> dict[str, str]:
        """SOP Instance UID -> Orthanc id of every stored instance."""
        out = {}
        for oid in self.instances():
            tags = json.loads(self.get(f"/instances/{oid}/simplified-tags"))
            out[tags["SOPInstanceUID"]] = oid
        return out




class GatewayProcess:
    """``python -m dicomguard gateway ...`` as a subprocess of the test."""

    def __init__(
        self, home: Path, pki: PkiFiles, upstream_port: int, folder: Path, extra: list[str] | None = None, upstream_ae: str = "ORTHANC"
    ) -> None:
        self.home = home
        self.port = free_port()
        self.args = [
            sys.executable, "-m", "dicomguard", "gateway",
            "--listen", f"127.0.0.1:{self.port}",
            "--upstream", f"127.0.0.1:{upstream_port}", "--upstream-ae", upstream_ae,
            "--cert", str(pki.client_cert), "--key", str(pki.client_key), "--ca", str(pki.ca),
            "--ae", GATEWAY_AE, "--initial-backoff", "0.1", "--max-backoff", "0.5",
            "--upstream-timeout", "10", "--shutdown-grace", "5",
            *(extra or []),
        ]
        self.log_path = folder / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.status_path = home / "gateway-queue" / "status.json"

    def start(self) -> None:
        assert self.proc is None
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        log.close()
        wait_until(self._ready, 30, what="the gateway to listen")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"gateway exited with {self.proc.returncode}: {self.log()[-3000:]}")
        try:
            report = json.loads(self.status_path.read_text())
        except (FileNotFoundError, ValueError):
            return False
        return report.get("pid") == self.proc.pid and report.get("state") not in ("starting", "stopping", "stopped")

    def report(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.status_path.read_text())  # type: ignore[no-any-return]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, wait; SIGKILL if it does not stop in time. Returns the exit code."""
        if self.proc is None:
            return 0
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
                raise AssertionError("the gateway did not stop on SIGTERM") from None
        return proc.returncode




def dcmtk(tool: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    if shutil.which(tool) is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"dcmtk {tool} is not installed (scripts/test.sh installs it)")
    return subprocess.run([tool, "-to", "10", "-ta", "10", "-td", "10", *args], capture_output=True, text=True, timeout=timeout)


def storescu(
    port: int, files: list[Path], *options: str, calling: str = MODALITY_AE, called: str = GATEWAY_AE
) -> subprocess.CompletedProcess[str]:
    """The legacy modality: plaintext C-STORE of ``files`` over one association."""
    return dcmtk("storescu", *options, "-aet", calling, "-aec", called, "127.0.0.1", str(port), *map(str, files))


def write_objects(folder: Path, objects: list[bytes]) -> list[Path]:
    return write_files(folder, objects)
