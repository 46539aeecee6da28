"""Objects that cannot be released clean are refused, with a reason that names no PHI.

One table of named bad inputs, one runner (as ``tests/test_tamper.py``), plus the
burned-in annotation rules of PS3.15 E.3.1 and the scrubber's edge cases.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicomguard.deid.engine import Deidentifier, DeidKeys, DeidRefused, read_object
from dicomguard.deid.options import PRESETS, Option
from dicomguard.deid.scrub import Scrubber, expand, ordered
from tests.deidentification.phi_data import (
    PATIENT_ID,
    PATIENT_NAME,
    PLANTED,
    US_MULTIFRAME,
    make_study,
    to_bytes,
)

KEYS = DeidKeys("refusals", b"\x07" * 32)
STUDY = make_study(count=2)
CT = to_bytes(STUDY.ct[0])
SR = to_bytes(STUDY.sr)


def _assert_no_phi(reason: str) -> None:
    assert not [v for v in PLANTED if v.upper() in reason.upper()], reason


BAD_BYTES: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "not a DICOM Part 10 object"),
    "text file": (b"PatientName=" + PATIENT_NAME.encode(), "not a DICOM Part 10 object"),
    "preamble only": (b"\x00" * 128 + b"DICM", "DICOM"),
    "meta only": (CT[:340], "truncated"),
    "ct cut in the header": (CT[:900], "truncated"),
    "ct cut in the pixels": (CT[:-100], "truncated"),
    "ct one byte short": (CT[:-1], "truncated"),
    "ct with trailing garbage": (CT + b"\x01\x02\x03", "malformed"),
    "sr cut in the content tree": (SR[: len(SR) - 300], "truncated"),
    "sr one byte short": (SR[:-1], "truncated"),
}


# pydicom warns (with the partial values) about every cut it reads; the warnings are the expected noise here.
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", sorted(BAD_BYTES))
def test_bad_bytes_are_refused_with_a_reason(name: str) -> None:
    data, expected = BAD_BYTES[name]
    with pytest.raises(DeidRefused) as refused:
        Deidentifier(frozenset(), KEYS).deidentify_bytes(data)
    assert expected in refused.value.reason
    _assert_no_phi(refused.value.reason)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_every_truncation_of_an_image_is_refused() -> None:
    # pydicom itself returns a shorter data set for most of these cuts, without any error.
    engine = Deidentifier(frozenset(), KEYS)
    accepted = []
    for cut in range(0, len(CT), 5):
        try:
            engine.deidentify_bytes(CT[:cut])
        except DeidRefused as refused:
            _assert_no_phi(refused.reason)
        else:
            accepted.append(cut)
    assert not accepted


def test_read_object_accepts_the_complete_objects() -> None:
    assert read_object(CT).SOPInstanceUID == STUDY.ct[0].SOPInstanceUID
    assert read_object(SR).SOPInstanceUID == STUDY.sr.SOPInstanceUID


def _us(burned_in: str | None, sop_class: str = US_MULTIFRAME, modality: str = "US") -> Dataset:
    ds = copy.deepcopy(STUDY.ct[0])
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.NumberOfFrames = 2
    ds.Rows = ds.Columns = 16
    ds.PixelData = np.zeros((2, 16, 16, 3), dtype=np.uint8).tobytes()
    del ds.BurnedInAnnotation
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    return ds


def _raise(exc: Exception) -> Callable[[Dataset, tuple[str, ...]], None]:
    def cleaner(ds: Dataset, values: tuple[str, ...]) -> None:
        raise exc

    return cleaner


REFUSED_OBJECTS: dict[str, tuple[Callable[[], Dataset], frozenset[Option], object, str]] = {
    "burned in = YES without the option": (lambda: _us("YES"), frozenset(), None, "clean-pixel-data"),
    "US with unknown annotation": (lambda: _us(None), frozenset(), None, "clean-pixel-data"),
    "secondary capture with unknown annotation": (
        lambda: _us(None, "1.2.840.10008.5.1.4.1.1.7", "OT"), frozenset(), None, "clean-pixel-data"
    ),
    "CT with burned in = YES": (
        lambda: _us("YES", "1.2.840.10008.5.1.4.1.1.2", "CT"), PRESETS["basic"], None, "clean-pixel-data"
    ),
    "option without a cleaner": (
        lambda: _us("YES"), frozenset({Option.CLEAN_PIXEL_DATA}), None, "no pixel cleaner configured"
    ),
    "option without a cleaner, even on an SR": (
        lambda: STUDY.sr, frozenset({Option.CLEAN_PIXEL_DATA}), None, "no pixel cleaner configured"
    ),
    "cleaner refuses": (
        lambda: _us("YES"), frozenset({Option.CLEAN_PIXEL_DATA}), _raise(DeidRefused("text still readable", 1)),
        "text still readable",
    ),
    "cleaner crashes": (
        lambda: _us("YES"), frozenset({Option.CLEAN_PIXEL_DATA}), _raise(RuntimeError(PATIENT_ID)),
        "pixel cleaning failed (RuntimeError)",
    ),
}


@pytest.mark.parametrize("name", sorted(REFUSED_OBJECTS))
def test_objects_that_cannot_be_released_clean(name: str) -> None:
    make, options, cleaner, expected = REFUSED_OBJECTS[name]
    with pytest.raises(DeidRefused) as refused:
        Deidentifier(options, KEYS, cleaner).deidentify(make())  # type: ignore[arg-type]
    assert expected in str(refused.value)
    _assert_no_phi(str(refused.value))


def test_images_declared_clean_pass_without_pixel_cleaning() -> None:
    outcome = Deidentifier(frozenset(), KEYS).deidentify(_us("NO"))
    assert outcome.dataset.BurnedInAnnotation == "NO"
    assert outcome.dataset.PixelData == _us("NO").PixelData


def test_burned_in_text_is_left_to_the_pixel_cleaner() -> None:
    seen: list[tuple[str, ...]] = []
    outcome = Deidentifier(PRESETS["research"], KEYS, lambda ds, values: seen.append(values)).deidentify(_us("YES"))
    assert len(seen) == 1 and PATIENT_ID in seen[0]
    assert outcome.dataset.BurnedInAnnotation == "NO"


def test_sequences_nested_too_deep_are_refused() -> None:
    ds = copy.deepcopy(STUDY.sr)
    item = Dataset()
    item.ValueType = "CONTAINER"
    for _ in range(40):
        outer = Dataset()
        outer.ValueType = "CONTAINER"
        outer.ContentSequence = Sequence([item])
        item = outer
    ds.ContentSequence = Sequence([item])
    with pytest.raises(DeidRefused, match="nested deeper"):
        Deidentifier(PRESETS["research"], KEYS, lambda ds, values: None).deidentify(ds)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's own complaint about the planted bad date
def test_a_date_that_cannot_be_shifted_is_not_kept() -> None:
    ds = copy.deepcopy(STUDY.ct[0])
    ds.add_new(0x00080020, "DA", "2023-13-45-not-a-date")  # Study Date
    outcome = Deidentifier(PRESETS["research"], KEYS, lambda ds, values: None).deidentify(ds)
    assert outcome.dataset.StudyDate == ""


def test_keys_are_checked() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        DeidKeys("p", b"short")
    with pytest.raises(ValueError, match="name"):
        DeidKeys("", b"\x00" * 32)
    assert "\\x07" not in repr(KEYS) and "key=" not in repr(KEYS)


def test_scrubber_spellings_and_boundaries() -> None:
    values = ordered(expand("name", "DOE^JOHN^Q") + expand("text", "123") + expand("date", "20240305"))
    scrubber = Scrubber(values)
    assert scrubber.scrub("Seen: John Doe, doe, john; DOE^JOHN") == "Seen: [removed], [removed]; [removed]"
    assert scrubber.scrub("Doe, John q. on 05.03.2024 and 2024-03-05 and 03/05/2024") == (
        "[removed] q. on [removed] and [removed] and [removed]"
    )
    assert scrubber.scrub("ID 123 but not 1234 or A123") == "ID [removed] but not 1234 or A123"
    assert scrubber.scrub("5 Mar 2024 / 05-Mar-2024") == "[removed] / [removed]"
    assert not Scrubber(ordered(expand("text", "12"))).values  # too short to scrub safely
    assert Scrubber(values).may_contain(b"xx JOHN xx") and not Scrubber(values).may_contain(b"nothing here")
