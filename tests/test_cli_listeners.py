"""``dicomguard audit listen`` and ``dicomguard context listen-hl7`` as real processes: they listen, record their
start and stop, refuse a peer without a registered certificate, and stop cleanly on SIGTERM."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from dicomguard.app.archive import Archive
from dicomguard.dimse.server import free_port
from tests.audit.conftest import entries
from tests.conftest import PASSPHRASE
from tests.serve_process import stop_gracefully


@pytest.mark.parametrize(("command", "ready"), [(["audit", "listen"], "audit"), (["context", "listen-hl7"], "hl7")])
def test_a_listener_command_listens_refuses_strangers_and_stops(home: Path, command: list[str], ready: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dicomguard", *command, "--port", str(port), "--host", "127.0.0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = ""
        for line in proc.stdout:
            if line.startswith("READY"):
                break
        assert line.strip() == f"READY {ready}={port}", proc.stderr.read() if proc.stderr else line
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
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert "stopped: 0 connections" in out + err
    name = ("dicomguard " + " ".join(command)).encode()
    with Archive.open(home, PASSPHRASE) as archive:
        activity = [e.xml for e in entries(archive) if name in e.xml]
    assert len(activity) == 2 and b"110120" in activity[0] and b"110121" in activity[1]  # Application Start, Stop
