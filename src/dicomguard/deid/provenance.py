"""What a de-identified object says about its de-identification (PS3.15 E.1.1 step 6, PS3.3 C.7.1.1).

Every output carries Patient Identity Removed = ``YES``, a De-identification Method
text naming the profile and the options, the De-identification Method Code Sequence
with one code of PS3.16 CID 7050 per profile and option applied, and Longitudinal
Temporal Information Modified (PS3.15 E.3.6) saying what happened to dates. A
recipient can therefore tell from the object alone what it may and may not contain.
"""

from __future__ import annotations

import copy
import io
from typing import Final

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from dicomguard.deid.options import Option

BASIC_PROFILE_CODE: Final = ("113100", "Basic Application Confidentiality Profile")

OPTION_CODES: Final[dict[Option, tuple[str, str]]] = {
    # PS3.16 CID 7050 "De-identification Method", coding scheme DCM.
    Option.CLEAN_PIXEL_DATA: ("113101", "Clean Pixel Data Option"),
    Option.CLEAN_GRAPHICS: ("113103", "Clean Graphics Option"),
    Option.CLEAN_STRUCTURED_CONTENT: ("113104", "Clean Structured Content Option"),
    Option.CLEAN_DESCRIPTORS: ("113105", "Clean Descriptors Option"),
    Option.RETAIN_LONGITUDINAL_FULL_DATES: ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    Option.RETAIN_LONGITUDINAL_MODIFIED_DATES: (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    Option.RETAIN_PATIENT_CHARACTERISTICS: ("113108", "Retain Patient Characteristics Option"),
    Option.RETAIN_DEVICE_IDENTITY: ("113109", "Retain Device Identity Option"),
    Option.RETAIN_UIDS: ("113110", "Retain UIDs Option"),
    Option.RETAIN_SAFE_PRIVATE: ("113111", "Retain Safe Private Option"),
    Option.RETAIN_INSTITUTION_IDENTITY: ("113112", "Retain Institution Identity Option"),
}
"""113102 (Clean Recognizable Visual Features) is not claimed: dicomguard does not de-face."""

METHOD_TEXT: Final = "DICOMGUARD PS3.15 BASIC APPLICATION CONFIDENTIALITY PROFILE"


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


def temporal_status(options: frozenset[Option]) -> str:
    """Longitudinal Temporal Information Modified (0028,0303) for this option set."""
    if Option.RETAIN_LONGITUDINAL_FULL_DATES in options:
        return "UNMODIFIED"
    if Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in options:
        return "MODIFIED"
    return "REMOVED"


def attributes(options: frozenset[Option]) -> Dataset:
    """The de-identification attributes for this option set, as a data set of their own."""
    ordered = sorted(options, key=lambda o: OPTION_CODES[o][0])
    ds = Dataset()
    ds.PatientIdentityRemoved = "YES"
    # LO is at most 64 characters per value, hence one value per option (VM 1-n).
    ds.DeidentificationMethod = [METHOD_TEXT, *(o.value for o in ordered)]
    ds.DeidentificationMethodCodeSequence = Sequence(
        [_code(*BASIC_PROFILE_CODE), *(_code(*OPTION_CODES[o]) for o in ordered)]
    )
    ds.LongitudinalTemporalInformationModified = temporal_status(options)
    return ds


class Provenance:
    """The attributes of one option set, encoded once per encoding and added to every output as raw elements.

    They are the same for every object of a run; building their code sequence item by
    item for each object would cost more than de-identifying most of its header.
    """

    def __init__(self, options: frozenset[Option]) -> None:
        self._attributes = attributes(options)
        self._encoded: dict[tuple[bool, bool], dict[BaseTag, RawDataElement]] = {}

    def _elements(self, implicit: bool, little: bool) -> dict[BaseTag, RawDataElement]:
        elements = self._encoded.get((implicit, little))
        if elements is None:
            buffer = DicomBytesIO()
            buffer.is_implicit_VR, buffer.is_little_endian = implicit, little
            write_dataset(buffer, copy.deepcopy(self._attributes))
            parsed = read_dataset(io.BytesIO(buffer.getvalue()), implicit, little)
            elements = {elem.tag: elem for elem in parsed.elements() if isinstance(elem, RawDataElement)}
            self._encoded[(implicit, little)] = elements
        return elements

    def record(self, ds: Dataset) -> None:
        """Set the de-identification attributes on ``ds``, replacing any earlier ones."""
        implicit, little = ds.original_encoding
        if implicit is None or little is None:
            for elem in self._attributes.elements():
                ds[elem.tag] = copy.deepcopy(elem)
            return
        for tag, elem in self._elements(implicit, little).items():
            ds[tag] = elem
