"""The store-and-forward queue: one encrypted file per received object, oldest first.

Layout under ``HOME/gateway-queue/`` (folders ``0700``, files ``0600``)::

    items/<seq>.dgq     queued objects, FIFO by sequence number (the files *are* the queue)
    items/.tmp-<seq>    an object being written (removed at start-up: never acknowledged)
    dead/<seq>.dgq      objects the upstream refused permanently (still encrypted)
    dead/<seq>.json     why (status code, attempts, time; no PHI)
    spool/              plaintext datasets being received (see :mod:`.listener`)
    gateway.lock        held (``flock``) by the running gateway: one forwarder per queue
    status.json         written by the running gateway (see :mod:`.status`)

Confidentiality and integrity at rest: an item is the object's DICOM Part 10
bytes, prefixed by a small metadata record (UIDs, calling AE, source address),
encrypted with the segmented AES-256-GCM format of
:mod:`dicomguard.crypto.blob_cipher` (STREAM construction, a fresh random salt
and therefore a fresh key per item). The data key is the *queue key*::

    queue_key = HKDF-SHA256(archive_key("index"), info="dicomguard gateway queue v1")

(RFC 5869; the index key is an archive-wide key wrapped by the KEK, so the
queue key survives KEK rotation and needs no schema change). The associated
identity is the item's sequence number, so renaming, swapping or truncating
queue files makes them fail authentication instead of being sent.

Durability: an item is written to a temporary file, fsync'd, renamed into
place and the folder fsync'd before :meth:`DurableQueue.put_file` returns, so
the C-STORE response (PS3.4 B.2.3, PS3.7 9.1.1 C-STORE service) says Success only for an
object that survives a crash or a power cut. Delivery is at least once: a
crash between the upstream's Success and the deletion resends an object,
which a write-once archive (dicomguard, Orthanc) recognises by its SOP
Instance UID.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import json
import os
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from dicomguard.crypto.aead import DecryptionError, derive_key
from dicomguard.crypto.blob_cipher import DEFAULT_SEGMENT, BlobEncryptor, decrypt_stream
from dicomguard.gateway._memfile import memory_file
from dicomguard.gateway.config import GatewayError
from dicomguard.storage.filesystem import fsync_dir

ITEMS_DIR = "items"
DEAD_DIR = "dead"
SPOOL_DIR = "spool"
LOCK_FILE = "gateway.lock"
ITEM_SUFFIX = ".dgq"
_TMP_PREFIX = ".tmp-"
_KEY_INFO = b"dicomguard gateway queue v1"
_IDENTITY = b"dicomguard gateway queue item\x00"
_PREFIX = struct.Struct(">4sI")
_MAGIC = b"DGQ1"
_READ = DEFAULT_SEGMENT


def queue_key(index_key: bytes) -> bytes:
    """The queue's data key: HKDF-SHA256 of the archive's index key (RFC 5869), purpose-bound."""
    return derive_key(index_key, _KEY_INFO)


class QueueFull(GatewayError):
    """Accepting the object would exceed the queue limit (the modality should retry later)."""


class CorruptItem(GatewayError):
    """A queue file failed authentication (altered, truncated, renamed or from another archive)."""


@dataclass(frozen=True)
class Incoming:
    """What the listener knows about a received object (from the C-STORE request and association)."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    calling_ae: str
    peer_ip: str


@dataclass(frozen=True)
class ItemMeta:
    """The encrypted metadata record at the start of every item."""

    seq: int
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    calling_ae: str
    peer_ip: str
    received_at: str
    size: int


@dataclass(frozen=True)
class QueueStats:
    length: int
    bytes: int
    oldest_mtime: float | None
    dead_letters: int


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _seq_of(name: str) -> int | None:
    if not name.endswith(ITEM_SUFFIX):
        return None
    stem = name[: -len(ITEM_SUFFIX)]
    return int(stem) if stem.isdigit() else None


def item_name(seq: int) -> str:
    return f"{seq:020d}{ITEM_SUFFIX}"


def _identity(seq: int) -> bytes:
    return _IDENTITY + str(seq).encode("ascii")


def scan(folder: Path) -> QueueStats:
    """Queue length, bytes, oldest item and dead letters, from the folder alone (no key needed)."""
    length = size = dead = 0
    oldest: float | None = None
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder / ITEMS_DIR):
            if _seq_of(entry.name) is None:
                continue
            with contextlib.suppress(FileNotFoundError):
                st = entry.stat()
                length += 1
                size += st.st_size
                oldest = st.st_mtime if oldest is None else min(oldest, st.st_mtime)
    with contextlib.suppress(FileNotFoundError):
        dead = sum(1 for e in os.scandir(folder / DEAD_DIR) if _seq_of(e.name) is not None)
    return QueueStats(length, size, oldest, dead)


class QueueLock:
    """An exclusive ``flock`` on ``gateway.lock``: two gateways on one queue would send twice."""

    def __init__(self, folder: Path) -> None:
        self._path = _private_dir(folder) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> QueueLock:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise GatewayError(f"another gateway is using the queue in {self._path.parent}") from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> QueueLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def queue_in_use(folder: Path) -> bool:
    """True while a gateway holds the queue lock (robust against stale pid files)."""
    path = folder / LOCK_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def requeue_dead(folder: Path) -> int:
    """Move every dead letter back to the queue (same sequence number). The caller holds the lock."""
    moved = 0
    dead = folder / DEAD_DIR
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(os.scandir(dead), key=lambda e: e.name):
            if _seq_of(entry.name) is None:
                continue
            os.replace(entry.path, folder / ITEMS_DIR / entry.name)
            with contextlib.suppress(FileNotFoundError):
                (dead / entry.name).with_suffix(".json").unlink()
            moved += 1
    if moved:
        fsync_dir(folder / ITEMS_DIR)
        fsync_dir(dead)
    return moved


def _seal_to(f: object, enc: BlobEncryptor, chunks: Iterable[bytes]) -> None:
    """Write ``enc``'s header and the segments of ``chunks``; the last segment is flagged (STREAM)."""
    write = f.write  # type: ignore[attr-defined]
    write(enc.header)
    seg = enc.segment_size
    buf = bytearray()
    for chunk in chunks:
        buf += chunk
        while len(buf) > seg:  # keep at least one byte back: the last segment must carry the flag
            write(enc.encrypt_segment(bytes(buf[:seg]), last=False))
            del buf[:seg]
    write(enc.encrypt_segment(bytes(buf), last=True))


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(_READ):
            yield chunk


class DurableQueue:
    """The queue of one gateway. Thread-safe: listener threads put, the forwarder takes.

    Create it while holding :class:`QueueLock`.
    """

    def __init__(self, folder: Path, key: bytes, max_bytes: int = 100 * 1024**3, segment_size: int = DEFAULT_SEGMENT) -> None:
        if segment_size < 4096:
            raise ValueError("segments of at least 4 KiB keep an item's metadata record in its first segment")
        self.folder = _private_dir(folder)
        self._items = _private_dir(folder / ITEMS_DIR)
        self._dead = _private_dir(folder / DEAD_DIR)
        self._key = key
        self._max_bytes = max_bytes
        self._segment = segment_size
        self._cond = threading.Condition()
        self._pending: list[int] = []
        self._sizes: dict[int, int] = {}
        self._meta: dict[int, ItemMeta] = {}
        self._bytes = 0
        self._reserved = 0
        highest = 0
        for entry in os.scandir(self._items):
            if entry.name.startswith(_TMP_PREFIX):
                os.unlink(entry.path)  # never acknowledged to the modality: it will resend
                continue
            seq = _seq_of(entry.name)
            if seq is not None:
                self._pending.append(seq)
                self._sizes[seq] = entry.stat().st_size
                self._bytes += self._sizes[seq]
                highest = max(highest, seq)
        for entry in os.scandir(self._dead):
            highest = max(highest, _seq_of(entry.name) or 0)
        self._pending.sort()
        self._next = highest + 1

    # -- producer side ------------------------------------------------------------------

    def put_file(self, path: Path, incoming: Incoming) -> ItemMeta:
        """Queue the Part 10 file at ``path`` (durably); the caller deletes ``path``."""
        return self._put(_file_chunks(path), path.stat().st_size, incoming)

    def put_bytes(self, data: bytes, incoming: Incoming) -> ItemMeta:
        """Queue Part 10 bytes held in memory (durably)."""
        return self._put((data,), len(data), incoming)

    def _put(self, chunks: Iterable[bytes], size: int, incoming: Incoming) -> ItemMeta:
        with self._cond:
            if self._bytes + self._reserved + size > self._max_bytes:
                raise QueueFull("the gateway queue is full")
            seq = self._next
            self._next += 1
            self._reserved += size
        meta = ItemMeta(seq=seq, received_at=datetime.now(UTC).isoformat(timespec="milliseconds"), size=size, **asdict(incoming))
        record = json.dumps(asdict(meta), separators=(",", ":")).encode("utf-8")
        tmp = self._items / f"{_TMP_PREFIX}{seq}"
        final = self._items / item_name(seq)
        try:
            enc = BlobEncryptor(self._key, _identity(seq), self._segment)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                _seal_to(f, enc, _chain(_PREFIX.pack(_MAGIC, len(record)) + record, chunks))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
            fsync_dir(self._items)
            stored = final.stat().st_size
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            with self._cond:
                self._reserved -= size
            raise
        with self._cond:
            self._reserved -= size
            bisect.insort(self._pending, seq)
            self._sizes[seq] = stored
            self._bytes += stored
            self._meta[seq] = meta
            self._cond.notify_all()
        return meta

    # -- consumer side ------------------------------------------------------------------

    def wait(self, timeout: float) -> bool:
        """Block until an item is queued (or ``timeout``); True if the queue is not empty."""
        with self._cond:
            if not self._pending:
                self._cond.wait(timeout)
            return bool(self._pending)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def head(self, n: int = 1) -> list[int]:
        with self._cond:
            return self._pending[:n]

    def __len__(self) -> int:
        with self._cond:
            return len(self._pending)

    def _segments(self, seq: int) -> Iterator[bytes]:
        return decrypt_stream(self._key, _identity(seq), _file_chunks(self._items / item_name(seq)))

    def meta(self, seq: int) -> ItemMeta:
        """The item's metadata (decrypts and authenticates its first segment only)."""
        cached = self._meta.get(seq)
        if cached is not None:
            return cached
        gen = self._segments(seq)
        try:
            first = next(gen)
        except (DecryptionError, StopIteration) as exc:
            raise CorruptItem(f"queue item {seq} failed authentication") from exc
        finally:
            gen.close()
        record, _ = _split(first, seq)
        meta = ItemMeta(**json.loads(record))
        if meta.seq != seq:
            raise CorruptItem(f"queue item {seq} carries sequence {meta.seq}")
        self._meta[seq] = meta
        return meta

    @contextlib.contextmanager
    def plaintext(self, seq: int) -> Iterator[Path]:
        """The item's Part 10 bytes as a path to an in-memory file (memfd), never on disk.

        The whole item is authenticated before the path is handed out, so a
        truncated or altered item is never forwarded, not even in part.
        """
        with memory_file(self._part10(seq), f"dicomguard-gw-{seq}") as path:
            yield path

    def _part10(self, seq: int) -> Iterator[bytes | memoryview]:
        try:
            for i, segment in enumerate(self._segments(seq)):
                if i == 0:
                    _, offset = _split(segment, seq)
                    yield memoryview(segment)[offset:]
                else:
                    yield segment
        except DecryptionError as exc:
            raise CorruptItem(f"queue item {seq} failed authentication") from exc

    def remove(self, seq: int) -> None:
        """The upstream confirmed the item: delete it (and make the deletion durable)."""
        with contextlib.suppress(FileNotFoundError):
            (self._items / item_name(seq)).unlink()
        fsync_dir(self._items)
        self._forget(seq)

    def dead_letter(self, seq: int, reason: str, status: int | None, attempts: int) -> None:
        """Move the item aside, still encrypted, with the reason next to it (no PHI)."""
        note = {"seq": seq, "reason": reason, "status": status, "attempts": attempts, "at": datetime.now(UTC).isoformat()}
        note_path = self._dead / f"{seq:020d}.json"
        with open(note_path, "w", encoding="utf-8") as f:
            json.dump(note, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(note_path, 0o600)
        os.replace(self._items / item_name(seq), self._dead / item_name(seq))
        fsync_dir(self._dead)
        fsync_dir(self._items)
        self._forget(seq)

    def _forget(self, seq: int) -> None:
        with self._cond:
            i = bisect.bisect_left(self._pending, seq)
            if i < len(self._pending) and self._pending[i] == seq:
                del self._pending[i]
            self._bytes -= self._sizes.pop(seq, 0)
            self._meta.pop(seq, None)


def _chain(first: bytes, rest: Iterable[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _split(first_segment: bytes, seq: int) -> tuple[bytes, int]:
    """The metadata record of an item's first plaintext segment and the offset of the Part 10 bytes."""
    if len(first_segment) < _PREFIX.size:
        raise CorruptItem(f"queue item {seq} is too short")
    magic, length = _PREFIX.unpack_from(first_segment)
    end = _PREFIX.size + length
    if magic != _MAGIC or end > len(first_segment):
        raise CorruptItem(f"queue item {seq} has no valid metadata record")
    return first_segment[_PREFIX.size : end], end


def age_seconds(mtime: float | None) -> float | None:
    return None if mtime is None else max(0.0, time.time() - mtime)
