"""Frames of a verified object's Pixel Data (PS3.5 A.4 encapsulation, PS3.18 8.7.3 frame resources).

Frames are cut from the bytes that passed verification in the core: native
Pixel Data by arithmetic on Rows x Columns x Samples x Bits Allocated, and
encapsulated Pixel Data by the Basic or Extended Offset Table or the fragment
structure (pydicom ``generate_frames``). Nothing is decoded or re-encoded.
"""

from __future__ import annotations

import io

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

from dicomguard.errors import NotFoundError
from dicomguard.web.media import is_encapsulated

MAX_FRAME_LIST = 10_000


class FramesUnavailable(ValueError):
    """The object's frames cannot be served as separate frames (e.g. 1-bit frames that are not byte aligned)."""


def read_dataset(data: bytes) -> Dataset:
    return dcmread(io.BytesIO(data))


def parse_frame_list(text: str) -> list[int]:
    """``1,3,5`` -> [1, 3, 5] (PS3.18 8.3.3.1 frame list); ValueError if malformed."""
    items = text.split(",")
    if not 0 < len(items) <= MAX_FRAME_LIST or not all(i.isdigit() and len(i) <= 9 for i in items):
        raise ValueError("frame list must be comma-separated frame numbers")
    numbers = [int(i) for i in items]
    if any(n < 1 for n in numbers):
        raise ValueError("frame numbers start at 1")
    return numbers


def frame_count(ds: Dataset) -> int:
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def extract_frames(ds: Dataset, transfer_syntax: str, numbers: list[int]) -> list[bytes]:
    """The requested frames (1-based), in request order; NotFoundError if a number is out of range."""
    if "PixelData" not in ds:
        raise NotFoundError("the object has no pixel data")
    n = frame_count(ds)
    if any(k > n for k in numbers):
        raise NotFoundError("frame number out of range")
    pixel_data: bytes = ds.PixelData
    if is_encapsulated(transfer_syntax):
        offsets = None
        if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
            offsets = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
        wanted = set(numbers)
        found: dict[int, bytes] = {}
        for index, frame in enumerate(generate_frames(pixel_data, number_of_frames=n, extended_offsets=offsets), 1):
            if index in wanted:
                found[index] = frame
                if len(found) == len(wanted):
                    break
        if len(found) != len(wanted):
            raise NotFoundError("frame number out of range")
        return [found[k] for k in numbers]
    bits = int(ds.get("BitsAllocated", 8)) * int(ds.get("Rows", 0)) * int(ds.get("Columns", 0)) * int(ds.get("SamplesPerPixel", 1))
    if bits <= 0 or bits % 8:
        raise FramesUnavailable("frames of this object are not byte aligned")
    size = bits // 8
    if len(pixel_data) < n * size:
        raise NotFoundError("frame number out of range")
    return [pixel_data[(k - 1) * size : k * size] for k in numbers]
