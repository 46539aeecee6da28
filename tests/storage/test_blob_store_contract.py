"""The blob store contract, one suite for every store: the filesystem store and the S3 store on a real SeaweedFS.

What ``BlobStore`` promises (``storage/base.py``), each checked on both stores alike:
write then read back, streaming in bounded chunks, write-once (a second put of an id is
refused and the first blob is unchanged, also between concurrent writers), atomic
visibility (nothing visible before ``put`` returns; a put that fails midway leaves
nothing), missing blobs, delete, listing, ids that are never paths or keys, a writer
killed with SIGKILL mid-upload (nothing visible, the id still writable, the leftovers
swept), and a large object streamed both ways in bounded memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dicomguard.storage.base import (
    BlobExistsError,
    BlobMissingError,
    BlobStore,
    BlobStoreError,
)
from dicomguard.storage.filesystem import FilesystemBlobStore
from dicomguard.storage.s3 import MIN_PART_SIZE, PART_SIZE, S3BlobStore
from tests.storage.conftest import s3_spec
from tests.storage.stores import MiB, build_store, pattern

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("filesystem", "s3")


@dataclass
class Subject:
    """A store under test, the spec to rebuild it in a child process, and a size that needs several S3 parts."""

    kind: str
    store: BlobStore
    spec: dict[str, Any]
    large: int

    def leftovers(self) -> list[str]:
        """What a failed or killed write left behind, invisible: temporary files, incomplete multipart uploads."""
        if isinstance(self.store, FilesystemBlobStore):
            return [p.name for p in self.store.root.rglob(".tmp-*")]
        assert isinstance(self.store, S3BlobStore)
        return [name for name, _, _ in self.store.bucket.incomplete_uploads()]

    def in_progress(self, writer: int) -> list[str]:
        """What a writer process has under way: its leftovers if it died now, or (filesystem, ``O_TMPFILE``) an
        anonymous file it holds open in the store's folders, which has no name to leave behind."""
        held = []
        if isinstance(self.store, FilesystemBlobStore):
            for fd in Path(f"/proc/{writer}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith(str(self.store.root)) and target.endswith("(deleted)"):
                        held.append(target)
        return self.leftovers() + held


def _subject(kind: str, tmp_path: Path, request: pytest.FixtureRequest, part_size: int = MIN_PART_SIZE) -> Subject:
    if kind == "filesystem":
        spec: dict[str, Any] = {"kind": "filesystem", "root": str(tmp_path / "blobs")}
    else:
        spec = s3_spec(request.getfixturevalue("seaweedfs"), part_size=part_size)
    return Subject(kind, build_store(spec), spec, large=2 * part_size + 3 * MiB + 17)


@pytest.fixture(params=KINDS)
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    return _subject(request.param, tmp_path, request)


def new_id() -> str:
    return secrets.token_hex(16)


def data(size: int, seed: int = 1) -> bytes:
    return b"".join(pattern(size, seed))


# -- write, read, stream -------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1000, MiB + 1, "large"])
def test_write_then_read_back(subject: Subject, size: int | str) -> None:
    n = subject.large if size == "large" else int(size)
    blob, body = new_id(), data(n)
    assert subject.store.put(blob, pattern(n)) == n
    assert subject.store.exists(blob)
    assert subject.store.read(blob) == body
    assert b"".join(subject.store.stream(blob)) == body
    assert subject.leftovers() == []


def test_stream_yields_bounded_chunks(subject: Subject) -> None:
    blob, body = new_id(), data(subject.large)
    subject.store.put(blob, [body])  # one huge chunk in: parts are cut from it
    sizes = [len(c) for c in subject.store.stream(blob, chunk_size=64 * 1024)]
    assert max(sizes) <= 64 * 1024 and sum(sizes) == len(body)
    assert hashlib.sha256(b"".join(subject.store.stream(blob, chunk_size=64 * 1024))).digest() == hashlib.sha256(body).digest()


def test_durable_false_then_sync(subject: Subject) -> None:
    blobs = [new_id() for _ in range(6)]  # more than the filesystem store's fsync-per-blob threshold: one syncfs
    for i, blob in enumerate(blobs):
        subject.store.put(blob, [data(100, seed=i)], durable=False)
    subject.store.sync(blobs)
    assert [subject.store.read(b) for b in blobs] == [data(100, seed=i) for i in range(6)]


# -- write-once ----------------------------------------------------------------------------


@pytest.mark.parametrize("second", ["small", "large"])
def test_second_put_is_refused_and_the_first_blob_unchanged(subject: Subject, second: str) -> None:
    blob, first = new_id(), data(5000, seed=1)
    subject.store.put(blob, [first])
    other = pattern(5000 if second == "small" else subject.large, seed=2)
    with pytest.raises(BlobExistsError):
        subject.store.put(blob, other)
    assert subject.store.read(blob) == first
    assert subject.leftovers() == []  # the refused multipart upload was aborted


def test_concurrent_writers_of_one_id_exactly_one_wins(subject: Subject) -> None:
    blob, n = new_id(), 8
    barrier = threading.Barrier(n)
    results: dict[int, str] = {}

    def write(i: int) -> None:
        barrier.wait()
        try:
            subject.store.put(blob, [data(200_000, seed=i)])
            results[i] = "stored"
        except BlobExistsError:
            results[i] = "refused"

    threads = [threading.Thread(target=write, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, r in results.items() if r == "stored"]
    assert len(winners) == 1 and len(results) == n, results
    assert subject.store.read(blob) == data(200_000, seed=winners[0])


# -- atomic visibility ---------------------------------------------------------------------


def test_nothing_is_visible_before_put_returns(subject: Subject) -> None:
    blob, seen = new_id(), []

    def chunks() -> Iterator[bytes]:
        for i, piece in enumerate(pattern(subject.large)):
            if i == subject.large // MiB - 1:  # the last chunk: every earlier part is already on the server
                seen.append((subject.store.exists(blob), blob in set(subject.store.iter_ids())))
                with pytest.raises(BlobMissingError):
                    subject.store.read(blob)
                with pytest.raises(BlobMissingError):
                    b"".join(subject.store.stream(blob))
            yield piece

    subject.store.put(blob, chunks())
    assert seen == [(False, False)]
    assert subject.store.read(blob) == data(subject.large)


def test_a_put_that_fails_midway_leaves_nothing(subject: Subject) -> None:
    blob = new_id()

    def broken() -> Iterator[bytes]:
        for i, piece in enumerate(pattern(subject.large)):
            if i == subject.large // MiB - 1:
                raise RuntimeError("the source broke")
            yield piece

    with pytest.raises(RuntimeError, match="the source broke"):
        subject.store.put(blob, broken())
    assert not subject.store.exists(blob)
    assert blob not in set(subject.store.iter_ids())
    assert subject.leftovers() == []
    assert subject.store.put(blob, [b"after"]) == 5  # the id is still free
    assert subject.store.read(blob) == b"after"


# -- missing, delete, listing, ids ---------------------------------------------------------


def test_missing_blob(subject: Subject) -> None:
    blob = new_id()
    assert not subject.store.exists(blob)
    with pytest.raises(BlobMissingError):
        subject.store.read(blob)
    with pytest.raises(BlobMissingError):
        b"".join(subject.store.stream(blob))
    subject.store.delete(blob)  # ignored


def test_delete(subject: Subject) -> None:
    blob, kept = new_id(), new_id()
    subject.store.put(blob, [b"gone soon"])
    subject.store.put(kept, [b"stays"])
    subject.store.delete(blob)
    assert not subject.store.exists(blob)
    with pytest.raises(BlobMissingError):
        subject.store.read(blob)
    assert subject.store.read(kept) == b"stays"
    assert set(subject.store.iter_ids()) == {kept}


def test_iter_ids_lists_exactly_this_stores_blobs(subject: Subject, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    blobs = {new_id() for _ in range(5)} | {secrets.token_hex(32)}  # 32- and 64-digit ids
    for blob in blobs:
        subject.store.put(blob, [blob.encode()])
    neighbour = _subject(subject.kind, tmp_path / "neighbour", request).store  # another folder / prefix
    neighbour.put(new_id(), [b"not mine"])
    assert set(subject.store.iter_ids()) == blobs


@pytest.mark.parametrize("bad", ["../../etc/passwd", "ABCDEF0123456789ABCDEF0123456789", "ab/cd", "", "0" * 31, "a" * 65])
def test_ids_are_never_paths_or_keys(subject: Subject, bad: str) -> None:
    for call in (lambda: subject.store.put(bad, [b"x"]), lambda: subject.store.read(bad),
                 lambda: subject.store.exists(bad), lambda: subject.store.delete(bad), lambda: list(subject.store.stream(bad))):
        with pytest.raises(BlobStoreError):
            call()


# -- crash and size ------------------------------------------------------------------------


@pytest.mark.slow  # a child process per store
def test_writer_killed_mid_upload_leaves_nothing_visible(subject: Subject) -> None:
    blob = new_id()
    spec = {**subject.spec, "blob_id": blob, "hang_after": subject.large}
    child = subprocess.Popen([sys.executable, "-m", "tests.storage.stores", "hang"], cwd=ROOT, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        child.stdin.write(json.dumps(spec))  # type: ignore[union-attr]
        child.stdin.close()  # type: ignore[union-attr]
        assert child.stdout.readline().strip() == "HANGING"  # type: ignore[union-attr]
        assert subject.in_progress(child.pid), "the child should be mid-upload: a file being written or an open multipart upload"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    assert not subject.store.exists(blob)
    assert blob not in set(subject.store.iter_ids())
    with pytest.raises(BlobMissingError):
        subject.store.read(blob)
    assert subject.store.put(blob, [b"written after the crash"]) == 23
    assert subject.store.read(blob) == b"written after the crash"
    # What the dead writer left is swept at the next open (filesystem: its pid is dead; S3: the upload is stale).
    if isinstance(subject.store, S3BlobStore):
        assert subject.store.remove_stale_temporaries() == 0  # younger than a day: might be a live writer's
        assert subject.store.remove_stale_temporaries(older_than=timedelta(0)) == 1
    else:  # an anonymous file (O_TMPFILE) vanished with its writer; a named temporary is swept (its pid is dead)
        assert subject.store.remove_stale_temporaries() == (0 if subject.store._anonymous else 1)
    assert subject.leftovers() == []


@pytest.mark.slow  # 64 MiB each way, in a child process (a fresh peak RSS)
@pytest.mark.parametrize("kind", KINDS)
def test_large_object_streams_both_ways_in_bounded_memory(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    size = 64 * MiB
    spec = _subject(kind, tmp_path, request, part_size=PART_SIZE).spec  # the production part size (16 MiB)
    spec = {**spec, "size": size, "blob_id": new_id()}
    out = subprocess.run([sys.executable, "-m", "tests.storage.stores", "memory"], cwd=ROOT, input=json.dumps(spec),
                         capture_output=True, text=True, timeout=300, check=True)
    r = json.loads(out.stdout)
    assert r["written"] == size and r["read_sha256"] == r["sent_sha256"]
    assert r["largest_chunk"] <= MiB
    # Peak RSS above the warmed-up process: about one part on the way out, one chunk on the way back.
    assert r["put_peak_growth_kib"] * 1024 < 1.5 * PART_SIZE + 4 * MiB < size / 2, r
    assert r["get_peak_growth_kib"] * 1024 < 8 * MiB, r
