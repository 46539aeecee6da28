"""A received C-STORE data set as a Part 10 file (PS3.10 7.1), its File Meta Information written directly.

pynetdicom's ``Event.encoded_dataset`` builds the File Meta Information as a pydicom data set and writes it
with pydicom's writer: about as costly, per object, as everything else pynetdicom does for a C-STORE. The
group holds seven elements of known VRs, so it is written here, byte for byte what pynetdicom writes (the
same elements and values, Explicit VR Little Endian, PS3.10 7.1; compared in the tests).
"""

from __future__ import annotations

import struct

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

_PREAMBLE_AND_PREFIX = bytes(128) + b"DICM"
_SHORT = struct.Struct("<HH2sH")
"""Explicit VR element header with a 2-byte length: group, element, VR, length (PS3.5 7.1.2)."""
_LONG = struct.Struct("<HH2s2xI")
"""Explicit VR element header with reserved bytes and a 4-byte length (OB, PS3.5 Table 7.1-1)."""


def _short(element: int, vr: bytes, value: bytes) -> bytes:
    return _SHORT.pack(0x0002, element, vr, len(value)) + value


def _text(value: str, padding: bytes) -> bytes:
    raw = value.encode("ascii")
    return raw + padding if len(raw) % 2 else raw


def file_meta_information(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """The File Meta Information group (without preamble and prefix) pynetdicom writes for a received object."""
    body = b"".join((
        _LONG.pack(0x0002, 0x0001, b"OB", 2) + b"\x00\x01",
        _short(0x0002, b"UI", _text(sop_class_uid, b"\x00")),
        _short(0x0003, b"UI", _text(sop_instance_uid, b"\x00")),
        _short(0x0010, b"UI", _text(transfer_syntax, b"\x00")),
        _short(0x0012, b"UI", _text(PYNETDICOM_IMPLEMENTATION_UID, b"\x00")),
        _short(0x0013, b"SH", _text(PYNETDICOM_IMPLEMENTATION_VERSION, b" ")),
    ))
    return _short(0x0000, b"UL", struct.pack("<I", len(body))) + body


def received_part10(event) -> bytes:  # type: ignore[no-untyped-def]
    """A C-STORE request's data set with preamble, prefix and File Meta Information: ``event.encoded_dataset()``."""
    request = event.request
    meta = file_meta_information(request.AffectedSOPClassUID, request.AffectedSOPInstanceUID, event.context.transfer_syntax)
    return b"".join((_PREAMBLE_AND_PREFIX, meta, request.DataSet.getvalue()))
