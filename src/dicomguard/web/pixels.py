"""Headers and frames of a verified object (PS3.18 8.3.3.1 frame lists, 8.7.3 frame resources; PS3.5 A.4, A.5).

Everything here reads the bytes the core verified, through the verifying
walk's map of them (``RetrievedObject.structure``). The data set is parsed
where it lies: for the Deflated transfer syntax in the copy that walk inflated
(PS3.5 A.5), so one read inflates an object once, and values over
:data:`DEFER_BYTES` (Pixel Data above all) are read only when asked for.
Native frames are slices (memoryviews) of the verified data set, never copies;
encapsulated frames are cut by the Basic or Extended Offset Table or the
fragment structure (pydicom ``generate_frames``). Nothing is decoded or
re-encoded.
"""

from __future__ import annotations

import io
from typing import BinaryIO

from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag

from dicomguard.core.dicom_structure import EXPLICIT_VR_BE, PIXEL_TAGS
from dicomguard.core.retrieve import RetrievedObject
from dicomguard.errors import NotFoundError
from dicomguard.web.media import is_encapsulated

PIXEL_DATA = 0x7FE00010
DEFER_BYTES = 1024
"""Values longer than this are left in the verified bytes until read (see :func:`read_header`)."""


class FramesUnavailable(ValueError):
    """The object's frames cannot be served as separate frames (e.g. 1-bit frames that are not byte aligned)."""


def parse_frame_list(text: str, limit: int) -> list[int]:
    """``3,1,3`` -> ``[3, 1]``: the distinct frame numbers of a frame list (PS3.18 8.3.3.1), in first-seen order.

    Security property: a request costs what its *distinct* frames cost. A frame
    named twice is answered once (at its first position), and a list of more
    than ``limit`` distinct frames (``limits.max_frames_per_request``) is refused
    with :class:`ValueError` (a 400) before any object is read. The text itself
    is bounded by the HTTP request line. ValueError also for a malformed list.
    """
    items = text.split(",")
    if not all(i.isascii() and i.isdigit() and len(i) <= 9 for i in items):
        raise ValueError("frame list must be comma-separated frame numbers")
    numbers = list(dict.fromkeys(int(i) for i in items))
    if any(n < 1 for n in numbers):
        raise ValueError("frame numbers start at 1")
    if len(numbers) > limit:
        raise ValueError(f"a request may name at most {limit} distinct frames (limits.max_frames_per_request)")
    return numbers


def _data_set_file(obj: RetrievedObject) -> BinaryIO:
    """The verified data set as a file positioned at its first element, sharing (not copying) its bytes."""
    s = obj.structure
    if s.deflated:
        return io.BytesIO(s.dataset.obj)  # type: ignore[arg-type]  # bytes from the walk's inflation
    f = io.BytesIO(obj.data)
    f.seek(s.dataset_offset)
    return f


def _at_pixels(tag: BaseTag, vr: str | None, length: int) -> bool:
    return int(tag) in PIXEL_TAGS


def read_header(obj: RetrievedObject, *, pixels: bool = False) -> FileDataset:
    """pydicom's view of the verified data set, parsed in place (PS3.5 7; inflated once, by verification).

    Without ``pixels`` it stops at the Pixel Data element (frames, rendering);
    with it the whole data set is read (metadata, bulk data). Either way values
    over :data:`DEFER_BYTES` bytes are deferred: read from the verified bytes
    on first access, so reading a header never copies Pixel Data. (Encapsulated
    Pixel Data, of undefined length, cannot be deferred; it is read whole, once,
    bounded by the stored object.)
    """
    s = obj.structure
    little = s.transfer_syntax != EXPLICIT_VR_BE
    f = _data_set_file(obj)
    ds = read_dataset(f, s.implicit_vr, little, stop_when=None if pixels else _at_pixels, defer_size=DEFER_BYTES)
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = obj.transfer_syntax
    return FileDataset(f, ds, preamble=None, file_meta=meta, is_implicit_VR=s.implicit_vr, is_little_endian=little)


def frame_count(ds: Dataset) -> int:
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def has_pixel_data(obj: RetrievedObject) -> bool:
    return obj.structure.pixel_tag == PIXEL_DATA


def pixel_value(obj: RetrievedObject) -> memoryview:
    """The verified Pixel Data value (native: the pixels; encapsulated: the items, PS3.5 A.4), not copied."""
    s = obj.structure
    if s.pixel_range is None or s.pixel_tag != PIXEL_DATA:
        raise NotFoundError("the object has no pixel data")
    return s.dataset[s.pixel_range[0] : s.pixel_range[1]]


def pixel_file(obj: RetrievedObject) -> BinaryIO:
    """The verified data set as a file positioned at the Pixel Data value (for readers of encapsulated items)."""
    s = obj.structure
    if s.pixel_range is None or s.pixel_tag != PIXEL_DATA:
        raise NotFoundError("the object has no pixel data")
    f = _data_set_file(obj)
    f.seek(s.pixel_range[0], io.SEEK_CUR)
    return f


def frame_bytes(header: Dataset) -> int:
    """Bytes of one native frame; FramesUnavailable when frames are not byte aligned (PS3.5 8.1.1)."""
    bits = int(header.get("BitsAllocated", 8)) * int(header.get("Rows", 0)) * int(header.get("Columns", 0)) * int(header.get("SamplesPerPixel", 1))
    if bits <= 0 or bits % 8:
        raise FramesUnavailable("frames of this object are not byte aligned")
    return bits // 8


def extract_frames(obj: RetrievedObject, header: Dataset, numbers: list[int] | None) -> list[memoryview]:
    """The requested frames (1-based, distinct; None: all), in request order; NotFoundError if one is out of range.

    Native frames are views of the verified bytes (no copy). Encapsulated
    frames are copied once each, and only the requested ones: at most the
    encapsulated Pixel Data, whatever the list.
    """
    n = frame_count(header)
    if numbers is not None and any(k > n for k in numbers):
        raise NotFoundError("frame number out of range")
    if is_encapsulated(obj.transfer_syntax):
        offsets = None
        if "ExtendedOffsetTable" in header and "ExtendedOffsetTableLengths" in header:
            offsets = (header.ExtendedOffsetTable, header.ExtendedOffsetTableLengths)
        frames = generate_frames(pixel_file(obj), number_of_frames=n, extended_offsets=offsets)
        if numbers is None:
            return [memoryview(frame) for frame in frames]
        wanted = set(numbers)
        found: dict[int, memoryview] = {}
        for index, frame in enumerate(frames, 1):
            if index in wanted:
                found[index] = memoryview(frame)
                if len(found) == len(wanted):
                    break
        if len(found) != len(wanted):
            raise NotFoundError("frame number out of range")
        return [found[k] for k in numbers]
    pixels = pixel_value(obj)
    size = frame_bytes(header)
    if len(pixels) < n * size:
        raise NotFoundError("frame number out of range")
    return [pixels[(k - 1) * size : k * size] for k in (numbers if numbers is not None else range(1, n + 1))]
