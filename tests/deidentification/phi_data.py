"""PHI-laden synthetic objects for the de-identification tests (and the pixel tests next to them).

One fictitious patient, one CT study: a CT series with full geometry and a
Comprehensive SR that reports on it. Identifying values are planted everywhere a
real object hides them: the patient and study modules, equipment and institution,
descriptions and comments, nested sequences (Request Attributes, Referenced
Patient, Other Patient IDs, Source Image), a private block, an overlay, a curve,
and SR content items (a PNAME item, TEXT items that repeat the patient's name, ID
and study date). :data:`PLANTED` lists them; after de-identification none of them
may appear in the output bytes, in any letter case.

Everything is generated from fixed seeds: the same bytes on every run.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
PATIENT_SOP_CLASS = "1.2.840.10008.3.1.2.1.1"  # Detached Patient Management (retired), as real devices send it

PATIENT_NAME = "QUIMBYWHISTLE^ZELDAMAE"
PATIENT_ID = "PIDZQ4471XK"
OTHER_PATIENT_ID = "OPIDKX88213"
OTHER_PATIENT_ID_IN_SEQUENCE = "OPSQZ55291"
BIRTH_DATE = "19580214"
STUDY_DATE = "20230917"
REPORT_DATE = "20230918"
ACCESSION = "ACCZX99231"
STUDY_ID = "SIDQX7781"
INSTITUTION = "SAINT QUIXLEY MEMORIAL"
INSTITUTION_ADDRESS = "88 VEXILLARY ROAD QUAXTON"
DEPARTMENT = "QUIXLEY IMAGING WING"
PATIENT_ADDRESS = "41 ZOFFANY CRESCENT PLUMTREE"
PATIENT_PHONE = "5550199441"
MOTHER_BIRTH_NAME = "MOTHERLYQUAX^HILDEGUND"
ISSUER = "QUIXLEY HOSPITAL REGISTRY"
REFERRING = "PLOVERHEART^OSWIN"
PERFORMING = "MARGRAVINE^TESSALY"
OPERATOR = "OPERATOROX^BRIMLEY"
READING = "READERQUILL^AMBROSINE"
RADIOLOGIST = "RADIOLOGISTQX^HELVETIUS"
VERIFIER = "VERIFIERQX^MAGNOLIA"
VERIFYING_ORGANIZATION = "QUIXLEY VERIFY ORGANIZATION"
STATION = "QXCTSTATION07"
SERIAL = "SNQX55127ZZ"
REQUESTED_PROCEDURE_ID = "RPIDQ4412"
SCHEDULED_STEP_ID = "SPSQ99812"
PERFORMED_STEP_ID = "PPSQX3321"
ADMISSION_ID = "ADMQX7712"

PLANTED: tuple[str, ...] = (
    PATIENT_NAME, "QUIMBYWHISTLE", "ZELDAMAE", PATIENT_ID, OTHER_PATIENT_ID, OTHER_PATIENT_ID_IN_SEQUENCE,
    BIRTH_DATE, STUDY_DATE, "2023-09-17", "17.09.2023", REPORT_DATE, ACCESSION, STUDY_ID, INSTITUTION,
    INSTITUTION_ADDRESS, DEPARTMENT, PATIENT_ADDRESS, PATIENT_PHONE, MOTHER_BIRTH_NAME, "MOTHERLYQUAX", ISSUER,
    REFERRING, "PLOVERHEART", PERFORMING, "MARGRAVINE", OPERATOR, "OPERATOROX", READING, "READERQUILL", RADIOLOGIST,
    "RADIOLOGISTQX", VERIFIER, "VERIFIERQX", VERIFYING_ORGANIZATION, STATION, SERIAL, REQUESTED_PROCEDURE_ID,
    SCHEDULED_STEP_ID, PERFORMED_STEP_ID, ADMISSION_ID,
)
"""Every identifying string planted in the generated objects."""

FINDING_TEXT = "has a 12 mm nodule in the right upper lobe."
"""The clinical part of the SR finding that mentions the patient: it must survive Clean Structured Content."""
SECOND_FINDING = "No pleural effusion."
SAFE_PRIVATE_PITCH = "1.375:1"


@dataclass(frozen=True)
class Study:
    """The generated objects and their original UIDs."""

    ct: list[Dataset]
    sr: Dataset
    study_uid: str
    ct_series_uid: str
    frame_of_reference_uid: str


def _uid(seed: str) -> str:
    return generate_uid(prefix=None, entropy_srcs=["dicomguard deid test data", seed])


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _patient_and_study(ds: Dataset, study_uid: str) -> None:
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.IssuerOfPatientID = ISSUER
    ds.OtherPatientIDs = OTHER_PATIENT_ID
    other = Dataset()
    other.PatientID = OTHER_PATIENT_ID_IN_SEQUENCE
    other.IssuerOfPatientID = ISSUER
    other.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = Sequence([other])
    ds.PatientBirthDate = BIRTH_DATE
    ds.PatientSex = "F"
    ds.PatientAge = "065Y"
    ds.PatientSize = "1.62"
    ds.PatientWeight = "61.5"
    ds.PatientAddress = PATIENT_ADDRESS
    ds.PatientTelephoneNumbers = PATIENT_PHONE
    ds.PatientMotherBirthName = MOTHER_BIRTH_NAME
    ds.AdmissionID = ADMISSION_ID
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = STUDY_DATE
    ds.StudyTime = "101530"
    ds.AccessionNumber = ACCESSION
    ds.StudyID = STUDY_ID
    ds.ReferringPhysicianName = REFERRING
    ds.NameOfPhysiciansReadingStudy = READING
    ds.StudyDescription = "CT CHEST FOR ZELDAMAE QUIMBYWHISTLE"
    ds.InstitutionName = INSTITUTION
    ds.InstitutionAddress = INSTITUTION_ADDRESS
    ds.InstitutionalDepartmentName = DEPARTMENT
    ds.Manufacturer = "ACME MEDICAL SYSTEMS"
    ds.ManufacturerModelName = "ACME CT 9000"
    ds.SoftwareVersions = "9.0.1"
    ds.DeviceSerialNumber = SERIAL
    ds.StationName = STATION
    patient_ref = Dataset()
    patient_ref.ReferencedSOPClassUID = PATIENT_SOP_CLASS
    patient_ref.ReferencedSOPInstanceUID = _uid("patient record")
    ds.ReferencedPatientSequence = Sequence([patient_ref])
    request = Dataset()
    request.RequestedProcedureID = REQUESTED_PROCEDURE_ID
    request.ScheduledProcedureStepID = SCHEDULED_STEP_ID
    request.RequestedProcedureDescription = "CT CHEST FOLLOW-UP FOR QUIMBYWHISTLE"
    request.AccessionNumber = ACCESSION
    ds.RequestAttributesSequence = Sequence([request])
    ds.PerformedProcedureStepID = PERFORMED_STEP_ID
    ds.PerformedProcedureStepStartDate = STUDY_DATE
    ds.PerformedProcedureStepStartTime = "101500"
    ds.ProcedureCodeSequence = Sequence([_code("77477000", "SCT", "CT of chest")])


def _file_meta(ds: Dataset) -> None:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.SourceApplicationEntityTitle = "QXCT_AE_07"


def ct_slice(index: int, study_uid: str, series_uid: str, frame_uid: str, rows: int = 64, columns: int = 64) -> Dataset:
    """One CT Image Storage slice of the study, with PHI, geometry and seeded random 12-bit pixels."""
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE
    ds.SOPInstanceUID = _uid(f"ct {series_uid} {index}")
    _patient_and_study(ds, study_uid)
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 3
    ds.SeriesDate = STUDY_DATE
    ds.SeriesTime = "101600"
    ds.SeriesDescription = "AXIAL 1.25 MM"
    ds.OperatorsName = OPERATOR
    ds.PerformingPhysicianName = PERFORMING
    ds.ProtocolName = "CHEST ROUTINE"
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = "SN"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = index + 1
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate = STUDY_DATE
    ds.AcquisitionTime = f"1016{index % 60:02d}"
    ds.ContentDate = STUDY_DATE
    ds.ContentTime = f"1016{index % 60:02d}"
    ds.InstanceCreationDate = STUDY_DATE
    ds.ImageComments = f"Scanned by OPERATOROX on 2023-09-17, slice {index + 1}"
    ds.BurnedInAnnotation = "NO"
    ds.KVP = "120"
    ds.SliceThickness = "1.25"
    ds.SpacingBetweenSlices = "1.25"
    ds.DataCollectionDiameter = "500"
    ds.ReconstructionDiameter = "350"
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = "150"
    ds.RotationDirection = "CW"
    ds.ExposureTime = "500"
    ds.XRayTubeCurrent = 250
    ds.Exposure = 125
    ds.ConvolutionKernel = "STANDARD"
    ds.SpiralPitchFactor = 0.984
    ds.CTDIvol = 7.5
    ds.ImagePositionPatient = [-175.0, -175.0, -100.0 + 1.25 * index]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.68359375, 0.68359375]
    ds.SliceLocation = -100.0 + 1.25 * index
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    source = Dataset()
    source.ReferencedSOPClassUID = CT_IMAGE
    source.ReferencedSOPInstanceUID = _uid(f"localizer {index}")
    source.PatientName = PATIENT_NAME  # misplaced, as some converters do: recursion must catch it
    source.InstitutionName = INSTITUTION
    ds.SourceImageSequence = Sequence([source])
    # Private blocks: one that holds the patient's identity, one safe-listed, one safe-listed but polluted.
    acme = ds.private_block(0x0029, "ACME PHI", create=True)
    acme.add_new(0x10, "LO", PATIENT_ID)
    acme.add_new(0x11, "PN", PATIENT_NAME)
    ge_parm = ds.private_block(0x0043, "GEMS_PARM_01", create=True)
    ge_parm.add_new(0x27, "SH", SAFE_PRIVATE_PITCH)
    ge_acqu = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
    ge_acqu.add_new(0x23, "DS", "39.37")
    ge_acqu.add_new(0x9E, "LO", PATIENT_ID)
    # An overlay whose comment names the patient, and a retired curve describing it.
    ds.add_new(0x60000010, "US", rows)
    ds.add_new(0x60000011, "US", columns)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    overlay_bytes = (rows * columns + 7) // 8
    ds.add_new(0x60003000, "OW", bytes(overlay_bytes + overlay_bytes % 2))
    ds.add_new(0x60004000, "LT", f"Marked for {PATIENT_NAME}")
    ds.add_new(0x50000022, "LO", "QUIMBYWHISTLE CURVE")
    rng = np.random.default_rng(1000 + index)
    ds.PixelData = rng.integers(0, 4096, size=(rows, columns), dtype=np.uint16).tobytes()
    _file_meta(ds)
    return ds


def ct_series(count: int = 4, rows: int = 64, columns: int = 64) -> list[Dataset]:
    """``count`` slices of one series, 1.25 mm apart."""
    return make_study(count, rows, columns).ct


def _item(relationship: str, value_type: str, concept: tuple[str, str, str]) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = Sequence([_code(*concept)])
    return item


def structured_report(ct: list[Dataset]) -> Dataset:
    """A Comprehensive SR on the CT series: findings, a measurement with an image reference, and PHI."""
    first = ct[0]
    ds = Dataset()
    ds.SOPClassUID = COMPREHENSIVE_SR
    ds.SOPInstanceUID = _uid("sr instance")
    _patient_and_study(ds, first.StudyInstanceUID)
    ds.Modality = "SR"
    ds.SeriesInstanceUID = _uid("sr series")
    ds.SeriesNumber = 900
    ds.InstanceNumber = 1
    ds.ContentDate = REPORT_DATE
    ds.ContentTime = "093000"
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic Imaging Report")])
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "VERIFIED"
    verifier = Dataset()
    verifier.VerifyingObserverName = VERIFIER
    verifier.VerifyingOrganization = VERIFYING_ORGANIZATION
    verifier.VerificationDateTime = REPORT_DATE + "094500"
    verifier.VerifyingObserverIdentificationCodeSequence = Sequence()
    ds.VerifyingObserverSequence = Sequence([verifier])
    evidence = Dataset()
    evidence.StudyInstanceUID = first.StudyInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    refs = []
    for image in ct:
        ref = Dataset()
        ref.ReferencedSOPClassUID = image.SOPClassUID
        ref.ReferencedSOPInstanceUID = image.SOPInstanceUID
        refs.append(ref)
    series.ReferencedSOPSequence = Sequence(refs)
    evidence.ReferencedSeriesSequence = Sequence([series])
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([evidence])

    observer = _item("HAS OBS CONTEXT", "PNAME", ("121008", "DCM", "Person Observer Name"))
    observer.PersonName = RADIOLOGIST
    subject_id = _item("HAS OBS CONTEXT", "TEXT", ("121030", "DCM", "Subject ID"))
    subject_id.TextValue = PATIENT_ID
    finding = _item("CONTAINS", "TEXT", ("121071", "DCM", "Finding"))
    finding.TextValue = f"Zeldamae Quimbywhistle ({PATIENT_ID}) {FINDING_TEXT}"
    second = _item("CONTAINS", "TEXT", ("121071", "DCM", "Finding"))
    second.TextValue = f"{SECOND_FINDING} Stable since 17.09.2023."
    size = _item("CONTAINS", "NUM", ("81827009", "SCT", "Diameter"))
    measured = Dataset()
    measured.NumericValue = "12"
    measured.MeasurementUnitsCodeSequence = Sequence([_code("mm", "UCUM", "millimeter")])
    size.MeasuredValueSequence = Sequence([measured])
    image = _item("INFERRED FROM", "IMAGE", ("121112", "DCM", "Source of Measurement"))
    image_ref = Dataset()
    image_ref.ReferencedSOPClassUID = ct[1].SOPClassUID
    image_ref.ReferencedSOPInstanceUID = ct[1].SOPInstanceUID
    image.ReferencedSOPSequence = Sequence([image_ref])
    size.ContentSequence = Sequence([image])
    site = _item("HAS CONCEPT MOD", "CODE", ("363698007", "SCT", "Finding Site"))
    site.ConceptCodeSequence = Sequence([_code("39607008", "SCT", "Lung structure")])
    study_date = _item("HAS OBS CONTEXT", "DATE", ("111060", "DCM", "Study Date"))
    study_date.Date = STUDY_DATE
    study_ref = _item("HAS OBS CONTEXT", "UIDREF", ("121018", "DCM", "Procedure Study Instance UID"))
    study_ref.UID = first.StudyInstanceUID
    ds.ContentSequence = Sequence([observer, subject_id, study_ref, study_date, finding, second, size, site])
    _file_meta(ds)
    return ds


def make_study(count: int = 4, rows: int = 64, columns: int = 64) -> Study:
    """The CT series and the SR that reports on it."""
    study_uid = _uid("study")
    series_uid = _uid("ct series")
    frame_uid = _uid("frame of reference")
    ct = [ct_slice(i, study_uid, series_uid, frame_uid, rows, columns) for i in range(count)]
    return Study(ct, structured_report(ct), study_uid, series_uid, frame_uid)


def to_bytes(ds: Dataset) -> bytes:
    """Part 10 bytes, explicit VR little endian, as a modality would send them."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()
