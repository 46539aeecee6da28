"""Fuzz target: the Part 10 structure walker (core/dicom_structure.py), the first code to touch an object's bytes.

Contract: :func:`walk_part10` returns a :class:`FileStructure` whose ranges lie
inside the object and whose counts respect the limits, or raises
:class:`RejectedObject`, for any bytes, in well under a second; tighter
limits only ever refuse more (``targets.dicom_structure``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dicomguard.errors import RejectReason
from tests.fuzz import dicom_gen
from tests.fuzz._harness import budget, mutants, seed_bytes, seed_params, timed
from tests.fuzz.targets import DEFAULT_LIMITS, dicom_structure, walk

NAME = "dicom_structure"
SEEDS = seed_bytes(NAME)


@pytest.mark.parametrize("path", seed_params(NAME))
def test_seed_corpus(path: Path) -> None:
    timed(dicom_structure, path.read_bytes(), NAME)


@budget(0.5)
@given(st.binary(max_size=512).map(lambda tail: b"\0" * 128 + b"DICM" + tail) | st.binary(max_size=256))
def test_arbitrary_bytes(data: bytes) -> None:
    timed(dicom_structure, data, NAME)


@budget(1.5)
@given(mutants(SEEDS))
def test_mutated_seeds(data: bytes) -> None:
    timed(dicom_structure, data, NAME)


@budget(1.5)
@given(dicom_gen.part10_files())
def test_generated_structures(data: bytes) -> None:
    """Hostile trees: lying lengths, stray delimiters, undefined lengths, deep nesting, every transfer syntax."""
    timed(dicom_structure, data, NAME)


@budget(0.5)
@given(dicom_gen.nodes(hostile=False), st.sampled_from([dicom_gen.EXPLICIT_LE, dicom_gen.IMPLICIT_LE, dicom_gen.EXPLICIT_BE]))
def test_a_file_cut_anywhere_is_refused_or_accepted_within_what_remains(nodes, ts: str) -> None:  # type: ignore[no-untyped-def]
    """Truncation (a dropped connection, a short read) never yields a structure with a range past the end."""
    data = dicom_gen.encode((dicom_gen.Element(0x00080018, b"UI", b"1.2.3\0"), *nodes), ts)  # a data set is never empty
    assert not isinstance(walk(data, DEFAULT_LIMITS), RejectReason)  # the whole file is well-formed
    for cut in range(132, len(data), max(1, len(data) // 16)):
        walk(data[:cut], DEFAULT_LIMITS)  # the structure checks inside walk() assert every range is within data[:cut]
