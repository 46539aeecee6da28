"""Two archive nodes, one PostgreSQL index, one S3 bucket: any node stores, any node reads, one ledger.

Each node is a real ``dicomguard serve`` process with its own ports and its own
home folder (a stand-in for a second host). The second home is a copy of the
first one made after ``init``: the same ``config.toml`` (database URL, bucket),
the same sealed KEK under ``keys/`` (each node unseals it with the passphrase),
the same policies and the same TLS certificates under ``tls/`` (the server key
is wrapped by the KEK in the database). Everything else the nodes share lives in
PostgreSQL (index, ledger, audit trail, users and tokens, the ingest journal) and
in the bucket (ciphertext blobs).

Proven here, over DICOMweb (HTTPS, bearer tokens):

* an object stored through one node is retrieved byte-identical through the
  other, both ways, and concurrently;
* QIDO-RS on one node finds an object the moment the other node acknowledged it;
* after both nodes wrote, the ledger is one log (one head, contiguous leaves,
  one sequence of signed checkpoints, each consistent with the next) and
  ``dicomguard verify`` passes;
* a node killed with SIGKILL between writing a blob and committing its index
  transaction loses no acknowledged object: the other node serves all of them,
  the unacknowledged object is not half-stored, its blob is journalled under the
  dead process (which ``verify`` does not call a problem) and the killed node's
  next start removes it, after which the bucket holds exactly the indexed blobs.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
from sqlalchemy import select

from dicomguard.app.archive import Archive
from dicomguard.app.home import init_home
from dicomguard.audit.codes import EventIds, EventTypes
from dicomguard.audit.store import AuditStore
from dicomguard.core.keyring import PURPOSE_IDENTITY
from dicomguard.dimse.server import free_port
from dicomguard.identity.users import create_user
from dicomguard.index.db import read_session, write_session
from dicomguard.index.models import AuditRecord, IngestJournal, Instance, LedgerCheckpoint, LedgerHead, LedgerLeaf
from dicomguard.ledger import merkle
from dicomguard.ledger.leaves import KIND_INSTANCE
from tests.conftest import PASSPHRASE, PG_ADMIN_URL, _pg_database
from tests.dicom_factory import ALICE, BOB, CAROL, DEPARTMENT, FakePatient, ct_series, dataset_of
from tests.storage.conftest import BUCKET
from tests.storage.seaweedfs import SeaweedFS
from tests.web.conftest import issue_token
from tests.web.multipart_util import encode, split

pytestmark = pytest.mark.slow  # two services as subprocesses, PostgreSQL and a real S3 server

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 90.0
WAIT_TIMEOUT_S = 60.0
SIZE = 32
NODE_NAMES = ("node-a.archive.test", "node-b.archive.test")
"""The names the archive's server certificate is issued for at ``init``, besides loopback: one per host."""
ACCEPT_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
TECHNOLOGIST, RADIOLOGIST = "tech.multinode", "dr.multinode"
DAVID = FakePatient("PIDQX1064DELTA", "NARWHALIS^DAVIDIANUS", "19920214", "ACCQ88804567")


# -- the nodes ----------------------------------------------------------------------------------


@dataclass
class Node:
    """One ``dicomguard serve`` process on its own home and ports."""

    name: str
    home: Path
    proc: subprocess.Popen[str]
    https_port: int
    stderr: Path
    lines: queue.Queue[str] = field(default_factory=queue.Queue)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def client(self, token: str) -> httpx.Client:
        """An HTTPS client that trusts this node's copy of the archive CA (``HOME/tls/ca.pem``) and nothing else."""
        verify = ssl.create_default_context(cafile=str(self.home / "tls" / "ca.pem"))
        return httpx.Client(base_url=self.url, verify=verify, timeout=WAIT_TIMEOUT_S, trust_env=False,
                            headers={"Authorization": f"Bearer {token}"})

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")


@contextmanager
def running(name: str, home: Path, folder: Path) -> Iterator[Node]:
    """``dicomguard serve`` for ``home`` (in its own session); killed at exit if it still runs."""
    dimse_port, https_port = free_port(), free_port()
    stderr = folder / f"{name}-{secrets.token_hex(3)}.stderr"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "DICOMGUARD_HOME": str(home)}
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dicomguard", "serve", "--dimse-port", str(dimse_port), "--https-port", str(https_port)],
            stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True, env=env, start_new_session=True,
        )
    node = Node(name, home, proc, https_port, stderr)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            node.lines.put(line.strip())

    threading.Thread(target=pump, name=f"{name}-stdout", daemon=True).start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                line = node.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{name} did not start; stderr:\n{node.log()[-3000:]}") from None
            if line.startswith("READY"):
                break
        yield node
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def stop_gracefully(node: Node) -> None:
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(STOP_TIMEOUT_S) == 0, node.log()[-3000:]


def kill_hard(node: Node) -> None:
    """SIGKILL, then reap it (a zombie would still count as a live owner of its journal entries)."""
    os.kill(node.proc.pid, signal.SIGKILL)
    node.proc.wait(10)


# -- the archive: two homes, one database, one bucket ------------------------------------------


@dataclass
class Cluster:
    home_a: Path
    home_b: Path
    database: str
    prefix: str
    server: SeaweedFS
    tech: str
    reader: str
    folder: Path
    engine: sqlalchemy.Engine

    def bucket_blob_ids(self) -> set[str]:
        """Blob ids of the objects under this archive's prefix (``<prefix><id[:2]>/<id>``), read with a plain S3 client."""
        client, found, token = self.server.client(), set(), None
        while True:
            page = client.list_objects_v2(Bucket=BUCKET, Prefix=self.prefix, **({"ContinuationToken": token} if token else {}))
            for item in page.get("Contents", []):
                folder, _, blob_id = item["Key"][len(self.prefix):].partition("/")
                if len(blob_id) == 32 and folder == blob_id[:2]:
                    found.add(blob_id)
            if not page.get("IsTruncated"):
                return found
            token = page["NextContinuationToken"]

    def index(self) -> tuple[set[str], dict[str, str]]:
        """The indexed blob ids and the ingest journal (blob id -> owner), read directly from the shared database."""
        with self.engine.connect() as c:
            indexed = set(c.scalars(select(Instance.blob_id)))
            journal = {b: o for b, o in c.execute(select(IngestJournal.blob_id, IngestJournal.owner))}
        return indexed, journal


def _files(home: Path) -> dict[str, str]:
    """Every file of a home with the SHA-256 of its content."""
    return {str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(home.rglob("*")) if p.is_file()}


@pytest.fixture
def database(pg_available: bool) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test, dropped after it (several nodes need one shared index)."""
    if not pg_available:
        reason = f"PostgreSQL unreachable at {PG_ADMIN_URL}: several archive nodes need a shared index"
        if os.environ.get("CI"):
            pytest.fail(reason + " under CI")
        pytest.skip(reason)
    yield from _pg_database(None)


@pytest.fixture
def cluster(seaweedfs: SeaweedFS, database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """``init`` of node A's home on PostgreSQL and S3, its copy as node B's home, a technologist and a radiologist.

    The S3 settings and the server names are given to ``init`` as environment
    variables and then removed: from then on each node knows them from its
    ``config.toml`` and its certificate only. The S3 credentials file sits outside
    the homes (a secret; on real hosts the same path on each host, mode 600).
    """
    prefix = f"multinode-{secrets.token_hex(4)}/"
    credentials = seaweedfs.credentials_file(tmp_path / "s3-credentials")
    init_env = {"DICOMGUARD_STORAGE__KIND": "s3", "DICOMGUARD_STORAGE__S3__ENDPOINT": seaweedfs.https_endpoint,
                "DICOMGUARD_STORAGE__S3__BUCKET": BUCKET, "DICOMGUARD_STORAGE__S3__CREDENTIALS_FILE": str(credentials),
                "DICOMGUARD_STORAGE__S3__CA_FILE": str(seaweedfs.ca_file), "DICOMGUARD_STORAGE__S3__PREFIX": prefix,
                "DICOMGUARD_TLS__SERVER_NAMES": json.dumps(["localhost", "127.0.0.1", *NODE_NAMES])}
    for name, value in init_env.items():
        monkeypatch.setenv(name, value)
    home_a, home_b = tmp_path / "node-a" / "home", tmp_path / "node-b" / "home"
    home_a.parent.mkdir()
    home_b.parent.mkdir()
    init_home(home_a, PASSPHRASE, "admin", database)
    for name in init_env:
        monkeypatch.delenv(name)

    # What a home holds on PostgreSQL and S3: settings, the sealed KEK and recovery key, policies, certificates.
    layout = _files(home_a)
    assert {path.split("/")[0] for path in layout} == {"config.toml", "keys", "policies", "tls"}, sorted(layout)
    assert not [p for p in layout if p.startswith("keys/") and not (p.endswith(".sealed") or p == "keys/recovery.pub")]
    config = (home_a / "config.toml").read_text()
    assert database in config and f'prefix = "{prefix}"' in config and seaweedfs.secret_key not in config
    # The second host's home: a copy (the passphrase unseals the copied KEK on that host).
    shutil.copytree(home_a, home_b, symlinks=True)
    assert _files(home_b) == layout

    with Archive.open(home_a, PASSPHRASE) as archive, write_session(archive.ctx.engine) as s:
        identity = archive.ctx.keyring.archive_key(PURPOSE_IDENTITY)
        # Technologists store (and read back recent CT work); radiologists of the department read.
        create_user(s, identity, TECHNOLOGIST, "technologist", department=DEPARTMENT, attributes={"modalities": ["CT"]})
        create_user(s, identity, RADIOLOGIST, "radiologist", department=DEPARTMENT)
    with Archive.open(home_b, PASSPHRASE) as archive:  # tokens are rows of the shared database: one token, every node
        tech = issue_token(archive.ctx.engine, TECHNOLOGIST, timedelta(hours=1))
        reader = issue_token(archive.ctx.engine, RADIOLOGIST, timedelta(hours=1))
    engine = sqlalchemy.create_engine(database)
    try:
        yield Cluster(home_a, home_b, database, prefix, seaweedfs, tech, reader, tmp_path, engine)
    finally:
        engine.dispose()


# -- DICOMweb -----------------------------------------------------------------------------------


def uids(data: bytes) -> tuple[str, str, str]:
    ds = dataset_of(data)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def sops(objects: list[bytes]) -> list[str]:
    return [uids(d)[2] for d in objects]


def stow(client: httpx.Client, data: bytes) -> httpx.Response:
    """STOW-RS of one object (one request)."""
    content_type, body = encode([data])
    return client.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type})


def acknowledged(response: httpx.Response) -> list[str]:
    """The SOP Instance UIDs a 200 STOW-RS response says were stored (no failed part)."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert "00081198" not in body, body
    return [item["00081155"]["Value"][0] for item in body["00081199"]["Value"]]


def wado(client: httpx.Client, data: bytes) -> bytes:
    """WADO-RS of the instance ``data`` is (as stored: original transfer syntax)."""
    study, series, sop = uids(data)
    r = client.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}", headers={"Accept": ACCEPT_DICOM})
    assert r.status_code == 200, r.text
    (_, payload), = split(r.headers["content-type"], r.content)
    return payload


def qido_instances(client: httpx.Client, **filters: str) -> list[str]:
    """SOP Instance UIDs that QIDO-RS ``/instances`` finds (204: none)."""
    r = client.get("/dicomweb/instances", params=filters)
    if r.status_code == 204:
        return []
    assert r.status_code == 200, r.text
    return [item["00080018"]["Value"][0] for item in r.json()]


def store_one_by_one(node: Node, token: str, objects: list[bytes], observer: Node | None = None, reader: str = "") -> None:
    """STOW each object through ``node``; after each acknowledgement, ``observer`` must find it at once (QIDO-RS)."""
    with node.client(token) as c, (observer.client(reader) if observer else httpx.Client()) as o:
        for data in objects:
            sop = uids(data)[2]
            assert acknowledged(stow(c, data)) == [sop]
            if observer is not None:
                assert qido_instances(o, SOPInstanceUID=sop) == [sop], f"{observer.name} does not see {sop} yet"


def assert_byte_identical(node: Node, token: str, objects: list[bytes]) -> None:
    with node.client(token) as c:
        for data in objects:
            got = wado(c, data)
            assert got[:128] == bytes(128) == data[:128]  # the generated files have a zero preamble, as the archive stores it
            assert got == data, f"{uids(data)[2]} retrieved from {node.name} differs from what was stored"


# -- the ledger ---------------------------------------------------------------------------------


def assert_one_ledger(home: Path, phases: list[list[str]]) -> dict[str, int]:
    """One log: one head row, leaves 0..size-1, one strictly growing sequence of signed checkpoints, each consistent
    with the next and with the current tree; every object one instance leaf; ``phases`` in order. Returns leaf indexes."""
    with Archive.open(home, PASSPHRASE) as archive:
        latest = archive.ledger.verifier.verify(archive.ledger.latest_checkpoint())
        with read_session(archive.ctx.engine) as s:
            heads = s.execute(select(LedgerHead.id, LedgerHead.size)).all()
            indexes = list(s.scalars(select(LedgerLeaf.idx).order_by(LedgerLeaf.idx)))
            notes = list(s.scalars(select(LedgerCheckpoint.note).order_by(LedgerCheckpoint.size)))
            instance_leaves = s.execute(select(LedgerLeaf.subject, LedgerLeaf.idx).where(LedgerLeaf.kind == KIND_INSTANCE)).all()
            audit = list(s.scalars(select(AuditRecord.seq).order_by(AuditRecord.seq)))
        size = len(indexes)
        assert heads == [(1, size)]
        assert indexes == list(range(size))
        assert audit == list(range(audit[0], audit[0] + len(audit)))  # one audit sequence too
        checkpoints = [archive.ledger.verifier.verify(n) for n in notes]
        sizes = [c.size for c in checkpoints]
        assert sizes == sorted(set(sizes)) and sizes[-1] == latest.size == size
        for old, new in zip(checkpoints, checkpoints[1:], strict=False):
            merkle.verify_consistency(old.size, new.size, old.root_hash, new.root_hash,
                                      archive.ledger.consistency_proof(old.size, new.size))
    leaf_of: dict[str, int] = {}
    for subject, idx in instance_leaves:
        assert subject not in leaf_of, f"{subject} has two instance leaves"
        leaf_of[subject] = idx
    for earlier, later in zip(phases, phases[1:], strict=False):
        assert max(leaf_of[u] for u in earlier) < min(leaf_of[u] for u in later)
    assert {u for phase in phases for u in phase} == set(leaf_of)
    return leaf_of


def verify_cli(home: Path) -> dict[str, Any]:
    """``dicomguard verify --json`` (full) on ``home``; exit 0 required."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "DICOMGUARD_HOME": str(home)}
    r = subprocess.run([sys.executable, "-m", "dicomguard", "verify", "--json"], capture_output=True, text=True, env=env,
                       timeout=300, check=False, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert report["ok"] and report["problems"] == [] and report["mode"] == "full"
    return report


def application_activity(home: Path) -> list[str]:
    """``start``/``stop`` of every Application Activity record, in order."""
    with Archive.open(home, PASSPHRASE) as a:
        return ["start" if EventTypes.APPLICATION_START.code in (e.event_type or "").split() else "stop"
                for e in AuditStore(a.ctx).iter_all() if e.event_id == EventIds.APPLICATION_ACTIVITY.code]


def wait_until(condition: Callable[[], Any], what: str, timeout: float = WAIT_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


# -- the tests ----------------------------------------------------------------------------------


def test_any_node_stores_any_node_retrieves_queries_see_everything_and_one_ledger(cluster: Cluster) -> None:
    """Stores through A are read byte-identical through B and the other way round, also while both store at once;
    QIDO-RS on the other node finds each object right after its acknowledgement; the ledger is one log with one
    checkpoint sequence and ``dicomguard verify`` passes. Both nodes present the one archive certificate, valid for
    each node's name; nothing per node is written into a home."""
    alice = ct_series(ALICE, n=6, size=SIZE, seed=1)
    bob = ct_series(BOB, n=6, size=SIZE, seed=2)
    carol_a = ct_series(CAROL, n=6, size=SIZE, seed=3)
    carol_b = ct_series(CAROL, n=6, size=SIZE, seed=4)  # the same new patient, another study, through the other node
    homes_before = _files(cluster.home_a), _files(cluster.home_b)

    with running("node-a", cluster.home_a, cluster.folder) as a, running("node-b", cluster.home_b, cluster.folder) as b:
        # One certificate for the archive (its key is wrapped in the shared database), naming every node.
        certs = {ssl.get_server_certificate(("127.0.0.1", n.https_port)) for n in (a, b)}
        assert len(certs) == 1
        for node, name in ((a, NODE_NAMES[0]), (b, NODE_NAMES[1])):
            with node.client(cluster.reader) as c:  # a client that reached the node by its host name
                assert c.get("/healthz", extensions={"sni_hostname": name}).status_code == 200
            with node.client(cluster.reader) as c, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                c.get("/healthz", extensions={"sni_hostname": "node-c.archive.test"})  # a name init was not given

        with b.client(cluster.reader) as on_b:
            assert qido_instances(on_b, PatientID=ALICE.patient_id) == []  # B has answered before: nothing to warm

        # A stores, B sees each object at once and serves it byte-identical; then the other way round.
        store_one_by_one(a, cluster.tech, alice, observer=b, reader=cluster.reader)
        assert_byte_identical(b, cluster.reader, alice)
        store_one_by_one(b, cluster.tech, bob, observer=a, reader=cluster.reader)
        assert_byte_identical(a, cluster.reader, bob)

        # Both at once (one thread per node, one object per request), then each reads what the other stored.
        failures: list[BaseException] = []

        def store(node: Node, objects: list[bytes]) -> None:
            try:
                store_one_by_one(node, cluster.tech, objects)
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        threads = [threading.Thread(target=store, args=(a, carol_a)), threading.Thread(target=store, args=(b, carol_b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT_TIMEOUT_S * 2)
        assert not any(t.is_alive() for t in threads) and failures == []
        assert_byte_identical(b, cluster.reader, carol_a)
        assert_byte_identical(a, cluster.reader, carol_b)
        with a.client(cluster.reader) as on_a, b.client(cluster.reader) as on_b:
            everything = sorted(sops(alice + bob + carol_a + carol_b))
            assert sorted(qido_instances(on_a)) == sorted(qido_instances(on_b)) == everything
            carol = sorted(sops(carol_a + carol_b))
            assert sorted(qido_instances(on_b, PatientID=CAROL.patient_id)) == carol  # one patient, not two

        stop_gracefully(a)
        stop_gracefully(b)

    assert (_files(cluster.home_a), _files(cluster.home_b)) == homes_before  # no per-node state in a home
    leaves = assert_one_ledger(cluster.home_a, [sops(alice), sops(bob), sops(carol_a) + sops(carol_b)])
    assert len(leaves) == 24
    assert application_activity(cluster.home_b).count("start") == 2 and application_activity(cluster.home_b).count("stop") == 2
    report = verify_cli(cluster.home_b)
    assert report["objects_checked"] == 24 and report["tree_size"] >= 24
    indexed, _ = cluster.index()
    assert cluster.bucket_blob_ids() == indexed and len(indexed) == 24  # no unreferenced blob in the bucket


def test_a_node_killed_mid_ingest_loses_nothing_acknowledged(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client STOWs one object per request to node A and keeps every acknowledgement; node A is killed (SIGKILL)
    with a blob written and its index transaction not committed (held at the ledger lock, which the test holds).

    Then: node B serves every acknowledged object byte-identical; the unacknowledged one is not half-stored (no
    index row); its blob is the only unindexed blob in the bucket and is journalled under the dead process
    (``host:pid``), so ``verify`` run elsewhere reports no problem (journalled blobs are known: ``app/verify.py``);
    the killed node's next start removes it (``docs/operations.md``, Crash recovery); the bucket then holds exactly
    the indexed blobs, the client's re-send of the unacknowledged object is stored, the ledger is one log and
    ``dicomguard verify`` passes."""
    series = ct_series(DAVID, n=40, size=SIZE, seed=7)
    by_uid = {uids(d)[2]: d for d in series}
    acked: list[str] = []
    attempted: list[str] = []
    errors: list[BaseException] = []
    done = threading.Event()

    with running("node-a", cluster.home_a, cluster.folder) as a, running("node-b", cluster.home_b, cluster.folder) as b:
        owner_a = f"{socket.gethostname()}:{a.proc.pid}:"  # and the process's heartbeat token

        def client_loop() -> None:
            """One STOW-RS per object; stops at the first failure (the node went away)."""
            try:
                with a.client(cluster.tech) as c:
                    for data in series:
                        attempted.append(uids(data)[2])
                        r = stow(c, data)
                        acked.extend(acknowledged(r))
            except BaseException as exc:  # noqa: BLE001 - checked by the test
                errors.append(exc)
            finally:
                done.set()

        ingest = threading.Thread(target=client_loop, name="stow-client", daemon=True)
        ingest.start()
        wait_until(lambda: len(acked) >= 8 or done.is_set(), "eight acknowledged stores")
        assert not done.is_set(), errors

        # Hold the ledger's write lock (the row every appender locks): node A's next ingest writes its blob and then
        # waits for the lock inside its index transaction. Kill it there.
        with cluster.engine.connect() as lock:
            lock.exec_driver_sql("SELECT size FROM ledger_head WHERE id = 1 FOR UPDATE")
            orphans = wait_until(lambda: cluster.bucket_blob_ids() - cluster.index()[0], "a written, unindexed blob")
            assert len(acked) < len(series)
            kill_hard(a)
            lock.rollback()
        assert done.wait(WAIT_TIMEOUT_S), "the client did not notice the killed node"
        ingest.join(WAIT_TIMEOUT_S)
        assert len(errors) == 1 and isinstance(errors[0], httpx.TransportError), errors  # the connection broke
        unacknowledged = [uid for uid in attempted if uid not in acked]
        assert len(unacknowledged) == 1 and len(orphans) == 1, (unacknowledged, orphans)

        # Nothing acknowledged is lost: B finds and serves all of it; nothing of the killed request is half-stored.
        with b.client(cluster.reader) as on_b:
            assert sorted(qido_instances(on_b, PatientID=DAVID.patient_id)) == sorted(acked)
        assert_byte_identical(b, cluster.reader, [by_uid[u] for u in acked])

        # The killed request's blob: in the bucket, not indexed, journalled under node A's dead process.
        indexed, journal = cluster.index()
        assert cluster.bucket_blob_ids() - indexed == orphans
        assert all(journal.get(blob_id, "").startswith(owner_a) for blob_id in orphans)

        # verify as a node on another host runs it before node A's heartbeat expired: it leaves the journal alone
        # (recovery off here). A journalled blob is not a problem.
        with monkeypatch.context() as m:
            m.setattr("dicomguard.app.archive.recover_interrupted_ingests", lambda ctx: 0)
            with Archive.open(cluster.home_b, PASSPHRASE) as archive:
                report = archive.operator.verify.run()
        assert report.ok, report.problems
        assert report.objects_checked == len(acked)
        assert cluster.bucket_blob_ids() - cluster.index()[0] == orphans  # still there: only recovery removes it

        # The killed node's next start removes its orphan blob; the client re-sends what was not acknowledged.
        with running("node-a", cluster.home_a, cluster.folder) as restarted:
            assert "removed 1 blobs of ingests interrupted before they were indexed" in restarted.log()
            indexed, journal = cluster.index()
            assert cluster.bucket_blob_ids() == indexed
            assert not any(owner.startswith(owner_a) for owner in journal.values())
            store_one_by_one(restarted, cluster.tech, [by_uid[u] for u in unacknowledged], observer=b, reader=cluster.reader)
            assert_byte_identical(b, cluster.reader, [by_uid[u] for u in unacknowledged])
            assert_byte_identical(restarted, cluster.reader, [by_uid[u] for u in acked])
            stop_gracefully(restarted)
        stop_gracefully(b)

    assert_one_ledger(cluster.home_b, [acked, unacknowledged])
    # three starts (A, B, A again), two stops: the killed process recorded none
    assert sorted(application_activity(cluster.home_a)) == ["start", "start", "start", "stop", "stop"]
    report = verify_cli(cluster.home_a)
    assert report["objects_checked"] == len(acked) + 1
    indexed, journal = cluster.index()
    assert cluster.bucket_blob_ids() == indexed and len(indexed) == len(acked) + 1
    assert not any(owner.startswith(owner_a) for owner in journal.values())
