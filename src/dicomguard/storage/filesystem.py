"""Blob store on a local (or mounted) file system.

Atomic write-once (POSIX): write to a temporary file in the target folder,
``fsync`` it, ``link`` it to the final name (fails if the name exists, so a
stored blob is never replaced), ``fsync`` the folder, remove the temporary name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from dicomguard._process import pid_alive
from dicomguard.storage.base import BlobMissingError, BlobStoreError

_ID = re.compile(r"^[0-9a-f]{32,64}$")
_TMP_PREFIX = ".tmp-"


class FilesystemBlobStore:
    """Blobs under ``root/ab/cd/<id>``; two levels of fan-out keep folders small."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, blob_id: str) -> Path:
        if not _ID.match(blob_id):
            raise BlobStoreError("invalid blob id")  # never let an id become a path traversal
        return self.root / blob_id[:2] / blob_id[2:4] / blob_id

    def put(self, blob_id: str, chunks: Iterable[bytes]) -> int:
        final = self._path(blob_id)
        folder = final.parent
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{_TMP_PREFIX}{blob_id}-{os.getpid()}"
        size = 0
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
                        size += written
                os.fsync(fd)
            finally:
                os.close(fd)
            os.link(tmp, final)
        except FileExistsError as exc:
            raise BlobStoreError(f"blob {blob_id} already exists") from exc
        except OSError as exc:
            raise BlobStoreError(f"cannot write blob: {exc.strerror}") from exc
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        _fsync_dir(folder)
        return size

    def read(self, blob_id: str) -> bytes:
        try:
            return self._path(blob_id).read_bytes()
        except FileNotFoundError as exc:
            raise BlobMissingError(blob_id) from exc

    def stream(self, blob_id: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        try:
            f = self._path(blob_id).open("rb")
        except FileNotFoundError as exc:
            raise BlobMissingError(blob_id) from exc
        with f:
            while chunk := f.read(chunk_size):
                yield chunk

    def exists(self, blob_id: str) -> bool:
        return self._path(blob_id).exists()

    def delete(self, blob_id: str) -> None:
        path = self._path(blob_id)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(path.parent)

    def iter_ids(self) -> Iterator[str]:
        if not self.root.exists():
            return
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if _ID.match(name):
                    yield name

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files left by a writer killed mid-write (they were never visible)."""
        removed = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(_TMP_PREFIX):
                    pid = name.rsplit("-", 1)[-1]
                    if not (pid.isdigit() and pid_alive(int(pid))):
                        os.unlink(os.path.join(dirpath, name))
                        removed += 1
        return removed



def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
