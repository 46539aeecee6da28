"""Synthetic DICOM objects for tests, with unmistakable fake PHI.

Every identifying value is unique and long enough that finding it in raw
bytes (blob folder, database file, pg_dump) is a real leak, not a coincidence.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"


@dataclass(frozen=True)
class FakePatient:
    patient_id: str
    name: str
    birth_date: str
    accession: str
    address: str = ""

    def secrets(self) -> list[str]:
        """The strings that must never appear in clear in the archive."""
        family, _, given = self.name.partition("^")
        values = [self.patient_id, self.name, family, given, self.birth_date, self.accession]
        if self.address:
            values.append(self.address)
        return [v for v in values if v]


def phi_needles() -> list[bytes]:
    """Every identifying string of the generated patients, as bytes in the encodings a leak could take."""
    out: list[bytes] = []
    for p in (ALICE, BOB, CAROL):
        for s in p.secrets():
            out += [s.encode("utf-8"), s.encode("utf-16-le"), s.lower().encode()]
    return out


ALICE = FakePatient("PIDQX7731ALPHA", "ZEBRAFINCH^ALICIANNA", "19610417", "ACCQ99812345", "17 Quixotic Lane Springfield")
BOB = FakePatient("PIDQX8842BRAVO", "MARMOSET^BARTHOLOMEUS", "19790923", "ACCQ55501234")
CAROL = FakePatient("PIDQX9953CHARLIE", "OCELOTTE^CAROLYNDA", "19881102", "ACCQ77703456")


DEPARTMENT = "RADIOLOGY"
"""Institutional Department Name of every generated object: the study's department for policies."""


def _base(patient: FakePatient, sop_class: str, modality: str, study_uid: str, series_uid: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    sop_uid = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = "20240305"
    ds.StudyTime = "101500"
    ds.AccessionNumber = patient.accession
    ds.Modality = modality
    ds.ReferringPhysicianName = "REFERRER^QUENTINA"
    ds.InstitutionalDepartmentName = DEPARTMENT
    ds.StudyDescription = "CHEST SCREENING"
    ds.SeriesDescription = "AXIAL"
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = "F"
    if patient.address:
        ds.PatientAddress = patient.address
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    return ds


def to_bytes(ds: Dataset, preamble: bytes | None = None) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=False, little_endian=True, enforce_file_format=True)
    data = buf.getvalue()
    if preamble is not None:
        data = preamble.ljust(128, b"\x00")[:128] + data[128:]
    return data


def ct_series(patient: FakePatient, n: int = 3, size: int = 64, seed: int = 1) -> list[bytes]:
    """A CT series of ``n`` slices (16-bit, ``size`` x ``size``)."""
    rng = np.random.default_rng(seed)
    study, series = generate_uid(), generate_uid()
    out = []
    for i in range(n):
        ds = _base(patient, CT_IMAGE, "CT", study, series)
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0, 0, float(i)]
        ds.Rows = ds.Columns = size
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.PixelData = rng.integers(-1000, 3000, (size, size), dtype=np.int16).tobytes()
        out.append(to_bytes(ds))
    return out


def us_multiframe(patient: FakePatient, frames: int = 4, rows: int = 48, cols: int = 64, seed: int = 2) -> bytes:
    """A multi-frame RGB ultrasound cine."""
    rng = np.random.default_rng(seed)
    ds = _base(patient, US_MULTIFRAME, "US", generate_uid(), generate_uid())
    ds.InstanceNumber = 1
    ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = rng.integers(0, 255, (frames, rows, cols, 3), dtype=np.uint8).tobytes()
    return to_bytes(ds)


def write_files(folder, objects: list[bytes], pattern: str = "obj{:03d}.dcm") -> list:  # type: ignore[no-untyped-def]
    """Write objects as files for peers that send files (storescu); returns their paths in order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, data in enumerate(objects):
        path = folder / pattern.format(i)
        path.write_bytes(data)
        paths.append(path)
    return paths


def dataset_of(data: bytes) -> Dataset:
    from pydicom import dcmread

    return dcmread(io.BytesIO(data))
