"""``dicomguard audit listen`` and ``dicomguard context listen-hl7`` as real processes: they listen, record their
start and stop, refuse a peer without a registered certificate, and stop cleanly on SIGTERM."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest

from dicomguard.app.archive import Archive
from dicomguard.dimse.server import free_port
from tests.audit.conftest import entries
from tests.conftest import PASSPHRASE
from tests.serve_process import cli_process, stop_gracefully


@pytest.mark.parametrize(("command", "ready"), [(["audit", "listen"], "audit"), (["context", "listen-hl7"], "hl7")])
def test_a_listener_command_listens_refuses_strangers_and_stops(home: Path, command: list[str], ready: str) -> None:
    port = free_port()
    with cli_process(*command, "--port", str(port), "--host", "127.0.0.1") as (proc, ready_line):
        assert ready_line == f"READY {ready}={port}"
        # A TLS client with no certificate: the handshake fails (a client certificate is required), nothing is read.
        client = ssl.create_default_context(cafile=str(home / "tls" / "ca.pem"))
        client.check_hostname = False
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                with client.wrap_socket(raw) as tls:
                    tls.sendall(b"\x0bMSH|^~\\&|\x1c\r")
                    if not tls.recv(1024):
                        raise ConnectionError("closed")
        out, err = stop_gracefully(proc)
    assert "stopped: 0 connections" in out + err
    name = ("dicomguard " + " ".join(command)).encode()
    with Archive.open(home, PASSPHRASE) as archive:
        activity = [e.xml for e in entries(archive) if name in e.xml]
    assert len(activity) == 2 and b"110120" in activity[0] and b"110121" in activity[1]  # Application Start, Stop
