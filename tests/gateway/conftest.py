"""Fixtures of the gateway tests (helpers and peers are in :mod:`tests.gateway.peers`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomguard.pki.authority import CertificateAuthority, cert_pem, key_to_pem
from tests.conftest import PASSPHRASE
from tests.gateway.peers import GATEWAY_AE, ORTHANC, GatewayProcess, OrthancServer, PkiFiles, private_file


@pytest.fixture(scope="session")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    folder = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority.create("gateway-test")
    server = ca.issue_server(["127.0.0.1", "localhost"])
    client = ca.issue_device(GATEWAY_AE, "legacy gateway")
    pki = PkiFiles(folder)
    pki.ca.write_bytes(cert_pem(ca.cert))
    pki.server_cert.write_bytes(cert_pem(server.cert) + cert_pem(ca.cert))
    private_file(pki.server_key, key_to_pem(server.key))
    pki.client_cert.write_bytes(cert_pem(client.cert))
    private_file(pki.client_key, key_to_pem(client.key))
    return pki


@pytest.fixture
def orthanc(tmp_path: Path, test_pki: PkiFiles) -> Iterator[OrthancServer]:
    if not Path(ORTHANC).exists():
        (pytest.fail if os.environ.get("CI") else pytest.skip)("Orthanc is not installed at /usr/sbin/Orthanc (scripts/test.sh installs it)")
    folder = tmp_path / "orthanc"
    folder.mkdir()
    server = OrthancServer(folder, test_pki)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sqlite_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home on SQLite only, for tests where the index backend plays no part."""
    from dicomguard.app.home import init_home

    root = tmp_path / "home"
    init_home(root, PASSPHRASE, "admin")
    monkeypatch.setenv("DICOMGUARD_HOME", str(root))
    return root


@pytest.fixture
def gateway_factory(test_pki: PkiFiles, tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    """``make(home, upstream_port, extra_args)``: gateway subprocesses, killed at the end if still running."""
    started: list[GatewayProcess] = []

    def make(
        home: Path, upstream_port: int, extra: list[str] | None = None, pki: PkiFiles | None = None, upstream_ae: str = "ORTHANC"
    ) -> GatewayProcess:
        g = GatewayProcess(home, pki or test_pki, upstream_port, tmp_path, extra, upstream_ae)
        started.append(g)
        return g

    try:
        yield make
    finally:
        for g in started:
            if g.proc is not None:
                g.proc.kill()
                g.proc.wait(5)
                g.proc = None
