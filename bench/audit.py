"""Audit trail benchmark (issue 6): its cost on ingest, and events/s into the store and out to a collector.

* ``ingest``: ``store.ingest_many`` of 500 CT slices (512x512, 16-bit, from memory; fsync'd
  blobs, SQLite index) in three configurations, in the same run, each repetition
  in a fresh archive home, the order rotating between repetitions. Since the
  composition root subscribes one recorder (``app.recorder.Recorder``: audit
  records and ledger leaf of every event) to the event bus, they are built as:
  ``full`` (ledger + audit, as shipped: the archive as ``Archive.open`` builds it),
  ``no-audit`` (ledger only: the recorder removed from the bus and the
  benchmark's :class:`LedgerOnlyRecorder` subscribed instead, which queues each
  event's leaf, ``RECORDINGS[type(event)].leaf(event)``, and appends the queued
  leaves with ``Ledger.flush`` just before commit, writing no audit record),
  ``core`` (ledger and audit removed: the recorder removed, nothing subscribed). Reported:
  the audit's cost (``full`` / ``no-audit`` - 1) and audit + ledger
  (``full`` / ``core`` - 1), from the medians and from the fastest repetitions
  (less disturbed by other load). Target < 10 %.
* ``events``: core events published on the bus and committed (audit record:
  mapping, XML, AES-GCM, blind indexes, canonical hash, insert; plus the ledger
  leaf it extends), 100 per transaction (a busy archive's batches) and 1 per
  transaction (each a separate action with its own fsync'd commit). Half are
  queries, half single-object retrieves of 4 stored objects (their index facts
  are cached after the first read, as for any object read again). Target
  >= 5,000 events/s sustained.
* ``forward``: records sent from the spool to a syslog-TLS collector (a local
  mutual-TLS sink reading RFC 5425 frames; ``--rsyslog`` uses a real rsyslogd),
  from the first record to the collector's TCP acknowledgement of the last. The
  spool holds exactly 20,000 records (``--quick``: 5,000): the archive's creation
  record, which ``init_home`` writes, and queries for the rest.
  Target >= 5,000 records/s.

Usage: ``python bench/audit.py [--quick] [--reps N] [--rsyslog] [--out FILE]``.
Prints a table and the JSON results (to ``--out`` if given).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from dicomguard.app.archive import Archive  # noqa: E402
from dicomguard.app.home import init_home  # noqa: E402
from dicomguard.app.recorder import RECORDINGS, Recorder  # noqa: E402
from dicomguard.audit.forwarder import SyslogForwarder  # noqa: E402
from dicomguard.audit.syslog import FrameReader  # noqa: E402
from dicomguard.config import AuditSpoolSettings, SyslogCollector  # noqa: E402
from dicomguard.core.access import Action, Principal, PrincipalKind  # noqa: E402
from dicomguard.core.events import Event, InstancesAccessed, QueryPerformed  # noqa: E402
from dicomguard.index.db import before_commit, read_session, write_session  # noqa: E402
from dicomguard.index.models import AuditRecord  # noqa: E402
from dicomguard.ledger.service import Ledger  # noqa: E402
from dicomguard.pki.authority import cert_pem, key_to_pem  # noqa: E402
from dicomguard.pki.store import load_tls_material  # noqa: E402
from dicomguard.pki.tls import server_context  # noqa: E402

PASSPHRASE = "benchmark passphrase, not a secret"
DOCTOR = Principal(PrincipalKind.USER, "dr.bench", frozenset({"radiologist"}), "10.0.0.1")
os.environ.setdefault("DICOMGUARD_KDF__MEMORY_KIB", "8192")  # unsealing is not what is measured
os.environ.setdefault("DICOMGUARD_KDF__TIME_COST", "1")
os.environ["DICOMGUARD_PASSPHRASE"] = PASSPHRASE


def ct_slices(n: int, seed: int = 1) -> list[bytes]:
    import io

    rng = np.random.default_rng(seed)
    study, series = generate_uid(), generate_uid()
    out = []
    for i in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = uid = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = f"BENCH^P{i // 100}", f"BENCH{i // 100:04d}", "19700101"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study, series, "CT"
        ds.StudyDate, ds.AccessionNumber, ds.InstanceNumber = "20240101", "ACC1", i + 1
        ds.Rows = ds.Columns = 512
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.PixelData = rng.integers(0, 4096, (512, 512), dtype=np.uint16).tobytes()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


def fresh_archive(folder: Path) -> Archive:
    if folder.exists():
        shutil.rmtree(folder)
    init_home(folder, PASSPHRASE, "admin")
    return Archive.open(folder, PASSPHRASE)


class LedgerOnlyRecorder:
    """BENCHMARK-ONLY: the recorder without the audit trail (the ``no-audit`` variant). Never use outside bench/.

    Each event's ledger leaf is queued and appended just before commit, exactly as
    :class:`Recorder` does, but no audit record is written (so no leaf names any).
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def on_event(self, session: Session, event: Event) -> None:
        self.ledger.append(session, RECORDINGS[type(event)].leaf(event))
        before_commit(session, "recorder", self.ledger.flush)


def _remove_recorder(archive: Archive) -> None:
    """Unsubscribe the archive's recorder (audit trail + ledger) from the event bus."""
    subscribers = archive.ctx.bus._subscribers  # noqa: SLF001
    kept = [s for s in subscribers if not isinstance(getattr(s, "__self__", None), Recorder)]
    assert len(kept) == len(subscribers) - 1, "expected exactly one recorder on the bus"
    subscribers[:] = kept


def bench_ingest(work: Path, objects: list[bytes], reps: int) -> dict[str, object]:
    configs = ["full", "no-audit", "core"]
    seconds: dict[str, list[float]] = {c: [] for c in configs}
    for rep in range(reps + 1):  # the first round warms caches and is not counted
        order = configs[rep % 3:] + configs[: rep % 3]
        for config in order:
            archive = fresh_archive(work / f"ingest-{config}")
            if config in ("no-audit", "core"):
                _remove_recorder(archive)
            if config == "no-audit":
                archive.ctx.bus.subscribe(LedgerOnlyRecorder(archive.ledger).on_event)
            os.sync()
            started = time.perf_counter()
            for outcome in archive.operator.store.ingest_many([(str(i), (lambda d=d: d)) for i, d in enumerate(objects)]):
                assert outcome.error is None, outcome.error
            elapsed = time.perf_counter() - started
            archive.close()
            if rep:
                seconds[config].append(elapsed)
    med = {c: statistics.median(v) for c, v in seconds.items()}
    best = {c: min(v) for c, v in seconds.items()}
    return {
        "objects": len(objects),
        "megabytes": round(sum(map(len, objects)) / 1e6, 1),
        "seconds": {c: [round(x, 3) for x in v] for c, v in seconds.items()},
        "objects_per_s": {c: round(len(objects) / med[c], 1) for c in configs},
        "audit_cost_pct": round((med["full"] / med["no-audit"] - 1) * 100, 1),
        "audit_and_ledger_cost_pct": round((med["full"] / med["core"] - 1) * 100, 1),
        # the fastest repetition of each is the least disturbed by other load on the machine
        "audit_cost_pct_best": round((best["full"] / best["no-audit"] - 1) * 100, 1),
        "audit_and_ledger_cost_pct_best": round((best["full"] / best["core"] - 1) * 100, 1),
        "target_pct": 10,
    }


def _events(archive: Archive, uids: list[str], n: int, per_tx: int) -> float:
    now = dt.datetime.now(dt.UTC)
    query = QueryPerformed(DOCTOR, "STUDY", (("PatientName", "BENCH*"), ("StudyDate", "20240101-")), 3, now)
    started = time.perf_counter()
    for i in range(0, n, per_tx):
        with write_session(archive.ctx.engine) as s:
            for j in range(i, min(n, i + per_tx)):
                if j % 2:
                    archive.ctx.bus.publish(s, query)
                else:
                    uid = uids[j % len(uids)]
                    archive.ctx.bus.publish(s, InstancesAccessed(DOCTOR, Action.RETRIEVE, (uid,), ("",), ("",), now))
    return n / (time.perf_counter() - started)


def bench_events(work: Path, n: int) -> dict[str, object]:
    archive = fresh_archive(work / "events")
    objects = ct_slices(4, seed=5)
    uids = [r.result.sop_instance_uid for r in archive.operator.store.ingest_many([(str(i), (lambda d=d: d)) for i, d in enumerate(objects)])]
    _events(archive, uids, 500, 100)  # warm-up
    batched = _events(archive, uids, n, 100)
    single = _events(archive, uids, max(200, n // 10), 1)
    archive.close()
    return {"events_100_per_transaction_per_s": round(batched), "events_1_per_transaction_per_s": round(single),
            "events": n, "mix": "half queries, half single-instance retrieves (patient resolved through the index)", "target_per_s": 5000}


class Sink:
    """A mutual-TLS syslog receiver that counts RFC 5425 frames and throws them away."""

    def __init__(self, archive: Archive) -> None:
        m = load_tls_material(archive.home, archive.settings, archive.ctx.keyring)
        issued = m.authority.issue_server(["localhost", "127.0.0.1"])  # type: ignore[union-attr]
        self.ctx = server_context(cert_pem(issued.cert) + m.client_ca_pem, key_to_pem(issued.key), m.client_ca_pem)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.frames = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            conn, _ = self.server.accept()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with self.ctx.wrap_socket(conn, server_side=True) as sock:
            reader = FrameReader()
            while data := sock.recv(1 << 20):
                self.frames += sum(1 for _ in reader.feed(data))


def _rsyslog(archive: Archive, folder: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    from dicomguard.dimse.server import free_port

    m = load_tls_material(archive.home, archive.settings, archive.ctx.keyring)
    issued = m.authority.issue_server(["localhost", "127.0.0.1"])  # type: ignore[union-attr]
    (folder / "work").mkdir(parents=True, exist_ok=True)
    (folder / "ca.pem").write_bytes(m.client_ca_pem)
    (folder / "cert.pem").write_bytes(cert_pem(issued.cert))
    (folder / "key.pem").write_bytes(key_to_pem(issued.key))
    port = free_port()
    (folder / "rsyslog.conf").write_text(
        f'global(workDirectory="{folder}/work" maxMessageSize="256k" DefaultNetstreamDriverCAFile="{folder}/ca.pem" '
        f'DefaultNetstreamDriverCertFile="{folder}/cert.pem" DefaultNetstreamDriverKeyFile="{folder}/key.pem")\n'
        'module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="x509/certvalid")\n'
        f'input(type="imtcp" port="{port}" address="127.0.0.1")\n'
        f'action(type="omfile" file="{folder}/out.log" template="RSYSLOG_SyslogProtocol23Format")\n'
    )
    proc = subprocess.Popen([shutil.which("rsyslogd") or "/usr/sbin/rsyslogd", "-n", "-f", str(folder / "rsyslog.conf"),
                             "-i", str(folder / "pid")])
    time.sleep(1.0)
    return proc, port, folder / "out.log"


def bench_forward(work: Path, n: int, use_rsyslog: bool) -> dict[str, object]:
    archive = fresh_archive(work / "forward")
    _events(archive, [], 0, 1)
    query = QueryPerformed(DOCTOR, "STUDY", (("PatientName", "BENCH*"),), 3, dt.datetime.now(dt.UTC))
    # init_home records the archive's creation: the queries fill the spool up to exactly n records
    with read_session(archive.ctx.engine) as s:
        already = s.scalar(select(func.count()).select_from(AuditRecord)) or 0
    for i in range(already, n, 500):
        with write_session(archive.ctx.engine) as s:
            for _ in range(min(500, n - i)):
                archive.ctx.bus.publish(s, query)
    with read_session(archive.ctx.engine) as s:
        spooled, last_seq = s.execute(select(func.count(), func.max(AuditRecord.seq)).select_from(AuditRecord)).one()
    if spooled != n:
        raise RuntimeError(f"the spool holds {spooled} records, expected {n}")
    proc = None
    if use_rsyslog:
        proc, port, _ = _rsyslog(archive, work / "rsyslog")
        collector = "rsyslogd (gtls)"
    else:
        port = Sink(archive).port
        collector = "in-process TLS sink"
    fw = SyslogForwarder(archive.ctx, SyslogCollector(host="127.0.0.1", port=port), spool=AuditSpoolSettings(max_backoff_s=1))
    started = time.perf_counter()
    fw.start()
    while fw.cursor < last_seq:
        time.sleep(0.005)
        if time.perf_counter() - started > 600:
            raise RuntimeError("forwarding stalled")
    elapsed = time.perf_counter() - started
    fw.stop(drain_s=1)
    if proc is not None:
        proc.terminate()
        proc.wait()
    archive.close()
    return {"records": n, "seconds": round(elapsed, 3), "records_per_s": round(n / elapsed), "collector": collector,
            "batch": AuditSpoolSettings().batch, "target_per_s": 5000}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="60 CT slices, 5,000 events, 1 repetition")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--rsyslog", action="store_true", help="forward to a real rsyslogd instead of the in-process sink")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    reps = 1 if args.quick else args.reps
    work = Path(tempfile.mkdtemp(prefix="dicomguard-bench-audit-", dir=args.workdir))
    try:
        objects = ct_slices(60 if args.quick else 500)
        results = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
            "ingest": bench_ingest(work, objects, reps),
            "events": bench_events(work, 5000 if args.quick else 20000),
            "forward": bench_forward(work, 5000 if args.quick else 20000, args.rsyslog),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    i, e, f = results["ingest"], results["events"], results["forward"]
    print(f"ingest  {i['objects']} CT slices ({i['megabytes']} MB), objects/s: {i['objects_per_s']}")  # type: ignore[index]
    print(f"        audit cost {i['audit_cost_pct']} % (best runs {i['audit_cost_pct_best']} %), audit + ledger cost "  # type: ignore[index]
          f"{i['audit_and_ledger_cost_pct']} % (best runs {i['audit_and_ledger_cost_pct_best']} %); target < 10 %")  # type: ignore[index]
    print(f"events  {e['events_100_per_transaction_per_s']}/s (100 per transaction), {e['events_1_per_transaction_per_s']}/s (1 per transaction)")  # type: ignore[index]
    print(f"forward {f['records_per_s']} records/s to {f['collector']} (target >= 5,000)")  # type: ignore[index]
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
