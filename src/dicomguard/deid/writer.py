"""Part 10 encoding of de-identified data sets, byte for byte as pydicom writes them (PS3.5 7.1, PS3.10 7.1).

A de-identified image is mostly elements exactly as they were read (pixel data,
geometry, acquisition) plus a few dozen short replaced values. pydicom's generic
writer spends several microseconds per element whatever its size; here raw
elements are copied as bytes and short ASCII text values are encoded directly,
which leaves pydicom only what needs it (numbers it decoded, non-ASCII text,
anything unusual). The result is identical to
``pydicom.dcmwrite(buffer, ds, enforce_file_format=True)``, which the tests check
on every kind of object they produce; big endian, deflated or re-encoded data
sets are simply handed to dcmwrite.
"""

from __future__ import annotations

import io
import struct
from typing import Final

import pydicom
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import PersonName

_UNDEFINED: Final = 0xFFFFFFFF
_CHARSET_TAG: Final = 0x00080005
_PIXEL_DATA: Final = 0x7FE00010
_TAG: Final = struct.Struct("<HH")
_UL: Final = struct.Struct("<L")
_US: Final = struct.Struct("<H")
_LONG_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
"""Explicit VRs with a reserved field and a 32-bit length (PS3.5 Table 7.1-1)."""
_ITEM: Final = b"\xfe\xff\x00\xe0"
_ITEM_DELIMITER: Final = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
_SEQUENCE_DELIMITER: Final = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_GROUP_LENGTH: Final = 0x00020000
_GROUP_LENGTH_HEAD: Final = b"\x02\x00\x00\x00UL\x04\x00"
_META_VERSION: Final = 0x00020001
_META_VERSION_BYTES: Final = b"\x02\x00\x01\x00OB\x00\x00\x02\x00\x00\x00\x00\x01"
_MEDIA: Final = (0x00020002, 0x00020003)
_IMPLEMENTATION_CLASS: Final = 0x00020012
_TEXT_VRS: Final = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
"""VRs whose ASCII values are encoded here exactly as pydicom would (join with backslash, pad to even)."""


def encode(ds: Dataset) -> bytes:
    """``ds`` with its ``file_meta`` as Part 10 bytes: 128-byte zero preamble, ``DICM``, meta, data set."""
    meta = ds.file_meta
    syntax = meta.get("TransferSyntaxUID")
    implicit = syntax == ImplicitVRLittleEndian
    head = _meta_bytes(ds, meta) if _fast_syntax(syntax) and _consistent(ds, implicit) else None
    if head is None:
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        return buffer.getvalue()
    parts = [b"\x00" * 128 + b"DICM", head]
    _encode_dataset(ds, implicit, default_encoding, parts, bool(UID(syntax).is_compressed))
    return b"".join(parts)


def _meta_bytes(ds: Dataset, meta: Dataset) -> bytes | None:
    """Group 0002 as dcmwrite(enforce_file_format=True) completes and writes it (PS3.10 7.1), or None."""
    if _IMPLEMENTATION_CLASS not in meta or any(e.tag >> 16 != 2 for e in meta.elements()):
        return None  # dcmwrite would add pydicom's implementation UID, or the meta is unusual: let it
    values = {e.tag: e for e in meta.elements() if e.tag not in (_GROUP_LENGTH, _META_VERSION, *_MEDIA)}
    parts = [_META_VERSION_BYTES]
    for tag, source in ((_MEDIA[0], ds.get_item(0x00080016)), (_MEDIA[1], ds.get_item(0x00080018))):
        if source is None:
            return None
        value = source.value
        if isinstance(value, bytes):
            value = value.decode("ascii").rstrip("\x00 ")
        values[tag] = DataElement(tag, "UI", value)
    for tag in sorted(values):
        encoded = _element(values[tag], False, default_encoding)
        if encoded is None:
            return None
        parts.append(encoded)
    body = b"".join(parts)
    return _GROUP_LENGTH_HEAD + _UL.pack(len(body)) + body


def _fast_syntax(syntax: str | None) -> bool:
    if syntax is None or syntax in (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian):
        return False
    uid = UID(syntax)
    return uid.is_transfer_syntax and not uid.is_private and uid.is_little_endian


def _consistent(ds: Dataset, implicit: bool) -> bool:
    """True if raw elements can be copied: read in the output's encoding and character set."""
    if ds.original_encoding not in ((implicit, True), (None, None)):
        return False
    charset = ds.get_item(_CHARSET_TAG)
    if charset is None:
        return True
    if charset.is_raw:
        return False  # a raw Specific Character Set means nothing decoded it yet: leave it to pydicom
    current = convert_encodings(charset.value or default_encoding)
    original = ds.original_character_set
    return not original or convert_encodings(original) == current


def _encode_dataset(
    ds: Dataset, implicit: bool, parent_encodings: str | list[str], parts: list[bytes], compressed: bool = False
) -> None:
    charset = ds.get_item(_CHARSET_TAG)
    encodings = charset.value if charset is not None and not charset.is_raw and charset.value else parent_encodings
    for tag in sorted(ds.keys()):
        if tag.element == 0 and tag.group > 6:
            continue  # retired group lengths are never written (PS3.5 7.2)
        elem = ds.get_item(tag)
        if elem.is_raw:
            encoded = _raw(elem, implicit) if isinstance(elem.value, bytes) else None
            if encoded is None:
                elem = ds[tag]
            else:
                parts.append(encoded)
                continue
        if tag == _PIXEL_DATA:
            elem.is_undefined_length = compressed  # as dcmwrite: encapsulated pixel data has undefined length
        encoded = _element(elem, implicit, encodings)
        if encoded is None:
            buffer = DicomBytesIO()
            buffer.is_implicit_VR, buffer.is_little_endian = implicit, True
            write_data_element(buffer, elem, encodings)
            encoded = buffer.getvalue()
        parts.append(encoded)


def _header(tag: int, vr: str | None, length: int, implicit: bool) -> bytes | None:
    head = _TAG.pack(tag >> 16, tag & 0xFFFF)
    if implicit:
        return head + _UL.pack(length)
    if vr is None or len(vr) != 2:
        return None
    if vr in _LONG_VRS:
        return head + vr.encode("ascii") + b"\x00\x00" + _UL.pack(length)
    if length <= 0xFFFF:
        return head + vr.encode("ascii") + _US.pack(length)
    return None


def _raw(elem: RawDataElement, implicit: bool) -> bytes | None:
    """A raw element in its own little endian encoding, or None to let pydicom write it."""
    value = elem.value
    assert isinstance(value, bytes)
    if elem.length == _UNDEFINED:
        head = _header(elem.tag, elem.VR, _UNDEFINED, implicit)
        return None if head is None else head + value + _SEQUENCE_DELIMITER
    head = _header(elem.tag, elem.VR, len(value), implicit)
    return None if head is None else head + value


def _element(elem: DataElement, implicit: bool, encodings: str | list[str]) -> bytes | None:
    vr = elem.VR
    if vr == "SQ":
        return _sequence(elem, implicit, encodings)
    if vr not in _TEXT_VRS or elem.is_buffered:
        return None
    value = elem.value
    if value is None or value == "":
        body = b""
    else:
        values = value if isinstance(value, MultiValue | list) else [value]
        texts = []
        for v in values:
            if not isinstance(v, str | PersonName):
                return None
            texts.append(str(v))
        text = "\\".join(texts)
        if not text.isascii():
            return None  # pydicom applies the character set and its escape sequences
        body = text.encode("ascii")
        if len(body) % 2:
            body += b"\x00" if vr == "UI" else b" "
    head = _header(elem.tag, vr, len(body), implicit)
    return None if head is None else head + body


def _sequence(elem: DataElement, implicit: bool, encodings: str | list[str]) -> bytes | None:
    value = elem.value
    if not isinstance(value, Sequence):
        return None
    items = []
    for item in value:
        if item.original_encoding not in ((implicit, True), (None, None)):
            return None  # this item would need re-encoding: pydicom does that
        content: list[bytes] = []
        _encode_dataset(item, implicit, encodings, content)
        body = b"".join(content)
        if getattr(item, "is_undefined_length_sequence_item", False):
            items.append(_ITEM + _UL.pack(_UNDEFINED) + body + _ITEM_DELIMITER)
        else:
            items.append(_ITEM + _UL.pack(len(body)) + body)
    body = b"".join(items)
    if elem.is_undefined_length:
        head = _header(elem.tag, "SQ", _UNDEFINED, implicit)
        return None if head is None else head + body + _SEQUENCE_DELIMITER
    head = _header(elem.tag, "SQ", len(body), implicit)
    return None if head is None else head + body
