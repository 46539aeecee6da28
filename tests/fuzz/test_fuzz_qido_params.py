"""Fuzz target: QIDO-RS query parameters (web/qido_params.py), the query string of any search request.

Contract: :func:`parse_query` returns a :class:`QidoQuery` whose every match
has the shape of its VR (ASCII digits for DA/TM/IS, valid UIDs, no control
characters, bounded lengths and counts) at a level the resource serves, or
raises :class:`QueryError` (400) whose text names parameters, never values.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dicomguard.web.qido_params import MATCH_KEYS, QueryError
from tests.fuzz._harness import budget, mutants, seed_bytes, seed_params, timed
from tests.fuzz.targets import ROUTE_LEVELS, parse, qido_params

NAME = "qido_params"
SEEDS = seed_bytes(NAME)
MARKER = "PHIQX"
"""Part of every value that must never come back in an error message (a value may be PHI)."""

# Superscript, Arabic-Indic, fullwidth, Bengali digits: str.isdigit() or \\d says yes, DICOM (ASCII digits only) says no.
_DIGITS = ["\u00b2", "\u0661", "\u0663" * 8, "\uff11", "\u09e7"]
_SHAPED = {
    "uid": ["1.2.3", "1.2.3,1.2.4", "1.2.3\\1.2.4", "01.2", "1..2", "1.2.", ",", "1.2.3," * 3, "1." * 40],
    "date": ["20240101", "20240101-", "-20240131", "20240101-20240131", "2024", "-", "20240101--", "2024010a"],
    "time": ["101500.123456", "10", "1015", "10-11", "101500.1234567", "25", "10:15"],
    "int": ["+3", "-0", "12345678901", "1000000000", "999999999", "10", "0", "1e3", " 1"],
    "cs": ["CT", "CT,MR", "C?*", "ct", ",", "A" * 17, "CT,", "*"],
    "text": ["DOE*", "D?E", "", "a\\b", "x" * 129, "\x00", "\u00e9\u00e8", "*"],
    "bool": ["true", "false", "TRUE", "1", ""],
    "fields": ["all", "00100020,StudyDate", "00100020, all", "NoSuch", "ffffffff", "7FE00010", "," * 3, "x" * 65],
}
_KIND_OF = {name: key.kind.value for name, key in MATCH_KEYS.items()} | {
    "limit": "int", "offset": "int", "fuzzymatching": "bool", "includefield": "fields"}


def _value_for(name: str) -> st.SearchStrategy[str]:
    """Values shaped for the parameter's kind (and the same shapes in non-ASCII digits), or anything."""
    kind = _KIND_OF.get(name, "text")
    kind = "text" if kind == "pn" else kind
    return st.one_of(
        st.sampled_from(_SHAPED[kind] + _DIGITS),
        st.sampled_from(_SHAPED[kind]).map(lambda v: v.replace("1", "\u0661").replace("0", "\u00b2")),  # the shape, in other digits
        st.text(max_size=12),
        st.text(max_size=12).map(lambda v: MARKER + v),
    )


_names = st.sampled_from([*MATCH_KEYS, "limit", "offset", "fuzzymatching", "includefield", "00100010", "0020000D", "00081199",
                          "7FE00010", "ffffffff", "PixelData", "NoSuchKeyword", ""]) | st.text(max_size=10).filter(
                              lambda n: MARKER not in n)
_items = _names.flatmap(lambda name: st.tuples(st.just(name), _value_for(name)))


@pytest.mark.parametrize("path", seed_params(NAME))
def test_seed_corpus(path: Path) -> None:
    timed(qido_params, path.read_bytes(), NAME)


@budget(0.5)
@given(st.binary(max_size=256))
def test_arbitrary_query_strings(data: bytes) -> None:
    timed(qido_params, data, NAME)


@budget(1.0)
@given(mutants(SEEDS))
def test_mutated_query_strings(data: bytes) -> None:
    timed(qido_params, data, NAME)


@budget(1.5)
@given(st.lists(_items, max_size=6), st.sampled_from(ROUTE_LEVELS))
def test_parameters_are_validated_and_errors_never_echo_values(items: list[tuple[str, str]], levels) -> None:  # type: ignore[no-untyped-def]
    result = parse(items, levels)  # the shape of every accepted value is asserted inside
    if isinstance(result, QueryError):
        assert MARKER not in str(result), "a QueryError echoes a parameter value"
