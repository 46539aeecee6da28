"""Header values read plainly (``core.plain_values``) are exactly those pydicom's conversion gives.

Each generated header carries raw values built from the characters that decide the rules (padding spaces and NULs,
backslashes, ``=`` and ``^`` of person names, signs and digits, ESC and bytes above 0x7F that must go to pydicom),
in each of the three uncompressed transfer syntaxes. The same bytes are parsed twice: once read as ingest reads
them, once with the plain readers switched off, so every value comes through pydicom's conversion. Every
attribute the index takes, the object's identity and the refusals of validation must agree.
"""

from __future__ import annotations

import io
import struct

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import CTImageStorage, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomguard.app.bootstrap import configure_libraries
from dicomguard.core import attributes, ingest, plain_values
from dicomguard.errors import RejectedObject

TEXT_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID", "IssuerOfPatientID",
                 "PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "AccessionNumber", "StudyID",
                 "StudyDescription", "ReferringPhysicianName", "InstitutionalDepartmentName", "Modality",
                 "SeriesDescription", "SeriesDate")
INT_KEYWORDS = ("SeriesNumber", "InstanceNumber", "NumberOfFrames", "Rows", "Columns")
UIDS = ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5", "1.2.826.0.1.3680043.8.498.1", " 1.2.3", "1.02.3", "1.2.3\\1.2.4")

_bytes_of_text = st.lists(st.sampled_from([b" ", b"\x00", b"\\", b"=", b"^", b"+", b"-", b".", b"0", b"7", b"A", b"z",
                                            b"\x1b", b"\xe9", b"\t", b"\n", b"\x1f"]), max_size=12).map(b"".join)
_uid_values = st.one_of(st.sampled_from(UIDS).map(str.encode), _bytes_of_text)
_values = st.fixed_dictionaries(
    {k: st.one_of(st.none(), _uid_values if dictionary_VR(tag_for_keyword(k)) == "UI" else _bytes_of_text)
     for k in TEXT_KEYWORDS + INT_KEYWORDS if dictionary_VR(tag_for_keyword(k)) != "US"}
    | {k: st.one_of(st.none(), st.integers(0, 65535)) for k in ("Rows", "Columns")}
)
_syntaxes = st.sampled_from([ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian])


def _element(tag: int, vr: str, value: bytes, syntax: str) -> bytes:
    little = syntax != ExplicitVRBigEndian
    end = "<" if little else ">"
    if len(value) % 2:
        value += b"\x00" if vr == "UI" else b" "
    head = struct.pack(end + "HH", tag >> 16, tag & 0xFFFF)
    if syntax == ImplicitVRLittleEndian:
        return head + struct.pack("<I", len(value)) + value
    return head + vr.encode() + struct.pack(end + "H", len(value)) + value


def _part10(values: dict[str, bytes | int | None], syntax: str, charset: bytes | None) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    meta.TransferSyntaxUID = syntax
    out = io.BytesIO()
    out.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    elements = []
    if charset is not None:
        elements.append((0x00080005, "CS", charset))
    for keyword, value in values.items():
        if value is None:
            continue
        tag, vr = tag_for_keyword(keyword), dictionary_VR(tag_for_keyword(keyword))
        raw = struct.pack("<H" if syntax != ExplicitVRBigEndian else ">H", value) if isinstance(value, int) else value
        elements.append((tag, vr, raw))
    for tag, vr, raw in sorted(elements):
        out.write(_element(tag, vr, raw, syntax))
    return out.getvalue()


def _read(data: bytes) -> tuple[dict[str, object], object, object]:
    """What ingest takes from ``data``: every indexed attribute, the identity, and the validation's outcome."""
    ds = ingest._parse_header(data)
    identity = ingest.identity_of(ds)
    try:
        outcome: object = attributes.validate_and_extract(ds, "1.2.840.10008.1.2.1")
    except RejectedObject as exc:
        outcome = (exc.reason, str(exc))
    ds = ingest._parse_header(data)  # a fresh parse: the reads above may have converted elements
    read: dict[str, object] = {k: attributes._text(ds, k) for k in TEXT_KEYWORDS}
    read |= {k: attributes._int(ds, k) for k in INT_KEYWORDS}
    return read, identity, outcome


def _through_pydicom(monkeypatch: pytest.MonkeyPatch, data: bytes) -> tuple[dict[str, object], object, object]:
    with monkeypatch.context() as m:
        m.setattr(attributes, "_plain_text", lambda ds, keyword: None)
        m.setattr(attributes, "_plain_int", lambda ds, keyword: None)
        m.setattr(ingest, "plain_text", lambda ds, keyword: None)
        return _read(data)


@pytest.fixture(scope="module", autouse=True)
def _archive_pydicom_settings() -> None:
    configure_libraries()  # pydicom's reading validation as the archive sets it


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=_values, syntax=_syntaxes, charset=st.sampled_from([None, b"ISO_IR 100", b"ISO_IR 192", b"GB18030", b"ISO 2022 IR 87",
                                                                          b"\\ISO 2022 IR 149", b"NOT A CHARSET"]))
def test_plain_reads_agree_with_pydicom_on_generated_headers(monkeypatch, values, syntax, charset) -> None:  # type: ignore[no-untyped-def]
    data = _part10(values, syntax, charset)
    plain, converted = _read(data), _through_pydicom(monkeypatch, data)
    differ = {k: (values.get(k), plain[0][k], converted[0][k]) for k in plain[0] if plain[0][k] != converted[0][k]}
    assert plain == converted, (syntax, charset, differ or (plain[1:], converted[1:]))


def test_the_common_header_is_read_plainly_and_the_rest_goes_to_pydicom() -> None:
    """The readers do take the usual values (else the agreement above would be vacuous) and leave the rest alone."""
    values: dict[str, bytes | int | None] = {
        "PatientName": b"Doe^Jane==", "PatientID": b"PID-1 ", "StudyDate": b"20260102", "SeriesNumber": b" +12 ",
        "Rows": 512, "SOPInstanceUID": b"1.2.3.4.5\x00", "StudyDescription": b"caf\xe9", "AccessionNumber": b"A\x1b$B",
        "InstanceNumber": b"1.5", "Modality": b"CT\\MR"}
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian):
        ds = ingest._parse_header(_part10(values, syntax, b"ISO_IR 100"))
        assert plain_values.plain_text(ds, "PatientName") == "Doe^Jane"
        assert plain_values.plain_text(ds, "PatientID") == "PID-1"
        assert plain_values.plain_text(ds, "StudyDate") == "20260102"
        assert plain_values.plain_text(ds, "SOPInstanceUID") == "1.2.3.4.5"
        assert plain_values.plain_text(ds, "Modality") is None  # several values: pydicom's multi-value decides
        assert plain_values.plain_text(ds, "IssuerOfPatientID") == ""  # absent
        assert plain_values.plain_int(ds, "SeriesNumber") == 12
        assert plain_values.plain_int(ds, "Rows") == 512
        assert plain_values.plain_text(ds, "StudyDescription") is None  # Latin-1: pydicom decodes it
        assert plain_values.plain_text(ds, "AccessionNumber") is None  # ESC: a character set switch
        assert plain_values.plain_int(ds, "InstanceNumber") is None  # not an integer string: pydicom decides
        assert plain_values.plain_text(ds, "Manufacturer") is None  # not one the readers know
        assert attributes._text(ds, "StudyDescription") == "café"
        ds.PatientID = "CHANGED"  # a value already converted or set is pydicom's
        assert plain_values.plain_text(ds, "PatientID") is None and attributes._text(ds, "PatientID") == "CHANGED"
    ds = ingest._parse_header(_part10(values, ExplicitVRLittleEndian, b"ISO 2022 IR 87"))
    assert plain_values.plain_text(ds, "PatientName") is None  # code extensions: pydicom's person-name rules
    assert plain_values.plain_text(ds, "StudyDate") == "20260102"  # the default repertoire only


def test_date_conversion_switched_on_leaves_dates_to_pydicom(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    ds = ingest._parse_header(_part10({"StudyDate": b"20260102", "Modality": b"CT"}, ExplicitVRLittleEndian, None))
    monkeypatch.setattr(pydicom.config, "datetime_conversion", True)
    assert plain_values.plain_text(ds, "StudyDate") is None
    assert plain_values.plain_text(ds, "Modality") == "CT"
