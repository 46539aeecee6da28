"""The keys of one instance's directory records: what PS3.3 Annex F asks a DICOMDIR to say about it.

Each instance is described by four records, PATIENT -> STUDY -> SERIES ->
leaf (PS3.3 F.4, the four-level SOP classes). The leaf's record type follows
the SOP class (IMAGE, SR DOCUMENT, PRESENTATION, ...); pydicom 3's fileset
module holds that table and the key attributes of each leaf type, and is used
for both. The upper levels are built here from the PS3.3 F.5 key tables:

* PATIENT (F.5.1): Patient's Name (type 2), Patient ID (type 1);
* STUDY (F.5.2): Study Date, Study Time, Study ID (type 1), Study Description,
  Accession Number (type 2), Study Instance UID (type 1C: required, since a
  study record references no file);
* SERIES (F.5.3): Modality, Series Instance UID, Series Number (type 1).

The Directory Information attributes of each record (group 0004: offsets,
record type, the leaf's references to its file) are added by
:mod:`dicomguard.media.dicomdir`, which encodes them. The references come from
:class:`Hierarchy`, i.e. from the file's meta information (PS3.10 7.1), which is
what "in File" refers to.

Type 1 keys an object lacks: Patient ID, Study ID, Series Number and Instance
Number are given a medium-local value (``UNIDENTIFIED<n>``, the position in the
directory), as a viewer needs something to list; dates and times are left
empty rather than made up. The files themselves are never changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydicom import fileset as _fileset
from pydicom.dataset import Dataset

from dicomguard.media.errors import MediaError

# pydicom keeps the SOP class -> record type tables (PS3.3 F.4, Table F.4-1) behind two private functions;
# tests pin their answers, so a pydicom that drops them fails loudly instead of mislabelling records.
_leaf_type: Callable[[Dataset], str] = getattr(_fileset, "_four_level_record_type", lambda ds: "IMAGE")
_single_level_type: Callable[[Dataset], str] = getattr(_fileset, "_single_level_record_type", lambda ds: "PATIENT")


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """Where an instance sits: the keys that group it (patient, study, series) and its file's identity."""

    patient_key: tuple[str, ...]
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str


def hierarchy_of(header: Dataset) -> Hierarchy:
    """The grouping keys of an instance; :class:`MediaError` if it cannot sit in a patient/study/series tree.

    The patient is keyed by Patient ID and its issuer (PS3.11 requires one PATIENT
    record per Patient ID on a medium); without a Patient ID, by name and birth date.
    """
    meta = getattr(header, "file_meta", None) or Dataset()
    sop_uid = _text(meta.get("MediaStorageSOPInstanceUID")) or _text(header.get("SOPInstanceUID"))
    sop_class = _text(meta.get("MediaStorageSOPClassUID")) or _text(header.get("SOPClassUID"))
    syntax = _text(meta.get("TransferSyntaxUID"))
    if not sop_uid or not sop_class or not syntax:
        raise MediaError("file meta information lacks the SOP Class, SOP Instance or Transfer Syntax UID (PS3.10 7.1)",
                         sop_instance_uid=sop_uid or None)
    if _single_level_type(header) != "PATIENT":
        raise MediaError("a single-level SOP class (PS3.3 F.4) has no place on a study medium", sop_instance_uid=sop_uid)
    study_uid, series_uid = _text(header.get("StudyInstanceUID")), _text(header.get("SeriesInstanceUID"))
    if not study_uid or not series_uid:
        raise MediaError("no Study or Series Instance UID", sop_instance_uid=sop_uid)
    patient_id = _text(header.get("PatientID"))
    if patient_id:
        patient_key: tuple[str, ...] = ("id", patient_id, _text(header.get("IssuerOfPatientID")))
    else:
        patient_key = ("no-id", _text(header.get("PatientName")), _text(header.get("PatientBirthDate")))
    return Hierarchy(patient_key, study_uid, series_uid, sop_uid, sop_class, syntax)


def _keys(header: Dataset) -> Dataset:
    """A record's key attributes start from the header's character set (PS3.3 F.3.2.2: required when a key uses one)."""
    keys = Dataset()
    if "SpecificCharacterSet" in header:
        keys.SpecificCharacterSet = header.SpecificCharacterSet
    return keys


def patient_keys(header: Dataset, position: int) -> Dataset:
    """PATIENT keys (PS3.3 F.5.1); ``position`` (1-based) names a patient without Patient ID."""
    keys = _keys(header)
    keys.PatientName = header.get("PatientName")
    keys.PatientID = _text(header.get("PatientID")) or f"UNIDENTIFIED{position}"
    return keys


def study_keys(header: Dataset, position: int) -> Dataset:
    """STUDY keys (PS3.3 F.5.2); ``position`` (1-based, within the patient) stands in for a missing Study ID."""
    keys = _keys(header)
    keys.StudyDate = header.get("StudyDate")
    keys.StudyTime = header.get("StudyTime")
    keys.StudyDescription = header.get("StudyDescription")
    keys.StudyInstanceUID = header.StudyInstanceUID
    keys.StudyID = _text(header.get("StudyID")) or str(position)
    keys.AccessionNumber = header.get("AccessionNumber")
    return keys


def series_keys(header: Dataset, position: int) -> Dataset:
    """SERIES keys (PS3.3 F.5.3); ``position`` (1-based, within the study) stands in for a missing Series Number."""
    keys = _keys(header)
    keys.Modality = header.get("Modality")
    keys.SeriesInstanceUID = header.SeriesInstanceUID
    number = _present(header.get("SeriesNumber"))
    keys.SeriesNumber = position if number is None else number
    return keys


def leaf_keys(header: Dataset, position: int) -> tuple[str, Dataset]:
    """The instance's record type (by SOP class, PS3.3 F.4) and its keys (PS3.3 F.5, by pydicom's recorders).

    ``position`` (1-based, within the series) stands in for a missing Instance
    Number. An object that lacks another type 1 key of its record type (an SR
    without Completion Flag, say) still gets a record, with its Instance Number
    only: the medium stays browsable, and such keys cannot be invented.
    """
    record_type = _leaf_type(header)
    source = header
    if _present(header.get("InstanceNumber")) is None:
        # A new data set over the same (unconverted) elements: the caller's header is not modified.
        source = Dataset()
        for tag in header.keys():  # noqa: SIM118 - iterating a Dataset would convert every element
            source[tag] = header.get_item(tag)
        source.InstanceNumber = position
    try:
        keys = _fileset.DIRECTORY_RECORDERS[record_type](source)
    except (ValueError, KeyError, AttributeError, TypeError):
        keys = Dataset()
        keys.InstanceNumber = source.InstanceNumber
    if "SpecificCharacterSet" in header:
        keys.SpecificCharacterSet = header.SpecificCharacterSet
    return record_type, keys


def _present(value: Any) -> Any:
    """``value`` unless it is missing or empty (a type 1 key must have a value)."""
    if value is None or value == "" or (isinstance(value, list | tuple) and not value):
        return None
    return value


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()
