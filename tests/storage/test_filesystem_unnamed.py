"""The filesystem store writes a blob as an anonymous file (``O_TMPFILE``) and links it to its name: while it is
written it has no name at all, so nothing of it can be seen, opened or left behind. Where the file system refuses
``O_TMPFILE`` the store falls back, once and for good, to a temporary name that it removes after the link."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomguard.storage import filesystem
from dicomguard.storage.filesystem import FilesystemBlobStore

BLOB = "ab" + "7" * 30


def _names(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file())


def test_a_blob_being_written_has_no_name_and_is_linked_whole(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "blobs")
    seen: list[list[str]] = []

    def chunks() -> Iterator[bytes]:
        yield b"first part "
        seen.append(_names(store.root))  # mid-write: no file of this blob under any name
        yield b"second part"

    assert store.put(BLOB, chunks()) == 22
    assert seen == [[]]
    assert store._anonymous  # this platform (Linux, a local file system) writes anonymously: no silent fallback
    assert _names(store.root) == [BLOB] and store.read(BLOB) == b"first part second part"


def test_where_o_tmpfile_is_refused_a_temporary_name_is_used_and_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open, refused = os.open, []

    def no_tmpfile(path, flags, mode=0o777):  # type: ignore[no-untyped-def]
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            refused.append(path)
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        return real_open(path, flags, mode)

    monkeypatch.setattr(filesystem.os, "open", no_tmpfile)
    store = FilesystemBlobStore(tmp_path / "blobs")
    seen: list[list[str]] = []

    def chunks() -> Iterator[bytes]:
        yield b"x" * 100
        seen.append(_names(store.root))
        yield b"y" * 100

    assert store.put(BLOB, chunks()) == 200
    assert len(seen[0]) == 1 and seen[0][0].startswith(".tmp-" + BLOB)  # named while written ...
    assert _names(store.root) == [BLOB] and store.read(BLOB) == b"x" * 100 + b"y" * 100  # ... and that name removed
    assert not store._anonymous and len(refused) == 1  # asked once, then the named way for good
    store.put("cd" + "8" * 30, iter([b"z"]))
    assert len(refused) == 1


def test_an_existing_name_is_never_replaced_and_the_anonymous_file_is_dropped(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "blobs")
    store.put(BLOB, iter([b"first"]))
    with pytest.raises(filesystem.BlobExistsError):
        store.put(BLOB, iter([b"second"]))
    assert _names(store.root) == [BLOB] and store.read(BLOB) == b"first"
