"""Fixtures for the audit trail tests: the published PS3.15 schema, decrypted records, a real rsyslog over TLS."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import SHARED
from tests.dimse.conftest import dimse, issue, tunnel  # noqa: F401  (DIMSE fixtures with real dcmtk peers)

RNG = SHARED / "reference" / "ps3.15" / "audit-message.rng"
RSYSLOGD = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists() else None)


@pytest.fixture(scope="session")
def schema():  # type: ignore[no-untyped-def]
    """The PS3.15 A.5.1 RELAX NG schema as published (read from ../shared; never copied into the project)."""
    if not RNG.exists():
        pytest.skip(f"the PS3.15 audit message schema is not at {RNG} (../shared/reference is absent in a fresh clone)")
    from lxml import etree

    return etree.RelaxNG(etree.parse(str(RNG)))


@pytest.fixture
def valid(schema) -> Callable[[bytes], None]:  # type: ignore[no-untyped-def]
    """Assert that XML bytes are a valid audit message, by the published schema and by our validator."""
    from lxml import etree

    from dicomguard.audit import schema as ours
    from dicomguard.audit.message import parse_tree

    def check(xml: bytes) -> None:
        doc = etree.fromstring(xml)
        assert schema.validate(doc), f"{schema.error_log}\n{xml.decode()}"
        assert ours.validate(parse_tree(xml)) == []

    return check


def entries(archive, include_creation: bool = False):  # type: ignore[no-untyped-def]
    """Every audit record after the archive's own creation record (``init`` writes it first), decrypted.

    A test helper: it bypasses the audited reader. ``include_creation`` keeps the creation record.
    """
    from dicomguard.audit.store import AuditStore

    found = list(AuditStore(archive.ctx).iter_all())
    if not include_creation and found and "archive created" in (found[0].message.outcome_description or ""):
        found = found[1:]
    return found


@dataclass
class Rsyslog:
    """A real rsyslogd (gtls, x509/certvalid) writing every message it receives, raw, one per line."""

    folder: Path
    port: int
    ca: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def out(self) -> Path:
        return self.folder / "received.log"

    def start(self) -> None:
        conf = self.folder / "rsyslog.conf"
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(conf), "-i", str(self.folder / "rsyslogd.pid")],  # type: ignore[list-item]
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        import socket

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited: {self.proc.stdout.read().decode() if self.proc.stdout else ''}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("rsyslogd did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        self.proc = None

    def lines(self) -> list[bytes]:
        return self.out.read_bytes().splitlines() if self.out.exists() else []

    def wait_for(self, n: int, timeout: float) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.lines()
            if len(got) >= n:
                time.sleep(0.3)  # anything beyond n (a duplicate) would show up now
                return self.lines()
            time.sleep(0.1)
        return self.lines()


@pytest.fixture
def rsyslog(archive, tmp_path: Path) -> Iterator[Rsyslog]:
    """rsyslogd as audit collector: TLS server certificate from the archive CA, client certificates required."""
    if RSYSLOGD is None:
        pytest.fail("rsyslogd is not installed (apt-get install rsyslog rsyslog-gnutls)")
    from dicomguard.dimse.server import free_port
    from dicomguard.pki.authority import cert_pem, key_to_pem
    from dicomguard.pki.store import load_tls_material

    folder = tmp_path / "rsyslog"
    (folder / "work").mkdir(parents=True)
    material = load_tls_material(archive.home, archive.settings, archive.ctx.keyring)
    server = material.authority.issue_server(["localhost", "127.0.0.1"])  # type: ignore[union-attr]
    (folder / "ca.pem").write_bytes(material.client_ca_pem)
    (folder / "cert.pem").write_bytes(cert_pem(server.cert))
    (folder / "key.pem").write_bytes(key_to_pem(server.key))
    port = free_port()
    (folder / "rsyslog.conf").write_text(
        f'global(workDirectory="{folder}/work" maxMessageSize="256k"\n'
        f'       DefaultNetstreamDriverCAFile="{folder}/ca.pem" DefaultNetstreamDriverCertFile="{folder}/cert.pem"\n'
        f'       DefaultNetstreamDriverKeyFile="{folder}/key.pem")\n'
        'module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="x509/certvalid")\n'
        f'input(type="imtcp" port="{port}" address="127.0.0.1")\n'
        'template(name="raw" type="string" string="%rawmsg%\\n")\n'
        f'action(type="omfile" file="{folder}/received.log" template="raw")\n'
    )
    r = Rsyslog(folder, port, folder / "ca.pem")
    r.start()
    try:
        yield r
    finally:
        r.stop()
