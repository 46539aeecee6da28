"""Header values read straight from their bytes when pydicom's conversion could not give anything else.

pydicom converts a raw element on first access (character set, value multiplicity, VR classes such as ``UID``,
``PersonName`` and ``IS``), about 10 µs per element: for a 10 KB slice, the two dozen attributes the index reads
cost twice pydicom's parse of the whole header. Where an element holds only ASCII bytes without ESC, every
character set DICOM defines decodes it to the same characters (each keeps the default repertoire, ISO-IR 6, in G0:
PS3.5 6.1.2.5; ESC is what would switch it, PS3.5 6.1.2.5.3), so its text is known without pydicom. These readers
return exactly what :func:`dicomguard.core.attributes._text` and ``_int`` return through pydicom for such a value
(each rule is the one of ``pydicom.values`` for its VR, with pydicom's reading validation off as the archive sets
it), and ``None`` for anything else, which then takes pydicom's way: a non-ASCII or ESC byte, an explicit VR other
than the data dictionary's, a value already converted, several values (a backslash), ISO 2022 code extensions for
names and text, pydicom's date and time conversion switched on (ADR 0023). ``tests/test_plain_values.py`` holds
each rule against pydicom on generated headers.
"""

from __future__ import annotations

import re

import pydicom.config
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

_STRING_VRS = frozenset({"CS", "DA", "TM", "AS"})
"""Converted by ``multi_string`` (trailing spaces and NULs off, then split on backslashes)."""
_TEXT_VRS = frozenset({"SH", "LO"})
"""Converted by ``convert_text`` (split on backslashes, trailing spaces and NULs off each value)."""
_READ = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID", "IssuerOfPatientID",
         "PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "AccessionNumber", "StudyID",
         "StudyDescription", "ReferringPhysicianName", "InstitutionalDepartmentName", "Modality", "SeriesNumber",
         "SeriesDescription", "SeriesDate", "InstanceNumber", "NumberOfFrames", "Rows", "Columns",
         "MediaStorageSOPInstanceUID", "MediaStorageSOPClassUID")
_CHARACTER_SET_VRS = frozenset({"SH", "LO", "PN"})
"""Decoded with the data set's character set (PS3.5 6.1.2.3); the others use the default repertoire only."""
_SPECIFIC_CHARACTER_SET = Tag(0x00080005)
_SPEC = {keyword: (Tag(tag_for_keyword(keyword)), dictionary_VR(tag_for_keyword(keyword))) for keyword in _READ}
_INTEGER = re.compile(r" *[+-]?[0-9]+ *")


_ABSENT = (b"", "", None)
"""What :func:`_raw` answers for an element the data set does not hold."""


def _raw(ds: Dataset, keyword: str) -> tuple[bytes, str, RawDataElement | None] | None:
    """The element's bytes, VR and raw element if it can be read plainly (:data:`_ABSENT` if it is not there); None
    to leave it to pydicom."""
    spec = _SPEC.get(keyword)
    if spec is None:
        return None
    tag, vr = spec
    elem = ds.get_item(tag, keep_deferred=True)
    if elem is None:
        return _ABSENT
    if not isinstance(elem, RawDataElement) or elem.value is None:
        return None  # converted already (pydicom's value is the one to use) or not read yet
    if elem.VR is not None and elem.VR != vr:
        return None
    value = elem.value
    if vr in _CHARACTER_SET_VRS and _code_extensions(ds):
        return None
    if not value.isascii() or b"\x1b" in value or b"\\" in value:
        return None  # not plain ASCII, or several values (pydicom's multi-value is what the callers take)
    return value, vr, elem


def _code_extensions(ds: Dataset) -> bool:
    """Whether the data set's Specific Character Set uses ISO 2022 code extensions (PS3.3 C.12.1.1.2), whose decoding
    and person-name handling in pydicom differ from plain ASCII even for ASCII bytes."""
    elem = ds.get_item(_SPECIFIC_CHARACTER_SET, keep_deferred=True)
    if elem is None:
        return False
    value = elem.value
    return value is None or (b"2022" in value if isinstance(value, bytes) else "2022" in str(value))


def plain_text(ds: Dataset, keyword: str) -> str | None:
    """``_text(ds, keyword)`` without pydicom's conversion, or None where that must decide."""
    found = _raw(ds, keyword)
    if found is None:
        return None
    value, vr, _elem = found
    if found is _ABSENT:
        return ""
    if vr == "UI":
        return value.decode("ascii").rstrip(" \x00").strip().strip(" \x00")  # pydicom's UID strips whitespace too
    if vr in _STRING_VRS:
        if vr in ("DA", "TM") and pydicom.config.datetime_conversion:
            return None
        return value.decode("ascii").strip(" \x00")
    if vr in _TEXT_VRS:
        return value.decode("ascii").strip(" \x00")
    if vr == "PN":
        text = value.rstrip(b"\x00 ").decode("ascii")
        if text.count("=") > 2:
            return None
        return text.rstrip("=").strip(" \x00")  # pydicom drops empty trailing component groups
    return None


def plain_int(ds: Dataset, keyword: str) -> int | None:
    """``_int(ds, keyword)`` before its range check, without pydicom's conversion; None where pydicom must decide
    (also for an absent element, which ``_int`` answers with None through pydicom at no cost)."""
    found = _raw(ds, keyword)
    if found is None or found is _ABSENT:
        return None
    value, vr, elem = found
    if vr == "IS":
        text = value.decode("ascii").rstrip(" \x00")
        return int(text) if _INTEGER.fullmatch(text) else None
    if vr == "US" and len(value) == 2 and elem is not None:
        return int.from_bytes(value, "little" if elem.is_little_endian else "big")
    return None
