"""Integrity ledger benchmark (issue 3): appends, proofs on a large log, full verify vs sha256sum.

* ``append``: leaves/s appended to the persistent RFC 9162 tree on SQLite (one
  process, one core), in batches of 1,000 leaves per transaction, signing no
  checkpoint (the tree store alone). Target >= 10,000 leaves/s.
* ``proof``: inclusion proofs on a 1,000,000-leaf log stored in SQLite: median
  and p99 time per proof (one indexed query + hashing) and number of hashes.
  Target < 5 ms and <= 20 hashes.
* ``verify``: ``dicomguard verify`` (full: decrypt every blob, recompute both
  digests, recompute the tree, check signatures) over a freshly imported CT
  series, in MB/s of plaintext, beside ``sha256sum`` of the same plaintext files
  in the same run. Target >= 50 % of sha256sum.

Usage: ``python bench/ledger.py [--quick] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dicomguard.index.db import make_engine, migrate, read_session, write_session  # noqa: E402
from dicomguard.ledger import merkle  # noqa: E402
from dicomguard.ledger.store import LedgerStore  # noqa: E402

PASSPHRASE = "benchmark passphrase, not a secret"


def bench_append(folder: Path, n: int, batch: int = 1000) -> dict[str, float]:
    engine = make_engine(f"sqlite:///{folder / 'append.db'}")
    migrate(engine)
    leaves = [f'{{"f":"dicomguard-leaf/1","kind":"bench","i":{i}}}'.encode() for i in range(n)]
    now = dt.datetime.now(dt.UTC)
    start = time.perf_counter()
    for i in range(0, n, batch):
        with write_session(engine) as s:
            LedgerStore(s).append([("event", str(j), leaves[j]) for j in range(i, min(n, i + batch))], now)
    seconds = time.perf_counter() - start
    engine.dispose()
    return {"leaves": n, "seconds": seconds, "leaves_per_s": n / seconds}


def bench_proofs(folder: Path, n: int, samples: int = 1000) -> dict[str, float]:
    engine = make_engine(f"sqlite:///{folder / 'proof.db'}")
    migrate(engine)
    now = dt.datetime.now(dt.UTC)
    build = time.perf_counter()
    for i in range(0, n, 10_000):
        with write_session(engine) as s:
            LedgerStore(s).append([("event", "", b"leaf %d" % j) for j in range(i, min(n, i + 10_000))], now)
    build_s = time.perf_counter() - build
    rng = random.Random(7)
    times, sizes = [], []
    with read_session(engine) as s:
        store = LedgerStore(s)
        root = store.root(n)
        for _ in range(samples):
            idx = rng.randrange(n)
            t = time.perf_counter()
            proof = store.inclusion_proof(idx, n)
            times.append(time.perf_counter() - t)
            sizes.append(len(proof))
            merkle.verify_inclusion(merkle.leaf_hash(b"leaf %d" % idx), idx, n, proof, root)
    engine.dispose()
    times.sort()
    return {
        "tree_size": n,
        "build_seconds": build_s,
        "proof_ms_median": statistics.median(times) * 1000,
        "proof_ms_p99": times[int(len(times) * 0.99) - 1] * 1000,
        "hashes_max": max(sizes),
    }


def bench_verify(folder: Path, slices: int) -> dict[str, float]:
    os.environ.setdefault("DICOMGUARD_PASSPHRASE", PASSPHRASE)
    from bench.run import make_ct_series  # type: ignore[import-not-found]
    from dicomguard.app.archive import Archive
    from dicomguard.app.home import init_home
    from dicomguard.app.verify import verify_archive

    inputs = folder / "ct"
    import numpy as np

    make_ct_series(inputs, slices, np.random.default_rng(1))
    files = sorted(inputs.iterdir())
    total = sum(f.stat().st_size for f in files)
    init_home(folder / "home", PASSPHRASE, "admin")
    with Archive.open(folder / "home", PASSPHRASE) as a:
        list(a.operator.store.ingest_many([(str(f), (lambda f=f: f.read_bytes())) for f in files]))
        os.sync()
        runs = []
        for _ in range(3):
            a.ctx.keyring._patient_keys.clear()  # no warm key cache: a fresh verify
            t = time.perf_counter()
            report = verify_archive(a.ctx, a.ledger.verifier)  # unrecorded: no IntegrityChecked event, no alerts
            runs.append(time.perf_counter() - t)
            assert report.ok, report.problems
    sha = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run(["sha256sum", *map(str, files)], check=True, stdout=subprocess.DEVNULL)
        sha.append(time.perf_counter() - t)
    v, s = statistics.median(runs), statistics.median(sha)
    return {
        "objects": len(files),
        "megabytes": total / 1e6,
        "verify_seconds": v,
        "verify_mb_s": total / 1e6 / v,
        "sha256sum_seconds": s,
        "sha256sum_mb_s": total / 1e6 / s,
        "ratio": s / v,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dicomguard-ledger-bench-") as tmp:
        folder = Path(tmp)
        append = bench_append(folder, 20_000 if args.quick else 100_000)
        proofs = bench_proofs(folder, 100_000 if args.quick else 1_000_000, 200 if args.quick else 1000)
        verify = bench_verify(folder, 50 if args.quick else 200)
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(),
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "append": append,
        "proof": proofs,
        "verify": verify,
        "targets": {
            "append_10k_leaves_per_s": append["leaves_per_s"] >= 10_000,
            "proof_under_5ms": proofs["proof_ms_p99"] < 5,
            "proof_at_most_20_hashes": proofs["hashes_max"] <= 20,
            "verify_at_least_half_of_sha256sum": verify["ratio"] >= 0.5,
        },
    }
    out = args.out or ROOT / "bench" / "results" / f"ledger-{dt.date.today().isoformat()}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"append : {append['leaves_per_s']:,.0f} leaves/s ({append['leaves']:,} leaves, batches of 1,000)")
    print(f"proof  : {proofs['proof_ms_median']:.3f} ms median, {proofs['proof_ms_p99']:.3f} ms p99, "
          f"<= {proofs['hashes_max']} hashes, tree of {proofs['tree_size']:,} (built in {proofs['build_seconds']:.0f} s)")
    print(f"verify : {verify['verify_mb_s']:.0f} MB/s vs sha256sum {verify['sha256sum_mb_s']:.0f} MB/s "
          f"= {verify['ratio']:.0%} ({verify['objects']} objects, {verify['megabytes']:.0f} MB)")
    for name, ok in result["targets"].items():
        print(f"  {name}: {'met' if ok else 'MISSED'}")
    print(f"results written to {out}")


if __name__ == "__main__":
    main()
