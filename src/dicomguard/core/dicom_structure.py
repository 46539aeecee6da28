"""Strict structural walk of a DICOM Part 10 file (PS3.10 section 7, PS3.5 section 7).

pydicom is deliberately lenient: a truncated file reads without error. Before
any byte is stored, this walker checks that every data element, item and
sequence of the file lies entirely inside the file, counts elements and
sequence depth against the configured limits, and locates the Pixel Data value
so that header and pixels can be hashed separately. It never converts values,
so it costs microseconds per element and no copies.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR

from dicomguard.config import LimitSettings
from dicomguard.errors import RejectedObject, RejectReason

PREAMBLE_BYTES = 128
PREFIX = b"DICM"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"

_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQ_END = 0xFFFEE0DD
# PS3.5 Table 7.1-1: VRs with a 2-byte reserved field and a 4-byte length.
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"})
# Pixel Data and its float variants (PS3.3 C.7.6.3, C.7.6.24).
PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_UID_CHARS = re.compile(r"[0-9.]+")


@dataclass(frozen=True)
class FileStructure:
    """Where things are in a validated Part 10 file.

    ``dataset`` is the data set's byte stream as encoded (inflated for the
    Deflated transfer syntax); ``pixel_range`` is the (start, end) of the
    Pixel Data *value* within it, or None when the object has no pixels.
    ``dataset_offset`` is where the data set starts within the file;
    ``implicit_vr`` says how its elements are encoded (as pydicom reads them).
    Readers of a verified object parse ``dataset`` instead of the file, so a
    Deflated object is inflated once per read, by the walk that verified it.
    """

    transfer_syntax: str
    dataset_offset: int
    dataset: memoryview
    pixel_range: tuple[int, int] | None
    element_count: int
    deflated: bool
    implicit_vr: bool = False
    pixel_tag: int | None = None
    """Which of :data:`PIXEL_TAGS` ``pixel_range`` belongs to."""


def _reject(reason: RejectReason, detail: str) -> RejectedObject:
    return RejectedObject(reason, detail)


class _Walker:
    def __init__(self, buf: memoryview, little: bool, implicit: bool, limits: LimitSettings) -> None:
        self.buf = buf
        self.limits = limits
        self.count = 0
        self.pixel_range: tuple[int, int] | None = None
        self.pixel_tag: int | None = None
        self.u16 = struct.Struct("<H" if little else ">H").unpack_from
        self.u32 = struct.Struct("<I" if little else ">I").unpack_from
        self.tag_le = struct.Struct("<HHI").unpack_from if little else struct.Struct(">HHI").unpack_from
        self.little = little
        self.implicit = implicit

    def _need(self, pos: int, n: int, end: int) -> None:
        if pos + n > end:
            raise _reject(RejectReason.TRUNCATED, f"element at offset {pos} runs past the end of its container")

    def elements(self, pos: int, end: int, depth: int, implicit: bool, until_delimiter: bool, top: bool) -> int:
        """Walk data elements in [pos, end); with ``until_delimiter`` stop after an Item Delimitation Item."""
        buf = self.buf
        while pos < end:
            self._need(pos, 8, end)
            group, elem, raw_len = self.tag_le(buf, pos)
            tag = (group << 16) | elem
            if tag == _ITEM_END:
                if not until_delimiter:
                    raise _reject(RejectReason.MALFORMED, f"unexpected item delimiter at offset {pos}")
                return pos + 8
            if tag in (_ITEM, _SEQ_END):
                raise _reject(RejectReason.MALFORMED, f"unexpected item tag at offset {pos}")
            self.count += 1
            if self.count > self.limits.max_elements:
                raise _reject(RejectReason.TOO_MANY_ELEMENTS, f"more than {self.limits.max_elements} data elements")
            if implicit:
                vr = None
                length = raw_len
                value_pos = pos + 8
            else:
                vr = bytes(buf[pos + 4 : pos + 6])
                if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
                    raise _reject(RejectReason.MALFORMED, f"invalid VR at offset {pos}")
                if vr in _LONG_VRS:
                    self._need(pos, 12, end)
                    length = self.u32(buf, pos + 8)[0]
                    value_pos = pos + 12
                else:
                    length = self.u16(buf, pos + 6)[0]
                    value_pos = pos + 8
            is_pixel = top and tag in PIXEL_TAGS
            if length == _UNDEFINED:
                if is_pixel and vr in (b"OB", b"OW", None):
                    pos = self._encapsulated(value_pos, end)
                    # The value is the items; the Sequence Delimitation Item closes it (PS3.5 A.4).
                    self.pixel_range, self.pixel_tag = (value_pos, pos - 8), tag
                    continue
                if vr not in (b"SQ", b"UN", None):
                    raise _reject(RejectReason.MALFORMED, f"undefined length on a {vr!r} element at offset {pos}")
                # PS3.5 6.2.2: an undefined-length UN is an implicit VR little endian sequence.
                inner_implicit = implicit or vr == b"UN"
                pos = self.sequence(value_pos, end, depth + 1, inner_implicit, undefined=True)
                continue
            self._need(value_pos, length, end)
            if is_pixel:
                self.pixel_range, self.pixel_tag = (value_pos, value_pos + length), tag
            else:
                if length > self.limits.max_element_bytes:
                    raise _reject(
                        RejectReason.ELEMENT_TOO_LARGE,
                        f"element ({group:04X},{elem:04X}) is {length} bytes (limit {self.limits.max_element_bytes})",
                    )
                if vr == b"SQ" or (vr is None and _is_sequence(tag)):
                    self.sequence(value_pos, value_pos + length, depth + 1, implicit, undefined=False)
            pos = value_pos + length
        if until_delimiter:
            raise _reject(RejectReason.TRUNCATED, "item without its delimiter")
        return pos

    def sequence(self, pos: int, end: int, depth: int, implicit: bool, undefined: bool) -> int:
        """Walk the items of a sequence (PS3.5 7.5)."""
        if depth > self.limits.max_sequence_depth:
            raise _reject(RejectReason.TOO_DEEP, f"sequences nested deeper than {self.limits.max_sequence_depth}")
        buf = self.buf
        while pos < end:
            self._need(pos, 8, end)
            group, elem, length = self.tag_le(buf, pos)
            tag = (group << 16) | elem
            if tag == _SEQ_END:
                if not undefined:
                    raise _reject(RejectReason.MALFORMED, f"sequence delimiter in a defined-length sequence at {pos}")
                return pos + 8
            if tag != _ITEM:
                raise _reject(RejectReason.MALFORMED, f"expected an item at offset {pos}")
            if length == _UNDEFINED:
                pos = self.elements(pos + 8, end, depth, implicit, until_delimiter=True, top=False)
            else:
                self._need(pos + 8, length, end)
                self.elements(pos + 8, pos + 8 + length, depth, implicit, until_delimiter=False, top=False)
                pos = pos + 8 + length
        if undefined:
            raise _reject(RejectReason.TRUNCATED, "sequence without its delimiter")
        return pos

    def _encapsulated(self, pos: int, end: int) -> int:
        """Walk encapsulated Pixel Data fragments (PS3.5 A.4) up to the Sequence Delimitation Item."""
        buf = self.buf
        while True:
            self._need(pos, 8, end)
            group, elem, length = self.tag_le(buf, pos)
            tag = (group << 16) | elem
            if tag == _SEQ_END:
                return pos + 8
            if tag != _ITEM or length == _UNDEFINED:
                raise _reject(RejectReason.MALFORMED, f"bad pixel data fragment at offset {pos}")
            self._need(pos + 8, length, end)
            pos += 8 + length


def _is_sequence(tag: int) -> bool:
    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:
        return False


def _file_meta(buf: memoryview, limits: LimitSettings) -> tuple[str, int]:
    """Walk the File Meta Information (PS3.10 7.1, always explicit VR little endian)."""
    walker = _Walker(buf, little=True, implicit=False, limits=limits)
    pos = PREAMBLE_BYTES + 4
    ts = None
    while True:
        if pos + 8 > len(buf):
            raise _reject(RejectReason.TRUNCATED, "file ends inside the file meta information")
        if struct.unpack_from("<H", buf, pos)[0] != 0x0002:
            break
        start = pos
        pos = walker.elements(pos, _meta_element_end(buf, pos), 0, False, False, False)
        if struct.unpack_from("<HH", buf, start) == (0x0002, 0x0010):
            ts = bytes(buf[start + 8 : pos]).rstrip(b"\x00 ").decode("ascii", "replace")
    if not ts:
        raise _reject(RejectReason.MALFORMED, "file meta information has no Transfer Syntax UID")
    if len(ts) > 64 or not _UID_CHARS.fullmatch(ts):
        raise _reject(RejectReason.MALFORMED, "Transfer Syntax UID is not a UID")
    return ts, pos


def _meta_element_end(buf: memoryview, pos: int) -> int:
    if pos + 8 > len(buf):
        raise _reject(RejectReason.TRUNCATED, "file meta information truncated")
    vr = bytes(buf[pos + 4 : pos + 6])
    if vr in _LONG_VRS:
        if pos + 12 > len(buf):
            raise _reject(RejectReason.TRUNCATED, "file meta information truncated")
        length = struct.unpack_from("<I", buf, pos + 8)[0]
        end = pos + 12 + length
    else:
        end = pos + 8 + struct.unpack_from("<H", buf, pos + 6)[0]
    if end > len(buf):
        raise _reject(RejectReason.TRUNCATED, "file meta information truncated")
    return end


def walk_part10(data: bytes | memoryview, limits: LimitSettings) -> FileStructure:
    """Check the structure of a Part 10 file and locate its Pixel Data.

    Raises :class:`RejectedObject` (truncated, malformed, over a limit) before
    anything is stored. The preamble's content is ignored here; the ingest
    pipeline zeroes it (CVE-2019-11687).
    """
    buf = memoryview(data)
    if len(buf) > limits.max_object_bytes:
        raise _reject(RejectReason.TOO_LARGE, f"object is {len(buf)} bytes (limit {limits.max_object_bytes})")
    if len(buf) < PREAMBLE_BYTES + 4 or bytes(buf[PREAMBLE_BYTES : PREAMBLE_BYTES + 4]) != PREFIX:
        raise _reject(RejectReason.NOT_DICOM, "not a DICOM Part 10 file (no 'DICM' prefix after the preamble)")
    ts, offset = _file_meta(buf, limits)
    dataset = buf[offset:]
    deflated = ts == DEFLATED_LE
    if deflated:
        dataset = memoryview(_inflate(dataset, limits))
    implicit = ts == IMPLICIT_VR_LE or (ts != EXPLICIT_VR_BE and _looks_implicit(dataset))
    walker = _Walker(dataset, little=ts != EXPLICIT_VR_BE, implicit=implicit, limits=limits)
    walker.elements(0, len(dataset), 0, implicit, until_delimiter=False, top=True)
    return FileStructure(ts, offset, dataset, walker.pixel_range, walker.count, deflated, implicit, walker.pixel_tag)


def indexed_structure(data: bytes | memoryview, transfer_syntax: str, dataset_offset: int | None,
                      pixel_range: tuple[int, int] | None) -> FileStructure | None:
    """The structure of a stored object from the layout its walk recorded at ingest, or None to walk it again.

    For reading verified objects only: the caller has authenticated ``data`` (AES-GCM) and then
    hashes header and pixels over exactly these ranges, and the header digest covers every data
    set byte outside the pixel range, so a layout that was altered in the index yields a digest
    mismatch, never different bytes. A layout that does not fit the object (outside it, no Pixel
    Data tag in front of the range), a Deflated object and a row without a layout (stored before
    the layout was recorded) are walked. ``element_count`` is 0: nothing was counted.
    """
    if dataset_offset is None or transfer_syntax == DEFLATED_LE:
        return None
    buf = memoryview(data)
    if not PREAMBLE_BYTES + 4 <= dataset_offset <= len(buf):
        return None
    dataset = buf[dataset_offset:]
    implicit = transfer_syntax == IMPLICIT_VR_LE or (transfer_syntax != EXPLICIT_VR_BE and _looks_implicit(dataset))
    pixel_tag = None
    if pixel_range is not None:
        start, end = pixel_range
        tag_at = start - (8 if implicit else 12)
        if not (0 <= tag_at and start <= end <= len(dataset)):
            return None
        group, elem = struct.unpack_from(">HH" if transfer_syntax == EXPLICIT_VR_BE else "<HH", dataset, tag_at)
        pixel_tag = (group << 16) | elem
        if pixel_tag not in PIXEL_TAGS:
            return None
    return FileStructure(transfer_syntax, dataset_offset, dataset, pixel_range, 0, False, implicit, pixel_tag)


def _looks_implicit(dataset: memoryview) -> bool:
    """A data set labelled explicit VR whose first element has no VR is encoded implicit.

    Some modalities write such files; pydicom reads them the same way, so the
    walk must agree with pydicom on where elements are.
    """
    if len(dataset) < 6:
        return False
    vr = bytes(dataset[4:6])
    return not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90)


RATIO_FLOOR_BYTES = 1024 * 1024
"""Inflated sizes up to this are never refused for their ratio: they cannot amplify (a small header deflates well)."""
_IN_CHUNK = 64 * 1024
_OUT_CHUNK = 1024 * 1024


def _inflate(raw: memoryview, limits: LimitSettings) -> bytes:
    """Inflate a Deflated Explicit VR Little Endian data set (PS3.5 A.5), bounded in size and in ratio.

    Security property: the allowance is ``min(max_inflated_bytes,
    max(max_inflation_ratio x deflated size, RATIO_FLOOR_BYTES))``. A first
    pass counts the inflated size in chunks of 1 MiB, keeping nothing, and
    stops as soon as the count passes the allowance: a Deflate bomb (about
    1000:1) is refused as ``too-large``, naming the limit it broke, after at
    most its allowance in CPU and 1 MiB of memory. Only an object within its
    allowance is inflated, once, into a buffer of exactly its size (no
    intermediate copies). Reads of stored objects inflate what ingest accepted.
    """
    allowed = min(limits.max_inflated_bytes, max(limits.max_inflation_ratio * len(raw), RATIO_FLOOR_BYTES))
    try:
        size = _inflated_size(raw, allowed)
        if size is None:
            if allowed == limits.max_inflated_bytes:
                detail = f"inflated data set exceeds {allowed} bytes (limits.max_inflated_bytes)"
            else:
                detail = f"{len(raw)} deflated bytes inflate more than {limits.max_inflation_ratio} times (limits.max_inflation_ratio)"
            raise _reject(RejectReason.TOO_LARGE, detail)
        out = zlib.decompress(raw, -zlib.MAX_WBITS, max(size, 1))
    except zlib.error as exc:
        raise _reject(RejectReason.MALFORMED, f"deflated data set does not inflate: {exc}") from exc
    if len(out) != size:
        raise _reject(RejectReason.MALFORMED, "deflated data set does not inflate consistently")
    return out


def _inflated_size(raw: memoryview, allowed: int) -> int | None:
    """The inflated size of a raw Deflate stream (RFC 1951), or None once it passes ``allowed``; output is discarded."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    size = 0
    for start in range(0, len(raw), _IN_CHUNK):
        data: bytes | memoryview = raw[start : start + _IN_CHUNK]
        while data and not inflater.eof:
            size += len(inflater.decompress(data, _OUT_CHUNK))
            if size > allowed:
                return None
            data = inflater.unconsumed_tail
        if inflater.eof:
            return size
    while not inflater.eof:  # all input given; output may still be pending
        more = inflater.decompress(b"", _OUT_CHUNK)
        if not more:
            raise zlib.error("incomplete or truncated stream")
        size += len(more)
        if size > allowed:
            return None
    return size
