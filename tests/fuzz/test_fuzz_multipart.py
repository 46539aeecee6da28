"""Fuzz target: the STOW-RS multipart/related reader (web/multipart.py), fed by any client with a token.

Contract: the reader returns the parts or raises :class:`MalformedMultipart`,
the same whatever way the body is split into chunks (it is fed as TCP
delivers it), holds at most one header block unparsed, never returns more
bytes than it was fed, and keeps no part content in clear in its spool.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dicomguard.web.multipart import MAX_PART_HEADER_BYTES, MAX_PREAMBLE_BYTES
from tests.fuzz._harness import budget, mutants, seed_bytes, seed_params, timed
from tests.fuzz.targets import chunked, multipart, multipart_outcome, multipart_same_however_split

NAME = "multipart"
SEEDS = seed_bytes(NAME)
_BCHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'()+_,-./:=?"
boundaries = st.text(_BCHARS, min_size=1, max_size=70)
header_lines = st.sampled_from([b"Content-Type: application/dicom", b"content-type:application/dicom; transfer-syntax=*",
                                b"Content-Transfer-Encoding: binary", b"X-Empty:", b"Bad Header", b" Lead: x", b"Caf\xc3\xa9: 1"])


@pytest.mark.parametrize("path", seed_params(NAME))
def test_seed_corpus(path: Path) -> None:
    timed(multipart, path.read_bytes(), NAME)


@budget(0.5)
@given(st.binary(max_size=512))
def test_arbitrary_bytes(data: bytes) -> None:
    timed(multipart, data, NAME)


@budget(1.5)
@given(mutants(SEEDS))
def test_mutated_seeds(data: bytes) -> None:
    timed(multipart, data, NAME)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, bytes, list[tuple[list[bytes], bytes]]]:
    """A well-formed body (RFC 2046 5.1.1) with random boundary, parts, preamble, padding and epilogue; the parts as sent."""
    boundary = draw(boundaries)
    d = b"--" + boundary.encode()
    parts = draw(st.lists(st.tuples(st.lists(header_lines.filter(lambda h: b":" in h and not h.startswith(b" ")
                                                                 and h.isascii()), max_size=3),
                                    st.binary(max_size=200)), min_size=1, max_size=4))
    out = bytearray(draw(st.sampled_from([b"", b"preamble\r\n", b"\r\n"])))
    for i, (headers, content) in enumerate(parts):
        out += (b"\r\n" if i or out else b"") + d + draw(st.sampled_from([b"", b" ", b"\t "])) + b"\r\n"
        out += b"".join(h + b"\r\n" for h in headers) + b"\r\n" + content
    out += b"\r\n" + d + b"--" + draw(st.sampled_from([b"", b"\r\n", b"\r\nepilogue"]))
    return boundary, bytes(out), parts


@budget(1.0)
@given(bodies(), st.integers(1, 64))
def test_well_formed_bodies_round_trip_however_split(body, size: int) -> None:  # type: ignore[no-untyped-def]
    boundary, data, parts = body
    d = b"\r\n--" + boundary.encode()
    outcome = multipart_outcome(boundary, chunked(data, size))
    if any(d in b"\r\n" + content + b"\r\n" for _, content in parts) or any(d in h for hs, _ in parts for h in hs):
        return  # content that contains the delimiter is split there, by definition (RFC 2046 5.1.1)
    assert outcome[0] == "parts", "a well-formed body was refused"
    assert [c for _, _, c in outcome[1]] == [content for _, content in parts]
    assert outcome == multipart_outcome(boundary, [data])


@budget(0.5)
@given(mutants(SEEDS), st.integers(1, 97))
def test_mutated_bodies_same_however_split(data: bytes, size: int) -> None:
    from tests.fuzz.targets import BOUNDARY

    multipart_same_however_split(BOUNDARY, data, sizes=(size,))


# The limits' edges: a fuzzer does not reach 16 KiB header blocks or 64 KiB preambles by chance.
def _edge_body(boundary: str, preamble: int, padding: int, header: int) -> bytes:
    d = b"--" + boundary.encode()
    head = (b"X-Pad: " + b"a" * max(0, header - 7)) if header else b""
    return b"p" * preamble + (b"\r\n" if preamble else b"") + d + b" " * padding + b"\r\n" + head + b"\r\n\r\nx\r\n" + d + b"--\r\n"


@budget(0.25)
@given(st.sampled_from(["preamble", "padding", "header"]), st.integers(-6, 6), st.sampled_from([1, 509, 4096, 65536]))
def test_limit_edges_same_however_split(which: str, delta: int, size: int) -> None:
    edge = {"preamble": MAX_PREAMBLE_BYTES, "padding": 1024, "header": MAX_PART_HEADER_BYTES}[which]
    sizes = {"preamble": 0, "padding": 0, "header": 0} | {which: edge + delta}
    data = _edge_body("edge", sizes["preamble"], sizes["padding"], sizes["header"])
    multipart_same_however_split("edge", data, sizes=(size,))
