"""The segmented AES-256-GCM blob format (STREAM construction)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicomguard.crypto.aead import DecryptionError, new_key
from dicomguard.crypto.blob_cipher import (
    HEADER_BYTES,
    TAG_BYTES,
    BlobEncryptor,
    ciphertext_size,
    decrypt_blob,
    decrypt_stream,
    plaintext_size,
)


def _encrypt(key: bytes, identity: bytes, data: bytes, seg: int) -> bytes:
    enc = BlobEncryptor(key, identity, seg)
    parts = [enc.header]
    chunks = [data[i : i + seg] for i in range(0, max(len(data), 1), seg)] or [b""]
    for i, c in enumerate(chunks):
        parts.append(enc.encrypt_segment(c, last=i == len(chunks) - 1))
    return b"".join(parts)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=5000), seg=st.integers(16, 700))
def test_round_trip_at_every_segment_boundary(data: bytes, seg: int) -> None:
    key = new_key()
    blob = _encrypt(key, b"id", data, seg)
    assert len(blob) == ciphertext_size(len(data), seg)
    assert plaintext_size(len(blob), seg) == len(data)
    assert decrypt_blob(key, b"id", blob) == data
    # streaming in odd-sized pieces gives the same bytes
    pieces = [blob[i : i + 37] for i in range(0, len(blob), 37)]
    assert b"".join(decrypt_stream(key, b"id", pieces)) == data


@pytest.mark.parametrize("seg", [16, 1024 * 1024])
def test_plaintext_size_inverts_ciphertext_size_at_every_boundary(seg: int) -> None:
    for n in range(0, 4):
        for size in {max(0, n * seg - 1), n * seg, n * seg + 1}:
            assert plaintext_size(ciphertext_size(size, seg), seg) == size
    with pytest.raises(ValueError):
        plaintext_size(HEADER_BYTES + TAG_BYTES - 1, seg)


@settings(max_examples=40, deadline=None)
@given(data=st.binary(min_size=1, max_size=2000), where=st.integers(0, 10_000))
def test_any_flipped_bit_fails(data: bytes, where: int) -> None:
    key = new_key()
    blob = bytearray(_encrypt(key, b"id", data, 64))
    blob[where % len(blob)] ^= 0x80
    with pytest.raises(DecryptionError):
        decrypt_blob(key, b"id", bytes(blob))


def test_wrong_identity_or_key_fails() -> None:
    key = new_key()
    blob = _encrypt(key, b"1.2.3\x001.2\x001\x00p", b"payload" * 100, 64)
    with pytest.raises(DecryptionError):
        decrypt_blob(key, b"1.2.4\x001.2\x001\x00p", blob)
    with pytest.raises(DecryptionError):
        decrypt_blob(new_key(), b"1.2.3\x001.2\x001\x00p", blob)


def test_truncation_reordering_and_duplication_fail() -> None:
    key = new_key()
    seg = 32
    blob = _encrypt(key, b"id", bytes(range(200)), seg)
    body = blob[HEADER_BYTES:]
    size = seg + TAG_BYTES
    segments = [body[i : i + size] for i in range(0, len(body), size)]
    header = blob[:HEADER_BYTES]
    for forged in (
        header + b"".join(segments[:-1]),  # last segment dropped: previous one is not flagged last
        header + b"".join([segments[1], segments[0], *segments[2:]]),  # reordered
        header + b"".join([segments[0], *segments]),  # duplicated
        header,  # nothing but the header
    ):
        with pytest.raises(DecryptionError):
            decrypt_blob(key, b"id", forged)


def test_each_blob_gets_a_fresh_salt() -> None:
    key = new_key()
    assert _encrypt(key, b"id", b"same", 64) != _encrypt(key, b"id", b"same", 64)
