"""Encrypted blob format: segmented AES-256-GCM, decryptable as a stream.

Layout (all integers big-endian)::

    magic "DGB1" | segment_size u32 | salt 16 bytes        (header, 24 bytes)
    segment_0 ciphertext || tag | segment_1 ... | segment_last

Each object gets its own key, ``HKDF(data_key, salt, info="dicomguard blob v1" ||
identity)``, where ``identity`` names the object (SOP Instance, Series, Study
UIDs and the patient's key reference). A blob copied over another object's
blob therefore fails authentication: blobs cannot be swapped (ingest
step "associated data binds the object's identity").

Segments use the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizar,
"Online Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance",
CRYPTO 2015): nonce = 11-byte segment counter || last-segment flag, with the
header as associated data. Reordered, dropped, duplicated or truncated segments
all fail. Because the key is unique per blob, the counter nonce never repeats
under a key.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dicomguard.crypto.aead import DecryptionError, derive_key

MAGIC = b"DGB1"
HEADER = struct.Struct(">4sI16s")
HEADER_BYTES = HEADER.size
TAG_BYTES = 16
DEFAULT_SEGMENT = 1024 * 1024
_INFO = b"dicomguard blob v1\x00"


def blob_identity(sop_instance_uid: str, series_uid: str, study_uid: str, patient_ref: str) -> bytes:
    """The associated identity of an object's blob (NUL-separated; UIDs cannot contain NUL)."""
    return "\x00".join((sop_instance_uid, series_uid, study_uid, patient_ref)).encode("ascii")


def _nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


class BlobEncryptor:
    """Encrypts one object, segment by segment, so that hashing can share the pass."""

    def __init__(self, data_key: bytes, identity: bytes, segment_size: int = DEFAULT_SEGMENT) -> None:
        salt = os.urandom(16)
        self.salt = salt
        self.header = HEADER.pack(MAGIC, segment_size, salt)
        self.segment_size = segment_size
        self._aead = AESGCM(derive_key(data_key, _INFO + identity, salt=salt))
        self._counter = 0

    def encrypt_segment(self, chunk: bytes | memoryview, last: bool) -> bytes:
        """Encrypt the next segment; every segment but the last must be ``segment_size`` long."""
        if not last and len(chunk) != self.segment_size:
            raise ValueError("only the last segment may be short")
        out = self._aead.encrypt(_nonce(self._counter, last), chunk, self.header)
        self._counter += 1
        return out


def ciphertext_size(plaintext_size: int, segment_size: int = DEFAULT_SEGMENT) -> int:
    segments = max(1, -(-plaintext_size // segment_size))
    return HEADER_BYTES + plaintext_size + segments * TAG_BYTES


def plaintext_size(blob_size: int, segment_size: int = DEFAULT_SEGMENT) -> int:
    """The inverse of :func:`ciphertext_size`: what a blob of ``blob_size`` bytes decrypts to (its segment size given).

    Lets a reader announce an object's length before decrypting it (an HTTP ``Content-Length``, RFC 9110 8.6);
    the decryption itself still authenticates every byte, and a reader must check the length it announced."""
    sealed = blob_size - HEADER_BYTES
    segments = max(1, -(-sealed // (segment_size + TAG_BYTES)))
    size = sealed - segments * TAG_BYTES
    if size < 0:
        raise ValueError(f"{blob_size} bytes cannot be a blob")
    return size


def blob_salt(blob_prefix: bytes) -> bytes | None:
    """The salt in a blob's header (identifies a blob even when it sits under the wrong name)."""
    if len(blob_prefix) < HEADER_BYTES:
        return None
    magic, _, salt = HEADER.unpack(blob_prefix[:HEADER_BYTES])
    return salt if magic == MAGIC else None


def _segment_cipher(data_key: bytes, identity: bytes, header: bytes) -> tuple[AESGCM, int]:
    """The blob's key (from its header's salt and its identity) and the size of one encrypted segment."""
    if len(header) != HEADER_BYTES:
        raise DecryptionError("blob header truncated")
    magic, segment_size, salt = HEADER.unpack(header)
    if magic != MAGIC or not 16 <= segment_size <= 64 * 1024 * 1024:
        raise DecryptionError("not a dicomguard blob")
    return AESGCM(derive_key(data_key, _INFO + identity, salt=salt)), segment_size + TAG_BYTES


def decrypt_stream(data_key: bytes, identity: bytes, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Yield authenticated plaintext segments of a blob given as a byte stream.

    A segment is yielded only after its tag verified. Truncation is detected at
    the end (no segment flagged last), so callers that must not act on a
    partial object collect all segments before using them.
    """
    reader = _Rechunker(chunks)
    header = reader.read(HEADER_BYTES)
    aead, enc_size = _segment_cipher(data_key, identity, header)
    counter = 0
    current = reader.read(enc_size)
    while True:
        following = reader.read(enc_size)
        last = not following
        try:
            yield aead.decrypt(_nonce(counter, last), current, header)
        except InvalidTag as exc:
            raise DecryptionError(f"segment {counter} failed authentication") from exc
        if last:
            return
        counter += 1
        current = following


def decrypt_blob(data_key: bytes, identity: bytes, blob: bytes) -> bytes:
    """Decrypt a whole blob held in memory: the same checks as :func:`decrypt_stream`, segments sliced in place
    (no copy of the ciphertext; one join of the plaintext)."""
    mv = memoryview(blob)
    header = bytes(mv[:HEADER_BYTES])
    aead, enc_size = _segment_cipher(data_key, identity, header)
    parts = []
    offset, counter, end = HEADER_BYTES, 0, len(mv)
    while True:
        stop = min(offset + enc_size, end)
        last = stop >= end
        try:
            parts.append(aead.decrypt(_nonce(counter, last), mv[offset:stop], header))
        except InvalidTag as exc:
            raise DecryptionError(f"segment {counter} failed authentication") from exc
        if last:
            return b"".join(parts)
        offset, counter = stop, counter + 1


class _Rechunker:
    """Turns an iterable of arbitrary byte chunks into exact-size reads."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._buf = bytearray()

    def read(self, n: int) -> bytes:
        while len(self._buf) < n:
            try:
                self._buf += next(self._it)
            except StopIteration:
                break
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out
