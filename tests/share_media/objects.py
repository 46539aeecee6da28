"""Synthetic objects and archive helpers for the media tests (fake PHI from tests/dicom_factory)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from dicomguard.media import StudyMedia
from tests.dicom_factory import ALICE, FakePatient, _base, to_bytes

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"
GRAYSCALE_PS = "1.2.840.10008.5.1.4.1.1.11.1"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def sr_document(patient: FakePatient = ALICE, *, complete: bool = True) -> bytes:
    """A Basic Text SR; without ``complete`` it lacks Completion Flag (a type 1 key of its record)."""
    ds = _base(patient, BASIC_TEXT_SR, "SR", generate_uid(), generate_uid())
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = "20240305", "103000"
    ds.VerificationFlag = "UNVERIFIED"
    if complete:
        ds.CompletionFlag = "COMPLETE"
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic Imaging Report")])
    return to_bytes(ds)


def key_object(patient: FakePatient = ALICE) -> bytes:
    ds = _base(patient, KEY_OBJECT_SELECTION, "KO", generate_uid(), generate_uid())
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = "20240305", "103000"
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code("113000", "DCM", "Of Interest")])
    return to_bytes(ds)


def presentation_state(patient: FakePatient = ALICE) -> bytes:
    ds = _base(patient, GRAYSCALE_PS, "PR", generate_uid(), generate_uid())
    ds.InstanceNumber = 1
    ds.PresentationCreationDate, ds.PresentationCreationTime = "20240305", "104000"
    ds.ContentLabel = "ANNOTATION"
    return to_bytes(ds)


def header(data: bytes) -> Dataset:
    return dcmread(io.BytesIO(data), stop_before_pixels=True)


def sop_uid(data: bytes) -> str:
    return str(header(data).SOPInstanceUID)


def stream_all(objects: Iterable[bytes | memoryview], **options: object) -> tuple[bytes, StudyMedia]:
    """The whole archive as bytes, and the medium (for its File IDs)."""
    media = StudyMedia(**options)  # type: ignore[arg-type]
    return b"".join(bytes(chunk) for chunk in media.stream(objects)), media


def members(archive: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        assert z.testzip() is None
        return {name: z.read(name) for name in z.namelist()}


def extract(archive: bytes, folder: Path) -> Path:
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        z.extractall(folder)
    return folder


def chunks_until_error(stream: Iterator[bytes | memoryview]) -> tuple[bytes, BaseException | None]:
    """What a consumer received before the stream raised, and the exception."""
    received = bytearray()
    try:
        for chunk in stream:
            received += chunk
    except Exception as exc:
        return bytes(received), exc
    return bytes(received), None
