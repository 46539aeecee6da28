"""Fixtures of the transfer tests: a dicomguard peer over mutual TLS, scripted peers, Orthanc, two PKIs.

The dicomguard peer is the real DICOMweb app served by ``serve_https`` on
127.0.0.1, except that its TLS context requires a client certificate from the
archive's CA (today's listener requests none: DICOMweb authenticates bearer
tokens; the peer route of site-to-site transfer will need both).

The transfer code does not depend on the index backend, so these tests run
on SQLite only (the ``db_backend`` fixture is narrowed here).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dicomguard.pki.authority import CertificateAuthority, cert_pem, key_to_pem
from dicomguard.pki.store import load_tls_material
from dicomguard.pki.tls import server_context
from tests.transfer_peer.peers import ORTHANC, Credentials, OrthancStow, ScriptedPeer, write_credentials
from tests.web.conftest import WebServer, start_server

PEER_DEVICE = "SITE-A-TRANSFER"


@pytest.fixture
def db_backend() -> str:
    return "sqlite"


@dataclass(frozen=True)
class Pki:
    """A test CA with a loopback server certificate and a client certificate, as objects and as files."""

    ca: CertificateAuthority
    server: Credentials
    client: Credentials

    @property
    def ca_pem(self) -> bytes:
        return cert_pem(self.ca.cert)


def make_pki(folder: Path, name: str, server_names: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Pki:
    ca = CertificateAuthority.create(name)
    server = write_credentials(folder / "server", ca, ca.issue_server(list(server_names)), "server")
    client = write_credentials(folder / "client", ca, ca.issue_device(PEER_DEVICE, "transfer client"), "client")
    return Pki(ca, server, client)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "transfer-test")


@pytest.fixture(scope="session")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Another CA: what an impostor (or a misconfigured peer entry) would have."""
    return make_pki(tmp_path_factory.mktemp("other-pki"), "impostor")


@dataclass(frozen=True)
class MutualPeer:
    web: WebServer
    client: Credentials
    """A client certificate issued by the archive's CA, with the archive's CA as the one to trust."""


@pytest.fixture
def mtls_peer(archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MutualPeer]:  # type: ignore[no-untyped-def]
    """The archive's DICOMweb over HTTPS requiring a client certificate from the archive CA."""
    material = load_tls_material(archive.home, archive.settings, archive.ctx.keyring)
    assert material.authority is not None

    def mutual_context(_archive) -> ssl.SSLContext:  # type: ignore[no-untyped-def]
        ctx = server_context(material.server_chain_pem, material.server_key_pem, client_ca_pem=material.client_ca_pem)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    monkeypatch.setattr("dicomguard.web.server.https_context", mutual_context)
    issued = material.authority.issue_device(PEER_DEVICE, "site A")
    client = write_credentials(tmp_path / "site-a", material.authority, issued, "client")
    server, stop = start_server(archive)
    try:
        yield MutualPeer(server, client)
    finally:
        stop()


@pytest.fixture
def scripted(pki: Pki) -> Iterator[Callable[..., ScriptedPeer]]:
    """``scripted(status=..., headers=..., body=..., mode=..., capture=..., mutual=True)``: scripted HTTPS peers."""
    peers: list[ScriptedPeer] = []
    server_pem, key_pem = pki.server.cert.read_bytes(), pki.server.key.read_bytes()

    def make(mutual: bool = True, server: tuple[bytes, bytes] | None = None, **kwargs: object) -> ScriptedPeer:
        chain, key = server or (server_pem, key_pem)
        peer = ScriptedPeer(chain, key, pki.ca_pem if mutual else None, **kwargs)  # type: ignore[arg-type]
        peers.append(peer)
        return peer

    try:
        yield make
    finally:
        for p in peers:
            p.close()


@pytest.fixture
def orthanc_stow(tmp_path: Path, pki: Pki) -> Iterator[OrthancStow]:
    if not Path(ORTHANC).exists():
        missing = "Orthanc is not installed at /usr/sbin/Orthanc (scripts/test.sh installs it)"
        (pytest.fail if os.environ.get("CI") else pytest.skip)(missing)
    folder = tmp_path / "orthanc"
    folder.mkdir()
    server = OrthancStow(folder, pki.server)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def issued_pem(ca: CertificateAuthority, names: list[str]) -> tuple[bytes, bytes]:
    """(chain PEM, key PEM) of a server certificate for ``names``."""
    issued = ca.issue_server(names)
    return cert_pem(issued.cert) + cert_pem(ca.cert), key_to_pem(issued.key)
