"""The one interface every blob store implements (filesystem, S3-compatible object storage)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Protocol

from dicomguard.errors import DicomGuardError

BLOB_ID = re.compile(r"^[0-9a-f]{32,64}$")
"""Blob ids are lowercase hex: never a path or key traversal, whatever the caller passes."""


class BlobStoreError(DicomGuardError):
    """The blob store failed (I/O error, disk full, missing blob)."""


class BlobMissingError(BlobStoreError):
    """No blob under that id."""


class BlobExistsError(BlobStoreError):
    """A blob already exists under that id: stores are write-once, nothing was replaced."""


class BlobStore(Protocol):
    """Write-once storage of opaque ciphertext blobs, addressed by id.

    ``put`` is atomic: after a crash at any point either the whole blob or
    nothing is visible under the id. With ``durable=False`` the caller makes a
    batch of blobs durable at once with :meth:`sync`, before it indexes them.
    """

    reads_in_flight: int
    """How many reads a bulk reader (a retrieval verifying ahead) keeps going at once: one per core where a read is
    CPU work (a local disk's page cache), more where it mostly waits on the network (an object store). A retrieval
    hands small objects to threads only where this exceeds the cores (``core.retrieve.THREAD_FROM_BYTES``)."""

    def put(self, blob_id: str, chunks: Iterable[bytes], durable: bool = True) -> int:
        """Store the blob; returns its size. Refuses to overwrite an existing id (:class:`BlobExistsError`)."""
        ...

    def sync(self, blob_ids: list[str]) -> None:
        """Make these blobs (written with ``durable=False``) durable."""
        ...

    def read(self, blob_id: str) -> bytes: ...

    def stream(self, blob_id: str, chunk_size: int = ...) -> Iterator[bytes]: ...

    def exists(self, blob_id: str) -> bool: ...

    def delete(self, blob_id: str) -> None:
        """Remove a blob; missing blobs are ignored."""
        ...

    def iter_ids(self) -> Iterator[str]: ...

    def remove_stale_temporaries(self) -> int:
        """Remove what writers killed mid-write left behind (never visible); returns how many."""
        ...
