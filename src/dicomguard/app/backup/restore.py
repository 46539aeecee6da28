"""Restoring a snapshot into a new home (ADR 0007): never over an existing one.

The manifest is checked first (signature by the ledger key found in the key vault,
its own name, its archive), then the payload is streamed, authenticated against the
manifest's digest and decrypted; the index copy gets its keys back from the newest
vault copy that opens. A patient whose key the vault no longer holds was erased
after the snapshot: it becomes a tombstone exactly as ``erase`` leaves one. The
restored home uses the filesystem store and SQLite (the attacked bucket or database
is not trusted), or the database the operator names.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w
from sqlalchemy import select, update

from dicomguard.app.backup.snapshot import (
    decrypt_to_file,
    list_snapshots,
    manifest_name,
    open_manifest,
    payload_identity,
    payload_name,
    snapshot_key,
    snapshot_time,
)
from dicomguard.app.backup.vault import VaultContents, open_vault, write_sealed_kek
from dicomguard.app.home import KEYS_DIR, kdf_params
from dicomguard.config import CONFIG_FILE, load_settings
from dicomguard.core.erase import tombstone_patients
from dicomguard.core.keyring import META_KEK_ID, PURPOSE_BACKUP
from dicomguard.crypto.kek import Kek, check_passphrase_strength
from dicomguard.errors import DicomGuardError, HomeExistsError
from dicomguard.index.db import make_engine, migrate, write_session
from dicomguard.index.models import ArchiveMeta, Instance, Patient, WrappedKey
from dicomguard.storage.backup_targets import BackupTarget, BackupTargetError
from dicomguard.storage.base import BlobMissingError
from dicomguard.storage.filesystem import FilesystemBlobStore

Progress = Callable[[int], None]


class RestoreError(DicomGuardError):
    """The snapshot cannot be restored; the message says why (and names the snapshot or object)."""


@dataclass(frozen=True)
class Unlock:
    """What opens the key vault: the passphrase, the recovery key (then ``new_passphrase`` seals the restored home), or a live KEK."""

    passphrase: str | None = None
    recovery_key: bytes | None = None
    new_passphrase: str | None = None
    kek: Kek | None = None


@dataclass
class RestoreResult:
    home: Path
    target: str
    snapshot_id: str
    created: datetime
    objects: int
    bytes: int
    tombstoned_patients: int
    checkpoint_note: str
    checkpoint_size: int
    seconds: float
    manifest_sha256: str
    blob_ids: list[str]


def choose_snapshot(target: BackupTarget, snapshot_id: str | None, at: datetime | None) -> str:
    snapshots = list_snapshots(target)
    if not snapshots:
        raise RestoreError(f"backup target {target.name} holds no complete snapshot")
    if snapshot_id:
        if snapshot_id not in snapshots:
            raise RestoreError(f"no complete snapshot {snapshot_id} on {target.name}")
        return snapshot_id
    if at is not None:
        when = at if at.tzinfo else at.replace(tzinfo=UTC)
        earlier = [s for s in snapshots if (snapshot_time(s) or when) <= when]
        if not earlier:
            raise RestoreError(f"no snapshot on {target.name} at or before {at.isoformat()}")
        return earlier[-1]
    return snapshots[-1]


def read_manifest(target: BackupTarget, snapshot_id: str, vault: VaultContents) -> tuple[dict[str, Any], bytes]:
    raw = target.read(manifest_name(snapshot_id))
    body = open_manifest(raw, vault.ledger_public_key(), snapshot_id)
    if body.get("archive_id") != vault.archive_id:
        raise RestoreError(f"snapshot {snapshot_id} belongs to archive {body.get('archive_id')}, the vault to {vault.archive_id}")
    return body, raw


def restore_snapshot(target: BackupTarget, new_home: Path, unlock: Unlock, *, snapshot_id: str | None = None,
                     at: datetime | None = None, database: str = "", copy_blobs: bool = True,
                     progress: Progress | None = None, workers: int = 4) -> RestoreResult:
    """Restore one snapshot into ``new_home`` (which must not exist or be empty). See the module."""
    started = time.perf_counter()
    if new_home.exists() and any(new_home.iterdir()):
        raise HomeExistsError(f"{new_home} exists and is not empty; a restore never overwrites a home")
    if unlock.new_passphrase:
        check_passphrase_strength(unlock.new_passphrase)
    if unlock.recovery_key is not None and not unlock.new_passphrase:
        raise RestoreError("a restore with the recovery key needs a new passphrase for the restored home")
    chosen = choose_snapshot(target, snapshot_id, at)
    vault = open_vault(list(target.vault_candidates()), passphrase=unlock.passphrase, recovery_key=unlock.recovery_key,
                       kek=unlock.kek)
    body, raw_manifest = read_manifest(target, chosen, vault)
    created = new_home.exists()
    new_home.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        tombstoned, blob_ids = _restore_files(target, new_home, chosen, body, vault, unlock, database)
        if copy_blobs:
            _copy_blobs(target, FilesystemBlobStore(new_home / "blobs"), blob_ids, progress, workers)
    except BaseException:
        if created:
            for child in new_home.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        else:
            shutil.rmtree(new_home, ignore_errors=True)
        raise
    return RestoreResult(new_home, target.name, chosen, datetime.fromisoformat(body["created"]), body["objects"], body["blob_bytes"],
                         tombstoned, body["checkpoint"], body["checkpoint_size"], time.perf_counter() - started,
                         hashlib.sha256(raw_manifest).hexdigest(), blob_ids)


def _restore_files(target: BackupTarget, home: Path, snapshot_id: str, body: dict[str, Any], vault: VaultContents,
                   unlock: Unlock, database: str) -> tuple[int, list[str]]:
    scratch = Path(tempfile.mkdtemp(prefix=".restore-", dir=home))
    try:
        tar_path = scratch / "payload.tar"
        digest = hashlib.sha256()
        key = snapshot_key(vault.archive_key(PURPOSE_BACKUP), snapshot_id)
        try:
            decrypt_to_file(target.stream(payload_name(snapshot_id)), key, payload_identity(vault.archive_id, snapshot_id),
                            tar_path, digest)
        except BackupTargetError:
            raise
        except Exception as exc:
            raise RestoreError(f"snapshot {snapshot_id}: payload fails authentication (altered or truncated)") from exc
        if digest.hexdigest() != body["payload_sha256"]:
            raise RestoreError(f"snapshot {snapshot_id}: payload differs from its manifest (swapped)")
        with tarfile.open(tar_path) as tar:
            tar.extractall(scratch / "x", filter="data")
        extracted = scratch / "x"
        for item in (extracted / "home").iterdir() if (extracted / "home").exists() else ():
            shutil.move(str(item), str(home / item.name))
        (home / KEYS_DIR).mkdir(mode=0o700, exist_ok=True)
        _rewrite_config(home, database)
        index_copy = extracted / "index.db"
        if database:
            engine = make_engine(database)
            migrate(engine)
            source = make_engine(f"sqlite:///{index_copy}")
            try:
                from dicomguard.app.backup.snapshot import copy_tables

                with source.connect() as src:
                    copy_tables(src, engine)
            finally:
                source.dispose()
        else:
            shutil.move(str(index_copy), str(home / "index.db"))
            engine = make_engine(f"sqlite:///{home / 'index.db'}")
        try:
            migrate(engine)
            tombstoned, blob_ids = _put_keys_back(engine, vault)
        finally:
            engine.dispose()
        write_sealed_kek(home, vault, unlock.new_passphrase, kdf_params(load_settings(home)))
        FilesystemBlobStore(home / "blobs").create_layout()
        return tombstoned, blob_ids
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _rewrite_config(home: Path, database: str) -> None:
    path = home / CONFIG_FILE
    data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    data["storage"] = {"kind": "filesystem", "path": "blobs"}
    data["database"] = {"url": database}
    path.write_text("# Restored from a backup: blobs in the home's folder; database as given to restore.\n" + tomli_w.dumps(data),
                    encoding="utf-8")


def _put_keys_back(engine: Any, vault: VaultContents) -> tuple[int, list[str]]:
    now = datetime.now(UTC)
    with write_session(engine) as s:
        for purpose, wrapped in vault.archive_keys.items():
            s.merge(WrappedKey(purpose=purpose, kek_id=vault.kek.kek_id, wrapped=wrapped))
        meta = s.get(ArchiveMeta, META_KEK_ID)
        assert meta is not None
        meta.value = vault.kek.kek_id
        live, gone = [], []
        for ref, erased_at in s.execute(select(Patient.ref, Patient.erased_at)):
            if ref in vault.patient_keys:
                live.append(ref)
            elif erased_at is None:
                gone.append(ref)
        for ref in live:
            s.execute(update(Patient).where(Patient.ref == ref).values(wrapped_data_key=vault.patient_keys[ref], kek_id=vault.kek.kek_id))
        if gone:
            tombstone_patients(s, tuple(gone), now)
        blob_ids = list(s.scalars(select(Instance.blob_id).where(Instance.erased.is_(False))))
    return len(gone), blob_ids


def _copy_blobs(target: BackupTarget, store: FilesystemBlobStore, blob_ids: list[str], progress: Progress | None, workers: int) -> None:
    def one(blob_id: str) -> int:
        size = store.put(blob_id, target.stream(f"blobs/{blob_id}"), durable=False)
        return size

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for size in pool.map(one, blob_ids):
            if progress:
                progress(size)
    store.sync(blob_ids)


class TargetBlobView:
    """The blobs of one snapshot, read straight from the target (a drill's scratch home): read-only."""

    reads_in_flight = 4  # a folder, restic or S3 target: between a disk's one per core and an object store's 8

    def __init__(self, target: BackupTarget, blob_ids: list[str]) -> None:
        self.target = target
        self.ids = set(blob_ids)

    def _name(self, blob_id: str) -> str:
        if blob_id not in self.ids:
            raise BlobMissingError(f"blob {blob_id} is not in this snapshot")
        return f"blobs/{blob_id}"

    def read(self, blob_id: str) -> bytes:
        try:
            return self.target.read(self._name(blob_id))
        except BackupTargetError as exc:
            raise BlobMissingError(str(exc)) from exc

    def stream(self, blob_id: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        return self.target.stream(self._name(blob_id), chunk_size)

    def exists(self, blob_id: str) -> bool:
        return blob_id in self.ids

    def iter_ids(self) -> Iterator[str]:
        return iter(sorted(self.ids))

    def put(self, blob_id: str, chunks: Any, durable: bool = True) -> int:
        raise BackupTargetError("a drill never writes to a backup target")

    def sync(self, blob_ids: list[str]) -> None:
        return None

    def delete(self, blob_id: str) -> None:
        return None  # read-only: recovering the scratch home's interrupted ingests must not touch the target

    def remove_stale_temporaries(self) -> int:
        return 0



def restore_home(target: BackupTarget, new_home: Path, unlock: Unlock, **kwargs: Any) -> RestoreResult:
    """:func:`restore_snapshot` with its blobs, then the restore recorded as the first event of the restored home."""
    from dicomguard.app.archive import Archive  # the composition root opens the restored home like any other
    from dicomguard.core.access import Principal
    from dicomguard.core.events import ArchiveRestored

    result = restore_snapshot(target, new_home, unlock, **kwargs)
    passphrase = unlock.new_passphrase or unlock.passphrase
    with Archive.open(new_home, passphrase, kek=unlock.kek) as archive:
        archive.operator.operations.record_alone(ArchiveRestored(
            Principal.operator(), target.name, result.snapshot_id, result.objects, result.tombstoned_patients, datetime.now(UTC)))
    return result
