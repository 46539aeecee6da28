"""Separate SHA-256 digests of an object's pixels and of its header (FIPS 180-4).

Definitions (stable; recorded in the index and, later, the ledger):

* **pixel hash** = SHA-256 of the Pixel Data value bytes as encoded (for
  encapsulated transfer syntaxes, the items with their headers, as pydicom's
  ``PixelData``), or
  SHA-256 of the empty string for an object without pixels;
* **header hash** = SHA-256 of ``"dicomguard-header-v1\\0" || transfer syntax
  UID || "\\0"`` followed by every data set byte that is not Pixel Data value
  (stored encoding; inflated for the Deflated transfer syntax).

The File Meta Information other than the transfer syntax is transport
detail (implementation UID, source AE) and is not hashed: the same image sent
by two different senders hashes the same.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from dicomguard.core.dicom_structure import FileStructure

HEADER_DOMAIN = b"dicomguard-header-v1\x00"


@dataclass(frozen=True)
class ObjectDigests:
    pixel_sha256: bytes
    header_sha256: bytes


class DigestPass:
    """Feeds file-offset ranges of one object into the two hashers.

    Lets the ingest pipeline hash while it encrypts (one pass over memory):
    call :meth:`update` with consecutive file slices, then :meth:`digests`.
    """

    def __init__(self, structure: FileStructure) -> None:
        self._pixel = hashlib.sha256()
        self._header = hashlib.sha256(HEADER_DOMAIN + structure.transfer_syntax.encode("ascii") + b"\x00")
        self._deflated = structure.deflated
        base = structure.dataset_offset
        if structure.deflated:
            # Hashes are over the inflated stream: compute them at once from it.
            _feed(self._header, self._pixel, structure.dataset, 0, 0, structure.pixel_range)
            self._bounds = None
        else:
            pr = structure.pixel_range
            self._bounds = (base, (base + pr[0], base + pr[1]) if pr else None)

    def update(self, file_offset: int, chunk: memoryview) -> None:
        if self._bounds is None:
            return
        base, pixel = self._bounds
        _feed(self._header, self._pixel, chunk, file_offset, base, pixel)

    def digests(self) -> ObjectDigests:
        return ObjectDigests(self._pixel.digest(), self._header.digest())


def _feed(header, pixel, chunk: memoryview, offset: int, start: int, pixel_range: tuple[int, int] | None) -> None:  # type: ignore[no-untyped-def]
    """Split ``chunk`` (at ``offset`` in the stream) into header and pixel parts; bytes before ``start`` are skipped."""
    end = offset + len(chunk)
    lo = max(offset, start)
    if lo >= end:
        return
    if pixel_range is None:
        header.update(chunk[lo - offset :])
        return
    p0, p1 = pixel_range
    # header part before pixels, the pixel part, header part after pixels
    for a, b, h in ((lo, min(end, p0), header), (max(lo, p0), min(end, p1), pixel), (max(lo, p1), end, header)):
        if a < b:
            h.update(chunk[a - offset : b - offset])


def digest_object(data: bytes | memoryview, structure: FileStructure) -> ObjectDigests:
    """Both digests of a whole object in memory (used when verifying a retrieved object)."""
    dp = DigestPass(structure)
    dp.update(0, memoryview(data))
    return dp.digests()
