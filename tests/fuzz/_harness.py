"""What every fuzz test shares: the budget, the seed corpus, byte-level mutations, and the time bound per input.

Budget (see README.md): each hypothesis test runs ``FUZZ_EXAMPLES`` examples
(default 200) times its share; ``FUZZ_EXAMPLES=20000`` is a long local run.
Hypothesis keeps its example database in ``.hypothesis/`` (git-ignored): a
failure found locally is replayed first on the next local run; CI starts
empty. An input worth keeping for ever is copied into the corpus as
``regression-<what>.<ext>`` instead, where every run replays it.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, note, settings, target
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

CORPUS = Path(__file__).resolve().parent / "corpus"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
RANDOM = os.environ.get("FUZZ_RANDOM") == "1"
"""Unset (CI): a derandomized run, the same examples every time, so the suite's time and outcome are
reproducible (a random search once spun for minutes inside hypothesis's generator). ``FUZZ_RANDOM=1``: a new
search each run, for local and long runs."""
MAX_MS = float(os.environ.get("FUZZ_MAX_MS", "500"))
MS_PER_KIB = 10.0
"""Time bound for one input: ``MAX_MS`` plus ``MS_PER_KIB`` per KiB of input. The parsers are linear and take
microseconds to a few milliseconds per KiB; the margin absorbs a loaded CI machine, while a quadratic path
(e.g. 64 KiB of one repeated byte) still exceeds it by orders of magnitude."""


def budget(share: float = 1.0) -> settings:
    return settings(
        max_examples=max(10, int(EXAMPLES * share)),
        derandomize=not RANDOM,
        database=None if not RANDOM else settings.default.database,
        deadline=None,  # timing is asserted by timed() with a generous bound, not by flaky deadlines
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )


def seeds(target_name: str) -> list[Path]:
    folder = CORPUS / target_name
    return sorted(p for p in folder.iterdir() if p.is_file())


def seed_params(target_name: str) -> list[pytest.param]:  # type: ignore[type-arg]
    return [pytest.param(p, id=p.name) for p in seeds(target_name)]


def seed_bytes(target_name: str) -> list[bytes]:
    return [p.read_bytes() for p in seeds(target_name)]


def timed(check: Callable[[bytes], object], data: bytes, label: str, max_ms: float | None = None) -> None:
    """Run one input; fail if it is slow twice in a row (one slow run may be the machine). In random runs
    (``FUZZ_RANDOM=1``) hypothesis is steered towards slow inputs (``target``)."""
    bound = max_ms if max_ms is not None else MAX_MS + MS_PER_KIB * len(data) / 1024
    if currently_in_test_context():
        note(f"{label} input ({len(data)} bytes): {data[:4096]!r}")  # shown with a failure, whatever the report prints
    ms = _ms(check, data)
    if RANDOM and currently_in_test_context():
        target(ms, label=f"{label} ms")  # wall-clock steering: only in random runs, it would make CI's search differ run to run
    if ms >= bound:
        ms = min(ms, _ms(check, data))
    assert ms < bound, f"{label}: {ms:.0f} ms for an input of {len(data)} bytes (bound {bound:.0f} ms)"


def _ms(check: Callable[[bytes], object], data: bytes) -> float:
    start = time.perf_counter()
    check(data)
    return (time.perf_counter() - start) * 1000


_INTERESTING_U32 = [0, 1, 2, 7, 8, 0x7F, 0x80, 0xFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF]
_INTERESTING_BYTES = b"\x00\x01\x7f\x80\xff\r\n -\"<>&[]=\\0"


@st.composite
def mutants(draw: st.DrawFn, corpus: list[bytes], max_size: int = 64 * 1024) -> bytes:
    """A seed with a few byte-level edits (AFL-style): flips, interesting bytes and lengths, inserts, deletes, splices, long repeats."""
    data = bytearray(draw(st.sampled_from(corpus)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "byte", "u16", "u32", "insert", "delete", "truncate", "duplicate", "splice", "repeat"]))
        at = draw(st.integers(0, max(0, len(data))))
        if op == "flip" and data:
            data[at % len(data)] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and data:
            data[at % len(data)] = draw(st.sampled_from(_INTERESTING_BYTES))
        elif op in ("u16", "u32") and len(data) >= 4:
            value = draw(st.sampled_from(_INTERESTING_U32) | st.integers(0, len(data) + 16))
            fmt = draw(st.sampled_from(["<", ">"])) + ("H" if op == "u16" else "I")
            packed = struct.pack(fmt, value & (0xFFFF if op == "u16" else 0xFFFFFFFF))
            at = min(at, len(data) - len(packed))
            data[at : at + len(packed)] = packed
        elif op == "insert":
            tokens = st.sampled_from([b"\r\n", b"\r\n\r\n", b"--", b"\x00" * 4, b"\xff" * 4])
            data[at:at] = draw(st.binary(min_size=1, max_size=16) | tokens)
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[at:]
        elif op == "duplicate" and data:
            n = draw(st.integers(1, 64))
            data[at:at] = data[at : at + n] * draw(st.integers(1, 4))
        elif op == "repeat" and data:  # long runs (digits, brackets, padding): where limits and quadratic paths hide
            n = draw(st.integers(1, 4))
            data[at:at] = data[at : at + n] * (1 << draw(st.integers(4, 13)))
        elif op == "splice":
            other = draw(st.sampled_from(corpus))
            cut = draw(st.integers(0, len(other)))
            data[at:] = other[cut:]
    return bytes(data[:max_size])
