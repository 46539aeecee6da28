"""Network throughput of dicomguard against Orthanc and a bare pynetdicom SCP, measured in one run.

Workloads (the generators of ``bench/run.py``, same seed, so the bytes are the
ones the import benchmark uses):

* ``ct_cstore``: 200 CT slices (512x512, 16-bit, explicit VR little endian,
  0.53 MB each, 105 MB; ``--quick``: 50) sent by dcmtk's ``storescu`` on one association;
* ``us_cstore``: one 50.4 MB RGB ultrasound cine sent by ``storescu``;
* ``ct_cstore_each``: 20 further CT slices (the first 20 of the series with new
  UIDs, in a study of their own) sent one per association, one ``storescu`` run
  each, as modalities that open an association per image do: what an association
  costs (TLS handshake, negotiation, authorization) on top of its one object;
* ``ct_stow``: the same CT series uploaded over HTTP by one client;
* ``ct_wado``: the CT series retrieved again with one WADO-RS series request, by a
  lean client (``http.client``, connection opened before the clock, 1 MiB reads);
* ``ct_wado_repeat``: the same request once more. Orthanc keeps the files it
  read in its storage cache (``MaximumStorageCacheSize``, 128 MB by default) and
  answers a repeat from memory; dicomguard reads, decrypts and verifies every
  object on every request. The issue's target is read on the first request;
* ``ct_cget``: the CT study (stored by ``ct_cstore`` in the same session) retrieved
  with dcmtk's ``getscu``: one study-level C-GET on one association, every
  instance written to a temp folder. ``getscu`` has no TLS in dcmtk 3.6.7, so
  towards dicomguard it goes through a local ``stunnel`` TLS client holding the
  bench device's certificate (started before the clock; the TLS handshake and
  the extra loopback hop are inside it).
* ``ct_cget_nodelay``: the same C-GET with ``TCP_NODELAY=1`` in getscu's
  environment (dcmtk 3.6.7 as Debian builds it leaves Nagle's algorithm on unless
  told; each C-STORE response then waits for the server's delayed ACK, about
  40 ms per object whatever the server: ``ct_cget`` measures mostly that wait).
  The servers keep their own defaults.

Targets, each started fresh (new folder, new free loopback ports) for every
repetition and stopped afterwards:

* ``dicomguard``: ``dicomguard serve`` on a new home: DIMSE over mutual TLS
  (``storescu +tls`` with a device certificate issued by ``dicomguard device
  add``) and DICOMweb over HTTPS with a bearer token. The full pipeline: every
  object is parsed, validated, hashed, encrypted, fsync'd and indexed before
  the C-STORE response (or the STOW-RS answer) goes out.
* ``orthanc``: Orthanc with the Debian package's configuration (``/etc/orthanc``)
  except storage/index folders, ports, ``RemoteAccessAllowed: false``,
  ``AuthenticationEnabled: false`` and the DICOMweb plugin; plaintext DIMSE
  and HTTP. ``orthanc_rest`` is its REST upload (``POST /instances``, one file
  per request), ``orthanc_stow`` its DICOMweb plugin's STOW-RS.
* ``bare_tuned``: a pynetdicom SCP with TLS (same hardened TLS context as
  dicomguard, mutual authentication) whose handler only moves the received
  file into place: ``STORE_RECV_CHUNKED_DATASET`` (datasets streamed to disk
  while they arrive) and unlimited maximum PDU. The library's ceiling.
* ``bare_untuned``: the same SCP with pynetdicom's defaults (16 KB PDUs,
  dataset in memory), writing ``event.encoded_dataset()`` to a file.

The bare SCPs never fsync; Orthanc fsyncs each file (``SyncStorageArea``, a
Debian default); dicomguard fsyncs every blob and index batch.

Timed: the wall clock of ``storescu`` / ``getscu`` (process start, TLS handshake,
association, all C-STOREs or the C-GET with its sub-operations, release), or of the HTTP requests (one
``requests.Session``, or for the WADO-RS rows one ``http.client`` connection; upload bodies are read into memory
before the clock starts).
``os.sync()`` runs before every timed section. Every result is checked (the
target holds all instances; WADO-RS answers every part; C-GET wrote one file
per instance, of the input's size) so a run that
silently lost objects cannot look fast.

Throughput = input instances or input bytes (MB = 10**6 bytes) / wall seconds
of the median repetition.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_scripts import load_script  # noqa: E402

DEVICE_AE = "BENCHSCU"
TECH_USER = "bench.tech"
ORTHANC_ETC = Path("/etc/orthanc")
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
MB = 1e6

# Workload -> (input, targets in display order).
WORKLOADS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ct_cstore": ("ct", ("dicomguard", "orthanc", "bare_tuned", "bare_untuned")),
    "us_cstore": ("us", ("dicomguard", "orthanc", "bare_tuned", "bare_untuned")),
    "ct_cstore_each": ("each", ("dicomguard", "orthanc", "bare_tuned", "bare_untuned")),
    "ct_stow": ("ct", ("dicomguard", "orthanc_rest", "orthanc_stow")),
    "ct_wado": ("ct", ("dicomguard", "orthanc")),
    "ct_wado_repeat": ("ct", ("dicomguard", "orthanc")),
    "ct_cget": ("ct", ("dicomguard", "orthanc")),  # the bare SCPs have no C-GET
    "ct_cget_nodelay": ("ct", ("dicomguard", "orthanc")),
}
# What one repetition starts: each session is one fresh server.
SESSIONS = ("dicomguard-dimse", "dicomguard-stow", "orthanc-dimse", "orthanc-rest", "orthanc-stow", "bare_tuned", "bare_untuned")


@dataclass(frozen=True)
class IssueTarget:
    name: str
    workload: str
    metric: str  # "instances_per_s" or "mb_per_s"
    versus: str
    minimum: float


ISSUE_TARGETS = (
    IssueTarget("CT C-STORE inst/s >= 6x Orthanc", "ct_cstore", "instances_per_s", "orthanc", 6.0),
    IssueTarget("CT C-STORE inst/s >= 75 % of bare tuned SCP", "ct_cstore", "instances_per_s", "bare_tuned", 0.75),
    IssueTarget("US cine C-STORE MB/s >= 80 % of bare tuned SCP", "us_cstore", "mb_per_s", "bare_tuned", 0.80),
    IssueTarget("STOW-RS inst/s >= 2x Orthanc STOW-RS", "ct_stow", "instances_per_s", "orthanc_stow", 2.0),
    IssueTarget("WADO-RS series >= 1.5x Orthanc WADO-RS", "ct_wado", "instances_per_s", "orthanc", 1.5),
    IssueTarget("C-GET 200-instance study >= 2x Orthanc", "ct_cget", "instances_per_s", "orthanc", 2.0),
    IssueTarget("C-GET, getscu with Nagle off, >= 2x Orthanc", "ct_cget_nodelay", "instances_per_s", "orthanc", 2.0),
)


@dataclass
class Inputs:
    ct: list[Path]
    us: list[Path]
    ct_bytes: list[bytes]  # the CT files in memory, for the HTTP uploads
    study_uid: str
    series_uid: str
    ct_sizes: dict[str, int]  # SOP Instance UID -> file size, to check what C-GET wrote
    each: list[Path]  # CT slices of a study of their own, sent one per association

    def files(self, name: str) -> list[Path]:
        return {"ct": self.ct, "us": self.us, "each": self.each}[name]

    def total_bytes(self, name: str) -> int:
        return sum(p.stat().st_size for p in self.files(name))


@dataclass
class Timings:
    seconds: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    extras: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def add(self, workload: str, target: str, secs: float) -> None:
        self.seconds.setdefault((workload, target), []).append(secs)

    def extra(self, target: str, name: str, value: float) -> None:
        self.extras.setdefault((target, name), []).append(value)


class BenchError(RuntimeError):
    pass


# -- small helpers ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dicomguard_cli() -> list[str]:
    script = Path(sys.executable).with_name("dicomguard")
    return [str(script)] if script.exists() else [sys.executable, "-m", "dicomguard"]


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


class Server:
    """A child process with stdout/stderr in files (no pipe to drain); stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, cmd: list[str], folder: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.out = folder / f"{name}.stdout"
        self.err = folder / f"{name}.stderr"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=folder, start_new_session=True)
        self.started = time.perf_counter()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def fail(self, message: str) -> BenchError:
        return BenchError(f"{self.name}: {message}\n--- stdout:\n{_tail(self.out)}\n--- stderr:\n{_tail(self.err)}")

    def wait_until(self, ready: Callable[[], bool], what: str) -> float:
        """Poll ``ready`` until true; returns the start-up seconds. Raises if the process dies or times out."""
        deadline = self.started + STARTUP_TIMEOUT_S
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise self.fail(f"exited with {self.proc.returncode} before {what}")
            with contextlib.suppress(Exception):
                if ready():
                    return time.perf_counter() - self.started
            time.sleep(0.05)
        raise self.fail(f"no {what} after {STARTUP_TIMEOUT_S:.0f} s")

    def stdout_has(self, marker: str) -> bool:
        return marker in self.out.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def storescu(files: list[Path], port: int, called_ae: str, tls: tuple[Path, Path, Path] | None) -> float:
    """All ``files`` on one association; returns storescu's wall seconds."""
    cmd = ["storescu", "-aet", DEVICE_AE, "-aec", called_ae]
    if tls is not None:
        key, cert, ca = tls
        cmd += ["+tls", str(key), str(cert), "+cf", str(ca)]
    cmd += ["127.0.0.1", str(port), *map(str, files)]
    return _timed_tool(cmd, port)


def storescu_each(files: list[Path], port: int, called_ae: str, tls: tuple[Path, Path, Path] | None) -> float:
    """Each file on an association of its own (one ``storescu`` run per file, one after the other); total wall seconds."""
    return sum(storescu([f], port, called_ae, tls) for f in files)


def _timed_tool(cmd: list[str], port: int, env: dict[str, str] | None = None) -> float:
    """Wall seconds of one dcmtk tool run (after os.sync()); a failure raises with its output's tail."""
    os.sync()
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError(f"{cmd[0]} to port {port} failed ({proc.returncode}): {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return seconds


CGET_META_SLACK = 1024  # bytes a received file may differ from its input: the File Meta Information is getscu's own


def getscu(port: int, called_ae: str, study_uid: str, out: Path, nodelay: bool = False) -> float:
    """One study-level C-GET (study root) on one association, every instance written into ``out`` (created here, empty);
    returns getscu's wall seconds. Default options otherwise: 16 KB receive PDU, uncompressed syntaxes, no fsync.
    ``nodelay``: ``TCP_NODELAY=1`` in getscu's environment (dcmtk then switches Nagle's algorithm off)."""
    out.mkdir(parents=True)
    cmd = ["getscu", "-S", "-aet", DEVICE_AE, "-aec", called_ae, "-k", "QueryRetrieveLevel=STUDY",
           "-k", f"StudyInstanceUID={study_uid}", "-od", str(out), "127.0.0.1", str(port)]
    return _timed_tool(cmd, port, env=os.environ | {"TCP_NODELAY": "1"} if nodelay else None)


def check_cget(out: Path, expected: dict[str, int]) -> int:
    """What getscu wrote: one file per input instance (by SOP Instance UID), each the input's size give or take the
    File Meta Information. Returns the bytes received."""
    received = {_sop_uid(f): f.stat().st_size for f in out.iterdir()}
    if len(received) != len(expected) or received.keys() != expected.keys():
        raise BenchError(f"C-GET wrote {len(received)} instances ({len(received.keys() & expected.keys())} of the input's), "
                         f"expected {len(expected)}")
    off = {uid: size - expected[uid] for uid, size in received.items() if abs(size - expected[uid]) > CGET_META_SLACK}
    if off:
        raise BenchError(f"C-GET: {len(off)} files differ from their input by more than {CGET_META_SLACK} bytes, e.g. {next(iter(off.values()))}")
    return sum(received.values())


@contextlib.contextmanager
def tls_tunnel(folder: Path, connect_port: int, tls: tuple[Path, Path, Path]) -> Iterator[tuple[Server, int]]:
    """A plaintext loopback port forwarded over mutual TLS (stunnel in client mode, with the device's certificate)
    for dcmtk tools built without TLS (getscu). The TLS session is opened when a client connects, not before."""
    key, cert, ca = tls
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = folder / "stunnel.conf"
    conf.write_text("\n".join([
        "foreground = yes", "pid =", "debug = 5",
        "[dimse]", "client = yes", f"accept = 127.0.0.1:{port}", f"connect = 127.0.0.1:{connect_port}",
        f"cert = {cert}", f"key = {key}", f"CAfile = {ca}", "verifyChain = yes", "checkIP = 127.0.0.1",
        "sslVersionMin = TLSv1.2",
        "socket = l:TCP_NODELAY=1", "socket = r:TCP_NODELAY=1",  # Nagle off on both sides of the tunnel
    ]) + "\n", encoding="utf-8")
    server = Server("stunnel", [stunnel_binary(), str(conf)], folder)
    try:
        server.wait_until(lambda: "Configuration successful" in server.err.read_text(errors="replace"), "configuration")
        yield server, port
    finally:
        server.stop()


def stunnel_binary() -> str:
    return shutil.which("stunnel") or shutil.which("stunnel4") or "stunnel"


def multipart_body(parts: list[bytes]) -> tuple[bytes, str]:
    """A STOW-RS request body (PS3.18 10.5.1.1) and its Content-Type."""
    boundary = "dicomguard-bench-" + secrets.token_hex(16)
    chunks: list[bytes] = []
    for data in parts:
        chunks += [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(), data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="application/dicom"; boundary={boundary}'


WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def _count_parts(url: str, content_type: str, body: bytes, expected_parts: int) -> None:
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if m is None:
        raise BenchError(f"WADO-RS {url}: no multipart boundary in {content_type!r}")
    parts = body.count(b"--" + m.group(1).encode()) - 1  # every delimiter, minus the closing one
    if parts != expected_parts:
        raise BenchError(f"WADO-RS {url}: {parts} parts, expected {expected_parts}")


def wado_series(url: str, expected_parts: int, bearer: str | None = None, ca: Path | None = None) -> tuple[float, int]:
    """GET a series as multipart/related application/dicom with a lean client; returns (seconds, body bytes).

    http.client on a connection opened (TLS handshake included) before the clock, the body read in 1 MiB
    pieces: the client's own CPU stays small, so on a 2-core machine the server, not the client, sets the
    pace (with ``requests``, the client's CPU per request was about the server's: 0.28 s against 0.27 s). Checks the part count."""
    split = urllib.parse.urlsplit(url)
    assert split.hostname is not None and split.port is not None
    if split.scheme == "https":
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(split.hostname, split.port, context=context, timeout=120)
    else:
        conn = http.client.HTTPConnection(split.hostname, split.port, timeout=120)
    headers = {"Accept": WADO_ACCEPT, "Accept-Encoding": "identity"} | ({"Authorization": f"Bearer {bearer}"} if bearer else {})
    try:
        conn.connect()
        os.sync()
        start = time.perf_counter()
        conn.request("GET", split.path, headers=headers)
        r = conn.getresponse()
        if r.status != 200:
            raise BenchError(f"WADO-RS {url}: HTTP {r.status}: {r.read(500)!r}")
        chunks = []
        while chunk := r.read(1 << 20):
            chunks.append(chunk)
        seconds = time.perf_counter() - start
    finally:
        conn.close()
    body = b"".join(chunks)
    _count_parts(url, r.getheader("content-type", ""), body, expected_parts)
    return seconds, len(body)


# -- dicomguard -------------------------------------------------------------------------


@dataclass
class DicomguardTarget:
    server: Server
    dimse_port: int
    base: str  # https://127.0.0.1:Q/dicomweb
    ca: Path
    token: str
    tls: tuple[Path, Path, Path]  # storescu key, cert, CA
    startup_s: float
    setup_s: float


def _dicomguard_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DICOMGUARD_HOME", "DICOMGUARD_PASSPHRASE")}
    return env | {"DICOMGUARD_HOME": str(home), "DICOMGUARD_PASSPHRASE": BENCH.PASSPHRASE}


BENCH_DEPARTMENT = "BENCH"


def _setup_dicomguard_home(home: Path, device_dir: Path, database: str = "", init_env: dict[str, str] | None = None,
                           device: bool = True) -> str:
    """A new home, a device certificate for storescu and a technologist token for DICOMweb, all made with the CLI.

    ``database``: ``init --database`` (empty: SQLite in the home); ``init_env``: extra variables for these CLI calls
    (e.g. ``DICOMGUARD_STORAGE__*``, which ``init`` writes into the home's config.toml); ``device``: False for
    DICOMweb-only benchmarks (no storescu device)."""
    env = _dicomguard_env(home) | (init_env or {})

    def cli(*args: str) -> str:
        proc = subprocess.run([*_dicomguard_cli(), *args], check=False, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BenchError(f"dicomguard {' '.join(args[:2])} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
        return proc.stdout

    cli("init", "--admin", "admin", "--json", *(("--database", database) if database else ()))  # passphrase: DICOMGUARD_PASSPHRASE
    if device:
        cli("device", "add", "--ae", DEVICE_AE, "--name", "bench storescu", "--out", str(device_dir),
            "--operations", "echo,store,query,retrieve", "--department", BENCH_DEPARTMENT)
    # The admin role may not store: STOW-RS and WADO-RS run as a technologist of the device's department
    # (the default policies: store, and read back recent work of their own modalities in their department).
    user = json.loads(cli("user", "add", TECH_USER, "--role", "technologist", "--department", BENCH_DEPARTMENT,
                          "--modality", "CT", "--modality", "US", "--json"))
    if user.get("attributes", {}).get("modalities") != ["CT", "US"]:
        raise BenchError(f"dicomguard user add: unexpected attributes {user.get('attributes')!r}")
    token = cli("token", "create", "--user", TECH_USER, "--ttl", "1h").strip()
    if not token or len(token.split()) != 1:
        raise BenchError(f"dicomguard token create: expected one token on stdout, got {token[:200]!r}")
    return token


@contextlib.contextmanager
def dicomguard_target(folder: Path, database: str = "", init_env: dict[str, str] | None = None,
                      with_device: bool = True, workers: int = 1) -> Iterator[DicomguardTarget]:
    folder.mkdir(parents=True)
    home, device = folder / "home", folder / "device"
    t0 = time.perf_counter()
    token = _setup_dicomguard_home(home, device, database, init_env, with_device)
    setup_s = time.perf_counter() - t0
    dimse_port, https_port = free_port(), free_port()
    cmd = [*_dicomguard_cli(), "serve", "--dimse-port", str(dimse_port), "--https-port", str(https_port), "--host", "127.0.0.1",
           *(("--workers", str(workers)) if workers > 1 else ())]
    server = Server("dicomguard", cmd, folder, _dicomguard_env(home))
    try:
        startup = server.wait_until(lambda: server.stdout_has("READY dimse="), "READY line")
        yield DicomguardTarget(server, dimse_port, f"https://127.0.0.1:{https_port}/dicomweb", home / "tls" / "ca.pem", token,
                               (device / "key.pem", device / "cert.pem", device / "ca.pem"), startup, setup_s)
    finally:
        server.stop()


def _http_session(bearer: str | None = None, verify: Path | None = None):  # type: ignore[no-untyped-def]
    import requests

    s = requests.Session()
    s.trust_env = False  # no proxy for loopback, and REQUESTS_CA_BUNDLE must not replace ``verify``
    s.headers["Accept-Encoding"] = "identity"  # random pixels: compression would only cost time, on both sides
    if bearer:
        s.headers["Authorization"] = f"Bearer {bearer}"
    if verify is not None:
        s.verify = str(verify)
    return s


def _dicomguard_count(dg: DicomguardTarget, session, study: str, series: str | None = None) -> int:  # type: ignore[no-untyped-def]
    url = f"{dg.base}/studies/{study}/series/{series}/instances" if series else f"{dg.base}/studies/{study}/instances"
    r = session.get(url, headers={"Accept": "application/dicom+json"})
    if r.status_code == 204:
        return 0
    r.raise_for_status()
    return len(r.json())


def _uids(path: Path) -> tuple[str, str]:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


def _sop_uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)


def session_dicomguard_dimse(inputs: Inputs, folder: Path, t: Timings) -> None:
    with dicomguard_target(folder) as dg, _http_session(dg.token, dg.ca) as http:
        t.extra("dicomguard", "startup_s", dg.startup_s)
        t.extra("dicomguard", "setup_s", dg.setup_s)
        t.add("ct_cstore", "dicomguard", storescu(inputs.ct, dg.dimse_port, "DICOMGUARD", dg.tls))
        if (n := _dicomguard_count(dg, http, inputs.study_uid, inputs.series_uid)) != len(inputs.ct):
            raise dg.server.fail(f"holds {n} CT instances after C-STORE, expected {len(inputs.ct)}")
        t.add("us_cstore", "dicomguard", storescu(inputs.us, dg.dimse_port, "DICOMGUARD", dg.tls))
        us_study, _ = _uids(inputs.us[0])
        if (n := _dicomguard_count(dg, http, us_study)) != 1:
            raise dg.server.fail(f"holds {n} US instances after C-STORE, expected 1")
        t.add("ct_cstore_each", "dicomguard", storescu_each(inputs.each, dg.dimse_port, "DICOMGUARD", dg.tls))
        if (n := _dicomguard_count(dg, http, *_uids(inputs.each[0]))) != len(inputs.each):
            raise dg.server.fail(f"holds {n} instances after one association per image, expected {len(inputs.each)}")
        series_url = f"{dg.base}/studies/{inputs.study_uid}/series/{inputs.series_uid}"
        secs, body = wado_series(series_url, len(inputs.ct), dg.token, dg.ca)
        t.add("ct_wado", "dicomguard", secs)
        t.extra("dicomguard", "wado_body_bytes", body)
        t.add("ct_wado_repeat", "dicomguard", wado_series(series_url, len(inputs.ct), dg.token, dg.ca)[0])
        # C-GET of the study ct_cstore stored, by the same device (registered for "retrieve", department BENCH).
        with tls_tunnel(folder / "stunnel", dg.dimse_port, dg.tls) as (tunnel, port):
            for workload, nodelay in (("ct_cget", False), ("ct_cget_nodelay", True)):
                try:
                    secs = getscu(port, "DICOMGUARD", inputs.study_uid, folder / "cget", nodelay)
                    received = check_cget(folder / "cget", inputs.ct_sizes)
                except BenchError as exc:
                    raise dg.server.fail(f"{exc}\n--- stunnel:\n{_tail(tunnel.err)}") from None
                t.add(workload, "dicomguard", secs)
                t.extra("dicomguard", f"{workload}_bytes", received)
                shutil.rmtree(folder / "cget")


def session_dicomguard_stow(inputs: Inputs, folder: Path, t: Timings) -> None:
    body, content_type = multipart_body(inputs.ct_bytes)
    with dicomguard_target(folder) as dg, _http_session(dg.token, dg.ca) as http:
        headers = {"Content-Type": content_type, "Accept": "application/dicom+json"}
        os.sync()
        start = time.perf_counter()
        r = http.post(f"{dg.base}/studies", data=body, headers=headers)
        secs = time.perf_counter() - start
        if r.status_code != 200:
            raise dg.server.fail(f"STOW-RS answered HTTP {r.status_code}: {r.text[:1000]}")
        stored = len(r.json().get("00081199", {}).get("Value", []))  # ReferencedSOPSequence
        if stored != len(inputs.ct):
            raise dg.server.fail(f"STOW-RS stored {stored} of {len(inputs.ct)}")
        t.add("ct_stow", "dicomguard", secs)


# -- Orthanc ----------------------------------------------------------------------------


def _strip_json_comments(text: str) -> str:
    """Orthanc's configuration files are JSON with /* */ and // comments; drop them outside strings."""
    out: list[str] = []
    i, n, in_string = 0, len(text), False
    while i < n:
        c = text[i]
        if in_string:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
            out.append(c)
        elif text.startswith("//", i):
            i = text.find("\n", i)
            if i < 0:
                break
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def orthanc_binary() -> str:
    return shutil.which("Orthanc") or "/usr/sbin/Orthanc"


def dicomweb_plugin() -> str:
    for candidate in ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", *sorted(map(str, Path("/usr/lib/orthanc").glob("libOrthancDicomWeb.so*")))):
        if Path(candidate).exists():
            return candidate
    proc = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], check=False, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if "DicomWeb" in line and ".so" in line:
            return line.strip()
    raise BenchError("the Orthanc DICOMweb plugin (orthanc-dicomweb) is not installed")


def orthanc_config(storage: Path, dicom_port: int, http_port: int) -> dict[str, object]:
    """The Debian package's configuration (all of /etc/orthanc/*.json, as its service loads it) with the bench's overrides."""
    config: dict[str, object] = {}
    for path in sorted(ORTHANC_ETC.glob("*.json")):
        config.update(json.loads(_strip_json_comments(path.read_text(encoding="utf-8"))))
    config.update({
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [dicomweb_plugin()],
    })
    return config


ORTHANC_OVERRIDES = ("StorageDirectory", "IndexDirectory", "DicomPort", "HttpPort", "RemoteAccessAllowed", "AuthenticationEnabled", "Plugins")
ORTHANC_NOTABLE = ("MaximumPduLength", "SyncStorageArea", "StorageCompression", "DicomThreadsCount", "HttpThreadsCount",
                   "KeepAlive", "TcpNoDelay", "HttpCompressionEnabled", "OverwriteInstances", "StorageAccessOnFind", "ConcurrentJobs")


@dataclass
class OrthancTarget:
    server: Server
    dicom_port: int
    base: str
    startup_s: float


@contextlib.contextmanager
def orthanc_target(folder: Path, extra_config: dict[str, object] | None = None) -> Iterator[OrthancTarget]:
    """``extra_config``: top-level keys replacing the configuration's (e.g. ``Plugins`` and ``PostgreSQL``)."""
    folder.mkdir(parents=True)
    dicom_port, http_port = free_port(), free_port()
    cfg = folder / "orthanc.json"
    config = orthanc_config(folder / "db", dicom_port, http_port) | (extra_config or {})
    cfg.write_text(json.dumps(config, indent=2), encoding="utf-8")
    server = Server("orthanc", [orthanc_binary(), str(cfg)], folder)
    base = f"http://127.0.0.1:{http_port}"

    def ready() -> bool:
        with socket.create_connection(("127.0.0.1", dicom_port), timeout=1):
            pass
        return _http_session().get(f"{base}/plugins", timeout=2).ok

    try:
        startup = server.wait_until(ready, "HTTP and DICOM ports")
        plugins = _http_session().get(f"{base}/plugins", timeout=5).json()
        if "dicom-web" not in plugins:
            raise server.fail(f"DICOMweb plugin not loaded (plugins: {plugins})")
        yield OrthancTarget(server, dicom_port, base, startup)
    finally:
        server.stop()


def _orthanc_instances(o: OrthancTarget) -> int:
    return int(_http_session().get(f"{o.base}/statistics", timeout=30).json()["CountInstances"])


# Orthanc answers C-GET only for a known modality (DicomAlwaysAllowGet is false in the Debian configuration): the
# bench's AE title is registered for the C-STORE and C-GET it sends, nothing else. Only the orthanc-dimse session.
ORTHANC_CGET_MODALITIES = {"DicomModalities": {"bench": {
    "AET": DEVICE_AE, "Host": "127.0.0.1", "Port": 104,  # the port is never used: C-GET answers on the same association
    "AllowEcho": True, "AllowStore": True, "AllowGet": True, "AllowFind": False, "AllowMove": False,
}}}


def session_orthanc_dimse(inputs: Inputs, folder: Path, t: Timings) -> None:
    with orthanc_target(folder, ORTHANC_CGET_MODALITIES) as o:
        t.extra("orthanc", "startup_s", o.startup_s)
        t.add("ct_cstore", "orthanc", storescu(inputs.ct, o.dicom_port, "ORTHANC", None))
        if (n := _orthanc_instances(o)) != len(inputs.ct):
            raise o.server.fail(f"holds {n} instances after the CT C-STORE, expected {len(inputs.ct)}")
        t.add("us_cstore", "orthanc", storescu(inputs.us, o.dicom_port, "ORTHANC", None))
        if (n := _orthanc_instances(o)) != len(inputs.ct) + 1:
            raise o.server.fail(f"holds {n} instances after the US C-STORE, expected {len(inputs.ct) + 1}")
        t.add("ct_cstore_each", "orthanc", storescu_each(inputs.each, o.dicom_port, "ORTHANC", None))
        if (n := _orthanc_instances(o)) != len(inputs.ct) + 1 + len(inputs.each):
            raise o.server.fail(f"holds {n} instances after one association per image, expected {len(inputs.ct) + 1 + len(inputs.each)}")
        series_url = f"{o.base}/dicom-web/studies/{inputs.study_uid}/series/{inputs.series_uid}"
        secs, body = wado_series(series_url, len(inputs.ct))
        t.add("ct_wado", "orthanc", secs)
        t.extra("orthanc", "wado_body_bytes", body)
        t.add("ct_wado_repeat", "orthanc", wado_series(series_url, len(inputs.ct))[0])
        for workload, nodelay in (("ct_cget", False), ("ct_cget_nodelay", True)):
            try:
                secs = getscu(o.dicom_port, "ORTHANC", inputs.study_uid, folder / "cget", nodelay)
                received = check_cget(folder / "cget", inputs.ct_sizes)
            except BenchError as exc:
                raise o.server.fail(str(exc)) from None
            t.add(workload, "orthanc", secs)
            t.extra("orthanc", f"{workload}_bytes", received)
            shutil.rmtree(folder / "cget")


def session_orthanc_rest(inputs: Inputs, folder: Path, t: Timings) -> None:
    with orthanc_target(folder) as o, _http_session() as http:
        headers = {"Content-Type": "application/dicom"}
        os.sync()
        start = time.perf_counter()
        for data in inputs.ct_bytes:
            r = http.post(f"{o.base}/instances", data=data, headers=headers)
            if r.status_code != 200:
                raise o.server.fail(f"POST /instances answered HTTP {r.status_code}: {r.text[:500]}")
        secs = time.perf_counter() - start
        if (n := _orthanc_instances(o)) != len(inputs.ct):
            raise o.server.fail(f"holds {n} instances after the REST upload, expected {len(inputs.ct)}")
        t.add("ct_stow", "orthanc_rest", secs)


def session_orthanc_stow(inputs: Inputs, folder: Path, t: Timings) -> None:
    body, content_type = multipart_body(inputs.ct_bytes)
    with orthanc_target(folder) as o, _http_session() as http:
        headers = {"Content-Type": content_type, "Accept": "application/dicom+json"}
        os.sync()
        start = time.perf_counter()
        r = http.post(f"{o.base}/dicom-web/studies", data=body, headers=headers)
        secs = time.perf_counter() - start
        if r.status_code != 200:
            raise o.server.fail(f"STOW-RS answered HTTP {r.status_code}: {r.text[:500]}")
        if (n := _orthanc_instances(o)) != len(inputs.ct):
            raise o.server.fail(f"holds {n} instances after STOW-RS, expected {len(inputs.ct)}")
        t.add("ct_stow", "orthanc_stow", secs)


# -- bare pynetdicom SCP -------------------------------------------------------------------


@dataclass(frozen=True)
class ThrowawayPki:
    """A CA, a server certificate (bare SCP) and a client certificate (storescu), EC P-256 like dicomguard's."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(folder: Path) -> ThrowawayPki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True)
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dicomguard bench")])

    def builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=2)))

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("bench throwaway CA")
    ca_cert = (builder(ca_name, ca_name, ca_key).add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .sign(ca_key, hashes.SHA256()))
    paths = ThrowawayPki(folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "client.pem", folder / "client.key")
    paths.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for cn, usage, cert_path, key_path in (
        ("localhost", ExtendedKeyUsageOID.SERVER_AUTH, paths.server_cert, paths.server_key),
        (DEVICE_AE, ExtendedKeyUsageOID.CLIENT_AUTH, paths.client_cert, paths.client_key),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (builder(name(cn), ca_name, key).add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(pem_key(key))
    return paths


def serve_bare_scp(variant: str, port: int, out: Path, pki: Path) -> None:
    """Child-process entry point (``--bare-scp``): a pynetdicom C-STORE SCP over mutual TLS that only writes files."""
    from pynetdicom import (
        AE,
        ALL_TRANSFER_SYNTAXES,
        AllStoragePresentationContexts,
        _config,
        evt,
    )

    from dicomguard.pki.tls import server_context

    # ``server_context``: the same hardened TLS parameters (TLS 1.2+, AEAD suites, client certificate) as dicomguard.

    tuned = variant == "tuned"
    _config.STORE_RECV_CHUNKED_DATASET = tuned
    ae = AE(ae_title="BARESCP")
    if tuned:
        ae.maximum_pdu_size = 0  # unlimited: the peer sends PDUs as large as it likes
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    counter = iter(range(1 << 62))

    def on_store_tuned(event) -> int:  # type: ignore[no-untyped-def]
        # The dataset was streamed into a temporary Part 10 file on the same file system (TMPDIR): rename it.
        os.replace(event.dataset_path, out / f"{next(counter):06d}.dcm")
        return 0x0000

    def on_store_untuned(event) -> int:  # type: ignore[no-untyped-def]
        (out / f"{next(counter):06d}.dcm").write_bytes(event.encoded_dataset())
        return 0x0000

    ctx = server_context((pki / "server.pem").read_bytes(), (pki / "server.key").read_bytes(), (pki / "ca.pem").read_bytes())
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    handler = on_store_tuned if tuned else on_store_untuned
    server = ae.start_server(("127.0.0.1", port), block=False, ssl_context=ctx, evt_handlers=[(evt.EVT_C_STORE, handler)])
    print(f"READY port={port}", flush=True)
    stop.wait()
    server.shutdown()


@contextlib.contextmanager
def bare_target(folder: Path, variant: str, pki: ThrowawayPki) -> Iterator[tuple[Server, int, Path, float]]:
    out, tmp = folder / "out", folder / "tmp"
    out.mkdir(parents=True)
    tmp.mkdir()
    port = free_port()
    env = os.environ | {"TMPDIR": str(tmp)}  # chunked datasets land next to ``out``: the final move is a rename
    cmd = [sys.executable, str(Path(__file__).resolve()), "--bare-scp", variant, "--port", str(port),
           "--bare-out", str(out), "--bare-pki", str(pki.ca.parent)]
    server = Server(f"bare_{variant}", cmd, folder, env)
    try:
        startup = server.wait_until(lambda: server.stdout_has("READY port="), "READY line")
        yield server, port, out, startup
    finally:
        server.stop()


def session_bare(variant: str) -> Callable[[Inputs, Path, Timings, ThrowawayPki], None]:
    target = f"bare_{variant}"

    def run(inputs: Inputs, folder: Path, t: Timings, pki: ThrowawayPki) -> None:
        tls = (pki.client_key, pki.client_cert, pki.ca)
        with bare_target(folder, variant, pki) as (server, port, out, startup):
            t.extra(target, "startup_s", startup)
            for workload, files, send in (("ct_cstore", inputs.ct, storescu), ("us_cstore", inputs.us, storescu),
                                          ("ct_cstore_each", inputs.each, storescu_each)):
                before = len(list(out.iterdir()))
                t.add(workload, target, send(files, port, "BARESCP", tls))
                if (n := len(list(out.iterdir())) - before) != len(files):
                    raise server.fail(f"wrote {n} files for {workload}, expected {len(files)}")

    return run


# -- measurement and report -----------------------------------------------------------------


def run_session(name: str, inputs: Inputs, folder: Path, t: Timings, pki: ThrowawayPki) -> None:
    if name == "dicomguard-dimse":
        session_dicomguard_dimse(inputs, folder, t)
    elif name == "dicomguard-stow":
        session_dicomguard_stow(inputs, folder, t)
    elif name == "orthanc-dimse":
        session_orthanc_dimse(inputs, folder, t)
    elif name == "orthanc-rest":
        session_orthanc_rest(inputs, folder, t)
    elif name == "orthanc-stow":
        session_orthanc_stow(inputs, folder, t)
    elif name in ("bare_tuned", "bare_untuned"):
        session_bare(name.removeprefix("bare_"))(inputs, folder, t, pki)
    else:
        raise ValueError(name)


def measure(inputs: Inputs, scratch: Path, pki: ThrowawayPki, reps: int, warmup: int,
            sessions: tuple[str, ...] = SESSIONS) -> Timings:
    """Every session ``warmup`` times untimed, then ``reps`` times; the order rotates per repetition."""
    timings = Timings()
    for rep in range(-warmup, reps):
        k = rep % len(sessions)
        label = "warm-up" if rep < 0 else f"rep {rep + 1}/{reps}"
        round_start = time.perf_counter()
        t = Timings() if rep < 0 else timings
        for name in sessions[k:] + sessions[:k]:
            folder = scratch / f"{name}-{rep}"
            try:
                run_session(name, inputs, folder, t, pki)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        print(f"  {label} done in {time.perf_counter() - round_start:.0f} s", flush=True)
    return timings


def _row(secs: list[float], instances: int, nbytes: int) -> dict[str, object]:
    med = statistics.median(secs)
    return {"seconds": secs, "median_s": med, "instances_per_s": instances / med, "mb_per_s": nbytes / MB / med}


def summarize(inputs: Inputs, t: Timings) -> tuple[dict[str, dict], list[dict]]:
    results: dict[str, dict] = {}
    for workload, (source, targets) in WORKLOADS.items():
        n, nbytes = len(inputs.files(source)), inputs.total_bytes(source)
        res: dict[str, dict] = {"input": {"instances": n, "bytes": nbytes}}
        for target in targets:
            if (workload, target) in t.seconds:
                res[target] = _row(t.seconds[(workload, target)], n, nbytes)
        if "dicomguard" not in res:
            continue  # not measured (``--sessions``)
        dg = res["dicomguard"]["median_s"]
        res["ratios"] = {f"dicomguard/{target}": res[target]["median_s"] / dg for target in targets if target in res and target != "dicomguard"}
        results[workload] = res
    verdicts = []
    for goal in ISSUE_TARGETS:
        res = results.get(goal.workload, {})
        if goal.versus not in res:
            continue
        ratio = res["dicomguard"][goal.metric] / res[goal.versus][goal.metric]
        verdicts.append({"target": goal.name, "workload": goal.workload, "metric": goal.metric, "versus": goal.versus,
                         "minimum_ratio": goal.minimum, "ratio": ratio, "met": ratio >= goal.minimum})
    return results, verdicts


def _version(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=20)
        return (proc.stdout or proc.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def _stunnel_version() -> str:
    """``stunnel -version`` prints an "Initializing ..." line before its version (on stderr)."""
    try:
        proc = subprocess.run([stunnel_binary(), "-version"], check=False, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return next((line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("stunnel ")), "unknown")


def _dpkg_version(package: str) -> str:
    return _version(["dpkg-query", "-W", "-f", "${Version}", package])


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def _git_state() -> dict[str, object]:
    """The commit measured and how many files differ from it (others may be editing the tree)."""
    repo = HERE.parent
    commit = _version(["git", "-C", str(repo), "rev-parse", "HEAD"])
    try:
        status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], check=False, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        status = ""
    return {"commit": commit, "uncommitted_paths": len(status.splitlines())}


def machine_info(root: Path) -> dict[str, object]:
    import pynetdicom
    import requests

    info = BENCH.machine_info(root)
    info.update({
        "cpu": _cpu_model(),
        "pynetdicom": pynetdicom.__version__,
        "requests": requests.__version__,
        "openssl": ssl.OPENSSL_VERSION,
        "storescu": _version(["storescu", "--version"]),
        "getscu": _version(["getscu", "--version"]),
        "stunnel": _stunnel_version(),
        "orthanc": _version([orthanc_binary(), "--version"]),
        "orthanc_dicomweb_plugin": _dpkg_version("orthanc-dicomweb"),
        "orthanc_dicomweb_plugin_path": dicomweb_plugin(),
        "dicomguard_git": _git_state(),
    })
    return info


def settings_report() -> dict[str, object]:
    from dicomguard.config import NetworkSettings

    overrides = {k: v for k, v in sorted(os.environ.items()) if k.startswith("DICOMGUARD_") and k not in ("DICOMGUARD_HOME", "DICOMGUARD_PASSPHRASE")}
    orthanc = orthanc_config(Path("STORAGE"), 0, 0)
    return {
        "dicomguard": {"network_defaults": NetworkSettings().model_dump(), "env_overrides": overrides, "defaults": not overrides},
        "orthanc": {"config_source": f"{ORTHANC_ETC}/*.json (Debian package)",
                    "overridden": [*ORTHANC_OVERRIDES, "DicomModalities (orthanc-dimse session)"],
                    "dicom_modalities": ORTHANC_CGET_MODALITIES["DicomModalities"],
                    "notable_values": {k: orthanc.get(k, "(built-in default)") for k in ORTHANC_NOTABLE}},
        "bare_tuned": {"maximum_pdu_size": 0, "STORE_RECV_CHUNKED_DATASET": True, "handler": "os.replace(event.dataset_path, ...)"},
        "bare_untuned": {"maximum_pdu_size": 16382, "STORE_RECV_CHUNKED_DATASET": False, "handler": "write_bytes(event.encoded_dataset())"},
        "storescu": "one association, default options (proposes uncompressed syntaxes, 16 KB receive PDU)",
        "getscu": "study root, QueryRetrieveLevel=STUDY, one association, default options (accepts uncompressed syntaxes, "
                  "16 KB receive PDU, files written with -od, no fsync); to dicomguard through stunnel (TLS 1.2+ client "
                  "with the device certificate, TCP_NODELAY both sides), to Orthanc plaintext; ct_cget_nodelay adds "
                  "TCP_NODELAY=1 to getscu's environment",
    }


def print_table(results: dict[str, dict], verdicts: list[dict]) -> None:
    print(f"\n{'workload':<16}{'target':<14}{'median s':>10}{'inst/s':>9}{'MB/s':>9}{'dicomguard/x':>14}")
    for workload, (_source, targets) in WORKLOADS.items():
        res = results.get(workload, {})
        for target in targets:
            if target not in res:
                continue
            r = res[target]
            ratio = res["ratios"].get(f"dicomguard/{target}")
            shown = f"{ratio:.2f}x" if ratio is not None else "-"
            print(f"{workload:<16}{target:<14}{r['median_s']:>10.3f}{r['instances_per_s']:>9.1f}{r['mb_per_s']:>9.1f}{shown:>14}")
    print()
    for v in verdicts:
        print(f"{v['target']:<48} ratio {v['ratio']:6.2f} (needs >= {v['minimum_ratio']:.2f}): {'met' if v['met'] else 'MISSED'}")


# -- optional profile of the serve process (py-spy) -----------------------------------------


PYSPY_RATE = 200


def _pyspy() -> str | None:
    candidate = Path(sys.executable).with_name("py-spy")
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


def _frame_label(frame: str, keep_line: bool = False) -> str:
    """``function (path/to/module.py:12)`` -> ``function (module.py)``, keeping the package for the libraries that matter."""
    m = re.match(r"^(.*) \((.*?)(?::(\d+))?\)$", frame)
    if not m:
        return frame
    func, path, line = m.groups()
    where = Path(path).name
    for package in ("dicomguard", "pynetdicom", "pydicom", "sqlalchemy", "cryptography"):
        if f"{package}/" in path:
            where = f"{package}/{path.rsplit(package + '/', 1)[1]}"
            break
    return f"{func} ({where}:{line})" if keep_line and line else f"{func} ({where})"


@dataclass
class _ThreadStacks:
    samples: int = 0
    inclusive: Counter[str] = field(default_factory=Counter)
    own: Counter[str] = field(default_factory=Counter)  # leaf frame with its line: shows *where* a thread waits


def summarize_pyspy(raw: Path, rate: int, top: int = 12) -> dict[str, object]:
    """Collapsed stacks from ``py-spy record --idle --threads --format raw`` -> per-thread-kind wall-time shares.

    ``--idle`` keeps blocked threads (fsync, socket reads, sleeps) in the samples, so a share is a share of the
    thread's wall time. The association thread runs the C-STORE handler synchronously: its breakdown is where
    each object's time goes between two C-STORE requests (storescu waits for every response)."""
    kinds: dict[str, _ThreadStacks] = {}
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        raw_frames = [f for f in stack.split(";") if f]
        frames = [f for f in raw_frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        if any("Association.run_reactor" in f for f in frames):
            kind = "association"
        elif any("DULServiceProvider.run_reactor" in f for f in frames):
            kind = "dul_reader"
        else:
            kind = "other"
        n = int(count)
        acc = kinds.setdefault(kind, _ThreadStacks())
        acc.samples += n
        acc.own[_frame_label(frames[-1], keep_line=True)] += n
        for f in {_frame_label(f) for f in frames}:
            acc.inclusive[f] += n

    def rows(counter: Counter[str], total: int, keep: Callable[[str], bool]) -> list[dict[str, object]]:
        return [{"function": f, "share": c / total, "seconds": c / rate} for f, c in counter.most_common() if keep(f)][:top]

    summary: dict[str, object] = {"rate_hz": rate}
    for kind, acc in sorted(kinds.items()):
        summary[kind] = {
            "samples": acc.samples,
            "thread_seconds": acc.samples / rate,
            "dicomguard_inclusive": rows(acc.inclusive, acc.samples, lambda f: "(dicomguard/" in f),
            "pynetdicom_inclusive": rows(acc.inclusive, acc.samples, lambda f: "(pynetdicom/" in f),
            "own_by_line": rows(acc.own, acc.samples, lambda f: True),
        }
    return summary


def profile_dicomguard(inputs: Inputs, folder: Path, out_prefix: Path) -> dict[str, object]:
    """One extra (untimed) dicomguard session: py-spy samples ``dicomguard serve`` during the CT C-STORE, then
    (a second py-spy run) during the US cine C-STORE. The collapsed stacks are kept next to the JSON
    (``<out>.<workload>.stacks.txt``: open them in speedscope or feed them to flamegraph.pl)."""
    spy = _pyspy()
    if spy is None:
        return {"error": "py-spy not found; install it into the venv (pip install py-spy)"}
    profiles: dict[str, object] = {}
    with dicomguard_target(folder) as dg:
        for workload, files in (("ct_cstore", inputs.ct), ("us_cstore", inputs.us)):
            raw = out_prefix.with_suffix(f".{workload}.stacks.txt")
            cmd = [spy, "record", "--pid", str(dg.server.pid), "--rate", str(PYSPY_RATE), "--idle", "--threads",
                   "--format", "raw", "-o", str(raw)]
            spy_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            time.sleep(1.5)  # let py-spy attach
            try:
                seconds = storescu(files, dg.dimse_port, "DICOMGUARD", dg.tls)
            finally:
                spy_proc.send_signal(signal.SIGINT)
                _, errors = spy_proc.communicate(timeout=60)
            if not raw.exists():
                return {"error": f"py-spy wrote no profile: {errors[-500:]}"}
            profiles[workload] = {"storescu_s_under_profiler": seconds, "collapsed_stacks": str(raw), **summarize_pyspy(raw, PYSPY_RATE)}
    return profiles


def print_profile(profiles: dict[str, object]) -> None:
    if "error" in profiles:
        print(f"\nprofile: {profiles['error']}")
        return
    for workload, profile in profiles.items():
        assert isinstance(profile, dict)
        print(f"\npy-spy profile of `dicomguard serve` during {workload} (storescu took {profile['storescu_s_under_profiler']:.2f} s "
              f"under the profiler; stacks in {profile['collapsed_stacks']}):")
        for kind, title in (("association", "association thread (runs the C-STORE handler)"), ("dul_reader", "DUL thread (reads PDUs)")):
            part = profile.get(kind)
            if not isinstance(part, dict):
                continue
            print(f"  {title}: {part['thread_seconds']:.2f} thread-seconds")
            for key, label in (("dicomguard_inclusive", "dicomguard, inclusive"), ("pynetdicom_inclusive", "pynetdicom, inclusive"),
                               ("own_by_line", "leaf frames (own)")):
                print(f"    {label}:")
                for row in part[key][:8]:
                    print(f"      {row['share']:6.1%} {row['seconds']:6.2f} s  {row['function']}")


# -- main -------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="50 CT slices, 1 repetition, no warm-up")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions (default 3; --quick: 1)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1; --quick: 0)")
    p.add_argument("--ct", type=int, default=200, help="CT slices (default 200; --quick: 50)")
    p.add_argument("--profile", action="store_true", help="also sample `dicomguard serve` with py-spy during the C-STOREs")
    p.add_argument("--profile-only", action="store_true", help="only the py-spy profile (no timed rounds)")
    p.add_argument("--sessions", help=f"comma-separated subset of the server sessions, for A/B runs (default all: {','.join(SESSIONS)})")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()), help="where inputs and servers' folders go")
    p.add_argument("--out", type=Path, help="JSON results (default bench/results/network-<date>[-quick].json)")
    # Internal: the bare SCP runs in a child process started by this script.
    p.add_argument("--bare-scp", choices=("tuned", "untuned"), help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--bare-out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--bare-pki", type=Path, help=argparse.SUPPRESS)
    return p.parse_args()


def check_tools() -> None:
    missing = [tool for tool in ("storescu", "getscu", orthanc_binary(), stunnel_binary()) if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"missing tools: {', '.join(missing)} (dcmtk, orthanc, stunnel4)")
    dicomweb_plugin()


def load_inputs(root: Path, ct_count: int) -> Inputs:
    workloads = {w.name: w for w in BENCH.make_workloads(root, ct_count)}
    ct, us = workloads["ct"].files, workloads["us"].files
    study, series = _uids(ct[0])
    return Inputs(ct, us, [p.read_bytes() for p in ct], study, series, {_sop_uid(p): p.stat().st_size for p in ct},
                  _study_of_their_own(ct[:EACH], root / "each"))


EACH = 20
"""Slices sent one per association (``ct_cstore_each``)."""


def _study_of_their_own(files: list[Path], folder: Path) -> list[Path]:
    """Copies of ``files`` in a new study and series, each with a new SOP Instance UID (derived, so the same every run)."""
    import pydicom
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    study, series = (generate_uid(entropy_srcs=["bench-each", kind]) for kind in ("study", "series"))
    for i, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["bench-each", str(i)])
        target = folder / path.name
        ds.save_as(target, enforce_file_format=True)
        out.append(target)
    return out


def main() -> None:
    args = parse_args()
    if args.bare_scp:
        serve_bare_scp(args.bare_scp, args.port, args.bare_out, args.bare_pki)
        return
    check_tools()
    reps, warmup, ct_count = (1, 0, 50) if args.quick else (args.reps, args.warmup, args.ct)
    suffix = "-quick" if args.quick else "-profile" if args.profile_only else ""
    out = args.out or HERE / "results" / f"network-{dt.date.today()}{suffix}.json"
    root = Path(tempfile.mkdtemp(prefix="dicomguard-netbench-", dir=args.workdir))
    started = time.perf_counter()
    results: dict[str, dict] = {}
    verdicts: list[dict] = []
    try:
        print(f"generating inputs in {root} ...", flush=True)
        inputs = load_inputs(root / "inputs", ct_count)
        report: dict[str, object] = {"machine": machine_info(root), "settings": settings_report()}
        if not args.profile_only:
            pki = make_pki(root / "pki")
            sessions = tuple(args.sessions.split(",")) if args.sessions else SESSIONS
            if unknown := set(sessions) - set(SESSIONS):
                raise SystemExit(f"unknown sessions: {', '.join(sorted(unknown))}")
            print(f"measuring {len(sessions)} sessions: {len(inputs.ct)} CT slices ({inputs.total_bytes('ct') / MB:.1f} MB), "
                  f"1 US cine ({inputs.total_bytes('us') / MB:.1f} MB), {warmup} warm-up + {reps} timed round(s) ...", flush=True)
            timings = measure(inputs, root, pki, reps, warmup, sessions)
            results, verdicts = summarize(inputs, timings)
            extras = {f"{target}.median_{name}": statistics.median(v) for (target, name), v in sorted(timings.extras.items())}
            report |= {"reps": reps, "warmup": warmup, "sessions": list(sessions), "results": results, "issue_targets": verdicts, "extras": extras}
        if args.profile or args.profile_only:
            print("profiling dicomguard serve under the C-STORE workloads (py-spy) ...", flush=True)
            report["profile"] = profile_dicomguard(inputs, root / "profile", out)
        report["total_run_s"] = time.perf_counter() - started
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if results:
        print_table(results, verdicts)
    if "profile" in report:
        print_profile(report["profile"])  # type: ignore[arg-type]
    print(f"\nresults written to {out} (run took {report['total_run_s']:.0f} s)")


BENCH = load_script("dicomguard_bench_run", "run.py")  # its input generators and machine info

if __name__ == "__main__":
    main()
