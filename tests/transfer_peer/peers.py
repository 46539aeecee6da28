"""Loopback peers for the transfer tests: a scripted HTTPS peer, and Orthanc's STOW-RS behind stunnel.

:class:`ScriptedPeer` is a deliberately small HTTP/1.1-over-TLS server (one
request per connection) whose answer the test chooses: it reads a chunked body
without keeping it (counting bytes and multipart delimiters) unless asked to
capture it, so a memory test measures the client, not the server.

:class:`OrthancStow` runs Orthanc with its DICOMweb plugin on plain HTTP on
127.0.0.1 and stunnel in front of it, requiring a client certificate from the
test CA: Debian's Orthanc 1.10 crashes (civetweb with OpenSSL 3) as soon as
its own HTTPS serves a request, so TLS is terminated by stunnel.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from dicomguard.pki.authority import CertificateAuthority, Issued, cert_pem, key_to_pem
from dicomguard.pki.tls import server_context
from tests.gateway.peers import free_port, private_file, wait_until

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


@dataclass(frozen=True)
class Credentials:
    """PEM files of one party: its CA (the one it trusts), its certificate and its key."""

    ca: Path
    cert: Path
    key: Path


def write_credentials(folder: Path, ca: CertificateAuthority, issued: Issued, name: str) -> Credentials:
    folder.mkdir(parents=True, exist_ok=True)
    creds = Credentials(folder / "ca.pem", folder / f"{name}.pem", folder / f"{name}.key")
    creds.ca.write_bytes(cert_pem(ca.cert))
    creds.cert.write_bytes(cert_pem(issued.cert) + cert_pem(ca.cert))
    private_file(creds.key, key_to_pem(issued.key))
    return creds


@dataclass
class Received:
    """What the scripted peer saw of one request."""

    request_line: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body_bytes: int = 0
    delimiters: int = 0
    complete: bool = False
    body: bytes | None = None


class ScriptedPeer:
    """HTTPS on 127.0.0.1 answering every request with ``status``/``headers``/``body``.

    ``mode``: ``answer`` reads the whole body, then answers; ``early`` answers after the head, then reads
    (drains) the body before closing, as servers do so that the client sees the answer rather than a reset
    (RFC 9112 9.6); ``silent`` reads the body and never answers; ``reset`` closes with a RST after the head.
    """

    def __init__(self, server_pem: bytes, key_pem: bytes, client_ca_pem: bytes | None = None, *, status: int = 200,
                 headers: dict[str, str] | None = None, body: bytes = b"{}", mode: str = "answer", capture: bool = False) -> None:
        self.context = server_context(server_pem, key_pem, client_ca_pem)
        self.status, self.body, self.mode, self.capture = status, body, mode, capture
        self.headers = headers or {"Content-Type": "application/dicom+json"}
        self.requests: list[Received] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="scripted-peer", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dicomweb"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            raw.settimeout(10)
            try:
                with self.context.wrap_socket(raw, server_side=True) as tls:
                    self._handle(tls)
            except (OSError, ValueError) as exc:  # handshake refusals are part of some tests
                self.errors.append(exc)
            finally:
                raw.close()

    def _handle(self, tls: ssl.SSLSocket) -> None:
        f = tls.makefile("rb")
        got = Received()
        self.requests.append(got)
        got.request_line = f.readline(8192).decode("latin-1").strip()
        while True:
            line = f.readline(8192)
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            got.headers[name.strip().lower()] = value.strip()
        if self.mode == "reset":
            tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a RST
            return
        if self.mode != "early":
            self._read_body(f, got)
        if self.mode == "silent":
            self._stop.wait(30)
            return
        head = f"HTTP/1.1 {self.status} Scripted\r\nContent-Length: {len(self.body)}\r\nConnection: close\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        tls.sendall(head.encode("latin-1") + b"\r\n" + self.body)
        if self.mode == "early":
            self._read_body(f, got)
        with contextlib.suppress(OSError, ValueError):
            tls.unwrap()

    def _read_body(self, f: io.BufferedReader, got: Received) -> None:
        boundary = got.headers.get("content-type", "").rpartition("boundary=")[2].strip('"')
        delimiter = b"--" + boundary.encode() if boundary else None
        captured = io.BytesIO() if self.capture else None
        tail = b""

        def consume(data: bytes) -> None:
            nonlocal tail
            got.body_bytes += len(data)
            if captured is not None:
                captured.write(data)
            if delimiter is not None:
                window = tail + data
                got.delimiters += window.count(delimiter)
                tail = window[-(len(delimiter) - 1):]

        if got.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(f.readline(1024).split(b";")[0], 16)
                if size == 0:
                    while f.readline(1024) not in (b"\r\n", b""):
                        pass
                    break
                while size:
                    piece = f.read(min(size, 65536))
                    if not piece:
                        return
                    consume(piece)
                    size -= len(piece)
                assert f.read(2) == b"\r\n"
        else:
            remaining = int(got.headers.get("content-length", "0"))
            while remaining:
                piece = f.read(min(remaining, 65536))
                if not piece:
                    return
                consume(piece)
                remaining -= len(piece)
        got.complete = True
        got.body = captured.getvalue() if captured is not None else None


class OrthancStow:
    """Orthanc + DICOMweb plugin on http://127.0.0.1 (not reachable otherwise), stunnel with mutual TLS in front."""

    def __init__(self, folder: Path, server: Credentials) -> None:
        self.folder = folder
        self.http_port, self.tls_port = free_port(), free_port()
        storage = folder / "storage"
        config = {
            "Name": "dicomguard-transfer-test", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
            "Plugins": [DICOMWEB_PLUGIN], "HttpServerEnabled": True, "HttpPort": self.http_port,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomServerEnabled": False,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        (folder / "orthanc.json").write_text(json.dumps(config))
        (folder / "stunnel.conf").write_text(
            "foreground = yes\npid =\ndebug = 4\n[stow]\n"
            f"accept = 127.0.0.1:{self.tls_port}\nconnect = 127.0.0.1:{self.http_port}\n"
            f"cert = {server.cert}\nkey = {server.key}\nCAfile = {server.ca}\n"
            "verifyChain = yes\nrequireCert = yes\nsslVersionMin = TLSv1.2\n"
        )
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.tls_port}/dicom-web"

    def start(self) -> None:
        for cmd, log in (([ORTHANC, str(self.folder / "orthanc.json")], "orthanc.log"),
                         ([shutil.which("stunnel4") or "stunnel", str(self.folder / "stunnel.conf")], "stunnel.log")):
            with open(self.folder / log, "ab") as out:
                self.procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT))
        wait_until(self._up, 20, what="Orthanc and stunnel")

    def _up(self) -> bool:
        for p in self.procs:
            if p.poll() is not None:
                raise AssertionError(f"{p.args[0]} exited: {(self.folder / 'orthanc.log').read_text()[-2000:]}")
        try:
            self.get("/system")
            with socket.create_connection(("127.0.0.1", self.tls_port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait(10)
        self.procs = []

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as rsp:
            return rsp.read()  # type: ignore[no-any-return]

    def sop_instance_uids(self) -> set[str]:
        uids = set()
        for oid in json.loads(self.get("/instances")):
            uids.add(json.loads(self.get(f"/instances/{oid}/simplified-tags"))["SOPInstanceUID"])
        return uids


def refused_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    return free_port()
