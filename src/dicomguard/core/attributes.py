"""Validate a parsed header and extract what the index needs (PS3.3 C.7, PS3.4 C.6).

Validation (ingest step 3): SOP Class, SOP Instance, Study and Series Instance
UIDs must be present and well-formed (PS3.5 9.1: digits and dots, no leading
zeros in a component, at most 64 characters), and the File Meta Information
must name the same SOP Instance and Class as the data set (PS3.10 7.1), or a
file could be indexed under one identity and carry another.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.dataset import Dataset

from dicomguard.core.plain_values import plain_int as _plain_int
from dicomguard.core.plain_values import plain_text as _plain_text
from dicomguard.errors import RejectedObject, RejectReason

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


@dataclass(frozen=True)
class PatientAttributes:
    patient_id: str
    issuer: str
    name: str
    birth_date: str
    sex: str


@dataclass(frozen=True)
class StudyAttributes:
    uid: str
    date: str
    time: str
    accession_number: str
    study_id: str
    description: str
    referring_physician: str
    department: str = ""
    """Institutional Department Name (0008,1040) of the first object stored: a policy attribute."""


@dataclass(frozen=True)
class SeriesAttributes:
    uid: str
    modality: str
    number: int | None
    description: str
    date: str


@dataclass(frozen=True)
class InstanceAttributes:
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    number: int | None
    frames: int | None
    rows: int | None
    columns: int | None


@dataclass(frozen=True)
class ObjectAttributes:
    patient: PatientAttributes
    study: StudyAttributes
    series: SeriesAttributes
    instance: InstanceAttributes


def is_valid_uid(value: str) -> bool:
    return len(value) <= 64 and bool(_UID.match(value))


def year_of(date: str | None) -> int | None:
    """The year of a DA value (``YYYYMMDD``) when its first four characters are ASCII digits, else None.

    ``str.isdigit`` is not enough: superscript and other Unicode digits pass it and fail ``int``.
    """
    head = (date or "")[:4]
    return int(head) if len(head) == 4 and all("0" <= ch <= "9" for ch in head) else None


def department_from_header(value: str) -> str:
    """Institutional Department Name as a policy attribute: canonical upper case, single-spaced, at most 64 characters.

    Truncated after upper-casing, which can lengthen a value ("ß" becomes "SS"): any header value is usable. A space
    the cut leaves at the end is dropped, so the stored value is the one policies compare (``policy.engine``
    normalizes again) and a search's scope can compare the column itself (ADR 0019).
    """
    return " ".join(value.split()).upper()[:64].rstrip(" ")


def _text(ds: Dataset, keyword: str) -> str:
    plain = _plain_text(ds, keyword)
    if plain is not None:
        return plain
    try:
        value = ds.get(keyword)
    except Exception:  # a malformed value must not abort ingest of an otherwise valid object
        return ""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value).strip(" \x00")


_INT32 = range(-(2**31), 2**31)


def _int(ds: Dataset, keyword: str) -> int | None:
    """An IS/US value as indexed, or None when absent, unreadable or outside the 32-bit range IS allows (PS3.5 6.2)."""
    plain = _plain_int(ds, keyword)
    if plain is not None:
        return plain if plain in _INT32 else None
    text = _text(ds, keyword)
    try:
        value = int(float(text)) if text else None
    except (ValueError, OverflowError):
        return None
    return value if value is not None and value in _INT32 else None


def _uid(ds: Dataset, keyword: str) -> str:
    value = _text(ds, keyword)
    if not value:
        raise RejectedObject(RejectReason.MISSING_UID, f"{keyword} is missing")
    if not is_valid_uid(value):
        raise RejectedObject(RejectReason.INVALID_UID, f"{keyword} is not a valid UID")
    return value


def validate_and_extract(ds: Dataset, transfer_syntax: str) -> ObjectAttributes:
    """Check the identity of an object and extract its index attributes; raises :class:`RejectedObject`."""
    sop_class = _uid(ds, "SOPClassUID")
    sop_instance = _uid(ds, "SOPInstanceUID")
    study_uid = _uid(ds, "StudyInstanceUID")
    series_uid = _uid(ds, "SeriesInstanceUID")
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        meta_instance = _text(meta, "MediaStorageSOPInstanceUID")
        meta_class = _text(meta, "MediaStorageSOPClassUID")
        if (meta_instance and meta_instance != sop_instance) or (meta_class and meta_class != sop_class):
            raise RejectedObject(RejectReason.META_MISMATCH, "file meta information names another SOP Instance or Class")
    return ObjectAttributes(
        patient=PatientAttributes(
            patient_id=_text(ds, "PatientID"),
            issuer=_text(ds, "IssuerOfPatientID"),
            name=_text(ds, "PatientName"),
            birth_date=_text(ds, "PatientBirthDate"),
            sex=_text(ds, "PatientSex"),
        ),
        study=StudyAttributes(
            uid=study_uid,
            date=_text(ds, "StudyDate"),
            time=_text(ds, "StudyTime"),
            accession_number=_text(ds, "AccessionNumber"),
            study_id=_text(ds, "StudyID"),
            description=_text(ds, "StudyDescription"),
            referring_physician=_text(ds, "ReferringPhysicianName"),
            department=_text(ds, "InstitutionalDepartmentName")[:64],
        ),
        series=SeriesAttributes(
            uid=series_uid,
            modality=_text(ds, "Modality")[:16],
            number=_int(ds, "SeriesNumber"),
            description=_text(ds, "SeriesDescription"),
            date=_text(ds, "SeriesDate"),
        ),
        instance=InstanceAttributes(
            sop_instance_uid=sop_instance,
            sop_class_uid=sop_class,
            transfer_syntax=transfer_syntax,
            number=_int(ds, "InstanceNumber"),
            frames=_int(ds, "NumberOfFrames"),
            rows=_int(ds, "Rows"),
            columns=_int(ds, "Columns"),
        ),
    )
