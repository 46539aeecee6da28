"""Build a blob store from a plain JSON spec: in the test process and in the child processes it starts.

Child processes (the kill -9 writer, the memory probe) read the spec on stdin, so the
throwaway S3 key never appears on a command line. Run as ``python -m tests.storage.stores MODE``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dicomguard.storage.filesystem import FilesystemBlobStore
from dicomguard.storage.s3 import S3BlobStore, S3Bucket, S3Credentials, S3Location

MiB = 1024 * 1024


def build_store(spec: dict[str, Any]) -> FilesystemBlobStore | S3BlobStore:
    if spec["kind"] == "filesystem":
        return FilesystemBlobStore(Path(spec["root"]))
    location = S3Location(bucket=spec["bucket"], endpoint=spec["endpoint"], prefix=spec["prefix"],
                          ca_file=Path(spec["ca_file"]) if spec.get("ca_file") else None)
    bucket = S3Bucket(location, S3Credentials(spec["access_key"], spec["secret_key"]))
    return S3BlobStore(bucket, **({"part_size": spec["part_size"]} if spec.get("part_size") else {}))


def pattern(size: int, seed: int = 1, chunk: int = MiB) -> Iterator[bytes]:
    """``size`` bytes of incompressible data in ``chunk``-byte pieces, made as they are consumed (never all at once)."""
    block = bytearray(hashlib.shake_256(seed.to_bytes(8, "big")).digest(chunk))
    sent, n = 0, 0
    while sent < size:
        block[:8] = n.to_bytes(8, "big")  # every chunk differs: no part of the object repeats another
        piece = bytes(block[: min(chunk, size - sent)])
        sent += len(piece)
        n += 1
        yield piece


def _peak_rss_reset() -> None:
    """Reset the process's peak RSS (Linux: ``echo 5 > /proc/self/clear_refs``)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _memory(spec: dict[str, Any]) -> dict[str, Any]:
    """Put then stream one large object; report peak RSS above the warmed-up baseline for each direction."""
    store = build_store(spec)
    size = spec["size"]
    warm = "f" * 32
    store.put(warm, pattern(64 * 1024, seed=9))  # loads botocore's models, opens the TLS connection pool
    b"".join(store.stream(warm))
    store.delete(warm)
    sent = hashlib.sha256()

    def tee() -> Iterator[bytes]:
        for piece in pattern(size, seed=spec.get("seed", 1)):
            sent.update(piece)
            yield piece

    _peak_rss_reset()
    base = _status_kib("VmRSS")
    t = time.perf_counter()
    written = store.put(spec["blob_id"], tee())
    put_s = time.perf_counter() - t
    put_peak = _status_kib("VmHWM") - base
    _peak_rss_reset()
    base_get = _status_kib("VmRSS")
    got = hashlib.sha256()
    largest = 0
    t = time.perf_counter()
    for chunk in store.stream(spec["blob_id"], spec.get("chunk_size", MiB)):
        largest = max(largest, len(chunk))
        got.update(chunk)
    get_s = time.perf_counter() - t
    get_peak = _status_kib("VmHWM") - base_get
    return {"written": written, "sent_sha256": sent.hexdigest(), "read_sha256": got.hexdigest(), "largest_chunk": largest,
            "put_peak_growth_kib": put_peak, "get_peak_growth_kib": get_peak, "put_s": put_s, "get_s": get_s}


def _hang(spec: dict[str, Any]) -> None:
    """Start a large put, say so once ``hang_after`` bytes were taken, then never finish (until killed)."""
    store = build_store(spec)

    def endless() -> Iterator[bytes]:
        taken = 0
        for piece in pattern(1 << 40):
            yield piece
            taken += len(piece)
            if taken >= spec["hang_after"]:
                print("HANGING", flush=True)
                time.sleep(3600)

    store.put(spec["blob_id"], endless())


if __name__ == "__main__":
    mode, spec = sys.argv[1], json.loads(sys.stdin.read())
    if mode == "memory":
        print(json.dumps(_memory(spec)), flush=True)
    elif mode == "hang":
        _hang(spec)
    else:
        raise SystemExit(f"unknown mode {mode}")
    os._exit(0)
