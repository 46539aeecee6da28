"""STOW-RS parts wait for ingest sealed: held as ciphertext segments while small, in an anonymous temporary file past
1 MiB; either way every byte comes back unchanged whatever the chunking, and no plaintext is kept."""

from __future__ import annotations

import os
import random

import pytest

from dicomguard.web.multipart import MultipartReader

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
