"""The DICOMDIR: Basic Directory IOD (PS3.3 F.3), record keys (PS3.3 F.5), offsets that point at their records."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.fileset import FileSet
from pydicom.uid import UID

from dicomguard.media import MEDIA_STORAGE_DIRECTORY, DicomdirBuilder, DicomdirEntry, MediaError, build_dicomdir
from tests.dicom_factory import ALICE, BOB, ct_series, us_multiframe
from tests.share_media.objects import header, key_object, presentation_state, sr_document

FILE_SET_UID = "1.2.826.0.1.3680043.8.498.1"


def entries(objects: list[bytes]) -> list[DicomdirEntry]:
    return [DicomdirEntry(("DICOM", f"I{i:07d}"), header(o)) for i, o in enumerate(objects)]


def parse(dicomdir: bytes) -> Dataset:
    return dcmread(io.BytesIO(dicomdir))


def records_by_type(ds: Dataset) -> dict[str, list[Dataset]]:
    out: dict[str, list[Dataset]] = {}
    for record in ds.DirectoryRecordSequence:
        out.setdefault(record.DirectoryRecordType, []).append(record)
    return out


def test_file_meta_and_basic_directory() -> None:
    ds = parse(build_dicomdir(entries(ct_series(ALICE, n=2)), file_set_id="SHARE_1", file_set_uid=FILE_SET_UID))
    assert ds.preamble == b"\0" * 128
    assert ds.file_meta.MediaStorageSOPClassUID == MEDIA_STORAGE_DIRECTORY
    assert ds.file_meta.MediaStorageSOPInstanceUID == FILE_SET_UID  # the File-set UID (PS3.10 8.6)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds.FileSetID == "SHARE_1" and ds.FileSetConsistencyFlag == 0


def test_offsets_point_at_the_records() -> None:
    """(0004,1200)/(0004,1202) and every (0004,1400)/(0004,1420) hold the file offset of a record's item tag."""
    objects = ct_series(ALICE, n=3) + ct_series(BOB, n=2) + [us_multiframe(ALICE)]
    dicomdir = build_dicomdir(entries(objects))
    ds = parse(dicomdir)
    records = list(ds.DirectoryRecordSequence)
    at = {r.seq_item_tell: r for r in records}  # pydicom notes where it read each item's tag
    offsets = set(at)
    assert all(dicomdir[o:o + 4] == b"\xfe\xff\x00\xe0" for o in offsets)  # and there is one: (FFFE,E000)

    def chain(first: int) -> list[Dataset]:
        out, offset = [], first
        while offset:
            assert offset in offsets
            out.append(at[offset])
            offset = at[offset].OffsetOfTheNextDirectoryRecord
        return out

    patients = chain(ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity)
    assert [p.DirectoryRecordType for p in patients] == ["PATIENT", "PATIENT"]
    assert at[ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity] is patients[-1]
    seen = 0
    for patient in patients:
        for study in chain(patient.OffsetOfReferencedLowerLevelDirectoryEntity):
            for series in chain(study.OffsetOfReferencedLowerLevelDirectoryEntity):
                leaves = chain(series.OffsetOfReferencedLowerLevelDirectoryEntity)
                assert all(leaf.OffsetOfReferencedLowerLevelDirectoryEntity == 0 for leaf in leaves)
                seen += 1 + len(leaves)
            seen += 1
        seen += 1
    assert seen == len(records)  # every record reachable exactly once


def test_record_keys(tmp_path: Path) -> None:
    """PS3.3 F.5.1-F.5.3 keys and the leaf's references to its file (PS3.3 F.3.2.2)."""
    objects = ct_series(ALICE, n=2)
    first = header(objects[0])
    by_type = records_by_type(parse(build_dicomdir(entries(objects))))
    [patient], [study], [series] = by_type["PATIENT"], by_type["STUDY"], by_type["SERIES"]
    assert (patient.PatientID, str(patient.PatientName)) == (ALICE.patient_id, ALICE.name)
    assert (study.StudyDate, study.StudyTime, study.StudyID) == ("20240305", "101500", "1")
    assert study.StudyInstanceUID == first.StudyInstanceUID and study.AccessionNumber == ALICE.accession
    assert study.StudyDescription == "CHEST SCREENING"
    assert (series.Modality, series.SeriesInstanceUID, series.SeriesNumber) == ("CT", first.SeriesInstanceUID, 1)
    images = by_type["IMAGE"]
    assert [i.InstanceNumber for i in images] == [1, 2]
    assert list(images[0].ReferencedFileID) == ["DICOM", "I0000000"]
    assert images[0].ReferencedSOPClassUIDInFile == first.file_meta.MediaStorageSOPClassUID
    assert images[0].ReferencedSOPInstanceUIDInFile == first.SOPInstanceUID
    assert images[0].ReferencedTransferSyntaxUIDInFile == first.file_meta.TransferSyntaxUID
    assert all(r.SpecificCharacterSet == "ISO_IR 100" for r in (patient, study, series, *images))


def test_record_type_follows_the_sop_class() -> None:
    """pydicom's table (PS3.3 F.4): pinned here, as it is reached through private functions."""
    objects = [ct_series(ALICE, n=1)[0], us_multiframe(ALICE), sr_document(), key_object(), presentation_state()]
    ds = parse(build_dicomdir(entries(objects)))
    leaves = [r for r in ds.DirectoryRecordSequence if "ReferencedFileID" in r]
    assert [r.DirectoryRecordType for r in leaves] == ["IMAGE", "IMAGE", "SR DOCUMENT", "KEY OBJECT DOC", "PRESENTATION"]
    sr = leaves[2]
    assert (sr.CompletionFlag, sr.VerificationFlag, sr.ContentDate) == ("COMPLETE", "UNVERIFIED", "20240305")
    assert sr.ConceptNameCodeSequence[0].CodeValue == "18748-4"
    assert leaves[4].ContentLabel == "ANNOTATION"


def test_missing_type_1_keys() -> None:
    """Medium-local stand-ins for identifiers and numbers; dates are not made up; the SR keeps a record."""
    ct = header(ct_series(ALICE, n=1)[0])
    for keyword in ("PatientID", "StudyID", "SeriesNumber", "InstanceNumber", "StudyDate"):
        delattr(ct, keyword)
    sr = header(sr_document(BOB, complete=False))
    ds = parse(build_dicomdir([DicomdirEntry(("A",), ct), DicomdirEntry(("B",), sr)]))
    by_type = records_by_type(ds)
    assert [p.PatientID for p in by_type["PATIENT"]] == ["UNIDENTIFIED1", BOB.patient_id]
    assert by_type["STUDY"][0].StudyID == "1" and by_type["STUDY"][0].StudyDate == ""
    assert by_type["SERIES"][0].SeriesNumber == 1 and by_type["IMAGE"][0].InstanceNumber == 1
    assert "InstanceNumber" not in ct  # the caller's header is untouched
    [report] = by_type["SR DOCUMENT"]
    assert report.InstanceNumber == 1 and list(report.ReferencedFileID) == ["B"]


def test_extended_character_set_round_trips() -> None:
    ct = header(ct_series(ALICE, n=1)[0])
    ct.SpecificCharacterSet = "ISO_IR 192"
    ct.PatientName = "Иванова^Анна=山田^花子"
    ds = parse(build_dicomdir([DicomdirEntry(("A",), ct)]))
    [patient] = records_by_type(ds)["PATIENT"]
    assert patient.SpecificCharacterSet == "ISO_IR 192" and str(patient.PatientName) == "Иванова^Анна=山田^花子"


def test_pydicom_fileset_reads_it(tmp_path: Path) -> None:
    objects = ct_series(ALICE, n=2) + [sr_document(BOB)]
    (tmp_path / "DICOMDIR").write_bytes(build_dicomdir(entries(objects)))
    (tmp_path / "DICOM").mkdir()
    for i, data in enumerate(objects):
        (tmp_path / "DICOM" / f"I{i:07d}").write_bytes(data)
    fs = FileSet(dcmread(tmp_path / "DICOMDIR"))
    assert sorted(i.SOPInstanceUID for i in fs) == sorted(header(o).SOPInstanceUID for o in objects)
    assert {Path(i.path).name for i in fs} == {"I0000000", "I0000001", "I0000002"}


def test_an_empty_directory() -> None:
    ds = parse(DicomdirBuilder().encode())
    assert ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity == 0 and len(ds.DirectoryRecordSequence) == 0


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_refusals_leave_the_builder_unchanged() -> None:
    builder = DicomdirBuilder()
    ct = header(ct_series(ALICE, n=1)[0])
    builder.add(("A",), ct)
    with pytest.raises(MediaError, match="already"):
        builder.add(("B",), ct)
    with pytest.raises(MediaError, match=r"PS3\.10"):
        builder.add(("lower",), header(ct_series(ALICE, n=1)[0]))
    orphan = header(ct_series(BOB, n=1)[0])
    del orphan.SeriesInstanceUID
    with pytest.raises(MediaError, match="Series"):
        builder.add(("C",), orphan)
    bad_uid = header(ct_series(BOB, n=1)[0])
    bad_uid.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.1.ü")
    with pytest.raises(MediaError, match="does not encode"):
        builder.add(("D",), bad_uid)
    assert len(builder) == 1
    assert len(parse(builder.encode()).DirectoryRecordSequence) == 4


@pytest.mark.parametrize("file_set_id", ["lower", "WITH SPACE", "X" * 17])
def test_file_set_id_is_checked(file_set_id: str) -> None:
    with pytest.raises(ValueError):
        DicomdirBuilder().encode(file_set_id=file_set_id)
