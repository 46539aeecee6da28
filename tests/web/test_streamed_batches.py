"""A streamed WADO-RS body is fetched from the thread pool in batches: same chunks, same order, and a verification
failure met mid-stream is raised only after everything verified before it was sent (the response is then cut)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from dicomguard.errors import IntegrityError
from dicomguard.web import wado


async def _collect(chunks: Iterator[bytes]) -> tuple[list[bytes], BaseException | None]:
    out: list[bytes] = []
    try:
        async for chunk in wado._batched(chunks):
            out.append(chunk)
    except Exception as exc:  # noqa: BLE001 - the test looks at it
        return out, exc
    return out, None


def test_every_chunk_in_order_with_fewer_hand_offs(monkeypatch: pytest.MonkeyPatch) -> None:
    hand_offs = 0
    real = wado.run_in_threadpool

    async def counting(fn, *args):  # type: ignore[no-untyped-def]
        nonlocal hand_offs
        hand_offs += 1
        return await real(fn, *args)

    monkeypatch.setattr(wado, "run_in_threadpool", counting)
    chunks = [bytes([i % 256]) * (300 * 1024) for i in range(40)]  # 12 MB in 300 KB chunks
    got, failure = asyncio.run(_collect(iter(chunks)))
    assert failure is None and got == chunks
    assert hand_offs <= 12 * 1024 * 1024 // wado.BATCH_BYTES + 2  # not one per chunk


def test_a_failure_mid_stream_comes_after_what_was_verified_before_it() -> None:
    def body() -> Iterator[bytes]:
        yield b"part 1"
        yield b"part 2"
        raise IntegrityError("pixel-changed", "1.2.3")

    got, failure = asyncio.run(_collect(body()))
    assert got == [b"part 1", b"part 2"]
    assert isinstance(failure, IntegrityError)


def test_an_empty_body_ends_at_once() -> None:
    assert asyncio.run(_collect(iter([]))) == ([], None)
