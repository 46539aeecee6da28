"""Writing a snapshot (ADR 0007): ciphertext blobs, the encrypted index, the key vault, and a signed manifest last.

Order is what makes a snapshot all-or-nothing: blobs the target lacks, then the
payload (index copy + configuration, encrypted as a whole), then the key vault, then
``sync``, and only then the manifest. A run killed at any point leaves no manifest, so
no incomplete snapshot ever looks complete; blobs it copied are write-once and
reused by the next run. The manifest is signed with the ledger key and names the
signed ledger checkpoint that the index copy holds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import shutil
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dicomguard.app.backup.vault import VAULT_NAME, build_vault
from dicomguard.config import CONFIG_FILE
from dicomguard.core.context import ArchiveContext
from dicomguard.core.keyring import META_ARCHIVE_ID, PURPOSE_BACKUP, PURPOSE_LEDGER
from dicomguard.crypto.aead import derive_key
from dicomguard.crypto.blob_cipher import DEFAULT_SEGMENT, BlobEncryptor, decrypt_stream
from dicomguard.errors import DicomGuardError
from dicomguard.index.db import is_sqlite, make_engine, migrate
from dicomguard.index.models import Base
from dicomguard.storage.backup_targets import BackupTarget, FolderTarget, TargetFullError
from dicomguard.storage.base import BlobExistsError
from dicomguard.storage.filesystem import FilesystemBlobStore

MANIFEST_FORMAT = "dicomguard-backup-manifest/1"
_SIGNING_DOMAIN = b"dicomguard backup manifest v1\n"
HOME_FILES = (CONFIG_FILE, "policies", "tls", "keys/recovery.pub")
"""What of the home goes into a snapshot besides the index: never the sealed KEK (the vault has it), never blobs."""

Progress = Callable[[int], None]


class ManifestError(DicomGuardError):
    """A manifest that is not genuine: unsigned, signed by another key, or not what its name says."""


@dataclass
class SnapshotResult:
    target: str
    snapshot_id: str
    manifest_sha256: str
    checkpoint_size: int
    objects: int
    bytes: int
    new_objects: int
    new_bytes: int
    seconds: float
    pruned: int = 0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "snapshot": self.snapshot_id, "manifest_sha256": self.manifest_sha256,
                "checkpoint_size": self.checkpoint_size, "objects": self.objects, "bytes": self.bytes,
                "new_objects": self.new_objects, "new_bytes": self.new_bytes, "seconds": round(self.seconds, 3),
                "pruned": self.pruned, "notes": self.notes}


_ID_TIME = "%Y%m%dT%H%M%S.%fZ"


def new_snapshot_id(now: datetime) -> str:
    """Sortable by time, to the microsecond: ``20261203T051500.123456Z-1a2b3c``."""
    return now.strftime(_ID_TIME) + "-" + secrets.token_hex(3)


def snapshot_time(snapshot_id: str) -> datetime | None:
    """When a snapshot was taken, from its id (None for a name that is not ours)."""
    try:
        return datetime.strptime(snapshot_id.split("-")[0], _ID_TIME).replace(tzinfo=UTC)
    except ValueError:
        return None


def payload_name(snapshot_id: str) -> str:
    return f"snapshots/{snapshot_id}/payload"


def manifest_name(snapshot_id: str) -> str:
    return f"snapshots/{snapshot_id}/manifest.json"


def snapshot_key(backup_key: bytes, snapshot_id: str) -> bytes:
    return derive_key(backup_key, b"dicomguard snapshot v1|" + snapshot_id.encode("ascii"))


def payload_identity(archive_id: str, snapshot_id: str) -> bytes:
    return f"dicomguard snapshot payload\x00{archive_id}\x00{snapshot_id}".encode("ascii")


# -- the index copy ------------------------------------------------------------------------


def copy_index(engine: Any, dest: Path) -> None:
    """A consistent copy of the index as a SQLite file: SQLite's online backup, or PostgreSQL in one REPEATABLE READ snapshot."""
    if is_sqlite(engine):
        raw = engine.raw_connection()
        try:
            target = sqlite3.connect(dest)
            try:
                raw.driver_connection.backup(target)
            finally:
                target.close()
        finally:
            raw.close()
        return
    copy_engine = make_engine(f"sqlite:///{dest}")
    try:
        migrate(copy_engine)
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as src, src.begin():
            copy_tables(src, copy_engine)
    finally:
        copy_engine.dispose()


def copy_tables(src: Any, dest_engine: Any, batch: int = 5000) -> None:
    """Copy every table of the schema from an open connection into an engine with the same schema (rows the migrations
    seeded, such as the ledger head, are replaced)."""
    with dest_engine.begin() as dst:
        for table in reversed(Base.metadata.sorted_tables):
            dst.execute(table.delete())
        for table in Base.metadata.sorted_tables:
            result = src.execution_options(yield_per=batch).execute(table.select())
            for rows in result.mappings().partitions(batch):
                dst.execute(table.insert(), [dict(r) for r in rows])


def strip_keys(index_copy: Path) -> None:
    """Remove every wrapped key from the copy, so the snapshot holds none (ADR 0007).

    ``secure_delete`` overwrites the freed bytes in place (no ``VACUUM`` needed: it would
    rewrite the whole copy); the rollback journal, which holds the old pages, is not part
    of the payload.
    """
    con = sqlite3.connect(index_copy)
    try:
        con.execute("PRAGMA journal_mode=DELETE")
        con.execute("PRAGMA secure_delete=ON")
        con.execute("UPDATE patients SET wrapped_data_key = NULL WHERE wrapped_data_key IS NOT NULL")
        con.execute("DELETE FROM wrapped_keys")
        con.commit()
    finally:
        con.close()


@dataclass(frozen=True)
class IndexFacts:
    checkpoint_size: int
    checkpoint_note: str
    blobs: list[tuple[str, int]]


def read_facts(index_copy: Path) -> IndexFacts:
    con = sqlite3.connect(index_copy)
    try:
        size = con.execute("SELECT size FROM ledger_head WHERE id = 1").fetchone()
        size = int(size[0]) if size else 0
        note = con.execute("SELECT note FROM ledger_checkpoints WHERE size = ?", (size,)).fetchone()
        if note is None:
            raise DicomGuardError(f"the index copy has no signed checkpoint of its ledger size {size}")
        blobs = [(b, int(n)) for b, n in con.execute("SELECT blob_id, size FROM instances WHERE erased = 0 ORDER BY blob_id")]
        return IndexFacts(size, bytes(note[0]).decode("utf-8"), blobs)
    finally:
        con.close()


def blob_list_sha256(blobs: Iterable[tuple[str, int]]) -> str:
    h = hashlib.sha256()
    for blob_id, size in sorted(blobs):
        h.update(f"{blob_id} {size}\n".encode("ascii"))
    return h.hexdigest()


# -- payload ------------------------------------------------------------------------------


def build_payload(home: Path, index_copy: Path, dest: Path) -> None:
    """A tar of the index copy and the home's configuration (policies, certificates, recovery public key)."""
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(index_copy, arcname="index.db")
        for name in HOME_FILES:
            path = home / name
            if path.exists():
                tar.add(path, arcname=f"home/{name}")


def encrypt_file(path: Path, key: bytes, identity: bytes, digest: Any) -> Iterator[bytes]:
    """Segmented AES-256-GCM of a file (the blob format), streamed; ``digest`` sees the ciphertext."""
    enc = BlobEncryptor(key, identity, DEFAULT_SEGMENT)
    digest.update(enc.header)
    yield enc.header
    with open(path, "rb") as f:
        current = f.read(DEFAULT_SEGMENT)
        while True:
            following = f.read(DEFAULT_SEGMENT)
            out = enc.encrypt_segment(current, last=not following)
            digest.update(out)
            yield out
            if not following:
                return
            current = following


def decrypt_to_file(chunks: Iterable[bytes], key: bytes, identity: bytes, dest: Path, digest: Any) -> None:
    def counted() -> Iterator[bytes]:
        for c in chunks:
            digest.update(c)
            yield c

    with open(dest, "wb") as f:
        for plain in decrypt_stream(key, identity, counted()):
            f.write(plain)


# -- manifest -----------------------------------------------------------------------------


def sign_manifest(body: dict[str, Any], ledger_key: bytes) -> bytes:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    signature = Ed25519PrivateKey.from_private_bytes(ledger_key).sign(_SIGNING_DOMAIN + canonical)
    return json.dumps({"body": body, "signature": signature.hex()}, indent=1, sort_keys=True).encode()


def open_manifest(raw: bytes, ledger_public_key: bytes, stored_as: str) -> dict[str, Any]:
    """The manifest's body after its signature (ledger key) and its name (``stored_as``) check out."""
    try:
        doc = json.loads(raw)
        body, signature = doc["body"], bytes.fromhex(doc["signature"])
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, KeyError, TypeError) as exc:
        raise ManifestError(f"manifest of {stored_as} is not a dicomguard manifest") from exc
    from cryptography.exceptions import InvalidSignature

    try:
        Ed25519PublicKey.from_public_bytes(ledger_public_key).verify(signature, _SIGNING_DOMAIN + canonical)
    except InvalidSignature:
        raise ManifestError(f"manifest of {stored_as}: signature does not verify (edited, or signed by another key)") from None
    if body.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f"manifest of {stored_as}: unknown format")
    if body.get("snapshot_id") != stored_as:
        raise ManifestError(f"manifest stored as {stored_as} names snapshot {body.get('snapshot_id')} (an older manifest replayed)")
    return body


def list_snapshots(target: BackupTarget) -> list[str]:
    """Ids of the complete snapshots on the target (those with a manifest), oldest first."""
    return sorted(n.split("/")[1] for n in target.names("snapshots/") if n.endswith("/manifest.json"))


# -- the run ------------------------------------------------------------------------------


SCRATCH_PREFIXES = (".backup-", ".drill-", ".restore-")


def remove_stale_scratch(home: Path, older_than_s: float = 86400) -> int:
    """Scratch folders of runs killed mid-way (index copies without keys, never plaintext); a day old, so never a live run's."""
    removed = 0
    cutoff = time.time() - older_than_s
    for path in home.iterdir():
        if path.is_dir() and path.name.startswith(SCRATCH_PREFIXES) and path.stat().st_mtime < cutoff:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def take_snapshot(ctx: ArchiveContext, target: BackupTarget, *, retention_days: int, vault_lock_days: int,
                  progress: Progress | None = None, workers: int = 4) -> SnapshotResult:
    """Write one snapshot of the archive to ``target`` (see the module). Raises on failure; nothing half-done looks complete."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    snapshot_id = new_snapshot_id(now)
    target.check()
    remove_stale_scratch(ctx.home)
    if isinstance(target, FolderTarget):
        target.remove_partials()
    backup_key = ctx.keyring.ensure_archive_key(PURPOSE_BACKUP)
    with ctx.engine.connect() as c:
        from sqlalchemy import text

        archive_id = c.execute(text("SELECT value FROM archive_meta WHERE key = :k"), {"k": META_ARCHIVE_ID}).scalar_one()
    scratch = Path(tempfile.mkdtemp(prefix=".backup-", dir=ctx.home))
    try:
        index_copy = scratch / "index.db"
        copy_index(ctx.engine, index_copy)
        facts = read_facts(index_copy)
        strip_keys(index_copy)
        tar_path = scratch / "payload.tar"
        build_payload(ctx.home, index_copy, tar_path)
        present = {n[len("blobs/"):] for n in target.names("blobs/")}
        missing = [(b, n) for b, n in facts.blobs if b not in present]
        new_bytes = sum(n for _, n in missing)
        free = target.free_bytes()
        needed = new_bytes + tar_path.stat().st_size + 1024 * 1024
        if free is not None and free < needed:
            raise TargetFullError(f"backup target {target.name}: not enough space ({needed} bytes needed, {free} free); "
                                  "nothing was written")
        _copy_blobs(ctx, target, missing, progress, workers)
        digest = hashlib.sha256()
        payload_size = target.put_once(payload_name(snapshot_id), encrypt_file(
            tar_path, snapshot_key(backup_key, snapshot_id), payload_identity(archive_id, snapshot_id), digest))
        target.sync()
        target.replace(VAULT_NAME, build_vault(ctx), lock_days=vault_lock_days)
        body = {
            "format": MANIFEST_FORMAT, "snapshot_id": snapshot_id, "archive_id": archive_id, "created": now.isoformat(),
            "checkpoint": facts.checkpoint_note, "checkpoint_size": facts.checkpoint_size,
            "payload_sha256": digest.hexdigest(), "payload_bytes": payload_size, "objects": len(facts.blobs),
            "blob_bytes": sum(n for _, n in facts.blobs), "blobs_sha256": blob_list_sha256(facts.blobs),
        }
        manifest = sign_manifest(body, ctx.keyring.archive_key(PURPOSE_LEDGER))
        target.put_once(manifest_name(snapshot_id), [manifest])
        target.sync()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = SnapshotResult(target.name, snapshot_id, hashlib.sha256(manifest).hexdigest(), facts.checkpoint_size, len(facts.blobs),
                            body["blob_bytes"], len(missing), new_bytes, 0.0)
    with contextlib.suppress(DicomGuardError):
        result.pruned = prune(target, retention_days, keep=snapshot_id)
        target.prune_vault_history()
    result.seconds = time.perf_counter() - started
    return result


def _copy_blobs(ctx: ArchiveContext, target: BackupTarget, missing: list[tuple[str, int]], progress: Progress | None,
                workers: int) -> None:
    store = ctx.store
    local = isinstance(store, FilesystemBlobStore) and isinstance(target, FolderTarget)

    def one(item: tuple[str, int]) -> int:
        blob_id, size = item
        try:
            if local:
                target.copy_file_once(f"blobs/{blob_id}", store.path(blob_id))  # type: ignore[union-attr, attr-defined]
            else:
                target.put_once(f"blobs/{blob_id}", store.stream(blob_id))
        except BlobExistsError:
            pass  # an earlier, interrupted run copied it: blobs are write-once, so it is the same blob
        return size

    if not missing:
        return
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(missing)))) as pool:
        for size in pool.map(one, missing):
            if progress:
                progress(size)


def prune(target: BackupTarget, retention_days: int, keep: str) -> int:
    """Remove snapshots (payload + manifest) older than the retention; never the newest. Locked ones stay until their lock ends."""
    cutoff = time.time() - retention_days * 86400
    names: list[str] = []
    for sid in list_snapshots(target):
        if sid == keep:
            continue
        created = snapshot_time(sid)
        if created is not None and created.timestamp() < cutoff:
            names += [manifest_name(sid), payload_name(sid)]  # manifest first: a half-pruned snapshot never looks complete
    return target.prune(names) if names else 0

