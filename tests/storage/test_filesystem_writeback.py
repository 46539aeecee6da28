"""The filesystem store starts writeback while it writes (``sync_file_range(2)``) and still makes blobs durable only
with fsync/syncfs: the ranges handed to the device cover each blob of 256 KiB or more exactly once (a smaller one is
left to its flush), and a refused call loses nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dicomguard.storage import filesystem
from dicomguard.storage.filesystem import FilesystemBlobStore

MiB = 1024 * 1024


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    seen: list[tuple[int, int, int]] = []

    def record(fd: int, offset: int, length: int, flags: int) -> int:
        seen.append((offset, length, flags))
        return 0

    monkeypatch.setattr(filesystem, "_sync_file_range", record)
    return seen


@pytest.mark.parametrize("chunks", [[b"x" * 100], [b"x" * (256 * 1024 - 1)], [b"x" * 256 * 1024], [b"h" * 24, b"s" * MiB, b"t" * (MiB // 2)],
                                    [b"a" * 4096] * 700, [b""]])
def test_writeback_covers_each_written_byte_once_in_order(tmp_path: Path, calls, chunks: list[bytes]) -> None:
    store = FilesystemBlobStore(tmp_path / "blobs")
    size = store.put("ab" + "0" * 30, iter(chunks), durable=False)
    assert size == sum(map(len, chunks))
    covered = 0
    for offset, length, flags in calls:
        assert flags == 2  # SYNC_FILE_RANGE_WRITE: start writing, wait for nothing
        assert offset == covered and length > 0
        covered += length
    assert covered == (size if size >= 256 * 1024 else 0)
    assert all(length >= MiB for _, length, _ in calls[:-1])  # a call per megabyte at most, not one per chunk
    assert store.read("ab" + "0" * 30) == b"".join(chunks)


def test_a_refused_writeback_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(filesystem, "_sync_file_range", lambda fd, offset, length, flags: -1)
    store = FilesystemBlobStore(tmp_path / "blobs")
    data = bytes(range(256)) * 9000
    store.put("cd" + "1" * 30, iter([data[:MiB], data[MiB:]]))
    assert store.read("cd" + "1" * 30) == data


def test_the_real_call_is_made_on_linux(tmp_path: Path) -> None:
    """glibc has it: the store is not silently running without (the ctypes signature accepts the store's call)."""
    assert filesystem._sync_file_range is not None
    store = FilesystemBlobStore(tmp_path / "blobs")
    store.put("ef" + "2" * 30, iter([b"z" * (3 * MiB)]))
    assert store.read("ef" + "2" * 30) == b"z" * (3 * MiB)


def test_a_header_and_the_next_chunk_go_out_in_one_write_and_a_short_write_loses_nothing(tmp_path: Path,
                                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The small first chunk (a blob's header) of a small blob is written with the next one by one writev(2) (a
    large blob keeps two writes); if the kernel takes only part of it, the rest is written after it, in order."""
    real_writev, calls = os.writev, []

    def short_writev(fd: int, buffers) -> int:  # type: ignore[no-untyped-def]
        calls.append([len(b) for b in buffers])
        return real_writev(fd, [bytes(buffers[0])[:10]]) if len(calls) == 1 else real_writev(fd, buffers)

    monkeypatch.setattr(filesystem.os, "writev", short_writev)
    store = FilesystemBlobStore(tmp_path / "blobs")
    header, body, tail = b"H" * 40, bytes(range(256)) * 300, b"T" * 7
    large = [header, b"L" * (256 * 1024), tail]
    for blob_id, chunks in (("ab" + "3" * 30, [header, body, tail]), ("ab" + "4" * 30, [header, body]), ("ab" + "5" * 30, [header]),
                            ("ab" + "6" * 30, large)):
        assert store.put(blob_id, iter(chunks)) == sum(map(len, chunks))
        assert store.read(blob_id) == b"".join(chunks)
    assert calls == [[40, len(body)], [40, len(body)]]  # the first one was short; a header alone or a large blob: none
