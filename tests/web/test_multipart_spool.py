"""STOW-RS parts wait for ingest sealed: held as ciphertext segments while small and while the request's memory bound
allows, else in an anonymous temporary file; either way every byte comes back unchanged whatever the chunking, and no
plaintext is kept."""

from __future__ import annotations

import os
import random

import pytest

from dicomguard.web.multipart import MAX_HELD_BYTES, MultipartReader

MiB = 1024 * 1024
SIZES = [0, 1, MiB // 2, MiB - 16, MiB, MiB + 1, 5 * MiB // 2]


def _body(parts: list[bytes], boundary: str) -> bytes:
    out = b""
    for p in parts:
        out += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_part_comes_back_unchanged_whatever_the_chunking(seed: int) -> None:
    rng = random.Random(seed)
    parts = [os.urandom(n) for n in SIZES]
    body = _body(parts, "xyz")
    reader = MultipartReader("xyz")
    i = 0
    while i < len(body):
        batch = []
        for _ in range(rng.randint(1, 4)):  # several chunks per feed, as the STOW-RS receiver hands them over
            n = rng.choice([1, 7, 4096, 65536, MiB, 3 * MiB])
            batch.append(body[i:i + n])
            i += n
        reader.feed(*batch)
    got = [p.content.read() for p in reader.finish()]
    reader.close()
    assert got == parts


def test_small_parts_are_held_sealed_and_large_ones_go_to_an_anonymous_file_sealed() -> None:
    marker = b"PLAINTEXT-PATIENT-NAME^" * 1000
    small, large = marker * 10, marker * 200  # 230 KB and 4.6 MB
    reader = MultipartReader("b")
    reader.feed(_body([small, large], "b"))
    first, second = (p.content for p in reader.finish())
    assert first._file is None and first._held and all(marker[:64] not in s for s in first._held)
    assert second._held is None and second._file is not None
    name = second._file.name
    assert isinstance(name, int) or not os.path.exists(name)  # O_TMPFILE, or unlinked at creation: no name to open
    second._file.seek(0)
    assert marker[:64] not in second._file.read()
    assert first.read() == small and second.read() == large
    reader.close()


def test_a_request_holds_at_most_its_bound_in_memory_and_the_rest_waits_in_files() -> None:
    """An insider's body of many parts, sent faster than they are stored: the memory the request holds stays within
    its bound, every part still comes back whole, and a part closed (stored) gives its share back."""
    size = MiB // 2
    parts = [os.urandom(size) for _ in range(MAX_HELD_BYTES // size + 8)]
    reader = MultipartReader("b")
    body = _body(parts, "b")
    for i in range(0, len(body), 256 * 1024):
        reader.feed(body[i:i + 256 * 1024])
        assert reader._memory.held <= MAX_HELD_BYTES
    received = reader.finish()
    held = [p.content for p in received if p.content._held]
    assert len(received) - len(held) >= 8 and all(p.content._file is not None for p in received if not p.content._held)
    assert reader._memory.held == sum(s._held_bytes for s in held) > MAX_HELD_BYTES - MiB
    assert [p.content.read() for p in received] == parts
    before = reader._memory.held
    held[0].close()
    assert reader._memory.held == before - size - 16  # its share (one sealed segment) is free for parts still to come
    reader.close()
    assert reader._memory.held == 0
