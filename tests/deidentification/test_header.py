"""Header de-identification end to end: PHI-laden CT series and SR in, Part 10 bytes out.

Every output is searched byte by byte for every planted identifying value; the
values that must survive (geometry, pixels, findings, references, intervals
between dates) are checked just as strictly.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicomguard.deid.engine import (
    Deidentifier,
    DeidKeys,
    DeidOutcome,
    read_object,
    write_object,
)
from dicomguard.deid.options import PRESETS, Option
from dicomguard.deid.pseudonyms import MAX_DAY_SHIFT
from tests.deidentification.phi_data import (
    FINDING_TEXT,
    OTHER_PATIENT_ID_IN_SEQUENCE,
    PATIENT_ID,
    PATIENT_NAME,
    PLANTED,
    REPORT_DATE,
    SAFE_PRIVATE_PITCH,
    SECOND_FINDING,
    STUDY_DATE,
    Study,
    make_study,
    to_bytes,
)

KEY_A = DeidKeys("project-a", bytes(range(32)))
KEY_B = DeidKeys("project-b", bytes(range(1, 33)))
GEOMETRY = (
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "SpacingBetweenSlices",
    "SliceLocation", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
    "SamplesPerPixel", "PhotometricInterpretation", "RescaleIntercept", "RescaleSlope", "RescaleType",
    "WindowCenter", "WindowWidth", "SOPClassUID", "Modality", "ImageType", "InstanceNumber", "SeriesNumber",
)
ACQUISITION = (
    "KVP", "XRayTubeCurrent", "Exposure", "ExposureTime", "ConvolutionKernel", "GantryDetectorTilt", "TableHeight",
    "DataCollectionDiameter", "ReconstructionDiameter", "SpiralPitchFactor", "CTDIvol", "PatientPosition",
    "BodyPartExamined", "Manufacturer", "ManufacturerModelName",
)


class RecordingCleaner:
    """A pixel cleaner that changes nothing and remembers what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def __call__(self, ds: Dataset, values: tuple[str, ...]) -> None:
        self.calls.append((str(ds.SOPInstanceUID), values))


@dataclass
class Release:
    """The de-identified study: outcomes and written bytes, CT first, SR last."""

    outcomes: list[DeidOutcome]
    encoded: list[bytes]

    @property
    def ct(self) -> list[Dataset]:
        return [pydicom.dcmread(io.BytesIO(b)) for b in self.encoded[:-1]]

    @property
    def sr(self) -> Dataset:
        return pydicom.dcmread(io.BytesIO(self.encoded[-1]))


@pytest.fixture(scope="module")
def study() -> Study:
    return make_study(count=4)


def release(study: Study, options: frozenset[Option], keys: DeidKeys = KEY_A) -> Release:
    engine = Deidentifier(options, keys, RecordingCleaner())
    outcomes, encoded = [], []
    for ds in [*study.ct, study.sr]:
        data, outcome = engine.deidentify_bytes(to_bytes(ds))
        outcomes.append(outcome)
        encoded.append(data)
    return Release(outcomes, encoded)


@pytest.fixture(scope="module", params=["basic", "research"])
def released(request: pytest.FixtureRequest, study: Study) -> Iterator[Release]:
    yield release(study, PRESETS[request.param])


@pytest.fixture(scope="module")
def research(study: Study) -> Release:
    return release(study, PRESETS["research"])


@pytest.fixture(scope="module")
def basic(study: Study) -> Release:
    return release(study, PRESETS["basic"])


def _needles(value: str) -> set[bytes]:
    forms = {value, value.upper(), value.replace("^", " "), value.upper().replace("^", " ")}
    return {f.upper().encode("latin-1") for f in forms}


def test_no_planted_value_survives_anywhere_in_the_bytes(released: Release) -> None:
    for data in released.encoded:
        haystack = data.upper()
        leaks = [value for value in PLANTED if any(n in haystack for n in _needles(value))]
        assert not leaks, f"planted values found in the output: {leaks}"


def test_no_original_uid_survives(study: Study, released: Release) -> None:
    originals = set()
    for ds in [*study.ct, study.sr]:
        for elem in ds.iterall():
            if elem.VR == "UI" and elem.value and not str(elem.value).startswith("1.2.840.10008."):
                originals.add(str(elem.value).encode())
    for data in released.encoded:
        assert not [u for u in originals if u in data]


def test_ct_pixels_are_bit_identical(study: Study, released: Release) -> None:
    for original, out in zip(study.ct, released.ct, strict=True):
        assert out.PixelData == original.PixelData


def test_geometry_and_acquisition_are_kept(study: Study, released: Release) -> None:
    for original, out in zip(study.ct, released.ct, strict=True):
        for keyword in GEOMETRY + ACQUISITION:
            assert out.get(keyword) == original.get(keyword), keyword
        assert out.FrameOfReferenceUID != original.FrameOfReferenceUID
    frames = {ds.FrameOfReferenceUID for ds in released.ct}
    series = {ds.SeriesInstanceUID for ds in released.ct}
    assert len(frames) == 1 and len(series) == 1


def test_modified_dates_keep_intervals(study: Study, research: Release) -> None:
    ct, sr = research.ct, research.sr
    original = dt.date.fromisoformat(f"{STUDY_DATE[:4]}-{STUDY_DATE[4:6]}-{STUDY_DATE[6:]}")
    shifted = dt.datetime.strptime(ct[0].StudyDate, "%Y%m%d").date()
    assert 1 <= (original - shifted).days <= MAX_DAY_SHIFT
    for ds in ct:
        for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "InstanceCreationDate"):
            assert ds.get(keyword) == ct[0].StudyDate, keyword
        assert ds.AcquisitionTime == ds.ContentTime  # times of day survive a whole-day shift
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    report = dt.datetime.strptime(sr.ContentDate, "%Y%m%d").date()
    assert (report - shifted).days == 1  # the report was written the day after the scan
    assert sr.VerifyingObserverSequence[0].VerificationDateTime == REPORT_DATE.replace(
        REPORT_DATE, sr.ContentDate
    ) + "094500"
    assert research.outcomes[0].dataset.StudyTime == "101530"


def test_basic_profile_removes_dates_and_patient_characteristics(basic: Release) -> None:
    for ds in basic.ct:
        assert not ds.get("StudyDate") and not ds.get("PatientBirthDate")
        # X/Z and X/D: emptied or a dummy, never the original.
        assert ds.get("AcquisitionDate") in ("", None) and ds.get("SeriesDate") in ("", None, "19000101")
        for keyword in ("PatientAge", "PatientWeight", "PatientSize"):
            assert keyword not in ds, keyword
        assert not ds.get("PatientSex")
        assert ds.LongitudinalTemporalInformationModified == "REMOVED"
        assert "StudyDescription" not in ds and "ImageComments" not in ds


def test_research_keeps_patient_characteristics_and_scrubbed_descriptions(research: Release) -> None:
    ds = research.ct[0]
    assert (ds.PatientAge, ds.PatientSex, ds.PatientWeight, ds.PatientSize) == ("065Y", "F", 61.5, 1.62)
    assert ds.StudyDescription == "CT CHEST FOR [removed]"
    assert ds.ImageComments == "Scanned by [removed] on [removed], slice 1"
    assert ds.SeriesDescription == "AXIAL 1.25 MM"
    request = ds.RequestAttributesSequence[0]
    assert request.RequestedProcedureDescription == "CT CHEST FOLLOW-UP FOR [removed]"
    assert "RequestedProcedureID" not in request and "ScheduledProcedureStepID" not in request


def _content(sr: Dataset) -> list[Dataset]:
    out = []

    def walk(items: Sequence) -> None:
        for item in items:
            out.append(item)
            walk(item.get("ContentSequence", []))

    walk(sr.get("ContentSequence", []))
    return out


def test_sr_findings_are_kept_and_person_names_removed(research: Release) -> None:
    items = _content(research.sr)
    texts = [str(i.TextValue) for i in items if i.ValueType == "TEXT"]
    assert texts == [f"[removed] ([removed]) {FINDING_TEXT}", f"{SECOND_FINDING} Stable since [removed]."]
    assert not [i for i in items if i.ValueType == "PNAME"]
    concepts = {i.ConceptNameCodeSequence[0].CodeValue for i in items}
    assert "121030" not in concepts  # Subject ID item removed
    assert {"121071", "81827009", "363698007", "121112", "121018"} <= concepts
    measured = next(i for i in items if i.ValueType == "NUM").MeasuredValueSequence[0]
    assert measured.NumericValue == 12 and measured.MeasurementUnitsCodeSequence[0].CodeValue == "mm"


def test_sr_references_resolve_to_the_deidentified_ct(research: Release) -> None:
    ct, sr = research.ct, research.sr
    instances = {ds.SOPInstanceUID for ds in ct}
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == ct[0].StudyInstanceUID == sr.StudyInstanceUID
    series = evidence.ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == ct[0].SeriesInstanceUID
    assert [r.ReferencedSOPInstanceUID for r in series.ReferencedSOPSequence] == [ds.SOPInstanceUID for ds in ct]
    items = _content(sr)
    image = next(i for i in items if i.ValueType == "IMAGE").ReferencedSOPSequence[0]
    assert image.ReferencedSOPInstanceUID == ct[1].SOPInstanceUID and image.ReferencedSOPInstanceUID in instances
    assert next(i for i in items if i.ValueType == "UIDREF").UID == ct[0].StudyInstanceUID


def test_basic_profile_removes_the_report_content(basic: Release) -> None:
    sr = basic.sr
    assert "ContentSequence" not in sr
    assert sr.VerifyingObserverSequence[0].VerifyingObserverName != ""


def test_pseudonyms_are_stable_and_bound_to_the_project(study: Study) -> None:
    first = release(study, PRESETS["research"], KEY_A)
    second = release(study, PRESETS["research"], DeidKeys("project-a", bytes(range(32))))
    assert first.encoded == second.encoded  # byte for byte, across engines (and runs: no randomness)
    other = release(study, PRESETS["research"], KEY_B)
    a, b = first.ct[0], other.ct[0]
    assert a.PatientID.startswith("DG-") and b.PatientID.startswith("DG-") and a.PatientID != b.PatientID
    assert a.PatientName == f"Pseudo^{a.PatientID}"
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        assert a.get(keyword) != b.get(keyword)
        assert str(a.get(keyword)).startswith("2.25.") and len(str(a.get(keyword))) <= 64
    assert first.outcomes[0].source_patient_id == PATIENT_ID
    assert first.outcomes[0].pseudonym_patient_id == a.PatientID


def test_every_output_is_readable_by_dcmtk(released: Release, tmp_path: Path) -> None:
    dcmdump = shutil.which("dcmdump")
    if dcmdump is None:
        pytest.skip("dcmtk dcmdump is not installed")
    for index, data in enumerate(released.encoded):
        path = tmp_path / f"out{index}.dcm"
        path.write_bytes(data)
        result = subprocess.run([dcmdump, str(path)], capture_output=True, text=True, timeout=60, check=False)
        errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("E:")]
        assert result.returncode == 0 and not errors, (result.returncode, errors)


def test_input_is_not_modified(study: Study) -> None:
    engine = Deidentifier(PRESETS["research"], KEY_A, RecordingCleaner())
    before = [to_bytes(ds) for ds in [*study.ct, study.sr]]
    for ds in [*study.ct, study.sr]:
        outcome = engine.deidentify(ds)
        outcome.dataset.PixelData = b"\x00\x00" if "PixelData" in outcome.dataset else None
        outcome.dataset.ImagePositionPatient = [1, 2, 3]
    assert [to_bytes(ds) for ds in [*study.ct, study.sr]] == before


def test_provenance(basic: Release, research: Release) -> None:
    ds = basic.ct[0]
    assert ds.PatientIdentityRemoved == "YES"
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100"]
    assert {c.CodingSchemeDesignator for c in ds.DeidentificationMethodCodeSequence} == {"DCM"}
    codes = [c.CodeValue for c in research.ct[0].DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113101", "113103", "113104", "113105", "113107", "113108"]
    method = research.ct[0].DeidentificationMethod
    assert "clean-descriptors" in method and all(len(v) <= 64 for v in method)


def test_file_meta_is_rebuilt(study: Study, released: Release) -> None:
    for data in released.encoded:
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
        assert "SourceApplicationEntityTitle" not in ds.file_meta
        assert ds.preamble == b"\x00" * 128


def test_private_overlay_and_curve_are_removed(released: Release) -> None:
    for ds in released.ct:
        assert not [e for e in ds if e.tag.is_private]
        assert not [e for e in ds if e.tag.group & 0xFF00 in (0x5000, 0x6000)]


def test_retain_safe_private_keeps_only_listed_elements_of_clean_blocks(study: Study) -> None:
    engine = Deidentifier(frozenset({Option.RETAIN_SAFE_PRIVATE}), KEY_A)
    outcome = engine.deidentify(study.ct[0])
    ds = outcome.dataset
    private = {e.tag: e.value for e in ds if e.tag.is_private}
    assert private == {0x00430010: "GEMS_PARM_01", 0x00431027: SAFE_PRIVATE_PITCH}
    assert any("(0019,0010) removed" in note for note in outcome.notes)  # safe creator, but holds the patient ID
    codes = [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113111"]


def test_retain_options_keep_what_they_name(study: Study) -> None:
    options = frozenset(
        {
            Option.RETAIN_UIDS,
            Option.RETAIN_DEVICE_IDENTITY,
            Option.RETAIN_INSTITUTION_IDENTITY,
            Option.RETAIN_LONGITUDINAL_FULL_DATES,
        }
    )
    original = study.ct[0]
    ds = Deidentifier(options, KEY_A).deidentify(original).dataset
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "StudyDate",
                    "AcquisitionDate", "DeviceSerialNumber", "StationName", "InstitutionName", "InstitutionAddress",
                    "InstitutionalDepartmentName"):
        assert ds.get(keyword) == original.get(keyword), keyword
    assert ds.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert ds.PatientID != PATIENT_ID and "PatientBirthDate" in ds and not ds.PatientBirthDate


def test_clean_graphics_scrubs_annotation_text(study: Study) -> None:
    ds = copy.deepcopy(study.ct[0])
    text = Dataset()
    text.UnformattedTextValue = f"{PATIENT_NAME.replace('^', ' ')} left lung"
    text.BoundingBoxAnnotationUnits = "PIXEL"
    text.BoundingBoxTopLeftHandCorner = [1.0, 1.0]
    text.BoundingBoxBottomRightHandCorner = [20.0, 10.0]
    annotation = Dataset()
    annotation.GraphicLayer = "LAYER1"
    annotation.TextObjectSequence = Sequence([text])
    ds.GraphicAnnotationSequence = Sequence([annotation])
    cleaned = Deidentifier(frozenset({Option.CLEAN_GRAPHICS}), KEY_A).deidentify(ds).dataset
    value = cleaned.GraphicAnnotationSequence[0].TextObjectSequence[0].UnformattedTextValue
    assert value == "[removed] left lung"
    assert "GraphicAnnotationSequence" not in Deidentifier(frozenset(), KEY_A).deidentify(ds).dataset


def test_pixel_cleaner_gets_the_original_identifying_values(study: Study) -> None:
    cleaner = RecordingCleaner()
    engine = Deidentifier(PRESETS["research"], KEY_A, cleaner)
    outcomes = [engine.deidentify(ds) for ds in [*study.ct, study.sr]]
    assert len(cleaner.calls) == len(study.ct)  # the SR has no pixel data
    assert [uid for uid, _ in cleaner.calls] == [o.dataset.SOPInstanceUID for o in outcomes[:-1]]
    values = cleaner.calls[0][1]
    expected_values = (
        PATIENT_ID, PATIENT_NAME, "ZELDAMAE QUIMBYWHISTLE", STUDY_DATE, "2023-09-17", "SAINT QUIXLEY MEMORIAL",
        OTHER_PATIENT_ID_IN_SEQUENCE,  # from a removed sequence: still scrubbed elsewhere and given to the cleaner
    )
    for expected in expected_values:
        assert expected in values, expected
    assert outcomes[0].identifying_values == values
    assert outcomes[0].dataset.BurnedInAnnotation == "NO"


def test_implicit_vr_input_is_handled(study: Study, tmp_path: Path) -> None:
    ds = copy.deepcopy(study.ct[0])
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=True, little_endian=True, enforce_file_format=True)
    data, _ = Deidentifier(PRESETS["research"], KEY_A, RecordingCleaner()).deidentify_bytes(buffer.getvalue())
    haystack = data.upper()
    assert not [v for v in PLANTED if any(n in haystack for n in _needles(v))]
    out = pydicom.dcmread(io.BytesIO(data))
    assert out.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian
    assert out.PixelData == ds.PixelData and out.ImagePositionPatient == ds.ImagePositionPatient


def test_fast_writer_matches_pydicom_byte_for_byte(study: Study) -> None:
    # write_object copies raw elements itself; its output must be exactly what dcmwrite produces.
    option_sets = [PRESETS["basic"], PRESETS["research"], frozenset({Option.RETAIN_SAFE_PRIVATE, Option.RETAIN_UIDS})]
    for options in option_sets:
        engine = Deidentifier(options, KEY_A, RecordingCleaner())
        for original in [*study.ct[:2], study.sr]:
            for implicit in (False, True):
                ds = copy.deepcopy(original)
                buffer = io.BytesIO()
                if implicit:
                    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
                ds.save_as(buffer, implicit_vr=implicit, little_endian=True, enforce_file_format=True)
                out = engine.deidentify(read_object(buffer.getvalue())).dataset
                reference = io.BytesIO()
                pydicom.dcmwrite(reference, copy.deepcopy(out), enforce_file_format=True)
                assert write_object(out) == reference.getvalue()


def test_non_ascii_names_are_found_and_scrubbed(study: Study) -> None:
    ds = copy.deepcopy(study.ct[0])
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "MÜLLERSOHN^JÜRGENIUS"
    ds.StudyDescription = "CT Thorax für Jürgenius Müllersohn"
    data, outcome = Deidentifier(PRESETS["research"], KEY_A, RecordingCleaner()).deidentify_bytes(to_bytes(ds))
    assert "MÜLLERSOHN^JÜRGENIUS" in outcome.identifying_values
    assert "MÜLLERSOHN".encode() not in data.upper() and "Müllersohn".encode() not in data
    out = pydicom.dcmread(io.BytesIO(data))
    assert out.StudyDescription == "CT Thorax für [removed]"
    reference = io.BytesIO()
    pydicom.dcmwrite(reference, copy.deepcopy(outcome.dataset), enforce_file_format=True)
    assert data == reference.getvalue()
