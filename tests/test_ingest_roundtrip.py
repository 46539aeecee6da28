"""Round trip: every object imported comes back element-for-element identical (preamble aside)."""

from __future__ import annotations

import io

import pytest
from pydicom import dcmread

from dicomguard.core.ingest import IngestStatus
from dicomguard.core.query import IndexQuery
from tests.conftest import pydicom_test_file
from tests.dicom_factory import ALICE, BOB, ct_series, us_multiframe

# Compressed and unusual transfer syntaxes from pydicom's own test files.
PYDICOM_FILES = [  # distinct SOP Instance UIDs, one per transfer syntax family
    "CT_small.dcm",  # explicit VR little endian
    "MR_small_implicit.dcm",  # implicit VR little endian
    "ExplVR_BigEnd.dcm",  # explicit VR big endian (retired)
    "JPEG2000.dcm",  # JPEG 2000, encapsulated
    "rtdose_rle.dcm",  # RLE, multi-frame dose
    "SC_rgb_jpeg.dcm",  # says explicit VR, is encoded implicit (seen in the wild)
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, RGB
    "SC_rgb_rle_2frame.dcm",  # RLE, multi-frame RGB
    "image_dfl.dcm",  # deflated explicit VR little endian
    "reportsi.dcm",  # structured report, no pixel data
    "waveform_ecg.dcm",  # waveform, no pixel data
    "liver_1frame.dcm",  # segmentation with nested sequences
]


def _mixed_set() -> list[bytes]:
    objects = ct_series(ALICE, n=4) + [us_multiframe(BOB, frames=6)]
    objects += [pydicom_test_file(n).read_bytes() for n in PYDICOM_FILES]
    return objects


def test_import_then_export_is_element_for_element_identical(archive) -> None:
    objects = _mixed_set()
    outcomes = list(archive.operator.store.ingest_many([(str(i), (lambda d=d: d)) for i, d in enumerate(objects)]))
    rejected = [(o.label, o.error) for o in outcomes if o.error]
    assert not rejected
    assert all(o.result.status is IngestStatus.STORED for o in outcomes)
    for data, outcome in zip(objects, outcomes, strict=True):
        back = archive.operator.retrieve.instance(outcome.result.sop_instance_uid).data
        assert back[:128] == bytes(128), "preamble must be stored as zeros"
        assert back[128:] == data[128:], "bytes after the preamble must be identical"
        original, restored = dcmread(io.BytesIO(data)), dcmread(io.BytesIO(back))
        assert original.file_meta == restored.file_meta
        assert original == restored  # element for element, pixel data included


def test_reimport_of_identical_object_is_an_idempotent_success(archive) -> None:
    data = ct_series(ALICE, n=1)[0]
    first = archive.operator.store.ingest(data)
    again = archive.operator.store.ingest(data)
    assert first.status is IngestStatus.STORED
    assert again.status is IngestStatus.DUPLICATE
    assert len(IndexQuery(archive.ctx).instances()) == 1


def test_same_object_from_another_sender_is_a_duplicate_not_a_conflict(archive) -> None:
    """File meta other than the transfer syntax is transport detail: not hashed."""
    from tests.dicom_factory import dataset_of, to_bytes

    data = ct_series(ALICE, n=1)[0]
    archive.operator.store.ingest(data)
    ds = dataset_of(data)
    ds.file_meta.ImplementationVersionName = "OTHER_SENDER"
    ds.file_meta.SourceApplicationEntityTitle = "MODALITY2"
    assert archive.operator.store.ingest(to_bytes(ds)).status is IngestStatus.DUPLICATE


@pytest.mark.parametrize("batch_size", [1, 3])
def test_outcomes_keep_input_order_across_batches(home, monkeypatch, batch_size) -> None:
    from dicomguard.app.archive import Archive
    from tests.conftest import PASSPHRASE

    monkeypatch.setenv("DICOMGUARD_INGEST__BATCH_SIZE", str(batch_size))
    objects = ct_series(ALICE, n=5)
    objects.insert(2, b"not dicom at all")
    with Archive.open(home, PASSPHRASE) as a:
        outcomes = list(a.operator.store.ingest_many([(f"f{i}", (lambda d=d: d)) for i, d in enumerate(objects)]))
    assert [o.label for o in outcomes] == [f"f{i}" for i in range(6)]
    assert outcomes[2].error is not None and all(o.result for i, o in enumerate(outcomes) if i != 2)
