"""Hostile peers: malformed PDUs, a peer that stops mid-transfer. Clean errors, nothing stored, no crash."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

from dicomguard.core.query import IndexQuery
from tests.dicom_factory import BOB, us_multiframe
from tests.dimse.conftest import dcmtk

pytestmark = pytest.mark.slow  # a DIMSE server and hostile peers


def _tls_socket(creds, port: int) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(creds.ca))
    ctx.load_cert_chain(str(creds.cert), str(creds.key))
    ctx.check_hostname = False
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))


def test_malformed_pdus_are_dropped_and_the_server_keeps_serving(archive, dimse, issue) -> None:
    creds = issue("FUZZ1")
    dimse.ae.acse_timeout = dimse.ae.network_timeout = 2  # new associations give up on silent peers fast
    for junk in (
        b"\xff" * 64,  # unknown PDU type
        b"\x01\x00\xff\xff\xff\xff" + b"\x00" * 20,  # A-ASSOCIATE-RQ claiming 4 GiB
        b"\x04\x00\x00\x00\x00\x10" + b"\x00" * 16,  # P-DATA before any association
        b"\x01\x00\x00\x00\x00\x04\x00\x01\x00\x00",  # truncated A-ASSOCIATE-RQ
    ):
        s = _tls_socket(creds, dimse.port)
        try:
            s.sendall(junk)
            s.settimeout(3)
            try:
                while s.recv(4096):
                    pass
            except (TimeoutError, ssl.SSLError, ConnectionError, OSError):
                pass
        finally:
            s.close()
    assert dcmtk("echoscu", creds, dimse.port).returncode == 0
    assert IndexQuery(archive.ctx).instances() == []


class SlowProxy:
    """Forwards TCP bytes (TLS records, untouched) at a bounded rate, so a sender can be killed mid-PDU."""

    def __init__(self, target_port: int, bytes_per_s: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.target = target_port
        self.rate = bytes_per_s
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        client, _ = self.listener.accept()
        upstream = socket.create_connection(("127.0.0.1", self.target))
        threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, throttle: bool) -> None:
        try:
            while data := src.recv(16384):
                dst.sendall(data)
                if throttle:
                    time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def test_peer_killed_mid_store_leaves_nothing_half_stored(archive, dimse, issue, tmp_path) -> None:
    creds = issue("CTKILL")
    big = tmp_path / "big.dcm"
    big.write_bytes(us_multiframe(BOB, frames=30, rows=480, cols=640))  # ~28 MB
    proxy = SlowProxy(dimse.port, bytes_per_s=4 * 1024 * 1024)
    proc = subprocess.Popen(
        ["storescu", *creds.tls(), "-aet", "CTKILL", "-aec", "DICOMGUARD", "127.0.0.1", str(proxy.port), str(big)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    time.sleep(1.5)  # association up, a few MB of the data set sent
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    time.sleep(1.5)
    assert IndexQuery(archive.ctx).instances() == []
    assert list(archive.ctx.store.iter_ids()) == []
    assert dcmtk("echoscu", creds, dimse.port).returncode == 0
