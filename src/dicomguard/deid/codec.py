"""Reading and writing DICOM Part 10 bytes for de-identification, failing closed (PS3.10 7.1).

pydicom reads what it can: a file cut short at an element boundary, or inside an
undefined-length sequence, comes back as a smaller data set without any error.
For de-identification that is a silent failure: the object released would not be
the object that was asked for. :func:`read_object` therefore checks that the
elements it got account for every byte of the input, that an image object still
has its pixel data, and refuses anything else with
:class:`~dicomguard.deid.errors.DeidRefused`. What no reader can see is a non-image
object (an SR, say) cut exactly at an element boundary: it is well-formed, only
shorter. Transfers that must be complete need a digest from the sender.
"""

from __future__ import annotations

import io
from typing import Final

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from dicomguard.deid import writer
from dicomguard.deid.errors import DeidRefused

_UNDEFINED: Final = 0xFFFFFFFF
_DELIMITER_BYTES: Final = 8
"""A sequence or item delimitation item: tag and a zero length (PS3.5 7.5)."""
_PIXEL_TAGS: Final = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_BIG_ENDIAN: Final = "1.2.840.10008.1.2.2"
_NATIVE_SYNTAXES: Final = frozenset(
    {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}
)


def read_object(data: bytes) -> Dataset:
    """Parse a Part 10 object, or raise :class:`DeidRefused` naming what is wrong with it."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except InvalidDicomError:
        raise DeidRefused("not a DICOM Part 10 object (no DICM prefix or file meta information)") from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many error types on damaged input; all mean refuse
        raise DeidRefused(f"unreadable DICOM object ({type(exc).__name__})") from None
    if len(ds) == 0:
        raise DeidRefused("truncated DICOM object: no data set after the file meta information")
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    _check_complete(ds, len(data), syntax)
    if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
        raise DeidRefused("DICOM object without SOP Class UID or SOP Instance UID")
    if _is_image_class(_text(ds, 0x00080016)) and not any(tag in ds for tag in _PIXEL_TAGS):
        # The one truncation the byte count cannot see: a file cut at an element boundary before the pixels.
        raise DeidRefused("truncated DICOM object: an image object without pixel data")
    if syntax in _NATIVE_SYNTAXES:
        _check_native_pixels(ds, little=syntax != _BIG_ENDIAN)
    return ds


def _is_image_class(sop_class: str) -> bool:
    return "Image Storage" in UID(sop_class).name


# Values are read from the raw bytes where possible: decoding an element through pydicom replaces the
# raw element in the data set, and raw elements are what de-identification copies (and writes) cheaply.
def _text(ds: Dataset, tag: int) -> str:
    elem = ds.get_item(tag)
    if elem is None:
        return ""
    value = elem.value
    if isinstance(value, bytes):
        return value.decode("latin-1").strip("\x00 ")
    return "" if value is None else str(value)


def _uint(ds: Dataset, tag: int, little: bool, default: int) -> int:
    elem = ds.get_item(tag)
    if elem is None:
        return default
    value = elem.value
    if isinstance(value, bytes):
        if elem.VR in ("IS", "DS") or (elem.VR is None and len(value) != 2):
            return int(value.decode("ascii").strip("\x00 ") or default)
        return int.from_bytes(value[:2], "little" if little else "big")
    return default if value is None or value == "" else int(value)


def _check_complete(ds: Dataset, size: int, syntax: str) -> None:
    last = None
    for tag in sorted(ds.keys()):
        elem = ds.get_item(tag)
        raw = isinstance(elem, RawDataElement) and elem.value is not None
        if raw and elem.length != _UNDEFINED and len(elem.value) != elem.length:
            raise DeidRefused(f"truncated DICOM object: element ({tag.group:04X},{tag.element:04X}) is cut short")
        last = elem
    if not isinstance(last, RawDataElement) or syntax == DeflatedExplicitVRLittleEndian:
        return  # offsets are only meaningful for raw elements of a non-deflated stream
    end = last.value_tell + len(last.value or b"") + (_DELIMITER_BYTES if last.length == _UNDEFINED else 0)
    if end < size:
        raise DeidRefused("truncated or malformed DICOM object: bytes after the last complete data element")
    if end > size:
        raise DeidRefused("truncated DICOM object: the last data element is incomplete")
    if last.length == _UNDEFINED and not last.value:
        raise DeidRefused("truncated DICOM object: undefined-length element without content")


def _check_native_pixels(ds: Dataset, little: bool) -> None:
    if 0x00280010 not in ds or 0x00280011 not in ds:
        return
    try:
        rows, columns = _uint(ds, 0x00280010, little, 0), _uint(ds, 0x00280011, little, 0)
        bits = _uint(ds, 0x00280100, little, 0)
        samples = _uint(ds, 0x00280002, little, 1) or 1
        frames = _uint(ds, 0x00280008, little, 1) or 1
    except (TypeError, ValueError, UnicodeDecodeError):
        raise DeidRefused("malformed image pixel description (Rows, Columns, Bits Allocated)") from None
    if 0x7FE00010 not in ds:
        if 0x7FE00008 in ds or 0x7FE00009 in ds:
            return
        raise DeidRefused("truncated DICOM object: image attributes present but no pixel data")
    expected = (rows * columns * samples * frames * bits + 7) // 8
    raw = ds.get_item(0x7FE00010)
    length = len(raw.value or b"") if raw is not None else 0
    if length < expected:
        raise DeidRefused("truncated DICOM object: pixel data shorter than Rows x Columns x frames")


def write_object(ds: Dataset) -> bytes:
    """Encode a de-identified data set as Part 10 bytes (fresh preamble and file meta, PS3.15 E.1.1 step 7).

    Byte for byte what ``pydicom.dcmwrite(..., enforce_file_format=True)`` writes, but without
    passing unchanged elements one by one through pydicom's generic writer (:mod:`.writer`).
    """
    try:
        return writer.encode(ds)
    except Exception as exc:  # noqa: BLE001 - any encoder failure means nothing is released
        raise DeidRefused(f"the de-identified object could not be encoded ({type(exc).__name__})") from None
