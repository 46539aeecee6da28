"""Where PKI material lives: public certificates under ``HOME/tls``, private keys wrapped by the KEK.

A hospital CA can replace the archive's own: set ``[tls] cert_file``,
``key_file`` and ``client_ca_file``; devices are then registered by their
existing certificate (``device add --cert``) instead of being issued one.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from sqlalchemy.orm import Session

from dicomguard.config import Settings
from dicomguard.core.keyring import Keyring
from dicomguard.crypto.kek import Kek
from dicomguard.errors import ConfigurationError
from dicomguard.index.models import WrappedKey
from dicomguard.pki.authority import CertificateAuthority, cert_pem, key_from_der, key_to_der, key_to_pem

PURPOSE_CA = "tls-ca"
PURPOSE_SERVER = "tls-server"
TLS_DIR = "tls"
CA_FILE = "ca.pem"
SERVER_FILE = "server.pem"


def default_server_names() -> list[str]:
    names = ["localhost", "127.0.0.1", "::1"]
    host = socket.gethostname()
    if host and host not in names:
        names.append(host)
    return names


def init_pki(session: Session, kek: Kek, home: Path, archive_name: str, server_names: list[str]) -> None:
    """Create the archive CA and server certificate (``init``)."""
    ca = CertificateAuthority.create(archive_name)
    server = ca.issue_server(server_names or default_server_names())
    session.add(WrappedKey(purpose=PURPOSE_CA, kek_id=kek.kek_id, wrapped=kek.wrap(PURPOSE_CA, "archive", key_to_der(ca.key))))
    session.add(WrappedKey(purpose=PURPOSE_SERVER, kek_id=kek.kek_id, wrapped=kek.wrap(PURPOSE_SERVER, "archive", key_to_der(server.key))))
    folder = home / TLS_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    (folder / CA_FILE).write_bytes(cert_pem(ca.cert))
    (folder / SERVER_FILE).write_bytes(cert_pem(server.cert) + cert_pem(ca.cert))


@dataclass(frozen=True)
class TlsMaterial:
    """Everything the listeners and the device registry need."""

    server_chain_pem: bytes
    server_key_pem: bytes
    client_ca_pem: bytes
    authority: CertificateAuthority | None  # None when a hospital CA issues certificates


def load_tls_material(home: Path, settings: Settings, keyring: Keyring) -> TlsMaterial:
    t = settings.tls
    if t.cert_file or t.key_file or t.client_ca_file:
        if not (t.cert_file and t.key_file and t.client_ca_file):
            raise ConfigurationError("[tls] cert_file, key_file and client_ca_file go together")
        try:
            return TlsMaterial(Path(t.cert_file).read_bytes(), Path(t.key_file).read_bytes(), Path(t.client_ca_file).read_bytes(), None)
        except OSError as exc:
            raise ConfigurationError(f"cannot read TLS files: {exc}") from exc
    folder = home / TLS_DIR
    ca_pem = (folder / CA_FILE).read_bytes()
    ca_cert = x509.load_pem_x509_certificate(ca_pem)
    ca = CertificateAuthority(ca_cert, key_from_der(keyring.archive_key(PURPOSE_CA)))
    server_key = key_from_der(keyring.archive_key(PURPOSE_SERVER))
    return TlsMaterial((folder / SERVER_FILE).read_bytes(), key_to_pem(server_key), ca_pem, ca)
