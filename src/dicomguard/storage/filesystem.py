"""Blob store on a local (or mounted) file system.

Atomic write-once (POSIX): write to an anonymous file in the target folder
(Linux ``O_TMPFILE``; elsewhere a temporary name, removed after), ``link`` it
to the final name (fails if the name exists, so a stored blob is never
replaced), then make data and names durable:
``fsync`` of file and folder for a single blob, or one ``syncfs(2)`` for a
whole ingest batch (one journal commit instead of two per blob). The index
row that makes a blob visible is committed only after that.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from dicomguard._process import pid_alive
from dicomguard.errors import ConfigurationError
from dicomguard.storage.base import BLOB_ID as _ID
from dicomguard.storage.base import BlobExistsError, BlobMissingError, BlobStoreError

_TMP_PREFIX = ".tmp-"
_SYNCFS_FROM = 4  # more blobs than this per batch: one syncfs is cheaper than many fsyncs


class FilesystemBlobStore:
    """Blobs under ``root/ab/<id>``: 256 folders, created once (ext4 and XFS index large folders)."""

    reads_in_flight = os.cpu_count() or 1

    def __init__(self, root: Path) -> None:
        self.root = root
        self._root = os.fspath(root)
        self._folders: set[Path] = set()
        self._anonymous = hasattr(os, "O_TMPFILE") and _linkat is not None and os.path.isdir("/proc/self/fd")
        """Blobs are written as anonymous files until the file system refuses ``O_TMPFILE`` once."""

    def _file(self, blob_id: str) -> str:
        """The blob's file name as a string (the read path's; pathlib's joins cost more than a small read)."""
        if not _ID.match(blob_id):
            raise BlobStoreError("invalid blob id")  # never let an id become a path traversal
        return os.path.join(self._root, blob_id[:2], blob_id)

    def _path(self, blob_id: str) -> Path:
        return Path(self._file(blob_id))

    def path(self, blob_id: str) -> Path:
        """Where a blob lives (a backup copies it with the kernel's file copy)."""
        return self._path(blob_id)

    def create_layout(self) -> None:
        """Create the 256 fan-out folders up front (``init``), so that no ingest pays for a mkdir."""
        for i in range(256):
            (self.root / f"{i:02x}").mkdir(mode=0o700, parents=True, exist_ok=True)
        fsync_dir(self.root)

    def _folder(self, folder: Path) -> None:
        if folder not in self._folders:
            if not folder.exists():
                folder.mkdir(parents=True, exist_ok=True)
                fsync_dir(folder.parent)
            self._folders.add(folder)

    def put(self, blob_id: str, chunks: Iterable[bytes], durable: bool = True) -> int:
        final = self._path(blob_id)
        folder = final.parent
        self._folder(folder)
        size = 0
        tmp: Path | None = None
        try:
            fd, tmp = self._open_unnamed(folder, blob_id)
            try:
                started = 0  # bytes handed to the device so far (``_start_writeback``)
                held: memoryview | None = None
                for chunk in chunks:
                    view = memoryview(chunk)
                    if size == 0 and held is None and len(view) < _COALESCE_BYTES:
                        held = view  # a small first chunk (a blob's header) may go out with the next one
                        continue
                    if held is not None and len(view) < _WRITEBACK_FROM:
                        size += _write_all(fd, (held, view))  # a small blob: one writev(2)
                    else:
                        if held is not None:
                            size += _write_all(fd, held)
                        size += _write_all(fd, view)
                    held = None
                    if size - started >= _WRITEBACK_BYTES:
                        _start_writeback(fd, started, size - started)
                        started = size
                if held is not None:
                    size += _write_all(fd, held)
                if size >= _WRITEBACK_FROM:
                    _start_writeback(fd, started, size - started)
                if durable:
                    os.fsync(fd)
                if tmp is None:
                    _link_open_file(fd, final)
                else:
                    os.link(tmp, final)
            finally:
                os.close(fd)
        except FileExistsError as exc:
            raise BlobExistsError(f"blob {blob_id} already exists") from exc
        except OSError as exc:
            raise BlobStoreError(f"cannot write blob: {exc.strerror}") from exc
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
        if durable:
            fsync_dir(folder)
        return size

    def _open_unnamed(self, folder: Path, blob_id: str) -> tuple[int, Path | None]:
        """A file to write a blob into before it is linked to its name, and its temporary name if it has one.

        Where the file system supports ``O_TMPFILE`` (Linux: ext4, XFS, Btrfs, tmpfs) the file has no name at all:
        nothing of a write that fails or is killed is ever visible or left behind, and there is no name to remove
        after the link (one system call fewer per object). Elsewhere a temporary name, removed after the link or,
        if the writer died, at start-up (:meth:`remove_stale_temporaries`)."""
        if self._anonymous:
            try:
                return os.open(folder, os.O_WRONLY | os.O_TMPFILE, 0o600), None
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                    raise
                self._anonymous = False
        # Unique per write, even between threads of one process (the pid stays last: remove_stale_temporaries).
        # A counter, not random bytes: the name needs no secrecy, and reading the kernel's random source is one
        # more system call per object.
        tmp = folder / f"{_TMP_PREFIX}{blob_id}-{next(_WRITES):x}-{os.getpid()}"
        return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), tmp

    def sync(self, blob_ids: list[str]) -> None:
        """A few blobs: fsync each file and its folder; a batch: one syncfs(2) of the file system."""
        if len(blob_ids) > _SYNCFS_FROM:
            _syncfs(self.root)
            return
        folders = set()
        for blob_id in blob_ids:
            path = self._path(blob_id)
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            folders.add(path.parent)
        for folder in folders:
            fsync_dir(folder)

    def read(self, blob_id: str) -> bytes:
        # A string path and an unbuffered read: pathlib's joins and a buffered reader cost more than the read itself
        # for a small blob, and every retrieved object makes one.
        try:
            with open(self._file(blob_id), "rb", buffering=0) as f:
                return f.readall()
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
        fsync_dir(path.parent)

    def iter_ids(self) -> Iterator[str]:
        if not self.root.exists():
            return
        for _dirpath, _dirs, files in os.walk(self.root):
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



def _syncfs(path: Path) -> None:
    """syncfs(2): flush the whole file system holding ``path`` (Linux); else a global sync."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc is not None and _libc.syncfs(fd) == 0:
            return
    finally:
        os.close(fd)
    os.sync()


_COALESCE_BYTES = 4096
"""A first chunk this small (a blob's header) is written with the next one when that one is small too (below
:data:`_WRITEBACK_FROM`): one system call fewer per small object. For a 0.5 MB CT slice the single writev(2) was
measured slower than two writes (STOW-RS of 200 slices, 12 rounds a side: 0.07 s more system time), so a large
blob keeps its two writes."""


def _write_all(fd: int, data: memoryview | tuple[memoryview, memoryview]) -> int:
    """Write every byte of ``data`` (two pieces: one writev(2), one system call where there were two)."""
    if isinstance(data, tuple):
        total = len(data[0]) + len(data[1])
        written = os.writev(fd, data)
        if written == total:
            return total
        data = memoryview(b"".join(data))[written:]  # a short write (rare for a file): the rest one by one
    else:
        total = len(data)
    while data:
        data = data[os.write(fd, data):]
    return total


_WRITES = itertools.count()
"""Writes of this process so far: names each temporary file uniquely (``next`` on it is atomic under the GIL)."""

_SYNC_FILE_RANGE_WRITE = 2
_WRITEBACK_BYTES = 1024 * 1024
_WRITEBACK_FROM = 256 * 1024
"""A smaller blob gets no early writeback: its flush is short anyway, and many small blobs are made durable by one
syncfs(2); the call would only be one more system call (a hand-over of the interpreter lock) per object."""


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """sync_file_range(2) ``SYNC_FILE_RANGE_WRITE`` (Linux): start writing these pages to the device now, without
    waiting. It makes nothing durable (no metadata, no cache flush; the fsync or syncfs before the index commit
    still does), but the device works while the rest of the object is hashed, encrypted and written, so that
    flush waits for the tail only: for a 50 MB cine, about 15 ms less before the store is acknowledged."""
    if _sync_file_range is not None and length:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # best effort: an error here changes nothing


try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
    if not hasattr(_libc, "syncfs"):
        _libc = None
except OSError:  # pragma: no cover - non-glibc platforms
    _libc = None
_sync_file_range = getattr(_libc, "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    _sync_file_range.restype = ctypes.c_int
_linkat = getattr(_libc, "linkat", None)
if _linkat is not None:
    _linkat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    _linkat.restype = ctypes.c_int
_AT_FDCWD = -100
_AT_SYMLINK_FOLLOW = 0x400


def _link_open_file(fd: int, name: Path) -> None:
    """linkat(2) of an open anonymous file to ``name``, through /proc's link to it with ``AT_SYMLINK_FOLLOW`` (the
    documented way for an ``O_TMPFILE`` file without privileges; ``os.link`` would link the /proc link itself).
    Raises ``FileExistsError`` if the name exists: a stored blob is never replaced."""
    assert _linkat is not None
    if _linkat(_AT_FDCWD, f"/proc/self/fd/{fd}".encode(), _AT_FDCWD, os.fsencode(name), _AT_SYMLINK_FOLLOW) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(name))


def read_private_file(path: Path, what: str) -> str:
    """The text of a secret file (passphrase, credentials), refused when group or others have any access (``chmod 600``)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read {what}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(f"{path} is readable by others; chmod 600 it")
    return text


def write_private_file(path: Path, content: bytes) -> None:
    """Atomically write a file readable by the owner only (temp, fsync, rename, fsync of the folder)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """fsync(2) a folder, so that names created or removed in it are durable (POSIX)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
