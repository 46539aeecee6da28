"""Structure-aware generation of Part 10 files for the structure walker's fuzz target (PS3.10 7, PS3.5 7).

Random bytes almost never get past the preamble and the file meta information,
so this module builds *abstract* data sets (elements, sequences of items,
encapsulated pixel data) that the strategy fills with hostile choices: any
tag (item and delimiter tags included), any VR (invalid ones too), lengths
that lie, undefined lengths where they are not allowed, missing delimiters,
deep nesting. :func:`encode` writes one in any transfer syntax, deflated too.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from hypothesis import strategies as st

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
TRANSFER_SYNTAXES = (EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE, DEFLATED_LE, JPEG_BASELINE)

UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"})
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


@dataclass(frozen=True)
class Element:
    tag: int
    vr: bytes | None  # None: no VR on the wire (implicit); in explicit encodings the walker must refuse it
    value: bytes
    length: int | None = None  # None: the true length; anything else is a lie (or 0xFFFFFFFF)


@dataclass(frozen=True)
class Item:
    children: tuple[Node, ...]
    undefined: bool
    delimited: bool = True  # an undefined-length item without its Item Delimitation Item when False
    length_delta: int = 0


@dataclass(frozen=True)
class Sequence:
    tag: int
    vr: bytes | None
    items: tuple[Item, ...]
    undefined: bool
    delimited: bool = True
    length_delta: int = 0


@dataclass(frozen=True)
class Encapsulated:
    tag: int
    vr: bytes | None
    fragments: tuple[bytes, ...]
    delimited: bool = True


Node = Element | Sequence | Encapsulated


def _tag(tag: int, e: str) -> bytes:
    return struct.pack(e + "HH", (tag >> 16) & 0xFFFF, tag & 0xFFFF)


def _head(tag: int, vr: bytes | None, length: int, e: str, implicit: bool) -> bytes:
    length &= 0xFFFFFFFF
    if implicit or vr is None:
        return _tag(tag, e) + struct.pack(e + "I", length)
    if vr in LONG_VRS:
        return _tag(tag, e) + vr + b"\0\0" + struct.pack(e + "I", length)
    return _tag(tag, e) + vr + struct.pack(e + "H", length & 0xFFFF)


def _item_tag(tag: int, length: int, e: str) -> bytes:
    return _tag(tag, e) + struct.pack(e + "I", length & 0xFFFFFFFF)


def encode_nodes(nodes: tuple[Node, ...] | list[Node], *, little: bool = True, implicit: bool = False) -> bytes:
    """The data elements, in the order given (the walker does not require ascending tags)."""
    e = "<" if little else ">"
    out = bytearray()
    for node in nodes:
        if isinstance(node, Element):
            out += _head(node.tag, node.vr, len(node.value) if node.length is None else node.length, e, implicit) + node.value
        elif isinstance(node, Sequence):
            body = bytearray()
            # PS3.5 6.2.2: the items of an undefined-length UN are implicit VR little endian.
            inner_implicit = implicit or (node.vr == b"UN" and node.undefined)
            for item in node.items:
                inner = encode_nodes(item.children, little=little, implicit=inner_implicit)
                if item.undefined:
                    body += _item_tag(ITEM, UNDEFINED, e) + inner + (_item_tag(ITEM_END, 0, e) if item.delimited else b"")
                else:
                    body += _item_tag(ITEM, len(inner) + item.length_delta, e) + inner
            if node.undefined:
                out += _head(node.tag, node.vr, UNDEFINED, e, implicit) + body + (_item_tag(SEQ_END, 0, e) if node.delimited else b"")
            else:
                out += _head(node.tag, node.vr, len(body) + node.length_delta, e, implicit) + body
        else:
            out += _head(node.tag, node.vr, UNDEFINED, e, implicit)
            for fragment in node.fragments:
                out += _item_tag(ITEM, len(fragment), e) + fragment
            if node.delimited:
                out += _item_tag(SEQ_END, 0, e)
    return bytes(out)


def _meta_element(tag: int, vr: bytes, value: bytes) -> bytes:
    return _head(tag, vr, len(value), "<", False) + value


def _ui(uid: str) -> bytes:
    raw = uid.encode("latin-1")
    return raw + (b"\0" if len(raw) % 2 else b"")


def part10(dataset: bytes, transfer_syntax: str, *, preamble: bytes = b"", sop_uid: str = "1.2.3.4.5") -> bytes:
    """A Part 10 file: preamble, ``DICM``, file meta information (PS3.10 7.1), then the data set as given.

    With the Deflated transfer syntax the data set is deflated here (PS3.5 A.5), as a sender would.
    """
    meta = b"".join([
        _meta_element(0x00020001, b"OB", b"\x00\x01"),
        _meta_element(0x00020002, b"UI", _ui(CT_IMAGE)),
        _meta_element(0x00020003, b"UI", _ui(sop_uid)),
        _meta_element(0x00020010, b"UI", _ui(transfer_syntax)),
    ])
    meta = _meta_element(0x00020000, b"UL", struct.pack("<I", len(meta))) + meta
    if transfer_syntax == DEFLATED_LE:
        packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        dataset = packer.compress(dataset) + packer.flush()
    return preamble.ljust(128, b"\0")[:128] + b"DICM" + meta + dataset


def encode(nodes: tuple[Node, ...] | list[Node], transfer_syntax: str) -> bytes:
    return part10(encode_nodes(nodes, little=transfer_syntax != EXPLICIT_BE, implicit=transfer_syntax == IMPLICIT_LE), transfer_syntax)


# -- the strategy ---------------------------------------------------------------------------------

# Clean choices (a well-formed data set, so that the walk gets deep and accepted structures are checked) and hostile
# ones: tags the walker treats specially (items and delimiters where an element is expected, Pixel Data), any 32-bit
# tag, invalid or missing VRs, lying lengths, undefined lengths where they are not allowed, missing delimiters.
_ORDINARY_TAGS = st.sampled_from([
    0x00080016, 0x00080018, 0x00100010, 0x00100020, 0x0020000D, 0x00280010,  # ordinary
    0x00091010,  # private
])
_SQ_TAGS = st.sampled_from([0x00081115, 0x00081199, 0x00400275])  # sequences in the dictionary (implicit VR needs it)
_SPECIAL_TAGS = st.sampled_from([0x7FE00010, 0x7FE00008, 0x7FE00009, ITEM, ITEM_END, SEQ_END, 0x00020010, 0x00091020])
_VALID_VRS = st.sampled_from([b"UI", b"PN", b"LO", b"US", b"UL", b"OB", b"OW", b"OF", b"UT", b"SV"])
_PIXEL_TAGS = st.sampled_from([0x7FE00010, 0x7FE00008, 0x7FE00009])
_CLEAN = {
    "tag": _ORDINARY_TAGS, "vr": _VALID_VRS, "length": st.none(), "delta": st.just(0), "delimited": st.just(True),
    "seq_tag": _SQ_TAGS, "seq_vr": st.sampled_from([b"SQ", b"SQ", b"UN"]), "pixel_vr": st.sampled_from([b"OB", b"OW"]),
}
_HOSTILE = {
    "tag": st.one_of(_ORDINARY_TAGS, _SQ_TAGS, _SPECIAL_TAGS, st.integers(0, 0xFFFFFFFF)),
    "vr": st.one_of(_VALID_VRS, st.sampled_from([b"SQ", b"UN", None]), st.binary(min_size=2, max_size=2)),
    "length": st.one_of(st.none(), st.none(), st.sampled_from([0, 1, 0xFFFF, 0x7FFFFFFF, UNDEFINED]), st.integers(0, 64)),
    "delta": st.sampled_from([0, 0, 0, -1, 1, -8, 8, 1 << 20]), "delimited": st.sampled_from([True, True, False]),
    "seq_tag": st.one_of(_SQ_TAGS, _SPECIAL_TAGS, _ORDINARY_TAGS), "seq_vr": st.sampled_from([b"SQ", b"UN", None, b"OB", b"UI"]),
    "pixel_vr": st.sampled_from([b"OB", b"OW", None, b"UN"]),
}


def nodes(hostile: bool = True, max_leaves: int = 12) -> st.SearchStrategy[tuple[Node, ...]]:
    """A data set: a few elements, sequences nested to any depth (depth limits are tested), encapsulated pixels."""
    c = _HOSTILE if hostile else _CLEAN
    element = st.builds(Element, c["tag"], c["vr"], st.binary(max_size=24).map(lambda v: v + b"\0" * (len(v) % 2)), c["length"])
    encapsulated = st.builds(Encapsulated, _PIXEL_TAGS, c["pixel_vr"], st.lists(st.binary(max_size=16), max_size=3).map(tuple),
                             c["delimited"])

    def extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
        item = st.builds(Item, st.lists(children, max_size=4).map(tuple), st.booleans(), c["delimited"], c["delta"])
        return st.builds(Sequence, c["seq_tag"], c["seq_vr"], st.lists(item, max_size=3).map(tuple), st.booleans(),
                         c["delimited"], c["delta"])

    leaf = element | element | encapsulated if hostile else element  # clean: Pixel Data only at the top level, last
    node = st.recursive(leaf, extend, max_leaves=max_leaves)
    if hostile:
        return st.lists(node, max_size=6).map(tuple)
    return st.tuples(st.lists(node, max_size=5), st.lists(encapsulated, max_size=1)).map(lambda t: tuple(t[0] + t[1]))


@st.composite
def part10_files(draw: st.DrawFn) -> bytes:
    """A Part 10 file built from a random data set, clean or hostile, in a random transfer syntax (or a bogus one)."""
    hostile = draw(st.booleans())
    ts = draw(st.sampled_from(TRANSFER_SYNTAXES) if not hostile else
              st.one_of(st.sampled_from(TRANSFER_SYNTAXES), st.sampled_from(["", "1.2.840.10008.1.2.1\x80", "1" * 70, "a.b"])))
    little = ts != EXPLICIT_BE
    # The encoding the label says; sometimes not, when hostile (a file labelled explicit VR but written implicit exists).
    implicit = (ts == IMPLICIT_LE) != (hostile and draw(st.booleans()))
    data = encode_nodes(draw(nodes(hostile)), little=little, implicit=implicit)
    return part10(data, ts, preamble=draw(st.binary(max_size=8)))
