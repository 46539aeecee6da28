"""Breach-scope benchmark: ``incident scope --user U --since 30d`` over an audit trail of 10 million events.

Workload: 100 stored CT objects of 100 patients; 1,000 users each make 3 real accesses through the recorder
(``InstancesAccessed`` events: PS3.15 messages with the patient, sealed, blind-indexed, ledgered). Those 3,000
real audit rows are then replicated (new ``seq``, an ``event_time`` spread over the last 90 days, no
dedup token) up to ``--events`` rows (default 10,000,000), in batches, straight into ``audit_records``.
Every copy decrypts and parses like the original (the sealed body is bound to the record id, which the copy
keeps); ``audit_patients`` is not replicated (the scope does not read it). The ledger does not grow with the
copies (the scope does not read it either).

Measured, ``--reps`` times (default 5): the scope of one user (1/1,000 of the trail) over the last 30 days,
through the service (authorization, the audit-log read recorded, decryption, parsing, counting, the incident
step recorded). Target: < 5 s, on SQLite and on PostgreSQL (``--postgresql URL`` of a server database the
benchmark may fill; dropped afterwards).

Usage: ``python bench/incident_scope.py [--events N] [--reps N] [--postgresql] [--out FILE]``.
Disk: about 3.2 KB per audit row (sealed XML and indexes): 10 million rows take ~32 GB per backend. The results
file is rewritten after each backend.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DICOMGUARD_UNSAFE_TEST_PASSWORD_HASH", "1")

import pydicom  # noqa: E402
from sqlalchemy import create_engine, insert, select, text  # noqa: E402

from dicomguard.app.archive import Archive  # noqa: E402
from dicomguard.app.home import init_home  # noqa: E402
from dicomguard.core.access import Action, Principal, PrincipalKind  # noqa: E402
from dicomguard.core.events import InstancesAccessed  # noqa: E402
from dicomguard.core.keyring import PURPOSE_IDENTITY  # noqa: E402
from dicomguard.identity.users import create_user  # noqa: E402
from dicomguard.index.db import read_session, write_session  # noqa: E402
from dicomguard.index.models import AuditPatient, AuditRecord  # noqa: E402
from tests.dicom_factory import FakePatient, ct_series  # noqa: E402

PASSPHRASE = "benchmark passphrase, throwaway archive"
USERS = 1000
TARGET = "user0042"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def build(home: Path, database: str, events: int, days: int = 90, patients: bool = False) -> tuple[Archive, float]:
    """The archive with ``events`` audit rows spread over ``days``; ``patients``: copy their patient blind index too."""
    init_home(home, PASSPHRASE, "admin", database)
    archive = Archive.open(home, PASSPHRASE)
    refs: list[tuple[str, str, str]] = []
    for i in range(100):
        data = ct_series(FakePatient(f"PIDBENCH{i:04d}", f"BENCH^PATIENT{i:04d}", "19700101", f"ACC{i:05d}"), n=1, size=8, seed=i)[0]
        archive.operator.store.ingest(data)
        ds = pydicom.dcmread(io.BytesIO(data))
        refs.append((str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), archive.ctx.patients.find(f"PIDBENCH{i:04d}", None)[0][0]))
    with write_session(archive.ctx.engine) as s:
        create_user(s, archive.ctx.keyring.archive_key(PURPOSE_IDENTITY), TARGET, "radiologist", department="RADIOLOGY")
    now = dt.datetime.now(dt.UTC)
    for u in range(USERS):
        who = Principal(PrincipalKind.USER, f"user{u:04d}", frozenset({"radiologist"}), address="10.0.0.1")
        with write_session(archive.ctx.engine) as s:
            for k in range(3):
                sop, study, ref = refs[(u * 7 + k * 13) % len(refs)]
                archive.ctx.bus.publish(s, InstancesAccessed(who, Action.RETRIEVE, (sop,), (study,), (ref,), now))
    with read_session(archive.ctx.engine) as s:
        template = [dict(r._mapping) for r in s.execute(select(AuditRecord.__table__))]
        top = max(r["seq"] for r in template)
        tokens: dict[int, list[bytes]] = {}
        for seq_of, token in s.execute(select(AuditPatient.record_seq, AuditPatient.token)):
            tokens.setdefault(seq_of, []).append(token)
    started = time.perf_counter()
    seq, batch, made, named = top, [], len(template), []
    rng = secrets.SystemRandom()
    while made < events:
        for r in template:
            if made >= events:
                break
            seq += 1
            made += 1
            batch.append({**r, "seq": seq, "dedup_token": None,
                          "event_time": now - dt.timedelta(seconds=rng.randrange(days * 86400)),
                          "recorded_at": now})
            if patients:
                named += [{"record_seq": seq, "token": token} for token in tokens.get(r["seq"], ())]
            if len(batch) >= 50_000:
                _insert(archive, batch, named)
                batch, named = [], []
    if batch:
        _insert(archive, batch, named)
    return archive, time.perf_counter() - started


@contextmanager
def scratch_database(backend: str) -> Iterator[str]:
    """``""`` for SQLite (the home's file); for PostgreSQL a new database on the local server, dropped afterwards."""
    if backend != "postgresql":
        yield ""
        return
    name = f"dgbench_{secrets.token_hex(4)}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _insert(archive: Archive, rows: list[dict[str, Any]], named: list[dict[str, Any]]) -> None:
    with write_session(archive.ctx.engine) as s:
        s.execute(insert(AuditRecord.__table__), rows)
        if named:
            s.execute(insert(AuditPatient.__table__), named)


def measure(archive: Archive, reps: int) -> dict[str, Any]:
    officer = archive.operator.incidents
    number = officer.open("benchmark: scope of one account")
    seconds, patients = [], 0
    for _ in range(reps):
        now = dt.datetime.now(dt.UTC)
        t0 = time.perf_counter()
        scope = officer.scope(number, user=TARGET, since=now - dt.timedelta(days=30), until=now)
        seconds.append(time.perf_counter() - t0)
        patients = len(scope.patients)
    return {"seconds": seconds, "median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds),
            "patients": patients, "events_of_user": sum(v for v in scope.events.values())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--postgresql", action="store_true", help="also on the PostgreSQL server at 127.0.0.1:5432")
    parser.add_argument("--only-postgresql", action="store_true", help="only on PostgreSQL")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or ROOT / "bench" / "results" / f"incident-scope-{dt.date.today()}.json"
    results: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(), "events": args.events, "users": USERS,
                               "cores": os.cpu_count(), "backends": {}}
    backends = ["postgresql"] if args.only_postgresql else ["sqlite"] + (["postgresql"] if args.postgresql else [])
    for backend in backends:
        work = Path(tempfile.mkdtemp(prefix=f"dg-scope-{backend}-"))
        with scratch_database(backend) as database:
            archive, fill_s = build(work / "home", database, args.events)
            with read_session(archive.ctx.engine) as s:
                rows = s.execute(text("SELECT count(*) FROM audit_records")).scalar_one()
            measured = measure(archive, args.reps)
            results["backends"][backend] = {"rows": rows, "fill_s": fill_s, **measured, "target_met": measured["median_s"] < 5}
            print(backend, json.dumps(results["backends"][backend]), flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1))
            archive.close()


if __name__ == "__main__":
    main()
