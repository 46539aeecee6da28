"""A large object streams with about one object in memory: the stream holds no previous object, nor do its chunks."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from dicomguard.media import StudyMedia
from tests.dicom_factory import ALICE, US_MULTIFRAME, to_bytes

FRAMES, ROWS, COLUMNS = 42, 600, 800  # RGB: 60.5 MB of pixel data
UID_ROOT = "1.2.826.0.1.3680043.8.498."
COPIES = 3


def uid(n: int) -> str:
    return UID_ROOT + str(10**37 + n)  # fixed length (64): a copy differs from the template in place


@pytest.fixture(scope="module")
def template() -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = UID(US_MULTIFRAME)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = UID(uid(0))
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PatientName, ds.PatientID = ALICE.name, ALICE.patient_id
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = uid(10**30), uid(2 * 10**30), "US"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "20240305", "101500", "1", 1, 1
    ds.NumberOfFrames, ds.Rows, ds.Columns = FRAMES, ROWS, COLUMNS
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = np.random.default_rng(7).integers(0, 255, FRAMES * ROWS * COLUMNS * 3, dtype=np.uint8).tobytes()
    return to_bytes(ds)


def copies(template: bytes, count: int) -> Iterator[bytes]:
    """``count`` distinct cines, each made only when asked for (and not kept here)."""
    head = 2048  # the UIDs are in the first few hundred bytes
    old = uid(0).encode()
    for n in range(1, count + 1):
        yield b"".join([template[:head].replace(old, uid(n).encode()), memoryview(template)[head:]])


def test_one_object_at_a_time(template: bytes) -> None:
    size = len(template)
    assert size > 60_000_000
    media = StudyMedia()
    received = 0
    tracemalloc.start()
    try:
        for chunk in media.stream(copies(template, COPIES)):
            received += len(chunk)  # the usual consumer: it holds the last chunk while asking for the next
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert media.complete and media.payload_bytes == COPIES * size and received == media.total_bytes
    # One object (made by ``copies``) plus small change; holding a second one would be >= 2 x size.
    assert peak < 1.25 * size, f"peak {peak / 1e6:.1f} MB for objects of {size / 1e6:.1f} MB"
