"""Backup targets (ADR 0007): where snapshots go. A folder, or an S3 bucket with Object Lock.

A target stores named objects (``blobs/<id>``, ``snapshots/<id>/payload``,
``snapshots/<id>/manifest.json``, ``vault/vault.json``). Everything but the vault is
written **once**: a second write of a name is refused, and what a reader gets for a
name is what was first written under it. On a folder that is a hard link (``link(2)``
fails on an existing name) of a fully written, read-only file; on S3 a conditional
``If-None-Match: *`` put, under COMPLIANCE retention when the target is immutable, and
reads take the name's *oldest* version, so versions or delete markers an attacker with
the archive's own S3 keys adds later change nothing that is read back.

The vault (one per target) is the only mutable object: replaced atomically on a folder;
a new version on S3 (locked for ``vault_lock_days``), readers taking the newest version
that opens (:meth:`BackupTarget.vault_candidates`).

Objects hold ciphertext only; the target never sees a key or plaintext.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from dicomguard.errors import DicomGuardError
from dicomguard.storage.base import BlobExistsError
from dicomguard.storage.filesystem import _syncfs, fsync_dir
from dicomguard.storage.s3 import S3Bucket, S3Error, S3Exists

_NAME = re.compile(r"^(?:blobs/[0-9a-f]{32,64}|snapshots/[0-9A-Za-z.-]{1,64}/(?:payload|manifest\.json)|vault/vault\.json)$")
_TMP = ".partial-"


class BackupTargetError(DicomGuardError):
    """A backup target failed (unreachable, full, misconfigured); the message names the target."""


class TargetFullError(BackupTargetError):
    """No space left on the target."""


def check_name(name: str) -> str:
    """Only the names of the layout above: never a path traversal or another bucket key."""
    if not _NAME.match(name):
        raise BackupTargetError(f"invalid object name {name!r}")
    return name


class BackupTarget(Protocol):
    name: str
    kind: str
    immutable: bool
    """Objects cannot be deleted or altered before their retention ends, by anyone (S3 Object Lock COMPLIANCE)."""

    def check(self) -> None:
        """Reachable and usable (and, when immutable, Object Lock enabled); raises :class:`BackupTargetError`."""
        ...

    def put_once(self, name: str, chunks: Iterable[bytes], lock_days: int = 0) -> int:
        """Write ``name`` once, atomically (invisible until whole); :class:`BlobExistsError` if it exists."""
        ...

    def replace(self, name: str, data: bytes, lock_days: int = 0) -> None:
        """Write a new content for a mutable name (the vault), atomically."""
        ...

    def read(self, name: str) -> bytes: ...

    def stream(self, name: str, chunk_size: int = ...) -> Iterator[bytes]: ...

    def names(self, under: str) -> set[str]:
        """Names present under a folder-like prefix (``blobs/``, ``snapshots/``)."""
        ...

    def vault_candidates(self) -> Iterator[bytes]:
        """Contents of the vault, newest first (one on a folder; every version on S3)."""
        ...

    def prune(self, names: Iterable[str]) -> int:
        """Remove these names where their retention allows; returns how many went. Never raises for locked ones."""
        ...

    def prune_vault_history(self) -> int:
        """Remove vault versions other than the newest whose retention has expired."""
        ...

    def free_bytes(self) -> int | None:
        """Free space for a folder target; None where unknown (object storage)."""
        ...

    def sync(self) -> None:
        """Make everything written so far durable (before a manifest is written)."""
        ...


class FolderTarget:
    """A folder: another disk, a NAS mount, removable media. Write-once files are mode 0444."""

    kind = "folder"
    immutable = False

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root
        self._made: set[Path] = set()

    def _path(self, name: str) -> Path:
        return self.root / check_name(name)

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            for sub in ("blobs", "snapshots", "vault"):
                (self.root / sub).mkdir(exist_ok=True, mode=0o700)
        except OSError as exc:
            raise BackupTargetError(f"backup target {self.name}: cannot use {self.root}: {exc.strerror}") from exc
        if not os.access(self.root, os.W_OK):
            raise BackupTargetError(f"backup target {self.name}: {self.root} is not writable")

    def _folder(self, path: Path) -> None:
        if path not in self._made:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._made.add(path)

    def _write_temp(self, final: Path, chunks: Iterable[bytes]) -> tuple[Path, int]:
        self._folder(final.parent)
        tmp = final.with_name(f"{_TMP}{final.name}-{secrets.token_hex(4)}")
        size = 0
        try:
            with open(tmp, "xb") as f:
                for chunk in chunks:
                    f.write(chunk)
                    size += len(chunk)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise self._error(exc, final) from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp, size

    def _error(self, exc: OSError, path: Path) -> BackupTargetError:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return TargetFullError(f"backup target {self.name}: no space left on {self.root} while writing {path.name}")
        return BackupTargetError(f"backup target {self.name}: writing {path.name} failed: {exc.strerror}")

    def put_once(self, name: str, chunks: Iterable[bytes], lock_days: int = 0) -> int:
        final = self._path(name)
        tmp, size = self._write_temp(final, chunks)
        self._link_once(name, tmp, final)
        return size

    def copy_file_once(self, name: str, source: Path) -> int:
        """Write-once copy of a local file with the kernel's copy (``copy_file_range``/``sendfile``)."""
        final = self._path(name)
        self._folder(final.parent)
        tmp = final.with_name(f"{_TMP}{final.name}-{secrets.token_hex(4)}")
        try:
            shutil.copyfile(source, tmp)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise self._error(exc, final) from exc
        self._link_once(name, tmp, final)
        return os.stat(final).st_size

    def _link_once(self, name: str, tmp: Path, final: Path) -> None:
        """Make the whole, read-only ``tmp`` visible as ``final`` unless that exists: ``link(2)`` fails on an existing
        name, so write-once holds without a check-then-write race."""
        try:
            os.chmod(tmp, 0o444)
            os.link(tmp, final)
        except FileExistsError:
            raise BlobExistsError(f"{name} exists on {self.name}") from None
        except OSError as exc:
            raise self._error(exc, final) from exc
        finally:
            tmp.unlink(missing_ok=True)

    def replace(self, name: str, data: bytes, lock_days: int = 0) -> None:
        final = self._path(name)
        tmp, _ = self._write_temp(final, [data])
        try:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, final)
            fsync_dir(final.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise self._error(exc, final) from exc

    def read(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            raise BackupTargetError(f"backup target {self.name}: {name} is missing") from None
        except OSError as exc:
            raise BackupTargetError(f"backup target {self.name}: reading {name} failed: {exc.strerror}") from exc

    def stream(self, name: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        try:
            with open(self._path(name), "rb") as f:
                while chunk := f.read(chunk_size):
                    yield chunk
        except FileNotFoundError:
            raise BackupTargetError(f"backup target {self.name}: {name} is missing") from None

    def local_path(self, name: str) -> Path:
        return self._path(name)

    def names(self, under: str) -> set[str]:
        base = self.root / under.rstrip("/")
        found: set[str] = set()
        if not base.exists():
            return found
        for dirpath, _dirs, files in os.walk(base):
            rel = os.path.relpath(dirpath, self.root)
            for f in files:
                if not f.startswith(_TMP):
                    found.add(f"{rel}/{f}".replace(os.sep, "/"))
        return found

    def vault_candidates(self) -> Iterator[bytes]:
        path = self._path("vault/vault.json")
        if path.exists():
            yield path.read_bytes()

    def prune(self, names: Iterable[str]) -> int:
        count = 0
        for name in names:
            path = self._path(name)
            try:
                path.unlink()
                count += 1
            except FileNotFoundError:
                pass
            parent = path.parent
            if parent.name not in ("blobs", "snapshots", "vault") and parent != self.root:
                try:
                    parent.rmdir()
                except OSError:
                    pass
        return count

    def prune_vault_history(self) -> int:
        return 0

    def remove_partials(self, older_than_s: float = 3600) -> int:
        """Temporary files of a run killed mid-write (never visible under a name); an hour old, so not a running copy's."""
        removed = 0
        cutoff = time.time() - older_than_s
        for dirpath, _dirs, files in os.walk(self.root):
            for f in files:
                path = os.path.join(dirpath, f)
                if f.startswith(_TMP) and os.stat(path).st_mtime < cutoff:
                    os.unlink(path)
                    removed += 1
        return removed

    def free_bytes(self) -> int | None:
        try:
            return shutil.disk_usage(self.root).free
        except OSError:
            return None

    def sync(self) -> None:
        _syncfs(self.root)


class S3Target:
    """An S3 bucket (and prefix). ``immutable_days`` > 0: every write-once object under COMPLIANCE retention."""

    kind = "s3"

    def __init__(self, name: str, bucket: S3Bucket, immutable_days: int = 0) -> None:
        self.name = name
        self.bucket = bucket
        self.immutable_days = immutable_days
        self.immutable = immutable_days > 0
        self._first_versions: dict[str, str] | None = None

    def _until(self, days: int) -> datetime | None:
        return datetime.now(UTC) + timedelta(days=days) if days > 0 and self.immutable else None

    def check(self) -> None:
        try:
            self.bucket.check()
        except S3Error as exc:
            raise BackupTargetError(f"backup target {self.name}: {exc}") from exc
        if self.immutable and not self.bucket.object_lock_enabled():
            raise BackupTargetError(f"backup target {self.name}: immutable_days is set but bucket {self.bucket.bucket!r} has no "
                                    "Object Lock (create it with Object Lock enabled)")

    def put_once(self, name: str, chunks: Iterable[bytes], lock_days: int = 0) -> int:
        try:
            return self.bucket.put(check_name(name), chunks, create_only=True,
                                   lock_until=self._until(lock_days or self.immutable_days))
        except S3Exists:
            raise BlobExistsError(f"{name} exists on {self.name}") from None
        except S3Error as exc:
            raise BackupTargetError(f"backup target {self.name}: writing {name} failed: {exc}") from exc

    def replace(self, name: str, data: bytes, lock_days: int = 0) -> None:
        try:
            self.bucket.put(check_name(name), [data], create_only=False, lock_until=self._until(lock_days))
        except S3Error as exc:
            raise BackupTargetError(f"backup target {self.name}: writing {name} failed: {exc}") from exc

    def _versions(self) -> dict[str, str]:
        """The oldest version of every name: what dicomguard wrote first (later versions are someone else's)."""
        if self._first_versions is None:
            first: dict[str, tuple[datetime, str]] = {}
            if self.immutable:
                # S3 lists the versions of a key newest first, and LastModified may have one-second resolution:
                # on a tie the version listed later is the older one.
                for v in self.bucket.versions(""):
                    known = first.get(v.name)
                    if known is None or v.modified <= known[0]:
                        first[v.name] = (v.modified, v.version_id)
            self._first_versions = {name: vid for name, (_, vid) in first.items()}
        return self._first_versions

    def forget_listing(self) -> None:
        self._first_versions = None

    def _version_of(self, name: str) -> str | None:
        if not self.immutable:
            return None
        version = self._versions().get(name)
        if version is None:  # written after the listing was taken
            self._first_versions = None
            version = self._versions().get(name)
        return version

    def read(self, name: str) -> bytes:
        return b"".join(self.stream(name, 8 * 1024 * 1024))

    def stream(self, name: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        try:
            yield from self.bucket.stream(check_name(name), chunk_size, version_id=self._version_of(name))
        except S3Error as exc:
            raise BackupTargetError(f"backup target {self.name}: reading {name} failed: {exc}") from exc

    def names(self, under: str) -> set[str]:
        try:
            if self.immutable:
                return {n for n in self._versions() if n.startswith(under)}
            return set(self.bucket.names(under))
        except S3Error as exc:
            raise BackupTargetError(f"backup target {self.name}: listing failed: {exc}") from exc

    def vault_candidates(self) -> Iterator[bytes]:
        name = "vault/vault.json"
        try:
            if not self.immutable:
                if self.bucket.head(name) is not None:
                    yield self.bucket.get(name)
                return
            versions = sorted((v for v in self.bucket.versions(name) if v.name == name), key=lambda v: v.modified, reverse=True)
            for v in versions:
                yield self.bucket.get(name, version_id=v.version_id)
        except S3Error as exc:
            raise BackupTargetError(f"backup target {self.name}: reading the vault failed: {exc}") from exc

    def prune(self, names: Iterable[str]) -> int:
        wanted = set(names)
        count = 0
        try:
            if not self.immutable:
                for name in wanted:
                    self.bucket.delete(name)
                    count += 1
                return count
            for v in self.bucket.versions(""):
                if v.name in wanted and self._expired(v.name, v.version_id):
                    self.bucket.delete_version(v.name, v.version_id)
                    count += 1
        except S3Error as exc:
            raise BackupTargetError(f"backup target {self.name}: pruning failed: {exc}") from exc
        self._first_versions = None
        return count

    def _expired(self, name: str, version_id: str) -> bool:
        lock = self.bucket.retention(name, version_id)
        return lock is None or lock[1] <= datetime.now(UTC)

    def prune_vault_history(self) -> int:
        name = "vault/vault.json"
        count = 0
        try:
            versions = sorted((v for v in self.bucket.versions(name) if v.name == name), key=lambda v: v.modified, reverse=True)
            for v in versions[1:]:
                if self._expired(name, v.version_id):
                    self.bucket.delete_version(name, v.version_id)
                    count += 1
        except S3Error as exc:
            raise BackupTargetError(f"backup target {self.name}: pruning the vault failed: {exc}") from exc
        return count

    def free_bytes(self) -> int | None:
        return None

    def sync(self) -> None:
        """A completed S3 write is durable by the server's definition: nothing to do."""
